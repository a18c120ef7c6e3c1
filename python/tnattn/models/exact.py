"""Hand-built contexts that encode exactly the neighbourhood of every site.

For a K-local rule over d symbols the left context of site i can be the one-hot vector of the
K preceding symbols (a shift register with d^K states) and the right context that of the K
following symbols. Then the feature ``f_i`` is one-hot in the whole (2K+1)-window, so any truth
table is linearly separable and training only ``C`` learns the rule exactly (documentation:
Science, "The student").

Construction (states are base-d numbers, most recent symbol least significant on the left side,
nearest symbol most significant on the right side):

* left, state ``q = (x_{i-K}, ..., x_{i-1})``: ``A_L[s][q, (q*d + s) mod d^K] = 1``, so
  ``e_q^T A_L[s] = e_{q'}`` (row q of A_L[s] is one-hot);
* right, state ``p = (x_{i+1}, ..., x_{i+K})``: ``A_R[s][s*d^(K-1) + p // d, p] = 1``, so
  ``A_R[s] e_p = e_{p'}`` (column p of A_R[s] is one-hot);
* boundaries ``u = v = e_0``: the all-zero state, i.e. the cells outside read as symbol 0
  (the open boundary of :mod:`tnattn.rules`).

Products of one-hot steps stay unit vectors, so the per-step normalisation is the identity here.
With one shared tensor the two registers sit in orthogonal blocks, ``A = diag(A_L, A_R)``,
``u = e_0``, ``v = e_{d^K}`` (D >= 2 d^K); for d = 2, K = 1 this is
``A[s] = (e0 + e1) e_s^T + e_{2+s} (e2 + e3)^T``. Extra bond dimensions are padded with zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .layer import TNAttention

__all__ = ["exact_contexts", "exact_local_rule", "exact_rule30"]


def _registers(K: int, d: int) -> tuple[Tensor, Tensor]:
    S = d**K
    q = torch.arange(S)
    A_L = torch.zeros(d, S, S, dtype=torch.float64)
    A_R = torch.zeros(d, S, S, dtype=torch.float64)
    for s in range(d):  # d iterations; each step is vectorised over the states
        A_L[s, q, (q * d + s) % S] = 1.0
        A_R[s, s * S // d + q // d, q] = 1.0
    return A_L, A_R


def exact_contexts(K: int = 1, d: int = 2, *, shared: bool = True, D: int | None = None):
    """Context tensors and boundaries that make ``l_i``/``r_i`` one-hot in the K neighbours.

    Parameters
    ----------
    K : int
        Radius of the rule (window 2K+1).
    d : int
        Alphabet size.
    shared : bool
        One tensor for both sides (needs D >= 2 d^K) or separate tensors (D >= d^K).
    D : int, optional
        Bond dimension; defaults to the minimum.

    Returns
    -------
    A_left, A_right, u, v : Tensor
        Shapes (d, D, D), (d, D, D), (D,), (D,), float64 on the CPU; ``A_right is A_left`` when
        shared.
    """
    for name, val, lo in (("K", K, 1), ("d", d, 2)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {val!r}")
    S = d**K
    need = 2 * S if shared else S
    D = need if D is None else D
    if isinstance(D, bool) or not isinstance(D, int) or D < need:
        kind = "shared" if shared else "separate"
        raise ValueError(f"D must be an int >= {need} for exact {kind} contexts with K={K}, d={d}; got {D!r}")
    A_L, A_R = _registers(K, d)
    if shared:
        A = torch.zeros(d, D, D, dtype=torch.float64)
        A[:, :S, :S] = A_L
        A[:, S : 2 * S, S : 2 * S] = A_R
        u, v = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
        u[0], v[S] = 1.0, 1.0
        return A, A, u, v
    A_left = torch.zeros(d, D, D, dtype=torch.float64)
    A_right = torch.zeros(d, D, D, dtype=torch.float64)
    A_left[:, :S, :S] = A_L
    A_right[:, :S, :S] = A_R
    u = torch.zeros(D, dtype=torch.float64)
    u[0] = 1.0
    return A_left, A_right, u, u.clone()


def exact_local_rule(rule=None, *, K: int | None = None, d: int | None = None, shared: bool = True,
                     D: int | None = None, **kwargs) -> TNAttention:
    """A :class:`TNAttention` with exact neighbourhood contexts (frozen) and a random ``C``.

    Parameters
    ----------
    rule : object, optional
        A teacher with attributes ``K``, ``d`` and ``d_out`` (e.g. from :mod:`tnattn.rules`);
        sets K, d and ``c`` (1 for binary outputs, else ``d_out``). Alternatively give K and d.
    K, d : int, optional
        Radius and alphabet when no rule is given (defaults 1 and 2).
    shared : bool
        Shared (D >= 2 d^K) or separate (D >= d^K) context tensors.
    D : int, optional
        Bond dimension; defaults to the minimum.
    **kwargs
        Passed to :class:`TNAttention` (``c``, ``init``, ``init_std``, ``generator``, ``dtype``,
        ...). ``train_contexts`` defaults to False; ``boundary`` is set by the construction and
        may not be given.

    Returns
    -------
    TNAttention
        With ``boundary == "exact"``.
    """
    if "boundary" in kwargs:
        raise TypeError("exact_local_rule sets the boundary vectors itself; do not pass boundary")
    if rule is not None:
        if K is not None or d is not None:
            raise TypeError("give either rule or K and d, not both")
        K, d = int(rule.K), int(rule.d)
        kwargs.setdefault("c", 1 if int(rule.d_out) == 2 else int(rule.d_out))
    K = 1 if K is None else K
    d = 2 if d is None else d
    A_left, A_right, u, v = exact_contexts(K, d, shared=shared, D=D)
    kwargs.setdefault("train_contexts", False)
    model = TNAttention(A_left.shape[1], d, shared=shared, **kwargs)
    with torch.no_grad():
        model.A_left.copy_(A_left)
        if not shared:
            model.A_right.copy_(A_right)
        model.u.copy_(u)
        model.v.copy_(v)
    model.boundary = "exact"
    return model


def exact_rule30(D: int | None = None, *, shared: bool = True, **kwargs) -> TNAttention:
    """Exact neighbour contexts for rule 30 (any elementary, K = 1, binary rule).

    Parameters
    ----------
    D : int, optional
        Bond dimension; default and minimum 4 (shared) or 2 (separate).
    shared : bool
        One context tensor for both sides (the paper's model) or two.
    **kwargs
        As for :func:`exact_local_rule`.

    Returns
    -------
    TNAttention
        Contexts frozen (``train_contexts=False`` unless overridden), ``C`` random and trainable.
    """
    return exact_local_rule(K=1, d=2, shared=shared, D=D, **kwargs)

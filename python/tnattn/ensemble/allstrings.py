"""Exact predictions of an ensemble on *all* ``d**M`` strings of length M, by sharing contexts.

Scenario A trains on every string of length M (:func:`tnattn.data.all_sequences`). Then the left
context of site i depends only on the prefix ``x_0..x_{i-1}`` and the right context only on the
suffix ``x_{i+1}..x_{M-1}``, so instead of scanning each of the ``d**M`` strings separately the
contexts are computed once per distinct prefix and suffix (a trie, level k = all ``d**k`` prefixes
or suffixes of length k), and the local maps of site i become one batched matrix product:

* left, level k: ``L_k[p*d + s] = normalize(L_{k-1}[p]^T A_left[s])``, ``L_0 = u/|u|``;
* right, level k: ``R_k[s*d**(k-1) + t] = normalize(A_right[s] R_{k-1}[t])``, ``R_0 = v/|v|``;
* site i, string ``(p, s, t)`` with prefix p of length i, symbol s, suffix t of length M-1-i
  (string index ``(p*d + s) * d**(M-1-i) + t``, lexicographic as in ``all_sequences``):
  ``W[p, s, t, o] = sum_ab L_i[p, a] C[s, a, b, o] R_{M-1-i}[t, b]``.

The arithmetic is that of :func:`tnattn.reference.contexts` and the fused kernels (normalise after
every step, exact-zero rule: a context of norm exactly 0 becomes the zero vector), only the order of
the floating-point sums differs. Predictions therefore equal :func:`tnattn.models.functional.
predict` except where a logit lies within rounding of 0 (or, for c > 1, two logits within
rounding of each other). Cost per member: about ``c D M d**M`` multiply-adds for the maps plus
``2 D**2 d**M / (d-1)`` for the contexts, against ``(2 + d c) D**2 M d**M`` for the per-string kernel
(13 times fewer at D = M = 10, d = 2, c = 1), all in batched matrix products. Implementation
details (column layout, prefixes stored newest-symbol-first, reused buffers) are described at
:func:`_step` and :func:`_reversed_prefix_order`.

Where it pays: on the CPU (the trainer's case) the batched products beat the per-string kernel
several times over (``benchmarks/bench_allstrings.py``). On a GPU the fused kernel is already fast
and this path costs a few hundred small kernel launches per chunk of members, so it wins only for
very large E in one chunk; callers on CUDA should keep ``tnattn.models.functional.predict`` unless they measured.

The map of string ``(p, s, t)`` at site i, ``W[p, :, t, :]``, is the same for every symbol s (the
contexts exclude site i), so the full ``d x c`` map needed for ``normalize_map`` with c > 1 comes
for free: c > 1 is supported.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from tnattn.models.functional import Params

__all__ = ["all_strings_predict", "all_strings_wrong_fraction", "is_all_strings"]

#: Largest workspace (contexts, maps, temporaries) of one chunk of members, in bytes.
_CHUNK_BYTES = 256 * 2**20
#: The same on the CPU, where smaller chunks are faster (see :func:`_auto_chunk`).
_CPU_CHUNK_BYTES = 48 * 2**20
#: Largest d**M handled (as :func:`tnattn.data.all_sequences`).
_MAX_STRINGS = 2**26


# ------------------------------------------------------------------------------------------------
# checks


def _check_params(P, M, d) -> tuple[int, int, int, int]:
    """Validate ``P``, ``M`` and ``d``; return (E, d, D, c)."""
    if not isinstance(P, Params):
        raise TypeError(f"P must be a Params, got {type(P).__name__}")
    A = P.A_left
    if not isinstance(A, Tensor) or A.dim() != 4 or A.shape[2] != A.shape[3]:
        raise ValueError(f"P.A_left must have shape (E, d, D, D), got {getattr(A, 'shape', None)}")
    if not A.dtype.is_floating_point:
        raise TypeError(f"P.A_left must be floating point, got {A.dtype}")
    E, dA, D = A.shape[0], A.shape[1], A.shape[2]
    AR = A if P.A_right is None else P.A_right
    if tuple(AR.shape) != tuple(A.shape):
        raise ValueError(f"P.A_right must have shape {tuple(A.shape)}, got {tuple(AR.shape)}")
    if P.C.dim() != 5 or tuple(P.C.shape[:4]) != (E, dA, D, D):
        raise ValueError(f"P.C must have shape (E, d, D, D, c) = ({E}, {dA}, {D}, {D}, c), got {tuple(P.C.shape)}")
    for name in ("u", "v"):
        b = getattr(P, name)
        if tuple(b.shape) != (E, D):
            raise ValueError(f"P.{name} must have shape (E, D) = ({E}, {D}), got {tuple(b.shape)}")
    if P.scale is not None and tuple(P.scale.shape) != (E,):
        raise ValueError(f"P.scale must have shape (E,) = ({E},), got {tuple(P.scale.shape)}")
    if isinstance(M, bool) or not isinstance(M, int) or M < 1:
        raise ValueError(f"M must be an int >= 1, got {M!r}")
    if d is None:
        d = dA
    if isinstance(d, bool) or not isinstance(d, int) or d != dA:
        raise ValueError(f"d must equal the parameters' alphabet size {dA}, got {d!r}")
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    if d**M > _MAX_STRINGS:
        raise ValueError(f"d**M = {d**M} strings is too many to enumerate (at most {_MAX_STRINGS})")
    return E, d, D, P.C.shape[-1]


def _auto_chunk(E: int, M: int, d: int, D: int, c: int, itemsize: int, device) -> int:
    """Members per chunk: the workspace stays under ``_CHUNK_BYTES`` (CUDA) or ``_CPU_CHUNK_BYTES``
    (CPU: past a few tens of MB the buffers fall out of cache and the extra members gain nothing)."""
    budget = _CHUNK_BYTES if torch.device(device).type == "cuda" else _CPU_CHUNK_BYTES
    per_member = _Workspace.bytes_per_member(M, d, D, c, itemsize)
    return max(1, min(E, budget // per_member))


# ------------------------------------------------------------------------------------------------
# the trie
#
# Layout: contexts are stored as columns, (E, D, K) for K prefixes or suffixes. The normalisation
# then reduces over a middle dimension and scales with a multiplier broadcast along it, both
# contiguous in K (vectorised); in rows (E, K, D) every elementwise pass runs over innermost runs of
# only D elements with a broadcast scalar, several times slower on the CPU than the matrix products.
# The large tensors live in a workspace allocated once per call and reused by every member chunk:
# fresh multi-megabyte CPU allocations come from the OS page by page and cost as much as the
# arithmetic done in them.


class _Workspace:
    """Flat buffers for one chunk of ``chunk`` members; ``take`` hands out views of their fronts."""

    def __init__(self, chunk: int, M: int, d: int, D: int, c: int, dtype: torch.dtype, device):
        n = d**M
        kw = dict(dtype=dtype, device=device)
        self.right = torch.empty(chunk * D * sum(d**k for k in range(M)), **kw)  # all right levels
        self.left = [torch.empty(chunk * D * d ** (M - 1), **kw) for _ in range(2)]  # ping-pong
        self.res = torch.empty(chunk * d * D * d ** max(M - 2, 0), **kw)  # a step before normalising
        self.maps = torch.empty(chunk * n * c, **kw)
        self.pred = torch.empty(chunk * n, dtype=torch.bool if c == 1 else torch.int64, device=device)

    @staticmethod
    def bytes_per_member(M: int, d: int, D: int, c: int, itemsize: int) -> int:
        n = d**M
        floats = D * sum(d**k for k in range(M)) + 2 * D * d ** (M - 1) + d * D * d ** max(M - 2, 0) + n * c
        # + the predictions, the normalised c > 1 logits and small temporaries (ss, X, Z: ~ n D / d**(M/2))
        return floats * itemsize + (n if c == 1 else 8 * n + 2 * n * c * itemsize) + 4 * n

    @staticmethod
    def take(buf: Tensor, *shape: int) -> Tensor:
        return buf[: math.prod(shape)].view(*shape)


def _step(Mat: Tensor, prev: Tensor, res_buf: Tensor, out: Tensor) -> Tensor:
    """One trie level: ``out[:, a, s*K + k] = normalize_a(sum_b Mat[:, s*D + a, b] prev[:, b, k])``.

    Parameters
    ----------
    Mat : Tensor, shape (E, d*D, D)
        The d transfer matrices stacked, in the orientation of the step.
    prev : Tensor, shape (E, D, K)
    res_buf : Tensor
        Flat scratch of at least E*d*D*K elements.
    out : Tensor, shape (E, D, d*K)
        Receives the new level (the new symbol is the most significant digit of its index).
    """
    E, D, K = prev.shape
    d = Mat.shape[1] // D
    res = torch.bmm(Mat, prev, out=_Workspace.take(res_buf, E, d * D, K)).view(E, d, D, K)  # [s, a, k]
    # sum of squares (for few columns two passes beat D small ones), inverse norm, exact-zero rule
    if K >= 32:
        ss = res[:, :, 0] * res[:, :, 0]
        for a in range(1, D):
            ss = torch.addcmul(ss, res[:, :, a], res[:, :, a])
    else:
        ss = (res * res).sum(2)
    inv = torch.nan_to_num(ss.sqrt_().reciprocal_(), nan=float("nan"), posinf=0.0)  # (E, d, K)
    torch.mul(res.transpose(1, 2), inv.unsqueeze(1), out=out.view(E, D, d, K))  # normalise + reorder
    return out


def _boundary(b: Tensor) -> Tensor:
    """Normalised boundary vectors as one-column contexts, (E, D) -> (E, D, 1) (exact-zero rule)."""
    ss = (b * b).sum(1, keepdim=True)
    inv = torch.nan_to_num(ss.sqrt_().reciprocal_(), nan=float("nan"), posinf=0.0)
    return (b * inv).unsqueeze(2)


def _right_levels(A: Tensor, v: Tensor, M: int, ws: _Workspace) -> list[Tensor]:
    """Right contexts of every suffix: level k is (E, D, d**k), suffixes in lexicographic order.

    ``R_k[:, :, s * d**(k-1) + t] = normalize(A[s] R_{k-1}[:, :, t])`` (``A[s] r`` sums over A's
    last index), ``R_0 = v/|v|``.
    """
    E, d, D, _ = A.shape
    Mat = A.reshape(E, d * D, D)  # [(s, a), b]
    levels = [_boundary(v)]
    offset = 0
    for k in range(1, M):
        size = E * D * d**k
        out = ws.right[offset : offset + size].view(E, D, d**k)
        offset += size
        levels.append(_step(Mat, levels[-1], ws.res, out))
    return levels


def _left_matrix(A: Tensor) -> Tensor:
    """``Mat[:, s*D + b, a] = A[:, s, a, b]``: the left step ``l^T A[s]`` in the form of :func:`_step`."""
    E, d, D, _ = A.shape
    return A.transpose(2, 3).reshape(E, d * D, D)


def _reversed_prefix_order(M: int, d: int, i: int, device) -> Optional[Tensor]:
    """Index ``perm`` (d**M,) with ``pred_in_string_order = pred[:, perm]`` at site i, or None (identity).

    The left levels built by :func:`_step` put the newest symbol first, so prefix ``x_0..x_{i-1}`` sits
    at ``q = sum_j x_j d**j`` instead of its lexicographic index ``p = sum_j x_j d**(i-1-j)``: the
    digit reversal, an involution, so the same index maps both ways.
    """
    if i <= 1:
        return None
    Pn, Tn = d**i, d ** (M - 1 - i)
    p = torch.arange(Pn, device=device)
    q = torch.zeros_like(p)
    for _ in range(i):
        q = q * d + p % d
        p = p // d
    s = torch.arange(d, device=device)
    t = torch.arange(Tn, device=device)
    return ((q.view(-1, 1, 1) * d + s.view(1, -1, 1)) * Tn + t.view(1, 1, -1)).reshape(-1)


def _site_maps(L: Tensor, C: Tensor, R: Tensor, out_buf: Tensor) -> Tensor:
    """``W[e, p, s, o, t] = sum_ab L[e, a, p] C[e, s, a, b, o] R[e, b, t]``, shape (E, P, d, c, T).

    C is contracted with the smaller of the two context sets first; the second product then has
    the full size E * P * d * c * T * D. The result is a view of ``out_buf``.
    """
    E, D, Pn = L.shape
    Tn = R.shape[2]
    d, c = C.shape[1], C.shape[-1]
    if Pn <= Tn:
        Cl = C.permute(0, 2, 1, 4, 3).reshape(E, D, d * c * D)  # [a, (s, o, b)]
        X = torch.bmm(L.transpose(1, 2), Cl).view(E, Pn * d * c, D)  # [(p, s, o), b]
        W = torch.bmm(X, R, out=_Workspace.take(out_buf, E, Pn * d * c, Tn))
    else:
        Cr = C.permute(0, 1, 4, 2, 3).reshape(E, d * c * D, D)  # [(s, o, a), b]
        Z = torch.bmm(Cr, R).view(E, d * c, D, Tn).transpose(1, 2).reshape(E, D, d * c * Tn)  # [a, (s, o, t)]
        W = torch.bmm(L.transpose(1, 2), Z, out=_Workspace.take(out_buf, E, Pn, d * c * Tn))
    return W.view(E, Pn, d, c, Tn)


def _predict_from_maps(W: Tensor, scale: Optional[Tensor], normalize_map: bool, out_buf: Tensor) -> Tensor:
    """Predictions (E, P*d*T) from the maps (E, P, d, c, T) of one site, as ``tnattn.models.functional.predict``.

    c = 1: ``W > 0`` (bool); the sign of ``scale`` is already folded into C by the caller. c > 1:
    argmax (int64) of the logits of ``tnattn.models.functional.logits``, ``scale * W[x, :] / |W|`` with the norm over
    the d*c map entries, or of ``W[x, :]`` without ``normalize_map``. A view of ``out_buf``.
    """
    E, c = W.shape[0], W.shape[3]
    out = _Workspace.take(out_buf, E, W.numel() // (E * c))
    if c == 1:
        return torch.gt(W.view(E, -1), 0, out=out)
    if normalize_map:
        ss = (W * W).sum(dim=(2, 3), keepdim=True)  # (E, P, 1, 1, T): one map per (prefix, suffix)
        fac = torch.nan_to_num(ss.sqrt_().reciprocal_(), nan=float("nan"), posinf=0.0)
        if scale is not None:
            fac = fac * scale.view(E, 1, 1, 1, 1)
        W = W * fac
    return torch.argmax(W, dim=3, out=out.view(W.shape[:3] + W.shape[4:])).view(E, -1)


def _site_predictions(P: Params, M: int, normalize_map: bool, chunk: int) -> Iterator[tuple[int, int, int, Tensor]]:
    """Yield ``(e0, e1, i, pred)``: members ``e0:e1``, site i, pred (e1-e0, d**M) with strings in the
    order of :func:`_reversed_prefix_order` (bool, symbol 1, for c = 1; int64 for c > 1); members in
    chunks, sites in order within a chunk. ``pred`` is a view of a buffer that the next step
    overwrites: use it before advancing the iterator."""
    E, d, D, c = P.E, P.A_left.shape[1], P.A_left.shape[2], P.C.shape[-1]
    A_right = P.A_left if P.A_right is None else P.A_right
    ws = _Workspace(chunk, M, d, D, c, P.A_left.dtype, P.A_left.device)
    for e0 in range(0, E, chunk):
        e1 = min(E, e0 + chunk)
        AL, AR, C, u, v = (t[e0:e1] for t in (P.A_left, A_right, P.C, P.u, P.v))
        scale = None if P.scale is None else P.scale[e0:e1]
        if c == 1 and normalize_map and scale is not None:
            # sign(scale) * W == W computed with sign(scale) * C, bit for bit (negation is exact),
            # and scale = 0 gives the zero map, predicted 0 as in tnattn.models.functional.predict
            C = C * torch.sign(scale).view(-1, 1, 1, 1, 1)
        rights = _right_levels(AR, v, M, ws)
        ML = _left_matrix(AL)
        L = _boundary(u)  # the empty prefix
        n_e = e1 - e0
        for i in range(M):
            if i > 0:
                L = _step(ML, L, ws.res, _Workspace.take(ws.left[i % 2], n_e, D, d**i))
            W = _site_maps(L, C, rights[M - 1 - i], ws.maps)
            yield e0, e1, i, _predict_from_maps(W, scale, normalize_map, ws.pred)


# ------------------------------------------------------------------------------------------------
# public API


@torch.no_grad()
def all_strings_predict(P: Params, M: int, d: Optional[int] = None, *, normalize_map: bool, chunk: Optional[int] = None) -> Tensor:
    """Predictions of every member on every site of every string of ``all_sequences(M, d)``.

    Equals ``tnattn.models.functional.predict(P, all_sequences(M, d), normalize_map=normalize_map)`` (up to logits
    within rounding of the decision boundary; see the module docstring), computed with contexts
    shared along the prefix/suffix trie.

    Parameters
    ----------
    P : Params
        E members: A_left, A_right (E, d, D, D) (``A_right`` may be ``A_left`` or None for the
        shared-tensor model), C (E, d, D, D, c), u, v (E, D), scale (E,) or None. Any floating dtype,
        any device (pure torch).
    M : int
        String length (>= 1).
    d : int, optional
        Alphabet size; must equal ``P.A_left.shape[1]`` (the default).
    normalize_map : bool
        As the model's ``normalize_map``: for c = 1 the prediction is ``sign(scale) * W[x] > 0`` when
        set and ``scale`` is not None, else ``W[x] > 0``; for c > 1 the argmax of the logits
        ``scale * W[x, :] / |W|`` (or of ``W[x, :]``).
    chunk : int, optional
        Members per pass; default: as many as keep the temporaries under about 256 MB (the output,
        8 * E * d**M * M bytes, comes on top).

    Returns
    -------
    Tensor, shape (E, d**M, M), int64
        Row n is string n of ``all_sequences(M, d)`` (lexicographic, first site most significant).
    """
    E, d, D, c = _check_params(P, M, d)
    chunk = _check_chunk(chunk, E, M, d, D, c, P.A_left.element_size(), P.A_left.device)
    N = d**M
    out = torch.empty(E, N, M, dtype=torch.int64, device=P.A_left.device)
    perms = [_reversed_prefix_order(M, d, i, out.device) for i in range(M)]
    buf = None
    for e0, e1, i, pred in _site_predictions(P, M, normalize_map, chunk):
        if i == 0:
            buf = torch.empty(e1 - e0, M, N, dtype=pred.dtype, device=pred.device)
        # contiguous rows in string order; one transposing copy per chunk below
        buf[:, i] = pred if perms[i] is None else pred[:, perms[i]]
        if i == M - 1:
            out[e0:e1] = buf.transpose(1, 2)
    return out


@torch.no_grad()
def all_strings_wrong_fraction(P: Params, M: int, y: Tensor, *, normalize_map: bool, chunk: Optional[int] = None) -> np.ndarray:
    """Fraction of wrong sites per member on all strings of length M, against labels ``y``.

    The value the chunked evaluator (:mod:`tnattn.ensemble.evaluators`) returns for
    ``all_sequences(M, d)``, without materialising the (E, d**M, M) predictions.

    Parameters
    ----------
    P : Params
        E members (see :func:`all_strings_predict`).
    M : int
        String length.
    y : Tensor
        Labels, shape (d**M, M) shared by all members or (E, d**M, M) per member, rows in the order
        of ``all_sequences(M, d)``; any integer dtype, any device (moved to the parameters').
    normalize_map : bool
        As in :func:`all_strings_predict`.
    chunk : int, optional
        Members per pass (default automatic, see :func:`all_strings_predict`).

    Returns
    -------
    numpy.ndarray, shape (E,), float64
        ``(number of sites with prediction != y) / (d**M * M)``.
    """
    E, d, D, c = _check_params(P, M, d=None)
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    N = d**M
    if tuple(y.shape) not in ((N, M), (E, N, M)):
        raise ValueError(f"y must have shape (d**M, M) = ({N}, {M}) or (E, d**M, M) = ({E}, {N}, {M}), got {tuple(y.shape)}")
    dev = P.A_left.device
    y = y.to(dev)
    chunk = _check_chunk(chunk, E, M, d, D, c, P.A_left.element_size(), P.A_left.device)
    wrong = torch.zeros(E, dtype=torch.int64, device=dev)
    # c = 1 predictions come as bools (symbol 1); with 0/1 labels, "wrong" is pred XOR (y == 1)
    binary = c == 1 and bool(((y == 0) | (y == 1)).all())
    target = (y == 1) if binary else y.long()
    # labels in the order of the predictions (cheaper than reordering the predictions)
    perms = [_reversed_prefix_order(M, d, i, dev) for i in range(M)]
    if y.dim() == 2:
        shared = [target[:, i] if perms[i] is None else target[perms[i], i] for i in range(M)]
    for e0, e1, i, pred in _site_predictions(P, M, normalize_map, chunk):
        if y.dim() == 2:
            ti = shared[i].unsqueeze(0)
        else:
            ti = target[e0:e1, :, i] if perms[i] is None else target[e0:e1, perms[i], i]
        miss = (pred ^ ti) if binary else (pred.long() != ti)
        wrong[e0:e1] += torch.count_nonzero(miss, dim=1)
    # the trainer's arithmetic: float64 counts divided by N*M
    return (wrong.double().cpu() / (N * M)).numpy()


def is_all_strings(x: Tensor, d: int) -> Optional[int]:
    """M if ``x`` equals ``all_sequences(M, d)`` exactly (rows in that order), else None.

    Parameters
    ----------
    x : Tensor, shape (N, M)
        Integer symbols (a floating tensor is never "all strings").
    d : int
        Alphabet size (>= 2).

    Returns
    -------
    int or None
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 2:
        raise ValueError(f"d must be an int >= 2, got {d!r}")
    if x.dim() != 2 or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        return None
    N, M = x.shape
    if M < 1 or d**M != N or N > _MAX_STRINGS:
        return None
    xl = x.long()
    if bool(((xl < 0) | (xl >= d)).any()):
        return None
    # Horner: the row's code with the first site most significant must be the row index
    code = torch.zeros(N, dtype=torch.int64, device=x.device)
    for j in range(M):
        code = code * d + xl[:, j]
    return M if bool(torch.equal(code, torch.arange(N, device=x.device))) else None


def _check_chunk(chunk, E: int, M: int, d: int, D: int, c: int, itemsize: int, device) -> int:
    if chunk is None:
        return _auto_chunk(E, M, d, D, c, itemsize, device)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1 or None, got {chunk!r}")
    return min(chunk, E)

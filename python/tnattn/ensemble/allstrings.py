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
the floating-point sums differs. Predictions therefore equal :func:`tnattn.ensemble.model.
ensemble_predict` except where a logit lies within rounding of 0 (or, for c > 1, two logits within
rounding of each other). Cost per member: about ``D * M * d**M`` multiply-adds for the maps plus
``2 D**2 d**M/(d-1)`` for the contexts, against ``~(2 + d*c) D**2 M d**M`` for the per-string kernel.

The map of string ``(p, s, t)`` at site i, ``W[p, :, t, :]``, is the same for every symbol s (the
contexts exclude site i), so the full ``d x c`` map needed for ``normalize_map`` with c > 1 comes
for free: c > 1 is supported.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from tnattn.ensemble.model import StackedParams

__all__ = ["all_strings_predict", "all_strings_wrong_fraction", "is_all_strings"]

#: Target for the extra memory (contexts, maps, temporaries) of one chunk of members, in bytes.
_CHUNK_BYTES = 256 * 2**20
#: Largest d**M handled (as :func:`tnattn.data.all_sequences`).
_MAX_STRINGS = 2**26


# ------------------------------------------------------------------------------------------------
# checks


def _check_params(P, M, d) -> tuple[int, int, int, int]:
    """Validate ``P``, ``M`` and ``d``; return (E, d, D, c)."""
    if not isinstance(P, StackedParams):
        raise TypeError(f"P must be a StackedParams, got {type(P).__name__}")
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


def _auto_chunk(E: int, M: int, d: int, D: int, c: int, itemsize: int) -> int:
    """Members per chunk so that one chunk's temporaries stay under ``_CHUNK_BYTES``."""
    n = d**M
    # right-context trie (~ n D d/(d-1) <= 2 n D), two left levels (<= 2 n D / d), the half-contracted
    # map (<= n D c), the map and its normalised copy (2 n d c for c > 1, n for c = 1), the 0/1
    # prediction and comparison planes (~ 3 n bytes)
    floats = 2 * n * D + n * D + n * D * c + (2 * n * d * c if c > 1 else n)
    per_member = floats * itemsize + 3 * n
    return max(1, min(E, _CHUNK_BYTES // per_member))


# ------------------------------------------------------------------------------------------------
# the trie


def _inv_norm(v: Tensor) -> Tensor:
    """``1/|v|`` over the last dimension (keepdim), 0 where ``|v| == 0`` (the kernels' exact-zero
    rule: plain sum of squares, inverse norm, and a zero vector stays zero)."""
    ss = torch.einsum("...a,...a->...", v, v).unsqueeze(-1)  # one pass, no squared temporary
    return torch.nan_to_num(ss.sqrt_().reciprocal_(), nan=float("nan"), posinf=0.0)


def _normalize_(v: Tensor) -> Tensor:
    """Normalise the last dimension of a fresh tensor in place (see :func:`_inv_norm`)."""
    return v.mul_(_inv_norm(v))


def _right_levels(A: Tensor, v: Tensor, M: int) -> list[Tensor]:
    """Right contexts of every suffix: level k has shape (E, d**k, D), suffix index lexicographic.

    ``R_k[s * d**(k-1) + t] = normalize(A[s] R_{k-1}[t])`` (``A[s] r`` sums over A's last index).
    """
    E, d, D, _ = A.shape
    # B[e, b, s*D + a] = A[e, s, a, b]: R_{k-1} @ B = (E, d**(k-1), d, D) = [t, s, a]
    B = A.permute(0, 3, 1, 2).reshape(E, D, d * D)
    levels = [_normalize_(v.unsqueeze(1).clone())]
    for k in range(1, M):
        prev = levels[-1]
        nxt = torch.bmm(prev, B).view(E, prev.shape[1], d, D)  # [t, s, a]
        # normalise and reorder to [s, t, a] (suffix index s * d**(k-1) + t) in one pass
        out = torch.empty(E, d, prev.shape[1], D, dtype=A.dtype, device=A.device)
        torch.mul(nxt.transpose(1, 2), _inv_norm(nxt).transpose(1, 2), out=out)
        levels.append(out.view(E, -1, D))
    return levels


def _left_step_matrix(A: Tensor) -> Tensor:
    """``B[e, a, s*D + b] = A[e, s, a, b]``: ``L_{k-1} @ B`` is (E, d**(k-1), d, D) = [p, s, b]."""
    E, d, D, _ = A.shape
    return A.permute(0, 2, 1, 3).reshape(E, D, d * D)


def _site_maps(L: Tensor, C: Tensor, R: Tensor) -> Tensor:
    """``W[e, p, s, t, o] = sum_ab L[e, p, a] C[e, s, a, b, o] R[e, t, b]``, shape (E, P, d, T, c).

    C is contracted with the smaller of the two context sets first; the second product then has
    the full size E * P * d * T * c * D.
    """
    E, Pn, D = L.shape
    Tn = R.shape[1]
    d, c = C.shape[1], C.shape[-1]
    if Pn <= Tn:
        # X[e, p, (s, o), b] = sum_a L[p, a] C[s, a, b, o]
        Cl = C.permute(0, 2, 1, 4, 3).reshape(E, D, d * c * D)  # [a, (s, o, b)]
        X = torch.bmm(L, Cl).view(E, Pn * d * c, D)
        W = torch.bmm(X, R.transpose(1, 2)).view(E, Pn, d, c, Tn)  # [p, s, o, t]
        return W.permute(0, 1, 2, 4, 3) if c > 1 else W.view(E, Pn, d, Tn, 1)
    # Y[e, t, (s, o), a] = sum_b C[s, a, b, o] R[t, b]
    Cr = C.permute(0, 3, 1, 4, 2).reshape(E, D, d * c * D)  # [b, (s, o, a)]
    Y = torch.bmm(R, Cr).view(E, Tn, d * c, D)
    Yt = Y.permute(0, 3, 2, 1).reshape(E, D, d * c * Tn)  # [a, (s, o, t)]
    W = torch.bmm(L, Yt).view(E, Pn, d, c, Tn)
    return W.permute(0, 1, 2, 4, 3) if c > 1 else W.view(E, Pn, d, Tn, 1)


def _predict_from_maps(W: Tensor, scale: Optional[Tensor], normalize_map: bool) -> Tensor:
    """Predictions (E, P*d*T) from the maps (E, P, d, T, c) of one site, as ``ensemble_predict``.

    c = 1: ``W > 0`` (bool); the sign of ``scale`` is already folded into C by the caller. c > 1:
    argmax (int64) of the logits of ``ensemble_logits``, ``scale * W[x, :] / |W|`` with the norm over
    the d*c map entries, or of ``W[x, :]`` without ``normalize_map``.
    """
    E, Pn, d, Tn, c = W.shape
    if c == 1:
        return W.view(E, -1) > 0
    if normalize_map:
        ss = (W * W).sum(dim=(2, 4), keepdim=True)  # (E, P, 1, T, 1): one map per (p, t)
        fac = torch.nan_to_num(ss.sqrt_().reciprocal_(), nan=float("nan"), posinf=0.0)
        if scale is not None:
            fac = fac * scale.view(E, 1, 1, 1, 1)
        W = W * fac
    return W.argmax(dim=-1).view(E, -1)


def _site_predictions(P: StackedParams, M: int, normalize_map: bool, chunk: int) -> Iterator[tuple[int, int, int, Tensor]]:
    """Yield ``(e0, e1, i, pred)``: members ``e0:e1``, site i, pred (e1-e0, d**M), bool for c = 1
    (predicted symbol 1), int64 for c > 1; members in chunks, sites in order within a chunk."""
    E = P.E
    A_right = P.A_left if P.A_right is None else P.A_right
    for e0 in range(0, E, chunk):
        e1 = min(E, e0 + chunk)
        AL, AR, C, u, v = (t[e0:e1] for t in (P.A_left, A_right, P.C, P.u, P.v))
        scale = None if P.scale is None else P.scale[e0:e1]
        n_e, d, D = AL.shape[0], AL.shape[1], AL.shape[2]
        if C.shape[-1] == 1 and normalize_map and scale is not None:
            # sign(scale) * W == W computed with sign(scale) * C, bit for bit (negation is exact),
            # and scale = 0 gives the zero map, predicted 0 as in ensemble_predict
            C = C * torch.sign(scale).view(n_e, 1, 1, 1, 1)
        rights = _right_levels(AR, v, M)
        BL = _left_step_matrix(AL)
        L = _normalize_(u.unsqueeze(1).clone())  # (e, 1, D): the empty prefix
        for i in range(M):
            if i > 0:
                L = _normalize_(torch.bmm(L, BL).view(n_e, -1, D))  # [p, s, b] -> prefix p*d + s
            W = _site_maps(L, C, rights[M - 1 - i])
            yield e0, e1, i, _predict_from_maps(W, scale, normalize_map)
            del W
        del rights


# ------------------------------------------------------------------------------------------------
# public API


@torch.no_grad()
def all_strings_predict(P: StackedParams, M: int, d: Optional[int] = None, *, normalize_map: bool, chunk: Optional[int] = None) -> Tensor:
    """Predictions of every member on every site of every string of ``all_sequences(M, d)``.

    Equals ``ensemble_predict(P, all_sequences(M, d), normalize_map=normalize_map)`` (up to logits
    within rounding of the decision boundary; see the module docstring), computed with contexts
    shared along the prefix/suffix trie.

    Parameters
    ----------
    P : StackedParams
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
    chunk = _check_chunk(chunk, E, M, d, D, c, P.A_left.element_size())
    N = d**M
    out = torch.empty(E, N, M, dtype=torch.int64, device=P.A_left.device)
    buf = None
    for e0, e1, i, pred in _site_predictions(P, M, normalize_map, chunk):
        if i == 0:
            buf = torch.empty(e1 - e0, M, N, dtype=pred.dtype, device=pred.device)
        buf[:, i] = pred  # contiguous rows; one transposing copy per chunk below
        if i == M - 1:
            out[e0:e1] = buf.transpose(1, 2)
    return out


@torch.no_grad()
def all_strings_wrong_fraction(P: StackedParams, M: int, y: Tensor, *, normalize_map: bool, chunk: Optional[int] = None) -> np.ndarray:
    """Fraction of wrong sites per member on all strings of length M, against labels ``y``.

    The value ``EnsembleTrainer._wrong_fraction(P, all_sequences(M, d), y)`` returns, without
    materialising the (E, d**M, M) predictions.

    Parameters
    ----------
    P : StackedParams
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
    chunk = _check_chunk(chunk, E, M, d, D, c, P.A_left.element_size())
    wrong = torch.zeros(E, dtype=torch.int64, device=dev)
    # c = 1 predictions come as bools (symbol 1); with 0/1 labels, "wrong" is pred XOR (y == 1)
    binary = c == 1 and bool(((y == 0) | (y == 1)).all())
    target = (y == 1) if binary else y.long()
    for e0, e1, i, pred in _site_predictions(P, M, normalize_map, chunk):
        ti = target[:, i].unsqueeze(0) if y.dim() == 2 else target[e0:e1, :, i]
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


def _check_chunk(chunk, E: int, M: int, d: int, D: int, c: int, itemsize: int) -> int:
    if chunk is None:
        return _auto_chunk(E, M, d, D, c, itemsize)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1 or None, got {chunk!r}")
    return min(chunk, E)

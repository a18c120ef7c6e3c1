"""Plain-PyTorch reference implementations of the tnattn ops.

These are the oracle for the tests and the baselines for the benchmarks. They follow the
definitions of the paper's TN-attention model (documentation: Science, "The student") literally
and get their gradients from torch autograd.

Two families live here:

* :func:`contexts` and :func:`tn_attention` -- a straightforward loop over positions with one
  batched matrix-vector product per step (M Python iterations per context direction). This is the
  oracle and the "reference loop" baseline of the benchmark.
* :func:`contexts_vectorized` and :func:`tn_attention_vectorized` -- a vectorised baseline that
  replaces the loop over positions by a log-depth (Hillis-Steele) prefix product of the per-site
  transfer matrices: ceil(log2 M) batched ``matmul`` calls per direction instead of M mat-vecs.
  It does O(M log M D^3) work instead of O(M D^2), so it wins only when Python overhead per step
  dominates (small N*D); it is the best we could do "without writing a kernel".

Shapes: d alphabet, D bond dimension, N batch, M length, c outputs.

Exact-zero rule
---------------
``normalize(v)`` returns ``v / |v|`` when ``v`` has a non-zero entry and the zero vector (with zero
gradient towards ``v``) when every entry is exactly zero. A context that became exactly zero
therefore stays zero for the rest of the scan and produces no NaN. The native kernels implement the
same rule.

Scale safety
------------
Norms are computed as BLAS ``nrm2`` does: the vector is first divided by its largest absolute entry,
so neither the squares of huge entries overflow (float32 from about 1e19) nor those of tiny entries
underflow (below about 1e-19; exactly 0 below about 1e-23). Contexts are projective (only their
direction matters), so a parameter scale of 1e30 or 1e-30 gives the same contexts as scale 1.

Bad input
---------
The same checks as :mod:`tnattn.ops`, with errors naming the argument: ``TypeError`` for a
non-tensor, a sparse/mkldnn/nested tensor or a wrong dtype, ``ValueError`` for wrong shapes, mixed
devices, empty sequences (M = 0) or symbols outside ``[0, d)`` (so -1 is never read as the last
symbol). Unlike the native ops an empty batch (N = 0) is accepted and gives empty results.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_contexts_args, check_symbol_range, check_tensor, check_tn_attention_args

__all__ = [
    "normalize",
    "site_matrices",
    "contexts",
    "tn_attention",
    "local_maps",
    "contexts_vectorized",
    "tn_attention_vectorized",
]


def normalize(v: Tensor) -> Tensor:
    """Normalise the last dimension to unit Euclidean norm, with the exact-zero rule.

    Parameters
    ----------
    v : Tensor, shape (..., D)

    Returns
    -------
    Tensor, shape (..., D)
        ``v / |v|`` where ``v != 0``; exactly zero (and zero gradient) where every entry is 0.

    Raises
    ------
    TypeError
        ``v`` is not a dense tensor.

    Notes
    -----
    Scale-safe (BLAS ``nrm2``): ``v`` is divided by ``m = max_k |v_k|`` before its norm is taken,
    so ``|v/m|`` lies in [1, sqrt(D)] and neither the norm nor the gradient (which holds
    ``1/|v|^2`` in the unscaled formula) overflows or underflows for any finite non-zero ``v``.
    ``m`` is treated as a constant (detached): ``v/|v|`` does not change when ``v`` is rescaled, so
    derivatives of every order are exact.
    """
    check_tensor(v, "v")
    m = v.detach().abs().amax(dim=-1, keepdim=True)
    w = v / torch.where(m > 0, m, torch.ones_like(m))
    n = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    pos = n > 0
    # Two wheres so that the masked branch never produces inf * 0 = NaN in the backward.
    safe = torch.where(pos, n, torch.ones_like(n))
    scale = torch.where(pos, 1.0 / safe, torch.zeros_like(n))
    return w * scale


def site_matrices(A: Tensor, xi: Tensor) -> Tensor:
    """Transfer matrices for one site (integer symbols) or one site of embeddings.

    Parameters
    ----------
    A : Tensor, shape (d, D, D)
    xi : Tensor, shape (N,) integer symbols, or shape (N, d) real embeddings

    Returns
    -------
    Tensor, shape (N, D, D)
        ``A[xi[n]]`` or ``sum_s xi[n, s] A[s]``.
    """
    if xi.is_floating_point():
        return torch.einsum("ns,sab->nab", xi, A)
    return A[xi.long()]


def _boundary_rows(boundary: Tensor, N: int) -> Tensor:
    b = boundary if boundary.dim() == 2 else boundary.unsqueeze(0)
    return normalize(b).expand(N, -1)


def contexts(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    """Normalised left (or right) contexts by a loop over positions.

    Parameters
    ----------
    A : Tensor, shape (d, D, D)
        Context tensor, symbol first.
    x : Tensor, shape (N, M) integer symbols in [0, d), or shape (N, M, d) real embeddings
    boundary : Tensor, shape (D,) or (N, D)
        Boundary vector (u for the left side, v for the right side), shared or per sequence.
    reverse : bool
        False: left contexts, ``out[:, 0] = b/|b|``, ``out[:, i] = normalize(out[:, i-1]^T A(x_{i-1}))``.
        True: right contexts, ``out[:, M-1] = b/|b|``, ``out[:, i] = normalize(A(x_{i+1}) out[:, i+1])``.

    Returns
    -------
    Tensor, shape (N, M, D)

    Raises
    ------
    TypeError, ValueError
        Bad arguments, named (see the module docstring).
    """
    _check_contexts(A, x, boundary)
    return _contexts(A, x, boundary, reverse=reverse)


def _check_contexts(A: Tensor, x: Tensor, boundary: Tensor) -> None:
    """The argument checks of :func:`contexts` and :func:`contexts_vectorized`."""
    _, d, _, _ = check_contexts_args(A, x, boundary, native=False)
    check_symbol_range(x, d)


def _contexts(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    """:func:`contexts` without argument checks (for validated or transformed inputs)."""
    N, M = x.shape[0], x.shape[1]
    cur = _boundary_rows(boundary, N)
    outs = [cur]
    if not reverse:
        for i in range(1, M):
            mats = site_matrices(A, x[:, i - 1])
            cur = normalize(torch.einsum("na,nab->nb", cur, mats))
            outs.append(cur)
        return torch.stack(outs, dim=1)
    for i in range(M - 2, -1, -1):
        mats = site_matrices(A, x[:, i + 1])
        cur = normalize(torch.einsum("nab,nb->na", mats, cur))
        outs.append(cur)
    outs.reverse()
    return torch.stack(outs, dim=1)


def local_maps(L: Tensor, C: Tensor, R: Tensor) -> Tensor:
    """Local maps ``W[n,i,s,o] = sum_{a,b} L[n,i,a] C[s,a,b,o] R[n,i,b]``.

    Parameters
    ----------
    L, R : Tensor, shape (N, M, D)
    C : Tensor, shape (d, D, D, c)

    Returns
    -------
    Tensor, shape (N, M, d, c)
    """
    for name, t in (("L", L), ("C", C), ("R", R)):
        check_tensor(t, name)
    return torch.einsum("nia,sabo,nib->niso", L, C, R)


def tn_attention(x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """TN-attention local maps by the reference loop.

    Parameters
    ----------
    x : Tensor, shape (N, M) integer symbols or (N, M, d) real embeddings
    A_left, A_right : Tensor, shape (d, D, D)
        Left / right context tensors (pass the same tensor twice for the shared-tensor model).
    C : Tensor, shape (d, D, D, c)
    u, v : Tensor, shape (D,) or (N, D)
        Left / right boundary vectors.

    Returns
    -------
    Tensor, shape (N, M, d, c)

    Raises
    ------
    TypeError, ValueError
        Bad arguments, named (see the module docstring).
    """
    _, d, _, _, _, _ = check_tn_attention_args(x, A_left, A_right, C, u, v, native=False)
    check_symbol_range(x, d)
    return _tn_attention(x, A_left, A_right, C, u, v)


def _tn_attention(x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """:func:`tn_attention` without argument checks (for validated or transformed inputs)."""
    L = _contexts(A_left, x, u)
    R = _contexts(A_right, x, v, reverse=True)
    return torch.einsum("nia,sabo,nib->niso", L, C, R)


# ---------------------------------------------------------------------------------------------
# Vectorised baseline: log-depth prefix products.
# ---------------------------------------------------------------------------------------------


def _normalize_mats(P: Tensor) -> Tensor:
    # Only the direction of a prefix product matters (contexts are projective), so rescale by the
    # Frobenius norm at every level to stay clear of overflow/underflow; exact zeros stay zero.
    return normalize(P.flatten(-2)).view_as(P)


def _prefix_products(G: Tensor) -> Tensor:
    """Inclusive ordered prefix products ``G[:,0] @ G[:,1] @ ... @ G[:,j]`` (up to scale).

    Hillis-Steele scan: ceil(log2 K) levels, each one batched matmul, no in-place writes (autograd).
    ``G`` has shape (N, K, D, D).
    """
    K = G.shape[1]
    S = G
    k = 1
    while k < K:
        S = torch.cat([S[:, :k], _normalize_mats(S[:, :-k] @ S[:, k:])], dim=1)
        k *= 2
    return S


def _all_site_matrices(A: Tensor, x: Tensor) -> Tensor:
    if x.is_floating_point():
        return torch.einsum("nis,sab->niab", x, A)
    return A[x.long()]


def contexts_vectorized(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    """Same values as :func:`contexts`, computed by a log-depth prefix product.

    The right contexts are the left contexts of the reversed sequence with transposed matrices.
    Mathematically identical to :func:`contexts` (contexts are projective and rescaling commutes
    with the products); rounding differs and, for products that become exactly zero, so may the
    detection of that case.

    Parameters, shapes and errors are those of :func:`contexts`.
    """
    _check_contexts(A, x, boundary)
    return _contexts_vectorized(A, x, boundary, reverse=reverse)


def _contexts_vectorized(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    if reverse:
        out = _contexts_vectorized(A.transpose(1, 2), x.flip(1), boundary, reverse=False)
        return out.flip(1)
    N, M = x.shape[0], x.shape[1]
    b = _boundary_rows(boundary, N)
    if M == 1:
        return b.unsqueeze(1)
    # site matrices rescaled first (contexts are projective): products of raw entries beyond ~1e19
    # would overflow in float32 before the first normalisation
    G = _normalize_mats(_all_site_matrices(A, x[:, : M - 1]))  # (N, M-1, D, D)
    P = _prefix_products(G)  # P[:, j] ~ G_0 ... G_j
    rest = normalize(torch.einsum("na,njab->njb", b, P))
    return torch.cat([b.unsqueeze(1), rest], dim=1)


def tn_attention_vectorized(
    x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor
) -> Tensor:
    """:func:`tn_attention` on top of :func:`contexts_vectorized` (same arguments, shapes and errors)."""
    _, d, _, _, _, _ = check_tn_attention_args(x, A_left, A_right, C, u, v, native=False)
    check_symbol_range(x, d)
    L = _contexts_vectorized(A_left, x, u)
    R = _contexts_vectorized(A_right, x, v, reverse=True)
    return local_maps(L, C, R)

"""Autograd-aware torch ops for TN attention, backed by the fused C++ kernels of ``tnattn._C``.

Ops (namespace ``tnattn``, registered with :func:`torch.library.custom_op`):

* ``tnattn::contexts(A, x, boundary, *, reverse=False) -> (N, M, D)``, called by :func:`contexts`
* ``tnattn::tn_attention(x, A_left, A_right, C, u, v) -> (N, M, d, c)``, called by
  :func:`tn_attention`
* ``tnattn::contexts_backward`` and ``tnattn::tn_attention_backward``: their backward passes,
  custom ops themselves so that ``torch.compile``/AOT autograd trace them like any aten op.

The public functions :func:`contexts` and :func:`tn_attention` check argument types (the dispatcher
would reject a non-tensor with a RuntimeError instead of a TypeError naming it) and then take one of
three paths over the same implementation functions:

* no autograd involved (no input requires grad, no torch.func transform, no forward-AD level): the
  kernel directly, skipping the Python dispatch of ``custom_op`` (about 0.2 ms per call, which
  dominates small problems);
* any autograd transform: a ``torch.autograd.Function`` of :mod:`tnattn._autograd`, which gives the
  exact derivative under plain backward (fused backward kernel), ``create_graph`` / double backward,
  ``torch.autograd.functional``, forward-mode AD (dual tensors) and ``torch.func`` (grad, vjp, jvp,
  jacrev, jacfwd, hessian, vmap -- a vmapped single op runs as one ensemble kernel call). Higher
  and forward-mode derivatives come from the plain-PyTorch reference (:mod:`tnattn.reference`),
  which computes the same function;
* under ``torch.compile``/``torch.export``, for tensor subclasses (fake tensors) and under
  ``torch.func.functionalize`` (which has no rule for autograd.Functions): the registered ops
  ``torch.ops.tnattn.*``. Called directly, these give the same derivatives under every
  transform: plain backward runs torch's custom-op autograd (the registered backward op, which is
  what compile traces), whose own derivative (double backward, ``create_graph``) comes from the
  reference; under torch.func transforms (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap) and
  forward-mode AD (dual tensors) the op's functorch and Autograd kernels hand the call to the
  torch.func-ready ``torch.autograd.Function`` above, as the public function does (torch's generated
  one cannot run there, or drops tangents). Only the raw backward ops themselves refuse
  torch.func grad transforms and forward-mode AD, with a ``NotImplementedError`` naming the op,
  the transform and the function to differentiate instead (see :mod:`tnattn._autograd`).

Both forward ops have fake (meta) kernels and autograd formulas; gradients flow to every floating
input (A, A_left, A_right, C, boundary/u/v and real embeddings x). Passing the same tensor as
``A_left`` and ``A_right`` gives the shared-tensor model; autograd sums the two gradients. The
registered backward ops check every argument, including the incoming gradient's shape, dtype and
device (the kernels read exactly the output's size from it).

What the forward saves for backward
-----------------------------------
Only its inputs (x, the parameters and the boundary vectors): no activations. The C++ backward
recomputes the contexts and their pre-normalisation norms block by block (8 sequences at a time, in
a per-thread scratch of O(8 * M * D) that stays in cache) and then runs the local-map backward and
the reverse adjoint scans. The extra scan costs less than writing and re-reading O(N * M * D)
saved contexts would. Peak extra memory is the output itself, O(N * M * d * c), plus the gradients.

Numerics
--------
* Exact-zero rule: ``normalize(w) = w / |w|`` when the computed norm is non-zero; when it is exactly
  zero (e.g. a zero boundary vector or a symbol whose matrix annihilates the context) the context is
  the zero vector, stays zero for the rest of the scan, produces no NaN and passes a zero gradient.
  :mod:`tnattn.reference` implements the same rule.
* Gradients of A and C are reduced over the batch in double precision, in a fixed order for a given
  thread count (results do not depend on thread timing).

Bad input
---------
Wrong types raise ``TypeError``, wrong shapes/sizes ``ValueError``, both naming the argument:
ranks, mismatched d or D (between A_left, A_right, C, x), unsupported or mixed dtypes, mixed
devices, an empty batch (N = 0) or empty sequences (M = 0) -- there is no sensible context of an
empty sequence, so these raise rather than return empty results. Symbols outside [0, d) are
detected by the kernel itself (nothing is read out of bounds) and raise ``ValueError``.
Non-contiguous inputs are accepted (copied to contiguous memory first).

Devices: CPU tensors run the threaded CPU kernels, which split the batch over
``torch.get_num_threads()`` threads (``std::thread``; small problems run on the calling thread).
CUDA tensors (in an extension built with ``TNATTN_CUDA``; see ``_C.has_cuda()``) run the CUDA
kernels of ``tnattn._C.cuda`` on the tensors' device and torch's current stream there (see
:func:`_native`). They are asynchronous except for integer symbols, where the call waits for the
stream to read the kernel's count of out-of-range symbols (so the ValueError is raised eagerly).
Gradients of A and C on CUDA are reduced in fp64 in a fixed order (bitwise reproducible for a
given shape) for D <= 32; larger D use fp64 atomics.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor

from . import _C, _autograd
from ._checks import (
    XInfo,
    check_contexts_args,
    check_flags,
    check_grad,
    check_tensor,
    check_tn_attention_args,
)

__all__ = ["contexts", "tn_attention"]


def _check_tensors(**tensors) -> None:
    for name, t in tensors.items():
        check_tensor(t, name)


_EAGER, _FUNCTION, _TRANSFORM, _OP = 0, 1, 2, 3


def _route(*tensors: Tensor) -> int:
    """Which path a call takes (see the module docstring).

    ``_OP`` (the registered custom op) under ``torch.compile``, for tensor subclasses (fake
    tensors) and under ``torch.func.functionalize``; otherwise the autograd.Functions of :mod:`tnattn._autograd`: ``_TRANSFORM`` (the
    torch.func-ready class) while a torch.func transform is active or a forward-mode AD level is
    open, ``_FUNCTION`` (the lean class, same derivatives) when an input requires grad, and
    ``_EAGER`` (the kernel, nothing recorded) otherwise.
    """
    if torch.compiler.is_compiling() or not all(type(t) is Tensor for t in tensors):
        return _OP
    if torch._C._are_functorch_transforms_active():
        # torch.func.functionalize has no rule for autograd.Functions; the registered op handles it
        # (and hands every other transform to the same class, see tnattn._autograd)
        return _OP if _autograd.functionalize_innermost() else _TRANSFORM
    if _forward_ad._current_level >= 0:
        return _TRANSFORM
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _FUNCTION
    return _EAGER


def _num_threads() -> int:
    return max(1, torch.get_num_threads())


def _native(fn_name: str, *args, like: Tensor):
    """Run the native entry point ``fn_name`` of :mod:`tnattn._C` on the device of ``like``.

    ``args`` are the entry point's arguments without its execution arguments, which depend on the
    device: on the CPU the kernel thread count is appended; on CUDA the kernels of
    ``tnattn._C.cuda`` get the device index, torch's current stream on that device (the kernels are
    enqueued there, so they order with the surrounding torch work and respect ``torch.cuda.stream``
    contexts) and a workspace allocator that hands out torch tensors from the caching allocator
    (kept alive until the call returns; reuse by later work on the same stream is stream-ordered).
    The C++ side makes the device current for the call and restores the previous one.

    Shared by every op that calls the extension (also :mod:`tnattn.ensemble`). Returns the entry
    point's result: the number of sequences holding a symbol outside [0, d).
    """
    dev = like.device
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        keep: list[Tensor] = []

        def alloc(nbytes: int) -> int:
            buf = torch.empty(max(int(nbytes), 1), dtype=torch.uint8, device=dev)
            keep.append(buf)
            return buf.data_ptr()

        stream = torch.cuda.current_stream(dev).cuda_stream
        return getattr(_C.cuda, fn_name)(*args, index, stream, alloc)
    return getattr(_C, fn_name)(*args, _num_threads())


def _raise_bad_symbols(bad: int, d: int) -> None:
    if bad:
        raise ValueError(f"x holds symbols outside [0, d) = [0, {d}) in {bad} sequence(s)")


def _check_contexts(A: Tensor, x: Tensor, boundary: Tensor) -> tuple[XInfo, int, int, bool]:
    return check_contexts_args(A, x, boundary)


def _check_tn_attention(x, A_left, A_right, C, u, v) -> tuple[XInfo, int, int, int, bool, bool]:
    return check_tn_attention_args(x, A_left, A_right, C, u, v)


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


# ------------------------------------------------------------------------------------------------
# Implementations (validated inputs; shared by the custom ops and the eager fast path)


def _contexts_impl(A: Tensor, x: Tensor, boundary: Tensor, reverse: bool) -> Tensor:
    xi, d, D, per_batch = _check_contexts(A, x, boundary)
    A, x, boundary = A.contiguous(), x.contiguous(), boundary.contiguous()
    out = torch.empty((xi.N, xi.M, D), dtype=A.dtype, device=A.device)
    bad = _native(
        "contexts_forward", A.dtype == torch.float64, A.data_ptr(), x.data_ptr(), xi.kind, False,
        boundary.data_ptr(), per_batch, out.data_ptr(), 1, xi.N, xi.M, d, D, reverse, like=A,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    return out


def _contexts_backward_impl(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x):
    xi, d, D, per_batch = _check_contexts(A, x, boundary)
    grad_out = check_grad("grad_out", grad_out, (xi.N, xi.M, D), A.dtype, A.device)
    A, x, boundary = A.contiguous(), x.contiguous(), boundary.contiguous()
    grad_out = grad_out.contiguous()
    gA = torch.empty_like(A) if need_A else None
    gb = A.new_empty((xi.N, D)) if need_boundary else None
    gx = A.new_empty((xi.N, xi.M, d)) if (need_x and xi.real) else None
    bad = _native(
        "contexts_backward", A.dtype == torch.float64, A.data_ptr(), x.data_ptr(), xi.kind, False,
        boundary.data_ptr(), per_batch, grad_out.data_ptr(), _ptr(gA), _ptr(gb), _ptr(gx), 1, xi.N,
        xi.M, d, D, reverse, like=A,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    if gb is not None and not per_batch:
        gb = gb.sum(0)
    return gA, gb, gx


def _tn_attention_impl(x, A_left, A_right, C, u, v) -> Tensor:
    xi, d, D, c, u_pb, v_pb = _check_tn_attention(x, A_left, A_right, C, u, v)
    x, A_left, A_right, C, u, v = (t.contiguous() for t in (x, A_left, A_right, C, u, v))
    W = torch.empty((xi.N, xi.M, d, c), dtype=C.dtype, device=C.device)
    bad = _native(
        "tn_attention_forward", C.dtype == torch.float64, x.data_ptr(), xi.kind, False,
        A_left.data_ptr(), A_right.data_ptr(), C.data_ptr(), u.data_ptr(), u_pb, v.data_ptr(), v_pb,
        W.data_ptr(), 1, xi.N, xi.M, d, D, c, like=C,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    return W


def _tn_attention_backward_impl(grad_W, x, A_left, A_right, C, u, v, needs):
    """Gradients (x, A_left, A_right, C, u, v); None where ``needs`` is False or x is integer."""
    xi, d, D, c, u_pb, v_pb = _check_tn_attention(x, A_left, A_right, C, u, v)
    grad_W = check_grad("grad_W", grad_W, (xi.N, xi.M, d, c), C.dtype, C.device)
    n_x, n_AL, n_AR, n_C, n_u, n_v = check_flags("needs", needs, 6)
    x, A_left, A_right, C, u, v = (t.contiguous() for t in (x, A_left, A_right, C, u, v))
    grad_W = grad_W.contiguous()
    gx = C.new_empty((xi.N, xi.M, d)) if (n_x and xi.real) else None
    gAL = torch.empty_like(A_left) if n_AL else None
    gAR = torch.empty_like(A_right) if n_AR else None
    gC = torch.empty_like(C) if n_C else None
    gu = C.new_empty((xi.N, D)) if n_u else None
    gv = C.new_empty((xi.N, D)) if n_v else None
    bad = _native(
        "tn_attention_backward", C.dtype == torch.float64, x.data_ptr(), xi.kind, False,
        A_left.data_ptr(), A_right.data_ptr(), C.data_ptr(), u.data_ptr(), u_pb, v.data_ptr(), v_pb,
        grad_W.data_ptr(), _ptr(gAL), _ptr(gAR), _ptr(gC), _ptr(gu), _ptr(gv), _ptr(gx), 1, xi.N, xi.M,
        d, D, c, like=C,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    if gu is not None and not u_pb:
        gu = gu.sum(0)
    if gv is not None and not v_pb:
        gv = gv.sum(0)
    return gx, gAL, gAR, gC, gu, gv


# ------------------------------------------------------------------------------------------------
# Public functions


def contexts(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    """Normalised left (or right) contexts of a batch of sequences (op ``tnattn::contexts``).

    In tensor-network terms (Žunkovič & Ilievski, arXiv:2210.15435, the TN-attention model): ``A`` is the site
    tensor of a uniform matrix product state (MPS) with physical dimension d and bond dimension D,
    ``A[s]`` is the transfer matrix of symbol s, and the contexts are the normalised left (right)
    environments of each site, i.e. the boundary vector contracted with the transfer matrices of the
    preceding (following) symbols.

    Parameters
    ----------
    A : Tensor, shape (d, D, D), float32 or float64
        Context tensor, symbol first.
    x : Tensor, shape (N, M) of uint8/int32/int64 symbols in [0, d), or (N, M, d) real embeddings
        With embeddings, the matrix at site i is ``sum_s x[n, i, s] A[s]``.
    boundary : Tensor, shape (D,) or (N, D)
        Boundary vector, shared by the batch or one per sequence.
    reverse : bool, keyword-only
        False (left contexts): ``out[:, 0] = b/|b|``, ``out[:, i] = normalize(out[:, i-1]^T A(x_{i-1}))``.
        True (right contexts): ``out[:, M-1] = b/|b|``, ``out[:, i] = normalize(A(x_{i+1}) out[:, i+1])``.

    Returns
    -------
    Tensor, shape (N, M, D)
        Unit vectors (or exactly zero, see the module's exact-zero rule).

    Raises
    ------
    TypeError, ValueError
        Bad arguments, named (see the module docstring); symbols outside [0, d).
    """
    _check_tensors(A=A, x=x, boundary=boundary)
    reverse = bool(reverse)
    route = _route(A, x, boundary)
    if route == _EAGER:
        return _contexts_impl(A, x, boundary, reverse)
    if route == _FUNCTION:
        return _ContextsLean.apply(A, x, boundary, reverse)
    if route == _TRANSFORM:
        return _ContextsFunction.apply(A, x, boundary, reverse)
    return torch.ops.tnattn.contexts(A, x, boundary, reverse=reverse)


def tn_attention(x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """TN-attention local maps, fused (op ``tnattn::tn_attention``).

    In tensor-network terms (Žunkovič & Ilievski, arXiv:2210.15435, the TN-attention model): the left and right
    environments of a uniform MPS (site tensors ``A_left``/``A_right``, bond dimension D) are
    contracted with the classification tensor ``C`` at every site, giving the site's local map
    (the paper's attention weights) from symbols to outputs.

    ``W[n, i, s, o] = sum_{a,b} L[n, i, a] C[s, a, b, o] R[n, i, b]`` with
    ``L = contexts(A_left, x, u)`` and ``R = contexts(A_right, x, v, reverse=True)``.

    Parameters
    ----------
    x : Tensor, shape (N, M) of uint8/int32/int64 symbols in [0, d), or (N, M, d) real embeddings
    A_left, A_right : Tensor, shape (d, D, D), float32 or float64
        Left / right context tensors; pass the same tensor twice for the shared-tensor model.
    C : Tensor, shape (d, D, D, c)
        Classification tensor.
    u, v : Tensor, shape (D,) or (N, D)
        Left / right boundary vectors.

    Returns
    -------
    Tensor, shape (N, M, d, c)
        The local map of every site; the raw output for the actual symbol is ``W[n, i, x[n, i]]``.

    Raises
    ------
    TypeError, ValueError
        Bad arguments, named (see the module docstring); symbols outside [0, d).
    """
    _check_tensors(x=x, A_left=A_left, A_right=A_right, C=C, u=u, v=v)
    inputs = (x, A_left, A_right, C, u, v)
    route = _route(*inputs)
    if route == _EAGER:
        return _tn_attention_impl(*inputs)
    if route == _FUNCTION:
        return _TNAttentionLean.apply(*inputs)
    if route == _TRANSFORM:
        return _TNAttentionFunction.apply(*inputs)
    return torch.ops.tnattn.tn_attention(*inputs)


# ------------------------------------------------------------------------------------------------
# autograd.Functions over the implementations (every autograd transform; see tnattn._autograd)


_ContextsFunction, _ContextsLean = _autograd.make_contexts_function(
    "_ContextsFunction", _contexts_impl, _contexts_backward_impl, _autograd.ref_contexts, _autograd.vmap_contexts,
    "contexts",
)  # fmt: skip
_TNAttentionFunction, _TNAttentionLean = _autograd.make_tn_attention_function(
    "_TNAttentionFunction", _tn_attention_impl, _tn_attention_backward_impl, _autograd.ref_tn_attention,
    _autograd.vmap_tn_attention, "tn_attention",
)  # fmt: skip


def _tn_attention_needs(x: Tensor, needs) -> list[bool]:
    needs = list(needs)
    needs[0] = needs[0] and x.is_floating_point()
    return needs


# ------------------------------------------------------------------------------------------------
# Custom ops (torch.compile, fake tensors, opcheck)


@torch.library.custom_op("tnattn::contexts", mutates_args=())
def _contexts_op(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    return _contexts_impl(A, x, boundary, reverse)


@_contexts_op.register_fake
def _contexts_fake(A, x, boundary, *, reverse=False):
    xi, d, D, _ = _check_contexts(A, x, boundary)
    return A.new_empty((xi.N, xi.M, D))


@torch.library.custom_op("tnattn::contexts_backward", mutates_args=())
def _contexts_backward_op(
    grad_out: Tensor,
    A: Tensor,
    x: Tensor,
    boundary: Tensor,
    reverse: bool,
    need_A: bool,
    need_boundary: bool,
    need_x: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of :func:`contexts`: ``(grad_A, grad_boundary, grad_x)``.

    ``grad_out`` has shape (N, M, D). A gradient that is not needed (or ``grad_x`` for integer
    symbols) comes back as an empty tensor of shape (0,).
    """
    grads = _contexts_backward_impl(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x)
    return tuple(g if g is not None else A.new_empty((0,)) for g in grads)


@_contexts_backward_op.register_fake
def _contexts_backward_fake(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x):
    xi, d, D, per_batch = _check_contexts(A, x, boundary)
    check_grad("grad_out", grad_out, (xi.N, xi.M, D), A.dtype, A.device)
    gA = torch.empty_like(A) if need_A else A.new_empty((0,))
    gb = (A.new_empty((xi.N, D)) if per_batch else A.new_empty((D,))) if need_boundary else A.new_empty((0,))
    gx = A.new_empty((xi.N, xi.M, d)) if (need_x and xi.real) else A.new_empty((0,))
    return gA, gb, gx


def _contexts_setup(ctx, inputs, keyword_only_inputs, output):
    ctx.save_for_backward(*inputs)
    ctx.reverse = keyword_only_inputs.get("reverse", False)


def _contexts_grad(ctx, grad):
    A, x, boundary = ctx.saved_tensors
    need_A, need_x, need_b = ctx.needs_input_grad[:3]
    need_x = need_x and x.is_floating_point()
    if not (need_A or need_x or need_b):
        return None, None, None
    gA, gb, gx = torch.ops.tnattn.contexts_backward(grad, A, x, boundary, ctx.reverse, need_A, need_b, need_x)
    return (gA if need_A else None), (gx if need_x else None), (gb if need_b else None)


_contexts_op.register_autograd(_contexts_grad, setup_context=_contexts_setup)
_autograd.register_raw_rules(
    _contexts_op, _contexts_backward_op, "contexts", "tnattn.ops.contexts", _autograd.vmap_contexts, _ContextsFunction,
    _autograd.ref_contexts, True,
)  # fmt: skip


@torch.library.custom_op("tnattn::tn_attention", mutates_args=())
def _tn_attention_op(x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
    return _tn_attention_impl(x, A_left, A_right, C, u, v)


@_tn_attention_op.register_fake
def _tn_attention_fake(x, A_left, A_right, C, u, v):
    xi, d, D, c, _, _ = _check_tn_attention(x, A_left, A_right, C, u, v)
    return C.new_empty((xi.N, xi.M, d, c))


@torch.library.custom_op("tnattn::tn_attention_backward", mutates_args=())
def _tn_attention_backward_op(
    grad_W: Tensor,
    x: Tensor,
    A_left: Tensor,
    A_right: Tensor,
    C: Tensor,
    u: Tensor,
    v: Tensor,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward of :func:`tn_attention`: ``(grad_x, grad_A_left, grad_A_right, grad_C, grad_u, grad_v)``.

    ``needs`` holds six flags in that order; an unneeded gradient (and ``grad_x`` for integer
    symbols) comes back as an empty tensor of shape (0,).
    """
    grads = _tn_attention_backward_impl(grad_W, x, A_left, A_right, C, u, v, needs)
    return tuple(g if g is not None else C.new_empty((0,)) for g in grads)


@_tn_attention_backward_op.register_fake
def _tn_attention_backward_fake(grad_W, x, A_left, A_right, C, u, v, needs):
    xi, d, D, c, u_pb, v_pb = _check_tn_attention(x, A_left, A_right, C, u, v)
    check_grad("grad_W", grad_W, (xi.N, xi.M, d, c), C.dtype, C.device)
    n_x, n_AL, n_AR, n_C, n_u, n_v = check_flags("needs", needs, 6)
    shapes = (
        (xi.N, xi.M, d) if (n_x and xi.real) else None,
        tuple(A_left.shape) if n_AL else None,
        tuple(A_right.shape) if n_AR else None,
        tuple(C.shape) if n_C else None,
        ((xi.N, D) if u_pb else (D,)) if n_u else None,
        ((xi.N, D) if v_pb else (D,)) if n_v else None,
    )
    return tuple(C.new_empty(s if s is not None else (0,)) for s in shapes)


def _tn_attention_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _tn_attention_grad(ctx, grad):
    saved = ctx.saved_tensors
    needs = _tn_attention_needs(saved[0], ctx.needs_input_grad[:6])
    if not any(needs):
        return (None,) * 6
    grads = torch.ops.tnattn.tn_attention_backward(grad, *saved, needs)
    return tuple(g if n else None for g, n in zip(grads, needs))


_tn_attention_op.register_autograd(_tn_attention_grad, setup_context=_tn_attention_setup)
_autograd.register_raw_rules(
    _tn_attention_op, _tn_attention_backward_op, "tn_attention", "tnattn.ops.tn_attention", _autograd.vmap_tn_attention,
    _TNAttentionFunction, _autograd.ref_tn_attention, False,
)  # fmt: skip

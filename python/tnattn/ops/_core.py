"""The native ops over (E, ...) member stacks, written once; the single-model call is E = 1.

Implementations (checked inputs in, kernel call, outputs out), the autograd.Functions over them,
the registered custom ops ``tnattn::contexts``/``tnattn::tn_attention`` (and their backward ops)
with fake kernels and autograd formulas, and the public functions that choose a path per call.
See :mod:`tnattn.ops` for the contract.

The single-model call (parameters without E) needs no copy and no view: a contiguous (d, D, D)
tensor is the memory of a (1, d, D, D) stack, so the implementations hand the same buffers to
the kernels with E = 1 and allocate outputs without the leading E (:class:`tnattn._checks.Layout`).
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor

from .. import _autograd
from .._checks import Layout, check_flags, check_grad, check_tensor, contexts_layout, tn_attention_layout
from . import heads as _heads
from ._native import call, ptr

__all__ = ["contexts", "tn_attention"]

_EAGER, _FUNCTION, _TRANSFORM, _OP = 0, 1, 2, 3


def _route(*tensors: Tensor) -> int:
    """Which path a call takes (see :mod:`tnattn.ops`).

    ``_OP`` (the registered custom op) under ``torch.compile``, for tensor subclasses (fake
    tensors) and under ``torch.func.functionalize``; otherwise the autograd.Functions of
    :mod:`tnattn._autograd`: ``_TRANSFORM`` (the torch.func-ready class) while a torch.func
    transform is active or a forward-mode AD level is open, ``_FUNCTION`` (the lean class, same
    derivatives) when an input requires grad, and ``_EAGER`` (the kernel, nothing recorded)
    otherwise.
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


# ------------------------------------------------------------------------------------------------
# Implementations (shared by the custom ops, the autograd.Functions and the eager fast path)


def _contexts_impl(A: Tensor, x: Tensor, boundary: Tensor, reverse: bool) -> Tensor:
    L = contexts_layout(A, x, boundary)
    A, x, boundary = A.contiguous(), x.contiguous(), boundary.contiguous()
    out = torch.empty((*L.lead, L.N, L.M, L.D), dtype=A.dtype, device=A.device)
    call(
        "contexts_forward", A.dtype == torch.float64, A.data_ptr(), x.data_ptr(), L.kind, L.x_shared,
        boundary.data_ptr(), L.u_pb, out.data_ptr(), L.E, L.N, L.M, L.d, L.D, reverse, like=A, d=L.d,
    )  # fmt: skip
    return out


def _contexts_backward_impl(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x):
    """(grad_A, grad_boundary, grad_x), None where not needed (or x is integer)."""
    L = contexts_layout(A, x, boundary)
    grad_out = check_grad("grad_out", grad_out, (*L.lead, L.N, L.M, L.D), A.dtype, A.device)
    A, x, boundary, grad_out = A.contiguous(), x.contiguous(), boundary.contiguous(), grad_out.contiguous()
    gA = torch.empty_like(A) if need_A else None
    # The kernel writes per-sequence boundary gradients and per-member x gradients; the broadcast
    # dimensions are summed here.
    gb = A.new_empty((*L.lead, L.N, L.D)) if need_boundary else None
    gx = A.new_empty((*L.lead, L.N, L.M, L.d)) if (need_x and L.real) else None
    call(
        "contexts_backward", A.dtype == torch.float64, A.data_ptr(), x.data_ptr(), L.kind, L.x_shared,
        boundary.data_ptr(), L.u_pb, grad_out.data_ptr(), ptr(gA), ptr(gb), ptr(gx), L.E, L.N, L.M, L.d, L.D,
        reverse, like=A, d=L.d,
    )  # fmt: skip
    if gb is not None:
        gb = L.grad_boundary(gb, L.u_pb)
    if gx is not None and L.x_shared:
        gx = gx.sum(0)
    return gA, gb, gx


def _tn_attention_impl(x, A_left, A_right, C, u, v) -> Tensor:
    L = tn_attention_layout(x, A_left, A_right, C, u, v)
    x, A_left, A_right, C, u, v = (t.contiguous() for t in (x, A_left, A_right, C, u, v))
    W = torch.empty((*L.lead, L.N, L.M, L.d, L.c), dtype=C.dtype, device=C.device)
    call(
        "tn_attention_forward", C.dtype == torch.float64, x.data_ptr(), L.kind, L.x_shared, A_left.data_ptr(),
        A_right.data_ptr(), C.data_ptr(), u.data_ptr(), L.u_pb, v.data_ptr(), L.v_pb, W.data_ptr(), L.E, L.N,
        L.M, L.d, L.D, L.c, like=C, d=L.d,
    )  # fmt: skip
    return W


def _tn_attention_backward_impl(grad_W, x, A_left, A_right, C, u, v, needs):
    """Gradients (x, A_left, A_right, C, u, v); None where ``needs`` is False or x is integer."""
    L = tn_attention_layout(x, A_left, A_right, C, u, v)
    grad_W = check_grad("grad_W", grad_W, (*L.lead, L.N, L.M, L.d, L.c), C.dtype, C.device)
    n_x, n_AL, n_AR, n_C, n_u, n_v = check_flags("needs", needs, 6)
    x, A_left, A_right, C, u, v = (t.contiguous() for t in (x, A_left, A_right, C, u, v))
    grad_W = grad_W.contiguous()
    gx = C.new_empty((*L.lead, L.N, L.M, L.d)) if (n_x and L.real) else None
    gAL = torch.empty_like(A_left) if n_AL else None
    gAR = torch.empty_like(A_right) if n_AR else None
    gC = torch.empty_like(C) if n_C else None
    gu = C.new_empty((*L.lead, L.N, L.D)) if n_u else None
    gv = C.new_empty((*L.lead, L.N, L.D)) if n_v else None
    call(
        "tn_attention_backward", C.dtype == torch.float64, x.data_ptr(), L.kind, L.x_shared, A_left.data_ptr(),
        A_right.data_ptr(), C.data_ptr(), u.data_ptr(), L.u_pb, v.data_ptr(), L.v_pb, grad_W.data_ptr(), ptr(gAL),
        ptr(gAR), ptr(gC), ptr(gu), ptr(gv), ptr(gx), L.E, L.N, L.M, L.d, L.D, L.c, like=C, d=L.d,
    )  # fmt: skip
    if gu is not None:
        gu = L.grad_boundary(gu, L.u_pb)
    if gv is not None:
        gv = L.grad_boundary(gv, L.v_pb)
    if gx is not None and L.x_shared:
        gx = gx.sum(0)
    return gx, gAL, gAR, gC, gu, gv


# ------------------------------------------------------------------------------------------------
# Public functions


def _check_tensors(**tensors) -> None:
    # the dispatcher would reject a non-tensor with a RuntimeError instead of a TypeError naming it
    for name, t in tensors.items():
        check_tensor(t, name)


def contexts(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    """Normalised left (or right) contexts of a batch of sequences (op ``tnattn::contexts``).

    In tensor-network terms (Žunkovič & Ilievski, arXiv:2210.15435, the TN-attention model): ``A`` is
    the site tensor of a uniform matrix product state (MPS) with physical dimension d and bond
    dimension D, ``A[s]`` is the transfer matrix of symbol s, and the contexts are the normalised
    left (right) environments of each site, i.e. the boundary vector contracted with the transfer
    matrices of the preceding (following) symbols.

    One model, or E models (members) in one kernel call: a leading member dimension E on ``A``
    selects the stacked form, in which every argument but a shared ``x`` carries E.

    Parameters
    ----------
    A : Tensor, shape (d, D, D) or (E, d, D, D), float32 or float64
        Context tensor, symbol first (one per member when stacked).
    x : Tensor
        Symbols of uint8/int32/int64 in [0, d), shape (N, M), or real embeddings of A's dtype,
        shape (N, M, d) (the matrix at site i is ``sum_s x[n, i, s] A[s]``). Stacked: the same
        shapes are one batch shared by all members; (E, N, M) / (E, N, M, d) give each member
        its own batch (the dtype tells symbols from embeddings).
    boundary : Tensor, shape (D,) or (N, D); stacked (E, D) or (E, N, D)
        Boundary vector, shared by the batch or one per sequence.
    reverse : bool, keyword-only
        False (left contexts): ``out[:, 0] = b/|b|``, ``out[:, i] = normalize(out[:, i-1]^T A(x_{i-1}))``.
        True (right contexts): ``out[:, M-1] = b/|b|``, ``out[:, i] = normalize(A(x_{i+1}) out[:, i+1])``.

    Returns
    -------
    Tensor, shape (N, M, D); stacked (E, N, M, D)
        Unit vectors (or exactly zero, see the exact-zero rule of :mod:`tnattn.ops`). Member e of
        a stacked call equals the single call on member e's tensors.

    Raises
    ------
    TypeError, ValueError
        Bad arguments, named (see :mod:`tnattn.ops`); symbols outside [0, d).
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


def tn_attention(
    x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor, *, head: _heads.Head | None = None
):
    """TN-attention local maps, fused (op ``tnattn::tn_attention``), optionally with a fused head.

    In tensor-network terms (Žunkovič & Ilievski, arXiv:2210.15435, the TN-attention model): the
    left and right environments of a uniform MPS (site tensors ``A_left``/``A_right``, bond
    dimension D) are contracted with the classification tensor ``C`` at every site, giving the
    site's local map (the paper's attention weights) from symbols to outputs.

    ``W[n, i, s, o] = sum_{a,b} L[n, i, a] C[s, a, b, o] R[n, i, b]`` with
    ``L = contexts(A_left, x, u)`` and ``R = contexts(A_right, x, v, reverse=True)``.

    One model, or E members in one kernel call: a leading member dimension E on the parameters
    selects the stacked form (as in :func:`contexts`).

    Parameters
    ----------
    x : Tensor
        Symbols (N, M) of uint8/int32/int64 in [0, d), or real embeddings (N, M, d); stacked:
        also (E, N, M) / (E, N, M, d), one batch per member.
    A_left, A_right : Tensor, shape (d, D, D) or (E, d, D, D), float32 or float64
        Left / right context tensors; pass the same tensor twice for the shared-tensor model.
    C : Tensor, shape (d, D, D, c) or (E, d, D, D, c)
        Classification tensor.
    u, v : Tensor, shape (D,) or (N, D); stacked (E, D) or (E, N, D)
        Left / right boundary vectors.
    head : SquaredErrorStep or WrongSiteCount, keyword-only, optional
        A fused head (:mod:`tnattn.ops.heads`): the kernel applies the symbol head (and loss) site
        by site instead of writing the maps, and the call returns the head's result. Heads need
        integer symbols and one output (c = 1) on the CPU, and record no autograd graph.

    Returns
    -------
    Tensor, shape (N, M, d, c); stacked (E, N, M, d, c)
        Without ``head``: the local map of every site; the raw output for the actual symbol is
        ``W[..., n, i, x[n, i]]``. With ``head``: see the head's class.

    Raises
    ------
    TypeError, ValueError
        Bad arguments, named (see :mod:`tnattn.ops`); symbols outside [0, d).
    """
    inputs = (x, A_left, A_right, C, u, v)
    if head is not None:
        return _heads.run(head, *inputs)  # checks every argument itself (the kernels' layout check)
    _check_tensors(x=x, A_left=A_left, A_right=A_right, C=C, u=u, v=v)
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
    L = contexts_layout(A, x, boundary)
    return A.new_empty((*L.lead, L.N, L.M, L.D))


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

    ``grad_out`` has the output's shape, (N, M, D) or (E, N, M, D). A gradient that is not
    needed (or ``grad_x`` for integer symbols) comes back as an empty tensor of shape (0,).
    """
    grads = _contexts_backward_impl(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x)
    return tuple(g if g is not None else A.new_empty((0,)) for g in grads)


@_contexts_backward_op.register_fake
def _contexts_backward_fake(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x):
    L = contexts_layout(A, x, boundary)
    check_grad("grad_out", grad_out, (*L.lead, L.N, L.M, L.D), A.dtype, A.device)
    gA = torch.empty_like(A) if need_A else A.new_empty((0,))
    gb = A.new_empty(L.grad_boundary_shape(L.u_pb)) if need_boundary else A.new_empty((0,))
    gx = A.new_empty(L.grad_x_shape()) if (need_x and L.real) else A.new_empty((0,))
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
    L = tn_attention_layout(x, A_left, A_right, C, u, v)
    return C.new_empty((*L.lead, L.N, L.M, L.d, L.c))


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
    L = tn_attention_layout(x, A_left, A_right, C, u, v)
    check_grad("grad_W", grad_W, (*L.lead, L.N, L.M, L.d, L.c), C.dtype, C.device)
    n_x, n_AL, n_AR, n_C, n_u, n_v = check_flags("needs", needs, 6)
    shapes = (
        L.grad_x_shape() if (n_x and L.real) else None,
        tuple(A_left.shape) if n_AL else None,
        tuple(A_right.shape) if n_AR else None,
        tuple(C.shape) if n_C else None,
        L.grad_boundary_shape(L.u_pb) if n_u else None,
        L.grad_boundary_shape(L.v_pb) if n_v else None,
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

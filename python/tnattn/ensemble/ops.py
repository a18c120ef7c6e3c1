"""Ensemble (E independent parameter sets) versions of the TN-attention custom ops.

Ops (namespace ``tnattn``, registered with :func:`torch.library.custom_op`, same conventions as
:mod:`tnattn.ops`):

* ``tnattn::contexts_ensemble(A, x, boundary, *, reverse=False) -> (E, N, M, D)``, called by
  :func:`contexts_ensemble`;
* ``tnattn::tn_attention_ensemble(x, A_left, A_right, C, u, v) -> (E, N, M, d, c)``, called by
  :func:`tn_attention_ensemble`;
* ``tnattn::contexts_ensemble_backward`` and ``tnattn::tn_attention_ensemble_backward``: their
  backward passes, custom ops themselves so that AOT autograd traces them like any aten op.

One call runs all E members in one kernel launch (the C++ kernels take a leading group dimension),
with per-member gradients. Each member ``e`` sees either its own batch ``x[e]`` or one batch shared
by all members (then ``x`` has no leading E).

Shapes (E members, N sequences, M sites, d alphabet, D bond dimension, c outputs)
----------------------------------------------------------------------------------
* ``A``, ``A_left``, ``A_right``: (E, d, D, D); ``C``: (E, d, D, D, c);
* ``boundary``, ``u``, ``v``: (E, D) (one vector per member) or (E, N, D) (per member and sequence);
* ``x``: integer symbols (E, N, M) per member or (N, M) shared, or real embeddings (E, N, M, d) per
  member or (N, M, d) shared. The dtype decides: a floating 3-d ``x`` is shared embeddings, an
  integer 3-d ``x`` is per-member symbols.

Devices: CPU tensors run the threaded CPU kernels (thread count: :class:`kernel_threads`); CUDA
tensors go through :func:`tnattn.ops._native` (the CUDA kernels, on torch's current stream) when
the extension was built with them. Calls take the paths of :mod:`tnattn.ops`: the kernel directly when
no autograd is involved, the ``torch.autograd.Function`` of :mod:`tnattn._autograd` under any
autograd transform (double backward, forward-mode AD and torch.func included; vmap folds the batch
into the member dimension), and the registered custom ops under ``torch.compile`` and for fake
tensors.

Member ``e`` of the result equals :func:`tnattn.ops.tn_attention` (or :func:`tnattn.ops.contexts`)
applied to member ``e``'s tensors; gradients are per member. As in :mod:`tnattn.ops`, the forward
saves only its inputs (the backward recomputes the contexts), bad input raises ``TypeError`` or
``ValueError`` naming the argument, and symbols outside ``[0, d)`` raise ``ValueError``.
Passing the same tensor as ``A_left`` and ``A_right`` gives the shared-tensor model.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from tnattn import _C, _autograd
from tnattn._checks import FLOAT_DTYPES, XInfo, check_devices, check_flags, check_grad, check_tensor, check_x
from tnattn.ops import _EAGER, _FUNCTION, _TRANSFORM, _check_tensors, _native, _ptr, _raise_bad_symbols, _route

__all__ = ["contexts_ensemble", "tn_attention_ensemble", "kernel_threads"]

# Threads of the fused kernels; None = torch.get_num_threads(). Separate from torch's intra-op
# threads so that a trainer can run the many small elementwise torch ops on one thread (on a busy
# machine every OpenMP region waits for its slowest, possibly descheduled, thread) while the kernel
# calls, which hold nearly all of the work, still use every core. Per Python thread: two threads
# that each set their own count must neither see nor undo each other's setting.
_KERNEL_THREADS = threading.local()


def _kernel_threads_setting() -> int | None:
    return getattr(_KERNEL_THREADS, "n", None)


def _num_threads() -> int:
    n = _kernel_threads_setting()
    return max(1, torch.get_num_threads() if n is None else n)


def _call(fn_name: str, *args, like: Tensor) -> int:
    """Run ``tnattn._C.<fn_name>``: on CUDA through :func:`tnattn.ops._native` (device, stream,
    workspace), on the CPU with this module's kernel thread count."""
    if like.device.type == "cuda":
        return _native(fn_name, *args, like=like)
    return getattr(_C, fn_name)(*args, _num_threads())


class kernel_threads:
    """Context manager: the ensemble kernels use ``n`` threads inside the block (None = torch's).

    The setting belongs to the calling Python thread: other threads keep their own (default None)
    and the previous value of this thread is restored on exit, also when the block raises and
    when one instance is entered again inside itself.

    Parameters
    ----------
    n : int or None
        Thread count (>= 1), or None for ``torch.get_num_threads()``.

    Raises
    ------
    ValueError
        ``n`` is not None and not an int >= 1.
    """

    def __init__(self, n: int | None):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"n must be an int >= 1 or None, got {n!r}")
        self.n = n

    def __enter__(self):
        stack = getattr(_KERNEL_THREADS, "stack", None)
        if stack is None:
            stack = _KERNEL_THREADS.stack = []
        stack.append(_kernel_threads_setting())
        _KERNEL_THREADS.n = self.n
        return self

    def __exit__(self, *exc):
        _KERNEL_THREADS.n = _KERNEL_THREADS.stack.pop()
        return False


# ------------------------------------------------------------------------------------------------
# argument checks (shapes, dtypes and devices only, so they also run on fake tensors)


def _check_stacked(name: str, A, ndim: int) -> Tensor:
    """A stacked parameter (E, d, D, D[, c]) of float32/float64 with E, d, D >= 1."""
    check_tensor(A, name)
    if A.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {A.dtype}")
    layout = "(E, d, D, D)" if ndim == 4 else "(E, d, D, D, c)"
    if A.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {tuple(A.shape)}")
    if A.shape[2] != A.shape[3]:
        raise ValueError(f"{name} must hold square matrices {layout}, got shape {tuple(A.shape)}")
    if min(A.shape[:4]) == 0:
        raise ValueError(f"{name} must have E >= 1, d >= 1 and D >= 1, got shape {tuple(A.shape)}")
    return A


def _check_x(x, E: int, d: int, dtype: torch.dtype) -> tuple[XInfo, bool]:
    """(sizes, shared) of the inputs; see the module docstring for the accepted layouts."""
    check_tensor(x, "x")
    per_member_dim = 4 if x.is_floating_point() else 3
    if x.dim() == per_member_dim:
        if x.shape[0] != E:
            raise ValueError(f"x has {x.shape[0]} members in its leading dimension but the parameters have E = {E}")
        return check_x(x[0], d, dtype), False
    if x.dim() == per_member_dim - 1:
        return check_x(x, d, dtype), True
    what = "real embeddings (E, N, M, d) or (N, M, d)" if x.is_floating_point() else "symbols (E, N, M) or (N, M)"
    raise ValueError(f"x must hold {what}, got shape {tuple(x.shape)}")


def _check_boundary(b, E: int, N: int, D: int, dtype: torch.dtype, name: str) -> bool:
    """A boundary (E, D) or per-sequence (E, N, D); returns True when per-sequence."""
    check_tensor(b, name)
    if b.dtype != dtype:
        raise TypeError(f"{name} must have the parameters' dtype {dtype}, got {b.dtype}")
    if b.dim() == 2 and tuple(b.shape) == (E, D):
        return False
    if b.dim() == 3 and tuple(b.shape) == (E, N, D):
        return True
    raise ValueError(f"{name} must have shape (E, D) = ({E}, {D}) or (E, N, D) = ({E}, {N}, {D}), got {tuple(b.shape)}")


def _check_contexts(A, x, boundary) -> tuple[XInfo, bool, int, int, int, bool]:
    A = _check_stacked("A", A, 4)
    E, d, D = A.shape[0], A.shape[1], A.shape[2]
    xi, shared = _check_x(x, E, d, A.dtype)
    per_batch = _check_boundary(boundary, E, xi.N, D, A.dtype, "boundary")
    check_devices(A=A, x=x, boundary=boundary)
    return xi, shared, E, d, D, per_batch


def _check_tn_attention(x, A_left, A_right, C, u, v):
    A_left = _check_stacked("A_left", A_left, 4)
    A_right = _check_stacked("A_right", A_right, 4)
    E, d, D = A_left.shape[0], A_left.shape[1], A_left.shape[2]
    if A_right.dtype != A_left.dtype:
        raise TypeError(f"A_right has dtype {A_right.dtype} but A_left has {A_left.dtype}")
    if A_right.shape != A_left.shape:
        raise ValueError(f"A_right has shape {tuple(A_right.shape)} but A_left has {tuple(A_left.shape)}")
    C = _check_stacked("C", C, 5)
    if C.dtype != A_left.dtype:
        raise TypeError(f"C has dtype {C.dtype} but A_left has {A_left.dtype}")
    if tuple(C.shape[:4]) != (E, d, D, D):
        raise ValueError(f"C must have shape (E, d, D, D, c) = ({E}, {d}, {D}, {D}, c), got {tuple(C.shape)}")
    c = C.shape[4]
    if c == 0:
        raise ValueError("C has c = 0 outputs; need c >= 1")
    xi, shared = _check_x(x, E, d, A_left.dtype)
    u_pb = _check_boundary(u, E, xi.N, D, A_left.dtype, "u")
    v_pb = _check_boundary(v, E, xi.N, D, A_left.dtype, "v")
    check_devices(x=x, A_left=A_left, A_right=A_right, C=C, u=u, v=v)
    return xi, shared, E, d, D, c, u_pb, v_pb


def _grad_x_shape(xi: XInfo, shared: bool, E: int, d: int) -> tuple:
    return (xi.N, xi.M, d) if shared else (E, xi.N, xi.M, d)


# ------------------------------------------------------------------------------------------------
# implementations (shared by the custom ops and the eager fast path)


def _contexts_impl(A: Tensor, x: Tensor, boundary: Tensor, reverse: bool) -> Tensor:
    xi, shared, E, d, D, per_batch = _check_contexts(A, x, boundary)
    A, x, boundary = A.contiguous(), x.contiguous(), boundary.contiguous()
    out = torch.empty((E, xi.N, xi.M, D), dtype=A.dtype, device=A.device)
    bad = _call(
        "contexts_forward", A.dtype == torch.float64, A.data_ptr(), x.data_ptr(), xi.kind, shared,
        boundary.data_ptr(), per_batch, out.data_ptr(), E, xi.N, xi.M, d, D, reverse, like=A,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    return out


def _contexts_backward_impl(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x):
    """(grad_A, grad_boundary, grad_x), None where not needed (or x is integer)."""
    xi, shared, E, d, D, per_batch = _check_contexts(A, x, boundary)
    grad_out = check_grad("grad_out", grad_out, (E, xi.N, xi.M, D), A.dtype, A.device)
    A, x, boundary = A.contiguous(), x.contiguous(), boundary.contiguous()
    grad_out = grad_out.contiguous()
    gA = torch.empty_like(A) if need_A else None
    # The kernel writes per-sequence boundary gradients and per-member x gradients; the broadcast
    # dimensions are summed here.
    gb = A.new_empty((E, xi.N, D)) if need_boundary else None
    gx = A.new_empty((E, xi.N, xi.M, d)) if (need_x and xi.real) else None
    bad = _call(
        "contexts_backward", A.dtype == torch.float64, A.data_ptr(), x.data_ptr(), xi.kind, shared,
        boundary.data_ptr(), per_batch, grad_out.data_ptr(), _ptr(gA), _ptr(gb), _ptr(gx), E, xi.N, xi.M, d,
        D, reverse, like=A,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    if gb is not None and not per_batch:
        gb = gb.sum(1)
    if gx is not None and shared:
        gx = gx.sum(0)
    return gA, gb, gx


def _tn_attention_impl(x, A_left, A_right, C, u, v) -> Tensor:
    xi, shared, E, d, D, c, u_pb, v_pb = _check_tn_attention(x, A_left, A_right, C, u, v)
    x, A_left, A_right, C, u, v = (t.contiguous() for t in (x, A_left, A_right, C, u, v))
    W = torch.empty((E, xi.N, xi.M, d, c), dtype=C.dtype, device=C.device)
    bad = _call(
        "tn_attention_forward", C.dtype == torch.float64, x.data_ptr(), xi.kind, shared, A_left.data_ptr(),
        A_right.data_ptr(), C.data_ptr(), u.data_ptr(), u_pb, v.data_ptr(), v_pb, W.data_ptr(), E, xi.N, xi.M,
        d, D, c, like=C,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    return W


def _tn_attention_backward_impl(grad_W, x, A_left, A_right, C, u, v, needs):
    """Gradients (x, A_left, A_right, C, u, v); None where ``needs`` is False or x is integer."""
    xi, shared, E, d, D, c, u_pb, v_pb = _check_tn_attention(x, A_left, A_right, C, u, v)
    grad_W = check_grad("grad_W", grad_W, (E, xi.N, xi.M, d, c), C.dtype, C.device)
    n_x, n_AL, n_AR, n_C, n_u, n_v = check_flags("needs", needs, 6)
    x, A_left, A_right, C, u, v = (t.contiguous() for t in (x, A_left, A_right, C, u, v))
    grad_W = grad_W.contiguous()
    gx = C.new_empty((E, xi.N, xi.M, d)) if (n_x and xi.real) else None
    gAL = torch.empty_like(A_left) if n_AL else None
    gAR = torch.empty_like(A_right) if n_AR else None
    gC = torch.empty_like(C) if n_C else None
    gu = C.new_empty((E, xi.N, D)) if n_u else None
    gv = C.new_empty((E, xi.N, D)) if n_v else None
    bad = _call(
        "tn_attention_backward", C.dtype == torch.float64, x.data_ptr(), xi.kind, shared, A_left.data_ptr(),
        A_right.data_ptr(), C.data_ptr(), u.data_ptr(), u_pb, v.data_ptr(), v_pb, grad_W.data_ptr(), _ptr(gAL),
        _ptr(gAR), _ptr(gC), _ptr(gu), _ptr(gv), _ptr(gx), E, xi.N, xi.M, d, D, c, like=C,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    if gu is not None and not u_pb:
        gu = gu.sum(1)
    if gv is not None and not v_pb:
        gv = gv.sum(1)
    if gx is not None and shared:
        gx = gx.sum(0)
    return gx, gAL, gAR, gC, gu, gv


def _needs(x: Tensor, needs) -> list[bool]:
    needs = list(needs)
    needs[0] = needs[0] and x.is_floating_point()
    return needs


# ------------------------------------------------------------------------------------------------
# public functions


def contexts_ensemble(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    """Normalised left (or right) contexts of E members in one call (op ``tnattn::contexts_ensemble``).

    Parameters
    ----------
    A : Tensor, shape (E, d, D, D), float32 or float64
        Context tensors of the E members.
    x : Tensor
        Symbols (E, N, M) / real embeddings (E, N, M, d) per member, or (N, M) / (N, M, d) shared.
    boundary : Tensor, shape (E, D) or (E, N, D)
    reverse : bool, keyword-only
        False: left contexts; True: right contexts (as :func:`tnattn.ops.contexts`).

    Returns
    -------
    Tensor, shape (E, N, M, D)
        ``out[e]`` equals ``tnattn.ops.contexts(A[e], x[e] or x, boundary[e], reverse=reverse)``.
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
    return torch.ops.tnattn.contexts_ensemble(A, x, boundary, reverse=reverse)


def tn_attention_ensemble(x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Fused TN-attention local maps of E members in one call (op ``tnattn::tn_attention_ensemble``).

    ``W[e, n, i, s, o] = sum_{a,b} L[e, n, i, a] C[e, s, a, b, o] R[e, n, i, b]``.

    Parameters
    ----------
    x : Tensor
        Symbols (E, N, M) / real embeddings (E, N, M, d) per member, or (N, M) / (N, M, d) shared.
    A_left, A_right : Tensor, shape (E, d, D, D), float32 or float64
        Pass the same tensor twice for the shared-tensor model.
    C : Tensor, shape (E, d, D, D, c)
    u, v : Tensor, shape (E, D) or (E, N, D)

    Returns
    -------
    Tensor, shape (E, N, M, d, c)
        ``W[e]`` equals ``tnattn.ops.tn_attention(x[e] or x, A_left[e], A_right[e], C[e], u[e], v[e])``.
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
    return torch.ops.tnattn.tn_attention_ensemble(*inputs)


# autograd.Functions over the implementations (every autograd transform; see tnattn._autograd)
_ContextsFunction, _ContextsLean = _autograd.make_contexts_function(
    "_ContextsEnsembleFunction", _contexts_impl, _contexts_backward_impl, _autograd.ref_contexts_ensemble,
    _autograd.vmap_contexts_ensemble, "contexts_ensemble",
)  # fmt: skip
_TNAttentionFunction, _TNAttentionLean = _autograd.make_tn_attention_function(
    "_TNAttentionEnsembleFunction", _tn_attention_impl, _tn_attention_backward_impl,
    _autograd.ref_tn_attention_ensemble, _autograd.vmap_tn_attention_ensemble, "tn_attention_ensemble",
)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# custom ops (torch.compile, fake tensors, opcheck)


@torch.library.custom_op("tnattn::contexts_ensemble", mutates_args=())
def _contexts_op(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
    return _contexts_impl(A, x, boundary, reverse)


@_contexts_op.register_fake
def _contexts_fake(A, x, boundary, *, reverse=False):
    xi, _, E, _, D, _ = _check_contexts(A, x, boundary)
    return A.new_empty((E, xi.N, xi.M, D))


@torch.library.custom_op("tnattn::contexts_ensemble_backward", mutates_args=())
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
    """Backward of :func:`contexts_ensemble`: ``(grad_A, grad_boundary, grad_x)``.

    ``grad_out`` has shape (E, N, M, D). Unneeded gradients (and ``grad_x`` of integer symbols)
    come back as empty tensors of shape (0,).
    """
    grads = _contexts_backward_impl(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x)
    return tuple(g if g is not None else A.new_empty((0,)) for g in grads)


@_contexts_backward_op.register_fake
def _contexts_backward_fake(grad_out, A, x, boundary, reverse, need_A, need_boundary, need_x):
    xi, shared, E, d, D, per_batch = _check_contexts(A, x, boundary)
    check_grad("grad_out", grad_out, (E, xi.N, xi.M, D), A.dtype, A.device)
    empty = A.new_empty((0,))
    gA = torch.empty_like(A) if need_A else empty
    gb = A.new_empty((E, xi.N, D) if per_batch else (E, D)) if need_boundary else empty.clone()
    gx = A.new_empty(_grad_x_shape(xi, shared, E, d)) if (need_x and xi.real) else empty.clone()
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
    gA, gb, gx = torch.ops.tnattn.contexts_ensemble_backward(grad, A, x, boundary, ctx.reverse, need_A, need_b, need_x)
    return (gA if need_A else None), (gx if need_x else None), (gb if need_b else None)


_contexts_op.register_autograd(_contexts_grad, setup_context=_contexts_setup)
_autograd.register_raw_rules(
    _contexts_op, _contexts_backward_op, "contexts_ensemble", "tnattn.ensemble.contexts_ensemble",
    _autograd.vmap_contexts_ensemble, _ContextsFunction, _autograd.ref_contexts_ensemble, True,
)  # fmt: skip


@torch.library.custom_op("tnattn::tn_attention_ensemble", mutates_args=())
def _tn_attention_op(x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
    return _tn_attention_impl(x, A_left, A_right, C, u, v)


@_tn_attention_op.register_fake
def _tn_attention_fake(x, A_left, A_right, C, u, v):
    xi, _, E, d, _, c, _, _ = _check_tn_attention(x, A_left, A_right, C, u, v)
    return C.new_empty((E, xi.N, xi.M, d, c))


@torch.library.custom_op("tnattn::tn_attention_ensemble_backward", mutates_args=())
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
    """Backward of :func:`tn_attention_ensemble`: ``(grad_x, grad_A_left, grad_A_right, grad_C, grad_u, grad_v)``.

    ``needs`` holds six flags in that order; an unneeded gradient (and ``grad_x`` of integer
    symbols) comes back as an empty tensor of shape (0,).
    """
    grads = _tn_attention_backward_impl(grad_W, x, A_left, A_right, C, u, v, needs)
    return tuple(g if g is not None else C.new_empty((0,)) for g in grads)


@_tn_attention_backward_op.register_fake
def _tn_attention_backward_fake(grad_W, x, A_left, A_right, C, u, v, needs):
    xi, shared, E, d, D, c, u_pb, v_pb = _check_tn_attention(x, A_left, A_right, C, u, v)
    check_grad("grad_W", grad_W, (E, xi.N, xi.M, d, c), C.dtype, C.device)
    n_x, n_AL, n_AR, n_C, n_u, n_v = check_flags("needs", needs, 6)
    shapes = (
        _grad_x_shape(xi, shared, E, d) if (n_x and xi.real) else None,
        tuple(A_left.shape) if n_AL else None,
        tuple(A_right.shape) if n_AR else None,
        tuple(C.shape) if n_C else None,
        ((E, xi.N, D) if u_pb else (E, D)) if n_u else None,
        ((E, xi.N, D) if v_pb else (E, D)) if n_v else None,
    )
    return tuple(C.new_empty(s if s is not None else (0,)) for s in shapes)


def _tn_attention_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _tn_attention_grad(ctx, grad):
    x, A_left, A_right, C, u, v = ctx.saved_tensors
    needs = _needs(x, ctx.needs_input_grad[:6])
    if not any(needs):
        return (None,) * 6
    grads = torch.ops.tnattn.tn_attention_ensemble_backward(grad, x, A_left, A_right, C, u, v, needs)
    return tuple(g if n else None for g, n in zip(grads, needs))


_tn_attention_op.register_autograd(_tn_attention_grad, setup_context=_tn_attention_setup)
_autograd.register_raw_rules(
    _tn_attention_op, _tn_attention_backward_op, "tn_attention_ensemble", "tnattn.ensemble.tn_attention_ensemble",
    _autograd.vmap_tn_attention_ensemble, _TNAttentionFunction, _autograd.ref_tn_attention_ensemble, False,
)  # fmt: skip

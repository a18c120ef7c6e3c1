"""Autograd formulas of the tnattn ops for every transform, complete or refused.

One ``torch.autograd.Function`` per op (single-model and stacked calls alike), written in the form that torch.func
accepts (``forward`` without ``ctx``, ``setup_context``, ``jvp`` and ``vmap`` static methods), so the
same class serves plain autograd, ``create_graph`` (double backward), ``torch.autograd.functional``,
forward-mode AD (dual tensors) and ``torch.func`` (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap).

What runs where
---------------
* Forward: always the fused kernel (the classes never see batched tensors: torch.func calls the
  ``vmap`` rule for those).
* Backward of a first derivative on plain tensors: the fused backward kernel.
* Backward that must itself be differentiable (``create_graph=True`` with inputs or incoming
  gradients that require grad, ``torch.func.grad`` inside another transform, ``jacrev``'s batched
  cotangents): the vector-Jacobian product of the plain-PyTorch reference
  (:mod:`tnattn.reference`), taken with ``torch.func.vjp``, so every higher derivative is exact. It
  recomputes the forward by the reference loop (M small matrix-vector steps per direction).
* Forward-mode AD (``jvp``, ``jacfwd``, dual tensors): the Jacobian-vector product of the reference
  (``torch.func.jvp``); the fused kernels have no forward mode.
* ``vmap``: a single-model call becomes one stacked call (the batch becomes the member dimension
  E, one kernel launch); a stacked call folds the batch into E.

The reference and the kernels compute the same function (tested against each other), so every
transform returns the derivative of the kernel's forward.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor

from . import reference

def _is_wrapped(t: Tensor) -> bool:
    # functorch's tensors (torch.func) and the legacy batched tensors of
    # torch.autograd.functional.jacobian(vectorize=True)
    return torch._C._functorch.is_functorch_wrapped_tensor(t) or torch._C._functorch.is_legacy_batchedtensor(t)


def _kernel_backward_ok(tensors: Sequence[Tensor]) -> bool:
    """True when the fused backward kernel may run: plain tensors and no graph to record.

    Inside a backward, grad mode is on exactly when the caller asked for ``create_graph``; the
    kernel's result would then be a constant, so a second derivative through it would be silently
    zero. Wrapped (functorch) tensors and tensor subclasses (fake tensors, when a raw op is traced
    under a torch.func transform) cannot be handed to the kernel at all.
    """
    if not all(type(t) is Tensor and not _is_wrapped(t) for t in tensors):
        return False  # wrapped (functorch) or subclass (fake) tensors: the kernel reads raw memory
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _differentiable(t: Tensor) -> bool:
    return t.is_floating_point()


def reference_vjp(fn: Callable, inputs: Sequence, needs: Sequence[bool], grad: Tensor) -> list:
    """``grad^T d fn / d inputs[i]`` for every i with ``needs[i]`` (None elsewhere), differentiably.

    ``fn`` is a plain-PyTorch function of all ``inputs`` (non-tensors pass through).
    """
    idx = [i for i, n in enumerate(needs) if n and isinstance(inputs[i], Tensor) and _differentiable(inputs[i])]
    out: list = [None] * len(inputs)
    if not idx:
        return out

    def f(*diff):
        args = list(inputs)
        for i, t in zip(idx, diff):
            args[i] = t
        return fn(*args)

    _, vjp_fn = torch.func.vjp(f, *[inputs[i] for i in idx])
    for i, g in zip(idx, vjp_fn(grad)):
        out[i] = g
    return out


def reference_jvp(fn: Callable, inputs: Sequence, tangents: Sequence) -> Tensor:
    """``sum_i d fn / d inputs[i] . tangents[i]`` over the inputs that have a tangent."""
    idx = [i for i, t in enumerate(tangents) if t is not None and _differentiable(inputs[i])]

    def f(*diff):
        args = list(inputs)
        for i, t in zip(idx, diff):
            args[i] = t
        return fn(*args)

    primals = tuple(inputs[i] for i in idx)
    if not idx:
        return torch.zeros_like(fn(*inputs))
    if _forward_ad._current_level < 0:
        return torch.func.jvp(f, primals, tuple(tangents[i] for i in idx))[1]
    # Inside torch.autograd.forward_ad (dual tensors) torch.func.jvp would open a nested forward
    # level, which torch does not support. J t is then the vjp of the linear map w -> J^T w at t.
    out, vjp_fn = torch.func.vjp(f, *primals)
    _, vjp_of_vjp = torch.func.vjp(vjp_fn, torch.zeros_like(out))
    return vjp_of_vjp(tuple(tangents[i] for i in idx))[0]


# ------------------------------------------------------------------------------------------------
# plain-PyTorch definitions of the two ops (no argument checks: the inputs were checked by the op)


def _ref_contexts_one(A, x, boundary, reverse):
    return reference._contexts(A, x, boundary, reverse=reverse)


def _x_shared(x: Tensor) -> bool:
    """Whether a stacked call's ``x`` is one batch shared by all members (see tnattn.ops)."""
    return x.dim() == (3 if x.is_floating_point() else 2)


def ref_contexts(A, x, boundary, reverse):
    """The plain-PyTorch ``contexts``, single (A (d, D, D)) or stacked (A (E, d, D, D))."""
    if A.dim() == 3:
        return _ref_contexts_one(A, x, boundary, reverse)
    fn = torch.func.vmap(
        lambda a, xx, b: _ref_contexts_one(a, xx, b, reverse), in_dims=(0, None if _x_shared(x) else 0, 0)
    )
    return fn(A, x, boundary)


def ref_tn_attention(x, A_left, A_right, C, u, v):
    """The plain-PyTorch ``tn_attention``, single or stacked (as :func:`ref_contexts`)."""
    if A_left.dim() == 3:
        return reference._tn_attention(x, A_left, A_right, C, u, v)
    fn = torch.func.vmap(reference._tn_attention, in_dims=(None if _x_shared(x) else 0, 0, 0, 0, 0, 0))
    return fn(x, A_left, A_right, C, u, v)


# ------------------------------------------------------------------------------------------------
# helpers of the vmap rules


def _batch_first(t: Tensor, dim, B: int) -> Tensor:
    """``t`` with its vmap dimension first; an unbatched tensor is expanded (no copy) to B."""
    if dim is None:
        return t.expand(B, *t.shape)
    return t.movedim(dim, 0)


def _members(x: Tensor, dim) -> Tensor:
    """The ``x`` of a stacked call built from a vmapped single call's ``x`` (shared when unbatched)."""
    return x if dim is None else x.movedim(dim, 0)


def _fold(t: Tensor, dim, B: int) -> Tensor:
    """(B, E, ...) -> (B*E, ...) for a member-stacked argument."""
    t = _batch_first(t, dim, B)
    return t.reshape(B * t.shape[1], *t.shape[2:])


def _fold_x(x: Tensor, dim, B: int, E: int) -> Tensor:
    """``x`` of a stacked call under vmap, as the ``x`` of one stacked call over B*E members."""
    if dim is None:
        if _x_shared(x):
            return x  # shared by every member of every batch entry
        return x.expand(B, *x.shape).reshape(B * E, *x.shape[1:])
    xb = x.movedim(dim, 0)
    if _x_shared(xb[0]):  # one shared batch per vmap entry: repeat it for the E members
        return xb.unsqueeze(1).expand(B, E, *xb.shape[1:]).reshape(B * E, *xb.shape[1:])
    return xb.reshape(B * E, *xb.shape[2:])


# ------------------------------------------------------------------------------------------------
# the autograd.Functions


def _needs_x(x: Tensor, need: bool) -> bool:
    return bool(need) and x.is_floating_point()


def _below_autograd(op: str, *args, **kwargs) -> Tensor:
    """The registered op ``torch.ops.tnattn.<op>`` without its Autograd kernel (which would route
    the call back to the autograd.Function that is running it): for tensor subclasses, i.e. fake
    tensors when a raw op is traced under a torch.func transform."""
    with torch._C._AutoDispatchBelowAutograd():
        return getattr(torch.ops.tnattn, op)(*args, **kwargs)


def _plain(*tensors: Tensor) -> bool:
    return all(type(t) is Tensor for t in tensors)


def make_contexts_function(
    name: str, impl: Callable, backward_impl: Callable, ref: Callable, vmap_rule: Callable, op: str
):
    """autograd.Functions (full, lean; see :func:`_classes`) for a contexts op (single-model and stacked calls).

    ``impl(A, x, boundary, reverse)`` is the kernel forward, ``backward_impl(grad, A, x, boundary,
    reverse, need_A, need_boundary, need_x) -> (gA, gb, gx)`` the kernel backward, ``ref`` the
    plain-PyTorch definition, ``vmap_rule(B, in_dims, A, x, boundary, reverse)`` the batching rule
    and ``op`` the name of the registered op (``torch.ops.tnattn.<op>``, whose fake kernel the full
    class's forward runs for fake tensors).
    """

    def forward(A, x, boundary, reverse):
        if not _plain(A, x, boundary):
            return _below_autograd(op, A, x, boundary, reverse=reverse)
        return impl(A, x, boundary, reverse)

    def setup_context(ctx, inputs, output):
        A, x, boundary, reverse = inputs
        ctx.save_for_backward(A, x, boundary)
        ctx.save_for_forward(A, x, boundary)
        ctx.reverse = reverse

    def backward(ctx, grad):
        A, x, boundary = ctx.saved_tensors
        need_A, need_x, need_b = ctx.needs_input_grad[:3]
        need_x = _needs_x(x, need_x)
        if not (need_A or need_x or need_b):
            return None, None, None, None
        if _kernel_backward_ok((grad, A, x, boundary)):
            gA, gb, gx = backward_impl(grad, A, x, boundary, ctx.reverse, need_A, need_b, need_x)
            return gA, gx, gb, None
        gA, gx, gb, _ = reference_vjp(ref, (A, x, boundary, ctx.reverse), (need_A, need_x, need_b, False), grad)
        return gA, gx, gb, None

    def jvp(ctx, tA, tx, tb, _):
        A, x, boundary = ctx.saved_tensors
        return reference_jvp(ref, (A, x, boundary, ctx.reverse), (tA, tx, tb, None))

    def vmap(info, in_dims, A, x, boundary, reverse):
        return vmap_rule(info.batch_size, in_dims, A, x, boundary, reverse), 0

    def lean_forward(ctx, A, x, boundary, reverse):
        ctx.save_for_backward(A, x, boundary)
        ctx.reverse = reverse
        return impl(A, x, boundary, reverse)

    return _classes(name, forward, setup_context, lean_forward, backward, jvp, vmap)


def _classes(name, forward, setup_context, lean_forward, backward, jvp, vmap):
    """(full, lean): the torch.func-ready class, and a lean one for plain autograd.

    The lean class (``forward(ctx, ...)``, no ``jvp``/``vmap``) costs about 75 us less per call
    than the full one on small problems; it serves every call outside torch.func transforms and
    forward-AD levels, including ``create_graph`` (its backward is the same function).
    """
    full = type(name, (torch.autograd.Function,), {n: staticmethod(f) for n, f in
                (("forward", forward), ("setup_context", setup_context), ("backward", backward), ("jvp", jvp),
                 ("vmap", vmap))})  # fmt: skip
    lean = type(name + "Lean", (torch.autograd.Function,),
                {"forward": staticmethod(lean_forward), "backward": staticmethod(backward)})  # fmt: skip
    return full, lean


def make_tn_attention_function(
    name: str, impl: Callable, backward_impl: Callable, ref: Callable, vmap_rule: Callable, op: str
):
    """autograd.Functions (full, lean; see :func:`_classes`) for a tn_attention op (single-model and stacked calls).

    ``impl(x, A_left, A_right, C, u, v)`` is the kernel forward, ``backward_impl(grad, x, A_left,
    A_right, C, u, v, needs)`` the kernel backward (six gradients), ``ref`` the plain-PyTorch
    definition, ``vmap_rule(B, in_dims, *inputs)`` the batching rule and ``op`` the name of the
    registered op (as in :func:`make_contexts_function`).
    """

    def forward(x, A_left, A_right, C, u, v):
        if not _plain(x, A_left, A_right, C, u, v):
            return _below_autograd(op, x, A_left, A_right, C, u, v)
        return impl(x, A_left, A_right, C, u, v)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    def backward(ctx, grad):
        saved = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:6])
        needs[0] = _needs_x(saved[0], needs[0])
        if not any(needs):
            return (None,) * 6
        if _kernel_backward_ok((grad, *saved)):
            return tuple(backward_impl(grad, *saved, needs))
        return tuple(reference_vjp(ref, saved, needs, grad))

    def jvp(ctx, *tangents):
        return reference_jvp(ref, ctx.saved_tensors, tangents)

    def vmap(info, in_dims, *inputs):
        return vmap_rule(info.batch_size, in_dims, *inputs), 0

    def lean_forward(ctx, x, A_left, A_right, C, u, v):
        ctx.save_for_backward(x, A_left, A_right, C, u, v)
        return impl(x, A_left, A_right, C, u, v)

    return _classes(name, forward, setup_context, lean_forward, backward, jvp, vmap)


# ------------------------------------------------------------------------------------------------
# vmap rules: a single-model call becomes one stacked call over the batch; a stacked call folds the batch
# into its member dimension


def _ops(raw: bool):
    """The ops a vmap rule calls: the public functions, or the raw registered ops (inside the rules
    of the raw ops, where no autograd.Function may be applied)."""
    if raw:
        return torch.ops.tnattn.contexts, torch.ops.tnattn.tn_attention
    from .ops import contexts, tn_attention

    return contexts, tn_attention


def _logical_dim(t: Tensor, dim) -> int:
    """Rank of ``t`` as the op sees it, without its vmap dimension."""
    return t.dim() - (dim is not None)


def vmap_contexts(B, in_dims, A, x, boundary, reverse, raw=False):
    """Batching rule: a single call becomes one stacked call over the batch (E = B); a stacked call
    folds the batch into its member dimension (B*E members)."""
    contexts, _ = _ops(raw)
    dA, dx, db, _ = in_dims
    if _logical_dim(A, dA) == 3:
        return contexts(_batch_first(A, dA, B), _members(x, dx), _batch_first(boundary, db, B), reverse=reverse)
    A = _batch_first(A, dA, B)
    E = A.shape[1]
    out = contexts(_fold(A, 0, B), _fold_x(x, dx, B, E), _fold(boundary, db, B), reverse=reverse)
    return out.view(B, E, *out.shape[1:])


def vmap_tn_attention(B, in_dims, x, A_left, A_right, C, u, v, raw=False):
    """Batching rule of ``tn_attention`` (as :func:`vmap_contexts`)."""
    _, tn_attention = _ops(raw)
    dx, dAL, dAR, dC, du, dv = in_dims
    if _logical_dim(A_left, dAL) == 3:
        return tn_attention(
            _members(x, dx), _batch_first(A_left, dAL, B), _batch_first(A_right, dAR, B), _batch_first(C, dC, B),
            _batch_first(u, du, B), _batch_first(v, dv, B),
        )  # fmt: skip
    A_left = _batch_first(A_left, dAL, B)
    E = A_left.shape[1]
    out = tn_attention(
        _fold_x(x, dx, B, E), _fold(A_left, 0, B), _fold(A_right, dAR, B), _fold(C, dC, B), _fold(u, du, B),
        _fold(v, dv, B),
    )  # fmt: skip
    return out.view(B, E, *out.shape[1:])


# ------------------------------------------------------------------------------------------------
# the raw registered ops (torch.ops.tnattn.*): what torch.compile and torch.export trace (with their
# fake kernels) and what opcheck tests. Plain autograd runs the Autograd kernel that
# torch.library.custom_op generates from register_autograd: the fused backward op, whose own
# derivative (below) comes from the reference, so create_graph and double backward are exact.
# That generated kernel applies an autograd.Function without setup_context, which torch.func's
# grad transforms reject, and it drops forward-mode tangents. So the raw forward ops get two more
# kernels that hand such calls to the torch.func-ready class of the public function:
# * FuncTorchDynamicLayerFrontMode (runs first whenever a torch.func transform is active, with the
#   dispatch state of the caller): the class, as the public function does, so every torch.func
#   transform and composition behaves as it does for the public function. torch.func.functionalize
#   (which the class does not support, and which needs nothing from a functional op) unwraps,
#   calls the op one level down and wraps the result, as torch's own fallback does;
# * Autograd: the class while a forward-mode AD level is open outside torch.func (dual tensors),
#   torch's generated kernel otherwise.


def _grad_or_jvp_transform() -> bool:
    """A torch.func grad-type (grad, vjp, jacrev, hessian) or jvp-type (jvp, jacfwd) transform is
    the innermost one."""
    interp = torch._C._functorch.peek_interpreter_stack()
    return interp is not None and interp.key() in (
        torch._C._functorch.TransformType.Grad, torch._C._functorch.TransformType.Jvp,
    )  # fmt: skip


def functionalize_innermost() -> bool:
    """torch.func.functionalize is the innermost torch.func transform."""
    interp = torch._C._functorch.peek_interpreter_stack()
    return interp is not None and interp.key() == torch._C._functorch.TransformType.Functionalize


def _has_tangent(t) -> bool:
    return (
        isinstance(t, Tensor) and _forward_ad._current_level >= 0 and _forward_ad.unpack_dual(t).tangent is not None
    )


def _unsupported_transform(args) -> str | None:
    """The transform that a raw backward op's arguments carry and its generated Autograd kernel
    cannot (torch.func grad: an internal torch error; forward mode: tangents dropped)."""
    if torch._C._functorch.peek_interpreter_stack() is not None and not _grad_or_jvp_transform():
        return None
    tensors = [a for a in args if isinstance(a, Tensor)]
    if any(_has_tangent(t) for t in tensors):
        return "forward-mode AD (torch.func.jvp, jacfwd, linearize, torch.autograd.forward_ad dual tensors)"
    if _grad_or_jvp_transform() and any(t.requires_grad for t in tensors):
        return "torch.func's grad transforms (grad, vjp, jacrev, hessian)"
    return None


def _generated_autograd_kernel(custom_op) -> Callable:
    """The Autograd kernel that torch.library.custom_op registered for ``custom_op`` (built again
    from its register_autograd formula, which it reads when called)."""
    from torch._library.autograd import make_autograd_impl

    return make_autograd_impl(custom_op._opoverload, custom_op)


def _set_autograd_kernel(custom_op, kernel: Callable) -> None:
    """Replace the Autograd kernel that torch.library.custom_op registered for ``custom_op``."""
    with warnings.catch_warnings():
        # the dispatcher warns about any second kernel for a key; replacing it is the point here
        warnings.filterwarnings("ignore", message="(?s).*Overriding a previously registered kernel")
        custom_op._lib.impl(custom_op._name, kernel, "Autograd", with_keyset=True)


def _double_vjp(first_vjp: Callable, inputs: Sequence[Tensor], wrt: Sequence[bool], cotangents: Sequence) -> list:
    """``d/d inputs[i] sum_j <cotangents[j], first_vjp(*inputs)[j]>`` for every i with ``wrt[i]``
    (None elsewhere); a None cotangent is skipped. Differentiable (triple derivatives work)."""
    idx = [i for i, w in enumerate(wrt) if w and inputs[i].is_floating_point()]
    used = [j for j, g in enumerate(cotangents) if g is not None]
    out: list = [None] * len(inputs)
    if not idx or not used:
        return out

    def f(*diff):
        args = list(inputs)
        for i, t in zip(idx, diff):
            args[i] = t
        firsts = first_vjp(*args)
        return tuple(firsts[j] for j in used)

    _, vjp_fn = torch.func.vjp(f, *[inputs[i] for i in idx])
    for i, g in zip(idx, vjp_fn(tuple(cotangents[j] for j in used))):
        out[i] = g
    return out


def _incoming(g: Tensor | None, needed: bool) -> Tensor | None:
    # an output the backward op did not compute is a (0,) placeholder: its gradient is ignored
    return g if (needed and g is not None) else None


def _contexts_backward_autograd(ref: Callable):
    """setup_context and backward of a contexts backward op (grad_out, A, x, boundary, reverse,
    need_A, need_boundary, need_x) -> (grad_A, grad_boundary, grad_x): the derivative of the
    reference's vector-Jacobian product."""

    def setup(ctx, inputs, output):
        grad, A, x, boundary, reverse, need_A, need_b, need_x = inputs
        ctx.save_for_backward(grad, A, x, boundary)
        ctx.flags = (reverse, bool(need_A), bool(need_b), _needs_x(x, need_x))

    def backward(ctx, ggA, ggb, ggx):
        grad, A, x, boundary = ctx.saved_tensors
        reverse, need_A, need_b, need_x = ctx.flags

        def first(grad, A, x, boundary):
            gA, gx, gb, _ = reference_vjp(ref, (A, x, boundary, reverse), (need_A, need_x, need_b, False), grad)
            return gA, gb, gx

        cot = (_incoming(ggA, need_A), _incoming(ggb, need_b), _incoming(ggx, need_x))
        return (*_double_vjp(first, (grad, A, x, boundary), ctx.needs_input_grad[:4], cot), None, None, None, None)

    return setup, backward


def _tn_attention_backward_autograd(ref: Callable):
    """setup_context and backward of a tn_attention backward op (grad_W, x, A_left, A_right, C, u,
    v, needs) -> six gradients: the derivative of the reference's vector-Jacobian product."""

    def setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:7])
        needs = [bool(n) for n in inputs[7]]
        needs[0] = _needs_x(inputs[1], needs[0])
        ctx.needs = needs

    def backward(ctx, *gg):
        saved = ctx.saved_tensors

        def first(grad, *primals):
            return reference_vjp(ref, primals, ctx.needs, grad)

        cot = tuple(_incoming(g, n) for g, n in zip(gg, ctx.needs))
        return (*_double_vjp(first, saved, ctx.needs_input_grad[:7], cot), None)

    return setup, backward


def _functorch_front_kernel(op_name: str, call_function: Callable) -> Callable:
    """The raw forward op's kernel for FuncTorchDynamicLayerFrontMode (see above)."""

    def front(*args, **kwargs):
        from torch._functorch.pyfunctorch import retrieve_current_functorch_interpreter

        interpreter = retrieve_current_functorch_interpreter()
        if functionalize_innermost():
            from torch._subclasses.functional_tensor import FunctorchFunctionalizeAPI

            api = FunctorchFunctionalizeAPI(interpreter)
            unwrapped = api.unwrap_tensors(args)
            with api.redispatch_to_next():
                out = getattr(torch.ops.tnattn, op_name)(*unwrapped, **kwargs)
            return api.wrap_tensors(out)
        return call_function(*args, **kwargs)

    return front


def register_raw_rules(
    forward_op, backward_op, op: str, public: str, vmap_rule: Callable, function: type, ref: Callable, keyword: bool
) -> None:
    """Rules of a raw forward op and its raw backward op, beyond register_autograd (see above).

    * forward op: under torch.func transforms (front-mode kernel) and forward-mode AD (Autograd
      kernel) the call goes to ``function``, the torch.func-ready autograd.Function of the public
      function; plain autograd keeps torch's generated kernel (what torch.compile/AOT autograd
      trace). A vmap rule (one stacked call) for batched tensors that reach the op below a
      transform's front kernel.
    * backward op: its derivative (double backward, create_graph=True) from the reference ``ref``;
      torch.func grad transforms and forward-mode AD applied to the backward op itself raise a
      NotImplementedError naming the op, the transform and ``public``.

    ``keyword``: a contexts op (``reverse`` keyword-only; in_dims cover the three tensors).
    """
    if keyword:

        def rule(info, in_dims, A, x, boundary, *, reverse=False):
            return vmap_rule(info.batch_size, (*in_dims, None), A, x, boundary, reverse, raw=True), 0

        def call_function(A, x, boundary, *, reverse=False):
            return function.apply(A, x, boundary, reverse)

    else:

        def rule(info, in_dims, *inputs):
            return vmap_rule(info.batch_size, in_dims, *inputs, raw=True), 0

        def call_function(*inputs):
            return function.apply(*inputs)

    forward_op.register_vmap(rule)
    forward_op._lib.impl(forward_op._name, _functorch_front_kernel(op, call_function), "FuncTorchDynamicLayerFrontMode")
    generated = _generated_autograd_kernel(forward_op)

    def forward_autograd(keyset, *args, **kwargs):
        if _forward_ad._current_level >= 0 and torch._C._functorch.peek_interpreter_stack() is None:
            return call_function(*args, **kwargs)
        return generated(keyset, *args, **kwargs)

    _set_autograd_kernel(forward_op, forward_autograd)

    setup, backward = (_contexts_backward_autograd if keyword else _tn_attention_backward_autograd)(ref)
    backward_op.register_autograd(backward, setup_context=setup)
    generated_backward = _generated_autograd_kernel(backward_op)

    def backward_autograd(keyset, *args, **kwargs):
        transform = _unsupported_transform(args)
        if transform is not None:
            raise NotImplementedError(
                f"torch.ops.tnattn.{op}_backward (the raw backward op of torch.ops.tnattn.{op}) does not "
                f"support {transform}; differentiate {public} or torch.ops.tnattn.{op} instead, whose "
                "derivatives of every order are exact under every transform"
            )
        return generated_backward(keyset, *args, **kwargs)

    _set_autograd_kernel(backward_op, backward_autograd)

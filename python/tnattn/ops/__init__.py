"""Autograd-aware torch ops for TN attention, backed by the fused C++ kernels of ``tnattn._C``.

One op set over a leading member dimension E, as in the kernels: every op takes either one
model's parameters (``A`` of shape (d, D, D), ...) or a stack of E members (``A`` of shape
(E, d, D, D), ...) and runs all members in one kernel call, with per-member gradients. The
single-model call is the E = 1 case without the leading dimension (no copy, no view). In a stacked
call each member sees its own batch ``x[e]`` or one batch shared by all members (``x`` without E).

Ops (namespace ``tnattn``, registered with :func:`torch.library.custom_op`):

* ``tnattn::contexts(A, x, boundary, *, reverse=False) -> ([E,] N, M, D)``, called by :func:`contexts`
* ``tnattn::tn_attention(x, A_left, A_right, C, u, v) -> ([E,] N, M, d, c)``, called by
  :func:`tn_attention`
* ``tnattn::contexts_backward`` and ``tnattn::tn_attention_backward``: their backward passes,
  custom ops themselves so that ``torch.compile``/AOT autograd trace them like any aten op.

Fused heads (:mod:`tnattn.ops.heads`) are options of :func:`tn_attention`: ``head=SquaredErrorStep(...)``
(Scenario A's training step: loss and gradients in one kernel call, without writing the maps) and
``head=WrongSiteCount(...)`` (wrong sites per member). :class:`kernel_threads` sets the kernels'
CPU thread count for a block.

Layout (modules with one job each): :mod:`tnattn._checks` validates the arguments (one
:class:`~tnattn._checks.Layout` per call), :mod:`tnattn.ops._native` is the only caller of
``tnattn._C`` (device, threads, CUDA workspace, bad symbols), :mod:`tnattn.ops._core` holds the
implementations, the custom ops and the choice of path, :mod:`tnattn.ops.heads` the fused heads and
:mod:`tnattn._autograd` the derivatives under every transform.

The public functions :func:`contexts` and :func:`tn_attention` check argument types (the dispatcher
would reject a non-tensor with a RuntimeError instead of a TypeError naming it) and then take one of
three paths over the same implementation functions:

* no autograd involved (no input requires grad, no torch.func transform, no forward-AD level): the
  kernel directly, skipping the Python dispatch of ``custom_op`` (about 0.2 ms per call, which
  dominates small problems);
* any autograd transform: a ``torch.autograd.Function`` of :mod:`tnattn._autograd`, which gives the
  exact derivative under plain backward (fused backward kernel), ``create_graph`` / double backward,
  ``torch.autograd.functional``, forward-mode AD (dual tensors) and ``torch.func`` (grad, vjp, jvp,
  jacrev, jacfwd, hessian, vmap -- a vmapped op runs as one stacked kernel call). Higher
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
``torch.get_num_threads()`` threads (or those of :class:`kernel_threads`) (``std::thread``; small problems run on the calling thread).
CUDA tensors (in an extension built with ``TNATTN_CUDA``; see ``_C.has_cuda()``) run the CUDA
kernels (the same entry points of ``tnattn._C``, given a CUDA execution context) on the tensors' device and torch's current stream there (see
:mod:`tnattn.ops._native`). They are asynchronous except for integer symbols, where the call waits for the
stream to read the kernel's count of out-of-range symbols (so the ValueError is raised eagerly).
Gradients of A and C on CUDA are reduced in fp64 in a fixed order (bitwise reproducible for a
given shape) for D <= 32; larger D use fp64 atomics.
"""

from __future__ import annotations

from ._core import contexts, tn_attention
from ._native import kernel_threads
from .heads import SquaredErrorStep, StepResult, WrongSiteCount

__all__ = ["contexts", "tn_attention", "kernel_threads", "SquaredErrorStep", "StepResult", "WrongSiteCount"]

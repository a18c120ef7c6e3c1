"""Fused heads of :func:`tnattn.ops.tn_attention`: the kernel applies the head instead of writing W.

Pass one as ``tn_attention(x, A_left, A_right, C, u, v, head=...)``:

:class:`SquaredErrorStep`
    One training step of Scenario A: the local maps, the symbol head and the squared-error loss
    of every member's batch and its gradients towards every parameter, in one call of the C++
    kernel ``tn_attention_mse_step``. The kernel recomputes the contexts of each block of
    sequences (as the backward of :func:`tnattn.ops.tn_attention` does), forms the local maps,
    applies the head and the loss site by site, and runs the adjoint scans, so neither the maps W
    nor their gradient is ever written to memory and no torch operation runs between forward and
    backward. It computes what the unfused path computes (the op, and the symbol head and
    squared-error loss of :mod:`tnattn.models.head` with their closed-form gradients), in the same
    order of operations per site; only sums over sites are ordered differently (tests/ensemble/test_fused.py compares the two).
:class:`WrongSiteCount`
    The evaluation counterpart: the number of wrongly predicted sites per member (the sign of the
    logit against 0/1 labels), from the forward kernel without writing the maps.

Scope: integer symbols, one output (c = 1), stacked (E, ...) or single parameters (then results
drop the leading E), on the CPU or, in an extension built with CUDA (``_C.has_cuda()``), on a CUDA
device. Anything else raises ``ValueError``; heads record no autograd graph (the step returns its
gradients). On CUDA (csrc/cuda/mse_step.cuh) the same head runs as a short sequence of kernels for
all members (forward, head, backward, fixed-order reductions) with the maps W and their gradient
in a workspace; results are on the parameters' device and the call waits for the device once (to
check the symbols).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Union

import torch
from torch import Tensor

from .._checks import Layout, tn_attention_layout
from ._native import call, ptr

__all__ = ["SquaredErrorStep", "StepResult", "WrongSiteCount", "Head", "PARAM_NAMES", "fused_heads_available"]

#: The order of :class:`SquaredErrorStep`'s ``needs`` flags.
PARAM_NAMES = ("A_left", "A_right", "C", "u", "v", "scale")


def fused_heads_available(device: torch.device | str | None = None) -> bool:
    """Whether the extension has the fused-head kernels for ``device`` (default: the CPU; every
    build has them there, CUDA builds on CUDA devices too)."""
    from .. import _C

    if not hasattr(_C, "tn_attention_mse_step"):
        return False
    kind = torch.device(device).type if device is not None else "cpu"
    return kind == "cpu" or (kind == "cuda" and _C.has_cuda())


@dataclass(slots=True)  # not frozen: a frozen dataclass costs microseconds per construction
class SquaredErrorStep:
    """Head option: the mean squared residual of the symbol head, and its gradients.

    Parameters
    ----------
    y : Tensor
        Targets 0/1 (bool or integer), (E, N, M) or (N, M) shared by the members.
    scale : Tensor, shape (E,) (single model: ()), optional
        Scale of the normalised map; None means 1. Same dtype as the parameters.
    activation : {"sigmoid", "none"}
        Residual ``sigmoid(z) - y`` or ``z - (2y - 1)`` of the logit z.
    normalize_map : bool
        ``z = scale * W[x] / |W|`` (``|W|`` over the d map entries), else ``z = W[x]``.
    needs : tuple of 6 bool
        Which gradients to return, in the order of :data:`PARAM_NAMES`.

    Raises
    ------
    ValueError
        ``activation`` not one of the two, or ``needs`` not six flags.
    """

    y: Tensor
    scale: Tensor | None = None
    activation: str = "sigmoid"
    normalize_map: bool = True
    needs: tuple = (True, True, True, True, True, True)

    def apply(self, x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> "StepResult":
        """The step on these inputs (what ``tn_attention(..., head=self)`` calls)."""
        return _squared_error_step(self, x, A_left, A_right, C, u, v)

    def __post_init__(self):
        if self.activation not in ("sigmoid", "none"):
            raise ValueError(f"activation must be 'sigmoid' or 'none', got {self.activation!r}")
        if len(self.needs) != 6:
            raise ValueError(f"needs must hold 6 flags (A_left, A_right, C, u, v, scale), got {len(self.needs)}")


class StepResult(NamedTuple):
    """What ``tn_attention(..., head=SquaredErrorStep(...))`` returns: ``(losses, wrong, grads)``.

    ``losses``, shape (E,) (single model: ()), float64, is the mean squared residual of each
    member's N*M sites; ``wrong``, of the same shape, the sites with ``(z > 0) != y`` per member;
    ``grads`` a dict of the gradient of ``losses.sum()`` per needed parameter name (shapes as the
    parameters; for the shared-A model, ``A_right is A_left``, ``A_left`` holds the sum of both
    sides and ``A_right`` is absent).
    """

    losses: Tensor
    wrong: Tensor
    grads: dict


@dataclass(slots=True)
class WrongSiteCount:
    """Head option: wrongly predicted sites per member, shape (E,) (single model: ()), float64.

    The prediction is ``z > 0`` for the logit ``z = scale * W[x] / |W|`` (``W[x]`` without
    ``normalize_map``); a site is wrong when that differs from ``y == 1`` or when its label is
    neither 0 nor 1. Only the sign of ``scale`` matters.

    Parameters
    ----------
    y : Tensor
        Integer or bool labels, (E, N, M) or (N, M) shared.
    scale : Tensor, shape (E,) (single model: ()), optional
    normalize_map : bool
        Whether the logit carries ``scale``.
    """

    y: Tensor
    scale: Tensor | None = None
    normalize_map: bool = True

    def apply(self, x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """The count on these inputs (what ``tn_attention(..., head=self)`` calls)."""
        return _wrong_site_count(self, x, A_left, A_right, C, u, v)


Head = Union[SquaredErrorStep, WrongSiteCount]


def _check_targets(y, L: Layout, what: str, device: torch.device) -> None:
    # (the parameters' device is checked by tn_attention_layout; y must be on the same one)
    if not isinstance(y, Tensor) or y.is_floating_point():
        raise TypeError(f"y must be an integer or bool tensor of {what}, got {getattr(y, 'dtype', type(y))}")
    shapes = ((L.E, L.N, L.M), (L.N, L.M)) if L.stacked else ((L.N, L.M),)
    if tuple(y.shape) not in shapes:
        want = f"(E, N, M) = {(L.E, L.N, L.M)} or (N, M) = {(L.N, L.M)}" if L.stacked else f"(N, M) = {(L.N, L.M)}"
        raise ValueError(f"y must have shape {want}, got {tuple(y.shape)}")
    if y.device != device:
        raise ValueError(f"y is on {y.device} but the parameters are on {device}")


def run(head: Head, x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor):
    """Apply ``head`` (see the module docstring); ``tn_attention(..., head=head)``."""
    if not isinstance(head, (SquaredErrorStep, WrongSiteCount)):
        raise TypeError(f"head must be a SquaredErrorStep or a WrongSiteCount (tnattn.ops.heads), got {type(head).__name__}")
    return head.apply(x, A_left, A_right, C, u, v)


def _squared_error_step(h: SquaredErrorStep, x, A_left, A_right, C, u, v) -> StepResult:
    L = tn_attention_layout(x, A_left, A_right, C, u, v)
    if L.real:
        raise ValueError("x must hold integer symbols for the fused step (real embeddings: use the unfused path)")
    if L.c != 1:
        raise ValueError(f"the fused step needs one output per site (c = 1), got C with c = {L.c}")
    _check_targets(h.y, L, "0/1 targets", C.device)
    scale = h.scale
    if scale is not None and (tuple(scale.shape) != L.lead or scale.dtype != C.dtype):
        raise ValueError(
            f"scale must have shape {L.lead} and dtype {C.dtype}, got {tuple(scale.shape)} {scale.dtype}"
        )
    y = h.y
    y8 = (y if y.dtype == torch.bool else y != 0).to(torch.uint8).contiguous()
    shared_A = A_right is A_left
    n_AL, n_AR, n_C, n_u, n_v, n_s = (bool(f) for f in h.needs)
    if shared_A:
        n_AL, n_AR = n_AL or n_AR, n_AL or n_AR
    n_s = n_s and scale is not None and h.normalize_map
    AL, AR, C, u, v = (t.detach().contiguous() for t in (A_left, A_right, C, u, v))
    x = x.contiguous()
    sc = scale.detach().contiguous() if (scale is not None and h.normalize_map) else None
    losses = torch.empty(L.lead, dtype=torch.float64, device=C.device)
    wrong = torch.empty(L.lead, dtype=torch.float64, device=C.device)
    g = {
        "A_left": torch.empty_like(AL) if n_AL else None,
        "A_right": torch.empty_like(AR) if n_AR else None,
        "C": torch.empty_like(C) if n_C else None,
        "u": C.new_empty((*L.lead, L.N, L.D)) if n_u else None,
        "v": C.new_empty((*L.lead, L.N, L.D)) if n_v else None,
        "scale": C.new_empty(L.lead) if n_s else None,
    }
    call(
        "tn_attention_mse_step", C.dtype == torch.float64, x.data_ptr(), L.kind, L.x_shared, AL.data_ptr(),
        AR.data_ptr(), C.data_ptr(), u.data_ptr(), L.u_pb, v.data_ptr(), L.v_pb, ptr(sc), y8.data_ptr(),
        y8.dim() == 2, bool(h.normalize_map), h.activation == "sigmoid", losses.data_ptr(), wrong.data_ptr(),
        ptr(g["scale"]), ptr(g["A_left"]), ptr(g["A_right"]), ptr(g["C"]), ptr(g["u"]), ptr(g["v"]),
        L.E, L.N, L.M, L.d, L.D, like=C, d=L.d,
    )  # fmt: skip
    losses /= L.N * L.M
    for name, per_batch in (("u", L.u_pb), ("v", L.v_pb)):
        if g[name] is not None:
            g[name] = L.grad_boundary(g[name], per_batch)
    if shared_A and g["A_left"] is not None:
        g["A_left"] = g["A_left"] + g.pop("A_right")
    wanted = dict(zip(PARAM_NAMES, h.needs))
    grads = {k: t for k, t in g.items() if t is not None and (wanted[k] or (shared_A and k == "A_left"))}
    return StepResult(losses, wrong, grads)


def _wrong_site_count(h: WrongSiteCount, x, A_left, A_right, C, u, v) -> Tensor:
    L = tn_attention_layout(x, A_left, A_right, C, u, v)
    if L.real or L.c != 1:
        raise ValueError("the wrong-site count needs integer symbols and one output (c = 1)")
    _check_targets(h.y, L, "labels", C.device)
    y = h.y
    # labels 0/1 as they are, anything else as 2 (always wrong)
    y8 = (y if y.dtype == torch.bool else torch.where((y == 0) | (y == 1), y, 2)).to(torch.uint8).contiguous()
    sign = torch.sign(h.scale.detach()).contiguous() if (h.normalize_map and h.scale is not None) else None
    AL, AR, C, u, v = (t.detach().contiguous() for t in (A_left, A_right, C, u, v))
    wrong = torch.empty(L.lead, dtype=torch.float64, device=C.device)
    call(
        "tn_attention_count_wrong", C.dtype == torch.float64, x.contiguous().data_ptr(), L.kind, L.x_shared,
        AL.data_ptr(), AR.data_ptr(), C.data_ptr(), u.data_ptr(), L.u_pb, v.data_ptr(), L.v_pb, ptr(sign),
        y8.data_ptr(), y8.dim() == 2, wrong.data_ptr(), L.E, L.N, L.M, L.d, L.D, like=C, d=L.d,
    )  # fmt: skip
    return wrong

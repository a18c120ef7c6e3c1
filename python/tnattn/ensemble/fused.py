"""Scenario A's fused training step and wrong-site count on :class:`Params`.

Thin adapters from a model's stacked parameters to the fused heads of :func:`tnattn.ops.tn_attention`
(:class:`tnattn.ops.SquaredErrorStep`, :class:`tnattn.ops.WrongSiteCount`; see
:mod:`tnattn.ops.heads` for what the kernel computes and its scope). :func:`supports` tells a
trainer when the fused step applies (integer symbols, c = 1, squared error; CPU tensors, or CUDA
tensors in an extension built with CUDA); otherwise it takes the unfused path.
"""

from __future__ import annotations

from torch import Tensor

from tnattn.models.functional import Params
from tnattn.ops import SquaredErrorStep, WrongSiteCount, tn_attention
from tnattn.ops.heads import PARAM_NAMES, fused_heads_available

__all__ = ["mse_step", "count_wrong", "supports", "PARAM_NAMES"]


def supports(x: Tensor, P: Params, *, loss: str, activation: str) -> bool:
    """True when :func:`mse_step` handles this batch and model (see :mod:`tnattn.ops.heads`)."""
    return (
        not x.is_floating_point()
        and fused_heads_available(x.device)  # the CPU, or CUDA in a CUDA build
        and P.C.shape[-1] == 1
        and loss == "mse"
        and activation in ("sigmoid", "none")
    )


def mse_step(
    x: Tensor,
    y: Tensor,
    P: Params,
    *,
    activation: str = "sigmoid",
    normalize_map: bool = True,
    needs: tuple = (True, True, True, True, True, True),
) -> tuple[Tensor, Tensor, dict]:
    """Losses (E,), wrong sites (E,) and gradients of E members on their batches, in one kernel call.

    ``tn_attention(x, P.A_left, P.A_right, P.C, P.u, P.v, head=SquaredErrorStep(y, P.scale, ...))``;
    parameters, returns and errors as there (:class:`tnattn.ops.SquaredErrorStep`).
    """
    head = SquaredErrorStep(y, P.scale, activation=activation, normalize_map=normalize_map, needs=tuple(needs))
    return tn_attention(x, P.A_left, P.A_right, P.C, P.u, P.v, head=head)  # a StepResult: (losses, wrong, grads)


def count_wrong(x: Tensor, y: Tensor, P: Params, *, normalize_map: bool = True) -> Tensor:
    """Wrongly predicted sites per member, shape (E,), float64, in one forward kernel call.

    ``tn_attention(x, P.A_left, P.A_right, P.C, P.u, P.v, head=WrongSiteCount(y, P.scale, ...))``
    (:class:`tnattn.ops.WrongSiteCount`); the prediction is that of
    :func:`tnattn.models.functional.positive`.
    """
    return tn_attention(x, P.A_left, P.A_right, P.C, P.u, P.v, head=WrongSiteCount(y, P.scale, normalize_map))

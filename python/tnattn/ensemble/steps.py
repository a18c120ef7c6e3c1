"""Step strategies of the trainer's stacked members: how a group of members gets its losses and gradients.

:class:`tnattn.train.Trainer` (its stacked members) chooses one strategy per run with :func:`choose_step` and
calls it on every group of members of every mini-batch:

``FusedStep`` (``"fused"``)
    Scenario A's setting (integer symbols, one output, squared error, on the CPU): one kernel call,
    :func:`tnattn.ensemble.fused.mse_step`, does the forward pass, head, loss and backward pass.
``HeadStep`` (``"head"``)
    Integer symbols with map normalisation: the op's forward pass on the stacked parameters; the head (normalise,
    scale, pick the symbol's row) and the loss are differentiated by hand
    (:func:`~tnattn.models.head.symbol_head_backward`,
    :func:`~tnattn.models.head.member_losses_and_grads`), and autograd runs only the op's backward.
``AutogradStep`` (``"autograd"``)
    Everything else: autograd through :func:`~tnattn.models.functional.logits` and the loss.

All three give the same losses and gradients up to rounding (tests/ensemble/test_ensemble.py, test_fused.py);
they differ in speed only. A strategy is called as ``step(P, x, y)`` with the group's parameters
``P`` (fresh leaves, ``requires_grad`` where trainable) and its batch, and returns a
:class:`StepResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from tnattn.ensemble import fused
from tnattn.models import functional
from tnattn.models.functional import Params
from tnattn.models.head import member_losses_and_grads, symbol_head_backward, symbol_head_forward
from tnattn.ops import tn_attention

__all__ = ["StepResult", "FusedStep", "HeadStep", "AutogradStep", "choose_step", "STEPS"]


@dataclass
class StepResult:
    """What a step strategy returns for one group of G members.

    Attributes
    ----------
    losses : Tensor, shape (G,)
        Mean loss per member (detached).
    grads : dict of str -> Tensor
        Gradient of each trainable parameter, shape (G, ...) like the parameter.
    wrong : Tensor, shape (G,), or None
        Wrongly predicted sites per member before the update, when the step counted them.
    logits : Tensor or None
        The (detached) logits, from which the trainer counts the wrong sites otherwise.
    """

    losses: Tensor
    grads: dict
    wrong: Optional[Tensor] = None
    logits: Optional[Tensor] = None


@dataclass(frozen=True)
class FusedStep:
    """One fused kernel call per group (see the module docstring)."""

    trainable: Sequence[str]
    activation: str
    normalize_map: bool
    name: str = "fused"

    def __call__(self, P: Params, x: Tensor, y: Tensor) -> StepResult:
        needs = tuple(n in self.trainable for n in fused.PARAM_NAMES)
        losses, wrong, got = fused.mse_step(x, y, P, activation=self.activation, normalize_map=self.normalize_map,
                                            needs=needs)  # fmt: skip
        return StepResult(losses, {n: g for n, g in got.items() if n in self.trainable}, wrong=wrong)


@dataclass(frozen=True)
class HeadStep:
    """The op (stacked) with the head and loss differentiated by hand (see the module docstring)."""

    trainable: Sequence[str]
    loss: str
    activation: str
    name: str = "head"

    def __call__(self, P: Params, x: Tensor, y: Tensor) -> StepResult:
        kernel_names = [n for n in self.trainable if n != "scale"]
        kernel_in = [getattr(P, n) for n in kernel_names]
        W = tn_attention(x, P.A_left, P.A_right, P.C, P.u, P.v)
        logits, saved = symbol_head_forward(W.detach(), x, None if P.scale is None else P.scale.detach())
        losses, g_logits = member_losses_and_grads(logits, y, self.loss, self.activation)
        gW, g_scale = symbol_head_backward(saved, g_logits, "scale" in self.trainable)
        got = dict(zip(kernel_names, torch.autograd.grad(W, kernel_in, gW) if kernel_in else ()))
        if g_scale is not None:
            got["scale"] = g_scale
        return StepResult(losses, got, logits=logits)


@dataclass(frozen=True)
class AutogradStep:
    """Autograd through the model's logits and the loss (see the module docstring)."""

    trainable: Sequence[str]
    normalize_map: bool
    member_loss: Callable[[Tensor, Tensor], Tensor]
    name: str = "autograd"

    def __call__(self, P: Params, x: Tensor, y: Tensor) -> StepResult:
        logits = functional.logits(P, x, normalize_map=self.normalize_map)
        ye = y if y.dim() == 3 else y.expand(P.E, *y.shape)
        losses = self.member_loss(logits, ye)
        got = dict(zip(self.trainable, torch.autograd.grad(losses.sum(), [getattr(P, n) for n in self.trainable])))
        return StepResult(losses.detach(), got, logits=logits.detach())


#: The strategies by name.
STEPS = {"fused": FusedStep, "head": HeadStep, "autograd": AutogradStep}


def choose_step(x: Tensor, P: Params, *, trainable: Sequence[str], loss: str, activation: str,
                normalize_map: bool, member_loss: Callable[[Tensor, Tensor], Tensor]):
    """The fastest strategy that handles a run whose batches look like ``x`` and whose parameters
    look like ``P`` (symbols or embeddings, device, number of outputs), for its loss, activation
    and map normalisation. ``member_loss(logits, y) -> (E,)`` is the autograd step's loss."""
    trainable = tuple(trainable)
    if fused.supports(x, P, loss=loss, activation=activation):
        return FusedStep(trainable, activation, normalize_map)
    if not x.is_floating_point() and normalize_map:
        return HeadStep(trainable, loss, activation)
    return AutogradStep(trainable, normalize_map, member_loss)

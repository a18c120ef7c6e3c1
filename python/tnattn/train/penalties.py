"""L1/L2 regularisation and the schedules of their strengths.

- :func:`l1_penalty`: ``sum_p sum |p|`` over the given parameters (multiply by lambda1);
- :func:`l2_penalty`: ``(1/2) sum_p sum p^2`` (multiply by lambda2);
- :func:`apply_l2` applies L2 outside the loss, either *coupled* (``lambda2 * p`` added to the
  gradient, which is what ``torch.optim.Adam(weight_decay=lambda2)`` does and what the author's code
  uses) or *decoupled* (AdamW: ``p <- p (1 - lr lambda2)`` before the optimiser step);
- :class:`PenaltySchedule`: the strength multiplier per epoch (constant, step, exponential decay).
  The seed suggests strong regularisation early and weak late (fewer loss spikes near grokking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

__all__ = ["l1_penalty", "l2_penalty", "apply_l2", "PenaltySchedule", "SCHEDULES"]

SCHEDULES = ("constant", "step", "exp")


def l1_penalty(params: Iterable[Tensor]) -> Tensor:
    """``sum |theta|`` over all entries of ``params`` (a differentiable scalar).

    The subgradient at 0 is 0 (``torch.abs``'s convention).
    """
    terms = [p.abs().sum() for p in params]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def l2_penalty(params: Iterable[Tensor]) -> Tensor:
    """``(1/2) sum theta^2`` over all entries of ``params``; its gradient is ``theta``."""
    terms = [0.5 * (p * p).sum() for p in params]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


@torch.no_grad()
def apply_l2(params: Iterable[Tensor], strength: float, mode: str, lr: float = 0.0) -> None:
    """Apply L2 regularisation outside the loss, between ``backward()`` and ``optimizer.step()``.

    Parameters
    ----------
    params : iterable of Tensor
        Trainable parameters (those without a gradient are skipped).
    strength : float
        lambda2 (already multiplied by the schedule).
    mode : {"coupled", "decoupled"}
        ``coupled``: ``grad += strength * p`` (Adam's ``weight_decay``); ``decoupled``:
        ``p *= 1 - lr * strength`` (AdamW's).
    lr : float
        Learning rate (``decoupled`` only).
    """
    if mode not in ("coupled", "decoupled"):
        raise ValueError(f"mode must be 'coupled' or 'decoupled', got {mode!r}")
    if strength == 0.0:
        return
    for p in params:
        if p.grad is None:
            continue
        if mode == "coupled":
            p.grad.add_(p, alpha=strength)
        else:
            p.mul_(1.0 - lr * strength)


@dataclass(frozen=True)
class PenaltySchedule:
    """Multiplier of the penalty strengths as a function of the (1-based) epoch.

    Parameters
    ----------
    kind : {"constant", "step", "exp"}
        ``constant``: 1. ``step``: 1 for ``epoch <= epochs``, ``factor`` afterwards.
        ``exp``: ``factor + (1 - factor) exp(-(epoch - 1) / epochs)``, decaying from 1 at the first
        epoch towards ``factor`` with time constant ``epochs``.
    epochs : int
        Step epoch or time constant (>= 1).
    factor : float
        Late/early ratio (>= 0); below 1 means strong early, weak late.
    """

    kind: str = "constant"
    epochs: int = 100
    factor: float = 0.1

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"kind must be one of {SCHEDULES}, got {self.kind!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.factor < 0:
            raise ValueError(f"factor must be >= 0, got {self.factor}")

    def __call__(self, epoch: int) -> float:
        if epoch < 1:
            raise ValueError(f"epoch must be >= 1, got {epoch}")
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return 1.0 if epoch <= self.epochs else float(self.factor)
        return float(self.factor + (1.0 - self.factor) * math.exp(-(epoch - 1) / self.epochs))

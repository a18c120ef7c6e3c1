"""Per-member optimisers on stacked parameters (leading dimension E).

Adam is elementwise, so E independent Adam optimisers are one stacked Adam whose step count,
learning rate and bias corrections are per member (row). :class:`StackedAdam` reproduces
``torch.optim.Adam``'s single-tensor CPU update (the one a single-model run uses) operation by
operation: ``m.lerp_(g, 1 - beta1)``, ``v.mul_(beta2).addcmul_(g, g, value=1 - beta2)``, bias
corrections in double precision from the member's step count, ``denom = sqrt(v) / sqrt(bc2) + eps``
and ``p + (-lr / bc1) * m / denom`` (the order of ``addcdiv``). :class:`StackedSGD` is plain
gradient descent ``p - lr * g``.

Both also *select* rows: :meth:`rows` / :meth:`load_rows` move the state of a subset of members in
and out, which is how the trainer compacts its working set when members finish.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["StackedAdam", "StackedSGD", "make_optimizer", "add_scaled_rows"]


def _rowwise(values: Tensor, like: Tensor) -> Tensor:
    """(E,) values as a tensor broadcasting over the rows of ``like`` (E, ...), in its dtype."""
    return values.to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def add_scaled_rows(target: Tensor, other: Tensor, alphas: Tensor) -> Tensor:
    """``target[e] + alphas[e] * other[e]`` for every row e, as ``torch.add(alpha=...)`` computes it.

    ``add(alpha=a)`` may fuse the multiply and the add (one rounding), so a separate product would
    differ from a single-model run in the last bit. Rows are processed per distinct alpha (in a
    study most members share their hyperparameters, so this is usually one call).

    Parameters
    ----------
    target, other : Tensor, shape (E, ...)
    alphas : Tensor, shape (E,)

    Returns
    -------
    Tensor, shape (E, ...)
        A new tensor.
    """
    values = torch.unique(alphas)
    if values.numel() == 1:
        return target.add(other, alpha=float(values[0]))
    out = target.clone()
    for a in values.tolist():
        rows = torch.nonzero(alphas == a)[:, 0].to(target.device)
        out[rows] = target[rows].add(other[rows], alpha=a)
    return out


class StackedSGD:
    """``p <- p - lr_e * g`` for every member row ``e``.

    Parameters
    ----------
    shapes : sequence of torch.Size
        Shapes (E, ...) of the parameters, in the order the gradients will be passed.
    lr : Tensor, shape (E,), float64
        Learning rates.
    """

    def __init__(self, params: Sequence[Tensor], lr: Tensor):
        self.lr = lr.to(torch.float64).clone()
        self.state: dict[str, Tensor] = {}

    @torch.no_grad()
    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        for p, g in zip(params, grads):
            p.copy_(add_scaled_rows(p, g, -self.lr))  # torch.optim.SGD: p.add_(g, alpha=-lr)

    def state_dict(self) -> dict:
        return {"kind": "gd", "lr": self.lr.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"].to(torch.float64).clone()

    def rows(self, idx: Tensor) -> "StackedSGD":
        out = StackedSGD([], self.lr[idx])
        return out

    def load_rows(self, idx: Tensor, part: "StackedSGD") -> None:
        self.lr[idx] = part.lr


class StackedAdam:
    """E independent Adam optimisers (betas, eps shared; lr and step count per member).

    Parameters
    ----------
    params : sequence of Tensor
        Parameters (E, ...) whose shapes, dtypes and devices the state takes.
    lr : Tensor, shape (E,)
        Learning rates.
    betas, eps : as in ``torch.optim.Adam`` (defaults 0.9, 0.999, 1e-8).
    """

    def __init__(self, params: Sequence[Tensor], lr: Tensor, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr = lr.to(torch.float64).clone()
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.steps = torch.zeros(self.lr.shape[0], dtype=torch.float64)
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        self.steps += 1.0
        bc1 = 1.0 - self.beta1**self.steps  # (E,) in double, as torch computes them in Python floats
        bc2_sqrt = (1.0 - self.beta2**self.steps) ** 0.5
        neg_step = -(self.lr / bc1)
        for p, g, m, v in zip(params, grads, self.exp_avg, self.exp_avg_sq):
            m.lerp_(g, 1.0 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            denom = (v.sqrt() / _rowwise(bc2_sqrt, v)).add_(self.eps)
            p.add_(m * _rowwise(neg_step, p) / denom)

    def state_dict(self) -> dict:
        return {
            "kind": "adam",
            "lr": self.lr.clone(),
            "steps": self.steps.clone(),
            "betas": [self.beta1, self.beta2],
            "eps": self.eps,
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "adam":
            raise ValueError(f"not an Adam state: {state.get('kind')!r}")
        if len(state["exp_avg"]) != len(self.exp_avg):
            raise ValueError("the Adam state holds a different number of parameters")
        self.lr = state["lr"].to(torch.float64).clone()
        self.steps = state["steps"].to(torch.float64).clone()
        self.beta1, self.beta2 = (float(b) for b in state["betas"])
        self.eps = float(state["eps"])
        self.exp_avg = [t.clone() for t in state["exp_avg"]]
        self.exp_avg_sq = [t.clone() for t in state["exp_avg_sq"]]

    def rows(self, idx: Tensor) -> "StackedAdam":
        """A new optimiser holding the state of members ``idx`` (copies)."""
        out = StackedAdam([], self.lr[idx], (self.beta1, self.beta2), self.eps)
        out.steps = self.steps[idx].clone()
        out.exp_avg = [t[idx.to(t.device)].clone() for t in self.exp_avg]
        out.exp_avg_sq = [t[idx.to(t.device)].clone() for t in self.exp_avg_sq]
        return out

    def load_rows(self, idx: Tensor, part: "StackedAdam") -> None:
        """Write the state of ``part`` (members ``idx``, in order) back into this optimiser."""
        self.lr[idx] = part.lr
        self.steps[idx] = part.steps
        for full, sub in zip(self.exp_avg + self.exp_avg_sq, part.exp_avg + part.exp_avg_sq):
            full[idx.to(full.device)] = sub


def make_optimizer(kind: str, params: Sequence[Tensor], lr: Tensor):
    """``"adam"`` -> :class:`StackedAdam`, ``"gd"`` -> :class:`StackedSGD`."""
    if kind == "adam":
        return StackedAdam(params, lr)
    if kind == "gd":
        return StackedSGD(params, lr)
    raise ValueError(f"optimizer must be 'adam' or 'gd', got {kind!r}")

"""Training losses on the student's logits.

All losses take pre-activation logits of shape (N, M, c) and integer targets of shape (N, M) and
return the mean over sites (and outputs), so their scale does not depend on batch size or length.

Binary outputs (c = 1)
    ``mse``       squared error of the activation: ``(sigmoid(z) - y)^2`` with y in {0, 1} (the
                  paper's and the author's loss), or ``(z - s)^2`` with s = 2y - 1 in {-1, +1} when
                  the model has no activation (the perceptron theory's square loss);
    ``hinge``     ``max(0, 1 - s z)``;
    ``logistic``  ``log(1 + exp(-s z))``;
    ``ce``        same as ``logistic`` (binary cross-entropy).
Several outputs (c > 1, alphabets d > 2): the class is ``argmax_o z_o``.
    ``mse``       one-hot squared error per output (targets {0, 1} after a sigmoid, +-1 without);
    ``hinge``     one-vs-rest hinge per output with +-1 one-hot targets;
    ``logistic``, ``ce``  softmax cross-entropy.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["compute_loss", "make_loss", "member_losses_and_grads", "LOSSES"]

LOSSES = ("mse", "hinge", "logistic", "ce")


def _check(logits: Tensor, y: Tensor) -> int:
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (N, M, c), got {tuple(logits.shape)}")
    if tuple(y.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"y must have shape {tuple(logits.shape[:2])} (N, M), got {tuple(y.shape)}")
    return logits.shape[2]


def compute_loss(logits: Tensor, y: Tensor, loss: str = "mse", activation: str = "sigmoid") -> Tensor:
    """Mean training loss.

    Parameters
    ----------
    logits : Tensor, shape (N, M, c)
        Pre-activation outputs.
    y : Tensor, shape (N, M)
        Integer targets in ``[0, max(c, 2))``.
    loss : {"mse", "hinge", "logistic", "ce"}
        See the module docstring.
    activation : {"sigmoid", "none"}
        The model's output activation; only ``mse`` depends on it.

    Returns
    -------
    Tensor
        Scalar.
    """
    c = _check(logits, y)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if activation not in ("sigmoid", "none"):
        raise ValueError(f"activation must be 'sigmoid' or 'none', got {activation!r}")
    y = y.long()
    if c == 1:
        z = logits[..., 0]
        yf = y.to(z.dtype)
        s = 2.0 * yf - 1.0
        if loss == "mse":
            if activation == "sigmoid":
                return ((torch.sigmoid(z) - yf) ** 2).mean()
            return ((z - s) ** 2).mean()
        if loss == "hinge":
            return F.relu(1.0 - s * z).mean()
        return F.softplus(-s * z).mean()  # logistic / binary cross-entropy
    onehot = F.one_hot(y, c).to(logits.dtype)
    if loss == "mse":
        if activation == "sigmoid":
            return ((torch.sigmoid(logits) - onehot) ** 2).mean()
        return ((logits - (2.0 * onehot - 1.0)) ** 2).mean()
    if loss == "hinge":
        return F.relu(1.0 - (2.0 * onehot - 1.0) * logits).mean()
    return F.cross_entropy(logits.reshape(-1, c), y.reshape(-1))


def make_loss(loss: str = "mse", activation: str = "sigmoid") -> Callable[[Tensor, Tensor], Tensor]:
    """``compute_loss`` with ``loss`` and ``activation`` bound (validated now, not at the first call)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if activation not in ("sigmoid", "none"):
        raise ValueError(f"activation must be 'sigmoid' or 'none', got {activation!r}")

    def fn(logits: Tensor, y: Tensor) -> Tensor:
        return compute_loss(logits, y, loss, activation)

    return fn


def member_losses_and_grads(logits: Tensor, y: Tensor, loss: str = "mse", activation: str = "sigmoid") -> tuple[Tensor, Tensor]:
    """Losses of E members at once and their gradients with respect to the logits.

    ``losses[e] = compute_loss(logits[e], y[e])`` and ``grad = d(sum_e losses[e]) / d logits``.
    The squared error has a closed form (the operations autograd would run on
    :func:`compute_loss`'s graph, without building it); the other losses go through autograd.

    Parameters
    ----------
    logits : Tensor, shape (E, N, M, c)
        Pre-activation outputs (not differentiated: the gradient is returned).
    y : Tensor, shape (E, N, M), or (N, M) shared by all members
        Integer targets.
    loss, activation : str
        As in :func:`compute_loss`.

    Returns
    -------
    losses : Tensor, shape (E,)
    grad : Tensor, shape (E, N, M, c)
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape (E, N, M, c), got {tuple(logits.shape)}")
    E, N, M, c = logits.shape
    if tuple(y.shape) not in ((E, N, M), (N, M)):
        raise ValueError(f"y must have shape (E, N, M) = {(E, N, M)} or (N, M) = {(N, M)}, got {tuple(y.shape)}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if activation not in ("sigmoid", "none"):
        raise ValueError(f"activation must be 'sigmoid' or 'none', got {activation!r}")
    z = logits.detach()
    if loss != "mse":
        zr = z.clone().requires_grad_()
        ye = y if y.dim() == 3 else y.expand(E, N, M)
        with torch.enable_grad():
            losses = torch.vmap(lambda a, b: compute_loss(a, b, loss, activation))(zr, ye)
            (grad,) = torch.autograd.grad(losses.sum(), zr)
        return losses.detach(), grad
    # targets (E or 1, N, M, c): y itself for one output (0/1, any integer or bool dtype), else one-hot
    target = y.to(z.dtype).unsqueeze(-1) if c == 1 else F.one_hot(y.long(), c).to(z.dtype)
    n = N * M * c
    if activation == "sigmoid":
        s = torch.sigmoid(z)
        r = s - target
        # d mean(r^2) / dz = (2 r / n) s (1 - s), in autograd's order (mean, pow, sigmoid backward)
        grad = torch.ops.aten.sigmoid_backward(r * (2.0 / n), s)
    else:
        r = z - (2.0 * target - 1.0)
        grad = r * (2.0 / n)
    losses = (r * r).view(E, n).mean(1)
    return losses, grad

"""The head and the losses: local maps -> logits -> loss, each with its closed-form gradient.

Written once for a leading member dimension E (a single model is E = 1). Two paths compute the
same numbers and are tested against each other in float64 (tests/models/test_head.py):

* the **autograd path** (plain torch operations, every autograd transform applies):
  :func:`normalize_maps`, :func:`select`, :func:`head_logits` and :func:`compute_loss`; the model's
  :meth:`~tnattn.models.TNAttention.logits` and the single-model trainer use it;
* the **closed-form path** (no graph, gradients written out): :func:`symbol_head_forward` /
  :func:`symbol_head_backward` for the symbol head and :func:`member_losses_and_grads` for every
  loss; the ensemble training steps use it, and the C++ fused step
  (:func:`tnattn.ensemble.fused.mse_step`) computes the squared-error case in one kernel call.

The head (documentation: Science, "The student"; Žunkovič & Ilievski, arXiv:2210.15435, the
TN-attention model): the local map ``W_i`` (a d x c matrix) is divided by its Frobenius norm and
multiplied by the trainable scalar ``scale`` when the map is normalised (the author's code), and
the output for the actual input is the row ``W_i[x_i, :]`` (symbols) or ``sum_s x[i, s] W_i[s, :]``
(real embeddings).

Losses, on pre-activation logits ``z`` with integer targets ``y``, the mean over sites (and
outputs), so their scale does not depend on batch size or length.

Binary outputs (c = 1), with s = 2y - 1 in {-1, +1}:

* ``mse``: squared error of the activation, ``(sigmoid(z) - y)^2`` with y in {0, 1} (the paper's and
  the author's loss), or ``(z - s)^2`` when the model has no activation (the perceptron theory's
  square loss);
* ``hinge``: ``max(0, 1 - s z)``;
* ``logistic``: ``log(1 + exp(-s z))``;
* ``ce``: the same as ``logistic`` (binary cross-entropy).

Several outputs (c > 1, alphabets d > 2; the class is ``argmax_o z_o``):

* ``mse``: one-hot squared error per output (targets {0, 1} after a sigmoid, +-1 without);
* ``hinge``: one-vs-rest hinge per output with +-1 one-hot targets;
* ``logistic``, ``ce``: softmax cross-entropy.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import reference

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "normalize_maps",
    "select",
    "head_logits",
    "symbol_head_forward",
    "symbol_head_backward",
    "SymbolHead",
    "compute_loss",
    "make_loss",
    "member_losses_and_grads",
]

ACTIVATIONS = ("sigmoid", "none")
LOSSES = ("mse", "hinge", "logistic", "ce")


def _check_choice(loss: str, activation: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be 'sigmoid' or 'none', got {activation!r}")


# ------------------------------------------------------------------------------------------------
# The head, autograd path
# ------------------------------------------------------------------------------------------------
def normalize_maps(W: Tensor, scale: Tensor) -> Tensor:
    """``scale * W / |W|`` with the norm over each map's d*c entries (exact-zero rule and scale
    safety of :func:`tnattn.reference.normalize`).

    Parameters
    ----------
    W : Tensor, shape (E, N, M, d, c) or (N, M, d, c)
    scale : Tensor, shape (E,) or (), or None (taken as 1)

    Returns
    -------
    Tensor, shape like ``W``
    """
    *lead, d, c = W.shape
    out = reference.normalize(W.reshape(*lead, d * c)).reshape(W.shape)
    if scale is None:
        return out
    return out * (scale if scale.dim() == 0 else scale.view(-1, *([1] * (W.dim() - 1))))


def select(W: Tensor, x: Tensor) -> Tensor:
    """The output for the actual input: ``W[..., x_i, :]`` or ``sum_s x[..., i, s] W[..., s, :]``.

    Parameters
    ----------
    W : Tensor, shape (E, N, M, d, c), or (N, M, d, c) for one model
    x : Tensor
        Integer symbols (N, M) shared by the members or (E, N, M); or real embeddings (N, M, d) /
        (E, N, M, d).

    Returns
    -------
    Tensor, shape (E, N, M, c), or (N, M, c) for one model
    """
    if W.dim() == 4:  # one model: no member dimension
        N, M, d, c = W.shape
        if x.is_floating_point():
            return torch.einsum("nis,niso->nio", x, W)
        return W.gather(2, x.reshape(N, M, 1, 1).expand(N, M, 1, c)).squeeze(2)
    E, N, M, d, c = W.shape
    if x.is_floating_point():
        return torch.einsum("nis,eniso->enio" if x.dim() == 3 else "enis,eniso->enio", x, W)
    idx = x.reshape(E if x.dim() == 3 else 1, N, M, 1, 1).expand(E, N, M, 1, c)
    return W.gather(3, idx).squeeze(3)


def head_logits(W: Tensor, x: Tensor, scale: Optional[Tensor], *, normalize_map: bool) -> Tensor:
    """Logits from the local maps (autograd path): :func:`select` of :func:`normalize_maps`.

    Parameters
    ----------
    W : Tensor, shape (E, N, M, d, c), or (N, M, d, c) for one model
    x : Tensor
        As in :func:`select`.
    scale : Tensor, shape (E,) (or () for one model), or None (taken as 1)
    normalize_map : bool

    Returns
    -------
    Tensor, shape (E, N, M, c), or (N, M, c) for one model
    """
    return select(normalize_maps(W, scale) if normalize_map else W, x)


# ------------------------------------------------------------------------------------------------
# The symbol head, closed-form path
# ------------------------------------------------------------------------------------------------
def symbol_head_forward(W: Tensor, x: Tensor, scale: Optional[Tensor]) -> tuple[Tensor, tuple]:
    """``logits[..., o] = scale * W[..., x, o] / |W|`` (norm over the d*c map entries) for symbols.

    The closed-form twin of :func:`head_logits` with ``normalize_map=True`` (same values up to
    rounding). Exact-zero rule: a map with norm exactly 0 gives logits 0 (and zero gradient in
    :func:`symbol_head_backward`). Scale-safe: maps whose squared norm would over- or underflow are
    rescaled first (see :func:`_rescale_out_of_range`), so logits and gradients stay finite and
    exact at any scale. Why by hand: on the CPU, reductions over a trailing dimension of size d*c,
    ``torch.where`` and gathers through autograd each cost several contiguous elementwise passes,
    so the norm is a chain of multiply-adds over the (strided) entries, the symbol's row one
    ``gather`` (exact, unlike a blend with 0/1 masks), and the backward writes the map's gradient
    in the map's own layout (no transposed copies on either side of the kernel).

    Parameters
    ----------
    W : Tensor, shape (E, N, M, d, c)
        Local maps (not differentiated here: see :func:`symbol_head_backward`).
    x : Tensor
        Integer symbols, (E, N, M) or (N, M) shared by all members.
    scale : Tensor, shape (E,), or None (taken as 1)

    Returns
    -------
    logits : Tensor, shape (E, N, M, c)
    saved : tuple
        What :func:`symbol_head_backward` needs.
    """
    E, N, M, d, c = W.shape
    K = N * M
    W = W.contiguous()
    flat = W.view(E, K, d * c)
    sq = flat[..., 0] * flat[..., 0]
    for k in range(1, d * c):
        sq = torch.addcmul(sq, flat[..., k], flat[..., k])
    rescaled = _rescale_out_of_range(flat, sq)  # None when every norm is in range (the usual case)
    r = None
    if rescaled is not None:
        m, r = rescaled
        flat = flat / m.unsqueeze(-1)  # W/m on the rescaled maps, W elsewhere (m = 1)
        W = flat.view(E, N, M, d, c)
    # 1/|W|, and 0 where |W| = 0 (1/0 = inf becomes 0; a NaN stays NaN); on rescaled maps m/|W|
    inv = sq.sqrt_().reciprocal_().nan_to_num_(nan=float("nan"), posinf=0.0)  # (E, K)
    # index of the symbol's row; a batch shared by all members stays un-expanded (stride 0)
    idx = x.reshape(E if x.dim() == 3 else 1, K, 1, 1).long().expand(E, K, 1, c)
    sel = W.view(E, K, d, c).gather(2, idx).view(E, K, c)
    fac = inv if scale is None else inv * scale.view(E, 1)
    z = sel[..., 0] * fac if c == 1 else sel * fac.unsqueeze(-1)
    return z.view(E, N, M, c), (W, idx, inv, fac, sel, r)


def _host_sync_is_cheap(t: Tensor) -> bool:
    return t.device.type == "cpu"


def _rescale_out_of_range(flat: Tensor, sq: Tensor) -> Optional[tuple[Tensor, Tensor]]:
    """Per-map divisors ``m`` and factors ``r = 1/m`` (E, K) that make the head's arithmetic safe,
    or None when all are 1.

    ``sq`` (the squared norms, updated in place) is trusted where it is well inside the range:
    not below ``tiny**0.8`` (about 1e-30 in float32, 1e-246 in float64), where the backward's
    ``1/|W|^2`` factor would come within reach of overflow and the squares lose digits or
    underflow, and finite. Elsewhere (rare: maps of norm below ~1e-15 or above ~1e19 in float32)
    the map is divided by its largest |entry| m, as BLAS ``nrm2`` does, and ``sq`` becomes
    ``|W/m|^2`` in [1, d*c] (an all-zero map keeps m = 1). On the CPU one reduction decides whether
    any map needs it; on accelerators the factors are computed for every map (no host
    synchronisation). In-range results are bitwise those of the plain formula.
    """
    fi = torch.finfo(sq.dtype)
    if _host_sync_is_cheap(sq):
        lo, hi = sq.aminmax()
        if not (bool(lo < fi.tiny**0.8) or bool(hi > fi.max)):
            return None
    bad = (sq < fi.tiny**0.8) | (sq > fi.max)
    big = flat.abs().amax(-1)
    m = torch.where(bad & (big > 0), big, torch.ones_like(big))
    w = flat / m.unsqueeze(-1)  # division: also exact for subnormal m, whose reciprocal overflows
    sq.copy_(torch.where(bad, (w * w).sum(-1), sq))
    return m, m.reciprocal()


def symbol_head_backward(saved: tuple, g: Tensor, need_scale: bool = True) -> tuple[Tensor, Optional[Tensor]]:
    """Gradients of :func:`symbol_head_forward` given ``g = dL/dlogits`` (E, N, M, c).

    With ``n = W / |W|`` and ``t = sum_o g_o n[x, o]``: ``dL/dW = (scale / |W|) (g e_x^T - t n)``
    (the chain rule through the norm, ``d(1/|W|)/dW = -W / |W|^3``) and ``dL/dscale = t`` summed
    over the sites.

    Returns
    -------
    gW : Tensor, shape (E, N, M, d, c), contiguous
    g_scale : Tensor, shape (E,), or None (without ``need_scale``)
    """
    W, idx, inv, fac, sel, r = saved  # on rescaled maps (r != 1): W/m, m/|W|, sel/m
    E, N, M, d, c = W.shape
    K = N * M
    g = g.reshape(E, K, c)
    t = g[..., 0] * sel[..., 0]  # sum_o g_o W[x, o]
    for o in range(1, c):
        t = torch.addcmul(t, g[..., o], sel[..., o])
    # through the norm: d inv / d W = -inv^3 W, so dW_k -= (t inv fac inv) W_k; the symbol's entry
    # also gets g fac (added after the product: the same rounding as g fac - q W_k). On a rescaled
    # map every quantity is that of W/m, and the chain rule through W/m multiplies by r = 1/m.
    u = t * inv  # also d logits / d scale, summed
    g_scale = u.sum(1) if need_scale else None
    neg_q = (u * fac).mul_(inv).neg_()
    fac_x = fac
    if r is not None:
        neg_q.mul_(r)
        fac_x = fac * r
    gW = W.view(E, K, d, c) * neg_q.view(E, K, 1, 1)
    gW.scatter_add_(2, idx, (g * fac_x.unsqueeze(-1)).view(E, K, 1, c))
    return gW.view(E, N, M, d, c), g_scale


class SymbolHead(torch.autograd.Function):
    """:func:`symbol_head_forward` with :func:`symbol_head_backward` as its backward, for plain
    (first-order) autograd: ``SymbolHead.apply(W, x, scale)``, ``scale`` may be None."""

    @staticmethod
    def forward(ctx, W: Tensor, x: Tensor, scale: Optional[Tensor]):
        """Logits, shape (E, N, M, c) (:func:`symbol_head_forward`)."""
        z, saved = symbol_head_forward(W, x, scale)
        ctx.saved = saved  # intermediate results, not inputs: no version-counter checks needed
        return z

    @staticmethod
    def backward(ctx, g: Tensor):
        """Gradients of ``W`` and ``scale`` (:func:`symbol_head_backward`)."""
        gW, g_scale = symbol_head_backward(ctx.saved, g, ctx.needs_input_grad[2])
        return gW, None, g_scale


# ------------------------------------------------------------------------------------------------
# Losses, autograd path
# ------------------------------------------------------------------------------------------------
def compute_loss(logits: Tensor, y: Tensor, loss: str = "mse", activation: str = "sigmoid") -> Tensor:
    """Mean training loss (autograd path).

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

    Raises
    ------
    ValueError
        Bad shapes, ``loss`` or ``activation``.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (N, M, c), got {tuple(logits.shape)}")
    if tuple(y.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"y must have shape {tuple(logits.shape[:2])} (N, M), got {tuple(y.shape)}")
    _check_choice(loss, activation)
    c = logits.shape[2]
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
    _check_choice(loss, activation)

    def fn(logits: Tensor, y: Tensor) -> Tensor:
        return compute_loss(logits, y, loss, activation)

    return fn


# ------------------------------------------------------------------------------------------------
# Losses, closed-form path
# ------------------------------------------------------------------------------------------------
def member_losses_and_grads(logits: Tensor, y: Tensor, loss: str = "mse", activation: str = "sigmoid") -> tuple[Tensor, Tensor]:
    """Losses of E members at once and their gradients with respect to the logits (closed form).

    ``losses[e] = compute_loss(logits[e], y[e])`` and ``grad = d(sum_e losses[e]) / d logits``,
    written out in the order of operations autograd runs on :func:`compute_loss`'s graph (so the
    two agree to rounding), without building it. With n the number of averaged terms and
    ``s = 2y - 1`` (one-hot targets ``t`` and ``2t - 1`` for c > 1):

    * ``mse``: ``2 r / n`` times ``sigmoid'(z)`` (after a sigmoid, ``r = sigmoid(z) - y``) or times
      1 (``r = z - s``);
    * ``hinge``: ``-s / n`` where ``1 - s z > 0``, else 0;
    * ``logistic`` / ``ce``, c = 1: ``-s sigmoid(-s z) / n`` (softplus's derivative; 1 beyond
      softplus's linear threshold 20, as torch's);
    * ``ce``, c > 1: ``(softmax(z) - t) / (N M)``.

    Parameters
    ----------
    logits : Tensor, shape (E, N, M, c)
        Pre-activation outputs (not differentiated: the gradient is returned).
    y : Tensor, shape (E, N, M), or (N, M) shared by all members
        Integer (or bool, for c = 1) targets.
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
    _check_choice(loss, activation)
    z = logits.detach()
    if loss == "ce" or loss == "logistic":
        if c > 1:  # softmax cross-entropy, the mean over the N*M sites
            logp = torch.log_softmax(z, -1)
            yl = y.long().unsqueeze(-1).expand(E, N, M, 1)
            losses = -logp.gather(-1, yl).view(E, N * M).mean(1)
            grad = logp.exp_()
            grad.scatter_add_(-1, yl, torch.full_like(grad[..., :1], -1.0))
            return losses, grad.mul_(1.0 / (N * M))
        s = (2.0 * y.to(z.dtype) - 1.0).unsqueeze(-1)
        a = -s * z
        losses = F.softplus(a).view(E, N * M).mean(1)
        # torch's softplus backward: sigmoid(a), and exactly 1 past the linear threshold a > 20
        ea = a.exp()
        dsp = torch.where(a > 20.0, torch.ones_like(a), ea / (ea + 1.0))
        return losses, (-s * dsp) * (1.0 / (N * M))
    # targets (E or 1, N, M, c): y itself for one output (0/1, any integer or bool dtype), else one-hot
    target = y.to(z.dtype).unsqueeze(-1) if c == 1 else F.one_hot(y.long(), c).to(z.dtype)
    n = N * M * c
    if loss == "hinge":
        s = 2.0 * target - 1.0
        m = 1.0 - s * z
        losses = F.relu(m).view(E, n).mean(1)
        return losses, torch.where(m > 0, -s, torch.zeros_like(m)) * (1.0 / n)
    if activation == "sigmoid":
        sg = torch.sigmoid(z)
        r = sg - target
        # d mean(r^2) / dz = (2 r / n) s (1 - s), in autograd's order (mean, pow, sigmoid backward)
        grad = torch.ops.aten.sigmoid_backward(r * (2.0 / n), sg)
    else:
        r = z - (2.0 * target - 1.0)
        grad = r * (2.0 / n)
    losses = (r * r).view(E, n).mean(1)
    return losses, grad

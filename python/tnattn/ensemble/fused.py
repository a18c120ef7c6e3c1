"""One fused training step of Scenario A for E members: the kernel does the loss too.

:func:`mse_step` returns, for every member, the mean squared residual of its batch, the number of
wrongly predicted sites and the gradients of the mean loss towards every parameter, from one call
of the C++ kernel ``tnattn._C.tn_attention_mse_step``. The kernel recomputes the contexts of each
block of sequences (as the backward of :func:`tnattn.ensemble.tn_attention_ensemble` does), forms
the local maps, applies the symbol head and the loss site by site, and runs the adjoint scans, so
neither the local maps W nor their gradient is ever written to memory and no torch operation runs
between forward and backward. It computes exactly what the unfused path computes (the ensemble
ops, :func:`tnattn.models.head.symbol_head_forward`/``symbol_head_backward`` and
:func:`tnattn.models.head.member_losses_and_grads`), in the same order of operations per site;
only sums over sites are ordered differently (tests/test_fused.py compares the two).

:func:`count_wrong` is the evaluation counterpart: the number of wrongly predicted sites per member
(the sign of the logit against 0/1 labels), from the forward kernel without writing the maps.

Scope: integer symbols, one output (c = 1), the squared-error loss on the sigmoid or on the raw
logit (against targets 0/1 or -1/+1), with or without the normalised map and its ``scale``; CPU
tensors. Anything else raises ``ValueError`` (callers check :func:`supports` first and fall back to
the unfused path).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tnattn import _C
from tnattn.models.functional import Params as StackedParams
from tnattn.ensemble.ops import _call, _check_tn_attention
from tnattn.ops import _ptr, _raise_bad_symbols

__all__ = ["mse_step", "count_wrong", "supports", "PARAM_NAMES"]

#: The order of :func:`mse_step`'s ``needs`` flags.
PARAM_NAMES = ("A_left", "A_right", "C", "u", "v", "scale")


def supports(x: Tensor, P: StackedParams, *, loss: str, activation: str) -> bool:
    """True when :func:`mse_step` handles this batch and model (see the module docstring)."""
    return (
        hasattr(_C, "tn_attention_mse_step")
        and not x.is_floating_point()
        and x.device.type == "cpu"
        and P.C.shape[-1] == 1
        and loss == "mse"
        and activation in ("sigmoid", "none")
    )


def mse_step(
    x: Tensor,
    y: Tensor,
    P: StackedParams,
    *,
    activation: str = "sigmoid",
    normalize_map: bool = True,
    needs: tuple = (True, True, True, True, True, True),
) -> tuple[Tensor, Tensor, dict]:
    """Losses, wrong sites and gradients of E members on their batches, in one kernel call.

    Parameters
    ----------
    x : Tensor
        Integer symbols, (E, N, M) per member or (N, M) shared.
    y : Tensor
        Targets 0/1 (bool or integer), (E, N, M) or (N, M) shared.
    P : StackedParams
        A_left, A_right (E, d, D, D) (the same tensor for the shared-A model), C (E, d, D, D, 1),
        u, v (E, D) or (E, N, D), scale (E,) or None; float32 or float64 on the CPU.
    activation : {"sigmoid", "none"}
        Residual ``sigmoid(z) - y`` or ``z - (2y - 1)`` of the logit z.
    normalize_map : bool
        ``z = scale * W[x] / |W|`` (|W| over the d map entries; ``scale`` = 1 when None), else
        ``z = W[x]``.
    needs : tuple of 6 bool
        Which gradients to return, in the order A_left, A_right, C, u, v, scale.

    Returns
    -------
    losses : Tensor, shape (E,), float64
        Mean squared residual of each member's N*M sites.
    wrong : Tensor, shape (E,), float64
        Sites with ``(z > 0) != y`` per member.
    grads : dict
        Gradient of ``losses.sum()`` per needed parameter name (shapes as the parameters; for the
        shared-A model ``A_left`` holds the sum of both sides and ``A_right`` is absent).
    """
    if activation not in ("sigmoid", "none"):
        raise ValueError(f"activation must be 'sigmoid' or 'none', got {activation!r}")
    if len(needs) != 6:
        raise ValueError(f"needs must hold 6 flags (A_left, A_right, C, u, v, scale), got {len(needs)}")
    xi, shared, E, d, D, c, u_pb, v_pb = _check_tn_attention(x, P.A_left, P.A_right, P.C, P.u, P.v)
    if xi.real:
        raise ValueError("x must hold integer symbols for the fused step (real embeddings: use the unfused path)")
    if c != 1:
        raise ValueError(f"the fused step needs one output per site (c = 1), got C with c = {c}")
    if P.C.device.type != "cpu":
        raise ValueError(f"the fused step runs on the CPU; the parameters are on {P.C.device}")
    if not isinstance(y, Tensor) or y.is_floating_point():
        raise TypeError(f"y must be an integer or bool tensor of 0/1 targets, got {getattr(y, 'dtype', type(y))}")
    if tuple(y.shape) not in ((E, xi.N, xi.M), (xi.N, xi.M)):
        raise ValueError(f"y must have shape (E, N, M) = {(E, xi.N, xi.M)} or (N, M) = {(xi.N, xi.M)}, got {tuple(y.shape)}")
    if y.device != P.C.device:
        raise ValueError(f"y is on {y.device} but the parameters are on {P.C.device}")
    scale = P.scale
    if scale is not None and (scale.shape != (E,) or scale.dtype != P.C.dtype):
        raise ValueError(f"scale must have shape (E,) = ({E},) and dtype {P.C.dtype}, got {tuple(scale.shape)} {scale.dtype}")
    y8 = (y if y.dtype == torch.bool else y != 0).to(torch.uint8).contiguous()
    shared_A = P.A_right is P.A_left
    n_AL, n_AR, n_C, n_u, n_v, n_s = (bool(f) for f in needs)
    if shared_A:
        n_AL, n_AR = n_AL or n_AR, n_AL or n_AR
    n_s = n_s and scale is not None and normalize_map
    AL, AR, C, u, v = (t.detach().contiguous() for t in (P.A_left, P.A_right, P.C, P.u, P.v))
    x = x.contiguous()
    sc = scale.detach().contiguous() if (scale is not None and normalize_map) else None
    f64 = {"dtype": torch.float64}
    losses, wrong = torch.empty(E, **f64), torch.empty(E, **f64)
    g = {
        "A_left": torch.empty_like(AL) if n_AL else None,
        "A_right": torch.empty_like(AR) if n_AR else None,
        "C": torch.empty_like(C) if n_C else None,
        "u": C.new_empty((E, xi.N, D)) if n_u else None,
        "v": C.new_empty((E, xi.N, D)) if n_v else None,
        "scale": C.new_empty(E) if n_s else None,
    }
    bad = _call(
        "tn_attention_mse_step", C.dtype == torch.float64, x.data_ptr(), xi.kind, shared, AL.data_ptr(),
        AR.data_ptr(), C.data_ptr(), u.data_ptr(), u_pb, v.data_ptr(), v_pb, _ptr(sc), y8.data_ptr(),
        y8.dim() == 2, bool(normalize_map), activation == "sigmoid", losses.data_ptr(), wrong.data_ptr(),
        _ptr(g["scale"]), _ptr(g["A_left"]), _ptr(g["A_right"]), _ptr(g["C"]), _ptr(g["u"]), _ptr(g["v"]),
        E, xi.N, xi.M, d, D, like=C,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    losses /= xi.N * xi.M
    for name, per_batch in (("u", u_pb), ("v", v_pb)):
        if g[name] is not None and not per_batch:
            g[name] = g[name].sum(1)
    if shared_A and g["A_left"] is not None:
        g["A_left"] = g["A_left"] + g.pop("A_right")
    wanted = dict(zip(PARAM_NAMES, needs))
    return losses, wrong, {k: t for k, t in g.items() if t is not None and (wanted[k] or (shared_A and k == "A_left"))}


def count_wrong(x: Tensor, y: Tensor, P: StackedParams, *, normalize_map: bool = True) -> Tensor:
    """Wrongly predicted sites per member, shape (E,), float64, in one forward kernel call.

    The prediction is ``z > 0`` for the logit ``z = scale * W[x] / |W|`` (``W[x]`` without
    ``normalize_map``), i.e. :func:`tnattn.models.functional.positive`; a site is wrong when
    that differs from ``y == 1`` or when its label is neither 0 nor 1. The local maps are formed
    block by block in scratch memory and never written out.

    Parameters
    ----------
    x : Tensor
        Integer symbols, (E, N, M) or (N, M) shared.
    y : Tensor
        Integer or bool labels, (E, N, M) or (N, M) shared.
    P : StackedParams
        As in :func:`mse_step` (c = 1, CPU).
    normalize_map : bool
        Whether the logit carries ``scale`` (only its sign matters here).
    """
    xi, shared, E, d, D, c, u_pb, v_pb = _check_tn_attention(x, P.A_left, P.A_right, P.C, P.u, P.v)
    if xi.real or c != 1 or P.C.device.type != "cpu":
        raise ValueError("count_wrong needs integer symbols, one output (c = 1) and CPU tensors")
    if not isinstance(y, Tensor) or y.is_floating_point():
        raise TypeError(f"y must be an integer or bool tensor of labels, got {getattr(y, 'dtype', type(y))}")
    if tuple(y.shape) not in ((E, xi.N, xi.M), (xi.N, xi.M)):
        raise ValueError(f"y must have shape (E, N, M) = {(E, xi.N, xi.M)} or (N, M) = {(xi.N, xi.M)}, got {tuple(y.shape)}")
    # labels 0/1 as they are, anything else as 2 (always wrong)
    y8 = (y if y.dtype == torch.bool else torch.where((y == 0) | (y == 1), y, 2)).to(torch.uint8).contiguous()
    sign = torch.sign(P.scale.detach()).contiguous() if (normalize_map and P.scale is not None) else None
    AL, AR, C, u, v = (t.detach().contiguous() for t in (P.A_left, P.A_right, P.C, P.u, P.v))
    wrong = torch.empty(E, dtype=torch.float64)
    bad = _call(
        "tn_attention_count_wrong", C.dtype == torch.float64, x.contiguous().data_ptr(), xi.kind, shared,
        AL.data_ptr(), AR.data_ptr(), C.data_ptr(), u.data_ptr(), u_pb, v.data_ptr(), v_pb, _ptr(sign),
        y8.data_ptr(), y8.dim() == 2, wrong.data_ptr(), E, xi.N, xi.M, d, D, like=C,
    )  # fmt: skip
    _raise_bad_symbols(bad, d)
    return wrong

"""The TN-attention forward pass as pure functions of stacked parameters (E members, E >= 1).

:class:`tnattn.models.TNAttention` calls these on its own parameters (``model.stacked()``); a
trainer calls them on a compacted subset of members (finished members cost nothing) or on fresh
leaves of its working set. Inputs are validated by the model (:meth:`TNAttention.logits` is the
checked entry point) and by the ops; these functions trust their arguments.

Shapes: E members, N batch, M length, d alphabet, D bond dimension, c outputs. ``x`` is shared by
the members ((N, M) symbols or (N, M, d) real embeddings) or one batch per member ((E, N, M) or
(E, N, M, d)). As for the ops (:mod:`tnattn.ops`), one model's parameters without the member
dimension are the case E = 1, and its outputs come without it (the shapes below without E).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor

from . import head
from ._backend import resolve_backend

__all__ = ["Params", "maps", "logits", "predict", "positive", "contexts"]


@dataclass
class Params:
    """Parameters of E members, leading dimension E (or one model's parameters without it: E = 1).

    Attributes
    ----------
    A_left, A_right : Tensor, shape (E, d, D, D)
        ``A_right is A_left`` for the shared-tensor model.
    C : Tensor, shape (E, d, D, D, c)
    u, v : Tensor, shape (E, D) (or (E, N, D), one boundary per sequence)
    scale : Tensor, shape (E,), or None without map normalisation
    """

    A_left: Tensor
    A_right: Tensor
    C: Tensor
    u: Tensor
    v: Tensor
    scale: Optional[Tensor]

    def select(self, members: Tensor) -> "Params":
        """The rows ``members`` (an int64 index tensor) of every tensor (autograd flows back)."""
        pick = {f.name: getattr(self, f.name) for f in fields(self)}
        out = {k: (t.index_select(0, members) if t is not None else None) for k, t in pick.items() if k != "A_right"}
        out["A_right"] = out["A_left"] if self.A_right is self.A_left else self.A_right.index_select(0, members)
        return Params(**out)

    @property
    def E(self) -> int:
        return self.A_left.shape[0] if self.A_left.dim() == 4 else 1


def _ops(backend: str, x: Tensor):
    # The native ops reject an empty batch; the reference handles it, and nothing is computed.
    N = x.shape[-3] if x.is_floating_point() else x.shape[-2]
    return resolve_backend(backend if N else "reference")


def _raw_maps(P: Params, x: Tensor, backend: str) -> Tensor:
    """The local maps before the head, ([E,] N, M, d, c)."""
    return _ops(backend, x).tn_attention(x, P.A_left, P.A_right, P.C, P.u, P.v)


def maps(P: Params, x: Tensor, *, normalize_map: bool, backend: str = "ops") -> Tensor:
    """Local maps of every member (after normalisation and ``scale`` when ``normalize_map``).

    Returns
    -------
    Tensor, shape (E, N, M, d, c)
    """
    W = _raw_maps(P, x, backend)
    return head.normalize_maps(W, P.scale) if normalize_map else W


def logits(P: Params, x: Tensor, *, normalize_map: bool, backend: str = "ops") -> Tensor:
    """Outputs before the activation, per member: ``W_i[x_i, :]`` (or ``sum_s x_is W_i[s, :]``),
    through :func:`tnattn.models.head.head_logits` (the autograd path).

    Returns
    -------
    Tensor, shape (E, N, M, c)
    """
    return head.head_logits(_raw_maps(P, x, backend), x, P.scale, normalize_map=normalize_map)


@torch.no_grad()
def predict(P: Params, x: Tensor, *, normalize_map: bool, backend: str = "ops") -> Tensor:
    """Predicted symbols of every member, shape (E, N, M), int64.

    One output (c = 1): ``logit > 0`` (sigmoid output above 1/2; with ``activation="none"`` this
    assumes targets coded as -1/+1 around the threshold 0), by :func:`positive` for symbol inputs.
    Several outputs: argmax over the outputs.
    """
    if x.is_floating_point() or P.C.shape[-1] != 1:
        z = logits(P, x, normalize_map=normalize_map, backend=backend)
        return (z[..., 0] > 0).long() if z.shape[-1] == 1 else z.argmax(dim=-1)
    return positive(P, x, normalize_map=normalize_map, backend=backend).long()


@torch.no_grad()
def positive(P: Params, x: Tensor, *, normalize_map: bool, backend: str = "ops") -> Tensor:
    """Whether each member's logit is positive (predicts symbol 1), shape (E, N, M), bool.

    One output (c = 1) and symbol inputs only: the sign of ``scale * W[x] / |W|`` is that of
    ``sign(scale) * W[x]`` (``|W| > 0``; a zero map gives ``W[x] = 0``, False either way), so only
    the symbol's map entry is read (one ``gather`` on the kernel's output, no transposed copy) and
    the normalisation is skipped.

    Raises
    ------
    ValueError
        Real embeddings or several outputs.
    """
    if x.is_floating_point() or P.C.shape[-1] != 1:
        raise ValueError("positive needs symbol inputs and one output (c = 1)")
    W, scale = _raw_maps(P, x, backend), P.scale
    if W.dim() == 4:  # one model: as E = 1
        W, scale, single = W.unsqueeze(0), (None if scale is None else scale.unsqueeze(0)), True
    else:
        single = False
    E, N, M, d, _ = W.shape
    idx = x.reshape(E if x.dim() == 3 else 1, N * M, 1).long().expand(E, N * M, 1)
    sel = W.reshape(E, N * M, d).gather(2, idx).view(E, N * M)
    if normalize_map and scale is not None:
        sel = sel * torch.sign(scale).view(E, 1)
    out = (sel > 0).view(E, N, M)
    return out[0] if single else out


def contexts(P: Params, x: Tensor, *, backend: str = "ops") -> tuple[Tensor, Tensor]:
    """Left and right contexts of every member, each of shape (E, N, M, D)."""
    ops = _ops(backend, x)
    return ops.contexts(P.A_left, x, P.u), ops.contexts(P.A_right, x, P.v, reverse=True)

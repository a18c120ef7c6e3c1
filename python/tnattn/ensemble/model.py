"""E independent TN-attention students with stacked parameters: :class:`EnsembleTNAttention`.

Member ``e`` is exactly the model ``TNAttention(D, d, c, ..., generator=torch.Generator().manual_seed(
seeds[e]))``: the constructor builds every member through :class:`tnattn.models.TNAttention` (same
draws, same order, same casts) and stacks the parameters, so an ensemble never re-implements the
initialisation. :meth:`EnsembleTNAttention.from_members` stacks any list of compatible models (for
example hand-built exact ones), and :meth:`EnsembleTNAttention.member` hands one member back as a
plain :class:`~tnattn.models.TNAttention`.

The forward pass is :func:`ensemble_logits`, a pure function of a :class:`StackedParams` so that the
trainer can run it on a compacted subset of members (finished members cost nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from tnattn import reference
from tnattn.ensemble.ops import contexts_ensemble, tn_attention_ensemble
from tnattn.models import NonFiniteParameterError, TNAttention
from tnattn.models._ties import TiedContextsMixin
from tnattn.models.head import SymbolHead as _SymbolHead
from tnattn.models.head import symbol_head_backward, symbol_head_forward  # noqa: F401 (moved there)

__all__ = ["EnsembleTNAttention", "StackedParams", "ensemble_logits", "ensemble_predict", "ensemble_contexts"]

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)

#: Settings that must agree between stacked members (attributes of TNAttention).
_SETTINGS = ("D", "d", "c", "shared", "boundary", "init", "init_std", "normalize_map", "activation")


@dataclass
class StackedParams:
    """Parameters of E members, leading dimension E.

    Attributes
    ----------
    A_left, A_right : Tensor, shape (E, d, D, D)
        ``A_right is A_left`` for the shared-tensor model.
    C : Tensor, shape (E, d, D, D, c)
    u, v : Tensor, shape (E, D)
    scale : Tensor, shape (E,), or None without map normalisation
    """

    A_left: Tensor
    A_right: Tensor
    C: Tensor
    u: Tensor
    v: Tensor
    scale: Optional[Tensor]

    def select(self, members: Tensor) -> "StackedParams":
        """The rows ``members`` (an int64 index tensor) of every tensor (autograd flows back)."""
        pick = {f.name: getattr(self, f.name) for f in fields(self)}
        out = {k: (t.index_select(0, members) if t is not None else None) for k, t in pick.items() if k != "A_right"}
        out["A_right"] = out["A_left"] if self.A_right is self.A_left else self.A_right.index_select(0, members)
        return StackedParams(**out)

    @property
    def E(self) -> int:
        return self.A_left.shape[0]


def _check_x(x, E: int, d: int, dtype: torch.dtype) -> Tensor:
    """Validate the inputs of an ensemble forward; return int64 symbols or embeddings in ``dtype``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype in _INT_DTYPES:
        if x.dim() not in (2, 3) or (x.dim() == 3 and x.shape[0] != E):
            raise ValueError(f"x of integer symbols must have shape (N, M) or (E={E}, N, M), got {tuple(x.shape)}")
        return x.long().contiguous()
    if x.dtype.is_floating_point:
        if x.dim() not in (3, 4) or x.shape[-1] != d or (x.dim() == 4 and x.shape[0] != E):
            raise ValueError(f"x of real embeddings must have shape (N, M, {d}) or (E={E}, N, M, {d}), got {tuple(x.shape)}")
        return x.to(dtype).contiguous()
    raise TypeError(f"x must hold integer symbols or real embeddings, got {x.dtype}")


def ensemble_maps(P: StackedParams, x: Tensor, *, normalize_map: bool) -> Tensor:
    """Local maps of every member (after normalisation and ``scale`` when ``normalize_map``).

    Parameters
    ----------
    P : StackedParams
        E members.
    x : Tensor
        (N, M) / (N, M, d) shared, or (E, N, M) / (E, N, M, d) per member (validated by the op).

    Returns
    -------
    Tensor, shape (E, N, M, d, c)
    """
    W = tn_attention_ensemble(x, P.A_left, P.A_right, P.C, P.u, P.v)
    if not normalize_map:
        return W
    E, N, M, d, c = W.shape
    # Same arithmetic as TNAttention._normalise (normalise over the d*c entries, then scale).
    return reference.normalize(W.reshape(E, N, M, d * c)).reshape(E, N, M, d, c) * P.scale.view(E, 1, 1, 1, 1)


def ensemble_logits(P: StackedParams, x: Tensor, *, normalize_map: bool) -> Tensor:
    """Outputs before the activation, per member: ``W_i[x_i, :]`` (or ``sum_s x_is W_i[s, :]``).

    Parameters
    ----------
    P : StackedParams
    x : Tensor
        Symbols (N, M) shared or (E, N, M), or real embeddings (N, M, d) / (E, N, M, d); already
        validated (see :meth:`EnsembleTNAttention.logits` for the checked entry point).

    Returns
    -------
    Tensor, shape (E, N, M, c)
    """
    if not x.is_floating_point():
        W = tn_attention_ensemble(x, P.A_left, P.A_right, P.C, P.u, P.v)
        if normalize_map:
            return _SymbolHead.apply(W, x, P.scale)
        E, N, M, d, c = W.shape
        idx = x.view(-1 if x.dim() == 3 else 1, N, M, 1, 1).expand(E, N, M, 1, c)
        return W.gather(3, idx).squeeze(3)
    W = ensemble_maps(P, x, normalize_map=normalize_map)
    eq = "nis,eniso->enio" if x.dim() == 3 else "enis,eniso->enio"
    return torch.einsum(eq, x, W)


@torch.no_grad()
def ensemble_predict(P: StackedParams, x: Tensor, *, normalize_map: bool) -> Tensor:
    """Predicted symbols of every member, shape (E, N, M), int64 (as ``TNAttention.predict``).

    For one output (c = 1) and symbol inputs the sign of the logit ``scale * W[x] / |W|`` is the
    sign of ``scale * W[x]`` (``|W| > 0``; a zero map gives ``W[x] = 0``, predicted 0 either way),
    so the normalisation is skipped. Otherwise the logits are computed in full.
    """
    if x.is_floating_point() or P.C.shape[-1] != 1:
        z = ensemble_logits(P, x, normalize_map=normalize_map)
        return (z[..., 0] > 0).long() if z.shape[-1] == 1 else z.argmax(dim=-1)
    return ensemble_positive(P, x, normalize_map=normalize_map).long()


@torch.no_grad()
def ensemble_positive(P: StackedParams, x: Tensor, *, normalize_map: bool) -> Tensor:
    """Whether each member's logit is positive (predicts symbol 1), shape (E, N, M), bool.

    One output (c = 1) and symbol inputs only: the sign of ``scale * W[x] / |W|`` is that of
    ``sign(scale) * W[x]``, so only the symbol's map entry is read (one ``gather`` on the kernel's
    output, no transposed copy) and the normalisation is skipped. A zero map gives False.
    """
    if x.is_floating_point() or P.C.shape[-1] != 1:
        raise ValueError("ensemble_positive needs symbol inputs and one output (c = 1)")
    W = tn_attention_ensemble(x, P.A_left, P.A_right, P.C, P.u, P.v)
    E, N, M, d, _ = W.shape
    idx = x.reshape(E if x.dim() == 3 else 1, N * M, 1).long().expand(E, N * M, 1)
    sel = W.view(E, N * M, d).gather(2, idx).view(E, N * M)
    if normalize_map and P.scale is not None:
        sel = sel * torch.sign(P.scale).view(E, 1)
    return (sel > 0).view(E, N, M)


def ensemble_contexts(P: StackedParams, x: Tensor) -> tuple[Tensor, Tensor]:
    """Left and right contexts of every member, each of shape (E, N, M, D)."""
    return contexts_ensemble(P.A_left, x, P.u), contexts_ensemble(P.A_right, x, P.v, reverse=True)


class EnsembleTNAttention(TiedContextsMixin, nn.Module):
    r"""E independent uniform TN-attention layers evaluated together.

    Parameters
    ----------
    D : int
        Bond dimension.
    d, c : int
        Alphabet size and outputs per site.
    seeds : sequence of int
        One seed per member (E = ``len(seeds)``): member ``e`` is initialised exactly as
        ``TNAttention(D, d, c, **kwargs, generator=torch.Generator().manual_seed(seeds[e]))``.
    **kwargs
        Any keyword of :class:`tnattn.models.TNAttention` except ``generator`` and ``backend``
        (shared, boundary, train_boundary, init, init_std, normalize_map, scale_init, activation,
        train_contexts, train_classifier, dtype, device).

    Attributes
    ----------
    A_left, A_right : Parameter, shape (E, d, D, D)
        The same Parameter when ``shared``.
    C : Parameter, shape (E, d, D, D, c)
    u, v : Parameter, shape (E, D)
    scale : Parameter, shape (E,), or None
    E : int
        Number of members.
    """

    def __init__(self, D: int, d: int = 2, c: int = 1, *, seeds: Sequence[int], **kwargs):
        super().__init__()
        for bad in ("generator", "backend"):
            if bad in kwargs:
                raise TypeError(f"EnsembleTNAttention takes seeds, not {bad}")
        seeds = _check_seeds(seeds)
        members = [
            TNAttention(D, d, c, backend="reference", generator=torch.Generator().manual_seed(s), **kwargs) for s in seeds
        ]
        self._stack(members)

    @classmethod
    def from_members(cls, members: Sequence[TNAttention]) -> "EnsembleTNAttention":
        """Stack compatible :class:`~tnattn.models.TNAttention` models (copies their parameters).

        Raises
        ------
        ValueError
            If the list is empty or the members differ in a setting (D, d, c, shared, boundary,
            init, normalisation, activation, dtype, device or which tensors train).
        """
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        obj._stack(list(members))
        return obj

    def _stack(self, members: list) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for m in members:
            if not isinstance(m, TNAttention):
                raise TypeError(f"members must be TNAttention models, got {type(m).__name__}")
        first = members[0]
        flags = lambda m: (m.train_contexts, m.train_classifier, m.train_boundary, m.A_left.dtype, m.A_left.device)  # noqa: E731
        for k, m in enumerate(members):
            for s in _SETTINGS:
                if getattr(m, s) != getattr(first, s):
                    raise ValueError(f"member {k} has {s}={getattr(m, s)!r} but member 0 has {getattr(first, s)!r}")
            if flags(m) != flags(first):
                raise ValueError(f"member {k} differs from member 0 in dtype, device or trainable tensors")
        for s in _SETTINGS:
            setattr(self, s, getattr(first, s))
        self._train_contexts, self._train_classifier = first.train_contexts, first.train_classifier
        self._train_boundary = first.train_boundary
        self.scale_init = None

        def stack(name):
            return nn.Parameter(torch.stack([getattr(m, name).detach() for m in members]).clone())

        self.A_left = stack("A_left")
        self.A_right = self.A_left if self.shared else stack("A_right")
        self.C = stack("C")
        self.u, self.v = stack("u"), stack("v")
        if self.normalize_map:
            self.scale = stack("scale")
        else:
            self.register_parameter("scale", None)
        # Same trainable flags as the members (TNAttention._apply_trainable).
        self.A_left.requires_grad_(self._train_contexts)
        self.A_right.requires_grad_(self._train_contexts)
        self.u.requires_grad_(self._train_contexts and self._train_boundary)
        self.v.requires_grad_(self._train_contexts and self._train_boundary)
        self.C.requires_grad_(self._train_classifier)
        if self.scale is not None:
            self.scale.requires_grad_(self._train_classifier)

    # ------------------------------------------------------------------------------------------
    @property
    def E(self) -> int:
        return self.A_left.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.A_left.dtype

    def stacked(self, members: Optional[Sequence[int] | Tensor] = None) -> StackedParams:
        """The parameters as a :class:`StackedParams`, optionally only the rows ``members``."""
        P = StackedParams(self.A_left, self.A_right, self.C, self.u, self.v, self.scale)
        if members is None:
            return P
        return P.select(self._member_index(members))

    def _member_index(self, members) -> Tensor:
        idx = torch.as_tensor(members, dtype=torch.long, device=self.A_left.device).reshape(-1)
        if idx.numel() == 0:
            raise ValueError("members must name at least one member")
        if int(idx.min()) < 0 or int(idx.max()) >= self.E:
            raise ValueError(f"members must lie in [0, {self.E}), got {idx.tolist()}")
        return idx

    def _prepare(self, x, E: int) -> Tensor:
        x = _check_x(x, E, self.d, self.dtype)
        if x.device != self.A_left.device:
            raise ValueError(f"x is on {x.device} but the model is on {self.A_left.device}")
        checks = [torch.isfinite(p).all() for p in self.parameters()]
        if not x.is_floating_point() and x.numel():
            checks.append((x.min() >= 0) & (x.max() < self.d))
        if not bool(torch.stack(checks).all()):  # one host synchronisation for all checks
            for name, p in self.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    raise NonFiniteParameterError(f"parameter {name} holds NaN or inf (training diverged?)")
            raise ValueError(f"x holds symbols outside [0, {self.d}): min {int(x.min())}, max {int(x.max())}")
        return x

    def logits(self, x: Tensor, members=None) -> Tensor:
        """Outputs before the activation.

        Parameters
        ----------
        x : Tensor
            Symbols (N, M) shared by all members, or (E', N, M) one batch per member; or real
            embeddings (N, M, d) / (E', N, M, d).
        members : sequence of int or Tensor, optional
            Evaluate only these members (E' of them, in this order); default all (E' = E).

        Returns
        -------
        Tensor, shape (E', N, M, c)
        """
        P = self.stacked(members)
        return ensemble_logits(P, self._prepare(x, P.E), normalize_map=self.normalize_map)

    def forward(self, x: Tensor, members=None) -> Tensor:
        """``activation(logits(x))``; shape (E', N, M, c)."""
        z = self.logits(x, members)
        return torch.sigmoid(z) if self.activation == "sigmoid" else z

    @torch.no_grad()
    def predict(self, x: Tensor, members=None) -> Tensor:
        """Predicted symbols, shape (E', N, M), int64 (threshold 0 for c = 1, else argmax)."""
        P = self.stacked(members)
        return ensemble_predict(P, self._prepare(x, P.E), normalize_map=self.normalize_map)

    def contexts(self, x: Tensor, members=None) -> tuple[Tensor, Tensor]:
        """Left and right contexts, each of shape (E', N, M, D)."""
        P = self.stacked(members)
        return ensemble_contexts(P, self._prepare(x, P.E))

    @torch.no_grad()
    def member(self, e: int, *, backend: str = "ops") -> TNAttention:
        """Member ``e`` as a stand-alone :class:`~tnattn.models.TNAttention` (a copy)."""
        if not 0 <= int(e) < self.E:
            raise ValueError(f"e must lie in [0, {self.E}), got {e}")
        # A throwaway generator: building the module must not consume the global RNG.
        m = TNAttention(
            self.D, self.d, self.c, shared=self.shared, boundary="e1", init="normal", init_std=self.init_std,
            normalize_map=self.normalize_map, activation=self.activation, backend=backend,
            generator=torch.Generator().manual_seed(0), dtype=self.dtype, device=self.A_left.device,
        )  # fmt: skip
        m.boundary, m.init = self.boundary, self.init
        for name in ("A_left", "A_right", "C", "u", "v", "scale"):
            p = getattr(m, name)
            if p is not None:
                p.copy_(getattr(self, name)[e])
        m.set_trainable(contexts=self._train_contexts, classifier=self._train_classifier, boundary=self._train_boundary)
        return m

    def extra_repr(self) -> str:
        return (
            f"E={self.E}, D={self.D}, d={self.d}, c={self.c}, shared={self.shared}, boundary={self.boundary!r}, "
            f"init={self.init!r}, normalize_map={self.normalize_map}, activation={self.activation!r}"
        )


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__"):
        raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}")
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds must be non-negative ints, got {s!r}")
        out.append(int(s))
    if not out:
        raise ValueError("seeds must name at least one member")
    return out

"""Which implementation of the TN-attention ops a model calls: a registry, name -> namespace.

Every backend works on E members at once and exposes ``name``,
``contexts(A, x, boundary, *, reverse=False) -> (E, N, M, D)`` and
``tn_attention(x, A_left, A_right, C, u, v) -> (E, N, M, d, c)``, with ``A``, ``A_left``,
``A_right`` (E, d, D, D), ``C`` (E, d, D, D, c), boundaries (E, D) or (E, N, D), and ``x`` shared by
the members ((N, M) symbols, (N, M, d) embeddings) or one batch per member ((E, N, M) /
(E, N, M, d)). A single model's parameters without the member dimension (``A`` of shape
(d, D, D), ...) are the case E = 1 and give outputs without it, as in :mod:`tnattn.ops`.

``"ops"``
    :func:`tnattn.ops.tn_attention` / :func:`tnattn.ops.contexts`: the native custom ops
    (autograd-aware, the fast path; all members in one kernel call).
``"reference"``
    :func:`tnattn.reference.contexts` / :func:`tnattn.reference.tn_attention`, the plain-PyTorch
    loop over positions (the oracle), member by member.
``"vectorized"``
    The log-depth prefix-product baseline of :mod:`tnattn.reference` (same values up to rounding),
    member by member.

The native ops are imported here like any module (``import tnattn`` needs them anyway), so a
reader sees where the fast path comes from.
"""

from __future__ import annotations

import types
from typing import Callable

import torch
from torch import Tensor

from .. import ops, reference

__all__ = ["BACKENDS", "resolve_backend"]


def _member_x(x: Tensor, e: int, E: int) -> Tensor:
    """Member e's batch: ``x`` itself when shared, else ``x[e]`` (per-member batches lead with E)."""
    per_member = x.dim() == (4 if x.is_floating_point() else 3)
    if per_member and x.shape[0] != E:
        raise ValueError(f"x holds {x.shape[0]} per-member batches but the parameters {E} members")
    return x[e] if per_member else x


def _per_member(contexts: Callable, tn_attention: Callable) -> tuple[Callable, Callable]:
    """E-member versions of single-model ``contexts`` and ``tn_attention``: one call per member."""

    def contexts_E(A: Tensor, x: Tensor, boundary: Tensor, *, reverse: bool = False) -> Tensor:
        if A.dim() == 3:  # one model's parameters
            return contexts(A, x, boundary, reverse=reverse)
        E = A.shape[0]
        return torch.stack([contexts(A[e], _member_x(x, e, E), boundary[e], reverse=reverse) for e in range(E)])

    def tn_attention_E(x: Tensor, A_left: Tensor, A_right: Tensor, C: Tensor, u: Tensor, v: Tensor) -> Tensor:
        if A_left.dim() == 3:  # one model's parameters
            return tn_attention(x, A_left, A_right, C, u, v)
        E = A_left.shape[0]
        return torch.stack(
            [tn_attention(_member_x(x, e, E), A_left[e], A_right[e], C[e], u[e], v[e]) for e in range(E)]
        )

    return contexts_E, tn_attention_E


def _backend(name: str, contexts: Callable, tn_attention: Callable) -> types.SimpleNamespace:
    return types.SimpleNamespace(name=name, contexts=contexts, tn_attention=tn_attention)


_REGISTRY = {
    "ops": _backend("ops", ops.contexts, ops.tn_attention),  # one op set: E members, or one model (E = 1)
    "reference": _backend("reference", *_per_member(reference.contexts, reference.tn_attention)),
    "vectorized": _backend("vectorized", *_per_member(reference.contexts_vectorized, reference.tn_attention_vectorized)),
}
BACKENDS = tuple(_REGISTRY)


def resolve_backend(name: str) -> types.SimpleNamespace:
    """The namespace holding ``contexts`` and ``tn_attention`` (over E members) for backend ``name``.

    Parameters
    ----------
    name : {"ops", "reference", "vectorized"}

    Returns
    -------
    types.SimpleNamespace
        With attributes ``name``, ``contexts`` and ``tn_attention``.

    Raises
    ------
    ValueError
        ``name`` is not a backend; the message lists them.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}") from None

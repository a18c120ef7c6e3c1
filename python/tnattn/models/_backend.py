"""Which implementation of the TN-attention ops a model calls: a registry, name -> namespace.

``"ops"``
    :mod:`tnattn.ops`: the native custom ops (autograd-aware, the fast path).
``"reference"``
    :func:`tnattn.reference.contexts` / :func:`tnattn.reference.tn_attention`, the plain-PyTorch
    loop over positions (the oracle).
``"vectorized"``
    The log-depth prefix-product baseline of :mod:`tnattn.reference` (same values up to rounding).

Every backend exposes ``name``, ``contexts(A, x, boundary, *, reverse=False) -> (N, M, D)`` and
``tn_attention(x, A_left, A_right, C, u, v) -> (N, M, d, c)``. The native ops are imported here like
any module (``import tnattn`` needs them anyway), so a reader sees where the fast path comes from.
"""

from __future__ import annotations

import types

from .. import ops, reference

__all__ = ["BACKENDS", "resolve_backend"]


def _backend(name: str, module, suffix: str = "") -> types.SimpleNamespace:
    return types.SimpleNamespace(name=name, contexts=getattr(module, "contexts" + suffix),
                                 tn_attention=getattr(module, "tn_attention" + suffix))


_REGISTRY = {
    "ops": _backend("ops", ops),
    "reference": _backend("reference", reference),
    "vectorized": _backend("vectorized", reference, "_vectorized"),
}
BACKENDS = tuple(_REGISTRY)


def resolve_backend(name: str) -> types.SimpleNamespace:
    """The namespace holding ``contexts`` and ``tn_attention`` for backend ``name``.

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

"""Which implementation of the TN-attention ops a model calls.

``"ops"``
    :mod:`tnattn.ops` (native custom ops, autograd-aware). When it cannot be imported (not built,
    or not written yet), the model falls back to ``"reference"`` and warns once per process, so
    that training code keeps working on a checkout without the native extension.
``"reference"``
    :func:`tnattn.reference.contexts` / :func:`tnattn.reference.tn_attention`, the plain-PyTorch
    loop over positions (the oracle).
``"vectorized"``
    The log-depth prefix-product baseline of :mod:`tnattn.reference` (same values up to rounding).

Every backend exposes ``contexts(A, x, boundary, *, reverse=False) -> (N, M, D)`` and
``tn_attention(x, A_left, A_right, C, u, v) -> (N, M, d, c)``.
"""

from __future__ import annotations

import importlib
import types
import warnings

from .. import reference

__all__ = ["BACKENDS", "resolve_backend"]

BACKENDS = ("ops", "reference", "vectorized")

_REFERENCE = types.SimpleNamespace(name="reference", contexts=reference.contexts, tn_attention=reference.tn_attention)
_VECTORIZED = types.SimpleNamespace(
    name="vectorized", contexts=reference.contexts_vectorized, tn_attention=reference.tn_attention_vectorized
)

# Resolved once per process: retrying a failed import at every forward would cost a file-system
# search per training step.
_ops_cache: dict[str, object] = {}


def _load_ops():
    if "ops" not in _ops_cache:
        try:
            mod = importlib.import_module("tnattn.ops")
            _ops_cache["ops"] = types.SimpleNamespace(name="ops", contexts=mod.contexts, tn_attention=mod.tn_attention)
        except (ImportError, AttributeError) as exc:
            warnings.warn(
                f"backend='ops' requested but tnattn.ops is unavailable ({exc}); "
                "falling back to the plain-PyTorch reference implementation (slow)",
                RuntimeWarning,
                stacklevel=4,
            )
            _ops_cache["ops"] = _REFERENCE
    return _ops_cache["ops"]


def resolve_backend(name: str):
    """The namespace holding ``contexts`` and ``tn_attention`` for backend ``name``.

    Parameters
    ----------
    name : {"ops", "reference", "vectorized"}

    Returns
    -------
    types.SimpleNamespace
        With attributes ``name`` (the backend actually used), ``contexts`` and ``tn_attention``.
    """
    if name == "ops":
        return _load_ops()
    if name == "reference":
        return _REFERENCE
    if name == "vectorized":
        return _VECTORIZED
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")

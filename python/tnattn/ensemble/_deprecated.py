"""Deprecated names of the former ``tnattn.ensemble.ops`` (one release; use :mod:`tnattn.ops`).

The stacked (E, ...) ops are now the general case of :func:`tnattn.ops.contexts` and
:func:`tnattn.ops.tn_attention`, and :class:`tnattn.ops.kernel_threads` sets the kernel threads of
every op. These aliases warn (``DeprecationWarning``) and keep their old contract: they accept
stacked parameters only.
"""

from __future__ import annotations

import warnings

from tnattn import ops as _ops
from tnattn._checks import check_stacked

__all__ = ["contexts_ensemble", "tn_attention_ensemble", "kernel_threads"]


def _warn(old: str, new: str) -> None:
    warnings.warn(f"tnattn.ensemble.{old} is deprecated and will be removed in the next release; use {new}",
                  DeprecationWarning, stacklevel=3)  # fmt: skip


def contexts_ensemble(A, x, boundary, *, reverse: bool = False):
    """Deprecated: :func:`tnattn.ops.contexts` with stacked parameters ``A`` (E, d, D, D)."""
    _warn("contexts_ensemble", "tnattn.ops.contexts (stacked parameters)")
    check_stacked("A", A, 4)
    return _ops.contexts(A, x, boundary, reverse=reverse)


def tn_attention_ensemble(x, A_left, A_right, C, u, v):
    """Deprecated: :func:`tnattn.ops.tn_attention` with stacked parameters (E, ...)."""
    _warn("tn_attention_ensemble", "tnattn.ops.tn_attention (stacked parameters)")
    check_stacked("A_left", A_left, 4)
    return _ops.tn_attention(x, A_left, A_right, C, u, v)


class kernel_threads(_ops.kernel_threads):
    """Deprecated: :class:`tnattn.ops.kernel_threads`."""

    def __init__(self, n):
        _warn("kernel_threads", "tnattn.ops.kernel_threads")
        super().__init__(n)

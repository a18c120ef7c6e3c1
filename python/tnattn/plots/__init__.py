"""Matplotlib figures, one submodule per family (training, theory, structure).

Figures are drawn with the non-interactive Agg backend, so they work on machines without a screen.
Every figure file is written by :func:`save_figure`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)

__all__: list[str] = ["save_figure"]


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: float = 110, **savefig_kw: Any) -> Path:
    """Write matplotlib figure ``fig`` to ``path`` at ``dpi`` (``savefig_kw`` go to ``fig.savefig``,
    e.g. ``bbox_inches="tight"``), close it and return ``path`` as a Path.

    The folder is created and the file written atomically (a temporary file in the same folder,
    then a rename, like :mod:`tnattn.io`): a reader never sees half a figure. The format follows
    the suffix of ``path`` (PNG when it has none).
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png", **savefig_kw)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path

"""Atomic checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain containers (dict, list, tuple, str, int, float, bool,
None) only, so it can be loaded without unpickling arbitrary objects. It is written to a temporary
file and renamed into place (:func:`tnattn.io.atomic_write`), so a run killed while writing (even
``kill -9``) leaves the previous checkpoint intact.

The trainer stores (see :meth:`tnattn.train.Trainer.state_dict`): format version, epoch, model and
optimiser state, every random-number-generator state, the history, the grokking/stopping state,
callback states, the config and the accumulated wall time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tnattn.io import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_NAME", "FORMAT_VERSION"]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1

_PLAIN = (str, int, float, bool, type(None))


def _check_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError if ``obj`` holds anything ``weights_only`` loading would reject."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _PLAIN) or isinstance(obj, torch.Size):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: checkpoint dict keys must be str or int, got {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: checkpoints hold only tensors and plain containers, got {type(obj).__name__}")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically with ``torch.save``.

    Parameters
    ----------
    path : path
        Destination file.
    state : dict
        Tensors and plain containers only (checked, so a bad entry fails at save time, not when
        the run is resumed).
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    _check_plain(state)
    return atomic_write(path, lambda handle: torch.save(state, handle), mode="wb")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a tnattn checkpoint of a supported format.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a tnattn checkpoint of format {FORMAT_VERSION}")
    return state

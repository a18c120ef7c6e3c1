"""Checkpoints that are atomic, verified and kept in two generations.

A checkpoint is a dict of tensors and plain containers (dict, list, tuple, str, int, float, bool,
None) only, so it loads with ``torch.load(weights_only=True)`` without unpickling arbitrary objects.

Writing ``checkpoint.pt`` (:func:`save_checkpoint`):

1. the state is serialised in memory and its SHA-256 computed;
2. the current ``checkpoint.pt`` and its checksum become ``checkpoint.prev.pt`` and
   ``checkpoint.prev.pt.sha256`` (the previous good checkpoint is kept);
3. ``checkpoint.pt.sha256`` (``sha256sum`` format, so ``sha256sum -c`` checks it by hand) and then
   ``checkpoint.pt`` are written atomically (:func:`tnattn.io.atomic_write`).

Loading (:func:`load_checkpoint`) accepts a file only if its SHA-256 equals a checksum recorded
next to it (either generation's: a process killed between the steps above leaves every file
that was completely written matched by one of them). A damaged or unreadable ``checkpoint.pt``
falls back to ``checkpoint.prev.pt`` with a :class:`~tnattn.errors.CheckpointWarning`; when neither
is intact, :class:`~tnattn.errors.CheckpointError` says so. A checkpoint written by an older tnattn
(no checksum at all) loads with a warning.

The trainer stores (see :meth:`tnattn.train.Trainer.state_dict`): format version, epoch, model and
optimiser state, every random-number-generator state, the history, the grokking/stopping state,
callback states, the config and the accumulated wall time.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from tnattn.errors import CheckpointError, CheckpointWarning
from tnattn.io import atomic_write

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_exists",
    "remove_checkpoint",
    "previous_path",
    "checksum_path",
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
]

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


def previous_path(path: str | os.PathLike) -> Path:
    """The previous generation of checkpoint ``path``: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def checksum_path(path: str | os.PathLike) -> Path:
    """The SHA-256 file of ``path``: ``checkpoint.pt`` -> ``checkpoint.pt.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _read_digest(path: Path) -> Optional[str]:
    try:
        text = checksum_path(path).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    parts = text.split()
    return parts[0].lower() if parts and len(parts[0]) == 64 else None


def save_checkpoint(path: str | os.PathLike, state: dict, *, keep_previous: bool = True) -> Path:
    """Write ``state`` atomically with ``torch.save``, with a SHA-256 file beside it.

    Parameters
    ----------
    path : path
        Destination file.
    state : dict
        Tensors and plain containers only (checked, so a bad entry fails at save time, not when
        the run is resumed).
    keep_previous : bool
        Keep the checkpoint being replaced as :func:`previous_path` (with its checksum), so that
        a damaged newest checkpoint still leaves one to resume from.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    _check_plain(state)
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    if keep_previous and path.exists():
        prev = previous_path(path)
        old_digest = _read_digest(path)
        os.replace(path, prev)
        # (Killed here, the moved file is still matched by checkpoint.pt.sha256: see load_checkpoint.)
        if old_digest is not None:
            _write_digest(prev, old_digest)
        else:  # a checkpoint from before checksums: its predecessor's checksum no longer applies
            checksum_path(prev).unlink(missing_ok=True)
    _write_digest(path, digest)
    return atomic_write(path, lambda h: h.write(payload), mode="wb")


def _write_digest(path: Path, digest: str) -> None:
    atomic_write(checksum_path(path), lambda h: h.write(f"{digest}  {path.name}\n"))


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` or its previous generation exists (intact or not)."""
    return Path(path).exists() or previous_path(path).exists()


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete both generations of checkpoint ``path`` and their checksums."""
    for p in (Path(path), previous_path(path)):
        p.unlink(missing_ok=True)
        checksum_path(p).unlink(missing_ok=True)


def _load_bytes(payload: bytes, map_location: Any, where: Path) -> dict:
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, pickle errors, EOFError...
        raise CheckpointError(f"{where} cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{where} is not a tnattn checkpoint (it has no format version)")
    if state["format"] != FORMAT_VERSION:
        from tnattn import __version__

        raise CheckpointError(
            f"{where} is a tnattn checkpoint of format {state['format']!r}; tnattn {__version__} reads format "
            f"{FORMAT_VERSION} only: resume it with the tnattn version that wrote it, or start the run again"
        )
    return state


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, fallback: bool = True) -> dict:
    """Load a verified checkpoint with ``weights_only=True``.

    Parameters
    ----------
    path : path
        The checkpoint (``checkpoint.pt``).
    map_location : optional
        As for ``torch.load``.
    fallback : bool
        When ``path`` is missing, damaged or unreadable, load the previous generation instead
        (with a :class:`~tnattn.errors.CheckpointWarning`).

    Raises
    ------
    FileNotFoundError
        If neither generation exists.
    CheckpointError
        If no existing generation matches its recorded SHA-256 and loads (the message lists why
        each was rejected).
    """
    path = Path(path)
    candidates = [path] + ([previous_path(path)] if fallback else [])
    existing = [p for p in candidates if p.exists()]
    if not existing:
        raise FileNotFoundError(f"no checkpoint at {path}")
    # A file is intact when its digest is one that a completed save recorded (either generation's).
    known = {d for d in (_read_digest(p) for p in candidates) if d is not None}
    problems = []
    for p in existing:
        try:
            payload = p.read_bytes()
        except OSError as exc:
            problems.append(f"{p.name}: {exc.strerror or exc}")
            continue
        if known and hashlib.sha256(payload).hexdigest() not in known:
            problems.append(f"{p.name}: its SHA-256 matches no recorded checksum (truncated or altered)")
            continue
        try:
            state = _load_bytes(payload, map_location, p)
        except CheckpointError as exc:
            problems.append(f"{p.name}: {exc}")
            continue
        if not known:
            warnings.warn(f"{p} has no checksum (written by an older tnattn): loaded without verification",
                          CheckpointWarning, stacklevel=2)
        if problems:
            warnings.warn(f"{path} is unusable ({'; '.join(problems)}); loaded the previous checkpoint {p} "
                          f"(epoch {state.get('epoch', '?')}) instead", CheckpointWarning, stacklevel=2)
        return state
    raise CheckpointError(f"no intact checkpoint at {path}: " + "; ".join(problems))

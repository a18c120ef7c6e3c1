"""Atomic result files: nothing half-written survives a crash.

Every writer here writes to a temporary file in the destination folder and then moves it into
place with ``os.replace``, which is atomic on POSIX filesystems: a reader sees either the old file
or the new one, never a truncated mix.
The file gets the permissions ``open()`` would give it (``0o666`` less the process umask), not
the private ``0o600`` of a temporary file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "write_json", "read_json", "to_jsonable", "result_envelope", "current_umask"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it; set it straight back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Write a file atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination. Its parent folder is created if missing.
    write : callable
        Called with an open file object (text for ``mode="w"``, binary for ``mode="wb"``).
    mode : {"w", "wb"}
        File mode of the temporary file.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, tensors, numpy values, paths and non-finite floats to JSON values.

    A dataclass becomes a dict of its fields; a config with sub-configs (fields marked
    ``metadata["flatten"]``) becomes the dict of its flat fields (:func:`tnattn._fields.flat_values`).

    Non-finite floats become ``None`` (JSON has no NaN/Infinity), so the files stay valid JSON
    for every reader.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if any(f.metadata.get("flatten") for f in dataclasses.fields(obj)):
            # A config with sub-configs is recorded flat, as its flags and config files see it.
            from tnattn._fields import flat_values

            return {k: to_jsonable(v) for k, v in flat_values(obj).items()}
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    tolist = getattr(obj, "tolist", None)  # torch.Tensor, numpy arrays and numpy scalars
    if callable(tolist):
        return to_jsonable(tolist())
    item = getattr(obj, "item", None)
    if callable(item):
        return to_jsonable(item())
    return str(obj)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Atomically write ``obj`` (after :func:`to_jsonable`) as JSON to ``path``."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    return atomic_write(path, lambda handle: handle.write(text + "\n"))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    with open(path) as handle:
        return json.load(handle)


def result_envelope(name: str, config: Any, results: Any) -> dict:
    """Wrap results with the config, library version and build that produced them.

    Every result file of tnattn carries these, so a number can always be traced back to the
    settings and code that made it; ``build`` is :func:`tnattn.build_info` (the CPU kernels'
    instruction-set path among others: float32 results differ in the last bits between paths).
    """
    from tnattn import __version__
    from tnattn.buildinfo import build_info

    return {
        "experiment": name,
        "tnattn_version": __version__,
        "build": build_info(),
        "config": to_jsonable(config),
        "results": to_jsonable(results),
    }

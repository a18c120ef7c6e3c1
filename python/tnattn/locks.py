"""Exclusive locks on run and experiment directories.

A directory in use holds the lock file ``.tnattn.lock``, locked with ``fcntl.flock``. The operating
system releases a ``flock`` when its process exits for whatever reason (including ``kill -9``), so
a lock left behind by a dead process never blocks a later resume: the file stays, the lock does
not. A second process that asks for a locked directory gets :class:`~tnattn.errors.RunLockedError`
at once (no waiting), with the holder's process id.

Inside one process the lock is re-entrant for the thread that holds it (``train`` locks the run
directory and the trainer it builds locks it again); another thread of the same process is refused
like another process. On platforms without ``fcntl`` (Windows) directories are not locked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

from tnattn.errors import RunDirectoryError, RunLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "lock_directory", "is_locked"]

LOCK_NAME = ".tnattn.lock"

# realpath -> [fd, depth, owning thread id]; guarded by _REGISTRY_LOCK.
_HELD: dict[str, list] = {}
_REGISTRY_LOCK = threading.Lock()


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""


def _acquire(directory: Path, what: str) -> str:
    if directory.exists() and not directory.is_dir():
        raise RunDirectoryError(f"{what} {directory} is a file, not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(directory)
    me = threading.get_ident()
    with _REGISTRY_LOCK:
        held = _HELD.get(key)
        if held is not None:
            if held[2] != me:
                raise RunLockedError(f"{what} {directory} is in use by another thread of this process")
            held[1] += 1
            return key
        if fcntl is None:  # pragma: no cover
            _HELD[key] = [None, 1, me]
            return key
        lock_path = Path(key) / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{what} {directory} is in use by another process{_holder(lock_path)}; wait for it to finish, "
                "or use another directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Who holds it, for the message another process gets (the lock itself is the flock).
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        _HELD[key] = [fd, 1, me]
        return key


def _release(key: str) -> None:
    with _REGISTRY_LOCK:
        held = _HELD[key]
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
        if held[0] is not None:
            os.close(held[0])  # closing the descriptor releases the flock


@contextlib.contextmanager
def lock_directory(directory: str | os.PathLike, what: str = "directory") -> Iterator[Path]:
    """Hold the exclusive lock of ``directory`` (created if missing) for the ``with`` block.

    Parameters
    ----------
    directory : path
        The run or experiment directory.
    what : str
        How the directory is named in error messages (for example ``"run directory"``).

    Raises
    ------
    RunLockedError
        Another process, or another thread of this one, holds the lock.
    RunDirectoryError
        ``directory`` names a file.
    """
    directory = Path(directory)
    key = _acquire(directory, what)
    try:
        yield directory
    finally:
        _release(key)


def is_locked(directory: str | os.PathLike) -> bool:
    """Whether some live process (this one included) holds the lock of ``directory``."""
    directory = Path(directory)
    if os.path.realpath(directory) in _HELD:
        return True
    lock_path = directory / LOCK_NAME
    if fcntl is None or not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False

"""Exceptions for input that cannot work: bad settings and run directories that refuse a request.

They all derive from :class:`UserError` (a ``ValueError``), which the ``tnattn`` command line
turns into one line on stderr and exit status 2 instead of a traceback. Library code raises the
most specific subclass, so callers can tell a bad setting from a directory that is in use.
"""

from __future__ import annotations

__all__ = [
    "UserError",
    "ConfigError",
    "RunDirectoryError",
    "RunLockedError",
    "CheckpointError",
    "CheckpointWarning",
    "DeadModelWarning",
]


class UserError(ValueError):
    """The request cannot work as given; the message says why and what to do instead."""


class ConfigError(UserError):
    """A setting (or a combination of settings) that cannot work; the message names the field."""


class RunDirectoryError(UserError):
    """A run or experiment directory refuses the request: it already holds a run (and overwriting
    was not asked for), holds no run to resume, is a file, or holds a run with other settings."""


class RunLockedError(RunDirectoryError):
    """Another live process is using the run or experiment directory (see :mod:`tnattn.locks`)."""


class CheckpointError(UserError):
    """No checkpoint in the directory passes its integrity check or loads."""


class CheckpointWarning(UserWarning):
    """A checkpoint was damaged and an older one was used, or one without a checksum was loaded."""


class DeadModelWarning(UserWarning):
    """Training stopped because the model cannot learn (contexts vanished or no gradient)."""

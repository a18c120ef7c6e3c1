"""Type and finiteness checks of config dataclass fields, from their annotations.

Every config of tnattn (``TrainConfig``, each experiment's ``Config``) calls :func:`check_fields`
first in its validation, so a value of the wrong kind, or a NaN or infinite number, is refused with
a :class:`~tnattn.errors.ConfigError` naming the field, before any range check or any work.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from tnattn.errors import ConfigError

__all__ = ["check_fields", "check_ranges", "require"]


def _ok(tp: Any, v: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(typing, "UnionType") and origin is getattr(__import__("types"), "UnionType", None)):
        return any(_ok(a, v) for a in typing.get_args(tp))
    if tp is type(None):
        return v is None
    if origin is typing.Literal:
        return v in typing.get_args(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(v, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_ok(args[0], x) for x in v)
        return len(args) == len(v) and all(_ok(a, x) for a, x in zip(args, v))
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if tp is str:
        return isinstance(v, str)
    return True  # other annotations: not checked here


def check_fields(config: Any) -> None:
    """Check every field of dataclass instance ``config`` against its annotation.

    ``int``, ``float`` (finite: no NaN or infinity), ``bool``, ``str``, ``Literal[...]``,
    ``Optional[X]`` and ``tuple[X, ...]`` annotations are checked; others are left alone.

    Raises
    ------
    ConfigError
        Naming the first field whose value does not fit, with the value.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        tp = hints.get(f.name)
        v = getattr(config, f.name)
        if tp is not None and not _ok(tp, v):
            kind = "a finite number" if tp is float else f"of type {tp.__name__ if isinstance(tp, type) else tp}"
            raise ConfigError(f"{f.name} must be {kind}, got {v!r}")


def require(cond: bool, name: str, msg: str) -> None:
    """Raise :class:`~tnattn.errors.ConfigError` ``"<name> <msg>"`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{name} {msg}")


def check_ranges(config: Any, *, positive: tuple = (), nonnegative: tuple = (), above: dict | None = None) -> None:
    """Range checks by field name: ``positive`` fields (or every entry of a tuple field) must be
    > 0, ``nonnegative`` ones >= 0, and ``above[name] = bound`` ones > bound.

    Raises
    ------
    ConfigError
        Naming the first field out of range.
    """
    def values(name):
        v = getattr(config, name)
        return list(v) if isinstance(v, (tuple, list)) else [v]

    for name in positive:
        bad = [v for v in values(name) if not v > 0]
        require(not bad, name, f"must be > 0, got {getattr(config, name)!r}")
    for name in nonnegative:
        bad = [v for v in values(name) if not v >= 0]
        require(not bad, name, f"must be >= 0, got {getattr(config, name)!r}")
    for name, bound in (above or {}).items():
        bad = [v for v in values(name) if not v > bound]
        require(not bad, name, f"must be > {bound}, got {getattr(config, name)!r}")

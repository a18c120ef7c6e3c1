"""Config dataclass fields: type and finiteness checks, and flattened sub-configs.

Every config of tnattn (``TrainConfig``, each experiment's ``Config``) calls :func:`check_fields`
first in its validation, so a value of the wrong kind, or a NaN or infinite number, is refused with
a :class:`~tnattn.errors.ConfigError` naming the field, before any range check or any work.

A config may be composed of sub-configs: a field whose ``metadata["flatten"]`` is true holds a
config dataclass whose fields stand in its place wherever a config is seen flat (command-line
flags, config files, JSON records). :func:`flat_fields` lists a config's fields that way,
:func:`flat_values` reads them and :func:`flat_replace` changes them by their flat names. Flat
names must be unique across the sub-configs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, NamedTuple

from tnattn.errors import ConfigError

__all__ = ["check_fields", "check_ranges", "require", "FlatField", "FlatAccess", "flat_init", "flat_fields", "flat_values", "flat_replace"]


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
            if typing.get_origin(tp) is typing.Literal:
                raise ConfigError(f"{f.name} must be one of {typing.get_args(tp)}, got {v!r}")
            kind = "a finite number" if tp is float else f"of type {tp.__name__ if isinstance(tp, type) else tp}"
            raise ConfigError(f"{f.name} must be {kind}, got {v!r}")


class FlatField(NamedTuple):
    """One field of a config seen flat.

    Attributes
    ----------
    field : dataclasses.Field
        The field (of the config or of one of its sub-configs).
    type : object
        Its resolved annotation.
    path : tuple of str
        Names of the flattened fields that lead to it (empty for a field of the config itself).
    group : str or None
        ``metadata["group"]`` of the nearest flattened field above it that has that key, else of
        the field itself.
    default : object
        Its default as seen from the config: for a sub-config's field, its value in the
        sub-config's default (an experiment's default TrainConfig, not TrainConfig's defaults).
    help : str
        ``metadata["help"]`` of the field, unless the flattened field above it overrides it.
    """

    field: dataclasses.Field
    type: Any
    path: tuple
    group: Any
    default: Any
    help: str


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


@functools.lru_cache(maxsize=None)
def flat_fields(cls: type) -> dict[str, FlatField]:
    """The fields of config dataclass ``cls`` by flat name, sub-configs replaced by their own
    fields, in declaration order.

    A field whose ``metadata["flatten"]`` is true holds a sub-config. Its ``metadata`` may also
    hold ``only`` (the names of the sub-config's fields to show; default all of them),
    ``help`` overrides (a dict: name -> help text) and ``group`` (heading of their flags; None:
    no heading), which replaces the groups below it.

    The result is cached per class: do not change it.

    Raises
    ------
    TypeError
        ``cls`` is not a dataclass, or two sub-configs share a field name.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"cls must be a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    out: dict[str, FlatField] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("flatten"):
            sub = flat_fields(hints[f.name])
            only = f.metadata.get("only")
            if only is not None:
                missing = sorted(set(only) - set(sub))
                if missing:
                    raise TypeError(f"{cls.__name__}.{f.name}: only names no field of it: {missing}")
                sub = {name: sub[name] for name in only}
            defaults = flat_values(_default(f)) if _default(f) is not None else {}
            helps = f.metadata.get("help") if isinstance(f.metadata.get("help"), dict) else {}
            group = (lambda v: f.metadata["group"]) if "group" in f.metadata else (lambda v: v.group)
            inner = {k: v._replace(path=(f.name,) + v.path, group=group(v),
                                   default=defaults.get(k, v.default), help=helps.get(k, v.help))
                     for k, v in sub.items()}
        else:
            inner = {f.name: FlatField(f, hints[f.name], (), f.metadata.get("group"), _default(f),
                                       f.metadata.get("help", ""))}
        for name, flat in inner.items():
            if name in out:
                raise TypeError(f"{cls.__name__}: field name {name!r} appears twice among its sub-configs")
            out[name] = flat
    return out


def flat_init(cls: type) -> type:
    """Class decorator, above ``@dataclass``: the constructor also takes the flat names of its
    sub-configs' fields (``Config(lr=0.01)`` sets ``Config().train.lr``), applied to the
    sub-config given (or its default) before the config's own checks run."""
    init = cls.__init__
    defaults = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("flatten")}

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = flat_fields(cls)
        nested: dict[str, dict[str, Any]] = {}
        for name in [k for k in kwargs if k in fields and fields[k].path]:
            nested.setdefault(fields[name].path[0], {})[name] = kwargs.pop(name)
        for sub, changes in nested.items():
            base = kwargs[sub] if sub in kwargs else _default(defaults[sub])
            kwargs[sub] = flat_replace(base, **changes)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


class FlatAccess:
    """Mixin for a config dataclass with sub-configs: their fields read by flat name
    (``config.lr`` for ``config.train.lr``); they are changed through :func:`flat_replace`."""

    def __getattr__(self, name: str) -> Any:
        # Only called when ordinary lookup fails; never for private names (unpickling looks them up
        # before the fields exist).
        if not name.startswith("_"):
            flat = flat_fields(type(self)).get(name)
            if flat is not None and flat.path:
                obj = self
                for part in flat.path:
                    obj = object.__getattribute__(obj, part)
                return getattr(obj, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        flat = None if name.startswith("_") else flat_fields(type(self)).get(name)
        if flat is not None and flat.path:
            raise AttributeError(f"{name} belongs to a sub-config of {type(self).__name__}: "
                                 f"use tnattn._fields.flat_replace(config, {name}=...)")
        object.__setattr__(self, name, value)


def flat_values(config: Any, *, init_only: bool = False) -> dict[str, Any]:
    """Flat name -> value of every field of ``config`` (see :func:`flat_fields`); with
    ``init_only``, only fields set through ``__init__``."""
    out = {}
    for name, flat in flat_fields(type(config)).items():
        if init_only and not flat.field.init:
            continue
        obj = config
        for part in flat.path:
            obj = getattr(obj, part)
        out[name] = getattr(obj, name)
    return out


def flat_replace(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` by flat names: each change goes to the sub-config that holds it.

    Raises
    ------
    TypeError
        A name that is no field of ``config`` or of its sub-configs.
    """
    fields = flat_fields(type(config))
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise TypeError(f"{type(config).__name__} has no field(s) {', '.join(unknown)}")
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in changes.items():
        path = fields[name].path
        if path:
            nested.setdefault(path[0], {})[name] = value
        else:
            direct[name] = value
    for sub, sub_changes in nested.items():
        direct[sub] = flat_replace(getattr(config, sub), **sub_changes)
    return dataclasses.replace(config, **direct)


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

"""Config files for the command line: ``--config FILE`` and ``--print-config``.

A config file is JSON (``.json``) or TOML (``.toml``, read with the standard library's
``tomllib`` on Python 3.11+, or the ``tomli`` package before). It holds the fields of the config
dataclass by name, either at the top level or under a ``"config"`` key: so the ``config.json`` of a
training run and the ``results.json`` of an experiment are config files too, and rerun the same
run. Fields left out keep their defaults; flags given on the command line override the file.

``--print-config`` prints the full config (every field) as JSON, in the form ``--config`` reads.

A config composed of sub-configs (:func:`tnattn._fields.flat_fields`) is written flat, one key per
field of its sub-configs; a file may give a sub-config's fields flat or nested under the
sub-config's name (``{"model": {"D": 8}}``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

from tnattn._fields import flat_fields, flat_values

__all__ = ["read_config_file", "config_from_mapping", "config_to_json"]


def _toml_loads(text: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ValueError("TOML config files need Python 3.11+ or the tomli package; use JSON") from None
    return tomllib.loads(text)


def read_config_file(path: str | os.PathLike) -> dict:
    """The field values stored in a JSON or TOML config file.

    Parameters
    ----------
    path : path
        ``.json`` or ``.toml`` file; a mapping of field names to values, at the top level or under
        ``"config"`` (the envelope of a run's ``config.json`` or an experiment's ``results.json``).

    Returns
    -------
    dict
        Field name -> value, as stored.

    Raises
    ------
    ValueError
        If the file is missing, unreadable, of another format, or not a mapping; the message names
        the file.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ValueError(f"config file {p}: expected a .json or .toml file")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"config file {p}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(text) if suffix == ".json" else _toml_loads(text)
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise ValueError(f"config file {p}: not valid {suffix[1:].upper()}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"config file {p}: expected a mapping of config fields, got {type(data).__name__}")
    return data


def _check_value(name: str, tp: Any, value: Any, source: str) -> Any:
    """``value`` as field type ``tp`` (lists become tuples), or a ValueError naming the field."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    union_types = (typing.Union,) + ((types.UnionType,) if hasattr(types, "UnionType") else ())
    if origin in union_types:
        inner = [a for a in args if a is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        if len(inner) == 1:
            return _check_value(name, inner[0], value, source)
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{source}: {name} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: {name} must be a list, got {value!r}")
        return tuple(_check_value(f"{name}[{i}]", args[0], v, source) for i, v in enumerate(value))
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }.get(tp)
    if ok is None:
        return value  # a type the CLI does not know: the dataclass checks it
    if not ok(value):
        raise ValueError(f"{source}: {name} must be {tp.__name__}, got {value!r}")
    return float(value) if tp is float else value


def config_from_mapping(cls: type, data: dict, *, source: str = "config") -> dict:
    """Check ``data`` against the fields of dataclass ``cls``; return the keyword arguments.

    Parameters
    ----------
    cls : type
        The config dataclass.
    data : dict
        Field name -> value (as read by :func:`read_config_file`).
    source : str
        Where the values came from, for error messages.

    Returns
    -------
    dict
        Flat field name -> value with lists turned into tuples, ready for
        :func:`tnattn._fields.flat_replace` (or the config's constructor).

    Raises
    ------
    ValueError
        For unknown field names or values of the wrong type, naming the field.
    """
    fields = {name: flat for name, flat in flat_fields(cls).items() if flat.field.init}
    sections = {f.name for f in dataclasses.fields(cls) if f.metadata.get("flatten")}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        # A sub-config given nested: its keys are flat names like any other.
        flat.update(value if key in sections and isinstance(value, dict) else {key: value})
    unknown = sorted(set(flat) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)} (not in {cls.__name__})")
    return {k: _check_value(k, fields[k].type, v, source) for k, v in flat.items()}


def config_to_json(config: Any) -> str:
    """Every field of the config dataclass ``config`` as indented JSON (tuples as lists)."""
    values = flat_values(config, init_only=True)
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}, indent=2)

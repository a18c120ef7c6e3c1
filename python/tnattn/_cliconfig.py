"""Turn a config dataclass into ``argparse`` flags and back.

The CLI only parses flags into configs; this module is the one place that knows how. Every
dataclass field becomes one ``--flag`` (underscores become dashes), documented by the field's
``metadata["help"]`` and its default:

- ``bool`` fields become a ``--x / --no-x`` pair;
- ``tuple[int, ...]`` / ``tuple[float, ...]`` / ``tuple[str, ...]`` fields take a comma-separated
  list (``--test-lengths 1000,100``; an empty string is the empty tuple);
- ``Optional[X]`` (``X | None``) fields also accept ``none``;
- ``metadata["choices"]`` (or a ``Literal[...]`` type) restricts the accepted values;
- ``metadata["parse"]`` (a function of the flag's text) replaces the parser the type implies;
- a sub-config field (``metadata["flatten"]``, see :func:`tnattn._fields.flat_fields`) adds the
  flags of its own fields under their own names.

Flags default to "not given" (``argparse.SUPPRESS``), so :func:`config_from_namespace` can apply
exactly the flags the user typed on top of any base config (the dataclass defaults, a preset, or a
saved run's config).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable

from tnattn._fields import flat_fields, flat_replace

__all__ = [
    "add_config_arguments",
    "config_from_namespace",
    "flag_name",
    "parse_value",
    "ArgumentParser",
    "one_line",
    "flag_message",
]


def flag_message(message: object, cls: type) -> str:
    """A config error message for the command line: :func:`one_line`, and field names of
    dataclass ``cls`` that start the message or a clause (``"lr must be ..."``,
    ``"...; out: ..."``) become their flags (``"--lr must be ..."``)."""
    import re

    names = set(flat_fields(cls))
    text = one_line(message)
    return re.sub(r"(^|; |and )([a-zA-Z_][a-zA-Z0-9_]*)\b",
                  lambda m: m.group(1) + (flag_name(m.group(2)) if m.group(2) in names else m.group(2)), text)


def one_line(message: object) -> str:
    """``message`` as a single line (line breaks become ``"; "``), for CLI error messages."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose usage errors are one line on stderr and exit status 2.

    ``argparse`` prints the whole usage block before the error; for a command with dozens of
    flags that buries the one line that matters, so this prints only
    ``PROG: error: MESSAGE (see PROG --help)``. Subparsers made with ``add_subparsers`` inherit it.
    """

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def flag_name(field_name: str) -> str:
    """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    origin = typing.get_origin(tp)
    union_types = (typing.Union,) + ((types.UnionType,) if hasattr(types, "UnionType") else ())
    if origin in union_types:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
        raise TypeError(f"unsupported union type {tp!r}: only Optional[X] is supported")
    return tp, False


def _scalar_parser(tp: Any) -> Callable[[str], Any]:
    if typing.get_origin(tp) is typing.Literal:
        kinds = {type(a) for a in typing.get_args(tp)}
        if len(kinds) != 1:
            raise TypeError(f"Literal fields must have values of one type, got {tp!r}")
        return _scalar_parser(kinds.pop())
    if tp is int:
        return int
    if tp is float:
        return float
    if tp is str:
        return str
    raise TypeError(f"unsupported config field type {tp!r}")


def parse_value(tp: Any, text: str) -> Any:
    """Parse one command-line string as a value of the (resolved) field type ``tp``.

    Raises
    ------
    argparse.ArgumentTypeError
        If the text does not parse; argparse turns this into a clean usage error.
    """
    inner, optional = _unwrap_optional(tp)
    if optional and text.strip().lower() == "none":
        return None
    try:
        if typing.get_origin(inner) is tuple:
            args = typing.get_args(inner)
            if len(args) != 2 or args[1] is not Ellipsis:
                raise TypeError(f"only variable-length tuple[X, ...] fields are supported, got {inner!r}")
            item = _scalar_parser(args[0])
            parts = [p.strip() for p in text.split(",")]
            return tuple(item(p) for p in parts if p)
        return _scalar_parser(inner)(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: {exc}") from None


def _format_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else '""'
    return str(value)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = ()) -> None:
    """Add one flag per field of dataclass ``cls`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Parser (or argument group) to extend.
    cls : type
        A dataclass; its fields' ``metadata`` may hold ``help`` (str), ``choices`` (sequence),
        ``group`` (str: the heading the flag is listed under in ``--help``) and ``parse`` (str ->
        value, raising ``argparse.ArgumentTypeError`` for bad text).
    exclude : tuple of str
        Field names to leave out.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls must be a dataclass, got {cls!r}")
    groups: dict[str, Any] = {}
    for flat in flat_fields(cls).values():
        f = flat.field
        if f.name in exclude or not f.init:
            continue
        target = parser
        group_name = flat.group
        if group_name:
            if group_name not in groups:
                groups[group_name] = parser.add_argument_group(group_name)
            target = groups[group_name]
        tp = flat.type
        help_text = flat.help
        default = flat.default
        inner, optional = _unwrap_optional(tp)
        flag = flag_name(f.name)
        if inner is bool:
            target.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{help_text} (default: {'on' if default else 'off'})",
            )
            continue
        if typing.get_origin(inner) is tuple:
            metavar = "A,B,..."
        else:
            metavar = {int: "N", float: "X", str: "S"}.get(inner, "V")  # Literal: replaced below
            if optional:
                metavar += "|none"
        choices = f.metadata.get("choices")
        if choices is None and typing.get_origin(inner) is typing.Literal:
            choices = typing.get_args(inner)
        if choices is not None:
            metavar = "{" + ",".join(str(c) for c in choices) + "}"
        parse = f.metadata.get("parse") or (lambda text, _tp=tp: parse_value(_tp, text))
        target.add_argument(
            flag,
            dest=f.name,
            type=parse,
            choices=choices,
            metavar=metavar,
            default=argparse.SUPPRESS,
            help=f"{help_text} (default: {_format_default(default)})",
        )


def config_from_namespace(cls: type, namespace: argparse.Namespace, base: Any = None) -> Any:
    """Build a ``cls`` instance from the flags present in ``namespace``.

    Parameters
    ----------
    cls : type
        The dataclass whose fields were added by :func:`add_config_arguments`.
    namespace : argparse.Namespace
        Parsed arguments; only attributes named like fields of ``cls`` are used, so a namespace
        shared with other arguments is fine.
    base : cls instance, optional
        Values for the fields not given on the command line; defaults to ``cls()``. Flags of a
        sub-config's fields change that sub-config (:func:`tnattn._fields.flat_replace`).

    Raises
    ------
    ValueError
        From the dataclass's own validation (``tnattn.errors.ConfigError`` for tnattn's configs).
    """
    names = {name for name, flat in flat_fields(cls).items() if flat.field.init}
    given = {k: v for k, v in vars(namespace).items() if k in names}
    if base is None:
        base = cls()
    if not isinstance(base, cls):
        raise TypeError(f"base must be a {cls.__name__}, got {type(base).__name__}")
    return flat_replace(base, **given)

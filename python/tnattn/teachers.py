"""The teacher registry: how a training config names its teacher rule, and how it is built.

A config's teacher settings (``rule``, ``rule_steps``, ``random_k``, ``alphabet``, ``rule_seed``,
``rule_table``, ``boundary``: the fields of :class:`tnattn.train.config.TrainConfig`'s teacher
group) select one *kind* of teacher by :func:`teacher_kind`:

``"table"``
    a custom truth table (``rule_table`` non-empty), :func:`tnattn.rules.from_truth_table`;
``"random"``
    a random K-local rule (``random_k > 0``), :func:`tnattn.rules.random_rule`;
``"elementary"``
    an elementary cellular automaton by Wolfram number (``rule``), :func:`tnattn.rules.elementary`.

Each kind is a :class:`TeacherKind` in :data:`TEACHERS`: its builder, its ``(K, d)`` shape (known
without building the rule, for validation), and the words that name it in run directories and
plot titles. ``rule_steps > 1`` iterates whatever rule the kind builds. Every place that needs to
know about teachers (building a run, validating a config, naming a run directory, titling a plot)
goes through this registry, so a new kind is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tnattn.errors import ConfigError
from tnattn.rules import elementary, from_truth_table, random_rule

__all__ = ["TeacherKind", "TEACHERS", "register_teacher", "get_teacher", "teacher_kind", "build_teacher",
           "teacher_shape", "table_radius", "teacher_label", "teacher_title"]


@dataclass(frozen=True)
class TeacherKind:
    """One kind of teacher rule.

    Attributes
    ----------
    name : str
        Registry key.
    build : callable
        ``build(config) -> LocalRule``: the one-step rule (``rule_steps`` is applied by
        :func:`build_teacher`).
    shape : callable
        ``shape(config) -> (K, d)``: radius and alphabet of the one-step rule, computed without
        building it.
    label : callable
        ``label(config) -> str``: the teacher's part of a default run-directory name.
    title : callable
        ``title(config) -> str``: the teacher's description in plot titles.
    check : callable, optional
        ``check(config)``: raise :class:`~tnattn.errors.ConfigError` for settings this kind
        cannot build (called by the config's validation).
    """

    name: str
    build: Callable[[Any], Any]
    shape: Callable[[Any], tuple[int, int]]
    label: Callable[[Any], str]
    title: Callable[[Any], str]
    check: Callable[[Any], None] | None = None


#: Registered teacher kinds by name.
TEACHERS: dict[str, TeacherKind] = {}


def register_teacher(kind: TeacherKind) -> TeacherKind:
    """Add ``kind`` to :data:`TEACHERS` (replacing a kind of the same name); returns it."""
    if not isinstance(kind, TeacherKind):
        raise TypeError(f"kind must be a TeacherKind, got {type(kind).__name__}")
    TEACHERS[kind.name] = kind
    return kind


def get_teacher(name: str) -> TeacherKind:
    """The registered teacher kind ``name``.

    Raises
    ------
    ConfigError
        ``name`` is not registered; the message lists the registered names.
    """
    try:
        return TEACHERS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"teacher: unknown teacher kind {name!r}; registered kinds: {', '.join(sorted(TEACHERS))}"
        ) from None


def teacher_kind(config) -> str:
    """The name of the teacher kind ``config`` selects: a rule table wins over a random rule, which
    wins over the elementary rule number (the precedence the CLI documents)."""
    if config.rule_table:
        return "table"
    if config.random_k > 0:
        return "random"
    return "elementary"


def _kind(config) -> TeacherKind:
    return get_teacher(teacher_kind(config))


def table_radius(n: int, d: int) -> int | None:
    """The radius K with ``d**(2K+1) == n`` (a truth table of ``n`` entries over alphabet ``d``),
    or None when ``n`` is no such power."""
    K = 0
    while d ** (2 * K + 1) < n:
        K += 1
    return K if d ** (2 * K + 1) == n else None


def build_teacher(config):
    """The teacher rule of ``config``: its kind's one-step rule, iterated ``rule_steps`` times.

    Raises
    ------
    ConfigError
        The config's rule table has the wrong length (a ``ValueError``), or its kind is unknown.
    """
    base = _kind(config).build(config)
    return base if config.rule_steps == 1 else base.iterate(config.rule_steps)


def teacher_shape(config) -> tuple[int, int]:
    """``(K, d)`` of the teacher ``config`` describes, computed without building it: ``K`` is the
    radius of the (iterated) rule's window, ``d`` its input alphabet."""
    K, d = _kind(config).shape(config)
    return K * config.rule_steps, d


def teacher_label(config) -> str:
    """The teacher's part of a run-directory name (``rule30``, ``random-K2-d3-s0``, ``table``;
    ``x<steps>`` appended for an iterated rule)."""
    name = _kind(config).label(config)
    return name + (f"x{config.rule_steps}" if config.rule_steps > 1 else "")


def teacher_title(config) -> str:
    """The teacher as plot titles describe it (``rule 30 applied 2x``)."""
    title = _kind(config).title(config)
    return title + (f" applied {config.rule_steps}x" if config.rule_steps > 1 else "")


# --- the three built-in kinds ------------------------------------------------------------------
def _table_shape(config) -> tuple[int, int]:
    K = table_radius(len(config.rule_table), config.alphabet)
    if K is None:
        raise ConfigError(
            f"rule_table must have d**(2K+1) entries for alphabet d={config.alphabet}; "
            f"got {len(config.rule_table)} entries"
        )
    return K, config.alphabet


def _check_table(config) -> None:
    d, n = config.alphabet, len(config.rule_table)
    if table_radius(n, d) is None:
        raise ConfigError(f"rule_table must have d**(2K+1) entries for alphabet d={d} "
                          f"({', '.join(str(d ** (2 * k + 1)) for k in range(3))}, ...), got {n}")
    if min(config.rule_table) < 0:
        raise ConfigError(f"rule_table entries must be >= 0, got {min(config.rule_table)}")
    if config.rule_steps > 1 and max(config.rule_table) >= d:
        raise ConfigError(f"rule_table entries must be < alphabet ({d}) to apply the rule {config.rule_steps} "
                          f"times, got {max(config.rule_table)}")


register_teacher(TeacherKind(
    name="table",
    build=lambda c: from_truth_table(list(c.rule_table), K=_table_shape(c)[0], d=c.alphabet, boundary=c.boundary),
    shape=_table_shape,
    label=lambda c: "table",
    title=lambda c: "custom rule",
    check=_check_table,
))
register_teacher(TeacherKind(
    name="random",
    build=lambda c: random_rule(c.random_k, c.alphabet, seed=c.rule_seed, boundary=c.boundary),
    shape=lambda c: (c.random_k, c.alphabet),
    label=lambda c: f"random-K{c.random_k}-d{c.alphabet}-s{c.rule_seed}",
    title=lambda c: f"random K={c.random_k} rule (d={c.alphabet})",
))
register_teacher(TeacherKind(
    name="elementary",
    build=lambda c: elementary(c.rule, c.boundary),
    shape=lambda c: (1, 2),
    label=lambda c: f"rule{c.rule}",
    title=lambda c: f"rule {c.rule}",
))

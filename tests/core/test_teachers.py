"""The teacher registry (tnattn.teachers): one place that maps a config's teacher settings to a rule."""

from __future__ import annotations

import pytest
import torch

from tnattn.data import all_sequences
from tnattn.errors import ConfigError
from tnattn.rules import elementary, random_rule
from tnattn.teachers import (
    TEACHERS,
    TeacherKind,
    build_teacher,
    get_teacher,
    register_teacher,
    teacher_kind,
    teacher_label,
    teacher_shape,
    teacher_title,
)
from tnattn.train.config import TrainConfig
from tnattn.train.run import default_run_dir

RULE30 = tuple((30 >> k) & 1 for k in range(8))


@pytest.mark.parametrize(
    "fields, kind",
    [({}, "elementary"), ({"random_k": 2, "alphabet": 3}, "random"), ({"rule_table": RULE30}, "table"),
     # a table wins over random_k (the documented precedence)
     ({"rule_table": RULE30, "random_k": 1}, "table")],
)
def test_config_selects_a_registered_kind(fields, kind):
    assert teacher_kind(TrainConfig(**fields)) == kind
    assert get_teacher(kind) is TEACHERS[kind]


def test_unknown_kind_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"unknown teacher kind 'ca'.*elementary, random, table"):
        get_teacher("ca")


def test_builders_match_the_rules_module():
    x = all_sequences(7)
    assert torch.equal(build_teacher(TrainConfig(rule=110))(x), elementary(110)(x))
    assert torch.equal(build_teacher(TrainConfig(rule_table=RULE30))(x), elementary(30)(x))
    twice = build_teacher(TrainConfig(rule=30, rule_steps=2))
    assert torch.equal(twice(x), elementary(30)(elementary(30)(x)))
    x3 = torch.randint(0, 3, (20, 9), generator=torch.Generator().manual_seed(0))
    r = build_teacher(TrainConfig(random_k=1, alphabet=3, rule_seed=4, boundary="periodic"))
    assert torch.equal(r(x3), random_rule(1, 3, seed=4, boundary="periodic")(x3))


@pytest.mark.parametrize(
    "fields, shape",
    [({}, (1, 2)), ({"rule_steps": 3}, (3, 2)), ({"random_k": 2, "alphabet": 3}, (2, 3)),
     ({"rule_table": tuple(range(3)) * 9, "alphabet": 3}, (1, 3)), ({"rule_table": (0, 1) * 16}, (2, 2))],
)
def test_shape_is_known_without_building(fields, shape):
    config = TrainConfig(**fields)
    assert teacher_shape(config) == shape
    built = build_teacher(config)
    assert (built.K, built.d) == shape


def test_names_and_titles():
    assert teacher_label(TrainConfig(rule=110, rule_steps=2)) == "rule110x2"
    assert teacher_label(TrainConfig(random_k=2, alphabet=3, rule_seed=5)) == "random-K2-d3-s5"
    assert teacher_label(TrainConfig(rule_table=RULE30)) == "table"
    assert teacher_title(TrainConfig(rule=30, rule_steps=2)) == "rule 30 applied 2x"
    assert teacher_title(TrainConfig(random_k=1, alphabet=3)) == "random K=1 rule (d=3)"
    assert teacher_title(TrainConfig(rule_table=RULE30)) == "custom rule"
    assert default_run_dir(TrainConfig(rule=54, D=5, seed=7)).name.startswith("rule54-D5-seed7-")


def test_bad_table_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"rule_table must have d\*\*\(2K\+1\) entries.*got 3"):
        TrainConfig(rule_table=(0, 1, 1))
    with pytest.raises(ConfigError, match="rule_table entries must be < alphabet"):
        TrainConfig(rule_table=(0, 1, 2, 0, 1, 0, 0, 1), rule_steps=2)


def test_a_registered_kind_is_used_everywhere(monkeypatch):
    # Replace the elementary kind by one that builds rule 90 whatever the number says: building,
    # shapes, names and titles all follow the registry.
    monkeypatch.setitem(TEACHERS, "elementary", TEACHERS["elementary"])
    register_teacher(TeacherKind(name="elementary", build=lambda c: elementary(90, c.boundary),
                                 shape=lambda c: (1, 2), label=lambda c: "always90", title=lambda c: "rule 90"))
    config = TrainConfig(rule=30)
    x = all_sequences(6)
    assert torch.equal(build_teacher(config)(x), elementary(90)(x))
    assert teacher_label(config) == "always90"
    with pytest.raises(TypeError, match="TeacherKind"):
        register_teacher("elementary")

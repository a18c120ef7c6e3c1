"""TrainConfig composed of sub-configs: built flat or nested, seen flat by the CLI and by files."""

from __future__ import annotations

import dataclasses
import json
import pickle
import typing
from pathlib import Path

import pytest

from tnattn import cli
from tnattn._fields import flat_fields, flat_replace
from tnattn.errors import ConfigError
from tnattn.train import losses, penalties
from tnattn.train.config import (
    LOSSES,
    SCHEDULES,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TeacherConfig,
    TrainConfig,
)

OLD_CONFIG = Path(__file__).resolve().parents[1] / "data" / "run_v0.1.0" / "config.json"
SECTIONS = {"teacher": TeacherConfig, "data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}


def test_built_from_sub_configs_flat_names_or_both():
    config = TrainConfig(model=ModelConfig(D=8, shared=False), lr=1e-3, seed=2)
    assert (config.model.D, config.model.shared, config.optim.lr, config.run.seed) == (8, False, 1e-3, 2)
    # flat names read through to the sub-config that holds them
    assert (config.D, config.shared, config.lr, config.seed) == (8, False, 1e-3, 2)
    # a flat name overrides the sub-config it belongs to
    assert TrainConfig(model=ModelConfig(D=8), D=3).D == 3
    assert TrainConfig(D=8, lr=1e-3, seed=2, shared=False) == config


def test_every_flat_field_has_one_owner_and_the_old_file_order():
    old = json.loads(OLD_CONFIG.read_text())["config"]
    owners = {name: flat.path for name, flat in flat_fields(TrainConfig).items()}
    assert list(owners) == list(old)  # same keys, same order as before the sub-configs
    for name, path in owners.items():
        assert len(path) == 1 and name in {f.name for f in dataclasses.fields(SECTIONS[path[0]])}
    assert list(TrainConfig().to_dict()) == list(old)


def test_bad_keywords_and_sections_are_type_errors():
    with pytest.raises(TypeError, match="unknown field.*bond"):
        TrainConfig(bond=3)
    with pytest.raises(TypeError, match="model must be a ModelConfig, got OptimConfig"):
        TrainConfig(model=OptimConfig())


def test_frozen_and_replaceable_by_flat_names():
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.optim = OptimConfig(lr=1.0)
    with pytest.raises(AttributeError):
        config.lr = 1.0
    a = dataclasses.replace(config, lr=0.1, out="x")
    b = flat_replace(config, lr=0.1, out="x")
    assert a == b and a.optim.lr == 0.1 and a.run.out == "x" and a.model == config.model
    assert pickle.loads(pickle.dumps(a)) == a and hash(a) == hash(b)


def test_sub_configs_check_their_own_fields():
    with pytest.raises(ConfigError, match="^lr must be > 0"):
        OptimConfig(lr=0.0)
    with pytest.raises(ConfigError, match="^crop_min must be <= min"):
        DataConfig(crop_min=9)
    with pytest.raises(ConfigError, match="^rule must be in"):
        TeacherConfig(rule=256)
    with pytest.raises(ConfigError, match="^resume and overwrite contradict"):
        RunConfig(resume=True, overwrite=True)


def test_checks_across_sub_configs():
    # exact contexts need D >= 2 d^K (model against teacher)
    with pytest.raises(ConfigError, match=r"^D must be >= 4 for exact contexts of a K=1, d=2"):
        TrainConfig(exact=True, D=3)
    assert TrainConfig(exact=True, D=4).exact
    # all strings of a long length over the teacher's alphabet (data against teacher)
    with pytest.raises(ConfigError, match="^train_length 17 with train_size 0.*3\\*\\*17"):
        TrainConfig(random_k=1, alphabet=3, train_length=17, crop_max=17)


CHOICE_FIELDS = [name for name, flat in flat_fields(TrainConfig).items()
                 if typing.get_origin(flat.type) is typing.Literal]


def test_choices_are_declared_once():
    assert len(CHOICE_FIELDS) == 13
    assert LOSSES is losses.LOSSES and SCHEDULES is penalties.SCHEDULES
    assert typing.get_args(flat_fields(TrainConfig)["loss"].type) == ("mse", "hinge", "logistic", "ce")


@pytest.mark.parametrize("name", CHOICE_FIELDS)
def test_each_choice_is_checked_in_python_and_on_the_command_line(name, capsys):
    allowed = typing.get_args(flat_fields(TrainConfig)[name].type)
    with pytest.raises(ConfigError, match=f"^{name} must be one of"):
        TrainConfig(**{name: "no-such-choice"})
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--" + name.replace("_", "-"), "no-such-choice"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and all(repr(a) in err or str(a) in err for a in allowed)


def test_nested_dicts_and_files_load_like_flat_ones(tmp_path, capsys):
    nested = {"model": {"D": 5}, "optim": {"lr": 0.01}, "seed": 4}
    want = TrainConfig(D=5, lr=0.01, seed=4)
    assert TrainConfig.from_dict(nested) == want
    with pytest.raises(ValueError, match="unknown TrainConfig fields: \\['bond'\\]"):
        TrainConfig.from_dict({"model": {"bond": 5}})
    path = tmp_path / "nested.json"
    path.write_text(json.dumps(nested))
    assert cli.main(["train", "--config", str(path), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == want.to_dict()


def test_old_flat_file_loads_to_the_same_config():
    old = json.loads(OLD_CONFIG.read_text())["config"]
    config = TrainConfig.from_dict(old)
    assert config.to_dict() == old

"""Experiment configs hold a TrainConfig: same flags, same JSON, built flat or from a TrainConfig."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from tnattn._cliconfig import add_config_arguments
from tnattn._fields import flat_replace
from tnattn.experiments import scenario_a
from tnattn.io import to_jsonable
from tnattn.train.config import TrainConfig

# The flags of `tnattn experiment scenario-a` before its Config held a TrainConfig (written out by
# hand from that version's --help): none may go missing or appear.
SCENARIO_A_FLAGS = {
    "out", "D_values", "regularisers", "l1", "l2", "members", "seed", "max_epochs", "stop_after_grok", "rule",
    "rule_steps", "lr", "batch_size", "train_length", "crop_min", "crop_max", "test_lengths", "test_size",
    "eval_every", "deff_probe", "deff_before", "deff_after", "nu_window", "max_error", "span_quantile",
    "t_eps_estimate", "n_boot", "shared_data", "dtype", "device", "checkpoint_every", "resume", "progress", "logger",
}  # fmt: skip


def _flags(cls) -> set[str]:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return {a.dest for a in parser._actions if a.dest != "help"}


def test_scenario_a_flags_and_record_are_unchanged():
    assert _flags(scenario_a.Config) == SCENARIO_A_FLAGS
    record = to_jsonable(scenario_a.Config())
    assert set(record) == SCENARIO_A_FLAGS
    # the defaults the experiment documents (not TrainConfig's)
    assert (record["batch_size"], record["train_length"], record["test_lengths"], record["test_size"]) == (
        128, 10, [100], 100)
    assert (record["max_epochs"], record["stop_after_grok"], record["eval_every"], record["deff_probe"]) == (
        7000, 50, 1, 64)


def test_scenario_a_config_holds_a_train_config():
    config = scenario_a.Config(members=2, lr=0.01, test_lengths=[20], max_epochs=12)
    assert isinstance(config.train, TrainConfig)
    assert (config.lr, config.train.lr, config.test_lengths, config.max_epochs) == (0.01, 0.01, (20,), 12)
    per_D = scenario_a.train_config(config, 4)
    assert per_D == dataclasses.replace(config.train, D=4, device="cpu")
    # settings the experiment fixes come from its TrainConfig, not from TrainConfig's defaults
    assert (per_D.l1, per_D.l2, per_D.plots, per_D.loss, per_D.train_size) == (0.0, 0.0, False, "mse", 0)
    # a whole TrainConfig may be given, with flat names on top
    given = scenario_a.Config(train=dataclasses.replace(scenario_a.TRAIN, loss="hinge"), lr=0.02)
    assert (given.train.loss, given.lr, given.batch_size) == ("hinge", 0.02, 128)
    assert flat_replace(config, lr=0.03).train.lr == 0.03 and config.lr == 0.01
    assert dataclasses.replace(config, lr=0.04).lr == 0.04


def test_scenario_a_sub_config_fields_are_not_set_by_assignment():
    config = scenario_a.Config()
    with pytest.raises(AttributeError, match="flat_replace"):
        config.lr = 0.1
    config.members = 7  # its own fields stay plain attributes
    assert config.members == 7 and config.lr == 0.005


def test_scenario_a_training_settings_are_checked_by_train_config():
    from tnattn.errors import ConfigError

    with pytest.raises(ConfigError, match="^crop_min must be <= min"):
        scenario_a.Config(crop_min=9, crop_max=5)
    with pytest.raises(ConfigError, match="^logger must be one of"):
        scenario_a.Config(logger="print")
    with pytest.raises(TypeError, match="unexpected keyword argument 'loss'"):
        scenario_a.Config(loss="hinge")  # held by train, but not one of the experiment's settings


STRUCTURE_FLAGS = {
    "mode", "out", "seed", "D", "rule", "l1", "lr", "epochs", "test_length", "test_size", "eval_every", "workers",
    "progress", "merge", "tolerance", "snapshot_every", "dense_until", "after_spike", "probe_sequences",
    "probe_length", "times", "frames", "fps", "projection", "color_by", "seeds", "settings", "l1_early",
    "schedule_epochs", "schedule_factor", "guard_lookback",
}  # fmt: skip


def test_structure_config_holds_a_train_config_with_the_same_flags():
    from tnattn.experiments import structure

    assert _flags(structure.Config) == STRUCTURE_FLAGS
    assert set(to_jsonable(structure.Config())) == STRUCTURE_FLAGS
    config = structure.Config(mode="compare", D=4, lr=0.01, test_length=50, eval_every=2)
    base = structure._base_config(config)
    assert (base.D, base.lr, base.eval_every, base.test_lengths, base.max_epochs) == (4, 0.01, 2, (50,), 1000)
    # the experiment's fixed settings live in its TrainConfig
    assert (base.stop_after_grok, base.threads, base.plots, base.progress) == (-1, 1, False, False)
    # `progress` is the experiment's own flag (its progress display), not the runs'
    assert structure.Config(progress=True).train.progress is False

"""The ``tnattn`` command line: help, train, presets, resume, experiment dispatch, bench stub."""

import importlib
import argparse
import dataclasses
import subprocess
import sys
import types
from dataclasses import dataclass, field

import pytest

from tnattn import cli
from tnattn._cliconfig import add_config_arguments, config_from_namespace, parse_value
from tnattn.io import read_json
from tnattn.train import TrainConfig, read_history_csv
from tnattn.train.config import preset

TINY_FLAGS = ["--D", "4", "--train-length", "6", "--crop-min", "3", "--crop-max", "6", "--batch-size", "16",
              "--test-lengths", "30,9", "--test-size", "20", "--backend", "reference", "--no-progress",
              "--eval-every", "2"]


def test_console_help_runs_in_a_fresh_process():
    res = subprocess.run([sys.executable, "-m", "tnattn.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for sub in ("train", "experiment", "bench"):
        assert sub in res.stdout


def test_train_help_documents_every_config_field(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    config = TrainConfig()  # its sub-configs' fields are the flags
    fields = [f for part in dataclasses.fields(config) for f in dataclasses.fields(getattr(config, part.name))]
    assert len(fields) == len(config.to_dict()) and "lr" in {f.name for f in fields}
    for f in fields:
        assert "--" + f.name.replace("_", "-") in text, f.name
        assert f.metadata["help"].split()[0] in text, f.name
    assert "--no-progress" in text and "--preset" in text


def test_train_runs_a_tiny_config_and_reports_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", *TINY_FLAGS, "--max-epochs", "3", "--seed", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert f"run directory: {out}" in text and "summary.json" in text and "training.png" in text
    saved = TrainConfig.from_dict(read_json(out / "config.json")["config"])
    assert saved.D == 4 and saved.seed == 2 and saved.test_lengths == (30, 9) and saved.progress is False
    assert len(read_history_csv(out / "history.csv")) == 3


def test_train_resume_uses_the_saved_config(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY_FLAGS, "--max-epochs", "2", "--lr", "0.02", "--out", str(out)]) == 0
    # Only --max-epochs is given: the saved config (lr 0.02, D 4, ...) is continued.
    assert cli.main(["train", "--resume", "--out", str(out), "--max-epochs", "4", "--no-progress"]) == 0
    assert [r["epoch"] for r in read_history_csv(out / "history.csv")] == [1, 2, 3, 4]
    assert read_json(out / "config.json")["config"]["lr"] == 0.02


def test_author_example_preset_matches_the_published_run():
    parser = cli.build_parser()
    ns = parser.parse_args(["train", "--preset", "author-example", "--seed", "5"])
    cfg = cli._train_config(ns, parser)
    # The issue: rule 30 applied twice, D = 40, batch 128, crops 6-10 of all 1024 length-10 strings,
    # Adam 0.005, up to 7000 epochs; open boundaries (the paper's code); tests at lengths 1000 and 100.
    assert (cfg.rule, cfg.rule_steps, cfg.boundary, cfg.D, cfg.batch_size) == (30, 2, "open", 40, 128)
    assert (cfg.train_length, cfg.train_size, cfg.crop_min, cfg.crop_max) == (10, 0, 6, 10)
    assert (cfg.optimizer, cfg.lr, cfg.max_epochs) == ("adam", 0.005, 7000)
    assert cfg.test_lengths == (1000, 100) and cfg.test_size == 1000
    assert cfg.seed == 5 and cfg == preset("author-example", seed=5)


def test_bad_flag_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--D", "zero"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--D", "0"])
    assert exc.value.code == 2
    assert "D must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--loss", "l3"])
    assert exc.value.code == 2


def test_experiment_unknown_name_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["experiment", "no-such-experiment"])
    assert exc.value.code == 2
    assert "unknown experiment 'no-such-experiment'" in capsys.readouterr().err


@dataclass
class _DemoConfig:
    n: int = field(default=3, metadata={"help": "a count"})
    flag: bool = field(default=True, metadata={"help": "a switch"})
    sizes: tuple[int, ...] = field(default=(1, 2), metadata={"help": "some sizes"})
    scale: float = field(default=0.5, metadata={"help": "a scale"})
    out: str = field(default="", metadata={"help": "output folder"})


def test_experiment_dispatches_flags_into_the_experiment_config(monkeypatch, capsys):
    seen = []
    module = types.ModuleType("tnattn_test_demo_experiment")
    module.__doc__ = "A demo experiment."
    module.Config = _DemoConfig
    module.run = lambda config: seen.append(config) or {}
    monkeypatch.setitem(sys.modules, module.__name__, module)
    from tnattn import experiments

    monkeypatch.setitem(experiments.EXPERIMENTS, "demo", module.__name__)
    assert cli.main(["experiment", "demo", "--n", "7", "--no-flag", "--sizes", "4,5,6"]) == 0
    assert seen == [_DemoConfig(n=7, flag=False, sizes=(4, 5, 6), scale=0.5)]
    with pytest.raises(SystemExit) as exc:
        cli.main(["experiment", "demo", "--help"])
    assert exc.value.code == 0
    assert "--no-flag" in capsys.readouterr().out


def test_bench_flags_are_built_like_the_other_commands(monkeypatch, capsys):
    # `tnattn bench` is a subcommand whose flags come from BenchConfig's fields (a leading flag
    # included); the config it runs is the one those flags describe.
    bench_run = importlib.import_module("tnattn.bench.run")  # (tnattn.bench.run is also a function)

    seen = []
    monkeypatch.setattr(bench_run, "run", lambda config: seen.append(config) or {})
    assert cli.main(["bench", "--quick", "--scaling-M", "10,1e3", "--threads", "2"]) == 0
    assert cli.main(["bench", "ops", "kernels", "--repeats", "4"]) == 0
    quick, full = seen
    assert quick == bench_run.BenchConfig.quick(scaling_M=(10, 1000), threads=2)
    assert full == bench_run.BenchConfig(sections=("ops", "kernels"), repeats=4)
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = capsys.readouterr().out
    for flag in ("--quick", "--json", "--plots", "--device", "--threads", "--scaling-M", "--scaling-D",
                 "--training-E", "--repeats", "--kernels-D", "--long-M"):
        assert flag in text, flag


def test_cliconfig_value_parsing_and_defaults():
    from typing import Optional

    assert parse_value(tuple[int, ...], "1000, 100") == (1000, 100)
    assert parse_value(tuple[int, ...], "") == ()
    assert parse_value(Optional[int], "none") is None
    assert parse_value(Optional[int], "4") == 4
    with pytest.raises(argparse.ArgumentTypeError, match="invalid value"):
        parse_value(int, "four")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _DemoConfig)
    # Flags not given keep the base config's values (here a non-default base).
    base = _DemoConfig(n=9, scale=2.0)
    cfg = config_from_namespace(_DemoConfig, parser.parse_args(["--scale", "0.25"]), base)
    assert cfg == _DemoConfig(n=9, scale=0.25)
    with pytest.raises(TypeError, match="dataclass"):
        add_config_arguments(parser, dict)


def test_cliconfig_literal_fields_become_choices():
    from typing import Literal

    @dataclass
    class Lit:
        mode: Literal["a", "b"] = field(default="a", metadata={"help": "a mode"})

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Lit)
    assert config_from_namespace(Lit, parser.parse_args(["--mode", "b"])) == Lit("b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])

"""``--print-config`` and ``--config FILE`` for ``tnattn train`` and ``tnattn experiment NAME``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tnattn import cli
from tnattn.experiments import perceptron_1d
from tnattn.io import read_json
from tnattn.train import TrainConfig, read_history_csv
from tnattn.train.config import preset

TINY_FLAGS = ["--D", "4", "--train-length", "6", "--crop-min", "3", "--crop-max", "6", "--batch-size", "16",
              "--test-lengths", "30,9", "--test-size", "20", "--no-progress", "--no-plots", "--eval-every", "2",
              "--threads", "1"]  # fmt: skip


def _printed(capsys, argv) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _as_dict(config) -> dict:
    # Hand-built expectation: every field by name, tuples as JSON lists.
    # (a TrainConfig's sub-configs are seen flat: their fields in their place)
    parts = [getattr(config, f.name) if f.metadata.get("flatten") else None for f in dataclasses.fields(config)]
    if any(parts):
        return {k: v for part in parts for k, v in _as_dict(part).items()}
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v for f in dataclasses.fields(config)}


def test_print_config_is_the_full_default_config(capsys):
    assert _printed(capsys, ["train", "--print-config"]) == _as_dict(TrainConfig())


def test_print_config_applies_preset_and_flags(capsys):
    got = _printed(capsys, ["train", "--preset", "author-example", "--seed", "7", "--print-config"])
    assert got == _as_dict(dataclasses.replace(preset("author-example"), seed=7))


def test_config_file_then_flags_override(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"D": 5, "seed": 4, "test_lengths": [50, 20], "l1": 0}))
    got = _printed(capsys, ["train", "--config", str(f), "--seed", "9", "--print-config"])
    assert got == _as_dict(TrainConfig(D=5, seed=9, test_lengths=(50, 20), l1=0.0))


def test_toml_config_file(tmp_path, capsys):
    pytest.importorskip("tomllib" if __import__("sys").version_info >= (3, 11) else "tomli")
    f = tmp_path / "c.toml"
    f.write_text('rule = 110\nD = 8\nl1 = 3e-4\ntest_lengths = [1000, 100]\nshared = false\n')
    got = _printed(capsys, ["train", "--config", str(f), "--print-config"])
    assert got == _as_dict(TrainConfig(rule=110, D=8, l1=3e-4, test_lengths=(1000, 100), shared=False))


def test_printed_config_reads_back(tmp_path, capsys):
    first = _printed(capsys, ["train", "--rule", "54", "--D", "3", "--print-config"])
    f = tmp_path / "printed.json"
    f.write_text(json.dumps(first))
    assert _printed(capsys, ["train", "--config", str(f), "--print-config"]) == first


@pytest.mark.parametrize(
    "content, suffix, words",
    [
        ('{"D": 5, "bogus_field": 1}', ".json", ["bogus_field"]),
        ('{"D": "five"}', ".json", ["D", "int"]),
        ('{"test_lengths": 100}', ".json", ["test_lengths", "list"]),
        ('{"D": 5,', ".json", ["not valid JSON"]),
        ("[1, 2]", ".json", ["mapping"]),
        ("D = ", ".toml", ["not valid TOML"]),
        ("D: 5", ".yaml", [".json or .toml"]),
    ],
)
def test_bad_config_files_end_in_one_line_and_exit_2(tmp_path, capsys, content, suffix, words):
    f = tmp_path / f"c{suffix}"
    f.write_text(content)
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--config", str(f), "--print-config"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and str(f) in err[-1] and all(w in err[-1] for w in words), err


def test_missing_config_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--config", str(tmp_path / "nope.json")])
    assert exc.value.code == 2
    assert "nope.json" in capsys.readouterr().err


def test_a_runs_saved_config_reruns_the_same_run(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["train", *TINY_FLAGS, "--max-epochs", "4", "--seed", "3", "--out", str(first)]) == 0
    assert cli.main(["train", "--config", str(first / "config.json"), "--out", str(second)]) == 0
    capsys.readouterr()
    a, b = read_history_csv(first / "history.csv"), read_history_csv(second / "history.csv")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        for k in ra:
            if k != "wall_time":
                assert ra[k] == rb[k] or (ra[k] != ra[k] and rb[k] != rb[k]), k  # equal, or both nan
    ca = read_json(first / "config.json")["config"]
    cb = read_json(second / "config.json")["config"]
    assert {k: v for k, v in ca.items() if k != "out"} == {k: v for k, v in cb.items() if k != "out"}


# -- experiments --------------------------------------------------------------------------------
TINY_P1D = ["--n-values", "1,2", "--n-eps", "2", "--prob-datasets", "50", "--time-datasets", "200",
            "--t-max", "3", "--no-progress"]  # fmt: skip


def test_experiment_print_config_and_override(tmp_path, capsys):
    assert _printed(capsys, ["experiment", "perceptron-1d", "--print-config"]) == _as_dict(perceptron_1d.Config())
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"n": 3, "eps": 0.2}))
    got = _printed(capsys, ["experiment", "perceptron-1d", "--config", str(f), "--eps", "0.4", "--print-config"])
    assert got == _as_dict(perceptron_1d.Config(n=3, eps=0.4))


def test_experiment_bad_config_file(tmp_path, capsys):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"members": 3}))  # a scenario-a field, not a perceptron-1d one
    with pytest.raises(SystemExit) as exc:
        cli.main(["experiment", "perceptron-1d", "--config", str(f)])
    assert exc.value.code == 2 and "members" in capsys.readouterr().err


def test_experiment_results_json_reruns_the_same_experiment(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["experiment", "perceptron-1d", *TINY_P1D, "--out", str(first)]) == 0
    assert cli.main(["experiment", "perceptron-1d", "--config", str(first / "results.json"), "--out", str(second)]) == 0
    capsys.readouterr()
    ra, rb = read_json(first / "results.json"), read_json(second / "results.json")
    ca, cb = ra["config"], rb["config"]
    assert {k: v for k, v in ca.items() if k != "out"} == {k: v for k, v in cb.items() if k != "out"}

    def numbers(x):  # every number in the results, timing left out
        if isinstance(x, dict):
            return [n for k, v in sorted(x.items()) if "second" not in k and "time_s" not in k for n in numbers(v)]
        if isinstance(x, list):
            return [n for v in x for n in numbers(v)]
        return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []

    a, b = np.array(numbers(ra["results"]), float), np.array(numbers(rb["results"]), float)
    assert a.size > 10 and a.shape == b.shape
    np.testing.assert_array_equal(a, b)

"""The theory experiments run end to end on tiny configs and write JSON + PNG."""

import dataclasses
import json

import numpy as np
import pytest

from tnattn import experiments


def _fields_are_cli_friendly(cfg_cls):
    import typing

    hints = typing.get_type_hints(cfg_cls)
    for f in dataclasses.fields(cfg_cls):
        assert "help" in f.metadata, f.name
        tp = hints[f.name]
        if typing.get_origin(tp) is tuple:
            args = typing.get_args(tp)
            assert args[1] is Ellipsis and args[0] in (int, float), f.name
        else:
            assert tp in (int, float, str, bool), f.name
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    assert {"out", "seed", "progress"} <= names


@pytest.mark.parametrize("name", ["perceptron-1d", "perceptron-ball", "scenario-b"])
def test_config_fields(name):
    _fields_are_cli_friendly(experiments.load(name).Config)


def _read(out):
    data = json.loads((out / "results.json").read_text())
    assert data["experiment"] and data["config"] and data["results"]
    return data


def test_perceptron_1d_tiny(tmp_path):
    mod = experiments.load("perceptron-1d")
    cfg = mod.Config(out=str(tmp_path), progress=False, n_values=(1, 2), n_eps=3, prob_datasets=300,
                     time_datasets=2000, dt=0.01, t_max=10.0)
    res = mod.run(cfg)
    data = _read(tmp_path)
    assert data["config"]["n_values"] == [1, 2]
    assert (tmp_path / "perceptron_1d.png").stat().st_size > 10000
    # The simulated grokking fraction agrees with the closed form (2000 data sets, 4.5 sigma).
    for d in res["grokking_time"].values():
        p = d["probability_theory"]
        assert abs(d["probability_mc"] - p) < 4.5 * np.sqrt(p * (1 - p) / 2000)
    # "stays_zero": the same data sets grok with the same times (the bias moves monotonically);
    # only the data sets whose test error is zero on the way to a nonzero end differ.
    stays = mod.run(dataclasses.replace(cfg, out=str(tmp_path / "stays"), grokking_definition="stays_zero"))
    for label, d in res["grokking_time"].items():
        s = stays["grokking_time"][label]
        assert s["probability_mc"] == d["probability_mc"]
        np.testing.assert_allclose(s["t_grok_samples"], d["t_grok_samples"], rtol=0, atol=1e-9)
        assert d["transient_zero_mc"] > 0 and s["transient_zero_mc"] == 0


@pytest.mark.parametrize("name", ["perceptron-1d", "perceptron-ball", "scenario-b"])
def test_grokking_definition_option(name, capsys):
    from tnattn import cli
    from tnattn.errors import ConfigError

    mod = experiments.load(name)
    assert mod.Config().grokking_definition == "first_zero"  # the paper's
    assert cli.main(["experiment", name, "--grokking-definition", "stays_zero", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["grokking_definition"] == "stays_zero"
    with pytest.raises(SystemExit) as exc:
        cli.main(["experiment", name, "--grokking-definition", "last", "--print-config"])
    assert exc.value.code == 2
    with pytest.raises(ConfigError, match="grokking_definition"):
        mod.Config(grokking_definition="last")


def test_perceptron_ball_tiny(tmp_path):
    mod = experiments.load("perceptron-ball")
    cfg = mod.Config(out=str(tmp_path), progress=False, D_values=(3,), n=50, runs=20, cap_points=5000,
                     prob_D=(2, 4), prob_lambda1=(0.0,), prob_datasets=100, time_runs=100)
    res = mod.run(cfg)
    _read(tmp_path)
    assert (tmp_path / "perceptron_ball.png").stat().st_size > 10000
    assert abs(res["critical"]["3"]["nu"] - 2.0) < 0.3


def test_scenario_b_tiny(tmp_path, capsys):
    mod = experiments.load("scenario-b")
    cfg = mod.Config(out=str(tmp_path), progress=False, n_tensors=400, lambda1_values=(1e-3,),
                     lambda2_values=(1e-3,), test_sequences=100, test_length=40, chunk=200, n_analyse=1,
                     n_inits=10, analysis_sequences=20)
    res = mod.run(cfg)
    data = _read(tmp_path)
    assert (tmp_path / "scenario_b.png").stat().st_size > 10000
    assert "Paper Table 1" in capsys.readouterr().out
    probs = data["results"]["probability"]
    assert len(probs["probability"]) == 3 and probs["n_tensors"] == 400
    assert len(res["tensors"]) == min(1, probs["accepted"][0])

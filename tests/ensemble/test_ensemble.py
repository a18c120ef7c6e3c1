"""Ensembles: per-member batches and optimisers, stats (the trainer: tests/train/test_trainer.py)."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from tnattn.data import MemberBatches, MiniBatches, all_sequences, random_sequences
from tnattn.ensemble.optim import StackedAdam, StackedSGD
from tnattn.ensemble.stats import aligned_mean, aligned_test_error, grokking_time_histogram
from tnattn.models import TNAttention
from tnattn.rules import elementary
from tnattn.train import TrainConfig, train

from tiny_runs import TINY_TRAIN as TINY  # the shared tiny rule-30 problem (tests/tiny_runs.py)

F64 = torch.float64

# Every test here runs once per CPU instruction-set path this machine supports (tests/conftest.py),
# on one torch thread.
pytestmark = pytest.mark.usefixtures("cpu_isa", "one_torch_thread")


# ------------------------------------------------------------------------------------------------
# per-member batches and optimisers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "crop,batch,per_member,tables,label_dtype",
    [((3, 6), 5, False, True, None), (None, 4, False, True, None), (None, None, False, True, None),
     ((2, 6), 7, True, True, None), ((3, 6), 5, False, False, None), ((2, 6), 7, True, False, None),
     ((3, 6), 5, False, True, torch.bool), ((2, 6), 7, True, False, torch.bool), (None, 4, True, True, torch.bool)],
)  # fmt: skip
def test_ensemble_batches_equal_minibatches_of_each_member(crop, batch, per_member, tables, label_dtype, monkeypatch):
    if not tables:  # crops gathered and labelled by the teacher every batch, as for large training sets
        monkeypatch.setattr("tnattn.data._TABLE_ELEMENTS", 0)
    rule = elementary(30)
    if per_member:
        xs = [random_sequences(13, 6, generator=torch.Generator().manual_seed(100 + e)) for e in range(3)]
        x = torch.stack(xs)
    else:
        x = all_sequences(6)[:23]
        xs = [x] * 3
    seeds = (1, 2, 3)
    eb = MemberBatches(x, rule, batch, crop, [torch.Generator().manual_seed(s) for s in seeds], label_dtype=label_dtype)
    mbs = [MiniBatches(xs[e], rule, batch, crop, torch.Generator().manual_seed(s)) for e, s in enumerate(seeds)]
    for members in ([0, 1, 2], [0, 2], [0, 2]):  # later epochs: member 1 stopped drawing
        its = {e: iter(mbs[e]) for e in members}
        steps = 0
        for groups in eb.epoch(members):
            refs = {e: next(its[e]) for e in members}
            covered = []
            for grp in groups:
                for k, r in enumerate(grp.rows.tolist()):
                    e = members[r]
                    gx = grp.x if grp.x.dim() == 2 else grp.x[k]
                    gy = grp.y if grp.y.dim() == 2 else grp.y[k]
                    assert gy.dtype == (label_dtype or refs[e].y.dtype)
                    assert torch.equal(gx, refs[e].x) and torch.equal(gy.to(refs[e].y.dtype), refs[e].y)
                    covered.append(e)
            assert sorted(covered) == members
            steps += 1
        assert steps == len(mbs[0])


def test_stacked_adam_and_sgd_equal_torch_optimisers_per_member():
    E = 3
    g = torch.Generator().manual_seed(6)
    params = [torch.randn(E, 2, 3, generator=g), torch.randn(E, generator=g)]
    lr = torch.tensor([0.005, 0.02, 0.001], dtype=F64)
    for Stacked, Torch in ((StackedAdam, torch.optim.Adam), (StackedSGD, torch.optim.SGD)):
        stacked = [p.clone() for p in params]
        opt = Stacked(stacked, lr)
        singles = [[p[e].clone().requires_grad_() for p in params] for e in range(E)]
        topts = [Torch(s, lr=float(lr[e])) for e, s in enumerate(singles)]
        for _ in range(20):
            grads = [torch.randn(p.shape, generator=g) for p in params]
            opt.step(stacked, grads)
            for e in range(E):
                for s, gr in zip(singles[e], grads):
                    s.grad = gr[e].clone()
                topts[e].step()
        for e in range(E):
            for k in range(2):
                assert torch.equal(stacked[k][e], singles[e][k].detach()), (Stacked.__name__, e, k)


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def test_grokking_time_histogram_is_a_density():
    t = np.array([0.0, 1.0, 2.0, 2.0, 7.0, np.nan])
    h = grokking_time_histogram(t, bins=[0, 2, 4, 8])
    assert h["counts"] == [2, 2, 1] and h["n"] == 5 and h["n_total"] == 6
    assert math.isclose(sum(d * w for d, w in zip(h["density"], np.diff(h["edges"]))), 1.0)
    assert h["median"] == 2.0
    neg = grokking_time_histogram([-3.0, 1.0, 5.0], bins=2)  # zero test error before zero train error
    assert neg["negative"] == 1 and neg["edges"][0] == -3.0 and neg["counts"] == [1, 2]
    with pytest.raises(ValueError, match="increasing"):
        grokking_time_histogram([1.0], bins=[2, 1])


def test_aligned_test_error_recovers_a_known_exponent():
    # Members with E(t) = 0.001 (t_eps - t)^1.5 before their own t_eps, recorded every epoch.
    E_members, T = 30, 400
    rng = np.random.default_rng(0)
    t_eps = rng.integers(150, 350, E_members).astype(float)
    vals = np.full((E_members, T), np.nan)
    epochs = np.arange(1, T + 1, dtype=float)
    for e in range(E_members):
        keep = epochs <= t_eps[e]
        vals[e, keep] = 1e-3 * (t_eps[e] - epochs[keep]) ** 1.5
    t_eps[3] = np.nan  # a member that never grokked is ignored
    fit = aligned_test_error(vals, t_eps, n_boot=20, span_quantile=0.0)
    assert fit["n_runs"] == fit["n_grokked"] == E_members - 1
    assert abs(fit["nu"] - 1.5) < 0.02 and fit["nu_err"] < 0.05
    # a run that generalises at once is left out by the default span selection, not the window
    early = vals.copy()
    early[0] = np.nan
    early[0, :3] = [2e-3, 1e-3, 0.0]
    t_early = t_eps.copy()
    t_early[0] = 3
    assert math.isnan(aligned_test_error(early, t_early, n_boot=0, span_quantile=0.0)["nu"])
    half = aligned_test_error(early, t_early, n_boot=20)
    assert half["n_grokked"] == E_members - 1 and half["n_runs"] < E_members - 1
    assert abs(half["nu"] - 1.5) < 0.02
    # with an explicit window every grokked run enters, each where its records reach
    windowed = aligned_test_error(early, t_early, window=(2, 50), n_boot=20)
    assert windowed["n_runs"] == E_members - 1 and abs(windowed["nu"] - 1.5) < 0.02
    none = aligned_test_error(vals, np.full(E_members, np.nan))
    assert math.isnan(none["nu"]) and "error" in none


def test_aligned_mean_averages_relative_to_each_reference():
    vals = np.full((2, 10), np.nan)
    vals[0, [1, 3, 5]] = [1.0, 3.0, 5.0]  # epochs 2, 4, 6: value = epoch - 1
    vals[1, [4, 6]] = [10.0, 10.0]  # epochs 5, 7
    out = aligned_mean(vals, [4, 5], offsets=[-2, -1, 0, 1, 2])
    assert out["count"] == [1, 1, 2, 2, 2]
    np.testing.assert_allclose(out["mean"], [1.0, 2.0, 6.5, 7.0, 7.5])
    assert math.isnan(out["sem"][0])


# ------------------------------------------------------------------------------------------------
# experiment scenario-a (tiny)
# ------------------------------------------------------------------------------------------------
def test_scenario_a_experiment_writes_table_json_and_png(tmp_path):
    import argparse

    from tnattn._cliconfig import add_config_arguments, config_from_namespace
    from tnattn.experiments.scenario_a import Config, run
    from tnattn.io import read_json

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Config)
    flags = ["--out", str(tmp_path), "--D-values", "4", "--members", "4", "--max-epochs", "30", "--train-length", "6",
             "--crop-min", "3", "--crop-max", "6", "--batch-size", "16", "--test-lengths", "20", "--test-size", "20",
             "--eval-every", "1", "--deff-probe", "16", "--deff-before", "10", "--deff-after", "5", "--lr", "0.05",
             "--no-progress", "--stop-after-grok", "5", "--n-boot", "20", "--t-eps-estimate", "interpolated"]  # fmt: skip
    cfg = config_from_namespace(Config, parser.parse_args(flags))
    assert cfg.D_values == (4,) and cfg.members == 4
    res = run(cfg)
    assert [r["regulariser"] for r in res["table"]] == ["none", "l2", "l1"]
    assert all(r["members"] == 4 and 0 <= r["grokked"] <= 4 for r in res["table"])
    saved = read_json(tmp_path / "results.json")
    assert saved["experiment"] == "scenario-a" and saved["config"]["members"] == 4
    assert (tmp_path / "scenario_a.png").stat().st_size > 0
    assert (tmp_path / "nu_windows_D4.png").stat().st_size > 0
    for r in res["table"]:
        # the error budget adds up (nan when a regulariser had too few grokked runs to fit)
        parts = np.array([r["nu_stat"], r["nu_window_syst"], r["nu_resolution_syst"]])
        if np.isfinite(r["nu"]):
            assert r["nu_total"] == pytest.approx(float(np.sqrt((parts**2).sum())))
        assert r["left_zero_again"] <= r["grokked"]
    assert "resolution syst" in res["table_text"]
    assert (tmp_path / "D4" / "histories.npz").exists()
    # the same seeds under every regulariser: members k, 4 + k and 8 + k share their run seed
    members = read_json(tmp_path / "D4" / "ensemble.json")["results"]["members"]
    assert [m["seed"] for m in members] == [0, 1, 2, 3] * 3
    assert [m["l1"] for m in members] == [0.0] * 8 + [1e-3] * 4
    with pytest.raises(ValueError, match="regularisers"):
        Config(regularisers=("l3",))
    with pytest.raises(ValueError, match="t_eps_estimate"):
        Config(t_eps_estimate="exact")

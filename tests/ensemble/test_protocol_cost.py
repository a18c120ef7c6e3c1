"""tnattn.ensemble.stats.protocol_cost: the full-protocol projection from a scaled-down run."""

from __future__ import annotations

import numpy as np
import pytest

from tnattn.ensemble.stats import protocol_cost


def _run(stops, T, a, b):
    """active (E, T) for members stopping after stops[e] epochs, and the wall of cost a + b n."""
    stops = np.asarray(stops)
    active = np.arange(T)[None, :] < stops[:, None]
    wall = np.cumsum(a + b * active.sum(0))
    return active, wall


def test_recovers_the_cost_model_and_projects_by_hand():
    # Group 0 stops at 2, 4, 6, 8 epochs, group 1 runs the whole 10-epoch run (still training).
    active, wall = _run([2, 4, 6, 8, 10, 10, 10, 10], 10, a=0.3, b=0.02)
    res = protocol_cost(active, wall, [range(4), range(4, 8)], full_members=100, full_epochs=20)
    assert res["a_s"] == pytest.approx(0.3) and res["b_s"] == pytest.approx(0.02)
    # Group 0 alone: 100 members, survival 1, 1, .75, .75, .5, .5, .25, .25, 0, ... -> 8 epochs.
    n0 = 100 * np.array([1, 1, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25])
    assert res["hours_per_group"][0] == pytest.approx(np.sum(0.3 + 0.02 * n0) / 3600)
    # Group 1 never stops: 20 epochs of 100 members (the 10 extrapolated epochs included).
    assert res["hours_per_group"][1] == pytest.approx(20 * (0.3 + 0.02 * 100) / 3600)
    assert res["still_training_fraction"] == [0.0, 1.0]
    both = np.sum(0.3 + 0.02 * (np.pad(n0, (0, 12)) + 100)) / 3600
    assert res["hours_all"] == pytest.approx(both)
    assert res["hours_no_stopping"] == pytest.approx(20 * (0.3 + 0.02 * 200) / 3600)
    assert res["hours_all"] < res["hours_no_stopping"]


def test_constant_membership_puts_all_cost_per_member():
    active, wall = _run([5, 5], 5, a=0.0, b=0.5)
    res = protocol_cost(active, wall, [range(2)], full_members=10, full_epochs=5)
    assert res["a_s"] == 0.0 and res["b_s"] == pytest.approx(0.5)
    assert res["hours_all"] == pytest.approx(5 * 0.5 * 10 / 3600)


def test_rejects_bad_input():
    active, wall = _run([2, 3], 3, a=0.1, b=0.1)
    with pytest.raises(ValueError, match="active"):
        protocol_cost(active[:, :2], wall, [range(2)])
    with pytest.raises(ValueError, match="full_members"):
        protocol_cost(active, wall, [range(2)], full_members=0)
    with pytest.raises(ValueError, match="groups"):
        protocol_cost(active, wall, [[]])


def test_scenario_a_reports_the_projection(tmp_path, capsys):
    from tnattn.experiments.scenario_a import FULL_EPOCHS, Config, run

    cfg = Config(out=str(tmp_path), D_values=(4,), regularisers=("none", "l1"), members=3, max_epochs=12,
                 train_length=5, crop_min=3, crop_max=5, batch_size=8, test_lengths=(12,), test_size=8,
                 deff_probe=8, deff_before=4, deff_after=2, lr=0.05, stop_after_grok=2, progress=False)  # fmt: skip
    res = run(cfg)
    cost = res["timing"][0]["full_protocol"]
    assert cost["full_epochs"] == FULL_EPOCHS and cost["run_epochs"] <= 12
    assert cost["regularisers"] == ["none", "l1"] and len(cost["hours_per_group"]) == 2
    assert 0 < cost["hours_all"] <= cost["hours_no_stopping"] + 1e-12
    assert all(0.0 <= f <= 1.0 for f in cost["still_training_fraction"])
    assert "Full protocol (1000 runs x up to 7000 epochs" in capsys.readouterr().out

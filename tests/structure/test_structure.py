"""Tests of tnattn.structure (snapshots, spike analysis, spike guard), its plots and the experiment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tnattn.data import LabelledSet, MiniBatches, all_sequences, make_test_sets
from tnattn.metrics import effective_dimension
from tnattn.models import TNAttention
from tnattn.rules import elementary
from tnattn.structure import (
    SnapshotRecorder,
    SpikeGuard,
    align_spikes_with_steps,
    deff_steps,
    inter_spike_intervals,
    load_snapshots,
    make_probe,
    neighbourhood_index,
    parse_setting,
    periodicity_test,
    pooled_periodicity_test,
    spike_events,
    spike_spectrum,
)
from tnattn.train import Callback, MemberView, Trainer, TrainConfig


# ------------------------------------------------------------------------------------------------
# spike analysis on synthetic curves
# ------------------------------------------------------------------------------------------------
def _planted_loss(T: int, spikes, seed: int = 0, width: int = 3) -> np.ndarray:
    """A noisy decaying loss with multiplicative bumps (x30) of ``width`` epochs at ``spikes``
    (1-based epochs)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    loss = 0.3 * np.exp(-t / 300.0) + 1e-3
    loss *= np.exp(0.05 * rng.standard_normal(T))
    for s in spikes:
        loss[s - 1 : s - 1 + width] *= 30.0
    return loss


def test_spike_events_find_planted_spikes():
    planted = [150, 420, 433, 700, 905]
    loss = _planted_loss(1000, planted)
    # 420 and 433 are 13 epochs apart: two events with merge=5, one with merge=20.
    assert spike_events(loss, merge=5).tolist() == planted
    assert spike_events(loss, merge=20).tolist() == [150, 420, 700, 905]
    # Epoch labels are carried through.
    assert spike_events(loss, merge=5, epochs=np.arange(1, 1001) + 1000).tolist() == [p + 1000 for p in planted]


def test_spike_events_quiet_curve_has_none():
    assert spike_events(_planted_loss(800, [])).size == 0


def test_spike_events_rejects_bad_arguments():
    with pytest.raises(ValueError, match="merge"):
        spike_events(np.ones(50), merge=-1)
    with pytest.raises(ValueError, match="epochs"):
        spike_events(np.ones(50), epochs=np.arange(10))


def test_intervals_and_spectrum_of_planted_period():
    rng = np.random.default_rng(1)
    period = 37.0
    t = np.round(100 + period * np.arange(40) + rng.normal(0, 1.0, 40))
    assert np.allclose(inter_spike_intervals(t), np.diff(t))
    res = periodicity_test(t, merge=5, n_null=400, seed=0)
    assert res.n_events == 40
    assert abs(res.mean_interval - period) < 0.5
    assert abs(res.period - period) < 1.0
    assert res.cv < 0.1
    assert res.cv_p_value < 0.01 and res.peak_p_value < 0.01
    # The periodogram at the true frequency is far above its level at an unrelated one.
    p = spike_spectrum(t, [1 / period, 1 / 23.0])
    assert p[0] > 10 * p[1]


def test_random_train_is_not_called_periodic():
    rng = np.random.default_rng(2)
    t = np.sort(rng.choice(np.arange(0, 3000), size=30, replace=False)).astype(float)
    res = periodicity_test(t, merge=1, n_null=400, seed=0)
    assert res.cv > 0.6
    assert res.cv_p_value > 0.05


def test_periodicity_needs_four_events():
    res = periodicity_test([10, 50, 90])
    assert res.n_events == 3 and math.isnan(res.cv) and math.isnan(res.cv_p_value)


def test_pooled_periodicity_detects_regular_ensemble():
    # Five short trains (5 events each) with period 50: each alone is weak, together clear.
    trains = [100 + 50 * np.arange(5) + k for k in range(5)]
    pooled = pooled_periodicity_test(trains, n_null=400, seed=0)
    assert pooled["n_trains"] == 5 and pooled["n_events"] == 25
    assert pooled["mean_cv"] == pytest.approx(0.0)
    assert pooled["p_value"] < 0.01
    assert pooled["null_mean_cv"] > 0.3


def test_deff_steps_and_alignment():
    rng = np.random.default_rng(3)
    epochs = np.arange(1, 501)
    deff = np.full(500, 2.5)
    deff[epochs >= 101] = 1.2  # drop at epoch 101
    deff[epochs >= 301] = 1.6  # rise at epoch 301
    deff += rng.normal(0, 0.02, 500)
    deff[::7] = np.nan  # unmeasured epochs are skipped
    steps = deff_steps(epochs, deff, window=10)
    assert steps.epochs.size == 2
    assert abs(steps.epochs[0] - 101) <= 2 and abs(steps.epochs[1] - 301) <= 2
    assert steps.sizes[0] == pytest.approx(-1.3, abs=0.05) and steps.sizes[1] == pytest.approx(0.4, abs=0.05)
    al = align_spikes_with_steps([99, 305, 450], [101, 301], tolerance=10, span=(1, 500))
    assert al["matched"] == 2 and al["fraction"] == pytest.approx(2 / 3)
    assert al["offsets"] == [2.0, -4.0, -149.0]
    # Epochs 91..111 and 291..311 are within 10 of a step: 42 of the 500 epochs.
    assert al["chance"] == pytest.approx(42 / 500)


def test_deff_drift_between_spikes_on_a_sawtooth():
    from tnattn.structure import deff_drift_between_spikes

    epochs = np.arange(1, 601)
    spikes = [100, 250, 400, 420]  # 400 -> 420 is too short an interval to use
    deff = np.full(600, 1.0)
    for a, b in zip([100, 250, 400], [250, 400, 601]):
        seg = (epochs >= a) & (epochs < b)
        deff[seg] = 2.0 - 0.005 * (epochs[seg] - a)  # a jump at each spike, then a linear decay
    drift = deff_drift_between_spikes(epochs, deff, spikes, skip=10, min_gap=40, frac=0.2)
    assert drift.size == 2
    # 139 measurements (110..248) per interval; first/last 28: medians at 123.5 and 234.5 -> -0.555
    assert np.allclose(drift, -0.005 * (234.5 - 123.5))


def test_deff_steps_flat_trace_has_none():
    rng = np.random.default_rng(4)
    steps = deff_steps(np.arange(300), 2.0 + rng.normal(0, 0.05, 300))
    assert steps.epochs.size == 0


# ------------------------------------------------------------------------------------------------
# probe labels and snapshots
# ------------------------------------------------------------------------------------------------
def test_neighbourhood_index_reads_the_rule_table():
    rule = elementary(30)
    x = torch.randint(0, 2, (20, 17), generator=torch.Generator().manual_seed(0))
    nb = neighbourhood_index(x)
    assert nb.shape == x.shape and int(nb.min()) >= 0 and int(nb.max()) <= 7
    # Open boundary = cells outside read as 0, so the table lookup reproduces the teacher everywhere.
    assert torch.equal(rule.table[nb], rule(x))
    assert int(nb[0, 3]) == 4 * int(x[0, 2]) + 2 * int(x[0, 3]) + int(x[0, 4])
    with pytest.raises(ValueError):
        neighbourhood_index(x.float())


def _tiny_trainer(tmp_path=None, callbacks=(), max_epochs=6, seed=0, D=3, model=None, **cfg):
    torch.manual_seed(seed)
    teacher = elementary(30)
    x = all_sequences(6)
    config = TrainConfig(D=D, max_epochs=max_epochs, stop_after_grok=-1, progress=False, plots=False,
                         eval_every=1, test_lengths=(40,), test_size=32, deff_probe=32, batch_size=16,
                         crop_min=0, checkpoint_every=1000, **cfg)
    if model is None:
        model = TNAttention(D, d=2, c=1, generator=torch.Generator().manual_seed(seed))
    batches = MiniBatches(x, teacher, batch_size=16, generator=torch.Generator().manual_seed(seed + 1))
    test_sets = make_test_sets(teacher, (40,), n=32)
    return Trainer.from_model(model, batches, config, train_set=LabelledSet(x, teacher(x)), test_sets=test_sets,
                   run_dir=tmp_path, callbacks=callbacks)


def test_snapshots_are_written_and_reload(tmp_path):
    probe = make_probe(elementary(30), n=5, length=9, seed=7)
    rec = SnapshotRecorder(probe, every=2, epochs=(3,), path=tmp_path / "snaps.npz", features=True)
    trainer = _tiny_trainer(tmp_path / "run", callbacks=[rec], max_epochs=6)
    trainer.fit()
    snap = load_snapshots(tmp_path / "snaps.npz")
    assert snap.epochs.tolist() == [0, 2, 3, 4, 6]
    assert snap.left.shape == (5, 5, 9, 3) and snap.right.shape == (5, 5, 9, 3)
    assert snap.left.dtype == np.float16
    assert np.array_equal(snap.x, probe.x.numpy()) and np.array_equal(snap.y, elementary(30)(probe.x).numpy())
    assert np.array_equal(snap.neighbourhood, neighbourhood_index(probe.x).numpy())
    with torch.no_grad():
        L, R = trainer.model.contexts(probe.x)
        F = trainer.model.features(probe.x)
    assert np.allclose(snap.left[-1], L.numpy(), atol=2e-3)
    assert np.allclose(snap.right[-1], R.numpy(), atol=2e-3)
    assert np.allclose(snap.stored_features[-1], F.numpy(), atol=2e-3)
    # Features rebuilt from the stored contexts agree with the model's.
    snap.stored_features = None
    assert np.allclose(snap.features(len(snap) - 1), F.numpy(), atol=3e-3)
    # Snapshots differ over training (the contexts are trained).
    assert not np.array_equal(snap.left[0], snap.left[-1])
    assert snap.index(5) == 3 and snap.index(100) == 4


def test_snapshot_recorder_state_roundtrip():
    probe = make_probe(elementary(30), n=3, length=6)
    rec = SnapshotRecorder(probe, every=1)
    model = TNAttention(3, generator=torch.Generator().manual_seed(0))
    rec.record(model, 0)
    rec.record(model, 1)
    other = SnapshotRecorder(probe, every=1)
    other.load_state_dict(rec.state_dict())
    assert other.epochs == [0, 1]
    assert np.array_equal(np.stack(other.left), np.stack(rec.left))
    with pytest.raises(ValueError, match="dtype"):
        SnapshotRecorder(probe, dtype="int8")
    with pytest.raises(TypeError, match="probe"):
        SnapshotRecorder("probe")


# ------------------------------------------------------------------------------------------------
# the spike guard
# ------------------------------------------------------------------------------------------------
def _set_contexts(model: TNAttention, A: torch.Tensor) -> None:
    with torch.no_grad():
        model.A_left.copy_(A)
        if not model.shared:
            model.A_right.copy_(A)


def _probe_deff(trainer) -> float:
    with torch.no_grad():
        L, _ = trainer.model.contexts(trainer.probe)
    return float(effective_dimension(L[:, L.shape[1] // 2].double()))


def _low_and_high(D: int = 3):
    """Context tensors whose middle-site left contexts have low / high D_eff."""
    g = torch.Generator().manual_seed(11)
    high = torch.randn(2, D, D, generator=g)
    low = torch.zeros(2, D, D)
    low[:, 0, 0] = 1.0  # every context collapses onto e_1 ...
    low[1, 0, 1] = 0.3  # ... except for a small tilt after a 1: nearly one-dimensional
    return low, high


@pytest.mark.parametrize("direction", ["up", "down"])
def test_guard_reverts_exactly_when_deff_rises(direction):
    trainer = _tiny_trainer()
    low, high = _low_and_high()
    first, second = (low, high) if direction == "up" else (high, low)
    guard = SpikeGuard(lookback=1)
    member = MemberView(trainer, 0)  # what a callback sees
    _set_contexts(trainer.model, first)
    d_first = _probe_deff(trainer)
    guard.on_train_start(member)
    guard.on_epoch_start(member, 1)  # state "first" is the pre-spike state (start of epoch t-1)
    saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    _set_contexts(trainer.model, second)  # what epoch 1 "did"
    d_second = _probe_deff(trainer)
    assert (d_second > d_first) == (direction == "up")  # the hand-made case is what we claim
    row = {"spike": 0.0, "deff": math.nan}
    guard.on_epoch_end(member, 1, row)
    assert row["guard_revert"] == 0.0  # no spike, no revert, whatever D_eff did
    guard.on_epoch_start(member, 2)
    row = {"spike": 1.0, "deff": math.nan}
    guard.on_epoch_end(member, 2, row)
    assert row["guard_deff_before"] == pytest.approx(d_first, rel=1e-6)
    assert row["guard_deff_after"] == pytest.approx(d_second, rel=1e-6)
    state = trainer.model.state_dict()
    if direction == "up":
        assert row["guard_revert"] == 1.0 and guard.reverts == [2]
        assert all(torch.equal(state[k], saved[k]) for k in saved)
    else:
        assert row["guard_revert"] == 0.0 and guard.declined == [2]
        assert torch.equal(state["A_left"], second)


def test_guard_respects_min_increase_and_max_reverts():
    trainer = _tiny_trainer()
    member = MemberView(trainer, 0)  # what a callback sees
    low, high = _low_and_high()

    def spike_after_rise(guard):
        _set_contexts(trainer.model, low)
        guard.deff_now = math.nan
        guard.buffer.clear()
        guard.on_train_start(member)
        guard.on_epoch_start(member, 1)
        _set_contexts(trainer.model, high)
        row = {"spike": 1.0, "deff": math.nan}
        guard.on_epoch_end(member, 1, row)
        return row

    rise = _probe_deff_pair(trainer, low, high)
    assert spike_after_rise(SpikeGuard(lookback=0, min_increase=rise + 0.01))["guard_revert"] == 0.0
    assert spike_after_rise(SpikeGuard(lookback=0, min_increase=max(rise - 0.01, 0.0)))["guard_revert"] == 1.0
    assert spike_after_rise(SpikeGuard(lookback=0, max_reverts=0))["guard_revert"] == 0.0
    with pytest.raises(ValueError, match="lookback"):
        SpikeGuard(lookback=-1)


def _probe_deff_pair(trainer, a, b) -> float:
    _set_contexts(trainer.model, a)
    da = _probe_deff(trainer)
    _set_contexts(trainer.model, b)
    return _probe_deff(trainer) - da


class _Corrupt(Callback):
    """After the last batch of the given epochs, flip and amplify C and scramble the context
    tensor: a planted loss spike in the next epoch that also moves D_eff."""

    def __init__(self, epochs, scale=3.0):
        self.epochs = set(epochs)
        self.g = torch.Generator().manual_seed(5)
        self.scale = scale

    def on_batch_end(self, trainer, epoch, batch_index, loss):
        if epoch in self.epochs and batch_index == len(trainer.batches) - 1:
            with torch.no_grad():
                trainer.model.C.mul_(-3.0)
                p = trainer.model.A_left
                p.add_(self.scale * torch.randn(p.shape, generator=self.g))


def test_guard_in_a_training_run_follows_its_rule(tmp_path):
    from tnattn.models import exact_local_rule

    # Start from exact contexts, so the loss is low and flat enough for the planted spikes to show.
    model = exact_local_rule(elementary(30), D=4, generator=torch.Generator().manual_seed(0))
    model.set_trainable(contexts=True, classifier=True)
    guard = SpikeGuard(lookback=1)
    trainer = _tiny_trainer(tmp_path, callbacks=[_Corrupt([60, 85]), guard], max_epochs=100, model=model,
                            D=4, lr=0.05, l1=1e-3)
    trainer.fit()
    rows = trainer.history.member(0).rows
    spikes = [r for r in rows if r["spike"] == 1.0]
    assert spikes, "the planted corruption should cause at least one loss spike"
    for r in rows:
        if r["spike"] == 1.0:
            assert r["guard_revert"] == float(r["guard_deff_after"] > r["guard_deff_before"])
        else:
            assert r["guard_revert"] == 0.0
    assert guard.reverts == [int(r["epoch"]) for r in rows if r["guard_revert"] == 1.0]


# ------------------------------------------------------------------------------------------------
# plots and the experiment
# ------------------------------------------------------------------------------------------------
def test_equal_area_projection():
    from tnattn.plots.structure import equal_area

    pts = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, -1.0, 0]])
    xy = equal_area(pts)
    assert np.allclose(xy, [[0, 0], [math.sqrt(2), 0], [0, -math.sqrt(2)]])
    # Equal area: uniform points on the sphere fill the disk uniformly in r^2.
    rng = np.random.default_rng(0)
    u = rng.standard_normal((20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r2 = (equal_area(u) ** 2).sum(1) / 4.0
    assert abs(np.mean(r2 < 0.25) - 0.25) < 0.02 and abs(np.mean(r2 < 0.5) - 0.5) < 0.02


def test_frame_indices():
    from tnattn.plots.structure import frame_indices

    epochs = np.array([0, 2, 4, 10, 20, 40, 80, 160, 161, 162, 320])
    assert frame_indices(epochs, 2).tolist() == [0, 10]
    assert frame_indices(epochs, 2, include=[161, 999]).tolist() == [0, 8, 10]
    # log(1 + e) targets 0, ~16.9, 320: nearest snapshots 0, 20, 320.
    assert frame_indices(epochs, 3).tolist() == [0, 4, 10]
    assert frame_indices(epochs, 3, spacing="linear").tolist() == [0, 7, 10]
    with pytest.raises(ValueError, match="spacing"):
        frame_indices(epochs, 3, spacing="sqrt")


def test_snapshot_recorder_follows_spikes():
    probe = make_probe(elementary(30), n=2, length=5)
    rec = SnapshotRecorder(probe, every=10, after_spike=3, initial=False)

    class _T:  # the two trainer attributes the recorder reads
        model = TNAttention(3, generator=torch.Generator().manual_seed(0))
        device = torch.device("cpu")

    for epoch in range(1, 25):
        rec.on_epoch_end(_T, epoch, {"spike": 1.0 if epoch in (4, 15) else 0.0})
    assert rec.epochs == [4, 5, 6, 10, 15, 16, 17, 20]


def test_parse_setting():
    assert parse_setting("none").l1 == 0.0
    s = parse_setting("l1-step+guard")
    assert s.schedule == "step" and s.guard and s.l1 < 0
    assert s.guard_lookback is None
    assert parse_setting("l1=3e-4").l1 == pytest.approx(3e-4)
    s = parse_setting("l1=1e-3+guard4")
    assert s.guard and s.guard_lookback == 4 and s.l1 == pytest.approx(1e-3)
    for bad in ("l2", "l1=", "l1=-1", "l1+guard+guard", "l1+guardx"):
        with pytest.raises(ValueError, match="setting"):
            parse_setting(bad)


def test_figure_mode_writes_animation(tmp_path):
    from PIL import Image

    from tnattn.experiments import structure as exp

    cfg = exp.Config(mode="figure", out=str(tmp_path), epochs=25, snapshot_every=5, dense_until=4, frames=3,
                     probe_sequences=6, probe_length=10, test_length=30, test_size=20, workers=1, progress=False)
    res = exp.run(cfg)
    gif = tmp_path / "structure_l1.gif"
    assert gif.exists() and (tmp_path / "structure_none.gif").exists()
    frames = sorted((tmp_path / "frames" / "l1").glob("frame_*.png"))
    assert len(frames) == 3  # log-spaced targets 0, sqrt(26) - 1 = 4.1 and 25: snapshots 0, 4 and 25
    with Image.open(gif) as im:
        assert im.n_frames == len(frames)
    assert (tmp_path / "structure_figure.png").stat().st_size > 10_000
    assert set(res["runs"]) == {"l1", "none"}
    assert (tmp_path / "results.json").exists()
    snap = load_snapshots(tmp_path / "runs" / "l1" / "snapshots.npz")
    assert snap.epochs.tolist() == [0, 2, 4, 5, 10, 15, 20, 25]


def test_compare_mode_table(tmp_path):
    from tnattn.experiments import structure as exp

    cfg = exp.Config(mode="compare", out=str(tmp_path), epochs=25, seeds=2, settings=("none", "l1-exp+guard"),
                     test_length=30, test_size=20, workers=1, progress=False)
    res = exp.run(cfg)
    assert list(res["table"]) == ["none", "l1-exp+guard"]
    assert res["table"]["none"]["members"] == 2
    assert [m["seed"] for m in res["members"]["l1-exp+guard"]] == [2, 3]
    assert (tmp_path / "structure_compare.png").exists() and (tmp_path / "members.json").exists()
    # Re-analysing the saved members reproduces the table (JSON round trip of the summaries).
    again = exp.reanalyse(tmp_path)
    assert again["table_text"] == res["table_text"]
    with pytest.raises(ValueError, match="setting"):
        exp.Config(mode="compare", settings=("l3",))

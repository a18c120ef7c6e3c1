"""Checkpoints: weights_only loading, atomicity, and kill-and-resume equal to an uninterrupted run."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tnattn.train import Callback, TrainConfig, load_checkpoint, read_history_csv, save_checkpoint, train
from tnattn.train.checkpoint import CHECKPOINT_NAME

BASE = dict(
    D=4,
    train_length=6,
    crop_min=3,
    crop_max=6,
    batch_size=16,
    test_lengths=(30, 9),
    test_size=40,
    eval_every=3,
    l1=1e-3,
    l2=1e-3,
    penalty_schedule="exp",
    schedule_epochs=4,
    stop_after_grok=-1,
    progress=False,
    plots=False,
    backend="reference",
    seed=7,
)


def _same_history(a, b):
    assert a.columns == b.columns
    assert len(a) == len(b)
    for ra, rb in zip(a.rows, b.rows):
        for k in a.columns:
            if k == "wall_time":  # the one column that legitimately differs
                continue
            va, vb = ra[k], rb[k]
            if isinstance(va, float) and math.isnan(va):
                assert isinstance(vb, float) and math.isnan(vb), (ra["epoch"], k)
            else:
                assert va == vb, (ra["epoch"], k, va, vb)


def _same_model(m1, m2):
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


def test_save_and_load_with_weights_only(tmp_path):
    state = {"format": 1, "epoch": 3, "t": torch.arange(4), "nested": {"a": [1.5, None, "x", (2, 3)]}}
    path = save_checkpoint(tmp_path / "c.pt", state)
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["t"], torch.arange(4))
    assert loaded["nested"]["a"] == [1.5, None, "x", (2, 3)]
    assert load_checkpoint(path)["epoch"] == 3
    # no temporary file left behind: the checkpoint and its SHA-256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "c.pt.sha256"]


def test_save_rejects_objects_that_weights_only_cannot_load(tmp_path):
    with pytest.raises(TypeError, match="plain containers"):
        save_checkpoint(tmp_path / "c.pt", {"format": 1, "bad": object()})
    assert not (tmp_path / "c.pt").exists()
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a tnattn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    # a checkpoint of another format names both versions
    save_checkpoint(tmp_path / "future.pt", {"format": 99, "epoch": 3})
    from tnattn import __version__

    with pytest.raises(ValueError, match=rf"of format 99; tnattn {__version__} reads format 1 only"):
        load_checkpoint(tmp_path / "future.pt")


def test_trainer_checkpoint_loads_with_weights_only(tmp_path):
    r = train(TrainConfig(**BASE, max_epochs=2, out=str(tmp_path)))
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["epoch"] == 2
    assert set(state) >= {"model", "optimizer", "rng", "history", "config", "callbacks"}
    assert len(state["history"]["rows"]) == 2
    assert state["stop_reason"] == "max_epochs"
    assert r.summary["epochs"] == 2


def test_resume_after_max_epochs_equals_uninterrupted(tmp_path):
    full = train(TrainConfig(**BASE, max_epochs=9, out=str(tmp_path / "full")))
    train(TrainConfig(**BASE, max_epochs=4, out=str(tmp_path / "split")))
    resumed = train(TrainConfig(**BASE, max_epochs=9, out=str(tmp_path / "split"), resume=True))
    _same_history(full.history, resumed.history)
    _same_model(full.model, resumed.model)
    # The files were rewritten from the checkpoint and appended: no duplicate rows.
    assert [r["epoch"] for r in read_history_csv(tmp_path / "split" / "history.csv")] == list(range(1, 10))


class _Crash(Callback):
    """Raise at the end of epoch ``at``: the process dies mid-run, like kill -9."""

    def __init__(self, at=None):
        self.at = at

    def on_epoch_end(self, trainer, epoch, row):
        if epoch == self.at:
            raise RuntimeError("simulated crash")


def test_resume_after_crash_from_last_periodic_checkpoint_equals_uninterrupted(tmp_path):
    cfg = dict(BASE, max_epochs=10, checkpoint_every=3)
    full = train(TrainConfig(**cfg, out=str(tmp_path / "full")), callbacks=[_Crash()])
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(TrainConfig(**cfg, out=str(tmp_path / "crash")), callbacks=[_Crash(at=8)])
    # Epoch 8 died before being recorded; rows 7 are on disk, the last checkpoint holds epoch 6.
    assert len(read_history_csv(tmp_path / "crash" / "history.csv")) == 7
    assert load_checkpoint(tmp_path / "crash" / CHECKPOINT_NAME)["epoch"] == 6
    resumed = train(TrainConfig(**cfg, out=str(tmp_path / "crash"), resume=True), callbacks=[_Crash()])
    _same_history(full.history, resumed.history)
    _same_model(full.model, resumed.model)
    assert [r["epoch"] for r in read_history_csv(tmp_path / "crash" / "history.csv")] == list(range(1, 11))


def test_resume_refuses_a_different_config(tmp_path):
    train(TrainConfig(**BASE, max_epochs=2, out=str(tmp_path)))
    with pytest.raises(ValueError, match="lr"):
        train(TrainConfig(**{**BASE, "lr": 0.1}, max_epochs=4, out=str(tmp_path), resume=True))
    with pytest.raises(ValueError, match="out"):
        train(TrainConfig(**BASE, resume=True))


def test_resuming_a_grokked_run_changes_nothing(tmp_path):
    cfg = TrainConfig(exact=True, train_contexts=False, D=4, train_length=6, crop_min=0, batch_size=0,
                      lr=0.05, max_epochs=400, test_lengths=(50,), test_size=20, eval_every=50,
                      progress=False, plots=False, backend="reference", out=str(tmp_path))
    first = train(cfg)
    assert first.stop_reason == "grokked"
    again = train(TrainConfig.from_dict({**cfg.to_dict(), "resume": True}))
    assert again.stop_reason == "grokked"
    _same_history(first.history, again.history)


def test_sigterm_checkpoints_and_resumes(tmp_path):
    """A real process: SIGTERM ends it cleanly after the current epoch, with a checkpoint."""
    out = tmp_path / "run"
    flags = ["--D", "4", "--train-length", "6", "--crop-min", "3", "--crop-max", "6", "--batch-size", "16",
             "--test-lengths", "30", "--test-size", "20", "--backend", "reference", "--no-progress",
             "--no-plots", "--stop-after-grok", "-1", "--checkpoint-every", "1000", "--out", str(out)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "tnattn.cli", "train", "--max-epochs", "100000", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        history = out / "history.csv"
        deadline = time.time() + 60
        while time.time() < deadline:
            if history.exists() and len(history.read_text().splitlines()) >= 4:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the training process wrote no history in 60 s")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output.decode()
    state = load_checkpoint(out / CHECKPOINT_NAME)
    assert state["stop_reason"] == "interrupted"
    n = state["epoch"]
    assert n >= 3 and len(read_history_csv(out / "history.csv")) == n  # checkpointed at exit, not at 1000
    resumed = train(TrainConfig.from_dict({**state["config"], "max_epochs": n + 2, "resume": True}))
    assert resumed.history.column("epoch").tolist() == list(range(1, n + 3))

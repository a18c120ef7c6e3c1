"""Loggers: TensorBoard event files read back, W&B offline runs, the ensemble aggregates."""

from __future__ import annotations

import json
import struct
import time
import types

import numpy as np
import pytest

from tnattn.train import Trainer
from tnattn.train.history import MemberHistory
from tnattn.loggers import Logger, TensorBoardLogger, WandbLogger, ensemble_scalars, make_logger
from tnattn.train import TrainConfig, train

TINY = dict(D=4, train_length=6, crop_min=3, crop_max=6, batch_size=16, test_lengths=(30, 12), test_size=20,
            deff_probe=8, progress=False, plots=False, threads=1)  # fmt: skip


def _read_events(log_dir) -> dict:
    """Tag -> list of (step, value) from the event files under ``log_dir``."""
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _read_wandb_history(path) -> list[dict]:
    """History rows of an offline W&B run file: a ``:W&B`` header, then LevelDB-log records
    (32 KiB blocks; checksum, length, type; types full/first/middle/last) of protobuf ``Record``s."""
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, rows = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (n == 0 and kind == 0) or pos + 7 + n > len(data):  # end, or a record still being written
            break
        payload, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            if rec.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


class _Recorder(Logger):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.rows: list[tuple[int, dict]] = []

    def write(self, scalars, step):
        self.rows.append((step, dict(scalars)))


def _fake_ensemble(E=3):
    """Two recorded epochs with hand-chosen values; member 2 stopped after epoch 1."""
    h = MemberHistory(["loss", "train_error", "test_error_30"], E)
    h.record(1, np.arange(E), {"loss": [0.5, 0.25, 1.0], "train_error": [0.1, 0.0, 0.2],
                               "test_error_30": [np.nan, 0.0, 0.3]}, 1.0)  # fmt: skip
    h.record(2, np.array([0, 1]), {"loss": [0.4, 0.2], "train_error": [0.0, 0.0], "test_error_30": [0.05, 0.0]}, 2.0)
    return types.SimpleNamespace(history=h, t_train=np.array([2, 1, -1]), t_eps=np.array([-1, 1, -1]))


def test_ensemble_scalars_hand_computed():
    tr = _fake_ensemble()
    s1 = ensemble_scalars(tr, 1, max_members=2)
    assert s1["ensemble/mean_loss"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert s1["ensemble/mean_test_error_30"] == pytest.approx(0.15)  # the nan is left out
    assert s1["ensemble/active"] == 3.0
    assert s1["member/0/loss"] == 0.5 and s1["member/1/test_error_30"] == 0.0
    assert "member/2/loss" not in s1 and "member/0/test_error_30" not in s1  # max_members, nan
    s2 = ensemble_scalars(tr, 2, max_members=None)
    assert s2["ensemble/active"] == 2.0 and "member/2/loss" not in s2  # stopped member: no value
    assert s2["ensemble/mean_loss"] == pytest.approx(0.3)
    assert s2["ensemble/grokked_fraction"] == pytest.approx(1 / 3)
    assert s2["ensemble/median_t_eps"] == 1.0 and s2["ensemble/median_t_G"] == 0.0


def test_ensemble_scalars_median_over_grokked_members_only():
    tr = _fake_ensemble()
    tr.t_eps, tr.t_train = np.array([7, -1, 3]), np.array([2, 4, 3])
    s = ensemble_scalars(tr, 2)
    assert s["ensemble/grokked_fraction"] == pytest.approx(2 / 3)
    assert s["ensemble/median_t_eps"] == 5.0 and s["ensemble/median_t_G"] == 2.5
    tr.t_eps = np.array([-1, -1, -1])
    assert "ensemble/median_t_eps" not in ensemble_scalars(tr, 2)


def test_logger_options_and_factory_errors(tmp_path):
    with pytest.raises(ValueError, match="max_members"):
        _Recorder(max_members=-1)
    with pytest.raises(ValueError, match="logger must be one of"):
        make_logger("tensorbord", tmp_path)
    assert make_logger("none", tmp_path) is None
    with pytest.raises(TypeError, match="on_ensemble_epoch"):
        Trainer(TrainConfig(**TINY, max_epochs=1), [0], callbacks=[object()])


def test_tensorboard_single_run_reads_back(tmp_path):
    pytest.importorskip("tensorboard")
    log_dir = tmp_path / "tb"
    with TensorBoardLogger(log_dir) as logger:
        result = train(TrainConfig(**TINY, max_epochs=6, eval_every=3, out=str(tmp_path / "run")), callbacks=[logger])
    events = _read_events(log_dir)
    loss = result.history.column("loss")
    assert [s for s, _ in events["run/loss"]] == list(range(1, 7))
    np.testing.assert_allclose([v for _, v in events["run/loss"]], loss, rtol=1e-6)
    # test errors exist on the test epochs only (3 and 6)
    assert [s for s, _ in events["run/test_error_30"]] == [3, 6]


def test_tensorboard_ensemble_per_member_and_aggregates(tmp_path):
    pytest.importorskip("tensorboard")
    # Exact neighbourhood contexts and a large step: members grok within a few dozen epochs.
    cfg = TrainConfig(**{**TINY, "max_epochs": 40, "eval_every": 1, "stop_after_grok": 0}, exact=True, lr=0.05,
                      l1=0.0, dtype="float64")  # fmt: skip
    log_dir = tmp_path / "tb"
    with TensorBoardLogger(log_dir, max_members=2) as logger:
        tr = Trainer(cfg, [0, 1, 2], callbacks=[logger])
        res = tr.fit()
    events = _read_events(log_dir)
    loss = res.history.column("loss")  # (E, T), nan after a member stopped
    for k in range(2):
        steps = [s for s, _ in events[f"member/{k}/loss"]]
        assert steps == list(range(1, int(np.isfinite(loss[k]).sum()) + 1))
        np.testing.assert_allclose([v for _, v in events[f"member/{k}/loss"]], loss[k][np.isfinite(loss[k])], rtol=1e-6)
    assert not any(tag.startswith("member/2/") for tag in events)
    t_eps = np.asarray(res.t_eps, dtype=float)
    assert np.isfinite(t_eps).any(), "the setting should grok"
    last_step, frac = events["ensemble/grokked_fraction"][-1]
    assert frac == pytest.approx(np.isfinite(t_eps).mean())
    assert events["ensemble/median_t_eps"][-1][1] == pytest.approx(np.median(t_eps[np.isfinite(t_eps)]))
    # active members per epoch: members with a finite loss in that epoch's column
    active = {s: v for s, v in events["ensemble/active"]}
    assert all(active[t + 1] == np.isfinite(loss[:, t]).sum() for t in range(loss.shape[1]))


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    with pytest.raises(ValueError, match="mode"):
        WandbLogger(dir=tmp_path, mode="offlin")
    logger = WandbLogger(project="tnattn-test", dir=tmp_path, config={"D": 4})
    result = train(TrainConfig(**TINY, max_epochs=3, out=str(tmp_path / "run")), callbacks=[logger])
    logger.close()
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")  # offline: written locally
    # wandb's service process writes the file; on a busy machine it may still be at it.
    deadline = time.monotonic() + 60
    while True:
        rows = [r for r in _read_wandb_history(run_file) if "run/loss" in r]
        if len(rows) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [r["_step"] for r in rows] == [1, 2, 3]
    np.testing.assert_allclose([r["run/loss"] for r in rows], result.history.column("loss"), rtol=1e-6)


# -- the command line: --logger --------------------------------------------------------------------
from tnattn import cli  # noqa: E402
from tnattn.train import read_history_csv  # noqa: E402

TINY_FLAGS = ["--D", "4", "--train-length", "6", "--crop-min", "3", "--crop-max", "6", "--batch-size", "16",
              "--test-lengths", "30,12", "--test-size", "20", "--no-progress", "--no-plots", "--threads", "1"]  # fmt: skip


def test_cli_train_logger_tensorboard(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert cli.main(["train", *TINY_FLAGS, "--max-epochs", "4", "--logger", "tensorboard", "--out", str(out)]) == 0
    events = _read_events(out / "logs")
    loss = [r["loss"] for r in read_history_csv(out / "history.csv")]
    assert [s for s, _ in events["run/loss"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in events["run/loss"]], loss, rtol=1e-6)


def test_cli_resume_may_add_a_logger(tmp_path, capsys):
    # Loggers only observe: a run started without one resumes with one (and the reverse).
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert cli.main(["train", *TINY_FLAGS, "--max-epochs", "2", "--out", str(out)]) == 0
    assert cli.main(["train", "--resume", "--out", str(out), "--max-epochs", "4", "--logger", "tensorboard",
                     "--no-progress"]) == 0  # fmt: skip
    assert [s for s, _ in _read_events(out / "logs")["run/loss"]] == [3, 4]
    assert len(read_history_csv(out / "history.csv")) == 4


def test_cli_experiment_logger_per_rank(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "study"
    argv = ["experiment", "scenario-a", "--out", str(out), "--D-values", "3", "--members", "2", "--max-epochs", "3",
            "--train-length", "6", "--crop-min", "3", "--crop-max", "6", "--batch-size", "16", "--test-lengths", "20",
            "--test-size", "10", "--deff-probe", "4", "--no-progress", "--logger", "tensorboard"]  # fmt: skip
    assert cli.main(argv) == 0
    events = _read_events(out / "D3" / "shards" / "rank000-of001" / "logs")
    assert [s for s, _ in events["ensemble/active"]] == [1, 2, 3]
    assert all(v == 6.0 for _, v in events["ensemble/active"])  # 2 members x 3 regularisers, none stopped
    assert {"member/0/loss", "member/5/loss", "ensemble/grokked_fraction"} <= set(events)


def test_cli_missing_logger_backend_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", *TINY_FLAGS, "--logger", "wandb", "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert 'pip install "tnattn[wandb]"' in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

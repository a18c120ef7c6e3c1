"""Run files: permissions follow the umask (issue 13, item 10); checkpoints are verified and kept in
two generations (item 9); run directories are locked while in use (item 8)."""

import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tnattn.errors import CheckpointError, CheckpointWarning, RunLockedError
from tnattn.io import atomic_write, write_json
from tnattn.locks import LOCK_NAME, is_locked, lock_directory
from tnattn.train import TrainConfig, load_checkpoint, read_history_csv, save_checkpoint, train
from tnattn.train.checkpoint import CHECKPOINT_NAME, checksum_path, previous_path

BASE = dict(D=3, train_length=5, crop_min=3, crop_max=5, batch_size=16, test_lengths=(20,), test_size=10,
            backend="reference", progress=False, plots=False, stop_after_grok=-1, seed=3)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_umask_permissions(umask, tmp_path, mask, expected):
    umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    atomic_write(tmp_path / "b.bin", lambda h: h.write(b"x"), mode="wb")
    save_checkpoint(tmp_path / "c.pt", {"format": 1})
    for name in ("a.json", "b.bin", "c.pt", "c.pt.sha256"):
        assert _mode(tmp_path / name) == expected, name


def test_every_file_of_a_run_gets_the_umask_permissions(umask, tmp_path):
    umask(0o022)
    train(TrainConfig(**{**BASE, "plots": True}, max_epochs=2, out=str(tmp_path / "r")))
    files = [p for p in (tmp_path / "r").iterdir() if p.is_file()]
    assert {"config.json", "history.csv", "history.jsonl", "summary.json", CHECKPOINT_NAME, "training.png"} <= {
        p.name for p in files}
    for p in files:
        assert _mode(p) == 0o644, p.name


# ------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_keeps_the_previous_generation_with_checksums(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": 1, "epoch": 1})
    save_checkpoint(path, {"format": 1, "epoch": 2})
    assert previous_path(path).name == "c.prev.pt"
    assert load_checkpoint(path)["epoch"] == 2
    assert torch.load(previous_path(path), weights_only=True)["epoch"] == 1
    # sha256sum format: "<64 hex>  <file name>"
    import hashlib

    for p in (path, previous_path(path)):
        digest, name = checksum_path(p).read_text().split()
        assert name == p.name and digest == hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_truncated_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": 1, "epoch": 1})
    save_checkpoint(path, {"format": 1, "epoch": 2})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(CheckpointWarning, match="previous checkpoint"):
        assert load_checkpoint(path)["epoch"] == 1


def test_a_flipped_byte_is_caught_by_the_checksum(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": 1, "epoch": 1, "w": torch.zeros(64)})
    data = bytearray(path.read_bytes())
    # flip a byte in the middle of the tensor data: torch.load alone could read garbage silently
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": 1, "epoch": 1})
    save_checkpoint(path, {"format": 1, "epoch": 2})
    for p in (path, previous_path(path)):
        p.write_bytes(p.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        load_checkpoint(path)


def test_a_checkpoint_without_checksum_loads_with_a_warning(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"format": 1, "epoch": 5}, path)  # as written before checksums existed
    with pytest.warns(CheckpointWarning, match="no checksum"):
        assert load_checkpoint(path)["epoch"] == 5
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)


def test_resume_after_a_truncated_checkpoint_continues_from_the_previous_one(tmp_path, capsys):
    from tnattn import cli

    out = tmp_path / "run"
    cfg = dict(BASE, checkpoint_every=2)
    full = train(TrainConfig(**cfg, max_epochs=8, out=str(tmp_path / "full")))
    train(TrainConfig(**cfg, max_epochs=5, out=str(out)))  # checkpoints at 2, 4, and 5 (exit)
    ck = out / CHECKPOINT_NAME
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.warns(CheckpointWarning):
        resumed = train(TrainConfig(**cfg, max_epochs=8, out=str(out), resume=True))
    # continued from epoch 4 (the previous checkpoint): the same trajectory as the uninterrupted run
    assert resumed.history.column("loss").tolist() == full.history.column("loss").tolist()
    assert [r["epoch"] for r in read_history_csv(out / "history.csv")] == list(range(1, 9))
    # both generations damaged: one line, exit 2
    for p in (ck, previous_path(ck)):
        p.write_bytes(b"\0" * 10)
    try:
        rc = cli.main(["train", "--resume", "--out", str(out), "--max-epochs", "9"])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no intact checkpoint" in err


# ------------------------------------------------------------------------------------------------
# locks

_HOLD = textwrap.dedent("""
    import sys, time
    from tnattn.locks import lock_directory
    with lock_directory(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_directory_locked_by_another_process_is_refused_and_freed_when_it_is_killed(tmp_path):
    run_dir = tmp_path / "run"
    train(TrainConfig(**BASE, max_epochs=2, out=str(run_dir)))
    proc = _holder(run_dir)
    try:
        assert is_locked(run_dir)
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            with lock_directory(run_dir):
                pass
        with pytest.raises(RunLockedError):
            train(TrainConfig(**BASE, max_epochs=3, out=str(run_dir), resume=True))
    finally:
        proc.kill()  # like kill -9: the process cannot clean up
        proc.wait()
    assert (run_dir / LOCK_NAME).exists()  # the stale file stays, the lock does not
    assert not is_locked(run_dir)
    resumed = train(TrainConfig(**BASE, max_epochs=3, out=str(run_dir), resume=True))  # the stale lock does not block
    assert resumed.summary["epochs"] == 3


def test_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    import threading

    with lock_directory(tmp_path):
        with lock_directory(tmp_path):  # train() locks, then the trainer it builds locks again
            pass
        errors = []

        def other():
            try:
                with lock_directory(tmp_path):
                    pass
            except RunLockedError as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1
    assert not is_locked(tmp_path)


def test_two_train_processes_on_one_directory(tmp_path):
    """The second process exits 2 with one line; the first one's history stays whole."""
    out = tmp_path / "run"
    flags = ["--D", "3", "--train-length", "5", "--crop-min", "3", "--crop-max", "5", "--test-lengths", "20",
             "--test-size", "10", "--backend", "reference", "--no-progress", "--no-plots",
             "--stop-after-grok", "-1", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "tnattn.cli", "train", "--max-epochs", "100000", *flags],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not ((out / "history.csv").exists() and len((out / "history.csv").read_text().splitlines()) > 2):
            assert time.time() < deadline, "the first process wrote no history"
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "tnattn.cli", "train", "--max-epochs", "5", "--overwrite",
                                 *flags], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert len(second.stderr.strip().splitlines()) == 1 and "in use by another process" in second.stderr
        resume = subprocess.run([sys.executable, "-m", "tnattn.cli", "train", "--resume", "--out", str(out)],
                                capture_output=True, text=True, timeout=120)
        assert resume.returncode == 2 and "in use" in resume.stderr
    finally:
        first.terminate()
        first.wait(timeout=60)
    epochs = [r["epoch"] for r in read_history_csv(out / "history.csv")]
    assert epochs == list(range(1, len(epochs) + 1))


def test_every_file_of_an_experiment_gets_the_umask_permissions(umask, tmp_path):
    """Experiment result files (study.json, results.json, each ensemble's shards, merged histories,
    plots) follow the umask too, not only those of a single run."""
    from tnattn import cli

    umask(0o002)
    out = tmp_path / "study"
    flags = ["--D-values", "3", "--members", "2", "--regularisers", "none", "--train-length", "5", "--crop-min",
             "3", "--crop-max", "5", "--batch-size", "16", "--test-lengths", "20", "--test-size", "10",
             "--stop-after-grok", "-1", "--no-progress", "--max-epochs", "2", "--out", str(out)]  # fmt: skip
    assert cli.main(["experiment", "scenario-a", *flags]) == 0
    files = [p for p in out.rglob("*") if p.is_file()]  # lock files included
    assert {"study.json", "results.json"} <= {p.name for p in files} and len(files) > 4
    for p in files:
        assert _mode(p) == 0o664, p.relative_to(out)

"""Members sharded over torch.distributed ranks (gloo, 2 processes): equal results, resume after a dead rank."""

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tnattn.ensemble.distributed import init_distributed, load_merged, run_ensemble, shard_members
from tnattn.train import TrainConfig

# Members start from exact neighbourhood contexts with a large step and stop at their own t_eps,
# after 16, 17, 20 and 35 epochs for seeds 0-3 (so shards finish at different times).
CONFIG = dict(
    D=4, train_length=6, crop_min=3, crop_max=6, batch_size=16, test_lengths=(30, 12), test_size=40,
    max_epochs=40, eval_every=1, deff_probe=24, progress=False, plots=False, stop_after_grok=0, threads=1,
    exact=True, lr=0.05, l1=0.0, dtype="float64", checkpoint_every=4,
)  # fmt: skip
SEEDS = [0, 1, 2, 3]
COLUMNS = ("loss", "train_error", "test_error_30", "deff", "grad_norm", "norm_C")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out, markers, die_rank, die_epoch):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    assert init_distributed("cpu", timeout_s=120) == (rank, world)
    other_done = Path(out) / "shards" / "rank000-of002" / "shard.pt"

    def hook(trainer, epoch):
        Path(markers, f"r{rank}-e{epoch}").touch()
        if rank == die_rank and epoch == die_epoch:
            deadline = time.time() + 60
            while not other_done.exists() and time.time() < deadline:  # let rank 0 finish first
                time.sleep(0.05)
            os._exit(3)  # die without cleaning up (as a killed process would)

    run_ensemble(TrainConfig(**CONFIG), SEEDS, out, on_epoch=hook)
    dist.destroy_process_group()


def _spawn(out, markers, die_rank=-1, die_epoch=-1):
    markers.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(2, _free_port(), str(out), str(markers), die_rank, die_epoch), nprocs=2, join=True)


def _epochs(markers, rank):
    return sorted(int(p.name.split("-e")[1]) for p in Path(markers).glob(f"r{rank}-e*"))


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("single")
        return run_ensemble(TrainConfig(**CONFIG), SEEDS, out)
    finally:
        torch.set_num_threads(old)


def _assert_same(a, b):
    assert [m["seed"] for m in a.members] == [m["seed"] for m in b.members] == SEEDS
    for key in ("t_train", "t_eps", "epochs", "stop_reason"):
        assert [m[key] for m in a.members] == [m[key] for m in b.members], key
    for col in COLUMNS:
        np.testing.assert_allclose(a.history.column(col), b.history.column(col), rtol=1e-6, atol=1e-9, err_msg=col)
    for name, t in a.params.items():
        torch.testing.assert_close(t, b.params[name], rtol=1e-6, atol=1e-9)


def test_shard_members_covers_every_member_once():
    for E in (1, 4, 7):
        for world in (1, 2, 3, 8):
            got = sorted(i for r in range(world) for i in shard_members(E, world, r))
            assert got == list(range(E))
    assert shard_members(7, 3, 1) == [1, 4]  # interleaved: blocks of settings spread over ranks
    with pytest.raises(ValueError, match="rank"):
        shard_members(4, 2, 2)


@pytest.mark.slow
def test_two_gloo_ranks_equal_single_process(tmp_path, single_process):
    stops = sorted(m["epochs"] for m in single_process.members)
    assert stops[0] < stops[-1] and all(m["stop_reason"] == "grokked" for m in single_process.members)
    _spawn(tmp_path / "out", tmp_path / "markers")
    merged = load_merged(tmp_path / "out")
    assert merged.summary["world_size"] == 2
    _assert_same(single_process, merged)
    assert (tmp_path / "out" / "shards" / "rank001-of002" / "shard.pt").exists()


@pytest.mark.slow
def test_killed_rank_resumes_without_losing_finished_members(tmp_path, single_process):
    out, first, second = tmp_path / "out", tmp_path / "m1", tmp_path / "m2"
    with pytest.raises(mp.ProcessExitedException):
        _spawn(out, first, die_rank=1, die_epoch=26)
    assert not (out / "ensemble.json").exists()
    assert (out / "shards" / "rank000-of002" / "shard.pt").exists()  # rank 0 finished
    assert _epochs(first, 1)[-1] == 26
    _spawn(out, second)
    assert _epochs(second, 0) == []  # rank 0's finished members were not trained again
    resumed = _epochs(second, 1)
    assert resumed[0] == 25 and resumed[-1] == 35  # continued from the epoch-24 checkpoint
    _assert_same(single_process, load_merged(out))


def _lock_worker(rank, world, port, out, result_dir):
    import torch.distributed as dist

    from tnattn.errors import RunLockedError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    init_distributed("cpu", timeout_s=120)
    try:
        run_ensemble(TrainConfig(**CONFIG), SEEDS, out)
        Path(result_dir, f"r{rank}-ran").touch()
    except RunLockedError:
        Path(result_dir, f"r{rank}-refused").touch()
    dist.destroy_process_group()


def test_a_locked_shard_stops_every_rank(tmp_path):
    """Rank 1's shard is in use by another process: both ranks refuse, neither trains or hangs."""
    import subprocess
    import sys
    import textwrap

    hold = textwrap.dedent('''
        import sys, time
        from tnattn.locks import lock_directory
        with lock_directory(sys.argv[1]):
            print("locked", flush=True)
            time.sleep(120)
    ''')
    out, results = tmp_path / "out", tmp_path / "results"
    results.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out / "shards" / "rank001-of002")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        mp.spawn(_lock_worker, args=(2, _free_port(), str(out), str(results)), nprocs=2, join=True)
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in results.iterdir()) == ["r0-refused", "r1-refused"]
    assert not (out / "shards" / "rank000-of002" / "ensemble_checkpoint.pt").exists()

"""Shard the members of one ensemble across ``torch.distributed`` ranks.

Launch with ``torchrun --nproc-per-node K ...`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``): :func:`init_distributed` joins the process group (gloo on the
CPU, nccl on CUDA), and :func:`run_ensemble` trains the members ``shard_members(E, world, rank)`` on
each rank: every ``world``-th member, so that blocks of members with different hyperparameters
(which train for different numbers of epochs) spread evenly over the ranks. Without a process group everything runs in this process (world size 1), with the same
files, so a study can move between one process and many.

Files under ``out``
-------------------
``shards/rank<r>-of<world>/``
    One :class:`~tnattn.train.Trainer` run directory per shard (its checkpoint,
    written every ``checkpoint_every`` epochs *and* whenever members finish), plus ``shard.pt``,
    the shard's final results (atomic, ``weights_only``), written once all its members stopped.
``ensemble.json``, ``histories.npz``, ``params.pt``
    The merged result set, written by rank 0 after a barrier: per-member summaries, every history
    column as an (E, T) array, the final parameters (E, ...). Rank 0 gathers the shards by reading
    their files (the histories can be large, and files survive a crash that a collective would
    not), so all ranks must see the same ``out`` folder: one machine, or a shared filesystem.

Locks: while a study runs, each rank holds the lock of its shard directory and rank 0 also that of
``out`` (:mod:`tnattn.locks`); if any rank finds its directory in use by another process, every
rank raises :class:`~tnattn.errors.RunLockedError` (they agree through one all-reduce), so a second
launch on the same folder stops at once instead of mixing its files with the first one's.

Reruns: a finished shard is reused as it is, unless ``max_epochs`` changed: then the shard's
trainer resumes from its checkpoint, members stopped by the old limit continue to the new one
(a limit below the epochs already trained is refused), and the shard's results are rewritten. Any
other changed training setting is refused with :class:`~tnattn.errors.RunDirectoryError`.

Fault tolerance: each rank only ever writes its own shard directory. A rerun (``resume=True``)
loads finished shards without training them again and continues unfinished ones from their last
checkpoint, so a rank that dies loses at most the epochs since its last checkpoint, and never the
other ranks' finished members. A rank interrupted by a signal saves its checkpoint and returns
without waiting at the barrier. The shard layout depends on the world size: rerun with the same
number of ranks to resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from tnattn.errors import CheckpointError, CheckpointWarning, RunLockedError
from tnattn.io import atomic_write, result_envelope, write_json
from tnattn.locks import lock_directory
from tnattn.train.checkpoint import load_checkpoint, save_checkpoint
from tnattn.train.config import TrainConfig
from tnattn.train.history import MemberHistory
from tnattn.train.trainer import MemberTimes, Trainer

__all__ = ["init_distributed", "shard_members", "run_ensemble", "MergedResult", "load_merged", "lock_for_ranks"]

SHARD_FILE = "shard.pt"
SHARD_FORMAT = 1


def init_distributed(device: str = "cpu", *, timeout_s: float = 6 * 3600) -> tuple[int, int]:
    """Join the default process group if the environment describes one (torchrun); return (rank, world).

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Backend choice: gloo for the CPU, nccl for CUDA (each rank then uses GPU ``LOCAL_RANK``).
    timeout_s : float
        Collective timeout; the final barrier waits for the slowest shard, so it is long.

    Returns
    -------
    (rank, world_size)
        (0, 1) when ``WORLD_SIZE`` is unset or 1 (nothing is initialised).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    backend = "nccl" if device == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def lock_for_ranks(directories: Sequence[str | os.PathLike], what: str = "directory"):
    """Lock this rank's ``directories`` (:func:`tnattn.locks.lock_directory`), agreeing with the
    other ranks of the process group: if any rank's lock fails, every rank raises.

    Every rank of the group must call it (with its own, possibly empty, list of directories).

    Raises
    ------
    RunLockedError
        On every rank, when some rank's directory is in use by another process.
    """
    import torch.distributed as dist

    rank, world = _world()
    with contextlib.ExitStack() as stack:
        failure = None
        try:
            for d in directories:
                stack.enter_context(lock_directory(d, what))
        except RunLockedError as exc:
            failure = exc
            stack.close()
        if world > 1:
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([1.0 if failure is not None else 0.0], device=device)
            dist.all_reduce(flag)
            if failure is None and float(flag) > 0:
                failure = RunLockedError(f"another rank's {what} is in use by another process (rank {rank} stops too)")
        if failure is not None:
            raise failure
        yield


def shard_members(E: int, world: int, rank: int) -> list[int]:
    """Members of rank ``rank`` out of ``world``: ``rank, rank + world, rank + 2 world, ...``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must lie in [0, {world}), got {rank}")
    return list(range(rank, E, world))


def _shard_dir(out: Path, rank: int, world: int) -> Path:
    return out / "shards" / f"rank{rank:03d}-of{world:03d}"


@dataclass
class MergedResult(MemberTimes):
    """The result set of a (possibly sharded) ensemble run.

    Attributes
    ----------
    members : list of dict
        Per-member summaries (see :meth:`tnattn.train.Trainer.member_summaries`), in member order.
    history : MemberHistory
        Every column as (E, T); T is the longest shard's epoch count, nan-padded.
    params : dict of str -> Tensor
        Final parameters, (E, ...) each.
    summary : dict
        Aggregate numbers over the shards (member-token-steps, train time per shard, ...).
    """

    members: list
    history: MemberHistory
    params: dict
    summary: dict



def _shard_state(trainer: Trainer, result, index: list) -> dict:
    return {
        "format": 1,
        "shard_format": SHARD_FORMAT,
        "members_index": list(index),
        "seeds": list(trainer.seeds),
        "config": trainer.config.to_dict(),
        "members": result.members,
        "summary": result.summary,
        "history": result.history.state_dict(),
        "params": {n: getattr(trainer.model, n).detach().cpu().clone() for n in trainer.param_names},
    }


def _load_shard(path: Path, index: list, seeds: list, config: TrainConfig) -> Optional[dict]:
    """A finished shard's results, or None if absent or produced by another study."""
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        # The shard's results can be rebuilt from its trainer checkpoint: do that, loudly.
        warnings.warn(f"{exc}; the shard is resumed from its training checkpoint", CheckpointWarning, stacklevel=2)
        return None
    if state.get("shard_format") != SHARD_FORMAT or list(state["seeds"]) != seeds:
        return None
    if list(state["members_index"]) != list(index):
        return None
    keep = {k: v for k, v in config.to_dict().items() if k not in TrainConfig.RUN_CONTROL}
    if any(state["config"].get(k) != v for k, v in keep.items()):
        return None
    return state


def run_ensemble(
    config: TrainConfig,
    seeds: Sequence[int],
    out: str | os.PathLike,
    *,
    lr: Optional[Sequence[float]] = None,
    l1: Optional[Sequence[float]] = None,
    l2: Optional[Sequence[float]] = None,
    shared_data: bool = False,
    resume: bool = True,
    on_epoch: Optional[Callable] = None,
    callbacks: Sequence = (),
) -> Optional[MergedResult]:
    """Train the members ``seeds`` sharded over the ranks of the process group; rank 0 merges.

    Parameters
    ----------
    config : TrainConfig
        Shared settings (see :class:`~tnattn.train.Trainer`).
    seeds : sequence of int
        All members' run seeds (every rank passes the same list).
    out : path
        Study folder (see the module docstring).
    lr, l1, l2 : sequence of float, optional
        Per-member hyperparameters over all members.
    shared_data : bool
        See :class:`tnattn.train.Trainer`.
    resume : bool
        Reuse finished shards and continue from checkpoints (True), or start every shard afresh.
    on_epoch : callable, optional
        ``on_epoch(trainer, epoch)`` on every rank after every epoch.
    callbacks : sequence, optional
        Per-epoch callbacks of this rank's :class:`~tnattn.train.Trainer` (such as a logger of
        :mod:`tnattn.loggers`); they see this rank's shard, whose member ``k`` is the k-th of
        :func:`shard_members`. A shard that resumes as finished runs no epochs and calls nothing.

    Returns
    -------
    MergedResult or None
        The merged results on rank 0; None on the other ranks, and on a rank that was interrupted
        by a signal (its checkpoint is saved; rerun to continue).
    """
    out = Path(out)
    seeds = [int(s) for s in seeds]
    E = len(seeds)
    rank, world = _world()
    index = shard_members(E, world, rank)
    for name, v in (("lr", lr), ("l1", l1), ("l2", l2)):
        if v is not None and len(v) != E:
            raise ValueError(f"{name} must hold one value per member ({E}), got {len(v)}")
    pick = (lambda v: None if v is None else [list(v)[i] for i in index])  # noqa: E731
    sdir = _shard_dir(out, rank, world)
    with lock_for_ranks(([out] if rank == 0 else []) + ([sdir] if index else []), "ensemble directory"):
        if index:
            mine = pick(seeds)
            done = _load_shard(sdir / SHARD_FILE, index, mine, config) if resume else None
            if done is not None and done["config"].get("max_epochs") != config.max_epochs:
                # Finished under another epoch limit: the trainer's checkpoint continues the members
                # stopped by the limit (or refuses a limit below the epochs trained).
                done = None
            if done is None:
                cfg = dataclasses.replace(config, resume=resume, out=str(sdir))
                trainer = Trainer(
                    cfg, mine, lr=pick(lr), l1=pick(l1), l2=pick(l2), shared_data=shared_data, run_dir=sdir,
                    on_epoch=on_epoch, callbacks=callbacks,
                )  # fmt: skip
                result = trainer.fit()
                if any(m["stop_reason"] == "interrupted" for m in result.members):
                    return None  # a signal: the checkpoint is saved; do not wait for the others
                save_checkpoint(sdir / SHARD_FILE, _shard_state(trainer, result, index), keep_previous=False)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        if rank != 0:
            return None
        return _merge(out, seeds, config, world)


def _merge(out: Path, seeds: list, config: TrainConfig, world: int) -> MergedResult:
    E = len(seeds)
    shards = []
    for r in range(world):
        index = shard_members(E, world, r)
        if not index:
            continue
        state = _load_shard(_shard_dir(out, r, world) / SHARD_FILE, index, [seeds[i] for i in index], config)
        if state is None:
            raise RuntimeError(f"shard of rank {r} has no finished results under {out}; rerun to complete it")
        shards.append((index, state))
    members: list = [None] * E
    for index, state in shards:
        for i, m in zip(index, state["members"]):
            members[i] = dict(m, member=i)
    hists = [(index, MemberHistory.from_state_dict(state["history"])) for index, state in shards]
    columns = hists[0][1].columns
    T = max(h.T for _, h in hists)
    merged = MemberHistory(columns, E)
    merged._grow(T)
    for index, h in hists:
        for c in columns:
            merged.data[c][index, : h.T] = h.column(c)
        if h.T == T:
            merged.wall[:T] = h.wall[:T]
    merged.T = T
    params = {}
    for name, first in shards[0][1]["params"].items():
        full = first.new_empty((E, *first.shape[1:]))
        for index, state in shards:
            full[torch.tensor(index)] = state["params"][name]
        params[name] = full
    summaries = [state["summary"] for _, state in shards]
    summary = {
        "E": E,
        "world_size": world,
        "epochs": T,
        "member_epochs": sum(s["member_epochs"] for s in summaries),
        "member_token_steps": sum(s["member_token_steps"] for s in summaries),
        "grokked": sum(s["grokked"] for s in summaries),
        "shard_train_time_s": [s["train_time_s"] for s in summaries],
        "shard_wall_time_s": [s["wall_time_s"] for s in summaries],
    }
    result = MergedResult(members, merged, params, summary)
    write_json(out / "ensemble.json", result_envelope("ensemble", config, {"summary": summary, "members": members}))
    arrays = merged.arrays()
    atomic_write(out / "histories.npz", lambda h: np.savez_compressed(h, **arrays), mode="wb")
    save_checkpoint(out / "params.pt", {"format": 1, "params": params, "seeds": seeds}, keep_previous=False)
    return result


def load_merged(out: str | os.PathLike) -> MergedResult:
    """Read the merged result set written by :func:`run_ensemble` from ``out``."""
    from tnattn.io import read_json

    out = Path(out)
    data = read_json(out / "ensemble.json")["results"]
    with np.load(out / "histories.npz") as z:
        arrays = {k: z[k] for k in z.files}
    wall = arrays.pop("wall_time")
    cols = list(arrays)
    E, T = arrays[cols[0]].shape
    h = MemberHistory(cols, E)
    h._grow(T)
    for c in cols:
        h.data[c][:, :T] = arrays[c]
    h.wall[:T] = wall
    h.T = T
    params = load_checkpoint(out / "params.pt")["params"]
    return MergedResult(data["members"], h, params, data["summary"])

"""Run a training job from a :class:`TrainConfig`: :func:`train`, run directories and resume checks."""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import Sequence

import torch

from tnattn.errors import ConfigError, RunDirectoryError
from tnattn.io import read_json, write_json
from tnattn.locks import lock_directory
from tnattn.teachers import teacher_label
from tnattn.train.build import build_model, build_problem, build_teacher, resolve_device, split_seed
from tnattn.train.callbacks import Callback
from tnattn.train.checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_exists,
    load_checkpoint,
    previous_path,
    remove_checkpoint,
)
from tnattn.train.config import TrainConfig
from tnattn.train.trainer import SingleRunFiles, Trainer, TrainResult

__all__ = ["train", "default_run_dir", "load_run_config", "holds_run", "remove_run_files", "RUN_FILES"]


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<teacher>-D<D>-seed<seed>-<YYYYmmdd-HHMMSS>`` under the current directory."""
    name = teacher_label(config)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-D{config.D}-seed{config.seed}-{stamp}"


# Files whose presence means the directory holds a run (config.json is written first).
RUN_FILES = ("config.json", CHECKPOINT_NAME, "summary.json", "history.csv", "history.jsonl")


def holds_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds (part of) a run: any of its config, checkpoint, summary or history."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in RUN_FILES + (previous_path(CHECKPOINT_NAME),))


def _check_epochs(trained: int, config: TrainConfig, where: Path) -> None:
    if trained > config.max_epochs:
        raise RunDirectoryError(
            f"cannot resume: {where} already holds {trained} epochs, more than max_epochs={config.max_epochs}; "
            f"give max_epochs >= {trained}"
        )


def train(config: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a TN-attention student as described by ``config``; write the run directory.

    The run is the E = 1 case of :class:`Trainer`: ``Trainer(config, [config.seed])`` with the
    single run's directory layout (:class:`~tnattn.train.trainer.SingleRunFiles`).

    Parameters
    ----------
    config : TrainConfig
        Everything about the run. With ``config.resume``, ``config.out`` must name a directory that
        holds a run; its checkpoint (if it got as far as one) is continued, and the
        trajectory-relevant fields of ``config`` must equal the checkpoint's (run-control fields
        such as ``max_epochs`` may differ; ``max_epochs`` can grow, and the run continues to it).
        Without ``resume``, a directory that already holds a run is refused unless
        ``config.overwrite`` is set, which deletes that run first.
    callbacks : sequence of Callback
        Extra callbacks (see :mod:`tnattn.train.callbacks`).

    Returns
    -------
    TrainResult
        History, summary, trained model and run directory, which holds ``config.json``,
        ``history.csv``, ``history.jsonl``, ``checkpoint.pt`` (with ``checkpoint.prev.pt``, the one
        before, and their ``.sha256`` checksums), ``summary.json`` and ``training.png``.

    Raises
    ------
    RunDirectoryError
        ``out`` is a file; it holds a run and neither ``resume`` nor ``overwrite`` is set; ``resume``
        is set and it holds no run; or the run's settings differ.
    RunLockedError
        Another process is using ``out``.
    CheckpointError
        No intact checkpoint is left to resume from.
    ConfigError
        ``device='cuda'`` without a GPU.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.resume and not config.out:
        raise ConfigError("resume needs out: the run directory to continue")
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryError(f"out: {run_dir} is a file, not a run directory")
    if config.resume and not holds_run(run_dir):
        raise RunDirectoryError(f"resume: {run_dir} holds no run to continue; start one without resume")
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    with lock_directory(run_dir, "run directory"):
        state = None
        if config.resume:
            if checkpoint_exists(run_dir / CHECKPOINT_NAME):
                state = load_checkpoint(run_dir / CHECKPOINT_NAME)
                config.check_resume(state["config"])
                _check_epochs(int(state["epoch"]), config, run_dir)
            else:
                # Killed before its first checkpoint: the run restarts from epoch 0 (same trajectory).
                warnings.warn(f"{run_dir} has no checkpoint yet: the run starts again from epoch 0", stacklevel=2)
        elif holds_run(run_dir):
            if not config.overwrite:
                raise RunDirectoryError(
                    f"out: {run_dir} already holds a run; continue it with resume (--resume), replace it with "
                    "overwrite (--overwrite), or choose another out"
                )
            remove_run_files(run_dir)
        # How this call treats the directory is not part of the run: the saved config never
        # carries overwrite, so resuming it later is not a contradiction.
        config = dataclasses.replace(config, out=str(run_dir), overwrite=False)
        from tnattn import __version__

        # The saved config describes the run, not this call: it never carries resume or overwrite,
        # so it can be rerun elsewhere with --config as it is.
        saved = dataclasses.replace(config, resume=False)
        write_json(run_dir / "config.json", {"tnattn_version": __version__, "config": saved})
        logger = None
        if config.logger != "none":
            from tnattn.loggers import make_logger

            logger = make_logger(config.logger, run_dir / "logs", config=config.to_dict())
            callbacks = [*callbacks, logger]
        try:
            return _trainer(config, run_dir, callbacks, device).fit(resume_from=state).run(0)
        finally:
            if logger is not None:
                logger.close()


def _trainer(config: TrainConfig, run_dir: Path, callbacks: Sequence[Callback], device) -> Trainer:
    """The run as one member (E = 1) of :class:`Trainer`; the plain-PyTorch backends (``backend``
    other than ``"ops"``, which the stacked members always use) train the module itself."""
    if config.backend == "ops":
        return Trainer(config, [config.seed], run_dir=run_dir, callbacks=callbacks, device=device,
                       run_files=SingleRunFiles())  # fmt: skip
    model_seed, data_seed = split_seed(config.seed)
    teacher = build_teacher(config)
    problem = build_problem(config, generator=torch.Generator().manual_seed(data_seed), teacher=teacher)
    model = build_model(config, teacher, generator=torch.Generator().manual_seed(model_seed), device=device)
    return Trainer.from_model(model, problem.batches, config, train_set=problem.train_set.to(device), device=device,
                              test_sets={m: s.to(device) for m, s in problem.test_sets.items()}, run_dir=run_dir,
                              callbacks=callbacks)  # fmt: skip


def remove_run_files(run_dir: str | os.PathLike) -> None:
    """Delete a run's files from ``run_dir`` (config, checkpoints and checksums, history, summary,
    plot, logger files); other files are left alone."""
    run_dir = Path(run_dir)
    for name in RUN_FILES + ("training.png",):
        (run_dir / name).unlink(missing_ok=True)
    remove_checkpoint(run_dir / CHECKPOINT_NAME)
    shutil.rmtree(run_dir / "logs", ignore_errors=True)


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in ``run_dir/config.json``."""
    data = read_json(Path(run_dir) / "config.json")
    return TrainConfig.from_dict(data["config"])

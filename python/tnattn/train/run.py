"""Run a training job from a :class:`TrainConfig`: :func:`train`, run directories and resume checks."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime
from pathlib import Path
from typing import Sequence

import torch

from tnattn.io import read_json, write_json
from tnattn.train.build import build_model, build_problem, build_teacher, resolve_device, split_seed
from tnattn.train.callbacks import Callback
from tnattn.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from tnattn.train.config import TrainConfig
from tnattn.train.trainer import Trainer, TrainResult

__all__ = ["train", "default_run_dir", "load_run_config"]


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<teacher>-D<D>-seed<seed>-<YYYYmmdd-HHMMSS>`` under the current directory."""
    if config.rule_table:
        name = "table"
    elif config.random_k:
        name = f"random-K{config.random_k}-d{config.alphabet}-s{config.rule_seed}"
    else:
        name = f"rule{config.rule}"
    if config.rule_steps > 1:
        name += f"x{config.rule_steps}"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-D{config.D}-seed{config.seed}-{stamp}"


def _check_resume_config(saved: dict, config: TrainConfig) -> None:
    current = config.to_dict()
    # A field added after the checkpoint was written is absent from it and is accepted at its
    # default (the fields added so far, grokking_definition and eval_screen, change what is
    # recorded, not the trajectory).
    for f in dataclasses.fields(TrainConfig):
        if f.name not in saved and f.default is not dataclasses.MISSING:
            saved = {**saved, f.name: list(f.default) if isinstance(f.default, tuple) else f.default}
    differ = [k for k in current if k not in TrainConfig.RUN_CONTROL and saved.get(k) != current[k]]
    if differ:
        raise ValueError(
            "cannot resume: the config differs from the checkpoint's in "
            + ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {current[k]!r})" for k in differ)
        )


def train(config: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a TN-attention student as described by ``config``; write the run directory.

    Parameters
    ----------
    config : TrainConfig
        Everything about the run. With ``config.resume``, ``config.out`` must name a run directory;
        its checkpoint (if present) is continued, and the trajectory-relevant fields of ``config``
        must equal the checkpoint's (run-control fields such as ``max_epochs`` may differ).
    callbacks : sequence of Callback
        Extra callbacks (see :mod:`tnattn.train.callbacks`).

    Returns
    -------
    TrainResult
        History, summary, trained model and run directory, which holds ``config.json``,
        ``history.csv``, ``history.jsonl``, ``checkpoint.pt``, ``summary.json`` and ``training.png``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.resume and not config.out:
        raise ValueError("resume needs out: the run directory to continue")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if config.resume and (run_dir / CHECKPOINT_NAME).exists():
        saved = load_checkpoint(run_dir / CHECKPOINT_NAME)["config"]
        _check_resume_config(saved, config)
    config = dataclasses.replace(config, out=str(run_dir))
    device = resolve_device(config.device)
    model_seed, data_seed = split_seed(config.seed)
    teacher = build_teacher(config)
    problem = build_problem(config, generator=torch.Generator().manual_seed(data_seed), teacher=teacher)
    model = build_model(config, teacher, generator=torch.Generator().manual_seed(model_seed), device=device)
    test_sets = {m: s.to(device) for m, s in problem.test_sets.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    from tnattn import __version__

    write_json(run_dir / "config.json", {"tnattn_version": __version__, "config": config})
    logger = None
    if config.logger != "none":
        from tnattn.loggers import make_logger

        logger = make_logger(config.logger, run_dir / "logs", config=config.to_dict())
        callbacks = [*callbacks, logger]
    try:
        trainer = Trainer(
            model,
            problem.batches,
            config,
            train_set=problem.train_set.to(device),
            test_sets=test_sets,
            run_dir=run_dir,
            callbacks=callbacks,
            device=device,
        )
        return trainer.fit()
    finally:
        if logger is not None:
            logger.close()


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in ``run_dir/config.json``."""
    data = read_json(Path(run_dir) / "config.json")
    return TrainConfig.from_dict(data["config"])

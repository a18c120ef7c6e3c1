"""Experiment loggers: TensorBoard and Weights & Biases, for single runs and ensembles.

A logger is a :class:`tnattn.train.Callback` for :class:`tnattn.train.Trainer` (pass it in
``callbacks=``) and a per-epoch hook for :class:`tnattn.train.Trainer` of E members (pass it in
``callbacks=``). The command line builds one with ``--logger tensorboard`` or ``--logger wandb``.

What is logged, with the epoch as the step:

single run
    every numeric history column as ``run/<column>`` (test errors only on the test epochs), and at
    the end ``run/t_train``, ``run/t_eps`` and ``run/t_G`` when they exist;
ensemble
    per member ``member/<k>/<column>`` for the first ``max_members`` members (``k`` the member
    index, zero-padded) and the columns in ``member_columns``, while the member trains; and the
    aggregates over all members ``ensemble/active`` (members still training),
    ``ensemble/grokked_fraction`` (members with a t_eps so far), ``ensemble/median_t_eps`` and
    ``ensemble/median_t_G`` (over the members grokked so far; absent before the first), and
    ``ensemble/mean_<column>`` (mean over the members that trained this epoch).

The backends are optional extras: ``pip install "tnattn[tensorboard]"`` or ``"tnattn[wandb]"``.
A missing backend raises :class:`ImportError` naming the extra when the logger is created.

Resuming a run repeats the epochs after its last checkpoint; both backends then hold two values
for those steps (TensorBoard shows the later one on top).
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from tnattn.train.callbacks import Callback

__all__ = ["Logger", "TensorBoardLogger", "WandbLogger", "LOGGERS", "make_logger", "check_backend", "ensemble_scalars"]

#: Names accepted by :func:`make_logger` (and ``--logger``).
LOGGERS = ("none", "tensorboard", "wandb")

# Columns logged per member by default: what one looks at per run. Every column is aggregated.
_MEMBER_COLUMNS = ("loss", "train_error", "test_error", "deff", "spike")


def _finite(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def ensemble_scalars(
    trainer, epoch: int, *, max_members: Optional[int] = 16, member_columns: Sequence[str] = _MEMBER_COLUMNS
) -> dict:
    """The scalars of one ensemble epoch, as the loggers write them.

    Parameters
    ----------
    trainer : tnattn.train.Trainer
        After ``epoch`` was recorded in ``trainer.history``.
    epoch : int
        1-based epoch.
    max_members : int or None
        Per-member scalars for members ``0 .. max_members - 1`` only (None: all members). The
        aggregates always cover every member.
    member_columns : sequence of str
        Column names (or prefixes, such as ``test_error``) logged per member.

    Returns
    -------
    dict
        Tag -> float; only finite values.
    """
    h = trainer.history
    t = epoch - 1
    E = h.E
    out: dict[str, float] = {}
    trained = np.zeros(E, dtype=bool)
    for c in h.columns:
        col = h.data[c][:, t].astype(np.float64)
        ok = np.isfinite(col)
        if c == "loss":
            trained = ok
        if ok.any():
            out[f"ensemble/mean_{c}"] = float(col[ok].mean())
        if any(c == m or c.startswith(m + "_") for m in member_columns):
            n = E if max_members is None else min(E, max_members)
            width = len(str(E - 1))
            for k in range(n):
                if ok[k]:
                    out[f"member/{k:0{width}d}/{c}"] = float(col[k])
    t_eps = np.asarray(trainer.t_eps, dtype=np.float64)
    t_train = np.asarray(trainer.t_train, dtype=np.float64)
    grokked = t_eps >= 0
    out["ensemble/active"] = float(trained.sum())
    out["ensemble/grokked_fraction"] = float(grokked.mean())
    if grokked.any():
        out["ensemble/median_t_eps"] = float(np.median(t_eps[grokked]))
        both = grokked & (t_train >= 0)
        if both.any():
            out["ensemble/median_t_G"] = float(np.median(t_eps[both] - t_train[both]))
    return out


class Logger(Callback):
    """Base class: turns training events into scalars; subclasses write them.

    Subclasses implement :meth:`write` (and :meth:`close` when they hold resources).

    Parameters
    ----------
    max_members : int or None
        Ensembles: per-member scalars for the first ``max_members`` members only (None: all).
    member_columns : sequence of str
        Ensembles: history columns (or prefixes) logged per member.
    """

    checkpointed = False  # an observer: a run may resume with or without it

    def __init__(self, *, max_members: Optional[int] = 16, member_columns: Sequence[str] = _MEMBER_COLUMNS):
        if max_members is not None and (isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 0):
            raise ValueError(f"max_members must be None or an int >= 0, got {max_members!r}")
        self.max_members = max_members
        self.member_columns = tuple(member_columns)

    # -- what subclasses provide ---------------------------------------------------------------
    def write(self, scalars: Mapping[str, float], step: int) -> None:
        """Write ``scalars`` (tag -> value) at ``step``."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything written so far durable."""

    def close(self) -> None:
        """Flush and release the backend."""
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- single runs (tnattn.train.Trainer callbacks) --------------------------------------------
    def on_epoch_end(self, trainer, epoch: int, row: dict) -> None:
        scalars = {f"run/{k}": v for k, v in ((k, _finite(v)) for k, v in row.items() if k != "epoch") if v is not None}
        self.write(scalars, epoch)

    def on_train_end(self, trainer) -> None:
        times = {"t_train": trainer.t_train, "t_eps": trainer.t_eps}
        if trainer.t_train is not None and trainer.t_eps is not None:
            times["t_G"] = trainer.t_eps - trainer.t_train
        scalars = {f"run/{k}": float(v) for k, v in times.items() if v is not None}
        if scalars:
            self.write(scalars, trainer.epoch)
        self.flush()

    # -- ensembles (run observers of tnattn.train.Trainer) -----------------------------------
    def on_ensemble_epoch(self, trainer, epoch: int) -> None:
        self.write(ensemble_scalars(trainer, epoch, max_members=self.max_members, member_columns=self.member_columns), epoch)

    def on_ensemble_end(self, trainer) -> None:
        self.flush()


class TensorBoardLogger(Logger):
    """Scalars to TensorBoard event files through ``torch.utils.tensorboard``.

    Parameters
    ----------
    log_dir : path
        Folder of the event files (created); view with ``tensorboard --logdir <log_dir>``.
    **kwargs
        :class:`Logger` options.

    Raises
    ------
    ImportError
        When the ``tensorboard`` package is missing (``pip install "tnattn[tensorboard]"``).
    """

    def __init__(self, log_dir: str | os.PathLike, **kwargs):
        super().__init__(**kwargs)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch raises this when the tensorboard package is absent
            raise ImportError('TensorBoardLogger needs tensorboard: pip install "tnattn[tensorboard]"') from exc
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, scalars: Mapping[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, global_step=step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbLogger(Logger):
    """Scalars to Weights & Biases; offline by default, so no network or account is needed.

    Parameters
    ----------
    project : str
        W&B project name.
    dir : path
        Folder of the local run files (``wandb/`` inside it); an offline run is uploaded later
        with ``wandb sync``.
    mode : {"offline", "online", "disabled"}, optional
        Default: the ``WANDB_MODE`` environment variable, else ``"offline"``.
    config : dict, optional
        Run configuration recorded with the run.
    name : str, optional
        Run name.
    **kwargs
        :class:`Logger` options.

    Raises
    ------
    ImportError
        When the ``wandb`` package is missing (``pip install "tnattn[wandb]"``).
    ValueError
        For an unknown ``mode``.
    """

    def __init__(
        self,
        project: str = "tnattn",
        dir: str | os.PathLike = ".",
        *,
        mode: Optional[str] = None,
        config: Optional[dict] = None,
        name: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        mode = mode or os.environ.get("WANDB_MODE") or "offline"
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"mode must be 'offline', 'online' or 'disabled', got {mode!r}")
        try:
            import wandb
        except ImportError as exc:
            raise ImportError('WandbLogger needs wandb: pip install "tnattn[wandb]"') from exc
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, dir=str(self.dir), mode=mode, config=config or {}, name=name, reinit=True)

    def write(self, scalars: Mapping[str, float], step: int) -> None:
        self._run.log(dict(scalars), step=step)

    def close(self) -> None:
        self._run.finish()


def check_backend(kind: str) -> None:
    """Raise unless logger ``kind`` can be created here (its package imports).

    Raises
    ------
    ValueError
        For an unknown ``kind``.
    ImportError
        When the backend's package is missing; the message names the extra to install.
    """
    if kind not in LOGGERS:
        raise ValueError(f"logger must be one of {', '.join(LOGGERS)}; got {kind!r}")
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(kind)
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError:
        raise ImportError(f'--logger {kind} needs the {package} package: pip install "tnattn[{kind}]"') from None


def make_logger(kind: str, log_dir: str | os.PathLike, *, config: Optional[dict] = None, **kwargs) -> Optional[Logger]:
    """The logger ``--logger kind`` builds: None for ``"none"``.

    Parameters
    ----------
    kind : {"none", "tensorboard", "wandb"}
    log_dir : path
        TensorBoard event folder, or the W&B run folder.
    config : dict, optional
        Recorded with a W&B run.
    **kwargs
        :class:`Logger` options.

    Raises
    ------
    ValueError
        For an unknown ``kind``.
    ImportError
        When the backend's package is missing.
    """
    if kind not in LOGGERS:
        raise ValueError(f"logger must be one of {', '.join(LOGGERS)}; got {kind!r}")
    if kind == "none":
        return None
    if kind == "tensorboard":
        return TensorBoardLogger(log_dir, **kwargs)
    return WandbLogger(dir=log_dir, config=config, name=Path(log_dir).parent.name or None, **kwargs)

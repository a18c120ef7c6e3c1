"""The training loop: one :class:`Trainer` for E >= 1 members.

``Trainer(config, seeds=[...])`` trains one member per seed; member ``e`` is the run
``tnattn.train.train(replace(config, seed=seeds[e], lr=lr[e], l1=l1[e], l2=l2[e]))``
(:meth:`Trainer.member_config`), up to floating-point rounding. ``Trainer.from_model(model, batches,
config, ...)`` trains one given model on given batches (a library user's own model or data; the
single run of :func:`tnattn.train.train`). Both run the same loop; what differs is the member set
(:mod:`tnattn.train.members`: stacked members built from the config, with the step strategy and
evaluators chosen once, or one module and a ``torch.optim`` optimiser) and the run directory's
layout (:class:`MembersRunFiles`, :class:`SingleRunFiles`).

One epoch = one pass over every active member's mini-batches, each followed by one optimiser step;
then the epoch's measurements form one history row per member (:class:`~tnattn.train.MemberHistory`,
every column an (E, T) array, nan where not measured):

``loss``, ``penalty``
    Site-weighted mean data loss and mean penalty of the epoch's batches (measured before each
    batch's update).
``batch_error``
    Fraction of wrong sites in the epoch's (cropped) batches, before each update.
``train_error``
    Fraction of wrong sites on the uncropped training set after the epoch (without a training set:
    ``batch_error``).
``test_error_<M>``
    Fraction of wrong sites on the test set of length M, on the member's *test epochs*: every
    ``eval_every``-th epoch, (with ``eval_when_fit``) every epoch with zero training error, and
    every epoch on which the first ``eval_screen`` sequences of every test length are error-free,
    so that t_eps is exact to the epoch.
``deff``
    Effective dimension (PCA entropy; documentation: Science, "Effective dimension") of the left
    contexts at the middle site ``M // 2`` of the first ``deff_probe`` sequences of the shortest
    test set, on the test epochs.
``spike``
    1.0 at the onset of a loss spike (:func:`tnattn.metrics.detect_loss_spikes`, trailing window of
    20 epochs; causal, so online and end-of-run onsets agree), else 0.0.
``lambda1``, ``lambda2``, ``grad_norm``
    Scheduled penalty strengths, and the mean over the batches of the total gradient norm.
``norm_<name>``
    Frobenius norm of every parameter after the epoch.
``wall_time``
    Seconds since the start of the run (summed over resumed segments), one value per epoch.

Stopping, per member: ``stop_after_grok`` epochs after t_eps (``"grokked"``), ``patience`` epochs
without a loss improvement (``"patience"``), a callback's :meth:`MemberView.request_stop`, a *dead*
member (its probe contexts all exactly zero on a test epoch, or an exactly zero gradient on every
batch of an epoch with a non-zero loss: ``"dead"``, with a :class:`~tnattn.errors.DeadModelWarning`),
a stacked member whose parameters became non-finite (``"diverged"``; a module raises
:class:`~tnattn.models.NonFiniteParameterError` itself), or ``max_epochs``. The other members go
on; stopped members leave the working set, so they stop costing compute.

Grokking: ``t_train`` is the first epoch with zero training error, ``t_eps`` the first test epoch
with zero error on every test length (arXiv:2210.15435, Sec. 3), ``t_G = t_eps - t_train``. With
``grokking_definition="stays_zero"`` a later nonzero error clears the time again.

Callbacks (:mod:`tnattn.train.callbacks`) run per member: each hook gets a :class:`MemberView`
(that member's times, model, snapshot/restore and stop request). Objects with an
``on_ensemble_epoch(trainer, epoch)`` method (the loggers of :mod:`tnattn.loggers`) observe a run
of :class:`StackedMembers` as a whole instead.

Interruption: SIGINT (Ctrl-C) and SIGTERM finish the current epoch, write a checkpoint and the
summary, and return (a second Ctrl-C aborts at once). Resuming restores parameters, optimiser,
every generator state, history, callbacks and counters, so a resumed run's history equals an
uninterrupted run's (on CPU; ``wall_time`` aside). Members stopped by ``max_epochs`` continue when
``max_epochs`` grew.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from tnattn.data import LabelledSet
from tnattn.errors import DeadModelWarning, RunDirectoryError
from tnattn.io import atomic_write, result_envelope, write_json
from tnattn.locks import lock_directory
from tnattn.train.callbacks import Callback, ProgressBar
from tnattn.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    checkpoint_exists,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from tnattn.train.config import TrainConfig
from tnattn.train.history import History, HistoryFiles, MemberHistory
from tnattn.train.members import ModuleMember, StackedMembers, evaluate_error, per_member
from tnattn.train.penalties import PenaltySchedule

__all__ = ["Trainer", "TrainResult", "FitResult", "MemberView", "evaluate_error", "SingleRunFiles",
           "MembersRunFiles", "ENSEMBLE_CHECKPOINT_NAME"]  # fmt: skip

# Trailing window (epochs) of the loss-spike detector.
_SPIKE_WINDOW = 20
# Stop reasons after which a member never trains again.
_FINAL = ("grokked", "patience", "callback", "dead", "diverged")
ENSEMBLE_CHECKPOINT_NAME = "ensemble_checkpoint.pt"
ENSEMBLE_FORMAT = 1


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """One run's result (what :func:`tnattn.train.train` returns; :meth:`FitResult.run`).

    Attributes
    ----------
    history : History
        Per-epoch rows (see the module docstring for the columns).
    summary : dict
        The ``results`` part of ``summary.json`` (t_train, t_eps, t_G, final errors, timing...).
    model : nn.Module
        The trained model (final parameters).
    run_dir : Path or None
    """

    history: History
    summary: dict
    model: torch.nn.Module
    run_dir: Optional[Path] = None

    @property
    def t_train(self) -> Optional[int]:
        return self.summary["t_train"]

    @property
    def t_eps(self) -> Optional[int]:
        return self.summary["t_eps"]

    @property
    def t_G(self) -> Optional[int]:
        return self.summary["t_G"]

    @property
    def stop_reason(self) -> str:
        return self.summary["stop_reason"]


class MemberTimes:
    """Per-member grokking times read from ``self.members`` (a list of per-member summary dicts)."""

    members: list

    def _col(self, key: str) -> np.ndarray:
        return np.array([np.nan if m[key] is None else m[key] for m in self.members], dtype=float)

    @property
    def t_train(self) -> np.ndarray:
        """(E,) first epoch with zero training error (nan if never)."""
        return self._col("t_train")

    @property
    def t_eps(self) -> np.ndarray:
        """(E,) first test epoch with zero test error (nan if never)."""
        return self._col("t_eps")

    @property
    def t_G(self) -> np.ndarray:
        """(E,) grokking time t_eps - t_train (nan if either is missing)."""
        return self._col("t_G")


@dataclass
class FitResult(MemberTimes):
    """What :meth:`Trainer.fit` returns.

    Attributes
    ----------
    history : MemberHistory
        Every column as an (E, T) array.
    summary : dict
        Aggregate numbers (epochs, wall and train time, member-token-steps per second, counts); for
        a single module, its run summary.
    members : list of dict
        Per member: seed, hyperparameters, t_train, t_eps, t_G, stop_reason, epochs, final errors...
    model : nn.Module
        Final parameters of every member.
    run_dir : Path or None
    """

    history: MemberHistory
    summary: dict
    members: list
    model: torch.nn.Module
    run_dir: Optional[Path] = None
    member_model: Optional[Callable[[int], torch.nn.Module]] = None

    def run(self, e: int = 0) -> TrainResult:
        """Member ``e`` as a single run's :class:`TrainResult` (its rows up to its last epoch; its
        model: the trained module itself, or a copy of a stacked member)."""
        m = self.members[e]
        model = self.member_model(e) if self.member_model is not None else self.model
        return TrainResult(self.history.member(e, m["epochs"]), m, model, self.run_dir)


# ------------------------------------------------------------------------------------------------
# what a callback sees
# ------------------------------------------------------------------------------------------------
class MemberView:
    """Member ``e`` of a :class:`Trainer`, as its callbacks see it.

    Attributes not defined here (``config``, ``history``, ``device``, ``probe``, ``max_epochs``,
    ``train_seconds``, ...) are the trainer's.
    """

    def __init__(self, trainer: "Trainer", e: int):
        self.trainer, self.member = trainer, e

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trainer, name)

    @property
    def t_train(self) -> Optional[int]:
        return _time(self.trainer.t_train[self.member])

    @property
    def t_eps(self) -> Optional[int]:
        return _time(self.trainer.t_eps[self.member])

    @property
    def stop_reason(self) -> Optional[str]:
        return self.trainer.stop_reason[self.member]

    @property
    def model(self):
        """The member's model (the module itself, or a copy of a stacked member's parameters)."""
        return self.trainer.members.member_model(self.member)

    def request_stop(self, reason: str = "callback") -> None:
        """Stop this member after the current epoch (recorded as its ``stop_reason``)."""
        self.trainer._requests.setdefault(self.member, reason)

    def snapshot(self) -> dict:
        """Copies of the member's parameters and optimiser state (to revert an epoch)."""
        return self.trainer.members.snapshot(self.member)

    def restore(self, snapshot: dict) -> None:
        """Load a :meth:`snapshot` back."""
        self.trainer.members.restore(self.member, snapshot)


def _time(value) -> Optional[int]:
    return int(value) if value >= 0 else None


# ------------------------------------------------------------------------------------------------
# run-directory layouts
# ------------------------------------------------------------------------------------------------
class SingleRunFiles:
    """One module's run directory, as ``tnattn train`` writes it: ``checkpoint.pt``,
    ``history.csv`` and ``history.jsonl`` (a line per epoch), ``summary.json``, ``training.png``."""

    checkpoint_name = CHECKPOINT_NAME
    lock_what = "run directory"
    outputs = ("summary.json", "history.csv", "history.jsonl")

    def __init__(self):
        self.files: Optional[HistoryFiles] = None

    def prepare(self, tr: "Trainer", resume_from: Optional[dict]) -> None:
        cfg = tr.config
        resumed = resume_from is not None
        if resumed:
            tr.load_state_dict(resume_from)
        if tr.run_dir is None:
            return
        path = tr.checkpoint_path
        if not resumed and cfg.resume and checkpoint_exists(path):
            tr.load_state_dict(load_checkpoint(path))
        elif not resumed:
            # A fresh run must never resume, or be summarised by, an older run's files. (With
            # resume but no checkpoint yet, the run restarts from epoch 0: same trajectory.)
            old = [n for n in self.outputs if (tr.run_dir / n).exists()] + ([CHECKPOINT_NAME] if checkpoint_exists(path) else [])
            if old and not (cfg.overwrite or cfg.resume):
                raise RunDirectoryError(f"run directory {tr.run_dir} already holds a run ({', '.join(old)}); resume it or set overwrite")
            for name in self.outputs + ("training.png",):
                (tr.run_dir / name).unlink(missing_ok=True)
            remove_checkpoint(path)
        self.files = HistoryFiles(tr.run_dir, tr.file_columns)
        self.files.rewrite(tr.history.member(0))

    def record(self, tr: "Trainer", rows: dict) -> None:
        if self.files is not None:
            self.files.append(rows[0])

    def state(self, tr: "Trainer") -> dict:
        cb_states = []
        if tr.config.stop_after_grok >= 0:  # the built-in rules were callbacks: keep their places
            cb_states.append({})
        if tr.config.patience > 0:
            cb_states.append({"best": float(tr.best_loss[0]), "best_epoch": int(tr.best_epoch[0])})
        return {
            "format": FORMAT_VERSION,
            "epoch": tr.epoch,
            **tr.members.state_dict(),
            "history": tr.history.member(0).state_dict(),
            "t_train": _time(tr.t_train[0]),
            "t_eps": _time(tr.t_eps[0]),
            "stop_reason": tr.stop_reason[0],
            "stop_message": tr.stop_message[0],
            "train_sites": tr.members.train_sites,
            "train_seconds": tr.members.train_seconds,
            "wall_time": tr._wall(),
            "callbacks": cb_states + [cb.state_dict() for cb in tr._checkpointed[0]],
            "config": tr.config.to_dict(),
        }

    def load(self, tr: "Trainer", state: dict) -> None:
        tr.members.load_state_dict(state)
        rows = History.from_state_dict(state["history"])
        if rows.columns != tr.file_columns:
            raise ValueError("checkpoint history columns differ from this trainer's columns")
        tr.history = MemberHistory(tr.columns, 1)
        for r in rows.rows:
            tr.history.record(int(r["epoch"]), np.zeros(1, dtype=np.int64), {c: [r[c]] for c in tr.columns}, r["wall_time"])
        tr.epoch = int(state["epoch"])
        tr.t_train[0] = -1 if state["t_train"] is None else state["t_train"]
        tr.t_eps[0] = -1 if state["t_eps"] is None else state["t_eps"]
        tr.stop_reason[0], tr.stop_message[0] = state["stop_reason"], state.get("stop_message")
        tr.stop_epoch[0] = tr.epoch
        tr.members.train_sites = int(state["train_sites"])
        tr.members.train_seconds = float(state["train_seconds"])
        tr.wall_before = float(state["wall_time"])
        cb_states = list(state["callbacks"])
        if tr.config.stop_after_grok >= 0 and cb_states:
            cb_states.pop(0)
        if tr.config.patience > 0 and cb_states:
            s = cb_states.pop(0)
            tr.best_loss[0], tr.best_epoch[0] = float(s["best"]), int(s["best_epoch"])
        _load_callbacks(tr._checkpointed[0], cb_states)

    def finish(self, tr: "Trainer") -> tuple[dict, list]:
        summary = self.summary(tr)
        if tr.run_dir is not None:
            write_json(tr.run_dir / "summary.json", result_envelope("train", tr.config, summary))
            if tr.config.plots and tr.history.T:
                from tnattn.plots.training import plot_training

                plot_training(tr.history.member(0), tr.run_dir / "training.png", t_train=summary["t_train"],
                              t_eps=summary["t_eps"], spikes=summary["loss_spikes"], title=_title(tr.config))  # fmt: skip
        return summary, [summary]

    def summary(self, tr: "Trainer") -> dict:
        """t_train, t_eps, t_G, final errors, timing and stop reason of the one member."""
        h = tr.history
        last = {c: float(h.data[c][0, h.T - 1]) for c in h.columns} if h.T else {}
        errors = {}
        for m, s in tr.test_sets.items():  # of the final model: from the last row if measured there, else now
            value = last.get(f"test_error_{m}", math.nan)
            errors[str(m)] = value if not math.isnan(value) else tr.members.final_error(0, s)
        t_train, t_eps = _time(tr.t_train[0]), _time(tr.t_eps[0])
        M = tr.members
        return {
            "epochs": tr.epoch,
            "stop_reason": tr.stop_reason[0],
            "stop_message": tr.stop_message[0],
            "signal": tr._signal,
            "t_train": t_train,
            "t_eps": t_eps,
            "t_G": t_eps - t_train if t_eps is not None and t_train is not None else None,
            "grokked": t_eps is not None,
            "final_loss": last.get("loss"),
            "final_train_error": last.get("train_error"),
            "final_test_errors": errors,
            "loss_spikes": tr.spike_epochs()[0],
            "wall_time_s": tr._wall(),
            "train_time_s": M.train_seconds,
            "tokens_per_s": M.train_sites / M.train_seconds if M.train_seconds > 0 else None,
            "n_parameters": M.n_parameters,
            "device": str(tr.device),
        }


class MembersRunFiles:
    """E stacked members' run directory: ``ensemble_checkpoint.pt``, ``summary.json`` and
    ``histories.npz`` (every column as an (E, T) array), written when the run ends."""

    checkpoint_name = ENSEMBLE_CHECKPOINT_NAME
    lock_what = "ensemble run directory"

    def prepare(self, tr: "Trainer", resume_from: Optional[dict]) -> None:
        if resume_from is not None:
            tr.load_state_dict(resume_from)
        if tr.run_dir is None:
            return
        tr.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None and tr.config.resume and checkpoint_exists(tr.checkpoint_path):
            tr.load_state_dict(load_checkpoint(tr.checkpoint_path))
            if tr.epoch > tr.config.max_epochs:
                raise RunDirectoryError(
                    f"cannot resume: {tr.run_dir} already holds {tr.epoch} epochs, more than "
                    f"max_epochs={tr.config.max_epochs}; give max_epochs >= {tr.epoch}"
                )
        elif resume_from is None:
            for name in ("summary.json", "histories.npz"):
                (tr.run_dir / name).unlink(missing_ok=True)
            remove_checkpoint(tr.checkpoint_path)

    def record(self, tr: "Trainer", rows: dict) -> None:
        pass

    def state(self, tr: "Trainer") -> dict:
        M = tr.members
        return {
            "format": FORMAT_VERSION,
            "ensemble_format": ENSEMBLE_FORMAT,
            "epoch": tr.epoch,
            "seeds": list(tr.seeds),
            "shared_data": M.shared_data,
            "data_seed": tr.data_seed,
            "config": tr.config.to_dict(),
            **M.state_dict(),
            "history": tr.history.state_dict(),
            "t_train": torch.from_numpy(tr.t_train.copy()),
            "t_eps": torch.from_numpy(tr.t_eps.copy()),
            "stop_reason": list(tr.stop_reason),
            "stop_epoch": torch.from_numpy(tr.stop_epoch.copy()),
            "best_loss": torch.from_numpy(tr.best_loss.copy()),
            "best_epoch": torch.from_numpy(tr.best_epoch.copy()),
            "member_tokens": M.train_sites,
            "train_seconds": M.train_seconds,
            "wall_time": tr._wall(),
            "callbacks": [[cb.state_dict() for cb in cbs] for cbs in tr._checkpointed],
        }

    def load(self, tr: "Trainer", state: dict) -> None:
        if state.get("ensemble_format") != ENSEMBLE_FORMAT:
            from tnattn import __version__

            found = state.get("ensemble_format")
            raise ValueError(
                "not an ensemble checkpoint" if found is None else
                f"an ensemble checkpoint of format {found!r}; tnattn {__version__} reads format {ENSEMBLE_FORMAT} "
                "only: resume it with the tnattn version that wrote it, or start the run again"
            )  # fmt: skip
        if list(state["seeds"]) != tr.seeds or bool(state["shared_data"]) != tr.members.shared_data:
            raise ValueError("cannot resume: the checkpoint has different seeds or data mode")
        tr.members.load_state_dict(state)
        tr.history = MemberHistory.from_state_dict(state["history"])
        tr.epoch = int(state["epoch"])
        tr.t_train, tr.t_eps = state["t_train"].numpy().copy(), state["t_eps"].numpy().copy()
        tr.stop_reason = list(state["stop_reason"])
        tr.stop_epoch = state["stop_epoch"].numpy().copy()
        tr.best_loss, tr.best_epoch = state["best_loss"].numpy().copy(), state["best_epoch"].numpy().copy()
        tr.members.train_sites = int(state["member_tokens"])
        tr.members.train_seconds = float(state["train_seconds"])
        tr.wall_before = float(state["wall_time"])
        for cbs, states in zip(tr._checkpointed, state.get("callbacks", [[]] * tr.E)):
            _load_callbacks(cbs, states)

    def member_summaries(self, tr: "Trainer") -> list[dict]:
        spikes = tr.spike_epochs()
        h = tr.history
        out = []
        for e in range(tr.E):
            T = int(tr.stop_epoch[e])
            final = {}
            for m in tr.test_sets:
                col = h.column(f"test_error_{m}")[e, :T]
                seen = col[~np.isnan(col)]
                final[str(m)] = float(seen[-1]) if seen.size else None
            tt, te = _time(tr.t_train[e]), _time(tr.t_eps[e])
            out.append({
                "member": e, "seed": tr.seeds[e], "lr": float(tr.lr[e]), "l1": float(tr.l1[e]), "l2": float(tr.l2[e]),
                "epochs": T, "stop_reason": tr.stop_reason[e], "t_train": tt, "t_eps": te,
                "t_G": te - tt if te is not None and tt is not None else None, "grokked": te is not None,
                "final_loss": float(h.column("loss")[e, T - 1]) if T else None,
                "final_train_error": float(h.column("train_error")[e, T - 1]) if T else None,
                "last_test_errors": final, "loss_spikes": spikes[e],
            })  # fmt: skip
        return out

    def summary(self, tr: "Trainer") -> dict:
        M = tr.members
        return {
            "E": tr.E,
            "epochs": tr.epoch,
            "member_epochs": int(tr.stop_epoch.sum()),
            "grokked": int((tr.t_eps >= 0).sum()),
            "stop_reasons": {r: tr.stop_reason.count(r) for r in sorted(set(map(str, tr.stop_reason)))},
            "wall_time_s": tr._wall(),
            "train_time_s": M.train_seconds,
            "member_token_steps": M.train_sites,
            "member_token_steps_per_s": M.train_sites / M.train_seconds if M.train_seconds > 0 else None,
            "shared_data": M.shared_data,
            "device": str(tr.device),
            "kernel_threads": tr.kernel_threads,
            "elementwise_threads": tr.elementwise_threads,
        }

    def finish(self, tr: "Trainer") -> tuple[dict, list]:
        members = self.member_summaries(tr)
        summary = self.summary(tr)
        if tr.run_dir is not None:
            write_json(tr.run_dir / "summary.json",
                       result_envelope("ensemble-train", tr.config, {"summary": summary, "members": members}))  # fmt: skip
            arrays = tr.history.arrays()
            atomic_write(tr.run_dir / "histories.npz", lambda h: np.savez_compressed(h, **arrays), mode="wb")
        return summary, members


def _load_callbacks(callbacks: list, states: list) -> None:
    if len(states) != len(callbacks):
        raise ValueError(f"checkpoint has {len(states)} callback states, trainer has {len(callbacks)} callbacks")
    for cb, s in zip(callbacks, states):
        cb.load_state_dict(s)


class _EnsembleProgress:
    """A tqdm bar over the epochs of a stacked run (active and grokked members in the postfix)."""

    def __init__(self, tr: "Trainer"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=tr.config.max_epochs, initial=tr.epoch, unit="epoch", dynamic_ncols=True, desc=f"ensemble E={tr.E}")

    def on_ensemble_epoch(self, tr: "Trainer", epoch: int) -> None:
        self.bar.set_postfix(active=len(tr.members.ids), grokked=int((tr.t_eps >= 0).sum()), refresh=False)
        self.bar.update(1)

    def on_ensemble_end(self, tr: "Trainer") -> None:
        self.bar.close()


# ------------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------------
class Trainer:
    """Train E >= 1 members with history, grokking detection, stopping rules, callbacks and checkpoints.

    Parameters
    ----------
    config : TrainConfig
        Everything shared by the members (teacher, data, model, optimiser, run control). ``seed``
        is replaced by ``seeds``; ``out`` is ignored (``run_dir`` replaces it).
    seeds : sequence of int, optional
        One run seed per member (split into model and data seeds by :func:`tnattn.train.split_seed`
        as in a single run); default ``[config.seed]``. A seed may repeat with different
        hyperparameters (the same initial model and batches under, say, another regulariser).
    lr, l1, l2 : sequence of float, optional
        Per-member learning rate and L1/L2 strengths (default: the config's value for everyone).
    shared_data : bool
        All members see one stream of batches (from ``data_seed``): faster, but then the members
        are not independent runs.
    data_seed : int, optional
        Run seed whose data seed drives the shared stream (default ``seeds[0]``).
    run_dir : path, optional
        Where checkpoints and results go (None writes nothing); see :class:`MembersRunFiles`.
    device : torch.device or str, optional
        Default: ``config.device`` resolved as in :func:`tnattn.train.train`.
    callbacks : sequence
        Per-member :class:`~tnattn.train.Callback` objects (one object serves every member: give
        a callable ``f(e) -> Callback`` for a callback that keeps per-member state), and run
        observers with ``on_ensemble_epoch(trainer, epoch)`` (and optionally
        ``on_ensemble_end(trainer)``), called after every epoch, e.g. the loggers of
        :mod:`tnattn.loggers`. ``config.logger`` adds one writing into ``run_dir/logs``.
    on_epoch : callable, optional
        ``on_epoch(trainer, epoch)`` after every epoch (after any checkpoint of that epoch).
    run_files : SingleRunFiles or MembersRunFiles, optional
        The run directory's layout (default :class:`MembersRunFiles`; :func:`tnattn.train.train`
        passes :class:`SingleRunFiles` for its one member).
    kernel_threads : int, optional
        Threads of the fused kernels during :meth:`fit` (default ``config.threads``, or torch's
        thread count when that is 0).
    elementwise_threads : int, optional
        torch's intra-op threads during :meth:`fit` for everything else (losses, optimiser,
        indexing: many small operations). Default 1: on a busy machine each OpenMP region waits
        for its slowest, possibly descheduled, thread, which we measured to slow whole epochs
        down many times over, while the kernel calls hold most of the work. None keeps torch's
        setting.

    Raises
    ------
    TypeError
        ``config`` is not a TrainConfig.
    ValueError
        No seeds, a negative seed, identical members, or a per-member list of the wrong length.
    """

    def __init__(
        self,
        config: TrainConfig,
        seeds: Optional[Sequence[int]] = None,
        *args,
        lr: Optional[Sequence[float]] = None,
        l1: Optional[Sequence[float]] = None,
        l2: Optional[Sequence[float]] = None,
        shared_data: bool = False,
        data_seed: Optional[int] = None,
        run_dir: str | os.PathLike | None = None,
        device=None,
        callbacks: Sequence = (),
        on_epoch: Optional[Callable] = None,
        kernel_threads: Optional[int] = None,
        elementwise_threads: Optional[int] = 1,
        run_files: "SingleRunFiles | MembersRunFiles | None" = None,
        **legacy,
    ):
        if isinstance(config, torch.nn.Module):
            # The single-model signature Trainer(model, batches, config, ...) of tnattn <= 0.1.
            warnings.warn("Trainer(model, batches, config, ...) is deprecated; use Trainer.from_model(model, batches, "
                          "config, ...)", DeprecationWarning, stacklevel=2)  # fmt: skip
            other = Trainer.from_model(config, seeds, *args, run_dir=run_dir, device=device, callbacks=callbacks, **legacy)
            self.__dict__.update(other.__dict__)
            return
        if args or legacy:
            raise TypeError(f"unexpected arguments: {args or sorted(legacy)}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        seeds = [config.seed] if seeds is None else [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one member")
        for s in seeds:
            if s < 0:
                raise ValueError(f"seeds must be >= 0, got {s}")
        E = len(seeds)
        lrs = per_member("lr", lr, E, config.lr, positive=True)
        l1s = per_member("l1", l1, E, config.l1, positive=False)
        l2s = per_member("l2", l2, E, config.l2, positive=False)
        if len(set(zip(seeds, lrs.tolist(), l1s.tolist(), l2s.tolist()))) != E:
            raise ValueError("members must differ in seed or hyperparameters (identical members are the same run)")
        if kernel_threads is None:
            kernel_threads = config.threads if config.threads > 0 else torch.get_num_threads()
        for name, n in (("kernel_threads", kernel_threads), ("elementwise_threads", elementwise_threads)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ValueError(f"{name} must be an int >= 1, got {n!r}")
        if device is None:
            from tnattn.train.build import resolve_device

            device = resolve_device(config.device)
        self.data_seed = seeds[0] if data_seed is None else int(data_seed)
        members = StackedMembers(config, seeds, lrs, l1s, l2s, shared_data=bool(shared_data), data_seed=self.data_seed,
                                 device=device)  # fmt: skip
        if run_files is None:
            run_files = MembersRunFiles()
        elif isinstance(run_files, SingleRunFiles) and E != 1:
            raise ValueError(f"run_files: a single run's files hold one member, not {E}")
        self._setup(members, config, members.test_sets, run_dir, callbacks, run_files, on_epoch,
                    (kernel_threads, elementwise_threads))  # fmt: skip

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        batches: Iterable[LabelledSet],
        config: TrainConfig,
        *,
        train_set: Optional[LabelledSet] = None,
        test_sets: dict,
        run_dir: str | os.PathLike | None = None,
        callbacks: Sequence[Callback] = (),
        generators: Optional[dict] = None,
        device=None,
    ) -> "Trainer":
        """A trainer of one given model (E = 1) on given batches (see :class:`~tnattn.train.members.ModuleMember`).

        Parameters
        ----------
        model : nn.Module
            Has ``logits(x) -> (N, M, c)`` and ``predict(x) -> (N, M)``; ``contexts(x) -> (L, R)``
            is needed only for the D_eff column (nan otherwise).
        batches : iterable of LabelledSet
            Re-iterable: each iteration is one epoch of mini-batches. A
            :class:`~tnattn.data.MiniBatches`' generator is checkpointed automatically.
        config : TrainConfig
            Uses the optimisation and run-control fields.
        train_set : LabelledSet, optional
            The uncropped training set for ``train_error`` (default: ``batch_error``).
        test_sets : dict[int, LabelledSet]
            Test sets by length (at least one).
        run_dir : path, optional
            History files, checkpoints, summary and plot (:class:`SingleRunFiles`); None writes nothing.
        callbacks : sequence of Callback
            Run after the built-in stopping rules and before the progress bar.
        generators : dict[str, torch.Generator], optional
            Further generators whose states must be checkpointed.
        device : torch.device or str, optional
            Where batches go (default: the model's device).
        """
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if not test_sets:
            raise ValueError("test_sets must hold at least one LabelledSet")
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
        members = ModuleMember(model, batches, config, train_set=train_set, generators=generators, device=device)
        obj = cls.__new__(cls)
        obj.data_seed = config.seed
        obj._setup(members, config, {int(m): s for m, s in test_sets.items()}, run_dir, callbacks, SingleRunFiles(),
                   None, (None, None))  # fmt: skip
        return obj

    def _setup(self, members, config, test_sets, run_dir, callbacks, files, on_epoch, threads) -> None:
        self.members, self.config, self.files, self.on_epoch = members, config, files, on_epoch
        self.kernel_threads, self.elementwise_threads = threads
        E = self.E = members.E
        self.seeds, self.lr, self.l1, self.l2 = members.seeds, members.lr, members.l1, members.l2
        self.model, self.device, self.test_sets = members.model, members.device, test_sets
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.max_epochs = config.max_epochs
        self.schedule = PenaltySchedule(config.penalty_schedule, config.schedule_epochs, config.schedule_factor)
        self.probe = test_sets[min(test_sets)].x[: config.deff_probe] if config.deff_probe > 0 else None
        single = isinstance(files, SingleRunFiles)
        self.observers = [cb for cb in callbacks if not single and callable(getattr(cb, "on_ensemble_epoch", None))]
        per_member = [cb for cb in callbacks if cb not in self.observers]
        for cb in per_member:
            if not (isinstance(cb, Callback) or callable(cb)):
                raise TypeError(f"callbacks must be Callback objects, factories or have an on_ensemble_epoch(trainer, "
                                f"epoch) method, got {type(cb).__name__}")  # fmt: skip
        hooks = [[cb if isinstance(cb, Callback) else cb(e) for cb in per_member] for e in range(E)]
        # Stateful callbacks are checkpointed; the progress bar and observers such as loggers
        # (checkpointed = False) only watch, so resuming with or without them is the same run.
        self._checkpointed = [[cb for cb in cbs if cb.checkpointed] for cbs in hooks]
        progress = [ProgressBar()] if single and config.progress else []
        self._hooks = [[*ck, *(cb for cb in cbs if not cb.checkpointed), *progress] for ck, cbs in zip(self._checkpointed, hooks)]
        self._batch_hooks = any(type(cb).on_batch_end is not Callback.on_batch_end for cbs in self._hooks for cb in cbs)
        self._views = [MemberView(self, e) for e in range(E)]
        extra = list(dict.fromkeys(c for cb in self._hooks[0] for c in cb.columns())) if E else []
        self.columns = (["loss", "penalty", "batch_error", "train_error"] + [f"test_error_{m}" for m in test_sets]
                        + ["deff", "spike", "lambda1", "lambda2", "grad_norm"] + members.norm_columns + extra)  # fmt: skip
        self.file_columns = ["epoch", *self.columns, "wall_time"]
        self._row_hooks = single or any(cbs for cbs in self._hooks)
        self.history = MemberHistory(self.columns, E)
        self.epoch = 0
        self.t_train = np.full(E, -1, dtype=np.int64)
        self.t_eps = np.full(E, -1, dtype=np.int64)
        self.stop_reason: list[Optional[str]] = [None] * E
        self.stop_message: list[Optional[str]] = [None] * E
        self.stop_epoch = np.zeros(E, dtype=np.int64)
        self.best_loss = np.full(E, np.inf)
        self.best_epoch = np.zeros(E, dtype=np.int64)
        self.wall_before = 0.0
        self._t0: Optional[float] = None
        self._signal: Optional[int] = None
        self._requests: dict[int, str] = {}

    # ------------------------------------------------------------------------------------------
    def member_config(self, e: int) -> TrainConfig:
        """The single-run config whose :func:`tnattn.train.train` run member ``e`` reproduces."""
        return dataclasses.replace(self.config, seed=self.seeds[e], lr=float(self.lr[e]), l1=float(self.l1[e]),
                                   l2=float(self.l2[e]))  # fmt: skip

    @property
    def active(self) -> np.ndarray:
        """Members still training (not stopped), in increasing order."""
        return np.array([e for e in range(self.E) if self.stop_reason[e] is None], dtype=np.int64)

    def __getattr__(self, name: str) -> Any:
        # The member set's attributes read through: train_seconds, train_sites (member-token-steps
        # so far), shared_data, optimizer, batches, param_names and, of stacked members, the step
        # strategy and evaluators (step, evaluator, train_evaluator).
        if name == "members":  # not built yet
            raise AttributeError(name)
        if name == "member_tokens":  # the former EnsembleTrainer's name
            name = "train_sites"
        return getattr(self.members, name)

    # ------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.run_dir / self.files.checkpoint_name if self.run_dir is not None else None

    def state_dict(self) -> dict:
        """Everything needed to continue the run (tensors and plain containers only)."""
        return self.files.state(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (same model and data; same config up to run-control fields)."""
        self.config.check_resume(state["config"])
        self.files.load(self, state)
        self.members._work = None

    def save_checkpoint(self) -> Optional[Path]:
        """Write the checkpoint atomically (no-op without a run directory)."""
        if self.checkpoint_path is None:
            return None
        return save_checkpoint(self.checkpoint_path, self.state_dict())

    # ------------------------------------------------------------------------------------------
    # one epoch's measurements
    # ------------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict:
        """Run the optimiser over one epoch of the active members' batches (without the loop's
        bookkeeping); returns the batch-averaged measurements, arrays over the active members."""
        if getattr(self.members, "_work", None) is None:
            self.members.gather(self.active)
        return self.members.train_epoch(epoch, self.schedule(epoch))

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict:
        """Training error every epoch; test errors and D_eff on each active member's test epochs."""
        from tnattn.metrics import effective_dimension

        cfg, M = self.config, self.members
        Ea = len(M.ids)
        out: dict[str, Any] = {"train_error": M.train_error()}
        test_now = np.full(Ea, epoch % cfg.eval_every == 0)
        if cfg.eval_when_fit and out["train_error"] is not None:
            test_now |= out["train_error"] == 0.0
        k = cfg.eval_screen
        if k > 0 and not test_now.all():
            # Exact screen for t_eps: zero error on the full test sets implies zero error on their
            # first k sequences, so a full evaluation whenever those are error-free misses no
            # zero-error epoch (with eval_every = 10 alone, t_eps was late by up to 9 epochs).
            cand = np.nonzero(~test_now)[0]
            for s in self.test_sets.values():
                cand = cand[M.test_error(cand, LabelledSet(s.x[:k], s.y[:k])) == 0.0]
                if not cand.size:
                    break
            test_now[cand] = True
        sel = np.nonzero(test_now)[0]
        for m, s in self.test_sets.items():
            out[f"test_error_{m}"] = np.full(Ea, np.nan)
            if sel.size:
                out[f"test_error_{m}"][sel] = M.test_error(sel, s)
        out["deff"] = np.full(Ea, np.nan)
        out["contexts_zero"] = np.zeros(Ea, dtype=bool)
        if sel.size and self.probe is not None:
            pts = M.probe_points(sel, self.probe)
            if pts is not None:
                out["deff"][sel] = effective_dimension(pts) if pts.shape[1] >= 2 else np.nan
                out["contexts_zero"][sel] = ~pts.reshape(pts.shape[0], -1).any(1)
        out.update(M.norms())
        return out

    def _update_members(self, epoch: int, ids: np.ndarray, row: dict) -> None:
        """Grokking times and the built-in stopping rules of the active members ``ids``."""
        cfg = self.config
        tests = np.stack([row[f"test_error_{m}"] for m in self.test_sets])  # (n_lengths, Ea)
        for k, e in enumerate(ids):
            if self.t_train[e] < 0 and row["train_error"][k] == 0.0:
                self.t_train[e] = epoch
            if self.t_eps[e] < 0 and not np.isnan(tests[:, k]).any() and (tests[:, k] == 0.0).all():
                self.t_eps[e] = epoch
            if cfg.grokking_definition == "stays_zero":
                # a measured nonzero error clears the time: the zero did not stay
                if row["train_error"][k] > 0.0:
                    self.t_train[e] = -1
                if (np.nan_to_num(tests[:, k]) > 0.0).any():
                    self.t_eps[e] = -1
            reason, message = None, None
            if not row["finite"][k]:
                reason = "diverged"
            elif (message := _dead_message(row, k)) is not None:
                reason = "dead"
            elif cfg.stop_after_grok >= 0 and self.t_eps[e] >= 0 and epoch >= self.t_eps[e] + cfg.stop_after_grok:
                reason = "grokked"
            elif cfg.patience > 0:
                loss = row["loss"][k]
                if loss < self.best_loss[e] - cfg.min_delta:
                    self.best_loss[e], self.best_epoch[e] = float(loss), epoch
                elif epoch - self.best_epoch[e] >= cfg.patience:
                    reason = "patience"
            if reason is not None:
                self.stop_reason[e], self.stop_message[e] = reason, message

    def _spike_onset(self, e: int, loss: float) -> float:
        """1.0 if this epoch's loss starts a spike of member ``e``, else 0.0 (judging the trailing
        ``window + 2`` values online gives the onsets of the whole curve: the detector is causal)."""
        from tnattn.metrics import detect_loss_spikes

        T = self.history.T
        tail = np.append(self.history.data["loss"][e, max(0, T - _SPIKE_WINDOW - 1) : T].astype(np.float64), loss)
        if len(tail) <= _SPIKE_WINDOW:
            return 0.0
        onsets = detect_loss_spikes(tail, window=_SPIKE_WINDOW)
        return 1.0 if len(onsets) and int(onsets[-1]) == len(tail) - 1 else 0.0

    def spike_epochs(self) -> list[list[int]]:
        """Per member, the (1-based) epochs of loss-spike onsets over its whole loss curve; also
        writes the ``spike`` column."""
        from tnattn.metrics import detect_loss_spikes

        loss, spike = self.history.column("loss"), self.history.data["spike"]
        out = []
        for e in range(self.E):
            T = int(self.stop_epoch[e]) or self.history.T
            onsets = detect_loss_spikes(loss[e, :T].astype(np.float64), window=_SPIKE_WINDOW) if T > _SPIKE_WINDOW else []
            spike[e, :T] = 0.0
            for t in onsets:
                spike[e, int(t)] = 1.0
            out.append([int(t) + 1 for t in onsets])
        return out

    # ------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------
    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def _on_signal(self, signum, frame):
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now (the last checkpoint stays valid)
        self._signal = signum

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _call(self, ids, hook: str, *args) -> None:
        for e in ids:
            for cb in self._hooks[e]:
                getattr(cb, hook)(self._views[e], *args)

    def fit(self, resume_from: Optional[dict] = None) -> FitResult:
        """Train until every member has stopped or ``max_epochs`` is reached (or a signal arrives).

        The run directory is locked while the run lasts (:mod:`tnattn.locks`). With
        ``config.resume`` and a checkpoint in the run directory, the run continues from it; a
        fresh single run refuses a directory that already holds a run unless ``config.overwrite``.

        Parameters
        ----------
        resume_from : dict, optional
            A checkpoint state (:meth:`state_dict`) to continue from.

        Returns
        -------
        FitResult

        Raises
        ------
        RunDirectoryError, RunLockedError
            See above.
        """
        old_threads = torch.get_num_threads()
        if self.elementwise_threads is not None:
            torch.set_num_threads(self.elementwise_threads)
        logger = None
        if self.config.logger != "none" and self.run_dir is not None and isinstance(self.files, MembersRunFiles):
            from tnattn.loggers import make_logger

            logger = make_logger(self.config.logger, self.run_dir / "logs", config=self.config.to_dict())
            self.observers.append(logger)
        try:
            with contextlib.ExitStack() as stack:
                if self.kernel_threads is not None:  # stacked members (a module runs on torch's threads)
                    from tnattn.ops import kernel_threads

                    stack.enter_context(kernel_threads(self.kernel_threads))
                if self.run_dir is not None:
                    stack.enter_context(lock_directory(self.run_dir, self.files.lock_what))
                return self._fit(resume_from)
        finally:
            torch.set_num_threads(old_threads)
            if logger is not None:
                self.observers.remove(logger)
                logger.close()

    def _fit(self, resume_from: Optional[dict]) -> FitResult:
        cfg = self.config
        self.files.prepare(self, resume_from)
        # Members stopped only by max_epochs (or a signal) continue when epochs remain.
        for e in range(self.E):
            if self.stop_reason[e] in ("max_epochs", "interrupted", None) and self.epoch < cfg.max_epochs:
                self.stop_reason[e] = self.stop_message[e] = None
            elif self.stop_reason[e] in ("interrupted", None):
                self.stop_reason[e] = "max_epochs"
        self._t0 = time.perf_counter()
        if not len(self.active):
            return self._finish()
        self._signal = None
        self.members.gather(self.active)
        observers = self.observers + ([_EnsembleProgress(self)] if cfg.progress and not isinstance(self.files, SingleRunFiles) else [])
        previous = self._install_signals()
        started = self.members.ids
        try:
            self._call(started, "on_train_start")
            while self.epoch < cfg.max_epochs and len(self.members.ids):
                self._epoch(self.epoch + 1)
                for obs in observers:
                    obs.on_ensemble_epoch(self, self.epoch)
                if self._signal is not None:
                    break
            self.members.scatter()
            for e in range(self.E):
                if self.stop_reason[e] is None:
                    self.stop_reason[e], self.stop_epoch[e] = "max_epochs", self.epoch
            self.save_checkpoint()
        finally:
            self._call(started, "on_train_end")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for obs in observers:
                end = getattr(obs, "on_ensemble_end", None)
                if end is not None:
                    end(self)
        return self._finish()

    def _epoch(self, epoch: int) -> None:
        """Train, measure, record and judge one epoch of the active members."""
        cfg, M = self.config, self.members
        ids = M.ids
        self._call(ids, "on_epoch_start", epoch)
        on_batch = None
        if self._batch_hooks:
            def on_batch(b, losses):
                for e, loss in zip(ids, losses):
                    for cb in self._hooks[e]:
                        cb.on_batch_end(self._views[e], epoch, b, loss)
        row = M.train_epoch(epoch, self.schedule(epoch), on_batch)
        row.update(self.evaluate(epoch))
        if row["train_error"] is None:
            row["train_error"] = row["batch_error"]
        row["finite"] = M.finite()
        self.epoch = epoch
        self._update_members(epoch, ids, row)
        values = {c: np.asarray(row[c], dtype=np.float64) if c in row else np.full(len(ids), np.nan) for c in self.columns}
        rows = {}
        if self._row_hooks:
            self._requests = {}
            for k, e in enumerate(ids):
                r = {c: float(values[c][k]) for c in self.columns}
                r["spike"] = values["spike"][k] = self._spike_onset(e, r["loss"])
                r = {"epoch": epoch, **r}
                for cb in self._hooks[e]:
                    cb.on_epoch_end(self._views[e], epoch, r)
                for c in self.columns:
                    values[c][k] = r[c]
                if self.stop_reason[e] is None and e in self._requests:
                    self.stop_reason[e] = self._requests[e]
                rows[e] = r
        wall = self._wall()
        self.history.record(epoch, ids, values, wall)
        for r in rows.values():
            r["wall_time"] = wall
        self.files.record(self, rows)
        for e in ids:
            if self.stop_reason[e] is None and epoch >= cfg.max_epochs:
                self.stop_reason[e] = "max_epochs"
        dead = [int(e) for e in ids if self.stop_reason[e] == "dead"]
        if dead and self.E == 1:
            warnings.warn(f"training stopped at epoch {epoch}: {self.stop_message[0]}", DeadModelWarning, stacklevel=4)
        elif dead:
            warnings.warn(f"ensemble epoch {epoch}: member(s) {dead} stopped dead (their probe contexts are all exactly "
                          "zero, or their gradient was exactly zero with a non-zero loss)", DeadModelWarning, stacklevel=4)  # fmt: skip
        if self._signal is not None:
            for e in ids:
                if self.stop_reason[e] is None:
                    self.stop_reason[e] = "interrupted"
        stopped = [e for e in ids if self.stop_reason[e] is not None]
        for e in stopped:
            self.stop_epoch[e] = epoch
        if self._signal is not None:
            return
        if stopped:
            M.scatter()
            M.gather(self.active)
        # Finished members are saved right away, so that a crash never loses them.
        if self.run_dir is not None and (stopped or epoch % cfg.checkpoint_every == 0) and len(M.ids):
            self.save_checkpoint()
        if self.on_epoch is not None:
            self.on_epoch(self, epoch)

    # ------------------------------------------------------------------------------------------
    # results
    # ------------------------------------------------------------------------------------------
    def member_summaries(self) -> list[dict]:
        """Per member: seed, hyperparameters, grokking times, stop reason, final errors, spikes."""
        if isinstance(self.files, SingleRunFiles):
            return [self.files.summary(self)]
        return self.files.member_summaries(self)

    def summary(self) -> dict:
        """The run's summary (aggregate numbers; for a single module its run summary)."""
        return self.files.summary(self)

    def _finish(self) -> FitResult:
        self.members.scatter()
        summary, members = self.files.finish(self)
        return FitResult(self.history, summary, members, self.model, self.run_dir, self.members.member_model)


def _dead_message(row: dict, k: int) -> Optional[str]:
    """Why active member ``k`` of an epoch's measurements can no longer learn, or None.

    Dead means: the left contexts at the middle site of every probe sequence are exactly zero
    (the output no longer depends on the input: what vanishing or overflowing norms leave), or the
    gradient of the objective was exactly zero on every batch of the epoch while the loss is not
    (no optimiser step can change anything).
    """
    if row["contexts_zero"][k]:
        return ("dead model: the contexts of every probe sequence are exactly zero, so the output no longer "
                "depends on the input (check init_std and the parameter norms)")  # fmt: skip
    loss = row["loss"][k]
    if row["grad_norm"][k] == 0.0 and np.isfinite(loss) and loss > 0.0:
        return (f"dead model: the gradient was exactly zero on every batch while the loss is {loss:.4g}, "
                "so no optimiser step can change the model")  # fmt: skip
    return None


def _title(config: TrainConfig) -> str:
    from tnattn.teachers import teacher_title

    reg = []
    if config.l1:
        reg.append(f"L1 {config.l1:g}")
    if config.l2:
        reg.append(f"L2 {config.l2:g} ({config.l2_mode})")
    return (f"{teacher_title(config)}, D={config.D}, {config.optimizer} lr={config.lr:g}"
            + (", " + ", ".join(reg) if reg else "") + f", seed {config.seed}")  # fmt: skip

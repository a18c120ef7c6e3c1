"""The training loop: :class:`Trainer` (bring your own model and data; :func:`tnattn.train.train`
builds one from a config).

One epoch = one pass over the mini-batches, each followed by one optimiser step; then the epoch's
measurements form one history row:

``epoch``
    1-based epoch number.
``loss``, ``penalty``
    Site-weighted mean data loss and mean penalty of the epoch's batches (measured before each
    batch's update).
``batch_error``
    Fraction of wrong sites in the epoch's (cropped) batches, before each update.
``train_error``
    Fraction of wrong sites on the uncropped training set after the epoch.
``test_error_<M>``
    Fraction of wrong sites on the test set of length M, on the *test epochs*: every
    ``eval_every``-th epoch, (with ``eval_when_fit``) every epoch with zero training error, and
    every epoch on which the first ``eval_screen`` sequences of every test length are error-free,
    so that t_eps is exact to the epoch; nan on the other epochs.
``deff``
    Effective dimension (PCA entropy; documentation: Science, "Effective dimension") of the left
    contexts at the middle site ``M // 2`` of the first ``deff_probe`` sequences of the shortest
    test set, on the test epochs.
``spike``
    1.0 at the onset of a loss spike (:func:`tnattn.metrics.detect_loss_spikes`, trailing window
    of 20 epochs), else 0.0.
``lambda1``, ``lambda2``
    The scheduled penalty strengths used in the epoch.
``grad_norm``
    Mean over the batches of the total gradient norm (of the data loss plus penalty).
``norm_<name>``
    Frobenius norm of every named parameter after the epoch.
``wall_time``
    Seconds since the start of the run (summed over resumed segments). The only column that
    differs between a resumed and an uninterrupted run.

Dead models: a model whose probe contexts (the D_eff probe, on test epochs) are all exactly zero,
or whose objective had an exactly zero gradient on every batch of an epoch with a non-zero loss,
cannot learn any more; the run stops with ``stop_reason = "dead"``, a ``stop_message`` saying which
and a :class:`~tnattn.errors.DeadModelWarning`, instead of running to ``max_epochs``.

Grokking: ``t_train`` is the first epoch with zero training error, ``t_eps`` the first test epoch
with zero error on every test length (the paper's definition, arXiv:2210.15435, Sec. 3),
``t_G = t_eps - t_train``. With ``grokking_definition="stays_zero"`` a later epoch with a nonzero
error clears the time again, so it is the first epoch of the final zero stretch
(:func:`tnattn.metrics.zero_times` gives both from a history).

Interruption: SIGINT (Ctrl-C) and SIGTERM finish the current epoch, write a checkpoint and the
summary, and return (a second Ctrl-C aborts at once). Resuming from a checkpoint restores model,
optimiser, every generator state, history, callbacks and counters, so the history of a resumed run
equals an uninterrupted run's (on CPU; ``wall_time`` aside).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from tnattn.data import LabelledSet, MiniBatches
from tnattn.errors import DeadModelWarning, RunDirectoryError
from tnattn.io import result_envelope, write_json
from tnattn.locks import lock_directory
from tnattn.teachers import teacher_title
from tnattn.train.callbacks import Callback, Patience, ProgressBar, StopAfterGrokking
from tnattn.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    checkpoint_exists,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from tnattn.train.config import TrainConfig
from tnattn.train.history import History, HistoryFiles
from tnattn.train.losses import make_loss
from tnattn.train.penalties import PenaltySchedule, apply_l2, l1_penalty, l2_penalty

__all__ = ["Trainer", "TrainResult", "evaluate_error"]

# Context entries (sites x D) per evaluation chunk: bounds the memory on long test sets while
# keeping chunks large (each chunk costs a scan over the sequence length).
_EVAL_ELEMENTS = 1 << 23
# Trailing window (epochs) of the loss-spike detector.
_SPIKE_WINDOW = 20
# Stop reasons after which resuming has nothing left to do.
_FINAL_REASONS = ("grokked", "patience", "callback", "dead")
# Files of a run the trainer writes (besides the checkpoints and the plot).
_RUN_OUTPUTS = ("summary.json", "history.csv", "history.jsonl")


def _predict_from_logits(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] == 1:
        return (logits[..., 0] > 0).long()
    return logits.argmax(dim=-1)


@torch.no_grad()
def evaluate_error(model: torch.nn.Module, data: LabelledSet, device=None) -> float:
    """Fraction of wrong output sites of ``model.predict`` on ``data``, evaluated in chunks.

    Parameters
    ----------
    model : nn.Module
        Has ``predict(x) -> (N, M)`` int64.
    data : LabelledSet
        Inputs (N, M) and targets (N, M).
    device : torch.device, optional
        Where to evaluate (default: where ``data`` lives).
    """
    N, M = data.x.shape
    D = int(getattr(model, "D", 32))
    chunk = max(1, _EVAL_ELEMENTS // (max(M, 1) * D))
    wrong = 0
    for start in range(0, N, chunk):
        x = data.x[start : start + chunk]
        y = data.y[start : start + chunk]
        if device is not None:
            x, y = x.to(device), y.to(device)
        wrong += int((model.predict(x) != y).sum())
    return wrong / (N * M)


def _effective_dimension(points: torch.Tensor) -> float:
    from tnattn.metrics import effective_dimension

    return float(effective_dimension(points))


@dataclass
class TrainResult:
    """What a run returns.

    Attributes
    ----------
    history : History
        Per-epoch rows (see the module docstring for the columns).
    summary : dict
        The ``results`` part of ``summary.json`` (t_train, t_eps, t_G, final errors, timing...).
    model : nn.Module
        The trained model (final parameters).
    run_dir : Path or None
        Where the files are (None when the trainer was given no run directory).
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


class Trainer:
    """Train a model on mini-batches, with history, grokking detection, stopping rules and checkpoints.

    Parameters
    ----------
    model : nn.Module
        Has ``logits(x) -> (N, M, c)`` and ``predict(x) -> (N, M)``; ``contexts(x) -> (L, R)`` is
        needed only for the D_eff column (nan otherwise).
    batches : iterable of LabelledSet
        Re-iterable: each iteration is one epoch of mini-batches. If it is a
        :class:`~tnattn.data.MiniBatches`, its generator is checkpointed automatically.
    config : TrainConfig
        Uses the optimisation and run-control fields (optimizer, lr, loss, activation, l1, l2,
        l2_mode, penalty schedule, max_epochs, stop_after_grok, patience, eval_every, deff_probe,
        checkpoint_every, progress, resume).
    train_set : LabelledSet, optional
        The uncropped training set for ``train_error``; without it, ``train_error`` is the
        epoch's ``batch_error``.
    test_sets : dict[int, LabelledSet]
        Test sets by length (at least one).
    run_dir : path, optional
        Directory for history files, checkpoints, summary and plots; None writes nothing.
    callbacks : sequence of Callback
        Extra callbacks, run after the built-in stopping rules and before the progress bar.
    generators : dict[str, torch.Generator], optional
        Further generators whose states must be checkpointed (the data generator of a
        ``MiniBatches`` is added as ``"data"``).
    device : torch.device or str, optional
        Where batches are moved before the forward pass (default: the model's device).
    """

    def __init__(
        self,
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
    ):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if not test_sets:
            raise ValueError("test_sets must hold at least one LabelledSet")
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
        self.model = model
        self.batches = batches
        self.config = config
        self.train_set = train_set
        self.test_sets = {int(m): s for m, s in test_sets.items()}
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.generators = dict(generators or {})
        if isinstance(batches, MiniBatches) and "data" not in self.generators:
            self.generators["data"] = batches.generator
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.max_epochs = config.max_epochs

        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        if config.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.params, lr=config.lr)
        else:
            self.optimizer = torch.optim.SGD(self.params, lr=config.lr)
        self.loss_fn = make_loss(config.loss, config.activation)
        self.schedule = PenaltySchedule(config.penalty_schedule, config.schedule_epochs, config.schedule_factor)

        builtin: list[Callback] = []
        if config.stop_after_grok >= 0:
            builtin.append(StopAfterGrokking(config.stop_after_grok))
        if config.patience > 0:
            builtin.append(Patience(config.patience, config.min_delta))
        # Stateful callbacks (checkpointed); the progress bar and observers such as loggers
        # (checkpointed = False) only watch, so that resuming with or without them is the same run.
        self.callbacks: list[Callback] = builtin + [cb for cb in callbacks if cb.checkpointed]
        observers = [cb for cb in callbacks if not cb.checkpointed]
        self._hooks: list[Callback] = self.callbacks + observers + ([ProgressBar()] if config.progress else [])

        smallest = min(self.test_sets)
        probe = self.test_sets[smallest].x[: config.deff_probe] if config.deff_probe > 0 else None
        self.probe = probe

        self.param_names = [name for name, _ in model.named_parameters()]
        extra = [c for cb in self._hooks for c in cb.columns()]
        self.columns = (
            ["epoch", "loss", "penalty", "batch_error", "train_error"]
            + [f"test_error_{m}" for m in self.test_sets]
            + ["deff", "spike", "lambda1", "lambda2", "grad_norm"]
            + [f"norm_{n.replace('.', '_')}" for n in self.param_names]
            + extra
            + ["wall_time"]
        )
        self.history = History(self.columns)
        self.epoch = 0
        self.t_train: Optional[int] = None
        self.t_eps: Optional[int] = None
        self.stop_reason: Optional[str] = None
        self.stop_message: Optional[str] = None
        self._contexts_vanished = False
        self.train_sites = 0
        self.train_seconds = 0.0
        self.wall_before = 0.0  # wall time of earlier (resumed) segments
        self._stop_request: Optional[str] = None
        self._signal: Optional[int] = None
        self._t0: Optional[float] = None
        self._files = HistoryFiles(self.run_dir, self.columns) if self.run_dir is not None else None

    # ------------------------------------------------------------------------------------------
    # control
    # ------------------------------------------------------------------------------------------
    def request_stop(self, reason: str = "callback") -> None:
        """Stop after the current epoch (recorded as ``stop_reason``)."""
        if self._stop_request is None:
            self._stop_request = reason

    def snapshot(self) -> dict:
        """Copies of the model and optimiser states (for callbacks that may revert an epoch)."""
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": _clone(self.optimizer.state_dict()),
        }

    def restore(self, snapshot: dict) -> None:
        """Load a :meth:`snapshot` back into the model and optimiser."""
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(_clone(snapshot["optimizer"]))

    # ------------------------------------------------------------------------------------------
    # checkpoint state
    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue the run bit-for-bit (tensors and plain containers)."""
        return {
            "format": FORMAT_VERSION,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "generators": {k: g.get_state() for k, g in self.generators.items()},
            },
            "history": self.history.state_dict(),
            "t_train": self.t_train,
            "t_eps": self.t_eps,
            "stop_reason": self.stop_reason,
            "stop_message": self.stop_message,
            "train_sites": self.train_sites,
            "train_seconds": self.train_seconds,
            "wall_time": self._wall(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (the trainer must be built with the same model and data)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        saved = state["rng"]["generators"]
        if set(saved) != set(self.generators):
            raise ValueError(f"checkpoint has generators {sorted(saved)}, trainer has {sorted(self.generators)}")
        for k, g in self.generators.items():
            g.set_state(saved[k])
        history = History.from_state_dict(state["history"])
        if history.columns != self.columns:
            raise ValueError("checkpoint history columns differ from this trainer's columns")
        self.history = history
        self.epoch = int(state["epoch"])
        self.t_train, self.t_eps = state["t_train"], state["t_eps"]
        self.stop_reason = state["stop_reason"]
        self.stop_message = state.get("stop_message")
        self.train_sites = int(state["train_sites"])
        self.train_seconds = float(state["train_seconds"])
        self.wall_before = float(state["wall_time"])
        cb_states = state["callbacks"]
        if len(cb_states) != len(self.callbacks):
            raise ValueError(f"checkpoint has {len(cb_states)} callback states, trainer has {len(self.callbacks)} callbacks")
        for cb, s in zip(self.callbacks, cb_states):
            cb.load_state_dict(s)

    @property
    def checkpoint_path(self) -> Optional[Path]:
        return self.run_dir / CHECKPOINT_NAME if self.run_dir is not None else None

    def save_checkpoint(self) -> Optional[Path]:
        """Write the checkpoint atomically (no-op without a run directory)."""
        if self.checkpoint_path is None:
            return None
        return save_checkpoint(self.checkpoint_path, self.state_dict())

    # ------------------------------------------------------------------------------------------
    # one epoch
    # ------------------------------------------------------------------------------------------
    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def train_epoch(self, epoch: int) -> dict:
        """Run the optimiser over one epoch of batches; returns the batch-averaged measurements."""
        cfg = self.config
        mult = self.schedule(epoch)
        lam1, lam2 = cfg.l1 * mult, cfg.l2 * mult
        self.model.train()
        loss_sum = pen_sum = grad_sum = 0.0
        wrong = sites = n_batches = 0
        t0 = time.perf_counter()
        for b, batch in enumerate(self.batches):
            x, y = batch.x.to(self.device), batch.y.to(self.device)
            logits = self.model.logits(x)
            data_loss = self.loss_fn(logits, y)
            total = data_loss
            penalty = 0.0
            if lam1 > 0:
                pen = lam1 * l1_penalty(self.params)
                total = total + pen
                penalty += float(pen.detach())
            if lam2 > 0 and cfg.l2_mode == "penalty":
                pen = lam2 * l2_penalty(self.params)
                total = total + pen
                penalty += float(pen.detach())
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            grads = [p.grad for p in self.params if p.grad is not None]
            # in float64: float32 sums of squares overflow beyond ~1e19 and underflow below ~1e-19 (a
            # false zero here would stop a live run as dead)
            norms = [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]
            grad_norm = float(torch.linalg.vector_norm(torch.stack(norms))) if grads else 0.0
            if lam2 > 0 and cfg.l2_mode != "penalty":
                apply_l2(self.params, lam2, cfg.l2_mode, lr=cfg.lr)
            self.optimizer.step()
            n = y.numel()
            loss_value = float(data_loss.detach())
            loss_sum += loss_value * n
            pen_sum += penalty
            grad_sum += grad_norm
            with torch.no_grad():
                wrong += int((_predict_from_logits(logits) != y).sum())
            sites += n
            n_batches += 1
            for cb in self._hooks:
                cb.on_batch_end(self, epoch, b, loss_value)
        if n_batches == 0:
            raise ValueError("the batches iterable yielded no batch")
        self.train_seconds += time.perf_counter() - t0
        self.train_sites += sites
        return {
            "loss": loss_sum / sites,
            "penalty": pen_sum / n_batches,
            "batch_error": wrong / sites,
            "grad_norm": grad_sum / n_batches,
            "lambda1": lam1,
            "lambda2": lam2,
        }

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict:
        """Training error every epoch; test errors and D_eff on test epochs (nan otherwise)."""
        self.model.eval()
        out: dict[str, Any] = {}
        out["train_error"] = (
            evaluate_error(self.model, self.train_set, self.device) if self.train_set is not None else None
        )
        test_epoch = epoch % self.config.eval_every == 0 or (
            self.config.eval_when_fit and out["train_error"] == 0.0
        )
        k = self.config.eval_screen
        if not test_epoch and k > 0:
            # Exact screen for t_eps: zero error on the full test sets implies zero error on their
            # first k sequences, so a full evaluation whenever those are error-free misses no
            # zero-error epoch (with eval_every = 10 alone, t_eps was late by up to 9 epochs).
            test_epoch = all(
                evaluate_error(self.model, LabelledSet(s.x[:k], s.y[:k]), self.device) == 0.0
                for s in self.test_sets.values()
            )
        for m, s in self.test_sets.items():
            out[f"test_error_{m}"] = evaluate_error(self.model, s, self.device) if test_epoch else math.nan
        out["deff"] = math.nan
        self._contexts_vanished = False
        if test_epoch and self.probe is not None and hasattr(self.model, "contexts"):
            L, _ = self.model.contexts(self.probe.to(self.device))
            middle = L[:, L.shape[1] // 2].detach()
            self._contexts_vanished = not bool(middle.any())
            out["deff"] = _effective_dimension(middle.double().cpu())
        for name, p in self.model.named_parameters():
            out[f"norm_{name.replace('.', '_')}"] = float(torch.linalg.vector_norm(p.detach(), dtype=torch.float64))
        return out

    def _spike_onset(self, loss: float) -> float:
        """1.0 if this epoch's loss starts a spike, else 0.0.

        :func:`tnattn.metrics.detect_loss_spikes` is causal (each step is judged against the
        trailing window), so judging only the last ``window + 2`` values online gives the same
        onsets as running it on the whole loss curve afterwards.
        """
        from tnattn.metrics import detect_loss_spikes

        tail = [r["loss"] for r in self.history.rows[-(_SPIKE_WINDOW + 1):]] + [loss]
        if len(tail) <= _SPIKE_WINDOW:
            return 0.0
        onsets = detect_loss_spikes(np.asarray(tail, dtype=float), window=_SPIKE_WINDOW)
        return 1.0 if len(onsets) and int(onsets[-1]) == len(tail) - 1 else 0.0

    def _dead(self, row: dict) -> Optional[str]:
        """Why the model can no longer learn, or None.

        Dead means: the left contexts at the middle site of every probe sequence are exactly zero
        (the output no longer depends on the input: what vanishing or overflowing norms leave), or
        the gradient of the objective was exactly zero on every batch of the epoch while the loss
        is not (no optimiser step can change anything).
        """
        if self._contexts_vanished:
            return ("dead model: the contexts of every probe sequence are exactly zero, so the output no longer "
                    "depends on the input (check init_std and the parameter norms)")
        loss = row["loss"]
        if row["grad_norm"] == 0.0 and math.isfinite(loss) and loss > 0.0:
            return (f"dead model: the gradient was exactly zero on every batch while the loss is {loss:.4g}, "
                    "so no optimiser step can change the model")
        return None

    def _update_grokking(self, row: dict) -> None:
        epoch = row["epoch"]
        if self.t_train is None and row["train_error"] == 0.0:
            self.t_train = epoch
        tests = [row[f"test_error_{m}"] for m in self.test_sets]
        if self.t_eps is None and not any(math.isnan(v) for v in tests) and all(v == 0.0 for v in tests):
            self.t_eps = epoch
        if self.config.grokking_definition == "stays_zero":
            # A measured nonzero error after the zero epoch: the zero did not stay; wait for the next.
            if row["train_error"] is not None and row["train_error"] > 0.0:
                self.t_train = None
            if any(v > 0.0 for v in tests if not math.isnan(v)):
                self.t_eps = None

    # ------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now (the last checkpoint stays valid)
        self._signal = signum

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def fit(self, resume_from: Optional[dict] = None) -> TrainResult:
        """Train until a stopping rule fires, ``max_epochs`` is reached, the model is found dead,
        or a signal arrives.

        The run directory is locked while the run lasts (:mod:`tnattn.locks`). A fresh run refuses
        a directory that already holds a run's checkpoint, history or summary unless
        ``config.overwrite`` is set (then those files are replaced).

        Parameters
        ----------
        resume_from : dict, optional
            A checkpoint state (:meth:`state_dict`) to continue from. Without it, ``config.resume``
            continues from the run directory's checkpoint when there is one.

        Returns
        -------
        TrainResult

        Raises
        ------
        RunDirectoryError, RunLockedError
            See above.
        """
        if self.run_dir is None:
            return self._fit(resume_from)
        with lock_directory(self.run_dir, "run directory"):
            return self._fit(resume_from)

    def _fit(self, resume_from: Optional[dict]) -> TrainResult:
        cfg = self.config
        resumed = False
        if resume_from is not None:
            self.load_state_dict(resume_from)
            resumed = True
        if self.run_dir is not None:
            if not resumed and cfg.resume and checkpoint_exists(self.checkpoint_path):
                self.load_state_dict(load_checkpoint(self.checkpoint_path))
                resumed = True
            elif not resumed:
                # A fresh run must never resume, or be summarised by, an older run's files. (With
                # resume but no checkpoint yet, the run restarts from epoch 0: same trajectory.)
                old = [n for n in _RUN_OUTPUTS if (self.run_dir / n).exists()] + (
                    [CHECKPOINT_NAME] if checkpoint_exists(self.checkpoint_path) else [])
                if old and not (cfg.overwrite or cfg.resume):
                    raise RunDirectoryError(
                        f"run directory {self.run_dir} already holds a run ({', '.join(old)}); resume it or set overwrite"
                    )
                for name in _RUN_OUTPUTS + ("training.png",):
                    (self.run_dir / name).unlink(missing_ok=True)
                remove_checkpoint(self.checkpoint_path)
            self._files.rewrite(self.history)
        self._t0 = time.perf_counter()
        if resumed and self.stop_reason in _FINAL_REASONS:
            return self._finish(run_loop=False)
        self.stop_reason = self.stop_message = None
        previous = self._install_signals()
        try:
            for cb in self._hooks:
                cb.on_train_start(self)
            while self.epoch < self.max_epochs:
                epoch = self.epoch + 1
                for cb in self._hooks:
                    cb.on_epoch_start(self, epoch)
                row = {"epoch": epoch, **self.train_epoch(epoch), **self.evaluate(epoch)}
                if row["train_error"] is None:
                    row["train_error"] = row["batch_error"]
                for c in self.columns:
                    row.setdefault(c, math.nan)
                row["spike"] = self._spike_onset(row["loss"])
                self.epoch = epoch
                self._update_grokking(row)
                for cb in self._hooks:
                    cb.on_epoch_end(self, epoch, row)
                row["wall_time"] = self._wall()
                self.history.append(row)
                if self._files is not None:
                    self._files.append(self.history[-1])
                dead = self._dead(row)
                if self._signal is not None:
                    self.stop_reason = "interrupted"
                elif dead is not None:
                    self.stop_reason, self.stop_message = "dead", dead
                    warnings.warn(f"training stopped at epoch {epoch}: {dead}", DeadModelWarning, stacklevel=2)
                elif self._stop_request is not None:
                    self.stop_reason = self._stop_request
                elif self.epoch >= self.max_epochs:
                    self.stop_reason = "max_epochs"
                if self.stop_reason is None and epoch % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.stop_reason is not None:
                    break
            if self.stop_reason is None:
                self.stop_reason = "max_epochs"
            self.save_checkpoint()
        finally:
            for cb in self._hooks:
                cb.on_train_end(self)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self._finish(run_loop=True)

    # ------------------------------------------------------------------------------------------
    # summary
    # ------------------------------------------------------------------------------------------
    def _final_test_errors(self) -> dict:
        """Test errors of the final model: from the last row if measured there, else now."""
        last = self.history[-1] if len(self.history) else None
        errors = {}
        for m, s in self.test_sets.items():
            value = last[f"test_error_{m}"] if last is not None else math.nan
            errors[m] = value if not math.isnan(value) else evaluate_error(self.model, s, self.device)
        return errors

    def summary(self) -> dict:
        """t_train, t_eps, t_G, final errors, timing and stop reason."""
        last = self.history[-1] if len(self.history) else {}
        t_G = self.t_eps - self.t_train if self.t_eps is not None and self.t_train is not None else None
        wall = self._wall()
        spikes = _spike_epochs(self.history)
        return {
            "epochs": self.epoch,
            "stop_reason": self.stop_reason,
            "stop_message": self.stop_message,
            "signal": self._signal,
            "t_train": self.t_train,
            "t_eps": self.t_eps,
            "t_G": t_G,
            "grokked": self.t_eps is not None,
            "final_loss": last.get("loss"),
            "final_train_error": last.get("train_error"),
            "final_test_errors": {str(m): e for m, e in self._final_test_errors().items()},
            "loss_spikes": spikes,
            "wall_time_s": wall,
            "train_time_s": self.train_seconds,
            "tokens_per_s": self.train_sites / self.train_seconds if self.train_seconds > 0 else None,
            "n_parameters": sum(p.numel() for p in self.params),
            "device": str(self.device),
        }

    def _finish(self, run_loop: bool) -> TrainResult:
        summary = self.summary()
        if self.run_dir is not None:
            write_json(self.run_dir / "summary.json", result_envelope("train", self.config, summary))
            if self.config.plots and len(self.history):
                from tnattn.plots.training import plot_training

                plot_training(
                    self.history,
                    self.run_dir / "training.png",
                    t_train=self.t_train,
                    t_eps=self.t_eps,
                    spikes=summary["loss_spikes"],
                    title=_title(self.config),
                )
        return TrainResult(self.history, summary, self.model, self.run_dir)


def _title(config: TrainConfig) -> str:
    teacher = teacher_title(config)
    reg = []
    if config.l1:
        reg.append(f"L1 {config.l1:g}")
    if config.l2:
        reg.append(f"L2 {config.l2:g} ({config.l2_mode})")
    return f"{teacher}, D={config.D}, {config.optimizer} lr={config.lr:g}" + (", " + ", ".join(reg) if reg else "") + f", seed {config.seed}"


def _spike_epochs(history: History) -> list[int]:
    """Epochs whose ``spike`` flag is set (loss-spike onsets)."""
    return [int(r["epoch"]) for r in history.rows if r["spike"] == 1.0]


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_clone(v) for v in obj)
    return obj

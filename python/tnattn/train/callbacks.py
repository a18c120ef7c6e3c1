"""Callback hooks of the :class:`~tnattn.train.Trainer`, and the built-in callbacks.

A callback subclasses :class:`Callback` and overrides any of its hooks. The trainer calls them per
member, in the order the callbacks were given, with a :class:`~tnattn.train.MemberView` as
``trainer``: that member's ``t_train``, ``t_eps``, ``model``, ``snapshot()``/``restore()`` and
``request_stop()``, and the trainer's other attributes (``epoch``, ``config``, ``probe``, ...).
``on_batch_end`` is called for a trainer of one module (:meth:`~tnattn.train.Trainer.from_model`)
only: stacked members train every batch in one step.

``on_train_start(trainer)``
    after the optimiser exists and a checkpoint (if any) was loaded;
``on_epoch_start(trainer, epoch)``
    before the first batch of ``epoch`` (1-based); a spike guard would snapshot
    ``trainer.snapshot()`` here;
``on_batch_end(trainer, epoch, batch_index, loss)``
    after each optimiser step (``loss`` is the batch's data loss, a float);
``on_epoch_end(trainer, epoch, row)``
    after the epoch's measurements, *before* ``row`` is recorded: a callback may fill the extra
    columns it declared in :meth:`Callback.columns`, call ``trainer.restore(snapshot)`` to revert
    the parameters, or ``trainer.request_stop(reason)``;
``on_train_end(trainer)``
    after the loop ends (also when interrupted by a signal).

Callbacks that keep state across epochs must return it from :meth:`Callback.state_dict` (tensors
and plain containers only) and accept it in :meth:`Callback.load_state_dict`, so that a resumed run
continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from tnattn.train.trainer import MemberView as Trainer

__all__ = ["Callback", "StopAfterGrokking", "Patience", "ProgressBar"]


class Callback:
    """Base class: every hook does nothing.

    Attributes
    ----------
    checkpointed : bool
        True (default): the callback's :meth:`state_dict` is saved in checkpoints and a resumed
        run must be given the same callbacks. False: an observer that does not change the run
        (a logger); it may be added or left out when a run resumes.
    """

    checkpointed = True

    def columns(self) -> list[str]:
        """Extra history columns this callback fills in :meth:`on_epoch_end` (default none)."""
        return []

    def on_train_start(self, trainer: "Trainer") -> None:
        pass

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        pass

    def on_batch_end(self, trainer: "Trainer", epoch: int, batch_index: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", epoch: int, row: dict) -> None:
        pass

    def on_train_end(self, trainer: "Trainer") -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StopAfterGrokking(Callback):
    """Stop ``epochs`` epochs after t_eps (the first epoch with zero test error).

    Parameters
    ----------
    epochs : int
        0 stops at t_eps itself.
    """

    def __init__(self, epochs: int = 0):
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.epochs = epochs

    def on_epoch_end(self, trainer, epoch, row):
        if trainer.t_eps is not None and epoch >= trainer.t_eps + self.epochs:
            trainer.request_stop("grokked")


class Patience(Callback):
    """Stop when the epoch loss has not improved by more than ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    patience : int
        Number of epochs without improvement (>= 1).
    min_delta : float
        An epoch improves if its loss is below ``best - min_delta``.
    column : str
        History column to watch.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, column: str = "loss"):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.patience = patience
        self.min_delta = min_delta
        self.column = column
        self.best = math.inf
        self.best_epoch = 0

    def on_epoch_end(self, trainer, epoch, row):
        value = row[self.column]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch = float(value), epoch
        elif epoch - self.best_epoch >= self.patience:
            trainer.request_stop("patience")

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.3g}"


class ProgressBar(Callback):
    """A tqdm bar over epochs with the live loss, train error and test errors (on stderr)."""

    def __init__(self, **tqdm_kwargs: Any):
        self.kwargs = tqdm_kwargs
        self.bar = None
        self._last_test: dict[str, float] = {}

    def on_train_start(self, trainer):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=trainer.max_epochs, initial=trainer.epoch, unit="epoch", dynamic_ncols=True, **self.kwargs
        )

    def on_epoch_end(self, trainer, epoch, row):
        if self.bar is None:
            return
        for key, value in row.items():
            if key.startswith("test_error_") and not math.isnan(value):
                self._last_test[key] = value
        post = {"loss": _fmt(row["loss"]), "train": _fmt(row["train_error"])}
        for key, value in self._last_test.items():
            post["test" + key[len("test_error_"):]] = _fmt(value)
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def on_train_end(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

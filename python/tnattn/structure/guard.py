"""The spike guard: revert a loss spike when it raised the effective dimension (opt-in callback).

The paper's author's conjecture (documentation: Science, "Loss spikes"): loss spikes coincide with structural
rearrangements of the feature space; rearrangements that *lower* D_eff are progress (structure
forms), those that *raise* it undo structure. :class:`SpikeGuard` acts on that: when the trainer
flags a loss-spike onset at epoch ``t`` (the ``spike`` column, :func:`tnattn.metrics.detect_loss_spikes`),
it compares D_eff now with D_eff of the state at the start of epoch ``t - lookback``, and

- reverts the model *and optimiser state* to that pre-spike state if D_eff increased by more than
  ``min_increase``;
- otherwise lets training continue.

Why ``lookback = 1`` by default: an epoch's ``loss`` is the mean of the batch losses measured
*before* each update, so a jump caused by the last updates of epoch ``t - 1`` only shows in the loss
of epoch ``t``; the start of epoch ``t - 1`` is the last state certainly before the spike.

D_eff is the trainer's measure (middle-site left contexts of the trainer's probe sequences,
:attr:`tnattn.train.Trainer.probe`); the guard computes it at every epoch end (the trainer only
measures it on test epochs). Reverted epochs still count as epochs, so comparisons with unguarded
runs are at equal compute. The history keeps the spiked epoch's row (with ``guard_revert = 1``);
training continues from the restored state with fresh batches (the data generator is not rewound).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Optional

import torch

from tnattn.metrics import effective_dimension
from tnattn.train.callbacks import Callback

__all__ = ["SpikeGuard", "probe_deff"]


@torch.no_grad()
def probe_deff(trainer) -> float:
    """D_eff of the middle-site left contexts of ``trainer.probe`` under the current model
    (the definition of the trainer's ``deff`` column)."""
    if trainer.probe is None:
        raise ValueError("the trainer has no D_eff probe (config.deff_probe = 0)")
    model = trainer.model
    was_training = model.training
    model.eval()
    L, _ = model.contexts(trainer.probe.to(trainer.device))
    model.train(was_training)
    return float(effective_dimension(L[:, L.shape[1] // 2].detach().double().cpu()))


class SpikeGuard(Callback):
    """Revert a loss spike to the pre-spike parameters if and only if D_eff increased.

    Parameters
    ----------
    lookback : int
        Revert to the state at the start of epoch ``t - lookback`` for a spike flagged at epoch
        ``t`` (>= 0; see the module docstring for the default 1).
    min_increase : float
        Revert only if ``D_eff(now) - D_eff(pre-spike) > min_increase`` (>= 0).
    cooldown : int
        After a revert, ignore spikes for this many epochs (the loss of the next epochs may still
        carry the spike's trailing window).
    max_reverts : int, optional
        Stop reverting after this many reverts (None = no limit).

    Notes
    -----
    A nan D_eff (a cloud without variance) never triggers a revert.

    History columns: ``guard_revert`` (1.0 on epochs that were reverted), ``guard_deff_before``
    and ``guard_deff_after`` (D_eff of the pre-spike state and of the spiked state, on spike
    epochs; nan otherwise).
    """

    def __init__(self, lookback: int = 1, min_increase: float = 0.0, cooldown: int = 0, max_reverts: Optional[int] = None):
        if lookback < 0:
            raise ValueError(f"lookback must be >= 0, got {lookback}")
        if min_increase < 0 or not math.isfinite(min_increase):
            raise ValueError(f"min_increase must be finite and >= 0, got {min_increase}")
        if cooldown < 0:
            raise ValueError(f"cooldown must be >= 0, got {cooldown}")
        if max_reverts is not None and max_reverts < 0:
            raise ValueError(f"max_reverts must be >= 0 or None, got {max_reverts}")
        self.lookback = int(lookback)
        self.min_increase = float(min_increase)
        self.cooldown = int(cooldown)
        self.max_reverts = max_reverts
        # Entries (epoch, snapshot, deff) of the states at the start of the last lookback+1 epochs.
        self.buffer: deque = deque(maxlen=self.lookback + 1)
        self.deff_now = math.nan  # D_eff of the current parameters
        self.reverts: list[int] = []
        self.declined: list[int] = []

    def columns(self):
        return ["guard_revert", "guard_deff_before", "guard_deff_after"]

    def on_train_start(self, trainer):
        if not hasattr(trainer.model, "contexts"):
            raise TypeError("SpikeGuard needs a model with contexts(x)")
        if math.isnan(self.deff_now):
            self.deff_now = probe_deff(trainer)

    def on_epoch_start(self, trainer, epoch):
        self.buffer.append((epoch, trainer.snapshot(), self.deff_now))

    def on_epoch_end(self, trainer, epoch, row):
        deff = row.get("deff", math.nan)
        self.deff_now = deff if deff is not None and math.isfinite(deff) else probe_deff(trainer)
        row["guard_revert"] = 0.0
        row["guard_deff_before"] = math.nan
        row["guard_deff_after"] = math.nan
        if row.get("spike") != 1.0 or not self.buffer:
            return
        start_epoch, state, deff_before = self.buffer[0]
        row["guard_deff_before"] = deff_before
        row["guard_deff_after"] = self.deff_now
        if self.reverts and epoch - self.reverts[-1] <= self.cooldown:
            return
        if self.max_reverts is not None and len(self.reverts) >= self.max_reverts:
            return
        if self.deff_now - deff_before > self.min_increase:
            trainer.restore(state)
            self.deff_now = deff_before
            self.buffer.clear()
            self.reverts.append(epoch)
            row["guard_revert"] = 1.0
        else:
            self.declined.append(epoch)

    def state_dict(self):
        return {
            "buffer": [{"epoch": e, "snapshot": s, "deff": d} for e, s, d in self.buffer],
            "deff_now": self.deff_now,
            "reverts": list(self.reverts),
            "declined": list(self.declined),
        }

    def load_state_dict(self, state):
        self.buffer.clear()
        for entry in state["buffer"]:
            self.buffer.append((int(entry["epoch"]), entry["snapshot"], float(entry["deff"])))
        self.deff_now = float(state["deff_now"])
        self.reverts = [int(e) for e in state["reverts"]]
        self.declined = [int(e) for e in state["declined"]]

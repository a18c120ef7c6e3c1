"""Snapshots of the context point clouds of a fixed probe set during training.

:class:`SnapshotRecorder` is a trainer callback that, every ``every`` epochs (and at chosen
epochs), records the left and right contexts ``L, R`` (and optionally the features
``f_i = l_i (x) phi(x_i) (x) r_i``) of every site of a fixed probe set of sequences. The probe
carries two labels per site: the teacher's output (the target class) and the index of the
neighbourhood ``(x_{i-1}, x_i, x_{i+1})`` read as a base-d number, leftmost digit most significant
(Wolfram's numbering; cells outside the sequence read as 0).

Storage: one compressed ``.npz`` (written atomically) holding the snapshot epochs, the contexts in
float16 by default (three significant digits are plenty for pictures and PCA, and halve the size),
the probe inputs and labels, and a JSON metadata string. Features are redundant with ``L``, ``R``
and ``x``, so by default they are not stored: :meth:`Snapshots.features` rebuilds them.
:func:`load_snapshots` reads the file back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from tnattn.data import random_sequences
from tnattn.io import atomic_write
from tnattn.train.callbacks import Callback

__all__ = ["ProbeSet", "make_probe", "neighbourhood_index", "SnapshotRecorder", "Snapshots", "load_snapshots"]

_DTYPES = {"float16": np.float16, "float32": np.float32}


def neighbourhood_index(x: torch.Tensor, d: int = 2) -> torch.Tensor:
    """Index of the radius-1 neighbourhood ``(x_{i-1}, x_i, x_{i+1})`` of every site.

    Parameters
    ----------
    x : Tensor, shape (N, M)
        Integer symbols in ``[0, d)``.
    d : int
        Alphabet size.

    Returns
    -------
    Tensor, shape (N, M), int64
        ``x_{i-1} d^2 + x_i d + x_{i+1}``, with cells outside the sequence read as 0.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.is_floating_point():
        raise ValueError("x must be an integer tensor of shape (N, M)")
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    x = x.long()
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= d):
        raise ValueError(f"x must hold symbols in [0, {d})")
    padded = torch.nn.functional.pad(x, (1, 1))
    return padded[:, :-2] * d * d + padded[:, 1:-1] * d + padded[:, 2:]


@dataclass(frozen=True)
class ProbeSet:
    """Fixed probe sequences with per-site labels.

    Attributes
    ----------
    x : Tensor, shape (P, M), int64
        Probe inputs.
    y : Tensor, shape (P, M), int64
        Teacher outputs (the target class of every site).
    neighbourhood : Tensor, shape (P, M), int64
        :func:`neighbourhood_index` of every site.
    d : int
        Alphabet size.
    """

    x: torch.Tensor
    y: torch.Tensor
    neighbourhood: torch.Tensor
    d: int = 2

    def __post_init__(self):
        if self.x.ndim != 2 or self.x.shape != self.y.shape or self.x.shape != self.neighbourhood.shape:
            raise ValueError("x, y and neighbourhood must all have the same shape (P, M)")


def make_probe(teacher, n: int = 64, length: int = 24, *, seed: int = 2024) -> ProbeSet:
    """Random probe sequences labelled by ``teacher``.

    Parameters
    ----------
    teacher : callable
        The rule (``teacher.d`` is the alphabet size), (P, M) -> (P, M).
    n, length : int
        Number P and length M of the probe sequences.
    seed : int
        Seed of the probe inputs (fixed, so every run of a study shows the same points).
    """
    if n < 1 or length < 1:
        raise ValueError(f"n and length must be >= 1, got n={n}, length={length}")
    d = int(getattr(teacher, "d", 2))
    x = random_sequences(n, length, d, generator=torch.Generator().manual_seed(seed))
    return ProbeSet(x, teacher(x).long(), neighbourhood_index(x, d), d)


class SnapshotRecorder(Callback):
    """Record the contexts (and optionally features) of a probe set during training.

    Snapshots are taken at epoch 0 (before training, when ``initial``), at every epoch divisible
    by ``every``, at the epochs in ``epochs``, and (with ``after_spike > 0``) at the onset epoch of
    every loss spike the trainer flags and the ``after_spike - 1`` epochs after it (spikes last a
    few epochs, so a regular cadence mostly misses them). They are taken in :meth:`on_epoch_end` --
    so give this callback
    *before* a callback that may revert the parameters (e.g. a spike guard) to record the state
    the epoch produced.

    Parameters
    ----------
    probe : ProbeSet
        The sequences whose contexts are recorded.
    every : int
        Cadence in epochs (0 = only ``epochs``).
    epochs : sequence of int
        Extra epochs to record.
    path : path, optional
        Where :meth:`save` writes (at the end of training and every ``flush_every`` snapshots).
    features : bool
        Also store the features (size ``d D^2`` per site instead of ``2 D``).
    dtype : {"float16", "float32"}
        Storage precision.
    flush_every : int
        Rewrite the file every this many new snapshots (0 = only at the end).
    initial : bool
        Record the initial parameters as epoch 0.
    after_spike : int
        Epochs recorded from each loss-spike onset on (0 = off).
    """

    def __init__(
        self,
        probe: ProbeSet,
        *,
        every: int = 10,
        epochs: Sequence[int] = (),
        path: str | os.PathLike | None = None,
        features: bool = False,
        dtype: str = "float16",
        flush_every: int = 0,
        initial: bool = True,
        after_spike: int = 0,
    ):
        if not isinstance(probe, ProbeSet):
            raise TypeError(f"probe must be a ProbeSet, got {type(probe).__name__}")
        if every < 0 or flush_every < 0 or after_spike < 0:
            raise ValueError(
                f"every, flush_every and after_spike must be >= 0, got {every}, {flush_every}, {after_spike}"
            )
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}")
        self.probe = probe
        self.every = int(every)
        self.at = {int(e) for e in epochs}
        self.path = Path(path) if path is not None else None
        self.store_features = bool(features)
        self.dtype = dtype
        self.flush_every = int(flush_every)
        self.initial = bool(initial)
        self.after_spike = int(after_spike)
        self._spike_until = -1  # record every epoch up to this one (spike follow-up)
        self.epochs: list[int] = []
        self.left: list[np.ndarray] = []
        self.right: list[np.ndarray] = []
        self.feats: list[np.ndarray] = []
        self._unsaved = 0

    # -- recording ------------------------------------------------------------------------------
    @torch.no_grad()
    def record(self, model: torch.nn.Module, epoch: int, device=None) -> None:
        """Record the probe's contexts under ``model`` as epoch ``epoch``."""
        was_training = model.training
        model.eval()
        x = self.probe.x if device is None else self.probe.x.to(device)
        L, R = model.contexts(x)
        cast = _DTYPES[self.dtype]
        self.left.append(L.detach().float().cpu().numpy().astype(cast))
        self.right.append(R.detach().float().cpu().numpy().astype(cast))
        if self.store_features:
            self.feats.append(model.features(x).detach().float().cpu().numpy().astype(cast))
        self.epochs.append(int(epoch))
        model.train(was_training)
        self._unsaved += 1
        if self.path is not None and self.flush_every and self._unsaved >= self.flush_every:
            self.save()

    def _due(self, epoch: int) -> bool:
        return (self.every > 0 and epoch % self.every == 0) or epoch in self.at

    def on_train_start(self, trainer):
        if not hasattr(trainer.model, "contexts"):
            raise TypeError("SnapshotRecorder needs a model with contexts(x)")
        if self.initial and trainer.epoch == 0 and not self.epochs:
            self.record(trainer.model, 0, trainer.device)

    def on_epoch_end(self, trainer, epoch, row):
        if self.after_spike and row.get("spike") == 1.0:
            self._spike_until = epoch + self.after_spike - 1
        if (self._due(epoch) or epoch <= self._spike_until) and (not self.epochs or self.epochs[-1] != epoch):
            self.record(trainer.model, epoch, trainer.device)

    def on_train_end(self, trainer):
        if self.path is not None:
            self.save()

    # -- state (for resumable runs) -------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"epochs": list(self.epochs), "spike_until": self._spike_until}
        if self.epochs:
            state["left"] = torch.from_numpy(np.stack(self.left))
            state["right"] = torch.from_numpy(np.stack(self.right))
            if self.store_features:
                state["features"] = torch.from_numpy(np.stack(self.feats))
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epochs = [int(e) for e in state["epochs"]]
        self._spike_until = int(state.get("spike_until", -1))
        n = len(self.epochs)
        self.left = list(state["left"].numpy()) if n else []
        self.right = list(state["right"].numpy()) if n else []
        self.feats = list(state["features"].numpy()) if n and self.store_features else []

    # -- files ----------------------------------------------------------------------------------
    def snapshots(self) -> "Snapshots":
        """The recorded snapshots as a :class:`Snapshots` (no file needed)."""
        if not self.epochs:
            raise ValueError("no snapshot recorded yet")
        return Snapshots(
            epochs=np.asarray(self.epochs, dtype=np.int64),
            left=np.stack(self.left),
            right=np.stack(self.right),
            x=self.probe.x.numpy(),
            y=self.probe.y.numpy(),
            neighbourhood=self.probe.neighbourhood.numpy(),
            d=self.probe.d,
            stored_features=np.stack(self.feats) if self.store_features else None,
        )

    def save(self, path: str | os.PathLike | None = None) -> Optional[Path]:
        """Write the snapshots atomically to ``path`` (default: the recorder's path)."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise ValueError("path is required: the recorder was built without one")
        if not self.epochs:
            return None
        self._unsaved = 0
        return self.snapshots().save(path)


@dataclass
class Snapshots:
    """Recorded context point clouds (see :class:`SnapshotRecorder`); T snapshots of P x M sites.

    Attributes
    ----------
    epochs : ndarray, shape (T,)
    left, right : ndarray, shape (T, P, M, D)
        Left and right contexts.
    x, y, neighbourhood : ndarray, shape (P, M)
        Probe inputs, target classes and neighbourhood indices.
    d : int
        Alphabet size.
    stored_features : ndarray, shape (T, P, M, D*d*D), optional
        Features, when they were recorded.
    """

    epochs: np.ndarray
    left: np.ndarray
    right: np.ndarray
    x: np.ndarray
    y: np.ndarray
    neighbourhood: np.ndarray
    d: int = 2
    stored_features: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.epochs.shape[0])

    @property
    def D(self) -> int:
        return int(self.left.shape[-1])

    def index(self, epoch: int) -> int:
        """Index of the snapshot nearest to ``epoch`` (the earlier one on a tie)."""
        return int(np.argmin(np.abs(self.epochs - int(epoch))))

    def features(self, k: int) -> np.ndarray:
        """Features of snapshot ``k``, shape (P, M, D*d*D), in (a, s, b) order as
        :meth:`tnattn.models.TNAttention.features` (rebuilt from the contexts if not stored)."""
        if self.stored_features is not None:
            return self.stored_features[k].astype(np.float32)
        L = self.left[k].astype(np.float32)
        R = self.right[k].astype(np.float32)
        phi = np.eye(self.d, dtype=np.float32)[self.x]
        f = np.einsum("nia,nis,nib->niasb", L, phi, R)
        return f.reshape(*f.shape[:2], -1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a compressed ``.npz`` atomically."""
        arrays = {
            "epochs": self.epochs,
            "left": self.left,
            "right": self.right,
            "x": self.x,
            "y": self.y,
            "neighbourhood": self.neighbourhood,
            "meta": np.array(json.dumps({"d": int(self.d), "format": 1})),
        }
        if self.stored_features is not None:
            arrays["features"] = self.stored_features
        return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays), mode="wb")


def load_snapshots(path: str | os.PathLike) -> Snapshots:
    """Read a file written by :meth:`SnapshotRecorder.save` / :meth:`Snapshots.save`."""
    with np.load(Path(path), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != 1:
            raise ValueError(f"{path} is not a tnattn snapshot file of format 1")
        return Snapshots(
            epochs=z["epochs"],
            left=z["left"],
            right=z["right"],
            x=z["x"],
            y=z["y"],
            neighbourhood=z["neighbourhood"],
            d=int(meta["d"]),
            stored_features=z["features"] if "features" in z.files else None,
        )

"""Per-member, per-epoch measurements of an ensemble run: :class:`EnsembleHistory`.

Columns are those of the single-model :class:`tnattn.train.Trainer` (see :mod:`tnattn.train.trainer`)
except ``wall_time``, which is one value per epoch for the whole ensemble. Values are stored as a
float32 array (E, T) per column (nan = not measured: a non-test epoch, or an epoch after the member
stopped), grown by doubling; float32 keeps a thousand members times thousands of epochs in memory.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tnattn.train.history import History

__all__ = ["EnsembleHistory"]


class EnsembleHistory:
    """Rows of E members.

    Parameters
    ----------
    columns : sequence of str
        Column names (``epoch`` excluded: row t is epoch t + 1).
    E : int
        Number of members.
    """

    def __init__(self, columns: Sequence[str], E: int):
        if len(set(columns)) != len(columns):
            raise ValueError(f"columns must be unique, got {list(columns)}")
        self.columns = list(columns)
        self.E = int(E)
        self.T = 0
        self._cap = 0
        self.data: dict[str, np.ndarray] = {c: np.full((self.E, 0), np.nan, dtype=np.float32) for c in self.columns}
        self.wall = np.zeros(0, dtype=np.float64)

    def _grow(self, T: int) -> None:
        if T <= self._cap:
            return
        cap = max(T, 2 * self._cap, 16)
        for c, arr in self.data.items():
            new = np.full((self.E, cap), np.nan, dtype=np.float32)
            new[:, : self._cap] = arr
            self.data[c] = new
        wall = np.zeros(cap, dtype=np.float64)
        wall[: self._cap] = self.wall
        self.wall = wall
        self._cap = cap

    def record(self, epoch: int, members: np.ndarray, values: dict, wall: float) -> None:
        """Store epoch ``epoch`` (1-based) of ``members``; ``values[c]`` has one entry per member."""
        if epoch != self.T + 1:
            raise ValueError(f"epochs must be recorded in order: expected {self.T + 1}, got {epoch}")
        self._grow(epoch)
        unknown = set(values) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}")
        for c, v in values.items():
            self.data[c][members, epoch - 1] = v
        self.wall[epoch - 1] = wall
        self.T = epoch

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` as an (E, T) float array (a view)."""
        if name == "epoch":
            return np.broadcast_to(np.arange(1, self.T + 1, dtype=np.float32), (self.E, self.T))
        if name not in self.data:
            raise KeyError(f"no column {name!r}; columns: {self.columns}")
        return self.data[name][:, : self.T]

    def member(self, e: int, epochs: int | None = None) -> History:
        """Member ``e``'s rows as a :class:`tnattn.train.History` (first ``epochs`` epochs; default
        all epochs up to the member's last recorded one), with a ``wall_time`` column."""
        T = self.T if epochs is None else int(epochs)
        cols = ["epoch"] + self.columns + ["wall_time"]
        h = History(cols)
        for t in range(T):
            row = {"epoch": t + 1, "wall_time": float(self.wall[t])}
            for c in self.columns:
                row[c] = float(self.data[c][e, t])
            h.append(row)
        return h

    def truncate(self, T: int) -> None:
        """Forget the epochs after ``T``."""
        T = int(T)
        for arr in self.data.values():
            arr[:, T:] = np.nan
        self.T = min(self.T, T)

    def state_dict(self) -> dict:
        """Plain containers and arrays as tensors (for a ``weights_only`` checkpoint)."""
        import torch

        return {
            "columns": list(self.columns),
            "E": self.E,
            "T": self.T,
            "data": {c: torch.from_numpy(np.ascontiguousarray(a[:, : self.T])) for c, a in self.data.items()},
            "wall": torch.from_numpy(self.wall[: self.T].copy()),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "EnsembleHistory":
        h = cls(state["columns"], state["E"])
        T = int(state["T"])
        h._grow(T)
        for c in h.columns:
            h.data[c][:, :T] = state["data"][c].numpy()
        h.wall[:T] = state["wall"].numpy()
        h.T = T
        return h

    def arrays(self) -> dict[str, np.ndarray]:
        """Every column as an (E, T) array plus ``wall_time`` (T,): for ``np.savez``."""
        out = {c: np.ascontiguousarray(self.column(c)) for c in self.columns}
        out["wall_time"] = self.wall[: self.T].copy()
        return out


"""Per-epoch training history and its files (``history.csv`` and ``history.jsonl``).

A :class:`MemberHistory` holds E members' columns as (E, T) arrays (what a
:class:`~tnattn.train.Trainer` records); a :class:`History` is one member's list of rows (dicts)
with a fixed list of columns. Values are plain Python numbers (ints, floats; ``nan`` for "not
measured this epoch"), so the history can be stored inside a ``weights_only`` checkpoint and
compared exactly between runs.

:class:`HistoryFiles` appends one line per epoch to both files and flushes them, so a killed run
leaves complete rows behind; on resume the files are rewritten (atomically) from the checkpoint's
history, so rows written after the last checkpoint do not appear twice.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tnattn.io import atomic_write, to_jsonable

__all__ = ["History", "MemberHistory", "HistoryFiles", "read_history_csv", "read_history_jsonl"]


class History:
    """Rows of per-epoch measurements.

    Parameters
    ----------
    columns : sequence of str
        Column names, in file order; every appended row must have exactly these keys.
    rows : iterable of dict, optional
        Initial rows.
    """

    def __init__(self, columns: Sequence[str], rows: Iterable[dict] = ()):
        if len(set(columns)) != len(columns):
            raise ValueError(f"columns must be unique, got {list(columns)}")
        self.columns = list(columns)
        self.rows: list[dict] = []
        for row in rows:
            self.append(row)

    def append(self, row: dict) -> None:
        """Append one row; its keys must be exactly :attr:`columns`."""
        if set(row) != set(self.columns):
            missing = sorted(set(self.columns) - set(row))
            extra = sorted(set(row) - set(self.columns))
            raise ValueError(f"row keys do not match the columns: missing {missing}, unexpected {extra}")
        self.rows.append({c: _plain(row[c]) for c in self.columns})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    def column(self, name: str) -> np.ndarray:
        """One column as a float array (``nan`` where not measured)."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {self.columns}")
        return np.array([np.nan if r[name] is None else r[name] for r in self.rows], dtype=float)

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` rows."""
        del self.rows[n:]

    def state_dict(self) -> dict:
        """Plain containers for a ``weights_only`` checkpoint."""
        return {"columns": list(self.columns), "rows": [dict(r) for r in self.rows]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "History":
        return cls(state["columns"], state["rows"])


class MemberHistory:
    """Per-member, per-epoch measurements of E members: every column an (E, T) array.

    Values are stored as float32 (nan = not measured: a non-test epoch, or an epoch after the
    member stopped), grown by doubling; float32 keeps a thousand members times thousands of
    epochs in memory. A single member (E = 1) keeps float64, the precision of its history files.
    ``wall_time`` is one value per epoch for all members.

    Parameters
    ----------
    columns : sequence of str
        Column names (``epoch`` excluded: row t is epoch t + 1).
    E : int
        Number of members.
    dtype : numpy dtype, optional
        Storage (default float64 for E = 1, else float32).
    """

    def __init__(self, columns: Sequence[str], E: int, dtype=None):
        if len(set(columns)) != len(columns):
            raise ValueError(f"columns must be unique, got {list(columns)}")
        self.columns = list(columns)
        self.E = int(E)
        self.dtype = np.dtype(dtype if dtype is not None else (np.float64 if self.E == 1 else np.float32))
        self.T = 0
        self._cap = 0
        self.data: dict[str, np.ndarray] = {c: np.full((self.E, 0), np.nan, dtype=self.dtype) for c in self.columns}
        self.wall = np.zeros(0, dtype=np.float64)

    def _grow(self, T: int) -> None:
        if T <= self._cap:
            return
        cap = max(T, 2 * self._cap, 16)
        for c, arr in self.data.items():
            new = np.full((self.E, cap), np.nan, dtype=self.dtype)
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
            return np.broadcast_to(np.arange(1, self.T + 1, dtype=self.dtype), (self.E, self.T))
        if name not in self.data:
            raise KeyError(f"no column {name!r}; columns: {self.columns}")
        return self.data[name][:, : self.T]

    def member(self, e: int, epochs: int | None = None) -> History:
        """Member ``e``'s rows as a :class:`tnattn.train.History` (first ``epochs`` epochs; default
        all epochs up to the member's last recorded one), with a ``wall_time`` column."""
        T = self.T if epochs is None else int(epochs)
        cols = ["epoch"] + self.columns + ["wall_time"]
        h = History(cols)
        T = min(T, self.T)
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
    def from_state_dict(cls, state: dict) -> "MemberHistory":
        h = cls(state["columns"], state["E"], dtype=state["data"][state["columns"][0]].numpy().dtype if state["columns"] else None)
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


def _plain(value: Any) -> Any:
    """int/float/None/str; tensors and numpy scalars become Python numbers."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"history values must be numbers, got {type(value).__name__}")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # repr round-trips exactly; nan -> "nan"
    return str(value)


def _csv_line(values: Iterable[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_csv_cell(v) for v in values])
    return buf.getvalue()


class HistoryFiles:
    """``history.csv`` and ``history.jsonl`` in a run directory.

    Parameters
    ----------
    run_dir : path
        Run directory (created if missing).
    columns : sequence of str
        Column names (the CSV header).
    """

    def __init__(self, run_dir: str | os.PathLike, columns: Sequence[str]):
        self.dir = Path(run_dir)
        self.columns = list(columns)
        self.csv_path = self.dir / "history.csv"
        self.jsonl_path = self.dir / "history.jsonl"

    def rewrite(self, history: History) -> None:
        """Replace both files (atomically) by the header and the rows of ``history``."""
        header = _csv_line(self.columns)
        body = "".join(_csv_line(r[c] for c in self.columns) for r in history.rows)
        atomic_write(self.csv_path, lambda h: h.write(header + body))
        lines = "".join(self._json_line(r) for r in history.rows)
        atomic_write(self.jsonl_path, lambda h: h.write(lines))

    def append(self, row: dict) -> None:
        """Append one row to both files and flush them."""
        with open(self.csv_path, "a") as handle:
            handle.write(_csv_line(row[c] for c in self.columns))
            handle.flush()
        with open(self.jsonl_path, "a") as handle:
            handle.write(self._json_line(row))
            handle.flush()

    def _json_line(self, row: dict) -> str:
        # NaN (not measured) becomes null: JSON has no NaN.
        return json.dumps({c: to_jsonable(row[c]) for c in self.columns}, allow_nan=False) + "\n"


def read_history_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``history.csv`` as dicts of floats (ints for ``epoch``; empty cells -> nan)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for r in rows:
        out.append({k: (int(v) if k == "epoch" else (math.nan if v == "" else float(v))) for k, v in r.items()})
    return out


def read_history_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``history.jsonl`` (``null`` -> nan)."""
    out = []
    with open(path) as handle:
        for line in handle:
            if line.strip():
                out.append({k: (math.nan if v is None else v) for k, v in json.loads(line).items()})
    return out

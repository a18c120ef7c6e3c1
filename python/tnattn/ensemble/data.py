"""Mini-batches for E members, each drawn from its own generator exactly as :class:`tnattn.data.MiniBatches`.

A single-model run draws, per epoch, ``randperm(N)`` from its data generator and then, per batch,
the crop length ``L = randint(n_min, n_max + 1, (1,))`` and the offsets ``randint(0, M - L + 1,
(B, 1))`` (:func:`tnattn.data.random_crops`). :class:`EnsembleBatches` makes the same draws, in the
same order, from member ``e``'s generator, so member ``e`` sees exactly the batches its single-model
run would. Only the work after the draws is batched across members: members whose crops have the
same length in a step form one group (one gather, one teacher call, one kernel call).

In *shared* mode one generator drives one stream of batches that every member sees (one group per
step, the inputs shared by all members in the kernel): faster, but not equal to independent runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["EnsembleBatches", "Group"]

# Largest crop table (crops x sites) precomputed per crop length, for the inputs and for their labels;
# larger training sets gather crops and call the teacher on every batch instead.
_TABLE_ELEMENTS = 1 << 24


@dataclass
class Group:
    """Members that train on batches of the same shape in one step.

    Attributes
    ----------
    rows : Tensor, shape (G,), int64
        Positions of the members in the list passed to :meth:`EnsembleBatches.epoch`.
    x, y : Tensor
        Inputs and targets: (G, B, L) per member, or (B, L) shared by all members (shared mode);
        targets in the batches' ``label_dtype``.
    """

    rows: Tensor
    x: Tensor
    y: Tensor


class EnsembleBatches:
    """Per-member shuffled, cropped and relabelled mini-batches.

    Parameters
    ----------
    x : Tensor
        Training inputs, (N, M) shared by all members or (E, N, M) one set per member.
    teacher : callable
        (K, L) inputs -> (K, L) outputs.
    batch_size : int or None
        Sequences per batch; None = full batch.
    crop : (int, int) or None
        Crop lengths ``(n_min, n_max)``.
    generators : sequence of torch.Generator
        One per member (E of them), or exactly one in shared mode.
    shared : bool
        One stream of batches for all members (``generators`` holds one generator).
    label_dtype : torch.dtype, optional
        Dtype of the targets ``Group.y`` (default: the teacher's). A trainer of binary outputs
        passes ``torch.bool``: comparisons and casts of one-byte labels cost a fraction of int64's.
    """

    def __init__(
        self,
        x: Tensor,
        teacher: Callable[[Tensor], Tensor],
        batch_size: int | None,
        crop: tuple[int, int] | None,
        generators: Sequence[torch.Generator],
        *,
        shared: bool = False,
        label_dtype: torch.dtype | None = None,
    ):
        if x.dim() not in (2, 3) or x.shape[-2] == 0:
            raise ValueError(f"x must be a non-empty (N, M) or (E, N, M) tensor, got shape {tuple(x.shape)}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.generators = list(generators)
        if shared and (len(self.generators) != 1 or x.dim() != 2):
            raise ValueError("shared mode needs exactly one generator and one (N, M) training set")
        if x.dim() == 3 and x.shape[0] != len(self.generators):
            raise ValueError(f"x holds {x.shape[0]} training sets but {len(self.generators)} generators were given")
        self.x = x
        self.shared = bool(shared)
        self.teacher = teacher
        self.N, self.M = x.shape[-2], x.shape[-1]
        self.batch_size = batch_size or self.N
        if crop is not None and not 1 <= crop[0] <= min(crop[1], self.M):
            raise ValueError(f"need 1 <= crop min <= min(crop max, M); got crop={crop}, M={self.M}")
        self.crop = crop
        self.label_dtype = label_dtype
        # Without crops the labels are those of the full sequences (as MiniBatches caches them).
        self._flat = x.reshape(-1).contiguous()
        self._y = None if crop is not None else self._labels(x.reshape(-1, self.M)).reshape(x.shape)
        self._tables: dict[int, tuple[Tensor, Tensor] | None] = {}

    def _labels(self, x: Tensor) -> Tensor:
        y = self.teacher(x)
        return y if self.label_dtype is None else y.to(self.label_dtype)

    def __len__(self) -> int:
        return -(-self.N // self.batch_size)

    def _draws(self, g: torch.Generator, offsets: list) -> tuple[Tensor, list[int]]:
        """One epoch of draws from ``g``, in MiniBatches' order: permutation, then (L, offsets) per batch.

        Returns the permutation (N,) and the crop lengths; appends each batch's offsets (nb,) to
        ``offsets``. (Plain functional calls: ``out=`` variants cost more per call here.)
        """
        N, B, M = self.N, self.batch_size, self.M
        order = torch.randperm(N, generator=g)
        lengths = []
        if self.crop is not None:
            lo, hi = self.crop[0], min(self.crop[1], M) + 1
            randint = torch.randint
            for start in range(0, N, B):
                L = randint(lo, hi, (1,), generator=g).item()
                offsets.append(randint(0, M - L + 1, (min(B, N - start),), generator=g))
                lengths.append(L)
        return order, lengths

    def epoch(self, members: Sequence[int]) -> Iterator[list[Group]]:
        """Draw one epoch for ``members`` (indices into the generators); yield the groups of each step.

        All draws of the epoch are made up front, member by member (each generator sees the same
        sequence of calls as in a single-model run).
        """
        members = list(members)
        gens = [self.generators[0]] if self.shared else [self.generators[e] for e in members]
        if self.crop is None and self.batch_size >= self.N:
            # MiniBatches yields its cached full batch without drawing: the whole set every step
            yield [self._whole(members)]
            return
        G = len(gens)
        offs: list[Tensor] = []
        draws = [self._draws(g, offs) for g in gens]
        order = torch.stack([d[0] for d in draws])  # (G, N)
        offsets = torch.cat(offs).view(G, -1) if offs else None  # (G, N)
        lengths = np.array([d[1] for d in draws])  # (G, n_batches)
        mem = None if self.x.dim() == 2 else torch.tensor(members, dtype=torch.long).unsqueeze(1)
        if self.crop is None:
            for start in range(0, self.N, self.batch_size):
                yield [self._indexed(members, mem, order[:, start : start + self.batch_size])]
            return
        if mem is not None:  # row of each drawn sequence in the flattened training sets
            order += mem * self.N
        # row of every drawn crop in its length's crop table, when the tables exist (the crops of
        # length L of row r start at row r * (M - L + 1) of the table)
        if all(self._crop_tables(int(L)) is not None for L in np.unique(lengths)):
            starts = torch.from_numpy(self.M + 1 - lengths).repeat_interleave(self.batch_size, dim=1)[:, : self.N]
            pick = order * starts + offsets  # (G, N)
        else:
            pick = None
        for b, start in enumerate(range(0, self.N, self.batch_size)):
            sl = slice(start, start + self.batch_size)
            # members by crop length (stable: increasing member position within a length)
            by_len = np.argsort(lengths[:, b], kind="stable")
            cuts = np.flatnonzero(np.diff(lengths[by_len, b])) + 1
            groups = []
            for part in np.split(by_len, cuts):
                L = int(lengths[part[0], b])
                kk = torch.from_numpy(part)
                whole = len(part) == G
                if pick is not None:
                    rows = pick[:, sl] if whole else pick[:, sl].index_select(0, kk)  # (G', B)
                    xt, yt = self._crop_tables(L)
                    flat = rows.reshape(-1)
                    xb, yb = xt.index_select(0, flat).view(*rows.shape, L), yt.index_select(0, flat).view(*rows.shape, L)
                else:
                    seq = order[:, sl] if whole else order[:, sl].index_select(0, kk)
                    off = offsets[:, sl] if whole else offsets[:, sl].index_select(0, kk)
                    xb, yb = self._crops(seq, off, L)
                if self.shared:
                    groups.append(Group(torch.arange(len(members)), xb[0], yb[0]))
                else:
                    groups.append(Group(kk, xb, yb))
            yield groups

    def _crops(self, seq: Tensor, off: Tensor, L: int) -> tuple[Tensor, Tensor]:
        """Crops ``flat_x[seq, off : off + L]`` (G, B, L) and their teacher labels, gathered and
        labelled now (training sets too large for crop tables; seq: rows of the flattened sets)."""
        G, B = seq.shape
        cols = off.unsqueeze(-1) + torch.arange(L)
        xb = self._flat.index_select(0, (seq.unsqueeze(-1) * self.M + cols).reshape(-1)).view(G, B, L)
        return xb, self._labels(xb.reshape(G * B, L)).reshape(G, B, L)

    def _crop_tables(self, L: int) -> tuple[Tensor, Tensor] | None:
        """Every crop of length L and its teacher outputs, each (rows * (M - L + 1), L), or None if too large."""
        if L not in self._tables:
            rows = self._flat.numel() // self.M
            size = rows * (self.M - L + 1) * L
            if size > _TABLE_ELEMENTS:
                self._tables[L] = None
            else:
                crops = self._flat.view(rows, self.M).unfold(1, L, 1).reshape(-1, L)  # (rows * (M - L + 1), L)
                self._tables[L] = (crops, self._labels(crops).reshape(crops.shape))
        return self._tables[L]

    def _whole(self, members: list) -> Group:
        rows = torch.arange(len(members))
        if self.x.dim() == 2:
            return Group(rows, self.x, self._y)
        mem = torch.tensor(members, dtype=torch.long)
        return Group(rows, self.x[mem], self._y[mem])

    def _indexed(self, members: list, mem: Tensor | None, idx: Tensor) -> Group:
        rows = torch.arange(len(members))
        if self.shared:
            return Group(rows, self.x[idx[0]], self._y[idx[0]])
        if mem is None:
            return Group(rows, self.x[idx], self._y[idx])
        return Group(rows, self.x[mem, idx], self._y[mem, idx])

    # -- checkpointing ---------------------------------------------------------------------------
    def state(self) -> list[Tensor]:
        """Generator states (one per generator)."""
        return [g.get_state() for g in self.generators]

    def load_state(self, states: Sequence[Tensor]) -> None:
        if len(states) != len(self.generators):
            raise ValueError(f"got {len(states)} generator states for {len(self.generators)} generators")
        for g, s in zip(self.generators, states):
            g.set_state(s)

"""Training and test data for local-rule learning.

- :func:`all_sequences`: every sequence of a given length (``d**M`` of them);
- :func:`random_sequences`: i.i.d. uniform symbols;
- :func:`random_crops`: the paper's augmentation (each mini-batch cropped to a random length in
  ``[n_min, n_max]`` at random offsets, then relabelled by the teacher on the crop);
- :class:`MemberBatches`: shuffled mini-batches with optional crops for E members, each reproducible
  from its own generator; :class:`MiniBatches` is one member's;
- :func:`make_test_sets`: labelled test sets at several lengths (default: 1000 random sequences of
  length 1000, plus length 100, as in the author's code);
- :func:`site_error`: fraction of wrong output sites.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "all_sequences",
    "random_sequences",
    "random_crops",
    "MiniBatches",
    "MemberBatches",
    "Group",
    "LabelledSet",
    "make_test_sets",
    "site_error",
]

Teacher = Callable[[torch.Tensor], torch.Tensor]


def all_sequences(M: int, d: int = 2) -> torch.Tensor:
    """All ``d**M`` sequences of length ``M``, in lexicographic order (first cell most significant).

    Returns
    -------
    torch.Tensor
        Shape ``(d**M, M)``, int64.
    """
    if M < 1:
        raise ValueError(f"M must be >= 1, got {M}")
    if d < 2:
        raise ValueError(f"d must be >= 2, got {d}")
    if d**M > 2**26:
        raise ValueError(f"d**M = {d**M} sequences is too many to enumerate; use random_sequences")
    codes = torch.arange(d**M).unsqueeze(1)
    powers = d ** torch.arange(M - 1, -1, -1)
    return codes // powers % d


def random_sequences(N: int, M: int, d: int = 2, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``N`` i.i.d. uniform sequences of length ``M``; shape (N, M), int64."""
    if N < 0 or M < 1:
        raise ValueError(f"need N >= 0 and M >= 1, got N={N}, M={M}")
    return torch.randint(0, d, (N, M), generator=generator)


def random_crops(
    x: torch.Tensor, n_min: int, n_max: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Crop a batch to one random length in ``[n_min, n_max]``, each sequence at its own offset.

    Parameters
    ----------
    x : torch.Tensor
        Shape (N, M), symbols.
    n_min, n_max : int
        Inclusive range of the crop length; ``n_max`` is clipped to ``M``.

    Returns
    -------
    torch.Tensor
        Shape (N, L) with ``n_min <= L <= min(n_max, M)``. Labels must be recomputed by the teacher
        on the crop (the crop has its own boundaries).
    """
    N, M = x.shape
    n_max = min(n_max, M)
    if not 1 <= n_min <= n_max:
        raise ValueError(f"need 1 <= n_min <= min(n_max, M); got n_min={n_min}, n_max={n_max}, M={M}")
    L = int(torch.randint(n_min, n_max + 1, (1,), generator=generator))
    offsets = torch.randint(0, M - L + 1, (N, 1), generator=generator)
    return torch.gather(x, 1, offsets + torch.arange(L).unsqueeze(0))


@dataclass
class LabelledSet:
    """Input sequences and teacher outputs of one length.

    Attributes
    ----------
    x : torch.Tensor
        Shape (N, M), input symbols.
    y : torch.Tensor
        Shape (N, M), teacher outputs.
    """

    x: torch.Tensor
    y: torch.Tensor

    @property
    def length(self) -> int:
        return self.x.shape[1]

    def to(self, device) -> "LabelledSet":
        return LabelledSet(self.x.to(device), self.y.to(device))


class MiniBatches:
    """Shuffled mini-batches of a training set, optionally cropped and relabelled each time: one
    member of :class:`MemberBatches` (the same draws from ``generator``, in the same order).

    Parameters
    ----------
    x : torch.Tensor
        Shape (N, M), training inputs.
    teacher : callable
        Maps (B, L) inputs to (B, L) outputs; used to label every (cropped) batch.
    batch_size : int or None
        Sequences per mini-batch; ``None`` means full batch.
    crop : (int, int) or None
        ``(n_min, n_max)`` crop lengths, or ``None`` for no augmentation.
    generator : torch.Generator
        Source of all randomness (shuffles and crops), so an epoch is reproducible from its state.
    """

    def __init__(
        self,
        x: torch.Tensor,
        teacher: Teacher,
        batch_size: int | None = None,
        crop: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
    ):
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"x must be a non-empty (N, M) tensor, got shape {tuple(x.shape)}")
        if crop is not None:
            random_crops(x[:1], crop[0], crop[1])  # validate the crop range once, up front
        self.x, self.teacher, self.crop = x, teacher, crop
        self.generator = generator if generator is not None else torch.Generator()
        self._member = MemberBatches(x, teacher, batch_size, crop, [self.generator])
        self.batch_size = self._member.batch_size

    def __len__(self) -> int:
        return len(self._member)

    def __iter__(self) -> Iterator[LabelledSet]:
        for (group,) in self._member.epoch([0]):
            x, y = group.x, group.y  # (1, B, L), or (N, M) for the whole set
            yield LabelledSet(x[0], y[0]) if x.dim() == 3 else LabelledSet(x, y)


def make_test_sets(
    teacher: Teacher,
    lengths: Sequence[int] = (1000, 100),
    n: int = 1000,
    d: int = 2,
    *,
    seed: int = 12345,
) -> dict[int, LabelledSet]:
    """Labelled random test sets, one per length.

    Parameters
    ----------
    teacher : callable
        The rule.
    lengths : sequence of int
        Sequence lengths; default (1000, 100) as in the author's code.
    n : int
        Sequences per length.
    d : int
        Alphabet size.
    seed : int
        Seed of the test inputs (independent of the training seed, so every run of a study sees
        the same test sets).
    """
    g = torch.Generator().manual_seed(seed)
    sets = {}
    for M in lengths:
        x = random_sequences(n, int(M), d, generator=g)
        sets[int(M)] = LabelledSet(x, teacher(x))
    return sets


def site_error(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of output sites where ``pred != y`` (shapes must match)."""
    if pred.shape != y.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != y shape {tuple(y.shape)}")
    if y.numel() == 0:
        raise ValueError("cannot compute an error on an empty set")
    return float((pred != y).float().mean())


# ------------------------------------------------------------------------------------------------
# mini-batches of E members
# ------------------------------------------------------------------------------------------------
# Largest crop table (crops x sites) precomputed per crop length, for the inputs and for their labels;
# larger training sets gather crops and call the teacher on every batch instead.
_TABLE_ELEMENTS = 1 << 24


@dataclass
class Group:
    """Members that train on batches of the same shape in one step.

    Attributes
    ----------
    rows : Tensor, shape (G,), int64
        Positions of the members in the list passed to :meth:`MemberBatches.epoch`.
    x, y : Tensor
        Inputs and targets: (G, B, L) per member, or (B, L) shared by all members (shared mode);
        targets in the batches' ``label_dtype``.
    """

    rows: Tensor
    x: Tensor
    y: Tensor


class MemberBatches:
    """Per-member shuffled, cropped and relabelled mini-batches: E members, each drawing from its own
    generator exactly as one :class:`MiniBatches` would (a permutation per epoch, then per batch the
    crop length ``randint(n_min, n_max + 1, (1,))`` and the offsets ``randint(0, M - L + 1, (B,))``,
    :func:`random_crops`), so member ``e`` sees exactly the batches of its own run. Only the work
    after the draws is batched across members: members whose crops have the same length in a step
    form one group (one gather, one teacher call, one kernel call). In *shared* mode one generator
    drives one stream of batches that every member sees.

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

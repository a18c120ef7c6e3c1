"""Training and test data for local-rule learning.

- :func:`all_sequences`: every sequence of a given length (``d**M`` of them);
- :func:`random_sequences`: i.i.d. uniform symbols;
- :func:`random_crops`: the paper's augmentation (each mini-batch cropped to a random length in
  ``[n_min, n_max]`` at random offsets, then relabelled by the teacher on the crop);
- :class:`MiniBatches`: shuffled mini-batches with optional crops, reproducible from a generator;
- :func:`make_test_sets`: labelled test sets at several lengths (default: 1000 random sequences of
  length 1000, plus length 100, as in the author's code);
- :func:`site_error`: fraction of wrong output sites.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

__all__ = [
    "all_sequences",
    "random_sequences",
    "random_crops",
    "MiniBatches",
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
    """Shuffled mini-batches of a training set, optionally cropped and relabelled each time.

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
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.x = x
        self.teacher = teacher
        self.batch_size = batch_size or x.shape[0]
        self.crop = crop
        self.generator = generator if generator is not None else torch.Generator()
        if crop is not None:
            random_crops(x[:1], crop[0], crop[1])  # validate the crop range once, up front
        self._full = None if crop is not None else LabelledSet(x, teacher(x))

    def __len__(self) -> int:
        return -(-self.x.shape[0] // self.batch_size)

    def __iter__(self) -> Iterator[LabelledSet]:
        N = self.x.shape[0]
        if self._full is not None and self.batch_size >= N:
            yield self._full  # full batch, no augmentation: no shuffle needed, labels cached
            return
        order = torch.randperm(N, generator=self.generator)
        for start in range(0, N, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self._full is not None:
                yield LabelledSet(self._full.x[idx], self._full.y[idx])
            else:
                xb = random_crops(self.x[idx], self.crop[0], self.crop[1], generator=self.generator)
                yield LabelledSet(xb, self.teacher(xb))


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

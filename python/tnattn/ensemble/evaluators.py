"""Evaluators of the trainer's stacked members: the fraction of wrongly predicted sites of every member.

:class:`tnattn.train.Trainer` (its stacked members) chooses its evaluators once per run
(:func:`choose_evaluator`, :func:`choose_train_evaluator`) and calls them as ``evaluator(P, x, y)``
with the members' parameters ``P``, inputs ``x`` ((N, M) shared or (E, N, M) per member) and labels
``y``; each returns an array (E,) of wrong-site fractions. All give the same counts; they differ in
cost:

``FusedCount`` (``"fused count"``)
    One output, integer symbols, on the CPU (or CUDA in a CUDA build): the wrong sites are counted inside one forward kernel
    call (:func:`tnattn.ensemble.fused.count_wrong`; no local maps in memory, so no chunking).
``Chunked`` (``"chunked"``)
    Otherwise: predictions of chunks of members and sequences, sized so that the local maps of one
    chunk stay below a fixed number of entries.
``AllStrings`` (``"all-strings trie"``)
    The training error when the training set holds every ``d**M`` string (the paper's): a
    prefix/suffix trie of shared contexts (:func:`tnattn.ensemble.allstrings.all_strings_wrong_fraction`;
    exact, about 5x faster on the CPU than one kernel pass per string). On CUDA the kernels are
    faster (the trie is launch-bound), so the GPU keeps the other evaluators.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tnattn.ensemble import fused
from tnattn.ensemble.allstrings import all_strings_wrong_fraction, is_all_strings
from tnattn.models.functional import Params
from tnattn.models.functional import positive, predict
from tnattn.ops.heads import fused_heads_available

__all__ = ["FusedCount", "Chunked", "AllStrings", "choose_evaluator", "choose_train_evaluator", "EVAL_ELEMENTS"]

#: Output entries (members x sequences x sites x d x c) per evaluation call of :class:`Chunked`:
#: bounds the memory of the local maps on long test sets while keeping kernel calls large.
EVAL_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class FusedCount:
    """Wrong sites counted inside one forward kernel call (see the module docstring)."""

    normalize_map: bool
    name: str = "fused count"

    @torch.no_grad()
    def __call__(self, P: Params, x: Tensor, y: Tensor) -> np.ndarray:
        N, M = x.shape[-2], x.shape[-1]
        return (fused.count_wrong(x, y, P, normalize_map=self.normalize_map) / (N * M)).cpu().numpy()


@dataclass(frozen=True)
class Chunked:
    """Predictions in chunks of members and sequences (see the module docstring)."""

    normalize_map: bool
    d: int
    c: int
    name: str = "chunked"

    @torch.no_grad()
    def __call__(self, P: Params, x: Tensor, y: Tensor) -> np.ndarray:
        E = P.E
        N, M = x.shape[-2], x.shape[-1]
        per_seq = M * self.d * self.c
        wrong = torch.zeros(E, dtype=torch.float64)
        m_chunk = max(1, min(E, EVAL_ELEMENTS // per_seq))
        n_chunk = max(1, EVAL_ELEMENTS // (m_chunk * per_seq))
        for m0 in range(0, E, m_chunk):
            rows = torch.arange(m0, min(E, m0 + m_chunk), device=P.C.device)
            Pm = P if len(rows) == E else P.select(rows)
            for n0 in range(0, N, n_chunk):
                if x.dim() == 2:
                    xc, yc = x[n0 : n0 + n_chunk], y[n0 : n0 + n_chunk]
                else:
                    xc, yc = x[rows, n0 : n0 + n_chunk], y[rows, n0 : n0 + n_chunk]
                if self.c == 1 and not xc.is_floating_point():  # booleans: no int64 predictions
                    one = yc if yc.dtype == torch.bool else yc == 1
                    bad = positive(Pm, xc, normalize_map=self.normalize_map) != one
                    if yc.dtype != torch.bool:
                        bad |= (yc != 0) & ~one  # pred is 0 or 1: any other label is wrong
                else:
                    bad = predict(Pm, xc, normalize_map=self.normalize_map) != yc
                wrong[m0 : m0 + len(rows)] += bad.flatten(1).sum(1).double().cpu()
        return (wrong / (N * M)).numpy()


@dataclass(frozen=True)
class AllStrings:
    """The error on all ``d**M`` strings of length ``M``, from a trie (see the module docstring);
    ``x`` must be those strings (it is not read)."""

    M: int
    normalize_map: bool
    name: str = "all-strings trie"

    @torch.no_grad()
    def __call__(self, P: Params, x: Tensor, y: Tensor) -> np.ndarray:
        return all_strings_wrong_fraction(P, self.M, y, normalize_map=self.normalize_map)


def choose_evaluator(x: Tensor, *, c: int, d: int, normalize_map: bool):
    """The evaluator for inputs like ``x`` (symbols or embeddings, device) and ``c`` outputs."""
    if c == 1 and not x.is_floating_point() and fused_heads_available(x.device):
        return FusedCount(normalize_map)
    return Chunked(normalize_map, d, c)


def choose_train_evaluator(x: Tensor, *, c: int, d: int, normalize_map: bool):
    """The evaluator of the training error on training set ``x``: the trie when ``x`` holds every
    string of its length (shared by the members, on the CPU), else :func:`choose_evaluator`'s."""
    M = is_all_strings(x, d) if x.dim() == 2 and x.device.type == "cpu" else None
    if M is not None:
        return AllStrings(M, normalize_map)
    return choose_evaluator(x, c=c, d=d, normalize_map=normalize_map)

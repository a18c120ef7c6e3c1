"""Scaling of the fused op: time against sequence length M, bond dimension D and threads.

* vs M (10 .. 10^6, N = 1 by default): tnattn's time per token should stay flat (linear time);
  the reference loop and the vectorised baseline run up to ``max_baseline_M``.
* vs D: effective GFLOP/s of tnattn (see :mod:`tnattn.bench.ops`) as D grows.
* vs threads: tnattn throughput for 1 .. ``os.cpu_count()`` threads (the kernels split the batch
  over ``torch.get_num_threads()`` threads), restored to the caller's setting afterwards.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from tnattn.bench.ops import OpCase, bench_case

__all__ = ["scaling_M", "scaling_D", "scaling_threads", "thread_counts"]


#: Timing settings of the M and D sweeps unless the caller names them (keywords of
#: :func:`tnattn.bench.ops.bench_case`).
SWEEP_TIMING = {"device": "cpu", "repeats": 10, "budget_s": 1.0, "peak": None}


def _sweep(points: Sequence[tuple], timing: dict) -> list[dict]:
    """:func:`tnattn.bench.ops.bench_case` rows of every ``(case, implementations)`` point, in order."""
    timing = {**SWEEP_TIMING, **timing}
    return [row for case, names in points for row in bench_case(case, list(names), **timing)]


def scaling_M(
    Ms: Sequence[int],
    *,
    N: int = 1,
    D: int = 8,
    impls: Sequence[str] = ("tnattn", "loop", "vectorized"),
    max_baseline_M: int = 10_000,
    **timing,
) -> list[dict]:
    """Rows of :func:`tnattn.bench.ops.bench_case` for each M (baselines only up to max_baseline_M).

    ``timing``: ``device``, ``repeats``, ``budget_s`` and ``peak`` of ``bench_case`` (defaults
    :data:`SWEEP_TIMING`).
    """
    return _sweep([(OpCase(N, int(M), D), [n for n in impls if n == "tnattn" or M <= max_baseline_M]) for M in Ms],
                  timing)  # fmt: skip


def scaling_D(Ds: Sequence[int], *, N: int = 256, M: int = 256, impls: Sequence[str] = ("tnattn",), **timing) -> list[dict]:
    """Rows of :func:`tnattn.bench.ops.bench_case` for each bond dimension D (``timing`` as in
    :func:`scaling_M`)."""
    return _sweep([(OpCase(N, M, int(D)), impls) for D in Ds], timing)


def thread_counts(max_threads: Optional[int] = None) -> list[int]:
    """1, 2, 4, ... up to and including ``max_threads`` (default ``os.cpu_count()``)."""
    top = max_threads or os.cpu_count() or 1
    out, t = [], 1
    while t < top:
        out.append(t)
        t *= 2
    return out + [top]


def scaling_threads(
    threads: Sequence[int],
    *,
    N: int = 256,
    M: int = 1024,
    D: int = 8,
    repeats: int = 10,
    budget_s: float = 1.0,
) -> list[dict]:
    """tnattn rows (CPU) for each thread count, with ``threads`` and ``speedup`` (vs the first)."""
    before = torch.get_num_threads()
    rows = []
    try:
        for t in threads:
            if t < 1:
                raise ValueError(f"thread counts must be >= 1, got {t}")
            torch.set_num_threads(int(t))
            for r in bench_case(OpCase(N, M, D), ["tnattn"], device="cpu", repeats=repeats, budget_s=budget_s):
                rows.append({"threads": int(t), **r})
    finally:
        torch.set_num_threads(before)
    ok = [r for r in rows if "error" not in r]
    if ok:
        base = ok[0]
        for r in ok:
            for k in ("fwd", "fwd_bwd"):
                if f"{k}_s" in r and f"{k}_s" in base:
                    r[f"{k}_speedup"] = base[f"{k}_s"] / r[f"{k}_s"]
    return rows

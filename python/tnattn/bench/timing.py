"""Timing: the median over repeats after warm-up, with CUDA events on CUDA devices.

Wall-clock timing of an asynchronous CUDA call measures only the launch; CUDA events recorded on
the current stream around the call, followed by a synchronisation, measure the device work.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Timing", "median_time", "synchronize"]


@dataclass(frozen=True)
class Timing:
    """Result of :func:`median_time`.

    Attributes
    ----------
    median_s : float
        Median seconds per call.
    min_s : float
        Fastest call (seconds).
    repeats : int
        Number of timed calls.
    """

    median_s: float
    min_s: float
    repeats: int


def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    repeats: int = 10,
    min_repeats: int = 3,
    budget_s: float = 2.0,
) -> Timing:
    """Median time of ``fn()`` after ``warmup`` untimed calls.

    Parameters
    ----------
    fn : callable
        The work to time (its result is discarded).
    device : str or torch.device
        ``"cuda..."``: time with CUDA events on the current stream; otherwise ``time.perf_counter``.
    warmup : int
        Untimed calls first (allocator, caches, lazy initialisation, CPU frequency ramp).
    repeats : int
        At most this many timed calls.
    min_repeats : int
        At least this many timed calls, whatever the budget.
    budget_s : float
        Stop adding calls beyond ``min_repeats`` once this many seconds of timed calls have passed.

    Returns
    -------
    Timing
    """
    if repeats < 1 or min_repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, min_repeats >= 1, warmup >= 0; got {repeats}, {min_repeats}, {warmup}")
    if budget_s < 0:
        raise ValueError(f"budget_s must be >= 0, got {budget_s}")
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < max(1, min(repeats, min_repeats)) or (len(times) < repeats and spent < budget_s):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
        times.append(t)
        spent += t
    return Timing(statistics.median(times), min(times), len(times))

"""Kernel efficiency: the bond-dimension sweep and one long sequence.

* D sweep: ``tn_attention`` forward and forward+backward for D = 2..64, float32, batched
  (N = M = 256, or N = M = 128 for D >= 32), in Mtok/s and effective GFLOP/s, as a percentage of
  the sgemm rate measured in the same process. Effective flops follow one fixed model, the work of
  the O(M) algorithm whatever the implementation does: 3 mat-vecs of 2 D^2 flops per token forward
  (left step, right step, local map), and twice that for the backward, so 6 D^2 per token forward
  and 18 D^2 forward+backward.
* Long sequence: N = 1, M = 10^3 .. 10^7, forward Mtok/s and the peak resident memory the call adds
  (measured in a fresh child process, so earlier allocations do not hide it), against the batched
  forward rate (N = 256, M = 4096) of the same run.

Every row records the CPU instruction-set path of the kernels (:func:`tnattn.build_info`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Optional, Sequence

import torch

from tnattn.bench.timing import median_time

__all__ = ["EFF_FLOPS_FWD", "EFF_FLOPS_FWD_BWD", "d_sweep", "long_sequence", "peak_memory_forward", "batched_shape"]

#: Effective flops per token, in units of D^2 (see the module docstring).
EFF_FLOPS_FWD = 6
EFF_FLOPS_FWD_BWD = 18

DEFAULT_D = (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)
DEFAULT_LONG_M = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)


def batched_shape(D: int) -> tuple[int, int]:
    """(N, M) of the batched D sweep: 256 x 256, or 128 x 128 for D >= 32."""
    return (128, 128) if D >= 32 else (256, 256)


def _problem(N: int, M: int, D: int, d: int = 2, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, d, (N, M), generator=g, dtype=torch.uint8)
    A = (torch.randn(d, D, D, generator=g, dtype=dtype) / D**0.5).requires_grad_()
    C = torch.randn(d, D, D, 1, generator=g, dtype=dtype).requires_grad_()
    u = torch.randn(D, generator=g, dtype=dtype)
    return x, A, C, u


def _rate(fn, tokens: int, repeats: int, budget_s: float) -> float:
    t = median_time(fn, warmup=1, repeats=repeats, budget_s=budget_s).median_s
    return tokens / t


def d_sweep(
    Ds: Sequence[int] = DEFAULT_D,
    *,
    sgemm_GFLOP_s: float,
    repeats: int = 10,
    budget_s: float = 1.0,
    say=print,
) -> list[dict]:
    """Forward and forward+backward throughput of ``tn_attention`` for each bond dimension.

    Parameters
    ----------
    Ds : sequence of int
        Bond dimensions.
    sgemm_GFLOP_s : float
        The float32 matrix-product rate of this process (the % column divides by it).
    repeats, budget_s : int, float
        Timing controls (median of up to ``repeats`` calls within ``budget_s`` seconds).
    say : callable
        Receives each printed row as it finishes.

    Returns
    -------
    list of dict
        ``D, N, M, fwd_Mtok_s, fwd_GFLOP_s, fwd_pct_sgemm, fwd_bwd_Mtok_s, fwd_bwd_GFLOP_s,
        fwd_bwd_pct_sgemm, vs_prev`` (effective fwd+bwd GFLOP/s over that of the previous D in the
        list; the issue's "no cliff" rule asks for at least 0.7).
    """
    from tnattn import build_info, ops

    isa = build_info()["cpu_isa"]
    say(f"{'D':>3} {'N':>4} {'M':>4} | {'fwd Mtok/s':>10} {'GFLOP/s':>8} {'% sgemm':>8} | "
        f"{'f+b Mtok/s':>10} {'GFLOP/s':>8} {'% sgemm':>8} | {'vs prev D':>9}  (isa {isa})")  # fmt: skip
    rows: list[dict] = []
    for D in Ds:
        N, M = batched_shape(int(D))
        x, A, C, u = _problem(N, M, int(D))
        tokens = N * M

        def fwd():
            with torch.no_grad():
                ops.tn_attention(x, A, A, C, u, u)

        def fwd_bwd():
            A.grad = C.grad = None
            ops.tn_attention(x, A, A, C, u, u).sum().backward()

        rf, rfb = _rate(fwd, tokens, repeats, budget_s), _rate(fwd_bwd, tokens, repeats, budget_s)
        gf, gfb = rf * EFF_FLOPS_FWD * D * D / 1e9, rfb * EFF_FLOPS_FWD_BWD * D * D / 1e9
        row = {
            "D": int(D), "N": N, "M": M, "cpu_isa": isa,
            "fwd_Mtok_s": rf / 1e6, "fwd_GFLOP_s": gf, "fwd_pct_sgemm": 100 * gf / sgemm_GFLOP_s,
            "fwd_bwd_Mtok_s": rfb / 1e6, "fwd_bwd_GFLOP_s": gfb, "fwd_bwd_pct_sgemm": 100 * gfb / sgemm_GFLOP_s,
            "vs_prev": gfb / rows[-1]["fwd_bwd_GFLOP_s"] if rows else None,
        }  # fmt: skip
        rows.append(row)
        prev = "-" if row["vs_prev"] is None else f"{row['vs_prev']:.2f}x"
        say(f"{D:>3} {N:>4} {M:>4} | {row['fwd_Mtok_s']:>10.3g} {gf:>8.3g} {row['fwd_pct_sgemm']:>7.1f}% | "
            f"{row['fwd_bwd_Mtok_s']:>10.3g} {gfb:>8.3g} {row['fwd_bwd_pct_sgemm']:>7.1f}% | {prev:>9}")  # fmt: skip
    return rows


_CHILD = r"""
import json, resource, sys, torch
from tnattn import ops
N, M, D, threads = (int(a) for a in sys.argv[1:5])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 2, (N, M), generator=g, dtype=torch.uint8)
A = torch.randn(2, D, D, generator=g) / D**0.5
C = torch.randn(2, D, D, 1, generator=g)
u = torch.randn(D, generator=g)
ops.tn_attention(x[:, :2], A, A, C, u, u)  # load everything the call needs

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))  # KiB

try:  # Linux: reset the high-water mark, so that it measures this call alone
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, method = status("VmRSS"), "VmHWM"
except OSError:
    before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
W = ops.tn_attention(x, A, A, C, u, u)
after = status("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_MB": (after - before) / 1024.0, "output_MB": W.numel() * W.element_size() / 2**20,
                  "method": method}))
"""


def peak_memory_forward(N: int, M: int, D: int, threads: int) -> dict:
    """Peak resident memory (MB) that one ``tn_attention`` forward adds, output included.

    Runs in a fresh Python process. On Linux the process's resident high-water mark is reset just
    before the call (``/proc/self/clear_refs``), so the figure is the call's peak resident memory
    above what the process held before it (``method: "VmHWM"``); elsewhere the growth of
    ``ru_maxrss``, which misses a peak below an earlier one (``method: "ru_maxrss"``).
    """
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(N), str(M), str(D), str(threads)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def long_sequence(
    Ms: Sequence[int] = DEFAULT_LONG_M,
    *,
    D: int = 8,
    memory_D: Optional[int] = 64,
    memory_M: int = 1_000_000,
    repeats: int = 5,
    budget_s: float = 1.0,
    say=print,
) -> dict:
    """One long sequence (N = 1) against the batched forward rate of the same process.

    Returns
    -------
    dict
        ``batched_fwd_Mtok_s`` (N = 256, M = 4096), ``rows`` (per M: ``fwd_Mtok_s``,
        ``x_batched``, ``ns_per_token``, ``peak_MB``), and ``memory`` (the peak of one forward at
        N = 1, M = ``memory_M``, D = ``memory_D``).
    """
    from tnattn import build_info, ops

    isa = build_info()["cpu_isa"]
    threads = torch.get_num_threads()
    x, A, C, u = _problem(256, 4096, D)
    with torch.no_grad():
        batched = _rate(lambda: ops.tn_attention(x, A, A, C, u, u), 256 * 4096, repeats, budget_s)
    del x
    say(f"batched forward N=256 M=4096 D={D}: {batched / 1e6:.3g} Mtok/s (isa {isa}, "
        f"{threads} threads)")  # fmt: skip
    say(f"{'M':>9} | {'fwd Mtok/s':>10} {'x batched':>9} {'ns/token':>9} | {'peak MB':>8}")
    rows = []
    for M in Ms:
        x, A, C, u = _problem(1, int(M), D)
        with torch.no_grad():
            r = _rate(lambda: ops.tn_attention(x, A, A, C, u, u), int(M), repeats, budget_s)
        mem = peak_memory_forward(1, int(M), D, threads)
        row = {"M": int(M), "D": D, "cpu_isa": isa, "fwd_Mtok_s": r / 1e6, "x_batched": r / batched, "ns_per_token": 1e9 / r,
               "peak_MB": mem.get("peak_MB")}  # fmt: skip
        rows.append(row)
        pk = "-" if row["peak_MB"] is None else f"{row['peak_MB']:.0f}"
        say(f"{M:>9} | {row['fwd_Mtok_s']:>10.3g} {row['x_batched']:>8.2f}x {row['ns_per_token']:>9.3g} | {pk:>8}")
    memory = None
    if memory_D:
        memory = {"N": 1, "M": memory_M, "D": memory_D, **peak_memory_forward(1, memory_M, memory_D, threads)}
        say(f"peak memory of one forward, N=1 M={memory_M} D={memory_D}: "
            f"{memory.get('peak_MB', float('nan')):.0f} MB (output {memory.get('output_MB', float('nan')):.0f} MB)")  # fmt: skip
    return {"cpu_isa": isa, "batched_fwd_Mtok_s": batched / 1e6, "rows": rows, "memory": memory}

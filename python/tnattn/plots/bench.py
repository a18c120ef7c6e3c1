"""Figures of ``tnattn bench``: op throughput, peers, scaling in M / D / threads, training.

Each function takes the rows that :mod:`tnattn.bench` produced (the same lists that go into the
JSON file) and writes one PNG atomically; :func:`plot_bench` writes all that have data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402

from tnattn.plots import save_figure  # noqa: E402

__all__ = ["plot_bench", "plot_ops", "plot_scaling_M", "plot_scaling_D", "plot_threads", "plot_training"]

_COLORS = {"tnattn": "C0", "loop": "C1", "vectorized": "C2", "einsum": "C3", "tensorkrowch": "C4"}


def _ok(rows, key):
    return [r for r in rows if key in r and "error" not in r]


def _case_label(r: dict) -> str:
    extra = "" if (r["d"], r["c"], r["dtype"]) == (2, 1, "float32") else f"\nd={r['d']} c={r['c']} {r['dtype']}"
    return f"N={r['N']} M={r['M']}\nD={r['D']}{extra}"


def plot_ops(rows: list[dict], path: str | os.PathLike, *, title: str = "op throughput (forward+backward)") -> Path:
    """Grouped bars: forward+backward tokens/s per grid point and implementation (log scale)."""
    rows = _ok(rows, "fwd_bwd_Mtok_s")
    cases, impls = [], []
    for r in rows:
        key = (r["N"], r["M"], r["D"], r["d"], r["c"], r["dtype"])
        if key not in cases:
            cases.append(key)
        if r["impl"] not in impls:
            impls.append(r["impl"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(cases) + 2), 4.2))
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        xs, ys = [], []
        for i, key in enumerate(cases):
            r = next((r for r in rows if r["impl"] == impl and (r["N"], r["M"], r["D"], r["d"], r["c"], r["dtype"]) == key), None)
            if r is not None:
                xs.append(i + (j - (len(impls) - 1) / 2) * width)
                ys.append(r["fwd_bwd_Mtok_s"] * 1e6)
        ax.bar(xs, ys, width, label=impl, color=_COLORS.get(impl))
    labels = [_case_label(next(r for r in rows if (r["N"], r["M"], r["D"], r["d"], r["c"], r["dtype"]) == k)) for k in cases]
    ax.set_xticks(range(len(cases)), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("tokens / s")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_scaling_M(rows: list[dict], path: str | os.PathLike) -> Path:
    """Seconds per call against M (log-log), one line per implementation and direction."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for impl in dict.fromkeys(r["impl"] for r in rows):
        rs = sorted(_ok([r for r in rows if r["impl"] == impl], "fwd_s"), key=lambda r: r["M"])
        if not rs:
            continue
        ax.loglog([r["M"] for r in rs], [r["fwd_s"] for r in rs], "o-", color=_COLORS.get(impl), label=f"{impl} fwd")
        rb = [r for r in rs if "fwd_bwd_s" in r]
        if rb:
            ax.loglog([r["M"] for r in rb], [r["fwd_bwd_s"] for r in rb], "s--", color=_COLORS.get(impl), label=f"{impl} fwd+bwd")
    ax.set_xlabel("sequence length M")
    ax.set_ylabel("seconds per call")
    n = rows[0]["N"] if rows else "?"
    d = rows[0]["D"] if rows else "?"
    ax.set_title(f"time against M (N={n}, D={d})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_scaling_D(rows: list[dict], path: str | os.PathLike, peak: Optional[float] = None) -> Path:
    """tnattn effective GFLOP/s against D, with the GEMM rate of the same run as a line."""
    rs = sorted(_ok([r for r in rows if r["impl"] == "tnattn"], "fwd_GFLOP_s"), key=lambda r: r["D"])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.semilogx([r["D"] for r in rs], [r["fwd_GFLOP_s"] for r in rs], "o-", label="tnattn fwd", base=2)
    rb = [r for r in rs if "fwd_bwd_GFLOP_s" in r]
    ax.semilogx([r["D"] for r in rb], [r["fwd_bwd_GFLOP_s"] for r in rb], "s--", label="tnattn fwd+bwd", base=2)
    if peak:
        ax.axhline(peak, color="k", lw=1, ls=":", label=f"sgemm {peak:.0f} GFLOP/s")
    ax.set(xlabel="bond dimension D", ylabel="effective GFLOP/s (2 D^2 per mat-vec)",
           title="roofline: tnattn against the GEMM rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_threads(rows: list[dict], path: str | os.PathLike) -> Path:
    """tnattn speed-up against the thread count."""
    rs = sorted(_ok(rows, "fwd_speedup"), key=lambda r: r["threads"])
    fig, ax = plt.subplots(figsize=(5, 4))
    ts = [r["threads"] for r in rs]
    ax.plot(ts, [r["fwd_speedup"] for r in rs], "o-", label="fwd")
    ax.plot(ts, [r.get("fwd_bwd_speedup", float("nan")) for r in rs], "s--", label="fwd+bwd")
    if ts:
        ax.plot(ts, ts, "k:", lw=1, label="ideal")
    ax.set(xlabel="threads", ylabel="speed-up over 1 thread", title="tnattn thread scaling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training(rows: list[dict], path: str | os.PathLike) -> Path:
    """Bars of member-token-steps/s: single model and ensembles."""
    fig, ax = plt.subplots(figsize=(5, 4))
    labels = ["single" if r["kind"] == "single" else f"ensemble E={r['E']}" for r in rows]
    ax.bar(range(len(rows)), [r["member_token_steps_per_s"] for r in rows], color="C0")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("member-token-steps / s")
    setting = rows[0].get("setting", "") if rows else ""
    ax.set_title(f"training throughput ({setting})")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_bench(results: dict, outdir: str | os.PathLike) -> list[Path]:
    """Write every figure whose section is in ``results`` (as produced by :func:`tnattn.bench.run`)."""
    out = Path(outdir)
    paths = []
    peak = (results.get("gemm_GFLOP_s") or {}).get("float32")
    if results.get("ops"):
        paths.append(plot_ops(results["ops"], out / "bench_ops.png"))
    if results.get("peers"):
        paths.append(plot_ops(results["peers"], out / "bench_peers.png", title="all M outputs: tnattn against generic TN toolkits"))
    scaling = results.get("scaling") or {}
    if scaling.get("M"):
        paths.append(plot_scaling_M(scaling["M"], out / "bench_scaling_M.png"))
    if scaling.get("D"):
        paths.append(plot_scaling_D(scaling["D"], out / "bench_roofline_D.png", peak))
    if scaling.get("threads"):
        paths.append(plot_threads(scaling["threads"], out / "bench_threads.png"))
    if results.get("training"):
        paths.append(plot_training(results["training"], out / "bench_training.png"))
    return paths

"""Throughput of the fused TN-attention op against plain-PyTorch baselines.

Implementations compared (all compute ``tn_attention(x, A_left, A_right, C, u, v)``):

* ``tnattn``      -- :func:`tnattn.ops.tn_attention` (fused C++ kernels, C++ backward);
* ``loop``        -- :func:`tnattn.reference.tn_attention`, a straightforward PyTorch loop over
                     positions with one batched mat-vec per step (autograd backward);
* ``vectorized``  -- :func:`tnattn.reference.tn_attention_vectorized`, a log-depth prefix product
                     of the transfer matrices (ceil(log2 M) batched matmuls per side).

Tokens are N*M sites. Effective GFLOP/s count 2*D^2 flops per matrix-vector product (or outer
product) that the algorithm needs, without the recomputation tnattn's backward does:
forward 2 + d*c mat-vecs per token (two context steps, d*c local-map contractions), backward
4 + 3*d*c (per side an adjoint mat-vec and an outer-product update; per local map the gradients of
both contexts and of C). The machine's sgemm rate (torch.mm, float32) is measured in the same run.

Usage::

    python benchmarks/bench_ops.py --threads 2 --json results/bench_ops.json
    python benchmarks/bench_ops.py --quick

Importable: ``main(argv)`` runs the benchmark and returns 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable

import torch

DEFAULT_GRID = [(256, 256, 8), (256, 256, 2), (256, 256, 4), (256, 256, 16), (64, 1024, 8), (1024, 64, 8)]
QUICK_GRID = [(32, 32, 4), (64, 64, 8)]
IMPLS = ("tnattn", "loop", "vectorized")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_simd_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512vl", "amx_tile") if f in flags)
    except OSError:
        pass
    return ""


def torch_blas() -> str:
    cfg = torch.__config__.show()
    for key in ("BLAS_INFO=", "LAPACK_INFO="):
        for part in cfg.replace("\n", ",").split(","):
            if key in part:
                return part.strip()
    return "unknown"


def median_time(fn: Callable[[], object], *, warmup: int, repeats: int, budget_s: float) -> float:
    """Median wall time of fn() over up to `repeats` runs (at least 3) within about budget_s."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, dtype=torch.float32)
    b = torch.randn(n, n, dtype=torch.float32)
    t = median_time(lambda: torch.mm(a, b), warmup=2, repeats=repeats, budget_s=5.0)
    return 2.0 * n**3 / t / 1e9


def matvecs_per_token(d: int, c: int) -> tuple[int, int]:
    """(forward, forward+backward) matrix-vector-product equivalents per token."""
    fwd = 2 + d * c
    bwd = 4 + 3 * d * c
    return fwd, fwd + bwd


def make_problem(N: int, M: int, D: int, d: int, c: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f32 = dict(dtype=torch.float32)
    params = [
        torch.randn(d, D, D, generator=g, **f32),
        torch.randn(d, D, D, generator=g, **f32),
        torch.randn(d, D, D, c, generator=g, **f32),
        torch.randn(D, generator=g, **f32),
        torch.randn(D, generator=g, **f32),
    ]
    params = [p.to(device).requires_grad_() for p in params]
    x = torch.randint(0, d, (N, M), generator=g).to(torch.uint8).to(device)
    w = torch.randn(N, M, d, c, generator=g, **f32).to(device)
    return x, params, w


def implementations() -> dict[str, Callable]:
    from tnattn import ops, reference

    return {"tnattn": ops.tn_attention, "loop": reference.tn_attention, "vectorized": reference.tn_attention_vectorized}


def bench_case(N, M, D, d, c, device, impls, *, repeats, budget_s) -> dict:
    x, params, w = make_problem(N, M, D, d, c, device)
    fns = implementations()
    out = {}
    for name in impls:
        f = fns[name]
        # The reference implementations index with the symbols; give them int64 like a user would.
        xi = x if name == "tnattn" else x.long()

        def fwd():
            with torch.no_grad():
                return f(xi, *params)

        def fwd_bwd():
            # Backward from a fixed upstream gradient w = dLoss/dW (no extra loss ops timed).
            for p in params:
                p.grad = None
            f(xi, *params).backward(w)

        slow = name != "tnattn"
        warm = 1 if slow else 3
        reps = 3 if slow else repeats
        t_f = median_time(fwd, warmup=warm, repeats=reps, budget_s=budget_s)
        t_fb = median_time(fwd_bwd, warmup=warm, repeats=reps, budget_s=budget_s)
        out[name] = {"fwd_s": t_f, "fwd_bwd_s": t_fb}
    return out


TABLE_HEAD = (
    f"{'N':>5} {'M':>5} {'D':>3} {'impl':>10} | {'fwd Mtok/s':>10} {'x loop':>7} | "
    f"{'f+b Mtok/s':>10} {'x loop':>7} | {'f+b GFLOP/s':>11} {'% sgemm':>7}"
)


def format_row(r: dict, sgemm: float) -> str:
    return (
        f"{r['N']:>5} {r['M']:>5} {r['D']:>3} {r['impl']:>10} | {r['fwd_Mtok_s']:>10.3f} "
        f"{_fmt_ratio(r.get('fwd_x_loop')):>7} | {r['fwd_bwd_Mtok_s']:>10.3f} "
        f"{_fmt_ratio(r.get('fwd_bwd_x_loop')):>7} | {r['fwd_bwd_GFLOP_s']:>11.2f} "
        f"{100.0 * r['fwd_bwd_GFLOP_s'] / sgemm:>6.1f}%"
    )


def _fmt_ratio(v) -> str:
    return "-" if v is None else f"{v:.0f}x" if v >= 10 else f"{v:.2f}x"


def write_json_atomic(path: str, payload: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bench_ops.", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def parse_grid(text: str) -> list[tuple[int, int, int]]:
    grid = []
    for item in text.split(";"):
        parts = [int(p) for p in item.split(",")]
        if len(parts) != 3 or min(parts) < 1:
            raise argparse.ArgumentTypeError(f"grid entries are N,M,D with positive integers, got {item!r}")
        grid.append(tuple(parts))
    return grid


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny grid, for smoke tests")
    p.add_argument("--grid", type=parse_grid, default=None, help="N,M,D;N,M,D;... (default: a grid incl. 256,256,8)")
    p.add_argument("--d", type=int, default=2, help="alphabet size (default 2)")
    p.add_argument("--c", type=int, default=1, help="outputs per site (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch/kernel threads (default: torch's current)")
    p.add_argument("--device", default="cpu", help="cpu (cuda once the CUDA kernels exist)")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {IMPLS}")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats of tnattn (baselines: 3)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds per measurement beyond 3 repeats")
    p.add_argument("--json", dest="json_path", default=None, help="write results to this JSON file (atomically)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    impls = [s for s in args.impls.split(",") if s]
    for s in impls:
        if s not in IMPLS:
            raise SystemExit(f"unknown implementation {s!r}; choose from {IMPLS}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    grid = args.grid or (QUICK_GRID if args.quick else DEFAULT_GRID)

    import tnattn

    header = {
        "cpu": cpu_model(),
        "simd": cpu_simd_flags(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "blas": torch_blas(),
        "python": platform.python_version(),
        "tnattn": getattr(tnattn, "__version__", "unknown"),
        "device": args.device,
        "dtype": "float32",
        "d": args.d,
        "c": args.c,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    sgemm = sgemm_gflops(repeats=3 if args.quick else 5)
    header["sgemm_GFLOP_s"] = sgemm
    for k, v in header.items():
        print(f"# {k}: {v:.1f}" if isinstance(v, float) else f"# {k}: {v}")
    print(f"# timings: median of repeats after warm-up; tokens = N*M; command: {' '.join(sys.argv)}")

    mv_f, mv_fb = matvecs_per_token(args.d, args.c)
    print(TABLE_HEAD)
    print("-" * len(TABLE_HEAD))
    rows = []
    for N, M, D in grid:
        res = bench_case(N, M, D, args.d, args.c, args.device, impls, repeats=args.repeats, budget_s=args.budget)
        tok = N * M
        flop_mv = 2.0 * D * D
        for name in impls:
            r = res[name]
            row = {
                "N": N, "M": M, "D": D, "impl": name,
                "fwd_s": r["fwd_s"], "fwd_bwd_s": r["fwd_bwd_s"],
                "fwd_Mtok_s": tok / r["fwd_s"] / 1e6, "fwd_bwd_Mtok_s": tok / r["fwd_bwd_s"] / 1e6,
                "fwd_GFLOP_s": tok * mv_f * flop_mv / r["fwd_s"] / 1e9,
                "fwd_bwd_GFLOP_s": tok * mv_fb * flop_mv / r["fwd_bwd_s"] / 1e9,
            }  # fmt: skip
            if "loop" in res:
                row["fwd_x_loop"] = res["loop"]["fwd_s"] / r["fwd_s"]
                row["fwd_bwd_x_loop"] = res["loop"]["fwd_bwd_s"] / r["fwd_bwd_s"]
            rows.append(row)
            print(format_row(row, sgemm), flush=True)

    if args.json_path:
        write_json_atomic(args.json_path, {"header": header, "flop_model": {
            "flops_per_matvec": "2*D^2", "fwd_matvecs_per_token": mv_f, "fwd_bwd_matvecs_per_token": mv_fb},
            "rows": rows})  # fmt: skip
        print(f"# wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of the fused TN-attention op against plain-PyTorch baselines.

Thin wrapper over ``tnattn bench ops`` (:mod:`tnattn.bench`: one implementation of the machine
header, the sgemm rate, the timer and the op grid), keeping this script's flags and JSON layout.

Implementations compared (all compute ``tn_attention(x, A_left, A_right, C, u, v)``):

* ``tnattn``      -- :func:`tnattn.ops.tn_attention` (fused C++ kernels, C++ backward);
* ``loop``        -- :func:`tnattn.reference.tn_attention`, a PyTorch loop over positions;
* ``vectorized``  -- :func:`tnattn.reference.tn_attention_vectorized`, log-depth prefix products;
* ``einsum`` / ``tensorkrowch`` -- generic toolkits, O(M^2) (see :mod:`tnattn.bench.peers`).

Tokens are N*M sites. Effective GFLOP/s count 2*D^2 flops per matrix-vector product:
forward 2 + d*c per token, backward 4 + 3*d*c (see :mod:`tnattn.bench.ops`); % of the sgemm rate
(torch.mm, float32; float64 rows against dgemm) measured in the same run.

Usage::

    python benchmarks/bench_ops.py --threads 2 --json results/bench_ops.json
    python benchmarks/bench_ops.py --quick

Importable: ``main(argv)`` runs the benchmark and returns 0.
"""

from __future__ import annotations

import argparse
import sys

from tnattn.bench.ops import IMPLS, OpCase
from tnattn.bench.run import BenchConfig, run

DEFAULT_GRID = [(256, 256, 8), (256, 256, 2), (256, 256, 4), (256, 256, 16), (64, 1024, 8), (1024, 64, 8)]
QUICK_GRID = [(32, 32, 4), (64, 64, 8)]


def parse_grid(text: str) -> list[tuple[int, int, int]]:
    grid = []
    for item in text.split(";"):
        try:
            parts = [int(p) for p in item.split(",")]
        except ValueError:
            parts = []
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
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="parameter dtype")
    p.add_argument("--threads", type=int, default=None, help="torch/kernel threads (default: torch's current)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--impls", default="tnattn,loop,vectorized", help=f"comma-separated subset of {IMPLS}")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats of tnattn (baselines: 3)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds per measurement beyond 3 repeats")
    p.add_argument("--json", dest="json_path", default=None, help="write results to this JSON file (atomically)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    impls = tuple(s for s in args.impls.split(",") if s)
    for s in impls:
        if s not in IMPLS:
            parser.error(f"unknown implementation {s!r}; choose from {IMPLS}")
    grid = args.grid or (QUICK_GRID if args.quick else DEFAULT_GRID)
    try:
        cases = tuple(OpCase(N, M, D, d=args.d, c=args.c, dtype=args.dtype) for N, M, D in grid)
        config = BenchConfig(sections=("ops",), device=args.device, threads=args.threads, ops=cases, ops_impls=impls,
                             repeats=args.repeats, budget_s=args.budget, gemm_n=512 if args.quick else 2048)  # fmt: skip
        results = run(config)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json_path:
        from tnattn.io import write_json

        write_json(args.json_path, {"header": results["header"], "gemm_GFLOP_s": results["gemm_GFLOP_s"],
                                    "flop_model": results["flop_model"], "rows": results["ops"]})  # fmt: skip
        print(f"# wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

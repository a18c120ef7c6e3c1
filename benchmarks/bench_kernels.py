"""Kernel efficiency: D sweep (D = 2..64, % of sgemm) and one long sequence (N = 1, M = 10^3..10^7).

Thin wrapper over ``tnattn bench kernels`` (:mod:`tnattn.bench.kernels`); same flags::

    python benchmarks/bench_kernels.py --threads 2 --json results/bench_kernels.json
    TNATTN_CPU_ISA=avx2 python benchmarks/bench_kernels.py --threads 2   # a lower instruction set
    python benchmarks/bench_kernels.py --quick

Importable: ``main(argv)`` returns the exit status.
"""

from __future__ import annotations

import sys

from tnattn.bench import main as _bench_main


def main(argv: list[str] | None = None) -> int:
    return _bench_main(["kernels", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

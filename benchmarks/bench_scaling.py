"""Scaling of the fused op: time against M (10 .. 10^6), D (roofline) and threads.

Thin wrapper over ``tnattn bench scaling`` (:mod:`tnattn.bench`); same flags::

    python benchmarks/bench_scaling.py --json results/bench_scaling.json --plots results/
    python benchmarks/bench_scaling.py --scaling-M 10,1000,1000000 --scaling-D 4,8,16
    python benchmarks/bench_scaling.py --quick

Importable: ``main(argv)`` returns the exit status.
"""

from __future__ import annotations

import sys

from tnattn.bench import main as _bench_main


def main(argv: list[str] | None = None) -> int:
    return _bench_main(["scaling", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

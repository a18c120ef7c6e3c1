"""tnattn against generic tensor-network toolkits (opt_einsum, TensorKrowch) for all M outputs.

Thin wrapper over ``tnattn bench peers`` (:mod:`tnattn.bench`); same flags::

    python benchmarks/bench_peers.py --threads 2 --json results/bench_peers.json --plots results/
    python benchmarks/bench_peers.py --quick

Importable: ``main(argv)`` returns the exit status.
"""

from __future__ import annotations

import sys

from tnattn.bench import main as _bench_main


def main(argv: list[str] | None = None) -> int:
    return _bench_main(["peers", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

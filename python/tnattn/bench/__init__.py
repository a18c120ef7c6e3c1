"""Benchmarks of tnattn (``tnattn bench``, ``python -m tnattn.bench``).

Sections, all measured in one process (medians over repeats after warm-up):

- ``ops``: op throughput (forward and forward+backward tokens/s) over a grid of N, M, D, d and
  dtype: the fused op against the reference loop and the vectorised baseline
  (:mod:`tnattn.bench.ops`), with the effective GFLOP/s as a % of the GEMM rate (roofline);
- ``peers``: all M outputs with generic tensor-network toolkits, opt_einsum and TensorKrowch
  (:mod:`tnattn.bench.peers`; O(M^2), small M);
- ``scaling``: time against M (10 .. 10^6), D and threads (:mod:`tnattn.bench.scaling`);
- ``training``: member-token-steps/s, single model and ensemble (:mod:`tnattn.bench.training`).

The machine header (:mod:`tnattn.bench.machine`) and the timer (:mod:`tnattn.bench.timing`) are
shared by every benchmark, including the scripts in ``benchmarks/``.
"""

from tnattn.bench.run import SECTIONS, BenchConfig, main, run

__all__ = ["main", "run", "BenchConfig", "SECTIONS"]

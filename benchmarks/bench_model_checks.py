"""Cost of TNAttention's input checks per forward, against the whole forward.

Times ``TNAttention._prepare`` (argument checks: shapes, dtypes, devices; parameter finiteness only
when a parameter changed, timed separately as in a training step) and one forward without grad at the paper's setting (D = 10, d = 2,
batch 128, length 8, float32), minimum over repeats (the machine is shared). The checks read no
data, so the model also compiles with ``torch.compile(fullgraph=True)`` and exports with
``torch.export`` (tests/models/test_model_compile.py).

Usage::

    python benchmarks/bench_model_checks.py --threads 1
    python benchmarks/bench_model_checks.py --N 1 --M 20
"""

from __future__ import annotations

import argparse
import timeit

import torch

from tnattn.models import TNAttention


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--N", type=int, default=128)
    p.add_argument("--M", type=int, default=8)
    p.add_argument("--D", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--number", type=int, default=2000)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = TNAttention(D=a.D, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 2, (a.N, a.M), generator=torch.Generator().manual_seed(1))
    model(x)

    def best(fn, number):
        return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6

    checks = best(lambda: model._prepare(x), a.number)
    with torch.no_grad():
        forward = best(lambda: model(x), max(1, a.number // 10))
    print(f"N={a.N} M={a.M} D={a.D} threads={a.threads}: checks {checks:.1f} us, forward (no grad) {forward:.1f} us, "
          f"checks {100 * checks / forward:.1f} % of the forward")

    # In training every forward follows an optimiser step, which moves the parameters' version
    # counters, so the checks include the parameter-finiteness reduction there. An in-place add of
    # zero moves the counters the same way; its own cost is timed alone and subtracted.
    params = list(model.parameters())

    def touch():
        with torch.no_grad():
            for p in params:
                p.add_(0.0)

    def touch_and_check():
        touch()
        model._prepare(x)

    after_step = best(touch_and_check, a.number) - best(touch, a.number)
    print(f"checks after a parameter change (every training step): {after_step:.1f} us")


if __name__ == "__main__":
    main()

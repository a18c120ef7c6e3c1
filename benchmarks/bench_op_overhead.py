"""Eager per-call overhead of the tnattn ops: microseconds per call on tiny problems.

On a problem this small (N = 2 sequences of M = 4 sites, D = 2) the kernels do almost no work, so
the time per call is the Python and binding overhead: argument checks, the choice of path, output
allocation and the call into ``tnattn._C``. Rows: the single-model ops (no autograd, and forward
plus backward through autograd), the same ops on (E, ...) member stacks, and the fused heads of
Scenario A (squared-error step, wrong-site count). Minimum over ``--repeats`` batches of ``--calls``
calls each, one thread, timed by the thread's CPU time (``time.thread_time``), so that time spent
descheduled on a shared machine does not count (the minimum then drops the batches that other
processes still disturbed through the caches). The script runs on builds before and after the one-world op redesign (it
finds the stacked ops under either name), so both can be timed side by side in one session.

Usage::

    python benchmarks/bench_op_overhead.py
    python benchmarks/bench_op_overhead.py --calls 2000 --repeats 15
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _per_call_us(fn, calls: int, repeats: int) -> float:
    for _ in range(max(10, calls // 10)):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        t = time.thread_time()
        for _ in range(calls):
            fn()
        times.append((time.thread_time() - t) / calls)
    return min(times) * 1e6


def _stacked_ops():
    """(contexts, tn_attention) over (E, ...) stacks, under their pre- or post-redesign names."""
    try:  # before the redesign: a separate ensemble op set
        from tnattn.ensemble.ops import contexts_ensemble, tn_attention_ensemble

        return contexts_ensemble, tn_attention_ensemble
    except ImportError:  # after: one op set, the stacks are its general case
        import tnattn.ops

        return tnattn.ops.contexts, tnattn.ops.tn_attention


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=1000, help="calls per timed batch (default 1000)")
    p.add_argument("--repeats", type=int, default=11, help="timed batches; the minimum is printed (default 11)")
    p.add_argument("--E", type=int, default=4, help="members of the stacked rows (default 4)")
    args = p.parse_args(argv)
    import tnattn
    from tnattn.ensemble.fused import count_wrong, mse_step
    try:
        from tnattn.models.functional import Params as StackedParams
    except ImportError:  # before the one-world redesign
        from tnattn.ensemble.model import StackedParams

    torch.set_num_threads(1)
    contexts_stacked, tn_attention_stacked = _stacked_ops()
    g = torch.Generator().manual_seed(0)
    E, N, M, d, D = args.E, 2, 4, 2, 2
    x = torch.randint(0, d, (N, M), generator=g, dtype=torch.uint8)
    A, C, u = torch.randn(d, D, D, generator=g), torch.randn(d, D, D, 1, generator=g), torch.randn(D, generator=g)
    AE, CE, uE = torch.randn(E, d, D, D, generator=g), torch.randn(E, d, D, D, 1, generator=g), torch.randn(E, D, generator=g)
    y = torch.randint(0, 2, (N, M), generator=g, dtype=torch.uint8)
    P = StackedParams(A_left=AE, A_right=AE, C=CE, u=uE, v=uE, scale=torch.ones(E))
    Ag, Cg, ug = (t.clone().requires_grad_() for t in (A, C, u))

    def fwd_bwd():
        tnattn.ops.tn_attention(x, Ag, Ag, Cg, ug, ug).sum().backward()

    rows = [
        ("contexts, single", lambda: tnattn.ops.contexts(A, x, u)),
        ("tn_attention, single", lambda: tnattn.ops.tn_attention(x, A, A, C, u, u)),
        ("tn_attention fwd+bwd (autograd), single", fwd_bwd),
        (f"contexts, stacked E={E}", lambda: contexts_stacked(AE, x, uE)),
        (f"tn_attention, stacked E={E}", lambda: tn_attention_stacked(x, AE, AE, CE, uE, uE)),
        (f"squared-error step head, E={E}", lambda: mse_step(x, y, P)),
        (f"wrong-site count head, E={E}", lambda: count_wrong(x, y, P)),
    ]
    print(f"# tnattn {tnattn.__version__}, torch {torch.__version__}, N={N} M={M} d={d} D={D} float32, 1 thread")
    print(f"# minimum over {args.repeats} batches of {args.calls} calls, thread CPU time")
    print(f"{'op':<42} {'us/call':>9}")
    for name, fn in rows:
        print(f"{name:<42} {_per_call_us(fn, args.calls, args.repeats):9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fused Scenario A training step against the unfused path it replaces, per token.

Times one call of :func:`tnattn.ensemble.fused.mse_step` (local maps, symbol head, squared-error
loss on the sigmoid and all gradients in one C++ call) and of the unfused path with the same result
(ensemble forward op, :func:`~tnattn.models.head.symbol_head_forward`/``backward``,
:func:`~tnattn.models.head.member_losses_and_grads`, the op's backward through autograd), at the
paper's setting (D = 10, d = 2, batch 128 per member, float32). Also the fused step with no
parameter gradient requested, which leaves the recomputed scans, the maps, the head and the left
adjoint pass. Then the per-epoch test evaluation: wrong sites on a shared test set counted inside
the forward kernel (:func:`~tnattn.ensemble.fused.count_wrong`) against the op plus torch passes.
Minimum over repeats (the machine is shared), in ns per token and as a ratio.

Usage::

    python benchmarks/bench_fused.py --threads 1
    python benchmarks/bench_fused.py --E 512 --N 128 --M 8 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--E", type=int, default=512, help="members (default 512)")
    p.add_argument("--N", type=int, default=128, help="sequences per member (default 128)")
    p.add_argument("--M", type=int, default=8, help="sequence length (default 8)")
    p.add_argument("--D", type=int, default=10, help="bond dimension (default 10)")
    p.add_argument("--threads", type=int, default=1, help="kernel and torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats (default 7)")
    p.add_argument("--test-size", type=int, default=100, help="evaluation: test sequences (default 100)")
    p.add_argument("--test-length", type=int, default=100, help="evaluation: their length (default 100)")
    args = p.parse_args(argv)
    from tnattn.bench.machine import machine_header
    from tnattn.ensemble.fused import count_wrong, mse_step
    from tnattn.models.functional import Params
    from tnattn.models.functional import positive as ensemble_positive
    from tnattn.models.head import symbol_head_backward, symbol_head_forward
    from tnattn.ops import kernel_threads, tn_attention
    from tnattn.models.head import member_losses_and_grads

    torch.set_num_threads(args.threads)
    for k, v in machine_header("cpu").items():
        print(f"# {k}: {v}")
    E, N, M, D = args.E, args.N, args.M, args.D
    print(f"# E={E} N={N} M={M} D={D} d=2 c=1 float32, threads {args.threads}, min of {args.repeats}")
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    P = Params(rnd(E, 2, D, D), rnd(E, 2, D, D), rnd(E, 2, D, D, 1), rnd(E, D), rnd(E, D), rnd(E))
    x = torch.randint(0, 2, (E, N, M), generator=g)
    y = torch.randint(0, 2, (E, N, M), generator=g).bool()
    leaves = [t.clone().requires_grad_() for t in (P.A_left, P.A_right, P.C, P.u, P.v)]

    def unfused():
        W = tn_attention(x, *leaves)
        z, saved = symbol_head_forward(W.detach(), x, P.scale)
        _, gz = member_losses_and_grads(z, y, "mse", "sigmoid")
        gW, _ = symbol_head_backward(saved, gz, True)
        torch.autograd.grad(W, leaves, gW)

    tokens = E * N * M
    with kernel_threads(args.threads):
        rows = [
            ("unfused (op + head + loss + op backward)", _time(unfused, args.repeats)),
            ("fused mse_step, all gradients", _time(lambda: mse_step(x, y, P), args.repeats)),
            ("fused mse_step, no gradients", _time(lambda: mse_step(x, y, P, needs=(False,) * 6), args.repeats)),
        ]
    base = rows[0][1]
    for name, t in rows:
        print(f"{name:>42}: {t * 1e3:8.2f} ms  {t / tokens * 1e9:7.1f} ns/token  x unfused {base / t:5.2f}")

    # Evaluation: wrong sites of every member on a shared test set (the trainer's per-epoch test).
    Nt, Mt = args.test_size, args.test_length
    xt = torch.randint(0, 2, (Nt, Mt), generator=g)
    yt = torch.randint(0, 2, (Nt, Mt), generator=g)
    print(f"# evaluation: wrong sites of {E} members on one shared test set of {Nt} x {Mt}")
    with kernel_threads(args.threads), torch.no_grad():
        ev = [
            ("positive + compare (op, gather, torch)", _time(lambda: (ensemble_positive(P, xt, normalize_map=True) != (yt == 1)).flatten(1).sum(1), args.repeats)),
            ("count_wrong (one kernel call)", _time(lambda: count_wrong(xt, yt, P), args.repeats)),
        ]  # fmt: skip
    for name, t in ev:
        print(f"{name:>42}: {t * 1e3:8.2f} ms  {t / (E * Nt * Mt) * 1e9:7.1f} ns/token  x first {ev[0][1] / t:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

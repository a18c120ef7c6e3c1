"""What bounds the forward of one long sequence on the CPU (docs/benchmarks.md, "One long sequence").

Prints, at D = 8, d = 2, float32 (medians of repeated calls, wall time):

* ``one scan``: ns per site of ``ops.contexts`` on one sequence, one thread: the latency of one
  recurrence step (mat-vec, norm, square root, division), which no thread count shortens;
* ``two scans at once``: the same on two Python threads, each scanning its own sequence on one
  kernel thread: what the long path's concurrent left and right scans can reach;
* ``tn_attention``: ns per site of the whole forward (both scans and the local maps), 1 and 2 threads;
* ``chunked phase 1``: the cost of the first phase of an exact chunked scan, the D row chains of
  every chunk's transfer product, measured as ``ops.contexts`` on N = D * M / chunk sequences of
  ``chunk`` sites (the batched lane kernels), per direction, against the whole current forward.

Usage::

    python benchmarks/probe_long_sequence.py --M 1000000 --chunk 256
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--M", type=int, default=1_000_000, help="sites of the long sequence (default 10^6)")
    ap.add_argument("--D", type=int, default=8, help="bond dimension (default 8)")
    ap.add_argument("--chunk", type=int, default=256, help="chunk length of the chunked-scan estimate (default 256)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per row (default 5)")
    args = ap.parse_args(argv)
    if args.M < 2 or args.D < 1 or args.chunk < 1 or args.repeats < 1:
        ap.error("need --M >= 2, --D >= 1, --chunk >= 1, --repeats >= 1")

    from tnattn import build_info, ops

    M, D, d = args.M, args.D, 2
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, d, (1, M), dtype=torch.uint8, generator=g)
    x2 = torch.randint(0, d, (1, M), dtype=torch.uint8, generator=g)
    A, AR = torch.randn(d, D, D, generator=g), torch.randn(d, D, D, generator=g)
    C, u, v = torch.randn(d, D, D, 1, generator=g), torch.randn(D, generator=g), torch.randn(D, generator=g)
    threads = torch.get_num_threads()
    print(f"# cpu_isa: {build_info()['cpu_isa']}; D={D} d={d} M={M} float32; median of {args.repeats} calls")
    try:
        torch.set_num_threads(1)
        one = _median_seconds(lambda: ops.contexts(A, x, u), args.repeats)
        print(f"one scan, 1 thread:            {one / M * 1e9:7.1f} ns/site")
        res = [0.0, 0.0]

        def run(k: int, xs: torch.Tensor) -> None:
            res[k] = _median_seconds(lambda: ops.contexts(A, xs, u), args.repeats)

        th = [threading.Thread(target=run, args=(k, xs)) for k, xs in enumerate((x, x2))]
        for t in th:
            t.start()
        for t in th:
            t.join()
        print(f"two scans at once, 1 thread each: {res[0] / M * 1e9:6.1f} and {res[1] / M * 1e9:.1f} ns/site")
        for nt in (1, 2):
            torch.set_num_threads(nt)
            t = _median_seconds(lambda: ops.tn_attention(x, A, AR, C, u, v), args.repeats)
            print(f"tn_attention forward, {nt} thread(s): {t / M * 1e9:6.1f} ns/site ({t * 1e3:.1f} ms)")
        whole = t
        n_chunks = D * -(-M // args.chunk)
        xc = torch.randint(0, d, (n_chunks, args.chunk), dtype=torch.uint8, generator=g)
        p1 = _median_seconds(lambda: ops.contexts(A, xc, u), max(1, args.repeats // 2))
        print(f"chunked phase 1 (D chains per chunk of {args.chunk}, {n_chunks} x {args.chunk}, 2 threads): "
              f"{p1 * 1e3:.1f} ms per direction vs the whole current forward {whole * 1e3:.1f} ms")
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

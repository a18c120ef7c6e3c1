"""Training-set evaluation on all d**M strings: the fused kernel against the prefix/suffix trie.

Scenario A's training set is every string of length M (``tnattn.data.all_sequences``), and the
ensemble trainer measures every member's training error on it every epoch. Two ways to get the
predictions of E members on all of it:

* ``kernel`` -- :func:`tnattn.models.functional.predict` on ``all_sequences(M, d)``: one fused
  context scan per string and member (what the chunked evaluator of tnattn.ensemble.evaluators runs);
* ``trie``   -- :func:`tnattn.ensemble.allstrings.all_strings_predict`: contexts shared by all strings
  with the same prefix / suffix, local maps as batched matrix products.

Two tasks per implementation: ``predict`` returns the (E, d**M, M) int64 predictions; ``wrong``
returns the per-member fraction of wrong sites against labels (the kernel side compares its
predictions with the labels, the trie side is :func:`all_strings_wrong_fraction`, which never
materialises the predictions). Random N(0, 1) parameters (shared A), c = 1, normalize_map on;
every timing is the median of ``--repeats`` runs after one warm-up run, and the two
implementations' outputs are checked for agreement (mismatching sites are printed; in float32 a few
sites within rounding of the decision boundary may differ).

Usage::

    python benchmarks/bench_allstrings.py                    # E = 1024, D = 10, M = 10, 2 threads
    python benchmarks/bench_allstrings.py --quick            # smoke test
    python benchmarks/bench_allstrings.py --chunk 64,256,1024

Importable: ``main(argv)`` runs the benchmark and returns 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (OSError, AttributeError):
        return "unknown"


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, thread pool)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (E = 16, D = 4, M = 6), for smoke tests")
    p.add_argument("--E", type=int, default=1024, help="members (default 1024)")
    p.add_argument("--D", type=int, default=10, help="bond dimension (default 10)")
    p.add_argument("--M", type=int, default=10, help="string length (default 10)")
    p.add_argument("--d", type=int, default=2, help="alphabet size (default 2)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the trie's), default 2")
    p.add_argument("--kernel-threads", type=int, default=None,
                   help="threads of the fused kernel (default --threads; Trainer.fit runs the kernels on "
                        "config.threads and torch's own ops on 1 thread)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row; the median is reported (default 3)")
    p.add_argument("--chunk", default=None, help="comma-separated member chunk sizes for the trie (default: automatic)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    from tnattn.data import all_sequences
    from tnattn.ensemble.allstrings import all_strings_predict, all_strings_wrong_fraction
    from tnattn.models.functional import Params
    from tnattn.models.functional import predict as ensemble_predict
    from tnattn.ops import kernel_threads

    args = build_parser().parse_args(argv)
    if args.quick:
        args.E, args.D, args.M, args.repeats = 16, 4, 6, 1
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    E, D, M, d = args.E, args.D, args.M, args.d
    g = torch.Generator().manual_seed(args.seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).to(dev)

    A = r(E, d, D, D)
    P = Params(A, A, r(E, d, D, D, 1), r(E, D), r(E, D), r(E))
    x = all_sequences(M, d).to(dev)
    y = torch.randint(0, 2, tuple(x.shape), generator=g).to(dev)
    chunks = [None] if args.chunk is None else [int(c) for c in args.chunk.split(",")]

    def timed(fn):
        def run():
            out = fn()
            sync()
            return out

        return median_time(run, args.repeats)

    kthreads = args.kernel_threads if args.kernel_threads is not None else args.threads

    def kernel_predict():
        with kernel_threads(kthreads):
            return ensemble_predict(P, x, normalize_map=True)

    def kernel_wrong():
        # the trainer's arithmetic: float64 counts / (N * M) on the CPU (a float mean, or CUDA's
        # division by a scalar, which multiplies by its reciprocal, may round differently)
        return ((kernel_predict() != y).flatten(1).sum(1).double().cpu() / y.numel()).numpy()

    print(
        f"# torch {torch.__version__}, threads {torch.get_num_threads()} (kernel {kthreads}), device {dev}, dtype {args.dtype}, "
        f"E={E} D={D} M={M} d={d} ({d**M} strings), median of {args.repeats}, load average {load_average()}"
    )
    pred_k = kernel_predict()
    t_pred_k = timed(kernel_predict)
    t_wrong_k = timed(kernel_wrong)
    wrong_k = kernel_wrong()
    head = f"{'impl':<8} {'chunk':>6} {'predict s':>10} {'wrong s':>9} {'x predict':>10} {'x wrong':>8} {'mismatch sites':>15}"
    print(head)
    print("-" * len(head))
    print(f"{'kernel':<8} {'-':>6} {t_pred_k:10.4f} {t_wrong_k:9.4f} {1.0:10.2f} {1.0:8.2f} {'-':>15}")
    for ch in chunks:
        pred_t = all_strings_predict(P, M, normalize_map=True, chunk=ch)
        mismatch = int((pred_t != pred_k).sum())
        wrong_t = all_strings_wrong_fraction(P, M, y, normalize_map=True, chunk=ch)
        if mismatch == 0 and not (wrong_t == wrong_k).all():
            raise RuntimeError("trie wrong fractions disagree with the kernel's although the predictions agree")
        del pred_t
        t_pred = timed(lambda: all_strings_predict(P, M, normalize_map=True, chunk=ch))
        t_wrong = timed(lambda: all_strings_wrong_fraction(P, M, y, normalize_map=True, chunk=ch))
        label = "auto" if ch is None else str(ch)
        print(
            f"{'trie':<8} {label:>6} {t_pred:10.4f} {t_wrong:9.4f} {t_pred_k / t_pred:10.2f} {t_wrong_k / t_wrong:8.2f} "
            f"{mismatch:>8}/{pred_k.numel()}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where the time of ensemble training goes, at bench_training.py's setting.

Runs the ``ensemble`` row of ``bench_training.py`` (E members on their own batches, one process) under
:mod:`cProfile` and splits the time of the training epochs into

* ``kernel``  -- the fused Scenario A step (``tnattn._C.tn_attention_mse_step``);
* ``draws``   -- the members' batch draws (``MemberBatches._draws``: a permutation per epoch and two
  ``torch.randint`` calls per batch from each member's own generator, so that member ``e`` sees
  exactly the batches of its single run);
* ``batching`` -- the rest of the data side (gathers of crops and labels, grouping by crop length);
* ``other``   -- optimiser updates, the trainer's bookkeeping and Python overhead.

cProfile adds its own overhead to every Python call, so the shares of the Python-side parts are upper
bounds; the printed rate is lower than bench_training.py's for the same reason.

Usage::

    python benchmarks/profile_training.py --members 1024 --epochs 15 --threads 2
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _cumulative(stats: pstats.Stats, suffix: tuple[str, int, str] | str) -> float:
    """Cumulative seconds of the functions matching ``suffix``: a (file suffix, ignored, name) key, or
    a string contained in the function's name."""
    total = 0.0
    for (filename, line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if isinstance(suffix, str):
            if suffix in name:  # built-ins are keyed "<built-in method tnattn._C.NAME>"
                total += ct
        elif filename.endswith(suffix[0]) and name == suffix[2]:
            total += ct
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=1024, help="ensemble size E (default 1024)")
    ap.add_argument("--epochs", type=int, default=15, help="training epochs (default 15)")
    ap.add_argument("--threads", type=int, default=2, help="kernel threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="bench_training.py's quick setting (D = 6), for smoke tests")
    args = ap.parse_args(argv)
    if args.members < 1 or args.epochs < 1 or args.threads < 1:
        ap.error("--members, --epochs and --threads must be >= 1")

    import bench_training as bt
    from tnattn.bench.machine import machine_header

    header = machine_header("cpu")
    header["threads"] = args.threads
    for k, v in header.items():
        print(f"# {k}: {v}")
    cfg = bt.base_config(args.quick)
    prof = cProfile.Profile()
    prof.enable()
    res = bt.bench_ensemble(cfg, args.members, args.epochs, args.threads, shared=False)
    prof.disable()
    st = pstats.Stats(prof)
    epochs = _cumulative(st, ("members.py", 0, "train_epoch"))
    kernel = _cumulative(st, "tn_attention_mse_step")
    data = _cumulative(st, ("data.py", 0, "epoch"))
    draws = _cumulative(st, ("data.py", 0, "_draws"))
    parts = {"kernel": kernel, "draws": draws, "batching": data - draws, "other": epochs - kernel - data}
    rate = res["member_token_steps"] / res["train_s"] / 1e6
    print(f"E={args.members} epochs={args.epochs} threads={args.threads}: {rate:.1f} M member-token-steps/s "
          f"under the profiler; training epochs {epochs:.2f} s")
    for name, sec in parts.items():
        print(f"  {name:9s} {sec:8.4f} s  {100 * sec / epochs:5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``tnattn bench``: configuration, the run of every section, printed tables, JSON and plots."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from tnattn._cliconfig import ArgumentParser, add_config_arguments, config_from_namespace, flag_message
from tnattn._fields import require
from tnattn.bench.machine import format_header, gemm_gflops, machine_header
from tnattn.bench.ops import IMPLS, OpCase, available_impls, bench_case, matvecs_per_token

__all__ = ["SECTIONS", "BenchConfig", "run", "main", "build_parser", "add_arguments", "run_from_args", "format_rows"]

SECTIONS = ("kernels", "ops", "peers", "scaling", "training")

#: Default op grid: a base point, then one of D, (N, M), d, dtype varied at a time. Sized so that
#: the whole default run takes minutes on 2 busy cores (the baselines take seconds per call).
DEFAULT_OPS = (
    OpCase(64, 256, 8), OpCase(64, 256, 4), OpCase(64, 256, 16), OpCase(64, 256, 32),
    OpCase(16, 1024, 8), OpCase(256, 64, 8), OpCase(64, 256, 8, d=4), OpCase(64, 256, 8, dtype="float64"),
)  # fmt: skip
QUICK_OPS = (OpCase(4, 8, 4),)
DEFAULT_PEERS = tuple(OpCase(16, M, 8) for M in (8, 16, 32))
QUICK_PEERS = (OpCase(2, 4, 2),)


def _ints(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers; ``1e6`` style is accepted."""
    try:
        vals = tuple(int(float(t)) for t in text.split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _flag(default, help: str, *, ints: bool = False):
    """A field that is also a ``tnattn bench`` flag (see :func:`tnattn._cliconfig.add_config_arguments`)."""
    meta = {"help": help, **({"parse": _ints} if ints else {})}
    return field(default=default, metadata=meta)


@dataclass
class BenchConfig:
    """What ``tnattn bench`` runs. Fields with ``metadata["help"]`` are its flags (generated as for
    ``tnattn train`` and the experiments); the others are set from Python (or by ``--quick``)."""

    sections: tuple[str, ...] = SECTIONS
    device: str = _flag("cpu", "cpu or cuda")
    threads: Optional[int] = _flag(None, "torch/kernel threads; none = torch's current")
    ops: tuple[OpCase, ...] = DEFAULT_OPS
    ops_impls: tuple[str, ...] = ("tnattn", "loop", "vectorized")
    peers: tuple[OpCase, ...] = DEFAULT_PEERS
    peers_impls: tuple[str, ...] = IMPLS
    scaling_M: tuple[int, ...] = _flag((10, 100, 1_000, 10_000, 100_000, 1_000_000),
                                       "lengths for the M scaling (e.g. 10,100,1e6)", ints=True)
    scaling_M_N: int = 1
    max_baseline_M: int = 1_000
    scaling_D: tuple[int, ...] = _flag((2, 4, 8, 16, 32, 64), "bond dimensions for the D scaling", ints=True)
    threads_list: Optional[tuple[int, ...]] = None  # default 1, 2, 4, ... os.cpu_count()
    training_setting: str = "author-example"
    training_E: tuple[int, ...] = _flag((8, 32), "ensemble sizes for the training throughput", ints=True)
    training_epochs: int = 3
    training_overrides: dict = field(default_factory=dict)
    repeats: int = _flag(20, "most timed repeats of tnattn (baselines: 3)")
    budget_s: float = 2.0
    gemm_n: int = 2048
    kernels_D: tuple[int, ...] = _flag((2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64),
                                       "bond dimensions of the kernels D sweep", ints=True)
    long_M: tuple[int, ...] = _flag((1_000, 10_000, 100_000, 1_000_000, 10_000_000),
                                    "lengths of the one-long-sequence rows", ints=True)
    long_D: int = 8
    memory_D: int = 64
    memory_M: int = 1_000_000

    def __post_init__(self):
        """Checks every setting up front (:class:`~tnattn.errors.ConfigError`), so that a bad one
        fails before minutes of benchmarks, not after."""
        for s in self.sections:
            require(s in SECTIONS, "sections", f"must be among {SECTIONS}, got {s!r}")
        require(self.device in ("cpu", "cuda") or self.device.startswith("cuda:"), "device",
                f"must be cpu or cuda, got {self.device!r}")
        if self.device.startswith("cuda"):
            require(torch.cuda.is_available(), "device", f"{self.device!r} requested, but torch sees no CUDA device here")
        require(self.threads is None or (isinstance(self.threads, int) and self.threads >= 1), "threads",
                f"must be >= 1, got {self.threads!r}")
        for name in ("scaling_M", "scaling_D", "training_E"):
            require(all(isinstance(v, int) and v >= 1 for v in getattr(self, name)), name,
                    f"must hold integers >= 1, got {getattr(self, name)!r}")
        for name in ("scaling_M_N", "max_baseline_M", "training_epochs", "repeats", "gemm_n"):
            v = getattr(self, name)
            require(isinstance(v, int) and v >= 1, name, f"must be an integer >= 1, got {v!r}")
        require(math.isfinite(self.budget_s) and self.budget_s > 0, "budget_s", f"must be > 0, got {self.budget_s!r}")

    @classmethod
    def quick(cls, **kw) -> "BenchConfig":
        """A tiny grid (seconds): for smoke tests, not for numbers."""
        base = dict(
            ops=QUICK_OPS, peers=QUICK_PEERS, scaling_M=(10, 100), max_baseline_M=100, scaling_D=(2, 4),
            threads_list=(1,), training_setting="default", training_E=(2,), training_epochs=1,
            training_overrides=dict(train_length=4, crop_min=0, D=3), repeats=3, budget_s=0.05, gemm_n=256,
            kernels_D=(2, 5), long_M=(100, 1000), long_D=4, memory_D=4, memory_M=1000,
        )  # fmt: skip
        return cls(**{**base, **kw})


# ------------------------------------------------------------------------------------------------
# printing


def _ratio(v) -> str:
    return "-" if v is None else f"{v:.0f}x" if v >= 10 else f"{v:.2f}x"


def _num(v, fmt=".3g") -> str:
    return "-" if v is None else format(v, fmt)


def _table_head(lead: Sequence[str] = ()) -> str:
    head = "".join(f"{k:>8} " for k in lead) + (
        f"{'N':>5} {'M':>8} {'D':>3} {'d':>2} {'c':>2} {'dtype':>7} {'impl':>12} | {'fwd Mtok/s':>10} {'x loop':>7} | "
        f"{'f+b Mtok/s':>10} {'x loop':>7} | {'f+b GFLOP/s':>11} {'% peak':>7}"
    )
    return head + "\n" + "-" * len(head)


def _table_row(r: dict, lead: Sequence[str] = ()) -> str:
    pre = "".join(f"{r.get(k, '-')!s:>8} " for k in lead)
    base = f"{r['N']:>5} {r['M']:>8} {r['D']:>3} {r['d']:>2} {r['c']:>2} {r['dtype']:>7} {r['impl']:>12} | "
    if "error" in r:
        return pre + base + r["error"][:80]
    pct = r.get("fwd_bwd_pct_peak")
    return (
        pre + base + f"{_num(r.get('fwd_Mtok_s')):>10} {_ratio(r.get('fwd_x_loop')):>7} | "
        f"{_num(r.get('fwd_bwd_Mtok_s')):>10} {_ratio(r.get('fwd_bwd_x_loop')):>7} | "
        f"{_num(r.get('fwd_bwd_GFLOP_s')):>11} {('-' if pct is None else f'{pct:.2f}%'):>7}"
    )


def format_rows(rows: list[dict], *, lead: Sequence[str] = ()) -> str:
    """A text table of op rows (tokens/s in millions, ratio to the loop, GFLOP/s, % of peak)."""
    return "\n".join([_table_head(lead)] + [_table_row(r, lead) for r in rows])


def _say(text: str = "") -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------------
# running


def run(config: BenchConfig, *, verbose: bool = True) -> dict:
    """Run the sections of ``config`` in one process and return all results (JSON-ready).

    Returns
    -------
    dict
        ``header`` (machine), ``gemm_GFLOP_s`` by dtype, ``flop_model``, and per section:
        ``ops`` and ``peers`` (lists of op rows), ``scaling`` (``M``, ``D``, ``threads`` rows),
        ``roofline`` (best tnattn % of peak), ``training`` (rows).
    """
    say = _say if verbose else (lambda *_: None)
    config.__post_init__()  # (again: the fields may have been changed after construction)
    if config.threads is not None:
        torch.set_num_threads(config.threads)

    dev = config.device
    header = machine_header(dev)
    dtypes = sorted({c.dtype for c in (*config.ops, *config.peers)} | {"float32"})
    from tnattn.bench.ops import DTYPES

    peak = {dt: gemm_gflops(dev, DTYPES[dt], n=config.gemm_n) for dt in dtypes}
    say(format_header(header))
    say("# gemm GFLOP/s (torch.mm, " + f"{config.gemm_n}^3): " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items()))
    say("# timings: median of repeats after warm-up; tokens = N*M; x loop = loop time / this time;")
    say("# GFLOP/s count 2*D^2 per mat-vec: fwd 2+d*c, fwd+bwd 6+4*d*c per token; % peak vs gemm of the same dtype")
    fwd, fb = matvecs_per_token(2, 1)
    results: dict = {
        "header": header,
        "gemm_GFLOP_s": peak,
        "flop_model": {"flops_per_matvec": "2*D^2", "fwd_matvecs_per_token": "2+d*c", "fwd_bwd_matvecs_per_token": "6+4*d*c"},
    }
    have = set(available_impls())
    kw = dict(device=dev, repeats=config.repeats, budget_s=config.budget_s, peak=peak)
    t_start = time.perf_counter()

    def grid(cases, impls, name):
        missing = [i for i in impls if i not in have]
        if missing:
            say(f"# {name}: skipped (not installed): {', '.join(missing)}; pip install 'tnattn[bench]'")
        rows = []
        say(_table_head())
        for case in cases:  # printed as they finish: the slow baselines take a while
            new = bench_case(case, [i for i in impls if i in have], **kw)
            for r in new:
                say(_table_row(r))
            rows += new
        return rows

    if "kernels" in config.sections and dev == "cpu":
        from tnattn.bench import kernels

        say(f"\n## D sweep: tn_attention float32, effective flops {kernels.EFF_FLOPS_FWD} D^2 (fwd) and "
            f"{kernels.EFF_FLOPS_FWD_BWD} D^2 (fwd+bwd) per token, vs sgemm {peak['float32']:.1f} GFLOP/s")  # fmt: skip
        rows_K = kernels.d_sweep(config.kernels_D, sgemm_GFLOP_s=peak["float32"], repeats=config.repeats,
                                 budget_s=config.budget_s, say=say)  # fmt: skip
        say(f"\n## one long sequence (N=1, D={config.long_D}) vs the batched forward; peak memory in a child process")
        long = kernels.long_sequence(config.long_M, D=config.long_D, memory_D=config.memory_D,
                                     memory_M=config.memory_M, repeats=min(config.repeats, 5),
                                     budget_s=config.budget_s, say=say)  # fmt: skip
        results["kernels"] = {"D": rows_K, "long": long}
    if "ops" in config.sections:
        say("\n## op throughput: tnattn vs reference loop vs vectorised baseline")
        results["ops"] = grid(config.ops, config.ops_impls, "ops")
    if "peers" in config.sections:
        say("\n## all M outputs against generic TN toolkits (O(M^2) for einsum/tensorkrowch; small M only)")
        say("# einsum: opt_einsum full contraction per output site (unnormalised, same model)")
        say("# tensorkrowch: UMPSLayer per output site (periodic ring, shared tensor: a related model)")
        results["peers"] = grid(config.peers, config.peers_impls, "peers")
    if "scaling" in config.sections:
        from tnattn.bench import scaling

        say(f"\n## scaling with M (N={config.scaling_M_N}, D=8; baselines up to M={config.max_baseline_M})")
        rows_M = scaling.scaling_M(config.scaling_M, N=config.scaling_M_N, max_baseline_M=config.max_baseline_M, **kw)
        say(format_rows(rows_M))
        say("\n## scaling with D (roofline: effective GFLOP/s vs gemm)")
        rows_D = scaling.scaling_D(config.scaling_D, **kw)
        say(format_rows(rows_D))
        rows_T = []
        if dev == "cpu":
            say("\n## scaling with threads (N=256, M=1024, D=8)")
            threads = config.threads_list or tuple(scaling.thread_counts())
            rows_T = scaling.scaling_threads(threads, repeats=config.repeats, budget_s=config.budget_s)
            say(format_rows(rows_T, lead=("threads",)))
            say("speed-up over 1 thread (fwd / fwd+bwd): " + ", ".join(
                f"{r['threads']}: {_num(r.get('fwd_speedup'), '.2f')}/{_num(r.get('fwd_bwd_speedup'), '.2f')}" for r in rows_T))  # fmt: skip
        results["scaling"] = {"M": rows_M, "D": rows_D, "threads": rows_T}
    tn = [r for sec in ("ops",) for r in results.get(sec, []) if r["impl"] == "tnattn" and "error" not in r]
    tn += [r for r in (results.get("scaling") or {}).get("D", []) if r["impl"] == "tnattn" and "error" not in r]
    if tn:
        best = {k: max(tn, key=lambda r: r.get(f"{k}_pct_peak", -1.0)) for k in ("fwd", "fwd_bwd")}
        results["roofline"] = {
            k: {"pct_peak": r.get(f"{k}_pct_peak"), "GFLOP_s": r.get(f"{k}_GFLOP_s"),
                "case": {f: r[f] for f in ("N", "M", "D", "d", "c", "dtype")}}
            for k, r in best.items()
        }  # fmt: skip
        say("\n## roofline: best tnattn effective GFLOP/s as % of the gemm rate of the same dtype")
        for k, v in results["roofline"].items():
            c = v["case"]
            say(f"{k:>8}: {_num(v['GFLOP_s'])} GFLOP/s = {_num(v['pct_peak'], '.2f')}% of peak at "
                f"N={c['N']} M={c['M']} D={c['D']} d={c['d']} {c['dtype']}")  # fmt: skip
    if "training" in config.sections:
        from tnattn.bench.training import training_throughput

        say(f"\n## training throughput ({config.training_setting} setting; member-token-steps/s, median per epoch)")
        try:
            rows = training_throughput(config.training_setting, config.training_E, epochs=config.training_epochs,
                                       overrides=dict(config.training_overrides, device=dev))  # fmt: skip
        except (RuntimeError, ValueError) as exc:
            rows = []
            say(f"training: failed: {type(exc).__name__}: {exc}")
        for r in rows:
            say(f"{r['kind']:>9} E={r['E']:<4} D={r['D']:<3} {r['member_token_steps_per_s']:>12.4g} member-token-steps/s "
                f"({r['x_single']:.2f}x single)")  # fmt: skip
        results["training"] = rows
    results["seconds"] = time.perf_counter() - t_start
    say(f"\n# benchmark time: {results['seconds']:.0f} s")
    return results


# ------------------------------------------------------------------------------------------------
# command line


DESCRIPTION = ("Contraction-speed benchmarks: tnattn against the reference loop, a vectorised baseline, "
               "opt_einsum and TensorKrowch; scaling in M, D and threads; roofline; training throughput.")
EPILOG = ("examples:\n  tnattn bench                       # everything, about 5 minutes on 2 cores\n"
          "  tnattn bench ops peers --threads 1 --json results/bench.json --plots results/\n"
          "  tnattn bench --quick               # seconds, smoke test")
# BenchConfig fields without a flag (grids of op cases and the like; --quick sets small ones).
_NOT_FLAGS = tuple(f.name for f in dataclasses.fields(BenchConfig) if "help" not in f.metadata)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tnattn bench``: sections, ``--quick``, output paths, and one flag per
    :class:`BenchConfig` field that has a help text."""
    parser.add_argument("section_names", nargs="*", metavar="SECTION",
                        help=f"subset of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny grid (seconds): a smoke test, not numbers")
    parser.add_argument("--json", dest="json_path", default=None,
                        help="write all results to this JSON file (atomically)")
    parser.add_argument("--plots", dest="plots_dir", default=None, help="write PNG figures into this folder")
    add_config_arguments(parser, BenchConfig, exclude=_NOT_FLAGS)


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``python -m tnattn.bench`` (``tnattn bench`` adds the same to its subcommand)."""
    p = ArgumentParser(prog="tnattn bench", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m tnattn.bench`` with ``argv``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    return run_from_args(parser.parse_args(argv), parser, argv)


def run_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    """Run the benchmarks that parsed arguments ``args`` (of :func:`add_arguments`) ask for.

    Bad settings end in ``parser.error`` (one line, exit status 2) before any benchmark runs.
    """
    for s in args.section_names:
        if s not in SECTIONS:
            parser.error(f"unknown section {s!r}; choose from {', '.join(SECTIONS)}")
    try:
        base = BenchConfig.quick() if args.quick else BenchConfig()
        config = config_from_namespace(BenchConfig, args, base)
        config = dataclasses.replace(config, sections=tuple(args.section_names) or SECTIONS)
    except ValueError as exc:
        parser.error(flag_message(exc, BenchConfig))
    # Output paths are checked before the benchmarks run, not when their results are written.
    for flag, path, want_dir in (("--json", args.json_path, False), ("--plots", args.plots_dir, True)):
        if path is None:
            continue
        if want_dir and os.path.exists(path) and not os.path.isdir(path):
            parser.error(f"argument {flag}: {path} is a file, not a folder")
        if not want_dir and os.path.isdir(path):
            parser.error(f"argument {flag}: {path} is a folder, not a file")
        parent = os.path.dirname(os.path.abspath(path)) if not want_dir else os.path.abspath(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            parser.error(f"argument {flag}: cannot write under {parent}")
    results = run(config)
    if args.json_path:
        from tnattn.io import result_envelope, write_json

        env = result_envelope("bench", dataclasses.asdict(config), results)
        env["command"] = "tnattn bench " + " ".join(argv)
        write_json(args.json_path, env)
        print(f"# wrote {args.json_path}")
    if args.plots_dir:
        from tnattn.plots.bench import plot_bench

        for path in plot_bench(results, args.plots_dir):
            print(f"# wrote {path}")
    return 0

"""The ``tnattn`` console script.

Subcommands
-----------
``tnattn train [--preset NAME | --config FILE] [--print-config] [--FIELD VALUE ...]``
    Train one TN-attention student (:func:`tnattn.train.train`); one flag per
    :class:`~tnattn.train.TrainConfig` field. ``--resume --out DIR`` continues the run in ``DIR``
    with its saved config (flags given alongside override it).
``tnattn experiment NAME [--config FILE] [--print-config] [--FIELD VALUE ...]``
    Run an experiment of :mod:`tnattn.experiments`; one flag per field of its ``Config``.

``--config FILE`` starts from a JSON or TOML config file (a run's ``config.json`` or an
experiment's ``results.json`` included, see :mod:`tnattn._configfile`); flags given alongside
override it. ``--print-config`` prints the full config as JSON and exits.
``tnattn bench [SECTION ...] [--FIELD VALUE ...]``
    Benchmarks (:mod:`tnattn.bench`); one flag per :class:`~tnattn.bench.BenchConfig` field that
    has a help text, as for the other commands.

The CLI only parses flags into configs; all the work happens in the library.

Errors: a flag that does not parse, a setting the config's validation refuses
(:class:`tnattn.errors.ConfigError`) and a run directory that refuses the request (it holds a run
already, holds none to resume, is in use by another process, has no intact checkpoint:
:class:`tnattn.errors.UserError` and its subclasses) and settings that need more memory than the
machine has end in one line on stderr and exit status 2, never in a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from tnattn._cliconfig import ArgumentParser, add_config_arguments, config_from_namespace, flag_message
from tnattn.errors import UserError

__all__ = ["main", "build_parser"]

_EPILOG_TRAIN = """\
examples:
  tnattn train                                # default: grok rule 30 in a couple of minutes
  tnattn train --seed 3 --l1 1e-3 --out runs/l1
  tnattn train --preset author-example        # the author's published example run
  tnattn train --resume --out runs/l1         # continue a stopped or killed run
  tnattn train --overwrite --out runs/l1      # replace the run in runs/l1 (deletes it)
  tnattn train --print-config > c.json        # the full config as JSON (edit it, then:)
  tnattn train --config c.json --seed 4       # run a config file; flags override it
  tnattn train --config runs/l1/config.json --out runs/l1-again   # rerun a saved run

Booleans are --flag / --no-flag; lists are comma-separated (--test-lengths 1000,100).
The run directory holds config.json, history.csv, history.jsonl, checkpoint.pt, summary.json and
training.png. Ctrl-C or SIGTERM stops after the current epoch and writes a checkpoint.
--out naming a directory that already holds a run is refused unless --resume (continue it) or
--overwrite (replace it) is given; --resume on a directory without a run is an error. A run
directory is locked while a process trains in it.
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with the ``train``, ``experiment`` and ``bench`` subcommands."""
    from tnattn import __version__
    from tnattn.train.config import PRESETS, TrainConfig

    parser = ArgumentParser(
        prog="tnattn",
        description="Tensor-network attention students that learn local rules, and their grokking.",
    )
    parser.add_argument("--version", action="version", version=f"tnattn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,experiment,bench}")

    p_train = sub.add_parser(
        "train",
        help="train one student on a local rule",
        description="Train a TN-attention student on a local rule and write a run directory.",
        epilog=_EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="start from a named preset (flags given alongside override it); "
        "author-example: rule 30 applied twice, D=40, batch 128, crops 6-10 of all length-10 strings, "
        "Adam 0.005, no L1/L2 (as published), up to 7000 epochs",
    )
    _add_config_file_arguments(p_train)
    add_config_arguments(p_train, TrainConfig)
    p_train.set_defaults(_parser=p_train)

    p_exp = sub.add_parser(
        "experiment",
        help="run a named experiment (tnattn experiment NAME --help lists its flags)",
        description="Run a named experiment. Known experiments: "
        + ", ".join(sorted(_experiment_names()))
        + ". Use 'tnattn experiment NAME --help' for its flags.",
        add_help=True,
    )
    p_exp.add_argument("name", nargs="?", help="experiment name")
    p_exp.add_argument("args", nargs=argparse.REMAINDER, help="flags of the experiment's Config")
    p_exp.set_defaults(_parser=p_exp)

    from tnattn.bench.run import DESCRIPTION, EPILOG, add_arguments

    p_bench = sub.add_parser("bench", help="run the benchmarks (tnattn.bench)", description=DESCRIPTION,
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p_bench)
    p_bench.set_defaults(_parser=p_bench)
    return parser


def _add_config_file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="start from this JSON or TOML config file (a run's config.json or an experiment's results.json "
        "too); flags given alongside override it",
    )  # fmt: skip
    parser.add_argument("--print-config", action="store_true", help="print the full config as JSON and exit")


def _file_config(cls: type, path: str, parser: argparse.ArgumentParser):
    """``cls`` with the fields of config file ``path`` (a usage error when the file is bad)."""
    from tnattn._configfile import config_from_mapping, read_config_file

    try:
        return cls(**config_from_mapping(cls, read_config_file(path), source=f"config file {path}"))
    except (ValueError, TypeError) as exc:
        parser.error(str(exc) if str(path) in str(exc) else f"config file {path}: {exc}")


def _check_logger(config, parser: argparse.ArgumentParser) -> None:
    """A missing logger backend is a usage error before any work starts."""
    kind = getattr(config, "logger", "none")
    if kind != "none":
        from tnattn.loggers import check_backend

        try:
            check_backend(kind)
        except (ImportError, ValueError) as exc:
            parser.error(str(exc))


def _experiment_names() -> list[str]:
    from tnattn.experiments import EXPERIMENTS

    return list(EXPERIMENTS)


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------
def _train_config(ns: argparse.Namespace, parser: argparse.ArgumentParser):
    from tnattn.train.config import TrainConfig, preset
    from tnattn.train.run import load_run_config

    out = getattr(ns, "out", "")
    try:
        if getattr(ns, "resume", False) and out and (Path(out) / "config.json").is_file():
            if ns.preset is not None:
                parser.error("--preset cannot be combined with --resume (the run's saved config is used)")
            if ns.config is not None:
                parser.error("--config cannot be combined with --resume (the run's saved config is used)")
            base = load_run_config(out)
        elif ns.config is not None:
            if ns.preset is not None:
                parser.error("--preset and --config cannot be combined: put the preset's fields in the file")
            base = _file_config(TrainConfig, ns.config, parser)
        elif ns.preset is not None:
            base = preset(ns.preset)
        else:
            base = TrainConfig()
        return config_from_namespace(TrainConfig, ns, base)
    except ValueError as exc:
        parser.error(flag_message(exc, TrainConfig))


def _cmd_train(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from tnattn.train.run import train

    config = _train_config(ns, parser)
    if ns.print_config:
        from tnattn._configfile import config_to_json

        print(config_to_json(config))
        return 0
    _check_logger(config, parser)
    result = train(config)
    s = result.summary
    print()
    if s["t_eps"] is not None:
        print(f"grokked: zero training error at epoch {s['t_train']}, zero test error at epoch {s['t_eps']}"
              f" (t_G = {s['t_G']})")
    else:
        t_train = "never" if s["t_train"] is None else f"epoch {s['t_train']}"
        print(f"not grokked after {s['epochs']} epochs (zero training error: {t_train})")
    errors = ", ".join(f"M={m}: {e:.3g}" for m, e in s["final_test_errors"].items())
    per_epoch = 1000 * s["wall_time_s"] / max(s["epochs"], 1)
    if s.get("stop_message"):
        print(f"stopped: {s['stop_message']}")
    print(f"final test errors: {errors}; stop: {s['stop_reason']}; "
          f"wall time {s['wall_time_s']:.1f} s ({per_epoch:.0f} ms/epoch over {s['epochs']} epochs)")
    run_dir = result.run_dir
    print(f"run directory: {run_dir}")
    if (run_dir / "training.png").exists():
        print(f"  plot:    {run_dir / 'training.png'}")
    print(f"  summary: {run_dir / 'summary.json'}")
    print(f"  history: {run_dir / 'history.csv'}")
    if s["stop_reason"] == "interrupted":
        print(f"interrupted: continue with  tnattn train --resume --out {run_dir}")
        return 128 + int(s.get("signal") or signal.SIGINT)
    return 0


# ----------------------------------------------------------------------------------------------
# experiment
# ----------------------------------------------------------------------------------------------
def _cmd_experiment(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from tnattn.experiments import EXPERIMENTS, load

    if ns.name is None:
        print("known experiments: " + ", ".join(sorted(EXPERIMENTS)))
        print("usage: tnattn experiment NAME [--flags]   (tnattn experiment NAME --help)")
        return 0
    try:
        module = load(ns.name)
    except ValueError as exc:
        parser.error(str(exc))
    except ImportError as exc:
        print(f"tnattn experiment: experiment {ns.name!r} is registered but not available: {exc}", file=sys.stderr)
        return 2
    config_cls = getattr(module, "Config", None)
    run = getattr(module, "run", None)
    if config_cls is None or run is None:
        print(f"tnattn experiment: module {module.__name__} lacks Config or run()", file=sys.stderr)
        return 2
    doc = (module.__doc__ or "").strip().splitlines()
    p = ArgumentParser(
        prog=f"tnattn experiment {ns.name}",
        description=doc[0] if doc else None,
    )
    _add_config_file_arguments(p)
    add_config_arguments(p, config_cls)
    sub_ns = p.parse_args(ns.args)
    base = _file_config(config_cls, sub_ns.config, p) if sub_ns.config is not None else None
    try:
        config = config_from_namespace(config_cls, sub_ns, base)
    except (ValueError, TypeError) as exc:
        p.error(flag_message(exc, config_cls))
    if sub_ns.print_config:
        from tnattn._configfile import config_to_json

        print(config_to_json(config))
        return 0
    _check_logger(config, p)
    try:
        run(config)
    except UserError as exc:
        print(f"{p.prog}: error: {flag_message(exc, config_cls)}", file=sys.stderr)
        return 2
    out = getattr(config, "out", None)
    if out:
        print(f"results in: {out}")
    return 0


# ----------------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------------
def _cmd_bench(ns: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    from tnattn.bench.run import run_from_args

    return run_from_args(ns, parser, argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``tnattn`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help()
        return 2
    try:
        if ns.command == "train":
            return _cmd_train(ns, ns._parser)
        if ns.command == "experiment":
            return _cmd_experiment(ns, ns._parser)
        return _cmd_bench(ns, ns._parser, argv[argv.index("bench") + 1:])
    except UserError as exc:
        # A refused request, not a bug: one line, no traceback (the library raised it on purpose).
        from tnattn.train.config import TrainConfig

        print(f"{ns._parser.prog}: error: {flag_message(exc, TrainConfig)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        # Settings that parse and validate but need more memory than the machine has (e.g. --D
        # 100000): a user error too. torch reports a failed CPU allocation as a plain RuntimeError.
        if not _out_of_memory(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"{ns._parser.prog}: error: out of memory ({first}); the settings need more memory than "
            "this machine has (model size --D, --batch-size, --test-size, --test-lengths, --members)",
            file=sys.stderr,
        )
        return 2


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

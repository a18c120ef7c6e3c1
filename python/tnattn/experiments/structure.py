"""Experiment ``structure``: structure formation, loss spikes, regularisation schedules, spike guard.

Two modes (documentation: Science, "Loss spikes"):

``--mode figure`` (default)
    Two D = 3 runs from the same seed, L1 (``--l1``) and no regularisation, trained for a fixed
    number of epochs (no stop at grokking, so post-grokking spikes show). Context snapshots of a
    fixed probe set every ``--snapshot-every`` epochs. Writes ``structure_figure.png`` (loss, test
    error and D_eff of both runs, left-context clouds at chosen epochs: the seed's figure), PNG
    frames under ``frames/<run>/``, ``structure_<run>.gif`` (and ``.mp4`` when ``ffmpeg``
    exists), and ``results.json`` (grokking times, spike events, periodicity, D_eff steps and
    their alignment with the spikes).
``--mode compare``
    ``--seeds`` members per setting (``--settings``: none, l1, l1=VALUE, l1-step, l1-exp, each
    optionally +guard; see :mod:`tnattn.structure.compare`). Writes ``results.json`` (the table:
    grokked fraction, t_eps quantiles, spike rates, final test errors, guard reverts, pooled
    periodicity test, spike/D_eff-step alignment), ``members.json`` (per-member traces) and
    ``structure_compare.png``; prints the table. Its columns: members grokked; t_eps median and
    quartiles (grokked members); spike events per 1000 epochs; events after t_eps (all members);
    members ending at zero test error; members that grokked but ended with a non-zero error; guard
    reverts; fraction of spikes within ``--tolerance`` epochs of a D_eff step against the chance
    level; pooled interval CV (null mean CV) and its p-value (trains with >= 4 events); median
    D_eff jump at spikes / median D_eff drift between spikes. ``reanalyse(out)`` redoes the
    analysis from ``members.json`` without retraining.

Both modes test on ``--test-size`` random sequences of length ``--test-length`` every
``--eval-every`` epochs (smaller than the trainer's default test sets, so that D_eff and the test
error can be followed every epoch at low cost; an exact zero on that set is "grokked").

Rerunning into the same ``--out`` continues: every member resumes the run in its directory (a
finished member is not trained again; a larger ``--epochs`` continues the members to the new
limit), and a member whose training settings changed is refused with a one-line error: choose
another ``--out`` for other settings.

Examples::

    tnattn experiment structure --mode figure --out results/structure-figure
    tnattn experiment structure --mode compare --seeds 16 --workers 2 \\
        --settings none,l1=3e-4,l1,l1=3e-3,l1-step,l1-exp,l1+guard --out results/structure-compare
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tnattn._fields import FlatAccess, check_fields, check_ranges, flat_init
from tnattn.errors import ConfigError
from tnattn.experiments._common import option as _f
from tnattn.experiments._rerun import check_rerun, save_study
from tnattn.io import result_envelope, write_json
from tnattn.locks import lock_directory
from tnattn.train.config import TrainConfig

NAME = "structure"

_DEFAULT_EPOCHS = {"figure": 1500, "compare": 1000}


#: Training settings of every run (no stop at grokking, so post-grokking spikes show; one thread
#: per worker process). Each run replaces the epoch limit, the test length and its L1; the fields
#: in :data:`TRAIN_FLAGS` are flags of the experiment.
TRAIN = TrainConfig(rule=30, D=3, lr=0.005, stop_after_grok=-1, eval_every=1, test_lengths=(200,), test_size=250,
                    progress=False, plots=False, threads=1)

#: The TrainConfig fields that are flags of ``structure``, with their help texts here.
TRAIN_FLAGS = {
    "D": "bond dimension",
    "rule": "elementary rule of the teacher",
    "lr": "Adam learning rate",
    "test_size": "number of test sequences",
    "eval_every": "measure test error and D_eff every this many epochs",
}


@flat_init
@dataclass
class Config(FlatAccess):
    """Settings of the experiment. ``train`` holds the training settings of every run (default
    :data:`TRAIN`); its fields in :data:`TRAIN_FLAGS` read and change by their own names."""

    mode: Literal["figure", "compare"] = _f("figure", "figure: two D=3 runs (L1 vs none) with point clouds and "
                                                      "animation; compare: schedules and spike guard over seeds")
    out: str = _f("results/structure", "output folder")
    seed: int = _f(2, "figure: seed of both runs; compare: first member seed")
    train: TrainConfig = field(default_factory=lambda: TRAIN,
                               metadata={"flatten": True, "only": tuple(TRAIN_FLAGS), "help": TRAIN_FLAGS,
                                         "group": None})
    l1: float = _f(1e-3, "base L1 strength (figure: the regularised run; compare: setting 'l1')")
    epochs: int = _f(0, "epochs per run; 0 = mode default (figure 1500, compare 1000)")
    test_length: int = _f(200, "length of the test sequences")
    workers: int = _f(2, "runs in parallel (processes, one thread each)")
    progress: bool = _f(True, "show progress")
    merge: int = _f(5, "loss-spike onsets closer than this many epochs form one event")
    tolerance: int = _f(10, "a spike is aligned with a D_eff step within this many epochs")
    # figure mode
    snapshot_every: int = _f(10, "figure: snapshot cadence in epochs")
    dense_until: int = _f(150, "figure: also snapshot every 2 epochs up to this epoch (the early collapse)")
    after_spike: int = _f(6, "figure: snapshot every epoch for this many epochs from each loss-spike onset")
    probe_sequences: int = _f(64, "figure: probe sequences whose contexts are drawn")
    probe_length: int = _f(24, "figure: length of the probe sequences")
    times: tuple[int, ...] = _f((), "figure: epochs of the point clouds in the figure (empty = automatic)")
    frames: int = _f(60, "figure: animation frames per run")
    fps: float = _f(8.0, "figure: animation frames per second")
    projection: str = _f("3d", "figure: how a D=3 cloud is drawn", choices=("3d", "equal-area"))
    color_by: str = _f("class", "figure: point colours", choices=("class", "neighbour", "neighbourhood"))
    # compare mode
    seeds: int = _f(8, "compare: members (seeds) per setting")
    settings: tuple[str, ...] = _f(("none", "l1", "l1-step", "l1+guard"),
                                   "compare: settings (none, l1, l1=VALUE, l1-step, l1-exp; +guard adds the spike guard, "
                                   "+guardK with lookback K)")
    l1_early: float = _f(3e-3, "compare: early L1 strength of the l1-step / l1-exp schedules")
    schedule_epochs: int = _f(250, "compare: step epoch / time constant of the schedules")
    schedule_factor: float = _f(0.1, "compare: late/early ratio of the schedules")
    guard_lookback: int = _f(1, "compare: the guard reverts to the start of epoch (spike - lookback) (+guard)")

    def __post_init__(self):
        self.times, self.settings = tuple(self.times), tuple(self.settings)
        check_fields(self)
        check_ranges(self, nonnegative=("seed", "merge", "tolerance", "guard_lookback", "times"))
        if self.mode not in ("figure", "compare"):
            raise ConfigError(f"mode must be 'figure' or 'compare', got {self.mode!r}")
        if self.dense_until < 0 or self.after_spike < 0:
            raise ConfigError("dense_until and after_spike must be >= 0")
        for name in ("test_length", "workers", "snapshot_every", "probe_sequences",
                     "probe_length", "frames", "seeds", "schedule_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if self.l1 < 0 or self.l1_early < 0 or self.schedule_factor < 0:
            raise ConfigError("l1, l1_early and schedule_factor must be >= 0")
        if self.fps <= 0:
            raise ConfigError(f"fps must be > 0, got {self.fps}")
        from tnattn.structure.compare import parse_setting

        self.settings = tuple(self.settings)
        for s in self.settings:
            parse_setting(s)
        if len(set(self.settings)) != len(self.settings):
            raise ConfigError("settings must not repeat")
        _base_config(self)  # the training settings (rule, lr, ...): TrainConfig's checks

    @property
    def n_epochs(self) -> int:
        return self.epochs or _DEFAULT_EPOCHS[self.mode]


def _base_config(config: Config):
    """The TrainConfig of the runs (each run then sets its seed, L1 and run directory)."""
    import dataclasses

    return dataclasses.replace(config.train, max_epochs=config.n_epochs, test_lengths=(config.test_length,),
                               checkpoint_every=max(config.n_epochs, 1))


def _resumable(member):
    """A member continues the run already in its directory (finished runs are not trained again;
    runs stopped by the epoch limit continue to a larger ``--epochs``; other changed settings are
    refused by :func:`tnattn.train.train`)."""
    import dataclasses

    from tnattn.train.run import holds_run

    return dataclasses.replace(member, resume=holds_run(member.out))


def _analysis(config: Config) -> dict:
    return {"merge": config.merge, "tolerance": config.tolerance}


def _strip(m: dict) -> dict:
    """A member summary without its per-epoch traces (for the results table)."""
    return {k: v for k, v in m.items() if k not in ("deff", "loss", "test_error")}


# ------------------------------------------------------------------------------------------------
# figure mode
# ------------------------------------------------------------------------------------------------
def _auto_times(m: dict, last: int) -> list[int]:
    """Epoch 0, an early epoch, t_eps (or a third of the run), then the onset of the first loss
    spike after t_eps (its snapshot is taken with after_spike > 0), and the end."""
    t_mid = int(m["t_eps"] or m["t_train"] or last // 3)
    later = [s for s in m["spikes"] if s > t_mid]
    early = max(2, min(60, t_mid // 3) // 2 * 2)
    if later:
        return [0, early, t_mid, int(later[0]), last]
    return [0, early, t_mid, (t_mid + last) // 2, last]


def _run_figure(config: Config, out: Path) -> dict:
    import dataclasses

    from tnattn.plots.structure import make_animation, plot_structure_figure, render_frames
    from tnattn.structure.compare import run_members
    from tnattn.structure.snapshots import load_snapshots
    from tnattn.train.history import read_history_jsonl

    base = _base_config(config)
    snap_opts = {"every": config.snapshot_every, "n": config.probe_sequences, "length": config.probe_length,
                 "seed": 2024, "epochs": tuple(range(2, config.dense_until + 1, 2)), "after_spike": config.after_spike}
    runs = [("l1", "C1", config.l1), ("none", "0.45", 0.0)]
    jobs = [
        {"config": _resumable(dataclasses.replace(base, seed=config.seed, l1=lam, out=str(out / "runs" / label))),
         "analysis": _analysis(config), "snapshots": snap_opts}
        for label, _, lam in runs
    ]
    members = run_members(jobs, workers=min(config.workers, len(jobs)), progress=config.progress)
    figure_runs, times, animations = [], [], {}
    mp4 = shutil.which("ffmpeg") is not None
    for (label, colour, lam), m in zip(runs, members):
        run_dir = Path(m["out"])
        snap = load_snapshots(run_dir / "snapshots.npz")
        history = read_history_jsonl(run_dir / "history.jsonl")
        figure_runs.append({"label": f"{label} (lambda1={lam:g})" if lam else label, "colour": colour,
                            "history": history, "snapshots": snap})
        times.append(list(config.times) if config.times else _auto_times(m, int(snap.epochs[-1])))
        frames = render_frames(snap, history, out / "frames" / label, n_frames=config.frames,
                               include=[e + j for e in m["loss_spikes"] for j in range(config.after_spike)],
                               projection=config.projection, color_by=config.color_by,
                               title=f"rule {config.rule}, D={config.D}, {label}" + (f" {lam:g}" if lam else ""))
        animations[label] = [str(make_animation(frames, out / f"structure_{label}.gif", fps=config.fps))]
        if mp4:
            animations[label].append(str(make_animation(frames, out / f"structure_{label}.mp4", fps=config.fps)))
    plot_structure_figure(figure_runs, times, out / "structure_figure.png", projection=config.projection,
                          color_by=config.color_by,
                          title=f"rule {config.rule}, D = {config.D}, seed {config.seed}: L1 {config.l1:g} vs none")
    return {
        "runs": {label: _strip(m) for (label, _, _), m in zip(runs, members)},
        "times": {label: t for (label, _, _), t in zip(runs, times)},
        "animations": animations,
        "figure": str(out / "structure_figure.png"),
    }


# ------------------------------------------------------------------------------------------------
# compare mode
# ------------------------------------------------------------------------------------------------
def format_table(table: dict) -> str:
    """The comparison table as text."""
    head = (f"{'setting':14s}{'grok':>7s}{'t_eps med [IQR]':>20s}{'spk/1k ep':>10s}{'post-grok':>10s}"
            f"{'final err=0':>12s}{'lost':>6s}{'reverts':>8s}{'aligned/chance':>16s}{'CV (null) p':>20s}"
            f"{'dDeff spike/between':>21s}")
    lines = [head]

    def fmt(q, nd=0):
        return "-" if q is None else f"{q:.{nd}f}"

    for name, r in table.items():
        t = r["t_eps"]
        per = r["periodicity"]
        cv = "-" if per["n_trains"] == 0 else f"{per['mean_cv']:.2f} ({per['null_mean_cv']:.2f}) {per['p_value']:.3f}"
        al = "-" if math.isnan(r["spike_step_fraction"]) else f"{r['spike_step_fraction']:.2f}/{r['spike_step_chance']:.2f}"
        lines.append(
            f"{name:14s}{r['grokked']:>3d}/{r['members']:<3d}"
            f"{fmt(t['median']) + ' [' + fmt(t['q25']) + ',' + fmt(t['q75']) + ']':>20s}"
            f"{fmt(r['spikes_per_1000_epochs']['mean'], 2):>10s}{r['post_grok_spikes_total']:>10d}"
            f"{r['final_test_error_zero']:>8d}/{r['members']:<3d}{r['lost_after_grok']:>6d}{r['reverts_total']:>8d}"
            f"{al:>16s}{cv:>20s}{_jumps(r):>21s}"
        )
    return "\n".join(lines)


def _jumps(r: dict) -> str:
    """Median D_eff jump at spikes / median drift between spikes (signed), or '-'."""
    up = r.get("deff_jump_at_spikes", {}).get("median")
    drift = r.get("deff_drift_between_spikes", {}).get("median")
    return f"{'-' if up is None else f'{up:+.2f}'}/{'-' if drift is None else f'{drift:+.2f}'}"


def _sweep(names, members, base_l1: float) -> dict:
    from tnattn.structure.compare import parse_setting

    lam, mean, se = [], [], []
    for name in names:
        s = parse_setting(name)
        if s.schedule != "constant" or s.guard:
            continue
        rates = np.array([1000.0 * m["n_spikes"] / m["epochs"] for m in members[name]])
        lam.append(base_l1 if s.l1 < 0 else s.l1)
        mean.append(float(rates.mean()))
        se.append(float(rates.std(ddof=1) / math.sqrt(rates.size)) if rates.size > 1 else 0.0)
    return {"lambda1": lam, "rate_mean": mean, "rate_se": se}


def _run_compare(config: Config, out: Path) -> dict:
    from tnattn.structure.compare import member_config, parse_setting, run_members

    base = _base_config(config)
    seeds = list(range(config.seed, config.seed + config.seeds))
    jobs, keys = [], []
    for name in config.settings:
        s = parse_setting(name)
        for seed in seeds:
            cfg = member_config(base, s, seed, l1=config.l1, l1_early=config.l1_early,
                                schedule_epochs=config.schedule_epochs, factor=config.schedule_factor,
                                out=str(out / "members" / name.replace("+", "_") / f"seed{seed}"))
            cfg = _resumable(cfg)
            lookback = config.guard_lookback if s.guard_lookback is None else s.guard_lookback
            jobs.append({"config": cfg, "guard": s.guard, "guard_lookback": lookback,
                         "analysis": _analysis(config)})
            keys.append(name)
    results = run_members(jobs, workers=config.workers, progress=config.progress)
    members: dict[str, list] = {name: [] for name in config.settings}
    for name, m in zip(keys, results):
        members[name].append(m)
    write_json(out / "members.json", result_envelope(NAME + "-members", config, members))
    return _analyse_compare(config, members, out)


def _analyse_compare(config: Config, members: dict, out: Path) -> dict:
    """Table, printed text and figure from the member summaries (setting -> list of dicts)."""
    from tnattn.plots.structure import plot_compare
    from tnattn.structure.compare import summarise_members

    table = {name: summarise_members(ms, merge=config.merge, seed=config.seed) for name, ms in members.items()}
    # Pool every spike's D_eff jump (median after minus median before) per setting.
    for name, ms in members.items():
        jumps = np.concatenate([np.asarray(m["deff_jump_at_spikes"], dtype=float) for m in ms] or [np.zeros(0)])
        jumps = jumps[np.isfinite(jumps)]
        table[name]["deff_jump_at_spikes"] = {
            "n": int(jumps.size),
            "median": float(np.median(jumps)) if jumps.size else None,
            "fraction_up": float(np.mean(jumps > 0)) if jumps.size else None,
        }
    sweep = _sweep(config.settings, members, config.l1)
    text = format_table(table)
    plot_compare(table, members, out / "structure_compare.png", sweep=sweep,
                 title=f"rule {config.rule}, D = {config.D}, {config.seeds} seeds x {config.n_epochs} epochs")
    return {
        "table": table,
        "table_text": text,
        "lambda1_sweep": sweep,
        "members": {name: [_strip(m) for m in ms] for name, ms in members.items()},
        "figure": str(out / "structure_compare.png"),
    }


def reanalyse(out: str | Path) -> dict:
    """Redo the compare-mode analysis (table, figure, ``results.json``) from ``out/members.json``
    without retraining (e.g. after changing an analysis setting in the saved config)."""
    out = Path(out)
    with lock_directory(out, "experiment directory"):
        return _reanalyse(out)


def _reanalyse(out: Path) -> dict:
    from tnattn.io import read_json

    data = read_json(out / "members.json")
    config = Config(**{**data["config"], "out": str(out)})
    if config.mode != "compare":
        raise ValueError(f"{out} holds a {config.mode!r} run, not a compare run")
    results = _analyse_compare(config, data["results"], out)
    results["epochs"] = config.n_epochs
    results["reanalysed_from"] = str(out / "members.json")
    write_json(out / "results.json", result_envelope(NAME, config, results))
    return results


def run(config: Config) -> dict:
    """Run the experiment in ``config.mode``; write its files into ``config.out``; return the results."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a structure.Config, got {type(config).__name__}")
    with lock_directory(config.out, "experiment directory"):
        check_rerun(config.out, NAME, config, free=RERUN_FREE, grow=("epochs",))
        save_study(config.out, NAME, config)
        return _run(config)


#: Settings a rerun into the same ``out`` may change (output, parallelism, analysis and drawing);
#: ``epochs`` may grow. See :mod:`tnattn.experiments._rerun`.
RERUN_FREE = ("out", "progress", "workers", "merge", "tolerance", "times", "frames", "fps", "projection",
              "color_by")


def _run(config: Config) -> dict:
    t0 = time.time()
    out = Path(config.out)
    results = _run_figure(config, out) if config.mode == "figure" else _run_compare(config, out)
    if "table_text" in results:
        print(results["table_text"])
    results["seconds"] = time.time() - t0
    results["epochs"] = config.n_epochs
    write_json(out / "results.json", result_envelope(NAME, config, results))
    return results

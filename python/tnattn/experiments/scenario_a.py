"""Experiment ``scenario-a``: all tensors trained end to end, statistics over many initialisations.

The paper's protocol (documentation: Science, "The two training scenarios" and "Measurements"): rule
30, Adam lr 0.005, MSE on a sigmoid, batch 128 of all length-10 strings cropped to random lengths
6-10, bond dimension D in {10, 20, 40}, regularisation none / L2 1e-4 (Adam weight decay) / L1 1e-3,
about 1000 random initialisations per setting, up to 7000 epochs. For every D one ensemble holds
``members`` runs per regulariser (the same run seeds under each regulariser: the same initial models
and batches, so the regularisers are compared on paired runs) and is trained by
:class:`tnattn.train.Trainer`, sharded over the ranks of ``torchrun`` when launched with
it (:mod:`tnattn.ensemble.distributed`).

Measured per (D, regulariser):

* nu: the test error of every grokked run, aligned at its own t_eps and averaged, fitted as
  ``<E> ~ (t_eps - t)^nu`` (the error of the longest test length), with its total uncertainty:
  bootstrap over runs, the spread over a family of fit windows and the bias of a t_eps known only
  to the epoch (:func:`tnattn.ensemble.nu_budget.nu_error_budget`; ``nu_windows_D<D>.png`` shows
  nu against the window);
* the grokking-time PDF and the grokked fraction, with t_eps the paper's first epoch with zero
  test error; the median t_G and the count of negative t_G also under the "stays zero" convention
  (:func:`tnattn.metrics.zero_times`), and how many runs left zero again;
* the ensemble-averaged D_eff of the left contexts around t_eps.

Choices of ours (the paper's are not published): a member stops ``stop_after_grok`` epochs after
its t_eps (its statistics are complete by then); every epoch is a test epoch (``eval_every = 1``:
t_eps and the errors just before it must be resolved to the epoch, or the nu fit has no window),
so the test set defaults to 100 random sequences of length 100 (instead of the author's
1000 x 1000 + 1000 x 100) and D_eff to 64 probe sequences, which keeps evaluation cheaper than
training. The nu fit window is tau = t_eps - t in [1, 10] epochs: in our runs the aligned error
passes 0.1 within about 3-10 epochs of t_eps (sooner with regularisation), so the automatic window
of :func:`tnattn.metrics.fit_critical_exponent` (from ten record steps up to error 0.1) is empty;
with one record per epoch the first point, tau = 1, carries up to one epoch of uncertainty in
t_eps. Runs whose aligned history is shorter than the window are left out (see
:func:`tnattn.ensemble.stats.aligned_test_error`). All of these are flags.

Writes ``results.json`` (nu table, PDFs, D_eff curves, aligned errors, timing) and
``scenario_a.png`` into ``out``; each D's ensemble lives in ``out/D<D>`` (shards, checkpoints,
merged histories), so a rerun resumes an interrupted study. Reruns into the same ``out`` continue
the study: a larger ``--max-epochs`` continues the members the old limit stopped (their histories
grow to the new limit), analysis flags may change, and any other changed training flag is refused
with a one-line error (see :func:`run`). ``study.json`` holds the settings a rerun is checked against.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tnattn._fields import FlatAccess, check_fields, flat_init, check_ranges, require
from tnattn.errors import ConfigError
from tnattn.ensemble.distributed import init_distributed, lock_for_ranks, run_ensemble
from tnattn.ensemble.nu_budget import T_EPS_ESTIMATES, format_budget, nu_error_budget
from tnattn.experiments._common import option as _f
from tnattn.experiments._rerun import check_rerun, save_study
from tnattn.ensemble.stats import aligned_mean, aligned_test_error, grokking_time_histogram, protocol_cost
from tnattn.metrics import zero_times
from tnattn.io import result_envelope, write_json
from tnattn.train.build import resolve_device
from tnattn.train.config import TrainConfig

NAME = "scenario-a"

#: The paper's Scenario A results: nu for D = 10 / 20 / 40, for the printed comparison.
PAPER_NU = {
    "none": {10: 1.99, 20: 2.81, 40: 2.80},
    "l2": {10: 1.09, 20: 0.82, 40: 0.87},
    "l1": {10: 0.64, 20: 0.72, 40: 0.67},
}
REGULARISERS = ("none", "l2", "l1")


#: The training settings shared by every run of the study (the paper's protocol, see the module
#: docstring). Each ensemble replaces the bond dimension D and, per member, the L1/L2 strength of its
#: regulariser; the fields in :data:`TRAIN_FLAGS` are flags of the experiment.
TRAIN = TrainConfig(
    rule=30, rule_steps=1, boundary="open", train_length=10, train_size=0, crop_min=6, crop_max=10, batch_size=128,
    test_lengths=(100,), test_size=100, optimizer="adam", lr=0.005, loss="mse", activation="sigmoid",
    normalize_map=True, boundary_vectors="e1", l1=0.0, l2=0.0, l2_mode="coupled", max_epochs=7000,
    stop_after_grok=50, eval_every=1, eval_when_fit=True, deff_probe=64, dtype="float32", checkpoint_every=100,
    progress=True, plots=False, logger="none",
)  # fmt: skip

#: The TrainConfig fields that are flags of ``scenario-a``, with their help texts here.
TRAIN_FLAGS = {
    "max_epochs": "maximum epochs per run (paper: 7000)",
    "stop_after_grok": "stop a run this many epochs after its t_eps; -1 = never",
    "rule": "elementary CA teacher",
    "rule_steps": "apply the rule this many times",
    "lr": "Adam learning rate",
    "batch_size": "sequences per mini-batch",
    "train_length": "length of the training strings (all d**length of them)",
    "crop_min": "shortest random crop",
    "crop_max": "longest random crop",
    "test_lengths": "lengths of the random test sequences (author: 1000,100)",
    "test_size": "test sequences per length (author: 1000)",
    "eval_every": "test every this many epochs (and every epoch with zero training error)",
    "deff_probe": "test sequences whose middle left contexts give D_eff",
    "dtype": "floating-point precision",
    "checkpoint_every": "checkpoint each shard every this many epochs (and when runs finish)",
    "progress": "show a progress bar per shard",
    "logger": "experiment logger per rank, in out/D<D>/shards/<rank>/logs: tensorboard, or wandb (offline unless "
              "WANDB_MODE=online); see tnattn.loggers",
}


@flat_init
@dataclass
class Config(FlatAccess):
    """Settings of the study. ``train`` holds the training settings of every run (default
    :data:`TRAIN`); its fields in :data:`TRAIN_FLAGS` read and change by their own names
    (``Config(lr=0.01)``, ``config.lr``, ``--lr``)."""

    out: str = _f("results/scenario-a", "output folder (JSON + PNG; one sub-folder per D with the ensembles)")
    D_values: tuple[int, ...] = _f((10,), "bond dimensions (paper: 10,20,40)")
    regularisers: tuple[str, ...] = _f(REGULARISERS, "regularisers to run: none, l2, l1")
    l1: float = _f(1e-3, "L1 strength of the l1 regulariser")
    l2: float = _f(1e-4, "L2 strength (Adam weight decay) of the l2 regulariser")
    members: int = _f(1000, "runs per (D, regulariser) (paper: about 1000)")
    seed: int = _f(0, "first run seed; member k uses seed + k under every regulariser")
    train: TrainConfig = field(default_factory=lambda: TRAIN,
                               metadata={"flatten": True, "only": tuple(TRAIN_FLAGS), "help": TRAIN_FLAGS,
                                         "group": None})
    deff_before: int = _f(300, "D_eff curve: epochs before t_eps")
    deff_after: int = _f(50, "D_eff curve: epochs after t_eps")
    nu_window: tuple[float, ...] = _f(
        (1.0, 10.0), "nu fit window (tau_lo,tau_hi) in epochs before t_eps; empty = automatic (tnattn.metrics)"
    )
    max_error: float = _f(0.1, "automatic nu window only: upper end of the fitted error range")
    span_quantile: float = _f(0.5, "automatic nu window only: keep runs whose aligned history is at least this quantile")
    t_eps_estimate: str = _f(
        "recorded", "zero crossing for the central nu: recorded epoch (paper), midpoint or interpolated",
        choices=T_EPS_ESTIMATES,
    )
    n_boot: int = _f(1000, "bootstrap resamples for the statistical error of nu")
    shared_data: bool = _f(False, "all members of a D see the same batches (faster; not independent runs)")
    device: str = _f("cpu", "device (cuda needs the CUDA kernels)", choices=("cpu", "cuda"))
    resume: bool = _f(True, "reuse finished shards and continue checkpoints found in out")

    def __post_init__(self):
        self.D_values = tuple(int(v) for v in self.D_values)
        self.regularisers = tuple(str(r) for r in self.regularisers)
        self.nu_window = tuple(float(v) for v in self.nu_window)
        check_fields(self)
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        _validate(self)


def train_config(config: Config, D: int) -> TrainConfig:
    """The shared :class:`TrainConfig` of the ensemble at bond dimension ``D``."""
    return dataclasses.replace(config.train, D=D, device=config.device)


def _strengths(config: Config, reg: str) -> tuple[float, float]:
    return {"none": (0.0, 0.0), "l2": (0.0, config.l2), "l1": (config.l1, 0.0)}[reg]


def _validate(config: Config) -> None:
    """Every check of :class:`Config` (:class:`~tnattn.errors.ConfigError`); the training settings are
    checked by building each D's :class:`TrainConfig`, so a study never fails after it started."""
    for reg in config.regularisers:
        require(reg in REGULARISERS, "regularisers", f"must be among {REGULARISERS}, got {reg!r}")
    require(len(set(config.regularisers)) == len(config.regularisers) and bool(config.regularisers),
            "regularisers", "must be distinct and at least one")
    require(config.members >= 1, "members", f"must be >= 1, got {config.members}")
    require(bool(config.D_values) and min(config.D_values) >= 1, "D_values", f"must be positive, got {config.D_values}")
    require(len(set(config.D_values)) == len(config.D_values), "D_values", f"must not repeat, got {config.D_values}")
    check_ranges(config, nonnegative=("deff_before", "deff_after", "l1", "l2", "seed"), positive=("max_error",))
    require(0.0 <= config.span_quantile <= 1.0, "span_quantile", f"must be in [0, 1], got {config.span_quantile}")
    require(config.t_eps_estimate in T_EPS_ESTIMATES, "t_eps_estimate",
            f"must be one of {T_EPS_ESTIMATES}, got {config.t_eps_estimate!r}")
    require(config.n_boot >= 0, "n_boot", f"must be >= 0, got {config.n_boot}")
    if config.nu_window:
        require(len(config.nu_window) == 2 and 0 < config.nu_window[0] < config.nu_window[1], "nu_window",
                f"must be empty or (tau_lo, tau_hi) with 0 < tau_lo < tau_hi, got {config.nu_window}")
    for D in config.D_values:
        train_config(config, D)  # raises ConfigError naming the field (same names as here)


def _t_G_edges(t_G: np.ndarray, n_log: int = 20) -> np.ndarray:
    """Bins for integer grokking times spanning decades: one bin for t_G < 0, one for t_G = 0,
    then ``n_log`` logarithmic bins up to the largest t_G."""
    ok = t_G[np.isfinite(t_G)]
    lo = float(ok.min()) if ok.size else 0.0
    hi = float(ok.max()) if ok.size else 1.0
    edges = ([lo - 0.5] if lo < 0 else []) + [-0.5] + list(np.geomspace(0.5, max(hi, 1.0) + 0.5, n_log + 1))
    return np.asarray(edges)


def _stays_zero_t_eps(merged, config: Config) -> np.ndarray:
    """t_eps under the "stays_zero" convention, from the recorded test errors of every length
    (a test epoch counts as zero only when every length is error-free). Runs stop
    ``stop_after_grok`` epochs after their first zero, so "stays" means "up to the last record"."""
    cols = [merged.history.column(f"test_error_{m}") for m in config.test_lengths]
    worst = np.max(np.stack(cols), axis=0)  # nan where not measured
    epochs = np.arange(1, worst.shape[1] + 1, dtype=float)
    return zero_times(worst, epochs, definition="stays_zero")


def analyse(merged, config: Config, D: int) -> dict:
    """nu fits with their error budget, grokking-time PDFs (both t_eps conventions) and D_eff curves
    per regulariser of one D's merged ensemble."""
    n = config.members
    longest = max(config.test_lengths)
    test = merged.history.column(f"test_error_{longest}")
    deff = merged.history.column("deff")
    t_eps, t_G, t_train = merged.t_eps, merged.t_G, merged.t_train
    t_eps_stays = _stays_zero_t_eps(merged, config)
    offsets = np.arange(-config.deff_before, config.deff_after + 1, dtype=float)
    block = {"D": D, "nu_fits": {}, "nu_budgets": {}, "grokking_pdfs": {}, "deff_curves": {}, "table": []}
    for r, reg in enumerate(config.regularisers):
        rows = slice(r * n, (r + 1) * n)
        fit = aligned_test_error(test[rows], t_eps[rows], window=config.nu_window or None,
                                 max_error=config.max_error, span_quantile=config.span_quantile,
                                 seed=config.seed)  # fmt: skip
        budget = nu_error_budget(test[rows], t_eps[rows], window=config.nu_window or (1.0, 10.0),
                                 t_eps_estimate=config.t_eps_estimate, n_boot=config.n_boot,
                                 seed=config.seed)  # fmt: skip
        hist = grokking_time_histogram(t_G[rows], bins=_t_G_edges(t_G[rows]))
        t_G_stays = t_eps_stays[rows] - t_train[rows]
        curve = aligned_mean(deff[rows], t_eps[rows], offsets)
        block["nu_fits"][reg] = fit
        block["nu_budgets"][reg] = budget
        block["grokking_pdfs"][reg] = hist
        block["deff_curves"][reg] = curve
        before = curve["mean"][0] if curve["mean"] else float("nan")
        at = curve["mean"][config.deff_before] if curve["mean"] else float("nan")
        epochs = np.array([m["epochs"] for m in merged.members[rows]], dtype=float)
        ok_s = np.isfinite(t_G_stays)
        block["table"].append({
            "D": D, "regulariser": reg, "nu": budget["nu"], "nu_stat": budget["stat"],
            "nu_window_syst": budget["window_syst"], "nu_resolution_syst": budget["resolution_syst"],
            "nu_total": budget["total"], "nu_by_estimate": budget.get("by_estimate"),
            "nu_err": fit["nu_err"], "nu_aligned": fit["nu"], "n_fit": budget["n_runs"],
            "jump_fraction": budget.get("jump_fraction"),
            "paper_nu": PAPER_NU[reg].get(D), "grokked": int(np.isfinite(t_eps[rows]).sum()), "members": n,
            "grokked_fraction": float(np.isfinite(t_eps[rows]).mean()), "median_t_G": hist["median"],
            "negative_t_G": hist["negative"],
            "median_t_G_stays_zero": float(np.median(t_G_stays[ok_s])) if ok_s.any() else None,
            "negative_t_G_stays_zero": int((t_G_stays[ok_s] < 0).sum()),
            "left_zero_again": int(np.sum(np.isfinite(t_eps[rows]) & (t_eps_stays[rows] != t_eps[rows]))),
            "median_t_train": float(np.nanmedian(t_train[rows])) if np.isfinite(t_train[rows]).any() else None,
            "deff_at_start_of_window": before, "deff_at_t_eps": at, "mean_epochs": float(epochs.mean()),
            "fit_note": budget.get("error"),
        })  # fmt: skip
    return block


def format_table(rows: list) -> str:
    """Text tables: nu with its error budget next to the paper's, and the grokking times under both
    t_eps conventions (first zero = the paper's; stays zero)."""
    lines = ["Scenario A (rule 30): nu of the aligned ensemble-averaged test error, total = stat (+) window (+) resolution",
             format_budget([dict(r, label=f"D={r['D']} {r['regulariser']}", stat=r["nu_stat"],
                                 window_syst=r["nu_window_syst"], resolution_syst=r["nu_resolution_syst"],
                                 total=r["nu_total"], n_runs=r["n_fit"], error=r["fit_note"])
                            for r in rows]),
             "",
             f"{'D':>4} {'reg':>5} {'paper nu':>8} {'grokked':>10} {'med t_G':>8} {'t_G<0':>6} "
             f"{'med t_G stays':>13} {'t_G<0 stays':>11} {'left 0 again':>12} {'D_eff -W':>9} {'D_eff@t_eps':>11}"]  # fmt: skip
    for r in rows:
        paper = f"{r['paper_nu']:.2f}" if r["paper_nu"] is not None else "-"
        stays = r["median_t_G_stays_zero"]
        lines.append(
            f"{r['D']:>4} {r['regulariser']:>5} {paper:>8} {r['grokked']:>4}/{r['members']:<5} "
            f"{r['median_t_G']:>8.0f} {r['negative_t_G']:>6} {stays if stays is not None else float('nan'):>13.0f} "
            f"{r['negative_t_G_stays_zero']:>11} {r['left_zero_again']:>12} "
            f"{r['deff_at_start_of_window']:>9.2f} {r['deff_at_t_eps']:>11.2f}"
        )
    return "\n".join(lines)


# The protocol the issue sizes (the paper's Scenario A): about 1000 runs per setting, up to 7000 epochs.
FULL_MEMBERS, FULL_EPOCHS = 1000, 7000


def _full_protocol_cost(merged, config: Config) -> dict:
    """Projected wall time of FULL_MEMBERS runs per regulariser for up to FULL_EPOCHS epochs, on
    this machine with this world size, from the run's own epoch times and stopping epochs
    (:func:`tnattn.ensemble.stats.protocol_cost`)."""
    n = config.members
    active = np.isfinite(merged.history.column("loss"))
    groups = [range(r * n, (r + 1) * n) for r in range(len(config.regularisers))]
    cost = protocol_cost(active, merged.history.wall[: merged.history.T], groups,
                         full_members=FULL_MEMBERS, full_epochs=FULL_EPOCHS)  # fmt: skip
    cost["regularisers"] = list(config.regularisers)
    return cost


def format_cost(timing: dict) -> str:
    """One line per D: the measured wall time and the projected full-protocol cost."""
    c = timing["full_protocol"]
    per = ", ".join(f"{r} {h:.2f} h" for r, h in zip(c["regularisers"], c["hours_per_group"]))
    tail = ", ".join(f"{r} {f:.0%}" for r, f in zip(c["regularisers"], c["still_training_fraction"]))
    return (
        f"D = {timing['D']}: {timing['wall_time_s']:.0f} s wall. Full protocol ({c['full_members']} runs x up to "
        f"{c['full_epochs']} epochs, epoch cost {c['a_s']:.3f} s + {c['b_s'] * 1e3:.3f} ms per training member, "
        f"fitted on this run): {per}; all together {c['hours_all']:.2f} h; without stopping "
        f"{c['hours_no_stopping']:.2f} h. Still training at epoch {c['run_epochs']} (assumed to run to "
        f"{c['full_epochs']}): {tail}."
    )


#: Settings a rerun into the same ``out`` may change (output and analysis only); ``max_epochs`` may
#: grow (members stopped by the old limit continue to the new one). See
#: :mod:`tnattn.experiments._rerun`.
RERUN_FREE = ("out", "resume", "progress", "checkpoint_every", "D_values", "deff_before", "deff_after",
              "nu_window", "max_error", "span_quantile", "t_eps_estimate", "n_boot")
RERUN_GROW = ("max_epochs",)


def run(config: Config) -> dict:
    """Run the study; rank 0 writes ``results.json`` and ``scenario_a.png`` and returns the results
    (other ranks of a torchrun launch return an empty dict).

    Rerunning into the same ``out`` (with ``resume``, the default) continues the study: finished
    ensembles are reused, interrupted ones continue from their checkpoints, a larger ``max_epochs``
    continues the members its old value stopped, and the analysis settings (:data:`RERUN_FREE`)
    may change. Any other changed setting is refused before training, naming the fields
    (:class:`~tnattn.errors.RunDirectoryError`). With ``resume=False`` the study starts over.

    Raises
    ------
    RunDirectoryError
        A rerun with changed training settings, or a smaller ``max_epochs``.
    RunLockedError
        Another process is running a study in ``out``.
    """
    _validate(config)  # (again: the fields may have been changed after construction)
    resolve_device(config.device)  # no GPU for device 'cuda': refuse before any file is written
    rank, world = init_distributed(config.device)
    with lock_for_ranks([config.out] if rank == 0 else [], "experiment directory"):
        if config.resume:
            check_rerun(config.out, NAME, config, free=RERUN_FREE, grow=RERUN_GROW)
        if rank == 0:
            save_study(config.out, NAME, config)
        return _run(config, rank, world)


def _run(config: Config, rank: int, world: int) -> dict:
    t0 = time.time()
    out = Path(config.out)
    regs = list(config.regularisers)
    seeds = [config.seed + k for k in range(config.members)] * len(regs)
    l1 = [_strengths(config, reg)[0] for reg in regs for _ in range(config.members)]
    l2 = [_strengths(config, reg)[1] for reg in regs for _ in range(config.members)]
    per_D, timing = [], []
    for D in config.D_values:
        tD = time.time()
        merged = run_ensemble(train_config(config, D), seeds, out / f"D{D}", l1=l1, l2=l2,
                              shared_data=config.shared_data, resume=config.resume)  # fmt: skip
        if merged is None:
            continue
        per_D.append(analyse(merged, config, D))
        s = merged.summary
        train_s = max(s["shard_train_time_s"])
        timing.append({
            "D": D, "wall_time_s": time.time() - tD, "member_epochs": s["member_epochs"],
            "member_token_steps": s["member_token_steps"], "shard_train_time_s": s["shard_train_time_s"],
            "shard_wall_time_s": s["shard_wall_time_s"],
            "member_token_steps_per_train_s": s["member_token_steps"] / train_s if train_s > 0 else None,
            "wall_s_per_member_epoch": max(s["shard_wall_time_s"]) / s["member_epochs"] if s["member_epochs"] else None,
            "full_protocol": _full_protocol_cost(merged, config),
        })  # fmt: skip
    if rank != 0:
        return {}
    table = [row for block in per_D for row in block["table"]]
    text = format_table(table)
    for t in timing:
        text += "\n" + format_cost(t)
    print(text)
    results = {"table": table, "table_text": text, "per_D": per_D, "timing": timing, "world_size": world,
               "paper_nu": PAPER_NU, "seconds": time.time() - t0}  # fmt: skip
    from tnattn.plots.ensemble import plot_nu_windows, plot_scenario_a

    plot_scenario_a(results, out / "scenario_a.png")
    for block in per_D:
        plot_nu_windows(block["nu_budgets"], out / f"nu_windows_D{block['D']}.png",
                        title=f"Scenario A, D = {block['D']}: nu against the fit window")  # fmt: skip
    write_json(out / "results.json", result_envelope(NAME, config, results))
    return results

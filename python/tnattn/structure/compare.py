"""Regularisation-schedule and spike-guard comparisons over an ensemble of seeds.

A *setting* is a short string:

``none``
    no regularisation;
``l1``
    constant L1 at the base strength (the experiment's ``l1``);
``l1=VALUE``
    constant L1 at ``VALUE`` (for spike frequency against lambda1);
``l1-step`` / ``l1-exp``
    strong early, weak late: L1 at the *early* strength, multiplied by ``factor`` after
    ``schedule_epochs`` epochs (step) or decaying towards ``factor`` with time constant
    ``schedule_epochs`` (exp) -- the trainer's :class:`~tnattn.train.PenaltySchedule`;

and any of these may end in ``+guard`` (the :class:`~tnattn.structure.SpikeGuard` callback with the
default lookback) or ``+guardK`` (lookback ``K`` epochs, e.g. ``l1+guard3``).

The members of an ensemble are independent single-model runs (:func:`run_members` loops over
:func:`run_member`, optionally in worker processes). That loop is the one place to swap in the
batched ensemble trainer once it exists: it takes the member configs and returns one summary dict
per member.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from tnattn.train.config import TrainConfig

__all__ = ["Setting", "parse_setting", "member_config", "run_member", "run_members", "summarise_members"]


@dataclass(frozen=True)
class Setting:
    """A parsed setting string (see the module docstring)."""

    name: str
    l1: float  # 0 for none; -1 means "the base strength"
    schedule: str  # constant, step or exp
    guard: bool
    guard_lookback: Optional[int] = None  # None: the default lookback


_L1_VALUE = re.compile(r"^l1=([0-9.eE+-]+)$")
_GUARD = re.compile(r"^(.*)\+guard([0-9]*)$")


def parse_setting(text: str) -> Setting:
    """Parse a setting string; raises ValueError naming the bad setting."""
    if not isinstance(text, str):
        raise TypeError(f"setting must be a str, got {type(text).__name__}")
    g = _GUARD.match(text)
    base, guard = (g.group(1), True) if g else (text, False)
    lookback = int(g.group(2)) if g and g.group(2) else None
    if base == "none":
        return Setting(text, 0.0, "constant", guard, lookback)
    if base == "l1":
        return Setting(text, -1.0, "constant", guard, lookback)
    if base in ("l1-step", "l1-exp"):
        return Setting(text, -1.0, base[3:], guard, lookback)
    m = _L1_VALUE.match(base)
    if m:
        try:
            value = float(m.group(1))
        except ValueError:
            value = -1.0
        if value >= 0 and math.isfinite(value):
            return Setting(text, value, "constant", guard, lookback)
    raise ValueError(
        f"unknown setting {text!r}: expected none, l1, l1=VALUE, l1-step or l1-exp, optionally followed by "
        "+guard or +guardK"
    )


def member_config(base: TrainConfig, setting: Setting, seed: int, *, l1: float, l1_early: float,
                  schedule_epochs: int, factor: float, out: str) -> TrainConfig:
    """The :class:`TrainConfig` of one member: ``base`` with the setting's regularisation."""
    if setting.schedule == "constant":
        strength = l1 if setting.l1 < 0 else setting.l1
        return dataclasses.replace(base, seed=seed, l1=strength, penalty_schedule="constant", out=out)
    return dataclasses.replace(
        base, seed=seed, l1=l1_early, penalty_schedule=setting.schedule, schedule_epochs=schedule_epochs,
        schedule_factor=factor, out=out,
    )


def run_member(config: TrainConfig, guard: bool = False, *, guard_lookback: int = 1,
               analysis: Optional[dict] = None, snapshots: Optional[dict] = None) -> dict:
    """Train one member and summarise it (a top-level function, so worker processes can run it).

    Parameters
    ----------
    config : TrainConfig
        The member's run (``config.out`` is its run directory).
    guard : bool
        Add a :class:`~tnattn.structure.SpikeGuard` (with ``guard_lookback``).
    analysis : dict, optional
        Keyword arguments of :func:`~tnattn.structure.spikes.analyse_history`.
    snapshots : dict, optional
        Record context snapshots into ``<out>/snapshots.npz``: keys ``every``, ``n``, ``length``,
        ``seed`` (probe, see :func:`~tnattn.structure.make_probe`) and optionally ``features``.

    Returns
    -------
    dict
        ``seed``, ``t_train``, ``t_eps``, ``t_G``, ``grokked``, ``final_test_error`` (mean over the
        test lengths), ``final_train_error``, ``epochs``, the trainer's ``loss_spikes`` (raw
        onsets), the :func:`~tnattn.structure.spikes.analyse_history` fields, ``reverts`` (guard),
        the ``deff``/``loss``/``test_error`` traces and ``wall_time_s``.
    """
    import torch

    from tnattn.structure.guard import SpikeGuard
    from tnattn.structure.snapshots import SnapshotRecorder, make_probe
    from tnattn.structure.spikes import analyse_history
    from tnattn.train.build import build_teacher
    from tnattn.train.run import train

    if config.threads > 0:
        torch.set_num_threads(config.threads)
    callbacks = []
    if snapshots is not None:
        opts = dict(snapshots)
        probe = make_probe(build_teacher(config), opts.pop("n", 64), opts.pop("length", 24), seed=opts.pop("seed", 2024))
        # Before the guard, so a reverted epoch's snapshot shows what the epoch produced.
        callbacks.append(SnapshotRecorder(probe, path=Path(config.out) / "snapshots.npz", **opts))
    guard_cb = SpikeGuard(lookback=guard_lookback) if guard else None
    if guard_cb is not None:
        callbacks.append(guard_cb)
    result = train(config, callbacks=callbacks)
    h = result.history
    s = result.summary
    an = analyse_history(h, **(analysis or {}))
    tests = [c for c in h.columns if c.startswith("test_error_")]
    test_err = np.nanmean(np.array([[r[c] for c in tests] for r in h.rows], dtype=float), axis=1) if tests else None
    final_tests = [float(v) for v in s["final_test_errors"].values()]
    return {
        "seed": config.seed,
        "out": config.out,
        "t_train": s["t_train"],
        "t_eps": s["t_eps"],
        "t_G": s["t_G"],
        "grokked": s["grokked"],
        "final_test_error": float(np.mean(final_tests)),
        "final_train_error": s["final_train_error"],
        "epochs": s["epochs"],
        "loss_spikes": s["loss_spikes"],
        **an,
        "reverts": guard_cb.reverts if guard_cb is not None else [],
        "declined": guard_cb.declined if guard_cb is not None else [],
        "deff": [r["deff"] for r in h.rows],
        "loss": [r["loss"] for r in h.rows],
        "test_error": test_err.tolist() if test_err is not None else [],
        "wall_time_s": s["wall_time_s"],
    }


def run_members(jobs: Sequence[dict], *, workers: int = 1, progress: bool = False) -> list[dict]:
    """Run ensemble members: each job is a dict of :func:`run_member` keyword arguments (at least
    ``config``); results in job order.

    This is the member loop (independent runs, in ``workers`` processes when > 1); replace it by a
    call to the batched ensemble trainer when that exists.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="members", unit="run")
    results: list[Optional[dict]] = [None] * len(jobs)
    try:
        if workers == 1:
            for i, job in enumerate(jobs):
                results[i] = run_member(**job)
                if bar is not None:
                    bar.update(1)
        else:
            import multiprocessing as mp

            # spawn: fork after torch has started threads can deadlock.
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(run_member, **job): i for i, job in enumerate(jobs)}
                from concurrent.futures import as_completed

                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results  # type: ignore[return-value]


def _quantiles(values: list) -> dict:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return {"median": None, "q25": None, "q75": None, "mean": None}
    return {"median": float(np.median(a)), "q25": float(np.quantile(a, 0.25)),
            "q75": float(np.quantile(a, 0.75)), "mean": float(a.mean())}


def summarise_members(members: list[dict], *, merge: int = 5, n_null: int = 1000, seed: int = 0) -> dict:
    """One row of the comparison table from the members of a setting.

    Members need the fields of :func:`run_member` (including the ``deff`` trace). Spike rates are events per 1000 epochs over each member's whole run; ``post_grok`` counts
    events after t_eps only (the spikes that can destroy a solution). ``lost_after_grok`` counts
    members that reached zero test error but ended with a non-zero one.
    """
    from tnattn.structure.spikes import deff_drift_between_spikes, pooled_periodicity_test

    n = len(members)
    grokked = [m for m in members if m["grokked"]]
    rates = [1000.0 * m["n_spikes"] / m["epochs"] for m in members]
    post = [sum(1 for e in m["spikes"] if m["t_eps"] is not None and e > m["t_eps"]) for m in members]
    aligned = sum(m["alignment"]["matched"] for m in members)
    n_sp = sum(m["alignment"]["n_spikes"] for m in members)
    chance = [m["alignment"]["chance"] for m in members if m["alignment"]["n_spikes"]]
    pooled = pooled_periodicity_test([m["spikes"] for m in members], merge=merge, n_null=n_null, seed=seed)
    pooled.pop("intervals")
    drift = []
    for m in members:  # traces: entry i is epoch i + 1
        d = np.array([np.nan if v is None else v for v in m["deff"]], dtype=float)
        drift.extend(deff_drift_between_spikes(np.arange(1, d.size + 1), d, m["spikes"]).tolist())
    return {
        "members": n,
        "grokked": len(grokked),
        "grokked_fraction": len(grokked) / n if n else float("nan"),
        "t_eps": _quantiles([m["t_eps"] for m in grokked]),
        "spikes_total": int(sum(m["n_spikes"] for m in members)),
        "spikes_per_1000_epochs": _quantiles(rates),
        "post_grok_spikes_total": int(sum(post)),
        "final_test_error": _quantiles([m["final_test_error"] for m in members]),
        "final_test_error_zero": int(sum(m["final_test_error"] == 0.0 for m in members)),
        "lost_after_grok": int(sum(m["grokked"] and m["final_test_error"] > 0 for m in members)),
        "reverts_total": int(sum(len(m["reverts"]) for m in members)),
        "declined_total": int(sum(len(m["declined"]) for m in members)),
        "spike_step_matched": f"{aligned}/{n_sp}",
        "spike_step_fraction": aligned / n_sp if n_sp else float("nan"),
        "spike_step_chance": float(np.mean(chance)) if chance else float("nan"),
        "periodicity": pooled,
        "deff_drift_between_spikes": {
            "n": len(drift),
            "median": float(np.median(drift)) if drift else None,
            "fraction_down": float(np.mean(np.asarray(drift) < 0)) if drift else None,
        },
    }

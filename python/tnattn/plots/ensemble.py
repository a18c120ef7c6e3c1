"""Figures of ensemble statistics (Scenario A): aligned test errors with the fitted nu, grokking-time
PDFs and the ensemble-averaged D_eff around grokking.

Each panel function draws into a given matplotlib ``Axes`` from the plain dicts of
:mod:`tnattn.ensemble.stats`; :func:`plot_scenario_a` lays out one row of three panels per bond
dimension D, one curve per regulariser.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from tnattn.plots import save_figure  # (importing tnattn.plots selects the Agg backend)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)

__all__ = ["plot_aligned_errors", "plot_grokking_pdfs", "plot_deff_curves", "plot_scenario_a", "plot_nu_windows"]

_COLORS = {"none": "tab:blue", "l2": "tab:orange", "l1": "tab:green"}


def _color(name: str, k: int) -> str:
    return _COLORS.get(name, f"C{k}")


def plot_aligned_errors(ax, fits: dict) -> None:
    """``<E_test>`` against ``t_eps - t`` (log-log) with the fitted power laws.

    Parameters
    ----------
    ax : matplotlib Axes
    fits : dict
        Name -> result of :func:`tnattn.ensemble.stats.aligned_test_error`.
    """
    for k, (name, fit) in enumerate(fits.items()):
        if not fit.get("tau"):
            continue
        tau, mean = np.asarray(fit["tau"]), np.asarray(fit["mean_error"])
        ok = mean > 0
        label = f"{name}: nu = {fit['nu']:.2f} +- {fit['nu_err']:.2f} ({fit['n_runs']} runs)"
        ax.loglog(tau[ok], mean[ok], "o", ms=3, color=_color(name, k), label=label)
        if math.isfinite(fit["nu"]):
            lo, hi = fit["window"]
            t = np.geomspace(lo, hi, 20)
            ax.loglog(t, fit["prefactor"] * t ** fit["nu"], "-", color=_color(name, k), lw=1)
    ax.set_xlabel("t_eps - t (epochs)")
    ax.set_ylabel("<test error> (aligned)")
    _legend(ax)


def plot_grokking_pdfs(ax, hists: dict) -> None:
    """Grokking-time probability densities (step lines), from
    :func:`tnattn.ensemble.stats.grokking_time_histogram`."""
    for k, (name, h) in enumerate(hists.items()):
        if not h.get("edges"):
            continue
        edges, dens = np.asarray(h["edges"]), np.asarray(h["density"])
        label = f"{name}: {h['n']}/{h['n_total']} grokked, median {h['median']:.0f}"
        ax.stairs(dens, edges, color=_color(name, k), label=label)
    ax.set_xscale("symlog", linthresh=10.0)  # t_G spans 0 (and negative) to thousands of epochs
    ax.set_xlabel("grokking time t_G = t_eps - t_train (epochs, symlog)")
    ax.set_ylabel("PDF")
    _legend(ax)


def plot_deff_curves(ax, curves: dict) -> None:
    """Ensemble-averaged D_eff against the epoch relative to t_eps, with a standard-error band
    (from :func:`tnattn.ensemble.stats.aligned_mean`)."""
    for k, (name, c) in enumerate(curves.items()):
        off, mean, sem = (np.asarray(c[key], dtype=float) for key in ("offsets", "mean", "sem"))
        if not np.isfinite(mean).any():
            continue
        ax.plot(off, mean, color=_color(name, k), label=f"{name} ({c['n_members']} runs)")
        band = np.nan_to_num(sem)
        ax.fill_between(off, mean - band, mean + band, color=_color(name, k), alpha=0.2, lw=0)
    ax.axvline(0.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("t - t_eps (epochs)")
    ax.set_ylabel("<D_eff> of left contexts")
    _legend(ax)


def plot_scenario_a(results: dict, path: str | os.PathLike) -> Path:
    """One row per bond dimension: aligned test error + nu fits, grokking-time PDFs, D_eff curves.

    Parameters
    ----------
    results : dict
        With ``per_D``: a list of dicts holding ``D``, ``nu_fits``, ``grokking_pdfs`` and
        ``deff_curves`` (each a mapping regulariser -> statistic), as written by
        :mod:`tnattn.experiments.scenario_a`.
    path : path
        Output PNG.
    """
    import matplotlib.pyplot as plt

    rows = results["per_D"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(15, 4.2 * len(rows)), squeeze=False)
    for r, block in enumerate(rows):
        plot_aligned_errors(axes[r, 0], block["nu_fits"])
        plot_grokking_pdfs(axes[r, 1], block["grokking_pdfs"])
        plot_deff_curves(axes[r, 2], block["deff_curves"])
        axes[r, 0].set_title(f"D = {block['D']}: aligned test error")
        axes[r, 1].set_title(f"D = {block['D']}: grokking times")
        axes[r, 2].set_title(f"D = {block['D']}: D_eff around grokking")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_nu_windows(budgets: dict, path: str | os.PathLike, *, title: str = "") -> Path:
    """nu against the fit window, one panel per regulariser (or any named ensemble).

    Every window ``(tau_lo, tau_hi)`` of the family of
    :func:`tnattn.ensemble.nu_budget.nu_error_budget` is a point at ``tau_hi`` (log axis), one
    line per ``tau_lo``, with its bootstrap error; the shaded band is the central nu +- its total
    uncertainty and the dotted lines the central nu under the other ``t_eps`` estimates.

    Parameters
    ----------
    budgets : dict
        Name -> result of :func:`~tnattn.ensemble.nu_budget.nu_error_budget`.
    path : str or PathLike
        PNG file to write (parent folders are created).
    title : str

    Returns
    -------
    Path
    """
    import matplotlib.pyplot as plt

    names = list(budgets)
    if not names:
        raise ValueError("budgets must name at least one ensemble")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        b = budgets[name]
        ax.set_title(f"{name}: nu = {b.get('nu', math.nan):.2f} +- {b.get('total', math.nan):.2f}", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("tau_hi (epochs before t_eps)")
        ax.set_ylabel("fitted nu")
        rows = b.get("by_window", [])
        for j, lo in enumerate(sorted({r["window"][0] for r in rows})):
            pts = sorted((r["window"][1], r["nu"], r["stat"]) for r in rows if r["window"][0] == lo)
            x, y, e = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(x * (1 + 0.03 * j), y, yerr=np.nan_to_num(e), marker="o", ms=3, capsize=2,
                        color=f"C{j}", label=f"tau_lo = {lo:g}")  # fmt: skip
        if np.isfinite(b.get("nu", math.nan)):
            ax.axhspan(b["nu"] - b["total"], b["nu"] + b["total"], color=_color(name, k), alpha=0.15,
                       label="central +- total")  # fmt: skip
            for est, v in b.get("by_estimate", {}).items():
                if est != b.get("t_eps_estimate") and np.isfinite(v):
                    ax.axhline(v, ls=":", lw=1, color="k")
                    ax.annotate(est, (ax.get_xlim()[0], v), fontsize=6, va="bottom")
        _legend(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)

"""Figures of one training run: loss, train/test errors and D_eff against epochs.

:func:`plot_training` draws three stacked panels sharing a logarithmic epoch axis:

1. the data loss (log scale), with loss spikes marked;
2. the training error and the test error per test length; zero errors cannot sit on a log axis, so
   the error axis is symmetric-log (linear below 1e-4), which puts an exact zero at the bottom;
3. the effective dimension D_eff of the left contexts (on the test epochs).

Vertical lines mark t_train (first zero training error) and t_eps (first zero test error).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tnattn.plots import save_figure  # (importing tnattn.plots selects the Agg backend)

__all__ = ["plot_training"]


def _columns(history) -> tuple[list[str], dict[str, np.ndarray]]:
    """Column names and float arrays from a History, or a list of row dicts."""
    rows = history.rows if hasattr(history, "rows") else list(history)
    if not rows:
        raise ValueError("history is empty: nothing to plot")
    names = list(rows[0])
    data = {
        n: np.array([math.nan if r.get(n) is None else float(r[n]) for r in rows], dtype=float) for n in names
    }
    return names, data


def plot_training(
    history,
    path: str | os.PathLike,
    *,
    t_train: Optional[int] = None,
    t_eps: Optional[int] = None,
    spikes: Sequence[int] = (),
    title: str = "",
) -> Path:
    """Draw the training curves of one run into a PNG.

    Parameters
    ----------
    history : History or list of dict
        Rows with ``epoch``, ``loss``, ``train_error``, ``test_error_<M>`` and (optionally) ``deff``.
    path : path
        Output PNG file.
    t_train, t_eps : int, optional
        Epochs to mark (first zero training / test error).
    spikes : sequence of int
        Epochs of loss spikes to mark on the loss panel.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib.pyplot as plt

    names, data = _columns(history)
    for needed in ("epoch", "loss", "train_error"):
        if needed not in data:
            raise ValueError(f"history has no {needed!r} column")
    epoch = data["epoch"]
    tests = [n for n in names if n.startswith("test_error_")]
    has_deff = "deff" in data and np.isfinite(data["deff"]).any()

    n_panels = 3 if has_deff else 2
    fig, axes = plt.subplots(n_panels, 1, figsize=(7.5, 2.6 * n_panels + 0.6), sharex=True, constrained_layout=True)
    ax_loss, ax_err = axes[0], axes[1]

    ax_loss.plot(epoch, data["loss"], color="black", lw=1.2, label="training loss")
    if "penalty" in data and np.nanmax(np.abs(data["penalty"])) > 0:
        ax_loss.plot(epoch, data["penalty"], color="tab:gray", lw=1.0, ls="--", label="penalty")
    spikes = [s for s in spikes if s >= 1]
    if spikes:
        idx = np.searchsorted(epoch, spikes)
        idx = idx[idx < len(epoch)]
        ax_loss.plot(epoch[idx], data["loss"][idx], "v", color="tab:red", ms=6, label="loss spike")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")

    ax_err.plot(epoch, data["train_error"], color="black", lw=1.4, label="train")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, name in enumerate(tests):
        y = data[name]
        ok = np.isfinite(y)
        ax_err.plot(epoch[ok], y[ok], color=colours[k % len(colours)], lw=1.2,
                    marker="." if ok.sum() < 60 else None, label=f"test, M={name[len('test_error_'):]}")
    ax_err.set_yscale("symlog", linthresh=1e-4, linscale=0.5)
    ax_err.set_ylim(-2e-5, 1.0)
    ax_err.set_ylabel("error (fraction of sites)")

    if has_deff:
        ax_d = axes[2]
        y = data["deff"]
        ok = np.isfinite(y)
        ax_d.plot(epoch[ok], y[ok], color="tab:purple", lw=1.2, marker="." if ok.sum() < 60 else None)
        ax_d.set_ylabel(r"$D_\mathrm{eff}$ (left contexts)")

    for ax in axes:
        if t_train is not None:
            ax.axvline(t_train, color="tab:blue", ls=":", lw=1.2, label=f"$t_{{train}}$ = {t_train}")
        if t_eps is not None:
            ax.axvline(t_eps, color="tab:green", ls="--", lw=1.2, label=rf"$t_\epsilon$ = {t_eps}")
        ax.grid(True, which="major", alpha=0.3)
    ax_loss.legend(fontsize=8, loc="best")
    ax_err.legend(fontsize=8, loc="best")
    axes[-1].set_xscale("log")
    axes[-1].set_xlabel("epoch")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)

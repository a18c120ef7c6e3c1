"""Figures of structure formation: context point clouds next to the training curves.

- :func:`plot_structure_figure`: the seed's figure -- loss, test error and D_eff of several runs
  (e.g. L1 vs none) on the left, the left-context point clouds of each run at chosen epochs on the
  right;
- :func:`render_frames` / :func:`make_animation`: one PNG per snapshot (clouds of the left and right
  contexts, the traces with the current epoch marked) and a GIF (Pillow) or MP4 (when ``ffmpeg``
  is on the PATH);
- :func:`plot_compare`: the schedule / spike-guard comparison.

Point clouds: at D = 3 the contexts are unit vectors, drawn on the sphere (3-D scatter) or in the
Lambert azimuthal equal-area projection (the whole sphere onto a disk of radius 2 centred on the
north pole; areas are preserved, so densities can be compared by eye). For D > 3 they are projected
onto the top three principal axes of all snapshots pooled (fixed axes, so frames are comparable).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tnattn.plots import save_figure  # (importing tnattn.plots selects the Agg backend)

__all__ = [
    "equal_area",
    "cloud_basis",
    "cloud_points",
    "history_traces",
    "render_frame",
    "frame_indices",
    "render_frames",
    "make_animation",
    "plot_structure_figure",
    "plot_compare",
]

PROJECTIONS = ("3d", "equal-area")
COLOR_BY = ("class", "neighbour", "neighbourhood")
_CLASS_COLOURS = np.array(["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"])


def equal_area(points: np.ndarray) -> np.ndarray:
    """Lambert azimuthal equal-area projection of unit 3-vectors.

    Parameters
    ----------
    points : ndarray, shape (P, 3)
        Unit vectors (normalised here again for safety).

    Returns
    -------
    ndarray, shape (P, 2)
        ``sqrt(2 / (1 + z)) (x, y)``: the north pole at the centre, the south pole on the circle of
        radius 2.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (P, 3), got {p.shape}")
    norm = np.linalg.norm(p, axis=1, keepdims=True)
    p = p / np.where(norm > 0, norm, 1.0)
    scale = np.sqrt(2.0 / np.maximum(1.0 + p[:, 2], 1e-12))
    return p[:, :2] * scale[:, None]


def cloud_basis(clouds: np.ndarray) -> Optional[np.ndarray]:
    """Projection basis for point clouds: None at D <= 3, else the top-3 PCA axes (D, 3) of all
    points of ``clouds`` (shape (..., D)) pooled."""
    x = np.asarray(clouds, dtype=np.float64).reshape(-1, np.shape(clouds)[-1])
    if x.shape[1] <= 3:
        return None
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return vt[:3].T


def cloud_points(snap, k: int, side: str = "left", *, edge: int = 3, color_by: str = "class",
                 basis: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """The points (P', 3) and integer colour labels (P',) of snapshot ``k``.

    Sites closer than ``edge`` to either end of the probe sequences are left out (their contexts
    are still close to the boundary vectors). ``color_by``: ``class`` (target), ``neighbour``
    (``x_{i-1}`` for left contexts, ``x_{i+1}`` for right ones: the symbol the context should
    encode) or ``neighbourhood`` (the radius-1 window index).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    ctx = snap.left if side == "left" else snap.right
    M = ctx.shape[2]
    lo, hi = (edge, M - edge) if M > 2 * edge else (0, M)
    pts = ctx[k][:, lo:hi].astype(np.float64).reshape(-1, ctx.shape[-1])
    if color_by == "class":
        lab = snap.y[:, lo:hi]
    elif color_by == "neighbourhood":
        lab = snap.neighbourhood[:, lo:hi]
    else:
        nb = snap.neighbourhood
        d = snap.d
        lab = (nb // (d * d) if side == "left" else nb % d)[:, lo:hi]
    if basis is not None:
        pts = (pts - 0.0) @ basis
    elif pts.shape[1] < 3:
        pts = np.pad(pts, ((0, 0), (0, 3 - pts.shape[1])))
    return pts, lab.reshape(-1).astype(np.int64)


def _colours(labels: np.ndarray) -> np.ndarray:
    if labels.size and labels.max() >= len(_CLASS_COLOURS):
        import matplotlib.cm as cm

        return cm.tab10(labels % 10)
    return _CLASS_COLOURS[labels]


def _draw_cloud(ax, pts: np.ndarray, labels: np.ndarray, projection: str, on_sphere: bool, title: str = ""):
    cols = _colours(labels)
    if projection == "3d":
        if on_sphere:
            u, v = np.mgrid[0 : 2 * np.pi : 25j, 0 : np.pi : 13j]
            ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", linewidth=0.3)
            lim = 1.0
        else:
            lim = float(np.abs(pts).max()) if pts.size else 1.0
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=cols, s=5, alpha=0.6, depthshade=False, linewidths=0)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_zlim(-lim, lim)
        ax.set_box_aspect((1, 1, 1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
    else:
        xy = equal_area(pts) if on_sphere else pts[:, :2]
        if on_sphere:
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(2 * np.cos(t), 2 * np.sin(t), color="0.7", linewidth=0.6)
            ax.set_xlim(-2.05, 2.05)
            ax.set_ylim(-2.05, 2.05)
        ax.scatter(xy[:, 0], xy[:, 1], c=cols, s=5, alpha=0.6, linewidths=0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _new_cloud_axes(fig, spec, projection: str):
    return fig.add_subplot(spec, projection="3d") if projection == "3d" else fig.add_subplot(spec)


def history_traces(history) -> dict:
    """Arrays ``epoch``, ``loss``, ``train_error``, ``test_error`` (mean over the test lengths,
    nan where not measured), ``deff`` and ``spikes`` (epochs) from a History or list of rows."""
    rows = history.rows if hasattr(history, "rows") else list(history)
    if not rows:
        raise ValueError("history is empty")

    def col(name):
        return np.array([math.nan if r.get(name) is None else float(r[name]) for r in rows], dtype=float)

    tests = [c for c in rows[0] if c.startswith("test_error_")]
    test = np.full(len(rows), math.nan)
    if tests:
        stacked = np.stack([col(c) for c in tests])
        ok = np.all(np.isfinite(stacked), axis=0)
        test[ok] = stacked[:, ok].mean(axis=0)
    return {
        "epoch": col("epoch"),
        "loss": col("loss"),
        "train_error": col("train_error"),
        "test_error": test,
        "deff": col("deff"),
        "spikes": [int(r["epoch"]) for r in rows if r.get("spike") == 1.0],
    }


def _draw_traces(axes, tr: dict, *, colour: str = "C1", label: str = "", now: Optional[float] = None,
                 marks: Sequence[float] = ()):
    ax_loss, ax_err, ax_deff = axes
    ep = tr["epoch"]
    ax_loss.semilogy(ep, np.maximum(tr["loss"], 1e-12), color=colour, linewidth=0.8, label=label)
    if tr["spikes"]:
        idx = np.searchsorted(ep, tr["spikes"])
        idx = idx[idx < ep.size]
        ax_loss.plot(ep[idx], tr["loss"][idx], "v", color=colour, markersize=3)
    m = np.isfinite(tr["test_error"])
    ax_err.plot(ep[m], tr["test_error"][m], color=colour, linewidth=0.8)
    ax_err.set_yscale("symlog", linthresh=1e-3)
    m = np.isfinite(tr["deff"])
    ax_deff.plot(ep[m], tr["deff"][m], color=colour, linewidth=0.8)
    ax_loss.set_ylabel("loss")
    ax_err.set_ylabel("test error")
    ax_deff.set_ylabel("D_eff")
    ax_deff.set_xlabel("epoch")
    for ax in axes:
        if now is not None:
            ax.axvline(now, color="k", linewidth=0.8)
        for t in marks:
            ax.axvline(t, color=colour, linewidth=0.5, linestyle=":")
        ax.tick_params(labelsize=7)


def render_frame(snap, k: int, history, path: str | os.PathLike, *, projection: str = "3d",
                 color_by: str = "class", basis: Optional[np.ndarray] = None, title: str = "",
                 traces: Optional[dict] = None, dpi: int = 90) -> Path:
    """One animation frame: the traces with epoch ``snap.epochs[k]`` marked, and the clouds of the
    left and right contexts of snapshot ``k``. Shapes as in :class:`~tnattn.structure.Snapshots`."""
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    tr = traces if traces is not None else history_traces(history)
    fig = plt.figure(figsize=(10, 4.2))
    gs = GridSpec(3, 3, figure=fig, width_ratios=[1.1, 1, 1], wspace=0.15, hspace=0.35)
    axes = [fig.add_subplot(gs[i, 0]) for i in range(3)]
    for ax in axes[:2]:
        ax.sharex(axes[2])
        ax.tick_params(labelbottom=False)
    _draw_traces(axes, tr, colour="C1", now=float(snap.epochs[k]))
    on_sphere = basis is None and snap.D == 3
    for j, side in enumerate(("left", "right")):
        ax = _new_cloud_axes(fig, gs[:, j + 1], projection)
        pts, lab = cloud_points(snap, k, side, color_by=color_by, basis=basis)
        _draw_cloud(ax, pts, lab, projection, on_sphere, f"{side} contexts" + ("" if on_sphere else " (PCA)"))
    fig.suptitle(f"{title}  epoch {int(snap.epochs[k])}".strip(), fontsize=9)
    return save_figure(fig, path, dpi=dpi)


def frame_indices(epochs: np.ndarray, n_frames: int, *, spacing: str = "log", include: Sequence[int] = ()) -> np.ndarray:
    """Snapshot indices for an animation: ``n_frames`` target epochs spaced evenly (``linear``) or
    evenly in ``log(1 + epoch)`` (``log``: the early collapse is fast), each mapped to the nearest
    snapshot, plus every snapshot whose epoch is in ``include``; unique and increasing."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if spacing not in ("linear", "log"):
        raise ValueError(f"spacing must be 'linear' or 'log', got {spacing!r}")
    ep = np.asarray(epochs, dtype=np.float64)
    lo, hi = ep.min(), ep.max()
    if spacing == "log":
        targets = np.expm1(np.linspace(np.log1p(lo), np.log1p(hi), n_frames))
    else:
        targets = np.linspace(lo, hi, n_frames)
    picks = {int(np.argmin(np.abs(ep - t))) for t in targets}
    inc = {int(e) for e in include}
    picks |= {i for i, e in enumerate(ep) if int(e) in inc}
    return np.array(sorted(picks), dtype=np.int64)


def render_frames(snap, history, out_dir: str | os.PathLike, *, n_frames: int = 60, prefix: str = "frame",
                  spacing: str = "log", include: Sequence[int] = (), **kwargs) -> list[Path]:
    """PNG frames (:func:`render_frame`) of the snapshots :func:`frame_indices` picks; returns
    the paths."""
    picks = frame_indices(snap.epochs, n_frames, spacing=spacing, include=include)
    traces = history_traces(history)
    basis = cloud_basis(np.concatenate([snap.left, snap.right])) if snap.D > 3 else None
    out = Path(out_dir)
    return [render_frame(snap, int(k), None, out / f"{prefix}_{i:04d}.png", traces=traces, basis=basis, **kwargs)
            for i, k in enumerate(picks)]


def make_animation(frames: Sequence[str | os.PathLike], path: str | os.PathLike, *, fps: float = 8.0) -> Path:
    """Assemble PNG frames into an animation: GIF via Pillow (``.gif``), or MP4 via ``ffmpeg``
    (``.mp4``; raises RuntimeError when ``ffmpeg`` is not on the PATH)."""
    if not frames:
        raise ValueError("frames is empty")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp4":
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise RuntimeError("ffmpeg is not on the PATH: write a .gif instead")
        listing = path.with_suffix(".frames.txt")
        listing.write_text("".join(f"file '{Path(f).resolve()}'\nduration {1.0 / fps}\n" for f in frames))
        subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p", str(path)], check=True)
        listing.unlink()
        return path
    if path.suffix != ".gif":
        raise ValueError(f"path must end in .gif or .mp4, got {path.name}")
    from PIL import Image

    images = [Image.open(f).convert("RGB") for f in frames]
    # One shared adaptive palette keeps the GIF small and the colours stable between frames.
    first = images[0].quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    quant = [first] + [im.quantize(palette=first) for im in images[1:]]
    tmp = path.with_name(f".{path.name}.tmp.gif")
    quant[0].save(tmp, save_all=True, append_images=quant[1:], duration=int(1000 / fps), loop=0, optimize=False)
    os.replace(tmp, path)
    return path


def plot_structure_figure(runs: Sequence[dict], times: Sequence[Sequence[int]], path: str | os.PathLike, *,
                          projection: str = "3d", color_by: str = "class", title: str = "") -> Path:
    """The seed's figure: traces of all runs (left) and the left-context clouds of each run at
    its chosen epochs (right, one row per run).

    Parameters
    ----------
    runs : sequence of dict
        Each with ``label``, ``colour``, ``history`` and ``snapshots`` (a Snapshots).
    times : sequence of sequence of int
        Epochs to draw for each run (the nearest snapshot is used).
    """
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    if len(times) != len(runs):
        raise ValueError("times must give one list of epochs per run")
    ncol = max(len(t) for t in times)
    fig = plt.figure(figsize=(4.5 + 2.2 * ncol, 2.4 * max(2, len(runs)) + 0.6))
    outer = GridSpec(1, 2, figure=fig, width_ratios=[4.5, 2.2 * ncol], wspace=0.12)
    left = outer[0].subgridspec(3, 1, hspace=0.3)
    axes = [fig.add_subplot(left[i]) for i in range(3)]
    for ax in axes[:2]:
        ax.sharex(axes[2])
        ax.tick_params(labelbottom=False)
    right = outer[1].subgridspec(len(runs), ncol, wspace=0.05, hspace=0.15)
    for r, run in enumerate(runs):
        tr = history_traces(run["history"])
        snap = run["snapshots"]
        ks = [snap.index(t) for t in times[r]]
        _draw_traces(axes, tr, colour=run["colour"], label=run["label"], marks=[snap.epochs[k] for k in ks])
        basis = cloud_basis(snap.left) if snap.D > 3 else None
        for c, k in enumerate(ks):
            ax = _new_cloud_axes(fig, right[r, c], projection)
            pts, lab = cloud_points(snap, k, "left", color_by=color_by, basis=basis)
            head = f"{run['label']}\n" if c == 0 else "\n"
            _draw_cloud(ax, pts, lab, projection, basis is None and snap.D == 3, f"{head}epoch {int(snap.epochs[k])}")
    axes[0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, bbox_inches="tight")


def plot_compare(table: dict, members: dict, path: str | os.PathLike, *, sweep: Optional[dict] = None,
                 title: str = "") -> Path:
    """Schedule / guard comparison: mean D_eff over epochs, spike rates, t_eps, final test error,
    spike rate against constant lambda1, and pooled inter-spike intervals.

    Parameters
    ----------
    table : dict
        Setting name -> summary row (:func:`tnattn.structure.summarise_members`).
    members : dict
        Setting name -> list of member dicts (:func:`tnattn.structure.run_member`).
    sweep : dict, optional
        Spike rate against constant lambda1: lists ``lambda1``, ``rate_mean``, ``rate_se``
        (drawn when it has at least two strengths).
    """
    import matplotlib.pyplot as plt

    names = list(table)
    fig, ax = plt.subplots(2, 3, figsize=(15, 8))
    ax = ax.ravel()
    x = np.arange(len(names))
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        ms = members[name]
        T = max(len(m["deff"]) for m in ms)
        dd = np.full((len(ms), T), np.nan)
        for j, m in enumerate(ms):
            v = np.array([np.nan if d is None else d for d in m["deff"]], dtype=float)
            dd[j, : v.size] = v
        with np.errstate(all="ignore"):
            cols = np.where(np.isfinite(dd).sum(0) > 0)[0]
            mean = np.nanmean(dd[:, cols], axis=0)
        ax[0].plot(cols + 1, mean, color=f"C{i}", linewidth=0.9, label=name)
        jit = (rng.random(len(ms)) - 0.5) * 0.3
        ax[1].plot(i + jit, [1000.0 * m["n_spikes"] / m["epochs"] for m in ms], "o", color=f"C{i}", alpha=0.7, ms=4)
        te = [m["t_eps"] for m in ms]
        ok = [t for t in te if t is not None]
        ax[2].plot(i + jit[: len(ok)], ok, "o", color=f"C{i}", alpha=0.7, ms=4)
        n_no = sum(t is None for t in te)
        if n_no:
            ax[2].annotate(f"{n_no}\nnot\ngrokked", (i, 0.99), xycoords=("data", "axes fraction"), ha="center",
                           va="top", fontsize=6)
        ax[3].plot(i + jit, [max(m["final_test_error"], 1e-5) for m in ms], "o", color=f"C{i}", alpha=0.7, ms=4)
        dt = np.concatenate([np.diff(m["spikes"]) for m in ms if len(m["spikes"]) > 1] or [np.zeros(0)])
        if dt.size:
            ax[5].hist(dt, bins=np.linspace(0, max(dt.max(), 10), 30), histtype="step", color=f"C{i}", label=name)
    ax[0].set(xlabel="epoch", ylabel="mean D_eff", xscale="log")
    ax[0].legend(fontsize=7)
    for a, lab in ((ax[1], "spikes / 1000 epochs"), (ax[2], "t_eps (grokked runs)"), (ax[3], "final test error (1e-5 = 0)")):
        a.set_xticks(x, names, rotation=30, fontsize=7, ha="right")
        a.set_ylabel(lab)
    ax[3].set_yscale("log")
    lam = list(sweep["lambda1"]) if sweep else []
    rate = list(sweep["rate_mean"]) if sweep else []
    err = list(sweep["rate_se"]) if sweep else []
    if len(lam) >= 2:
        order = np.argsort(lam)
        lam_plot = np.where(np.asarray(lam) > 0, lam, np.nan)
        ax[4].errorbar(np.asarray(lam_plot)[order], np.asarray(rate)[order], yerr=np.asarray(err)[order], fmt="o-")
        ax[4].set(xscale="log", xlabel="lambda1 (constant)", ylabel="mean spikes / 1000 epochs (+- s.e.)")
        for l_, r_ in zip(lam, rate):
            if l_ == 0:
                ax[4].axhline(r_, color="0.5", linestyle="--", linewidth=0.8, label="lambda1 = 0")
                ax[4].legend(fontsize=7)
    else:
        ax[4].text(0.5, 0.5, "name settings l1=VALUE\nfor a lambda1 sweep", ha="center", va="center",
                   transform=ax[4].transAxes)
        ax[4].set_axis_off()
    ax[5].set(xlabel="inter-spike interval (epochs)", ylabel="count")
    if ax[5].get_legend_handles_labels()[0]:
        ax[5].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)

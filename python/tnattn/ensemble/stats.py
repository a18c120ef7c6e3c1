"""Statistics over the members of an ensemble (documentation: Science, "Measurements").

* :func:`grokking_time_histogram` -- the probability density of the grokking time t_G;
* :func:`member_records` -- one member's measured (epoch, value) pairs of a column (the history
  holds nan on epochs where a column was not measured);
* :func:`aligned_test_error` -- the aligned ensemble average of the test error and its critical
  exponent nu with an error bar (:func:`tnattn.metrics.fit_critical_exponent`);
* :func:`aligned_mean` -- the ensemble average of any recorded quantity against the time relative
  to each member's own reference epoch (e.g. D_eff around t_eps: the paper's "drop just before
  grokking");
* :func:`protocol_cost` -- the wall time of the full protocol, projected from a scaled-down run.

Inputs are plain arrays: ``values`` (E, T) with nan where not measured (row t = epoch t + 1, as in
:class:`tnattn.train.MemberHistory`) and per-member epochs (E,) with nan (or a
negative value) for "never".
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from tnattn.metrics import fit_critical_exponent

__all__ = ["grokking_time_histogram", "member_records", "aligned_test_error", "aligned_mean", "protocol_cost"]


def _epochs(t: Any, name: str) -> np.ndarray:
    a = np.asarray(t, dtype=float).reshape(-1)
    return np.where(np.isfinite(a) & (a >= 0), a, np.nan)


def _values(values: Any, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"{name} must have shape (E, T), got {v.shape}")
    return v


def grokking_time_histogram(t_G: Any, *, bins: int | Sequence[float] = 20) -> dict:
    """Histogram and probability density of grokking times.

    Parameters
    ----------
    t_G : array-like, shape (E,)
        Grokking times ``t_eps - t_train`` (nan for members that never reached zero test error;
        they count in ``n_total`` only). Negative values are possible and kept: the test error can
        reach zero before the training error does (the training set's short strings have
        boundary sites that long test sequences barely sample).
    bins : int or sequence of float
        Number of equal-width bins over ``[min(t_G, 0), max(t_G)]``, or the bin edges.

    Returns
    -------
    dict
        ``edges`` (B+1,), ``counts`` (B,), ``density`` (B,) normalised so that
        ``sum(density * widths) = 1`` over the members with a finite t_G, ``n`` such members,
        ``n_total`` members, ``fraction`` = n / n_total, ``negative`` (members with t_G < 0),
        ``mean``, ``median``, ``std``.
    """
    t = np.asarray(t_G, dtype=float).reshape(-1)
    ok = t[np.isfinite(t)]
    out = {
        "n": int(ok.size),
        "n_total": int(t.size),
        "fraction": float(ok.size / t.size) if t.size else math.nan,
        "negative": int((ok < 0).sum()),
    }
    if ok.size == 0:
        return out | {"edges": [], "counts": [], "density": [], "mean": math.nan, "median": math.nan, "std": math.nan}
    if np.ndim(bins) == 0:
        nb = int(bins)
        if nb < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        lo, hi = min(float(ok.min()), 0.0), float(ok.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, nb + 1)
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins must be an int or increasing edges")
    counts, edges = np.histogram(np.clip(ok, edges[0], edges[-1]), bins=edges)
    widths = np.diff(edges)
    density = counts / (counts.sum() * widths) if counts.sum() else np.zeros_like(widths)
    return out | {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "density": density.tolist(),
        "mean": float(ok.mean()),
        "median": float(np.median(ok)),
        "std": float(ok.std(ddof=1)) if ok.size > 1 else math.nan,
    }


def member_records(values: np.ndarray, e: int, *, until: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and values of member ``e`` where ``values[e]`` was measured (not nan).

    Parameters
    ----------
    values : ndarray, shape (E, T)
    e : int
    until : float, optional
        Keep only epochs ``<= until``.

    Returns
    -------
    epochs, vals : ndarray, shape (K,)
    """
    row = values[e]
    k = np.nonzero(~np.isnan(row))[0]
    epochs = (k + 1).astype(float)
    vals = row[k].astype(float)
    if until is not None:
        keep = epochs <= until
        epochs, vals = epochs[keep], vals[keep]
    return epochs, vals


def aligned_test_error(
    test_error: Any,
    t_eps: Any,
    *,
    window: Optional[Sequence[float]] = None,
    max_error: float = 0.1,
    span_quantile: float = 0.5,
    n_tau: int = 40,
    n_boot: int = 200,
    seed: int = 0,
) -> dict:
    """Critical exponent nu of the ensemble-averaged test error, ``<E>(tau) ~ tau^nu``, tau = t_eps - t.

    Every member that reached zero test error (finite ``t_eps``) contributes its measured test
    errors up to ``t_eps``; the runs are aligned at their own ``t_eps``, averaged and fitted by
    :func:`tnattn.metrics.fit_critical_exponent` (bootstrap error bar over members, default fit
    window from the time resolution around t_eps and the error level ``max_error``).

    Run selection (our choice): with an explicit ``window = (tau_lo, tau_hi)`` every grokked run
    enters and contributes wherever its records reach (a run that groks early covers only the
    small ``tau``). Without one, :func:`~tnattn.metrics.fit_critical_exponent` caps its automatic
    window at the shortest aligned history, and a run that generalises within a few epochs would
    shrink it to nothing, so only runs whose aligned history is at least the ``span_quantile``
    quantile of all spans enter (default: the longer half; 0 keeps every run); that selection
    favours runs that grokked later. ``n_runs`` and ``n_grokked`` report it. For the total
    uncertainty of nu (window and time-resolution systematics) see
    :func:`tnattn.ensemble.nu_budget.nu_error_budget`.

    Parameters
    ----------
    test_error : array-like, shape (E, T)
        Test error per member and epoch (nan where not measured).
    t_eps : array-like, shape (E,)
        First epoch with zero test error (nan or < 0: never).
    window, max_error, n_tau, n_boot, seed
        Passed to :func:`tnattn.metrics.fit_critical_exponent`.
    span_quantile : float in [0, 1)
        See "Run selection".

    Returns
    -------
    dict
        ``nu``, ``nu_err``, ``prefactor``, ``window``, ``tau`` and ``mean_error`` (the aligned
        average on the tau grid), ``n_runs`` (runs in the fit), ``n_grokked`` (runs with a
        t_eps and at least two records); or ``nu = nan`` and ``error`` (the reason) when the
        fit is impossible (too few grokked members or records).
    """
    values = _values(test_error, "test_error")
    te = _epochs(t_eps, "t_eps")
    if te.shape[0] != values.shape[0]:
        raise ValueError(f"t_eps must have one entry per member ({values.shape[0]}), got {te.shape[0]}")
    runs = []
    for e in np.nonzero(np.isfinite(te))[0]:
        ep, v = member_records(values, int(e), until=te[e])
        if ep.size >= 2 and ep[-1] == te[e]:
            runs.append((ep, v, te[e]))
    if not 0.0 <= span_quantile < 1.0:
        raise ValueError(f"span_quantile must lie in [0, 1), got {span_quantile}")
    n_grokked = len(runs)
    if not runs:
        return {"nu": math.nan, "nu_err": math.nan, "n_runs": 0, "n_grokked": 0, "error": "no member reached zero test error"}
    spans = np.array([te_ - ep[0] for ep, _, te_ in runs])
    need = 0.0 if window is not None else np.quantile(spans, span_quantile)
    runs = [r for r, sp in zip(runs, spans) if sp >= need]
    if not runs:
        return {"nu": math.nan, "nu_err": math.nan, "n_runs": 0, "n_grokked": n_grokked,
                "error": f"no run has an aligned history of {need:g} epochs"}  # fmt: skip
    # fit_critical_exponent wants one (R, T) array: pad every run after its t_eps with zeros at
    # later times (the error stays 0 there; only times before t_eps enter the fit).
    T = max(r[0].size for r in runs)
    times = np.empty((len(runs), T))
    errs = np.zeros((len(runs), T))
    for k, (ep, v, _) in enumerate(runs):
        times[k, : ep.size] = ep
        times[k, ep.size :] = ep[-1] + np.arange(1, T - ep.size + 1)
        errs[k, : ep.size] = v
    try:
        fit = fit_critical_exponent(
            errs, times, np.array([r[2] for r in runs]), window=window, max_error=max_error, n_tau=n_tau,
            n_boot=n_boot, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        return {"nu": math.nan, "nu_err": math.nan, "n_runs": len(runs), "n_grokked": n_grokked, "error": str(exc)}
    return {
        "nu": fit.nu,
        "nu_err": fit.nu_err,
        "prefactor": fit.prefactor,
        "window": list(fit.window),
        "tau": fit.tau.tolist(),
        "mean_error": fit.mean_error.tolist(),
        "n_runs": fit.n_runs,
        "n_grokked": n_grokked,
    }


def aligned_mean(values: Any, t_ref: Any, offsets: Sequence[float]) -> dict:
    """Ensemble average of a recorded quantity at ``t_ref + offset`` for each offset.

    Each member's measured values are linearly interpolated at ``t_ref[e] + offset`` inside the
    range of its own records (no extrapolation: outside, the member does not count). Members with
    no reference epoch (nan or < 0) are skipped.

    Parameters
    ----------
    values : array-like, shape (E, T)
        E.g. the ``deff`` column (nan where not measured).
    t_ref : array-like, shape (E,)
        Reference epochs, e.g. t_eps (or zeros for absolute epochs).
    offsets : sequence of float, shape (K,)

    Returns
    -------
    dict
        ``offsets`` (K,), ``mean`` (K,), ``sem`` (K,) (standard error of the mean, nan for fewer
        than 2 members), ``count`` (K,) members contributing at each offset, ``n_members``.
    """
    v = _values(values, "values")
    ref = _epochs(t_ref, "t_ref")
    if ref.shape[0] != v.shape[0]:
        raise ValueError(f"t_ref must have one entry per member ({v.shape[0]}), got {ref.shape[0]}")
    off = np.asarray(offsets, dtype=float).reshape(-1)
    rows = []
    for e in np.nonzero(np.isfinite(ref))[0]:
        ep, val = member_records(v, int(e))
        if ep.size == 0:
            continue
        at = ref[e] + off
        inside = (at >= ep[0]) & (at <= ep[-1])
        row = np.full(off.shape, np.nan)
        row[inside] = np.interp(at[inside], ep, val)
        rows.append(row)
    if not rows:
        nan = np.full(off.shape, np.nan)
        return {"offsets": off.tolist(), "mean": nan.tolist(), "sem": nan.tolist(), "count": [0] * off.size, "n_members": 0}
    M = np.stack(rows)
    count = np.sum(~np.isnan(M), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(M, axis=0) / np.maximum(count, 1), np.nan)
        dev = np.where(np.isnan(M), 0.0, M - mean) ** 2
        sd = np.sqrt(dev.sum(axis=0) / np.maximum(count - 1, 1))
        sem = np.where(count > 1, sd / np.sqrt(np.maximum(count, 1)), np.nan)
    return {"offsets": off.tolist(), "mean": mean.tolist(), "sem": sem.tolist(), "count": count.tolist(), "n_members": len(rows)}


def protocol_cost(
    active: Any,
    wall: Any,
    groups: Sequence[Sequence[int]],
    *,
    full_members: int = 1000,
    full_epochs: int = 7000,
) -> dict:
    """Project the wall time of a full protocol from a scaled-down ensemble run.

    Cost model, fitted to the run itself: the wall time of epoch t is ``a + b * n(t)``, with n(t) the
    number of members still training (finished members cost nothing, :class:`tnattn.train.Trainer`),
    fitted by least squares over the run's epochs. The full protocol trains ``full_members`` runs of
    every group (e.g. every regulariser) for up to ``full_epochs`` epochs with the same stopping rule;
    the fraction of a group still training at epoch t is taken from the run (its survival curve), and
    beyond the run's last epoch every member still training at that epoch is assumed to train on
    until ``full_epochs`` (pessimistic: none of them stops later).

    Parameters
    ----------
    active : array, shape (E, T)
        True where member e trained in epoch t + 1 (e.g. a finite ``loss`` entry in its history).
    wall : array, shape (T,)
        Cumulative wall time (seconds) at the end of each epoch, as recorded by the trainer.
    groups : sequence of index sequences
        Members of each group (e.g. ``range(r * n, (r + 1) * n)`` for regulariser r).
    full_members, full_epochs : int
        Runs per group and maximum epochs of the full protocol.

    Returns
    -------
    dict
        ``a_s``, ``b_s`` (the fitted model), ``hours_per_group`` (each group alone), ``hours_all``
        (all groups in one ensemble, as the experiment runs them), ``hours_no_stopping`` (all groups,
        every run training all ``full_epochs``), ``run_epochs`` and ``still_training_fraction`` (per
        group, at the run's last epoch: the part of the projection that is extrapolated).
    """
    act = np.asarray(active, dtype=bool)
    w = np.asarray(wall, dtype=float).reshape(-1)
    if act.ndim != 2 or act.shape[1] != w.size:
        raise ValueError(f"active must be (E, T) with T = len(wall) = {w.size}, got shape {act.shape}")
    if full_members < 1 or full_epochs < 1:
        raise ValueError(f"full_members and full_epochs must be >= 1, got {full_members}, {full_epochs}")
    T = w.size
    dt = np.diff(np.concatenate([[0.0], w]))
    n = act.sum(0).astype(float)
    keep = n > 0
    if keep.sum() < 2 or np.ptp(n[keep]) == 0:
        # No spread in n: the epoch cost is all per-member (a = 0).
        a, b = 0.0, float(dt[keep].sum() / max(n[keep].sum(), 1.0))
    else:
        from scipy.stats import linregress

        fit = linregress(n[keep], dt[keep])
        a, b = fit.intercept, fit.slope
        a, b = float(max(a, 0.0)), float(max(b, 0.0))
    survival, tail = [], []
    for g in groups:
        idx = np.asarray(list(g), dtype=int)
        if idx.size == 0:
            raise ValueError("groups must not be empty")
        s = act[idx].mean(0)  # (T,)
        if full_epochs > T:
            s = np.concatenate([s, np.full(full_epochs - T, s[-1] if T else 1.0)])
        survival.append(s[:full_epochs])
        tail.append(float(s[min(T, full_epochs) - 1]) if T else 1.0)

    def hours(curves) -> float:
        n_full = full_members * np.sum(curves, axis=0)
        return float(np.sum(np.where(n_full > 0, a + b * n_full, 0.0)) / 3600)

    return {
        "a_s": a,
        "b_s": b,
        "run_epochs": T,
        "full_members": full_members,
        "full_epochs": full_epochs,
        "hours_per_group": [hours([s]) for s in survival],
        "hours_all": hours(survival),
        "hours_no_stopping": full_epochs * (a + b * full_members * len(survival)) / 3600,
        "still_training_fraction": tail,
    }

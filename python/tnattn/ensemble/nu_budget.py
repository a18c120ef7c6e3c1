"""The critical exponent nu of an ensemble with its total uncertainty.

:func:`nu_error_budget` measures ``nu`` of ``<E_test>(tau) ~ tau^nu``, ``tau = t_eps - t``, by the
paper's procedure (Žunkovič & Ilievski, arXiv:2210.15435: the critical exponent of Sec. 3, measured
in its Scenario A experiments on runs aligned at their ``t_eps`` and averaged) and attaches three
errors:

``stat``
    Statistical: the bootstrap standard error over runs (:func:`scipy.stats.bootstrap` through
    :func:`tnattn.metrics.fit_critical_exponent`; with the interpolated ``t*`` the crossings are
    estimated once and held fixed in the resamples).
``window``
    Systematic, fit window: half the spread (max - min) / 2 of nu over a stated family of windows
    (:data:`WINDOW_FAMILY` by default). The paper does not publish its window, and the asymptotic
    law holds only near ``t_eps``, so any single window is a choice.
``resolution``
    Systematic, time resolution: ``t_eps`` is known only to the record (one epoch). The true zero
    crossing ``t*`` lies between the last nonzero record and ``t_eps``, and fitting against the
    recorded ``t_eps`` overstates every ``tau`` by up to one step, which biases nu upwards for
    windows that start near one step. The error is the largest change of nu when the recorded
    ``t_eps`` is replaced by either sub-step estimate of :data:`T_EPS_ESTIMATES`.

``total = sqrt(stat^2 + window^2 + resolution^2)`` (independent parts added in quadrature).

Sub-step estimates of ``t*`` (:func:`subepoch_t_eps`):

* ``"recorded"`` -- the recorded ``t_eps`` (the paper's procedure; default for the central value);
* ``"midpoint"`` -- halfway between the last nonzero record and ``t_eps``;
* ``"interpolated"`` -- if a run's error follows ``E = a (t* - t)^nu`` near ``t*``, then
  ``E^(1/nu)`` is linear in ``t``; the line through the last two nonzero records, extrapolated
  to zero, gives ``t*`` (clipped to the last step). ``nu`` itself comes from the fit, so the
  estimate and the fit are iterated to a fixed point (starting from the midpoint fit).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from tnattn.ensemble.stats import member_records
from tnattn.metrics import fit_critical_exponent

__all__ = ["WINDOW_FAMILY", "T_EPS_ESTIMATES", "subepoch_t_eps", "nu_error_budget", "format_budget"]

#: Fit windows (tau_lo, tau_hi) in record steps (epochs) for the window systematic: lower ends
#: 1, 2, 3 steps before t_eps and upper ends 5, 10, 20 steps, every combination with
#: tau_hi >= 2 tau_lo (at least a factor 2 of tau for a slope).
WINDOW_FAMILY = tuple((lo, hi) for lo in (1.0, 2.0, 3.0) for hi in (5.0, 10.0, 20.0) if hi >= 2 * lo)

#: Estimates of the zero crossing of the test error (see the module docstring).
T_EPS_ESTIMATES = ("recorded", "midpoint", "interpolated")


def _runs(test_error: np.ndarray, t_eps: np.ndarray) -> list:
    """(epochs, values, t_eps) of every member with finite t_eps and >= 2 records up to it."""
    runs = []
    for e in np.nonzero(np.isfinite(t_eps) & (t_eps >= 0))[0]:
        ep, v = member_records(test_error, int(e), until=t_eps[e])
        if ep.size >= 2 and ep[-1] == t_eps[e]:
            runs.append((ep, v, float(t_eps[e])))
    return runs


def subepoch_t_eps(runs: Sequence[tuple], estimate: str, nu: float = 1.0) -> np.ndarray:
    """Sub-step estimate of each run's zero crossing ``t*``.

    Parameters
    ----------
    runs : sequence of (epochs, values, t_eps)
        Each run's increasing record epochs (K,), test errors (K,) (the last at ``t_eps``, zero)
        and recorded ``t_eps``.
    estimate : {"recorded", "midpoint", "interpolated"}
        See the module docstring.
    nu : float
        Exponent used by ``"interpolated"`` (> 0).

    Returns
    -------
    ndarray, shape (R,)
        ``t*`` per run, in ``(previous record, t_eps]``.

    Raises
    ------
    ValueError
        For an unknown ``estimate`` or ``nu <= 0``.
    """
    if estimate not in T_EPS_ESTIMATES:
        raise ValueError(f"estimate must be one of {T_EPS_ESTIMATES}, got {estimate!r}")
    if not nu > 0:
        raise ValueError(f"nu must be > 0, got {nu}")
    out = np.empty(len(runs))
    for k, (ep, v, te) in enumerate(runs):
        prev = ep[-2]
        if estimate == "recorded":
            out[k] = te
            continue
        mid = 0.5 * (prev + te)
        if estimate == "midpoint" or ep.size < 3 or not (v[-2] > 0 and v[-3] > 0):
            out[k] = mid
            continue
        z1, z2 = v[-3] ** (1.0 / nu), v[-2] ** (1.0 / nu)  # at ep[-3] < ep[-2]
        if not z1 > z2:  # error not falling: no line to extrapolate
            out[k] = mid
            continue
        t_star = ep[-2] + z2 * (ep[-2] - ep[-3]) / (z1 - z2)
        out[k] = min(max(t_star, prev + 1e-9 * (te - prev)), te)
    return out


def _fit(runs, t_star, window, n_boot, seed) -> Optional[Any]:
    """fit_critical_exponent on the runs aligned at t_star; None when the window has no data."""
    T = max(r[0].size for r in runs)
    times = np.full((len(runs), T), np.nan)
    errs = np.full((len(runs), T), np.nan)
    for k, (ep, v, _) in enumerate(runs):
        times[k, : ep.size] = ep
        errs[k, : ep.size] = v
        # Records after the last one stay nan (unmeasured) so rows of different length fit in
        # one array; times must increase, so pad them past the end.
        times[k, ep.size :] = ep[-1] + np.arange(1, T - ep.size + 1)
    try:
        return fit_critical_exponent(errs, times, t_star, window=window, n_boot=n_boot, seed=seed)
    except ValueError:
        return None


def _nu_at(runs, estimate, window, n_boot, seed, nu_start=1.0, iters=20, tol=1e-4):
    """(fit, t_star) for one estimate and window; the interpolated estimate is iterated."""
    if estimate != "interpolated":
        t_star = subepoch_t_eps(runs, estimate)
        return _fit(runs, t_star, window, n_boot, seed), t_star
    first = _fit(runs, subepoch_t_eps(runs, "midpoint"), window, 0, seed)
    nu = first.nu if first is not None and first.nu > 0 else nu_start
    fit = t_star = None
    for _ in range(iters):
        t_star = subepoch_t_eps(runs, "interpolated", nu)
        fit = _fit(runs, t_star, window, 0, seed)
        if fit is None or not fit.nu > 0:
            break
        done = abs(fit.nu - nu) < tol
        nu = fit.nu
        if done:
            break
    if fit is not None and n_boot:
        fit = _fit(runs, t_star, window, n_boot, seed)
    return fit, t_star


def nu_error_budget(
    test_error: Any,
    t_eps: Any,
    *,
    window: Sequence[float] = (1.0, 10.0),
    windows: Sequence[Sequence[float]] = WINDOW_FAMILY,
    t_eps_estimate: str = "recorded",
    max_error: float = 0.1,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """nu of the aligned ensemble-averaged test error with its statistical and systematic errors.

    Every member with a finite ``t_eps`` and at least two records up to it is aligned at its
    ``t_eps`` estimate and contributes to the average wherever its records reach
    (:func:`tnattn.metrics.fit_critical_exponent`). See the module docstring for the three
    error parts.

    Parameters
    ----------
    test_error : array-like, shape (E, T)
        Test error per member and epoch (row t = epoch t + 1; nan where not measured).
    t_eps : array-like, shape (E,)
        Recorded first epoch with zero test error (nan or < 0: never).
    window : (float, float)
        Central fit window in epochs before ``t_eps`` (our choice; the paper's is unpublished).
    windows : sequence of (float, float)
        The family for the window systematic (the central window is always added).
    t_eps_estimate : {"recorded", "midpoint", "interpolated"}
        Zero crossing used for the central value; "recorded" is the paper's procedure.
    max_error : float
        Threshold for ``jump_fraction``.
    n_boot : int
        Bootstrap resamples for the statistical error.
    seed : int

    Returns
    -------
    dict
        ``nu``, ``stat``, ``window_syst``, ``resolution_syst``, ``total``, ``nu_ci`` (bootstrap
        95 % interval), ``by_estimate`` ({estimate: nu} in the central window), ``by_window``
        (list of {window, nu, stat (bootstrap), n_points} under ``t_eps_estimate``), ``n_runs``,
        ``jump_fraction`` (runs whose last record before ``t_eps`` has error > ``max_error``:
        they fall to zero within one step), ``window``, ``t_eps_estimate``, ``tau`` and
        ``mean_error`` of the central fit; or ``nu = nan`` and ``error`` when no fit is possible.

    Raises
    ------
    ValueError
        For bad shapes, a bad window or an unknown estimate.
    """
    values = np.asarray(test_error, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"test_error must have shape (E, T), got {values.shape}")
    te = np.asarray(t_eps, dtype=float).reshape(-1)
    if te.shape[0] != values.shape[0]:
        raise ValueError(f"t_eps must have one entry per member ({values.shape[0]}), got {te.shape[0]}")
    if t_eps_estimate not in T_EPS_ESTIMATES:
        raise ValueError(f"t_eps_estimate must be one of {T_EPS_ESTIMATES}, got {t_eps_estimate!r}")
    family = [tuple(float(x) for x in w) for w in windows]
    central = (float(window[0]), float(window[1]))
    for w in family + [central]:
        if len(w) != 2 or not 0 < w[0] < w[1]:
            raise ValueError(f"windows must be (tau_lo, tau_hi) with 0 < tau_lo < tau_hi, got {w}")
    if central not in family:
        family.append(central)
    runs = _runs(values, te)
    nan = {"nu": math.nan, "stat": math.nan, "window_syst": math.nan, "resolution_syst": math.nan,
           "total": math.nan, "n_runs": len(runs)}  # fmt: skip
    if not runs:
        return nan | {"error": "no member reached zero test error with two records"}
    jump = float(np.mean([v[-2] > max_error for _, v, _ in runs]))
    fit, _ = _nu_at(runs, t_eps_estimate, central, n_boot, seed)
    if fit is None:
        return nan | {"error": f"no fit in the window {central}", "jump_fraction": jump}
    by_estimate = {}
    for est in T_EPS_ESTIMATES:
        f = fit if est == t_eps_estimate else _nu_at(runs, est, central, 0, seed)[0]
        by_estimate[est] = f.nu if f is not None else math.nan
    by_window = []
    for w in family:
        # Every window gets its own bootstrap, so the figure's error bars compare like with like.
        f = fit if w == central else _nu_at(runs, t_eps_estimate, w, n_boot, seed)[0]
        by_window.append({"window": list(w), "nu": f.nu if f is not None else math.nan,
                          "stat": f.nu_err if f is not None else math.nan,
                          "n_points": int(np.sum((f.tau >= f.window[0]) & (f.tau <= f.window[1]))) if f else 0})  # fmt: skip
    nus_w = np.array([b["nu"] for b in by_window])
    nus_w = nus_w[np.isfinite(nus_w)]
    window_syst = float(0.5 * np.ptp(nus_w)) if nus_w.size else math.nan
    others = [abs(v - fit.nu) for k, v in by_estimate.items() if k != t_eps_estimate and np.isfinite(v)]
    resolution_syst = float(max(others)) if others else math.nan
    parts = [fit.nu_err, window_syst, resolution_syst]
    total = float(math.sqrt(sum(p * p for p in parts))) if all(np.isfinite(parts)) else math.nan
    return {
        "nu": fit.nu,
        "stat": fit.nu_err,
        "window_syst": window_syst,
        "resolution_syst": resolution_syst,
        "total": total,
        "nu_ci": list(fit.nu_ci),
        "by_estimate": by_estimate,
        "by_window": by_window,
        "n_runs": fit.n_runs,
        "jump_fraction": jump,
        "window": list(central),
        "t_eps_estimate": t_eps_estimate,
        "tau": fit.tau.tolist(),
        "mean_error": fit.mean_error.tolist(),
    }


def format_budget(rows: Sequence[dict]) -> str:
    """Markdown table: one row per dict with ``label`` and the keys of :func:`nu_error_budget`."""
    lines = ["| | nu | stat | window syst | resolution syst | total | runs | falls from >10 % in one step |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if not np.isfinite(r.get("nu", math.nan)):
            lines.append(f"| {r['label']} | n/a ({r.get('error', '')}) | | | | | {r.get('n_runs', 0)} | |")
            continue
        lines.append(
            f"| {r['label']} | {r['nu']:.2f} | {r['stat']:.2f} | {r['window_syst']:.2f} | "
            f"{r['resolution_syst']:.2f} | {r['total']:.2f} | {r['n_runs']} | {r['jump_fraction']:.0%} |"
        )
    return "\n".join(lines)

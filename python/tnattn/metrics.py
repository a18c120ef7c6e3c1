"""Measurements on feature points and training histories (arXiv:2210.15435: Sec. 3 and the TN-attention experiments).

Every function here takes plain arrays (numpy arrays, torch tensors or nested lists) and returns
numpy values, so the metrics serve any model, not only TN attention:

* :func:`effective_dimension` -- PCA entropy dimension ``D_eff = exp(-sum s_k log s_k)``;
* :func:`zero_times` / :func:`grokking_times` -- ``t_train``, ``t_eps`` and ``t_G = t_eps - t_train``
  from error histories, under a named convention (``GROKKING_DEFINITIONS``; the paper's
  ``"first_zero"`` by default);
* :func:`detect_loss_spikes` -- onsets of sudden loss increases (rolling median + MAD rule);
* :func:`fit_power_law` / :func:`fit_critical_exponent` -- the critical exponent ``nu`` of
  ``E_test ~ (t_eps - t)^nu`` from many runs aligned at their ``t_eps`` (statistical error only;
  :mod:`tnattn.ensemble.nu_budget` adds the systematic part);
* :func:`boundary_divergence_xi` / :func:`xi_star` -- the boundary-divergence exponent ``xi`` by the
  histogram method, at each edge of the support (``XI_METHODS``);
* :func:`class_separation` -- the class separation ``eps`` (``EPS_METHODS``).

Shapes: R runs (initialisations), T recorded times, P points, k feature dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "effective_dimension",
    "binomial_stderr",
    "GROKKING_DEFINITIONS",
    "check_definition",
    "GrokkingTimes",
    "zero_times",
    "grokking_times",
    "detect_loss_spikes",
    "PowerLawFit",
    "fit_power_law",
    "CriticalExponentFit",
    "fit_critical_exponent",
    "XI_METHODS",
    "XiFit",
    "boundary_divergence_xi",
    "angles",
    "xi_star",
    "EPS_METHODS",
    "class_separation",
]


def _np(x: Any, name: str, dtype=np.float64) -> np.ndarray:
    """Convert a tensor / array / list to a numpy array, raising TypeError naming ``name``."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from exc
    return arr


# ----------------------------------------------------------------------------------------------
# Effective dimension
# ----------------------------------------------------------------------------------------------


def effective_dimension(points: Any) -> Any:
    """PCA-entropy effective dimension of a point cloud.

    The covariance eigenvalues ``lambda_k`` of the centred points give the explained-variance
    ratios ``s_k = lambda_k / sum lambda``; ``D_eff = exp(-sum_k s_k log s_k)`` (terms with
    ``s_k = 0`` contribute 0). An isotropic cloud in ``k`` dimensions has ``D_eff = k``; a cloud
    on a line has ``D_eff = 1``.

    Parameters
    ----------
    points : array-like, shape (P, k) or (E, P, k)
        Feature points (rows). A leading ensemble dimension E gives one value per member.

    Returns
    -------
    float or ndarray of shape (E,)
        ``nan`` for a cloud with zero variance.
    """
    x = _np(points, "points")
    if x.ndim not in (2, 3):
        raise ValueError(f"points must have shape (P, k) or (E, P, k), got {x.shape}")
    if x.shape[-2] < 2:
        raise ValueError(f"points needs at least 2 points, got {x.shape[-2]}")
    xc = x - x.mean(axis=-2, keepdims=True)
    cov = np.einsum("...pi,...pj->...ij", xc, xc) / (x.shape[-2] - 1)
    lam = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    total = lam.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = lam / total
        ent = -np.where(s > 0, s * np.log(np.where(s > 0, s, 1.0)), 0.0).sum(axis=-1)
    out = np.where(total[..., 0] > 0, np.exp(ent), np.nan)
    return float(out) if out.ndim == 0 else out


# ----------------------------------------------------------------------------------------------
# Grokking times
# ----------------------------------------------------------------------------------------------


#: The two grokking-time conventions (:func:`zero_times`). ``"first_zero"`` is the paper's
#: (Žunkovič & Ilievski, arXiv:2210.15435, Sec. 3: t_eps is the time at which the test error
#: reaches zero) and the default everywhere in tnattn.
GROKKING_DEFINITIONS = ("first_zero", "stays_zero")


def binomial_stderr(p: Any, n: int) -> Any:
    """Standard error ``sqrt(max(p (1 - p), 1/n) / n)`` of Monte Carlo fractions ``p`` (float or
    array, same shape out) of ``n`` trials each: the binomial one, with ``p (1 - p)`` floored at
    ``1/n`` so that a fraction of exactly 0 or 1 still carries an error bar of about one trial."""
    return np.sqrt(np.maximum(np.multiply(p, np.subtract(1, p)), 1.0 / n) / n)


def check_definition(definition: str, name: str = "definition") -> str:
    """Return ``definition`` if it names a grokking-time convention, else raise ValueError
    (naming the argument ``name``)."""
    if definition not in GROKKING_DEFINITIONS:
        raise ValueError(f"{name} must be one of {GROKKING_DEFINITIONS}, got {definition!r}")
    return definition


class GrokkingTimes(NamedTuple):
    """Times (or epochs) at which training and test error reach zero.

    Attributes are floats for a single history and arrays of shape (R,) for R histories;
    ``nan`` where the error never reaches zero (``t_grok`` is ``nan`` if either is ``nan``).
    """

    t_train: Any
    t_eps: Any
    t_grok: Any


def zero_times(err: Any, times: Any = None, *, tol: float = 0.0, definition: str = "first_zero") -> Any:
    """Time at which an error history reaches zero, under one of two conventions.

    * ``"first_zero"`` (default, the paper's: arXiv:2210.15435, Sec. 3, where t_eps is the time at
      which the test error reaches zero): the first record with ``err <= tol``;
    * ``"stays_zero"``: the first record from which ``err <= tol`` holds for every later record
      (a loss spike that lifts the error again moves the time to the last entry into zero).
      Within a finite history this cannot see a return to nonzero error after the last record.

    Records that are ``nan`` (not measured) never count as zero, and under ``"stays_zero"`` they
    do not break a zero stretch either (an unmeasured epoch is no evidence of an error).

    Parameters
    ----------
    err : array-like, shape (T,) or (R, T)
    times : array-like, shape (T,) or (R, T), optional
        Default: the record index.
    tol : float
    definition : {"first_zero", "stays_zero"}

    Returns
    -------
    float or ndarray, shape (R,)
        ``nan`` where the error never reaches zero.

    Raises
    ------
    ValueError
        For an unknown ``definition`` or mismatching shapes.
    """
    check_definition(definition)
    e = _np(err, "err")
    if e.ndim not in (1, 2) or e.shape[-1] == 0:
        raise ValueError(f"err must have shape (T,) or (R, T), got {e.shape}")
    t = np.arange(e.shape[-1], dtype=np.float64) if times is None else _np(times, "times")
    if t.shape != e.shape and t.shape != e.shape[-1:]:
        raise ValueError(f"times must have shape {e.shape[-1:]} or {e.shape}, got {t.shape}")
    out = _zero_time(e, t, tol, definition == "stays_zero")
    return float(out) if e.ndim == 1 else out


def _zero_time(err: np.ndarray, times: np.ndarray, tol: float, persistent: bool) -> np.ndarray:
    """First time index from which err <= tol (to the end if persistent), per row; nan if never."""
    measured = ~np.isnan(err)
    ok = measured & (err <= tol)
    T = err.shape[-1]
    if persistent:
        # suffix[r, t]: no measured nonzero error at any s >= t. The first such t with a measured
        # zero is the entry into zero that is never left again (a later spike resets it).
        fine = ok | ~measured
        suffix = np.flip(np.logical_and.accumulate(np.flip(fine, -1), axis=-1), -1)
        hit = suffix & ok
    else:
        hit = ok
    any_hit = hit.any(axis=-1)
    idx = np.argmax(hit, axis=-1)
    t = times[np.minimum(idx, T - 1)] if times.ndim == 1 else np.take_along_axis(
        times, np.minimum(idx, T - 1)[..., None], -1
    )[..., 0]
    return np.where(any_hit, t, np.nan)


def grokking_times(
    train_err: Any,
    test_err: Any,
    times: Any = None,
    *,
    tol: float = 0.0,
    definition: str = "first_zero",
) -> GrokkingTimes:
    """Training time, test (generalisation) time and grokking time from error histories.

    ``t_train`` is the time at which the training error reaches zero (``<= tol``), ``t_eps`` the
    same for the test error, and ``t_grok = t_eps - t_train`` (the grokking time of
    arXiv:2210.15435, Sec. 3). ``definition`` picks the convention of :func:`zero_times`: the
    paper's first zero (default) or the first zero that is never left again.

    Parameters
    ----------
    train_err, test_err : array-like, shape (T,) or (R, T)
        Error (fraction of wrong sites) at each recorded time, for one or R runs (``nan`` where
        not measured).
    times : array-like, shape (T,) or (R, T), optional
        Time (or epoch) of each record; default the record index ``0..T-1``.
    tol : float
        Errors ``<= tol`` count as zero (use 0 for exact zero; a small value guards float noise).
    definition : {"first_zero", "stays_zero"}
        See :func:`zero_times`.

    Returns
    -------
    GrokkingTimes
        ``(t_train, t_eps, t_grok)``, floats for (T,) input, arrays of shape (R,) for (R, T);
        ``nan`` where the error never reaches zero.

    Raises
    ------
    ValueError
        For mismatching shapes or an unknown ``definition``.
    """
    check_definition(definition)
    tr = _np(train_err, "train_err")
    te = _np(test_err, "test_err")
    if tr.shape != te.shape:
        raise ValueError(f"train_err {tr.shape} and test_err {te.shape} must have the same shape")
    if tr.ndim not in (1, 2) or tr.shape[-1] == 0:
        raise ValueError(f"error histories must have shape (T,) or (R, T), got {tr.shape}")
    t_train = np.asarray(zero_times(tr, times, tol=tol, definition=definition))
    t_eps = np.asarray(zero_times(te, times, tol=tol, definition=definition))
    t_grok = t_eps - t_train
    if tr.ndim == 1:
        return GrokkingTimes(float(t_train), float(t_eps), float(t_grok))
    return GrokkingTimes(t_train, t_eps, t_grok)


# ----------------------------------------------------------------------------------------------
# Loss spikes
# ----------------------------------------------------------------------------------------------


def detect_loss_spikes(
    loss: Any,
    *,
    window: int = 20,
    threshold: float = 8.0,
    min_rise: float = 0.5,
    log: bool = True,
    floor: float = 1e-12,
) -> np.ndarray:
    """Indices at which a loss curve jumps up: onsets of loss spikes.

    Criterion (causal, so a trainer can apply it online): with ``z_t = log10(max(loss_t, floor))``
    (or ``z_t = loss_t`` when ``log=False``), the trailing window ``z_{t-window..t-1}`` gives a
    median ``m_t`` and a robust spread ``s_t = 1.4826 * MAD`` (the MAD scaled to a Gaussian
    standard deviation). Step ``t`` is *above* when

        z_t - m_t > max(threshold * s_t, min_rise),

    i.e. both unusually large for the recent noise level and a real rise (``min_rise`` decades of
    loss by default 0.5, a factor ~3.2, so a smooth but noisy descent is never flagged). A spike is a
    maximal run of consecutive above-steps; the returned index is its first step. The first
    ``window`` steps are never flagged (no history yet).

    Parameters
    ----------
    loss : array-like, shape (T,)
        Loss per step/epoch. Non-finite values count as above (a NaN/inf loss is a spike).
    window : int
        Length of the trailing window (>= 3).
    threshold : float
        Multiple of the robust spread a rise must exceed.
    min_rise : float
        Minimum rise above the median, in the units of ``z`` (decades when ``log=True``).
    log : bool
        Detect on log10 of the loss (default; losses span decades during training).
    floor : float
        Lower clip before the logarithm (an exactly zero loss is then 1e-12).

    Returns
    -------
    ndarray of int, shape (S,)
        Onset index of each spike, increasing.
    """
    x = _np(loss, "loss")
    if x.ndim != 1:
        raise ValueError(f"loss must have shape (T,), got {x.shape}")
    if int(window) != window or window < 3:
        raise ValueError(f"window must be an integer >= 3, got {window}")
    if threshold <= 0 or min_rise < 0:
        raise ValueError("threshold must be > 0 and min_rise >= 0")
    window = int(window)
    T = x.shape[0]
    if T <= window:
        return np.zeros(0, dtype=np.int64)
    finite = np.isfinite(x)
    z = np.log10(np.maximum(np.where(finite, x, 1.0), floor)) if log else np.where(finite, x, 0.0)
    # Trailing windows as a strided view: row j covers z[j : j+window] and judges z[j+window].
    win = np.lib.stride_tricks.sliding_window_view(z[:-1], window)
    med = np.median(win, axis=1)
    mad = 1.4826 * np.median(np.abs(win - med[:, None]), axis=1)
    cur = z[window:]
    above = (cur - med > np.maximum(threshold * mad, min_rise)) | ~finite[window:]
    # A non-finite value inside the window poisons median/MAD only via the stand-in 0/1 values,
    # which is harmless: the step after a NaN is judged against mostly finite history.
    onset = above & ~np.concatenate([[False], above[:-1]])
    return np.nonzero(onset)[0].astype(np.int64) + window


# ----------------------------------------------------------------------------------------------
# Power laws and the critical exponent nu
# ----------------------------------------------------------------------------------------------


@dataclass
class PowerLawFit:
    """Least-squares fit of ``log y = exponent * log x + log prefactor``.

    Attributes
    ----------
    exponent, prefactor : float
    exponent_err : float
        Standard error of the slope from the regression residuals (``nan`` for 2 points).
    n_points : int
    """

    exponent: float
    prefactor: float
    exponent_err: float
    n_points: int


def fit_power_law(x: Any, y: Any) -> PowerLawFit:
    """Fit ``y = prefactor * x^exponent`` by linear least squares in log-log space.

    The regression is :func:`scipy.stats.linregress` on ``(log x, log y)``.

    Parameters
    ----------
    x, y : array-like, shape (P,)
        Positive values; non-positive or non-finite pairs are dropped.

    Returns
    -------
    PowerLawFit
        ``exponent_err`` is linregress's slope standard error (``nan`` for 2 points).

    Raises
    ------
    ValueError
        If fewer than 2 usable points remain.
    """
    from scipy.stats import linregress

    xa, ya = _np(x, "x").ravel(), _np(y, "y").ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.shape} and {ya.shape}")
    keep = (xa > 0) & (ya > 0) & np.isfinite(xa) & np.isfinite(ya)
    lx, ly = np.log(xa[keep]), np.log(ya[keep])
    n = lx.size
    if n < 2 or np.ptp(lx) == 0:
        raise ValueError(f"need at least 2 distinct positive points for a power-law fit, got {n}")
    res = linregress(lx, ly)
    err = float(res.stderr) if n > 2 else float("nan")
    return PowerLawFit(float(res.slope), float(math.exp(res.intercept)), err, int(n))


@dataclass
class CriticalExponentFit:
    """Result of :func:`fit_critical_exponent`.

    Attributes
    ----------
    nu : float
        Fitted exponent of ``<E>(tau) ~ tau^nu``, ``tau = t_eps - t``.
    nu_err : float
        Statistical error: the bootstrap standard error of ``nu`` over resampled runs; for a
        single run (no bootstrap) the regression standard error. Window choice and time
        resolution are *not* included (see :func:`tnattn.ensemble.nu_budget.nu_error_budget`).
    prefactor : float
    window : tuple of float
        The ``(tau_lo, tau_hi)`` of the first and last grid point actually fitted.
    tau : ndarray, shape (K,)
        Common grid of ``tau`` values.
    mean_error : ndarray, shape (K,)
        Test error at ``t_eps - tau`` averaged over the runs that have data there (``nan`` where
        none has).
    count : ndarray of int, shape (K,)
        Runs contributing at each grid point.
    n_runs : int
        Runs that reached zero test error and entered the average.
    nu_ci : tuple of float
        95 % percentile bootstrap interval (``nan`` without a bootstrap).
    fit_err : float
        Standard error of the slope from the regression residuals: how far the aligned mean is
        from a pure power law inside the window (a misfit the bootstrap over runs does not see).
    """

    nu: float
    nu_err: float
    prefactor: float
    window: tuple
    tau: np.ndarray
    mean_error: np.ndarray
    count: np.ndarray
    n_runs: int
    nu_ci: tuple = (float("nan"), float("nan"))
    fit_err: float = float("nan")


def _bootstrap(n: int, statistic, n_boot: int, seed: int) -> tuple:
    """Percentile bootstrap of ``statistic(indices)`` over ``n`` units by :func:`scipy.stats.bootstrap`.

    Returns ``(standard_error, (lo, hi))`` over the finite resampled values; resamples where the
    statistic is undefined (``nan``) are left out of the standard error, which scipy's own
    ``standard_error`` would turn into ``nan``.
    """
    from scipy.stats import bootstrap

    def stat(idx):
        return statistic(np.asarray(idx, dtype=np.int64))

    res = bootstrap((np.arange(n),), stat, vectorized=False, n_resamples=n_boot, method="percentile",
                    random_state=np.random.default_rng(seed))  # fmt: skip
    dist = getattr(res, "bootstrap_distribution", None)  # scipy >= 1.10
    if dist is None:
        se = float(res.standard_error)
    else:
        dist = np.asarray(dist, dtype=float)
        dist = dist[np.isfinite(dist)]
        se = float(np.std(dist, ddof=1)) if dist.size > 1 else float("nan")
    ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    return se, ci


def _interp_power(at: np.ndarray, tr: np.ndarray, er: np.ndarray, ter: float) -> np.ndarray:
    """Error of one run at times ``at`` from its records ``(tr, er)``, aligned at ``ter``.

    Between two records with positive error (and ``tau = ter - t > 0`` at both) the error is
    interpolated linearly in ``(log tau, log E)``, which is exact for the power law being fitted;
    a linear interpolation of a convex power law lies above it between records and bends the
    fitted slope (by about -0.07 at ``nu = 2`` in a window starting one record step before
    ``t_eps``). Elsewhere (a bracketing zero, or past ``ter``) the interpolation is linear.
    """
    n = tr.size
    if n == 1:
        return np.full(at.shape, er[0])
    j = np.clip(np.searchsorted(tr, at, side="right"), 1, n - 1)
    t0, t1, e0, e1 = tr[j - 1], tr[j], er[j - 1], er[j]
    lin = e0 + (at - t0) / (t1 - t0) * (e1 - e0)
    x0, x1, xa = ter - t0, ter - t1, ter - at
    geo_ok = (e0 > 0) & (e1 > 0) & (x1 > 0) & (xa > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (np.log(np.where(geo_ok, xa, 1.0)) - np.log(np.where(geo_ok, x0, 1.0))) / (
            np.log(np.where(geo_ok, x1, 2.0)) - np.log(np.where(geo_ok, x0, 1.0))
        )
        geo = np.exp(np.log(np.where(geo_ok, e0, 1.0)) + w * (np.log(np.where(geo_ok, e1, 1.0)) - np.log(np.where(geo_ok, e0, 1.0))))
    return np.where(geo_ok, geo, lin)


def fit_critical_exponent(
    test_err: Any,
    times: Any,
    t_eps: Any = None,
    *,
    window: Optional[Sequence[float]] = None,
    max_error: float = 0.1,
    n_tau: int = 40,
    n_boot: int = 200,
    seed: int = 0,
    definition: str = "first_zero",
) -> CriticalExponentFit:
    """Critical exponent ``nu`` of ``E_test ~ (t_eps - t)^nu`` from many runs.

    The paper's procedure (arXiv:2210.15435: the critical exponent of the test error near
    ``t_eps`` of Sec. 3, measured on TN attention in Table 1 and the Scenario A results):
    every run is aligned at its own ``t_eps``; its measured error is interpolated onto a common
    log-spaced grid of ``tau = t_eps - t`` (log-log between positive records, exact for a power
    law; linear next to a zero); the errors are averaged over runs, and
    ``log <E>`` is fitted against ``log tau`` by least squares inside a window.

    A run contributes to the average only at the ``tau`` its records cover (``t_eps - tau`` not
    before its first finite record); at every grid point the mean is over the runs that have data
    there (``count``). Grid points without data are not fitted.

    Window: with ``window=(tau_lo, tau_hi)`` exactly that. By default ``tau_lo`` is ten times the
    largest time step just before any ``t_eps`` (a recorded ``t_eps`` is late by up to one step,
    which biases ``log tau`` by at most ~10% of a step there) and ``tau_hi`` the smallest ``tau``
    at which ``<E>`` exceeds ``max_error`` (the critical law is an asymptotic law near ``t_eps``;
    default 0.1), capped by the smallest aligned history length.

    Error bar (statistical only): :func:`scipy.stats.bootstrap` resamples the runs ``n_boot``
    times and refits on the same grid points; ``nu_err`` is the bootstrap standard error.

    Parameters
    ----------
    test_err : array-like, shape (R, T)
        Test error histories (``nan`` where not measured).
    times : array-like, shape (T,) or (R, T)
        Increasing record times.
    t_eps : array-like, shape (R,), optional
        Zero-error times (may lie between records, e.g. a sub-epoch estimate); computed with
        :func:`zero_times` under ``definition`` when omitted. Runs with ``nan`` are skipped.
    window : (float, float), optional
    max_error : float
    n_tau : int
        Points of the common ``tau`` grid.
    n_boot : int
        Bootstrap resamples (0 disables the bootstrap).
    seed : int
        Seed of the bootstrap generator.
    definition : {"first_zero", "stays_zero"}
        Grokking-time convention when ``t_eps`` is omitted.

    Returns
    -------
    CriticalExponentFit

    Raises
    ------
    ValueError
        For bad shapes or window, when no run reaches zero after its first record, or when fewer
        than 3 grid points with data lie in the window.
    """
    E = _np(test_err, "test_err")
    if E.ndim == 1:
        E = E[None]
    if E.ndim != 2:
        raise ValueError(f"test_err must have shape (R, T), got {E.shape}")
    t = _np(times, "times")
    if t.ndim == 1:
        if t.shape[0] != E.shape[1]:
            raise ValueError(f"times must have length {E.shape[1]}, got {t.shape[0]}")
        t = np.broadcast_to(t, E.shape)
    elif t.shape != E.shape:
        raise ValueError(f"times must have shape (T,) or {E.shape}, got {t.shape}")
    if int(n_tau) != n_tau or n_tau < 3:
        raise ValueError(f"n_tau must be an integer >= 3, got {n_tau}")
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot}")
    if t_eps is None:
        t_eps = zero_times(E, t, definition=definition)
    te = _np(t_eps, "t_eps").reshape(-1)
    if te.shape[0] != E.shape[0]:
        raise ValueError(f"t_eps must have length {E.shape[0]}, got {te.shape[0]}")
    # Each run: its measured records only.
    recs = []
    for r in np.nonzero(np.isfinite(te))[0]:
        ok = np.isfinite(E[r]) & np.isfinite(t[r])
        tr, er = t[r][ok], E[r][ok]
        if tr.size and te[r] > tr[0]:  # need history before t_eps
            recs.append((tr, er, te[r]))
    if not recs:
        raise ValueError("no run reaches zero test error after its first record")

    # Default window from the time resolution around t_eps and the run lengths.
    steps = []
    for tr, _, ter in recs:
        j = int(np.searchsorted(tr, ter))
        j = min(max(j, 1), tr.size - 1) if tr.size > 1 else 0
        steps.append(tr[j] - tr[j - 1] if tr.size > 1 else 0.0)
    spans = [ter - tr[0] for tr, _, ter in recs]
    tau_min, tau_max = 10.0 * max(steps), min(spans)
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if not 0 < lo < hi:
            raise ValueError(f"window must satisfy 0 < lo < hi, got {window}")
        tau_min, tau_max = lo, hi
    if not tau_min < tau_max:
        raise ValueError(
            f"time resolution {tau_min:g} is not finer than the aligned history {tau_max:g}; "
            "record more often or longer"
        )
    tau = np.geomspace(tau_min, tau_max, int(n_tau))
    aligned = np.full((len(recs), tau.size), np.nan)  # (R', K), nan where a run has no data
    for k, (tr, er, ter) in enumerate(recs):
        at = ter - tau
        has = at >= tr[0]
        aligned[k, has] = _interp_power(at[has], tr, er, ter)
    count = np.sum(np.isfinite(aligned), axis=0)

    def average(rows):
        sub = aligned[rows]
        c = np.sum(np.isfinite(sub), axis=0)
        return np.where(c > 0, np.nansum(sub, axis=0) / np.maximum(c, 1), np.nan)

    all_rows = np.arange(len(recs))
    mean = average(all_rows)
    if window is None:
        over = np.nonzero(mean > max_error)[0]
        k_hi = over[0] if over.size else tau.size
        sel = np.arange(0, max(k_hi, 0))
    else:
        sel = np.arange(tau.size)
    sel = sel[(count[sel] > 0) & (mean[sel] > 0)]
    if sel.size < 3:
        raise ValueError(
            "fewer than 3 grid points with data inside the fit window; raise max_error, pass a "
            "window the runs cover, or record the errors more finely"
        )
    fit = fit_power_law(tau[sel], mean[sel])
    err, ci = fit.exponent_err, (float("nan"), float("nan"))
    if n_boot > 0 and len(recs) > 1:

        def statistic(rows):
            try:
                return fit_power_law(tau[sel], average(rows)[sel]).exponent
            except ValueError:  # a resample without 2 positive points in the window
                return float("nan")

        err, ci = _bootstrap(len(recs), statistic, int(n_boot), seed)
    return CriticalExponentFit(
        nu=fit.exponent,
        nu_err=float(err),
        prefactor=fit.prefactor,
        window=(float(tau[sel[0]]), float(tau[sel[-1]])),
        tau=tau,
        mean_error=mean,
        count=count,
        n_runs=len(recs),
        nu_ci=ci,
        fit_err=fit.exponent_err,
    )


# ----------------------------------------------------------------------------------------------
# Boundary divergence xi (histogram method)
# ----------------------------------------------------------------------------------------------


#: Estimators of the boundary-divergence exponent (:func:`boundary_divergence_xi`).
XI_METHODS = ("edges", "max_density")


@dataclass
class XiFit:
    """Result of :func:`boundary_divergence_xi`.

    Attributes
    ----------
    xi : float
        The estimate under ``method``: ``max(xi_lower, xi_upper)`` for ``"edges"``, the slope of
        the largest density anywhere for ``"max_density"``.
    xi_err : float
        Regression standard error of that slope.
    xi_lower, xi_upper : float
        Slopes of ``log`` (density of the first / last bin) against ``log n_bins``: the exponent
        at the lower and at the upper edge of the support.
    xi_lower_err, xi_upper_err : float
    n_bins : ndarray of int, shape (K,)
    max_density : ndarray, shape (K,)
        Largest histogram density (per unit of the normalised domain) at each bin count.
    edge_density : ndarray, shape (K, 2)
        Density of the first and of the last bin at each bin count.
    method : str
    """

    xi: float
    xi_err: float
    n_bins: np.ndarray
    max_density: np.ndarray
    xi_lower: float = float("nan")
    xi_upper: float = float("nan")
    xi_lower_err: float = float("nan")
    xi_upper_err: float = float("nan")
    edge_density: Optional[np.ndarray] = None
    method: str = "edges"


def angles(vectors: Any) -> np.ndarray:
    """Angles ``atan2(v_1, v_0)`` of 2-vectors (D = 2 contexts), shape (..., 2) -> (...)."""
    v = _np(vectors, "vectors")
    if v.shape[-1] != 2:
        raise ValueError(f"vectors must have last dimension 2, got {v.shape}")
    return np.arctan2(v[..., 1], v[..., 0])


def _unwrap_circular(theta: np.ndarray) -> np.ndarray:
    """Rotate angles so that the largest empty arc of the circle sits at the cut +-pi.

    The support of a context distribution may straddle the cut; after this rotation the support is
    one interval ``[min, max]`` without a spurious gap.
    """
    s = np.sort(np.mod(theta, 2 * np.pi))
    gaps = np.diff(np.concatenate([s, [s[0] + 2 * np.pi]]))
    k = int(np.argmax(gaps))
    start = s[(k + 1) % s.size]  # first angle after the largest gap
    return np.mod(theta - start, 2 * np.pi)


def boundary_divergence_xi(
    samples: Any,
    *,
    n_bins: Sequence[int] = (8, 16, 32, 64, 128, 256),
    circular: bool = False,
    method: str = "edges",
) -> XiFit:
    """Boundary-divergence exponent ``xi`` by the histogram method.

    If the density of a 1D sample diverges like ``delta^{-xi}`` at an edge of its support
    (``delta`` the distance to the edge; arXiv:2210.15435, Sec. 3, the D-ball model with a
    boundary divergence, and Table 1), the fraction of points in the edge bin of width ``1/n``
    scales like ``n^{xi-1}`` and the edge bin's *density* like ``n^{xi}``. The samples are rescaled
    to their range ``[min, max]`` and histogrammed with each bin count; then

    * ``method="edges"`` (default): ``log`` of the first bin's density and, separately, of the
      last bin's density are fitted against ``log n_bins``, giving ``xi_lower`` and ``xi_upper``;
      ``xi`` is the larger. Interior structure (a spike or a cusp inside the support) does not
      enter: a divergence that is not at the edge is no boundary divergence.
    * ``method="max_density"``: the paper's literal description (the maximum density grows like
      ``n_bins^xi``): ``log`` of the largest density anywhere is fitted. An interior
      concentration of points then reads as a divergence (e.g. a point mass inside a uniform
      sample gives ``xi`` near 1 for large masses).

    A bounded density gives ``xi ~ 0``. Finite samples saturate once a bin holds a handful of
    points, so keep ``max(n_bins)`` well below the sample size (the default tops out at 256 bins;
    use >= 10^4 samples).

    Parameters
    ----------
    samples : array-like, shape (P,) or (P, 2)
        Scalars, or 2-vectors (D = 2 contexts) that are converted to angles with :func:`angles`.
    n_bins : sequence of int
        Bin counts (at least 2 distinct values).
    circular : bool
        Treat the values as angles on the circle: rotate so the largest empty arc is at the cut
        before taking the range (implied for 2-vector input).
    method : {"edges", "max_density"}

    Returns
    -------
    XiFit
        Both edges are always reported (``xi_lower``, ``xi_upper``), whatever ``method``.

    Raises
    ------
    ValueError
        For bad shapes, fewer than 10 finite samples, constant samples, bad ``n_bins`` or an
        unknown ``method``.
    """
    if method not in XI_METHODS:
        raise ValueError(f"method must be one of {XI_METHODS}, got {method!r}")
    x = _np(samples, "samples")
    if x.ndim == 2 and x.shape[1] == 2:
        x, circular = angles(x), True
    if x.ndim != 1:
        raise ValueError(f"samples must have shape (P,) or (P, 2), got {x.shape}")
    x = x[np.isfinite(x)]
    if x.size < 10:
        raise ValueError(f"samples needs at least 10 finite values, got {x.size}")
    bins = np.asarray(sorted(set(int(b) for b in n_bins)), dtype=np.int64)
    if bins.size < 2 or bins[0] < 1:
        raise ValueError(f"n_bins needs at least 2 distinct positive values, got {n_bins}")
    if circular:
        x = _unwrap_circular(x)
    lo, hi = x.min(), x.max()
    if hi <= lo:
        raise ValueError("samples are all equal; xi is undefined")
    u = (x - lo) / (hi - lo)
    dens = np.empty(bins.size)
    edge = np.empty((bins.size, 2))
    for j, n in enumerate(bins):
        counts = np.bincount(np.minimum((u * n).astype(np.int64), n - 1), minlength=n)
        scale = n / u.size  # density per unit of the normalised domain
        dens[j] = counts.max() * scale
        edge[j] = counts[0] * scale, counts[-1] * scale
    fb = bins.astype(float)
    low, up = fit_power_law(fb, edge[:, 0]), fit_power_law(fb, edge[:, 1])
    if method == "edges":
        best = low if low.exponent >= up.exponent else up
        xi, xi_err = best.exponent, best.exponent_err
    else:
        fit = fit_power_law(fb, dens)
        xi, xi_err = fit.exponent, fit.exponent_err
    return XiFit(xi, xi_err, bins, dens, low.exponent, up.exponent, low.exponent_err, up.exponent_err, edge, method)


def xi_star(
    left: Any,
    right: Any,
    labels: Any,
    *,
    n_bins: Sequence[int] = (8, 16, 32, 64, 128, 256),
    method: str = "edges",
) -> tuple:
    """``xi* = max over classes of (xi_left + xi_right)`` for D = 2 contexts (arXiv:2210.15435, Table 1).

    Parameters
    ----------
    left, right : array-like, shape (P, 2) or (P,)
        Left and right contexts (or their angles) of P sites.
    labels : array-like, shape (P,)
        Class of each site (any hashable numbers, e.g. 0/1 or -1/+1).
    n_bins : sequence of int
        Passed to :func:`boundary_divergence_xi`.
    method : {"edges", "max_density"}
        Estimator of each side's ``xi`` (:func:`boundary_divergence_xi`).

    Returns
    -------
    (float, dict)
        ``xi*`` and ``{label: (xi_left, xi_right)}`` per class.
    """
    lab = _np(labels, "labels").reshape(-1)
    L, R = _np(left, "left"), _np(right, "right")
    if L.shape[0] != lab.size or R.shape[0] != lab.size:
        raise ValueError("left, right and labels must have the same number of sites")
    per = {}
    for c in np.unique(lab):
        m = lab == c
        xl = boundary_divergence_xi(L[m], n_bins=n_bins, circular=True, method=method).xi
        xr = boundary_divergence_xi(R[m], n_bins=n_bins, circular=True, method=method).xi
        per[float(c)] = (xl, xr)
    best = max(a + b for a, b in per.values())
    return float(best), per


# ----------------------------------------------------------------------------------------------
# Class separation
# ----------------------------------------------------------------------------------------------


#: Estimators of the class separation (:func:`class_separation`).
EPS_METHODS = ("centroid", "gap", "spread")


def _min_distance(neg: np.ndarray, pos: np.ndarray) -> float:
    """Smallest distance between a row of ``neg`` and a row of ``pos``; chunked, so memory stays
    at O(2048 * P) instead of O(P^2)."""
    d2min = np.inf
    pn = (pos**2).sum(1)
    for s in range(0, neg.shape[0], 2048):
        blk = neg[s : s + 2048]
        d2 = (blk**2).sum(1)[:, None] + pn[None, :] - 2.0 * blk @ pos.T
        d2min = min(d2min, float(d2.min()))
    return math.sqrt(max(d2min, 0.0))


def class_separation(points: Any, labels: Any, *, method: str = "centroid") -> float:
    """Class separation ``eps`` of two labelled point clouds.

    The paper (arXiv:2210.15435, Table 1) measures eps as the distance between the closest
    opposite-class feature points in units of the intra-class spread; its exact normalisation is
    not published. Three estimators, each a named option:

    * ``"centroid"`` (default): ``eps = (|c_+ - c_-| / 2) / r`` with class centroids ``c_+-`` and
      ``r`` the mean over the two classes of the class radius ``max_p |p - c|``. Calibrated on the
      D-ball model (arXiv:2210.15435, Sec. 3: two unit balls centred at ``+-eps e_1``), where it
      returns ``eps``;
    * ``"gap"``: ``eps = 1 + d_min / (2 r)`` with ``d_min`` the smallest distance between
      opposite-class points (the gap between two unit balls is ``2 (eps - 1)``): the project's
      "gap units", also calibrated to return ``eps`` on the ball model. Overlapping classes give
      ``eps <= 1`` only through the centroid method; the gap method gives 1;
    * ``"spread"``: ``eps = d_min / s`` with ``s = sqrt(mean over the two classes of the mean
      squared distance to the class centroid)``, the root intra-class variance: the paper's
      wording taken literally. Not calibrated to the ball model (two unit D-balls at gap
      ``2 (eps - 1)`` give ``2 (eps - 1) / sqrt(D / (D + 2))``).

    Parameters
    ----------
    points : array-like, shape (P, k)
    labels : array-like, shape (P,)
        Exactly two distinct values; the larger is the positive class.
    method : {"centroid", "gap", "spread"}

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For bad shapes, not exactly two classes, zero spread or an unknown ``method``.
    """
    if method not in EPS_METHODS:
        raise ValueError(f"method must be one of {EPS_METHODS}, got {method!r}")
    x = _np(points, "points")
    lab = _np(labels, "labels").reshape(-1)
    if x.ndim != 2 or x.shape[0] != lab.size:
        raise ValueError(f"points must have shape (P, k) with P = len(labels), got {x.shape}")
    classes = np.unique(lab)
    if classes.size != 2:
        raise ValueError(f"labels must contain exactly two classes, got {classes.size}")
    neg, pos = x[lab == classes[0]], x[lab == classes[1]]
    c_neg, c_pos = neg.mean(0), pos.mean(0)
    r = 0.5 * (
        np.linalg.norm(neg - c_neg, axis=1).max() + np.linalg.norm(pos - c_pos, axis=1).max()
    )
    if r == 0:
        raise ValueError("classes have zero spread; eps is undefined")
    if method == "centroid":
        return float(0.5 * np.linalg.norm(c_pos - c_neg) / r)
    if method == "gap":
        return float(1.0 + _min_distance(neg, pos) / (2.0 * r))
    var = 0.5 * (((neg - c_neg) ** 2).sum(1).mean() + ((pos - c_pos) ** 2).sum(1).mean())
    return float(_min_distance(neg, pos) / math.sqrt(var))

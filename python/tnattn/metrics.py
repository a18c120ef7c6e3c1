"""Measurements on feature points and training histories (SCIENCE.md section 5).

Every function here takes plain arrays (numpy arrays, torch tensors or nested lists) and returns
numpy values, so the metrics serve any model, not only TN attention:

* :func:`effective_dimension` -- PCA entropy dimension ``D_eff = exp(-sum s_k log s_k)``;
* :func:`grokking_times` -- ``t_train``, ``t_eps`` and ``t_G = t_eps - t_train`` from error histories;
* :func:`detect_loss_spikes` -- onsets of sudden loss increases (rolling median + MAD rule);
* :func:`fit_power_law` / :func:`fit_critical_exponent` -- the critical exponent ``nu`` of
  ``E_test ~ (t_eps - t)^nu`` from many runs aligned at their ``t_eps``;
* :func:`boundary_divergence_xi` / :func:`xi_star` -- the boundary-divergence exponent ``xi`` by the
  histogram method (maximum density ~ ``n_bins^xi``);
* :func:`class_separation` -- the class separation ``eps`` in units of the ball model.

Shapes use the letters of SCIENCE.md: R runs (initialisations), T recorded times, P points, k
feature dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "effective_dimension",
    "GrokkingTimes",
    "grokking_times",
    "detect_loss_spikes",
    "PowerLawFit",
    "fit_power_law",
    "CriticalExponentFit",
    "fit_critical_exponent",
    "XiFit",
    "boundary_divergence_xi",
    "angles",
    "xi_star",
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


class GrokkingTimes(NamedTuple):
    """Times (or epochs) at which training and test error reach zero.

    Attributes are floats for a single history and arrays of shape (R,) for R histories;
    ``nan`` where the error never reaches zero (``t_grok`` is ``nan`` if either is ``nan``).
    """

    t_train: Any
    t_eps: Any
    t_grok: Any


def _zero_time(err: np.ndarray, times: np.ndarray, tol: float, persistent: bool) -> np.ndarray:
    """First time index from which err <= tol (to the end if persistent), per row; nan if never."""
    ok = err <= tol
    T = err.shape[-1]
    if persistent:
        # ok_suffix[r, t]: err <= tol for every s >= t. The first such t is the entry into zero
        # that is never left again (a later spike resets it).
        suffix = np.flip(np.logical_and.accumulate(np.flip(ok, -1), axis=-1), -1)
        hit = suffix
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
    persistent: bool = True,
) -> GrokkingTimes:
    """Training time, test (generalisation) time and grokking time from error histories.

    ``t_train`` is the first recorded time at which the training error is ``<= tol``, ``t_eps`` the
    same for the test error, and ``t_grok = t_eps - t_train`` (SCIENCE.md section 4). With
    ``persistent=True`` (default) a time only counts if the error stays ``<= tol`` for every later
    record, so a loss spike that lifts the error again moves the time to the final entry into zero.

    Parameters
    ----------
    train_err, test_err : array-like, shape (T,) or (R, T)
        Error (fraction of wrong sites) at each recorded time, for one or R runs.
    times : array-like, shape (T,) or (R, T), optional
        Time (or epoch) of each record; default the record index ``0..T-1``.
    tol : float
        Errors ``<= tol`` count as zero (use 0 for exact zero; a small value guards float noise).
    persistent : bool
        See above.

    Returns
    -------
    GrokkingTimes
        ``(t_train, t_eps, t_grok)``, floats for (T,) input, arrays of shape (R,) for (R, T);
        ``nan`` where the error never reaches zero.
    """
    tr = _np(train_err, "train_err")
    te = _np(test_err, "test_err")
    if tr.shape != te.shape:
        raise ValueError(f"train_err {tr.shape} and test_err {te.shape} must have the same shape")
    if tr.ndim not in (1, 2) or tr.shape[-1] == 0:
        raise ValueError(f"error histories must have shape (T,) or (R, T), got {tr.shape}")
    if times is None:
        t = np.arange(tr.shape[-1], dtype=np.float64)
    else:
        t = _np(times, "times")
        if t.shape != tr.shape and t.shape != tr.shape[-1:]:
            raise ValueError(f"times must have shape {tr.shape[-1:]} or {tr.shape}, got {t.shape}")
    t_train = _zero_time(tr, t, tol, persistent)
    t_eps = _zero_time(te, t, tol, persistent)
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

    Parameters
    ----------
    x, y : array-like, shape (P,)
        Positive values; non-positive or non-finite pairs are dropped.

    Returns
    -------
    PowerLawFit

    Raises
    ------
    ValueError
        If fewer than 2 usable points remain.
    """
    xa, ya = _np(x, "x").ravel(), _np(y, "y").ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.shape} and {ya.shape}")
    keep = (xa > 0) & (ya > 0) & np.isfinite(xa) & np.isfinite(ya)
    lx, ly = np.log(xa[keep]), np.log(ya[keep])
    n = lx.size
    if n < 2 or np.ptp(lx) == 0:
        raise ValueError(f"need at least 2 distinct positive points for a power-law fit, got {n}")
    A = np.stack([lx, np.ones_like(lx)], axis=1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    if n > 2:
        resid = ly - A @ coef
        s2 = resid @ resid / (n - 2)
        err = math.sqrt(s2 / ((lx - lx.mean()) @ (lx - lx.mean())))
    else:
        err = float("nan")
    return PowerLawFit(float(coef[0]), float(math.exp(coef[1])), err, int(n))


@dataclass
class CriticalExponentFit:
    """Result of :func:`fit_critical_exponent`.

    Attributes
    ----------
    nu : float
        Fitted exponent of ``<E>(tau) ~ tau^nu``, ``tau = t_eps - t``.
    nu_err : float
        Bootstrap standard deviation of ``nu`` over resampled runs (``nan`` for one run), or the
        regression standard error when it is larger (the error bar is the larger of the two).
    prefactor : float
    window : tuple of float
        The ``(tau_lo, tau_hi)`` fit window actually used.
    tau : ndarray, shape (K,)
        Common grid of ``tau`` values.
    mean_error : ndarray, shape (K,)
        Test error averaged over runs at ``t_eps - tau``.
    n_runs : int
        Runs that reached zero test error and entered the average.
    """

    nu: float
    nu_err: float
    prefactor: float
    window: tuple
    tau: np.ndarray
    mean_error: np.ndarray
    n_runs: int


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
) -> CriticalExponentFit:
    """Critical exponent ``nu`` of ``E_test ~ (t_eps - t)^nu`` from many runs.

    Method (SCIENCE.md section 5): every run is aligned at its own ``t_eps`` (the time from which
    its test error stays zero); its error is linearly interpolated onto a common log-spaced grid of
    ``tau = t_eps - t``; the errors are averaged over runs, and ``log <E>`` is fitted against
    ``log tau`` by least squares inside a window.

    Window: with ``window=(tau_lo, tau_hi)`` exactly that. By default ``tau_lo`` is ten times the
    largest time step just before any ``t_eps`` (a recorded ``t_eps`` is late by up to one step,
    which biases ``log tau`` by at most ~10% of a step there) and
    ``tau_hi`` the smallest ``tau`` at which ``<E>`` exceeds ``max_error`` (the critical law is an
    asymptotic law near ``t_eps``; default 0.1), capped by the smallest aligned history length.

    Error bar: the runs are resampled with replacement ``n_boot`` times and the fit repeated on the
    same window; ``nu_err`` is the larger of the bootstrap standard deviation and the regression
    standard error.

    Parameters
    ----------
    test_err : array-like, shape (R, T)
        Test error histories.
    times : array-like, shape (T,) or (R, T)
        Increasing record times.
    t_eps : array-like, shape (R,), optional
        Zero-error times; computed with :func:`grokking_times` (persistent) when omitted. Runs with
        ``nan`` are skipped.
    window : (float, float), optional
    max_error : float
    n_tau : int
        Points of the common ``tau`` grid.
    n_boot : int
        Bootstrap resamples (0 disables the bootstrap).
    seed : int
        Seed of the bootstrap generator.

    Returns
    -------
    CriticalExponentFit
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
    if t_eps is None:
        t_eps = grokking_times(np.zeros_like(E), E, t).t_eps
    te = _np(t_eps, "t_eps").reshape(-1)
    if te.shape[0] != E.shape[0]:
        raise ValueError(f"t_eps must have length {E.shape[0]}, got {te.shape[0]}")
    runs = np.nonzero(np.isfinite(te))[0]
    runs = [r for r in runs if te[r] > t[r, 0]]  # need history before t_eps
    if not runs:
        raise ValueError("no run reaches zero test error after its first record")

    # Default window from the time resolution around t_eps and the run lengths.
    steps, spans = [], []
    for r in runs:
        j = int(np.searchsorted(t[r], te[r]))
        steps.append(t[r, j] - t[r, j - 1])
        spans.append(te[r] - t[r, 0])
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
    tau = np.geomspace(tau_min, tau_max, n_tau)
    aligned = np.stack([np.interp(te[r] - tau, t[r], E[r]) for r in runs])  # (R', K)
    mean = aligned.mean(axis=0)
    if window is None:
        over = np.nonzero(mean > max_error)[0]
        k_hi = over[0] if over.size else n_tau
        sel = np.arange(0, max(k_hi, 0))
    else:
        sel = np.arange(n_tau)
    sel = sel[mean[sel] > 0]
    if sel.size < 3:
        raise ValueError(
            "fewer than 3 grid points inside the fit window; raise max_error, pass a window, or "
            "record the errors more finely"
        )
    fit = fit_power_law(tau[sel], mean[sel])
    boots = []
    if n_boot > 0 and len(runs) > 1:
        rng = np.random.default_rng(seed)
        for _ in range(n_boot):
            pick = rng.integers(0, len(runs), len(runs))
            m = aligned[pick].mean(axis=0)[sel]
            if np.all(m > 0):
                boots.append(fit_power_law(tau[sel], m).exponent)
    boot_sd = float(np.std(boots, ddof=1)) if len(boots) > 1 else float("nan")
    err = np.nanmax([boot_sd, fit.exponent_err]) if np.isfinite([boot_sd, fit.exponent_err]).any() else float("nan")
    return CriticalExponentFit(
        nu=fit.exponent,
        nu_err=float(err),
        prefactor=fit.prefactor,
        window=(float(tau[sel[0]]), float(tau[sel[-1]])),
        tau=tau,
        mean_error=mean,
        n_runs=len(runs),
    )


# ----------------------------------------------------------------------------------------------
# Boundary divergence xi (histogram method)
# ----------------------------------------------------------------------------------------------


@dataclass
class XiFit:
    """Result of :func:`boundary_divergence_xi`.

    Attributes
    ----------
    xi : float
        Slope of ``log max_density`` against ``log n_bins``.
    xi_err : float
        Regression standard error of the slope.
    n_bins : ndarray of int, shape (K,)
    max_density : ndarray, shape (K,)
        Largest histogram density (per unit of the normalised domain) at each bin count.
    """

    xi: float
    xi_err: float
    n_bins: np.ndarray
    max_density: np.ndarray


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
) -> XiFit:
    """Boundary-divergence exponent ``xi`` by the histogram method.

    If the density of a 1D sample diverges like ``delta^{-xi}`` at the edge of its support
    (``delta`` the distance to the edge), the fraction of points in the edge bin of width ``1/n``
    scales like ``n^{xi-1}`` and the largest histogram *density* like ``n^{xi}``. The samples are
    rescaled to their range ``[min, max]``, histogrammed with each bin count, and ``log`` of the
    largest density is fitted against ``log n_bins`` (SCIENCE.md section 5). A bounded density
    gives ``xi ~ 0``. Finite samples saturate once a bin holds a handful of points, so keep
    ``max(n_bins)`` well below the sample size (the default tops out at 256 bins; use >= 10^4
    samples).

    Parameters
    ----------
    samples : array-like, shape (P,) or (P, 2)
        Scalars, or 2-vectors (D = 2 contexts) that are converted to angles with :func:`angles`.
    n_bins : sequence of int
        Bin counts (at least 2 distinct values).
    circular : bool
        Treat the values as angles on the circle: rotate so the largest empty arc is at the cut
        before taking the range (implied for 2-vector input).

    Returns
    -------
    XiFit
    """
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
    for j, n in enumerate(bins):
        counts = np.bincount(np.minimum((u * n).astype(np.int64), n - 1), minlength=n)
        dens[j] = counts.max() * n / u.size  # density per unit of the normalised domain
    fit = fit_power_law(bins.astype(float), dens)
    return XiFit(fit.exponent, fit.exponent_err, bins, dens)


def xi_star(
    left: Any,
    right: Any,
    labels: Any,
    *,
    n_bins: Sequence[int] = (8, 16, 32, 64, 128, 256),
) -> tuple:
    """``xi* = max over classes of (xi_left + xi_right)`` for D = 2 contexts.

    Parameters
    ----------
    left, right : array-like, shape (P, 2) or (P,)
        Left and right contexts (or their angles) of P sites.
    labels : array-like, shape (P,)
        Class of each site (any hashable numbers, e.g. 0/1 or -1/+1).
    n_bins : sequence of int
        Passed to :func:`boundary_divergence_xi`.

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
        xl = boundary_divergence_xi(L[m], n_bins=n_bins, circular=True).xi
        xr = boundary_divergence_xi(R[m], n_bins=n_bins, circular=True).xi
        per[float(c)] = (xl, xr)
    best = max(a + b for a, b in per.values())
    return float(best), per


# ----------------------------------------------------------------------------------------------
# Class separation
# ----------------------------------------------------------------------------------------------


def class_separation(points: Any, labels: Any, *, method: str = "centroid") -> float:
    """Class separation ``eps`` in the units of the D-ball model (separable iff ``eps > 1``).

    The paper's estimator is not published; ours are calibrated on the ball model of SCIENCE.md
    section 4 (two unit balls centred at ``+-eps e_1``), where both return ``eps``:

    * ``"centroid"`` (default): ``eps = (|c_+ - c_-| / 2) / r`` with class centroids ``c_+-`` and
      ``r`` the mean over the two classes of the class radius ``max_p |p - c|``;
    * ``"gap"``: ``eps = 1 + d_min / (2 r)`` with ``d_min`` the smallest distance between
      opposite-class points (the gap between two unit balls is ``2 (eps - 1)``). Overlapping
      classes give ``eps <= 1`` only through the centroid method; the gap method gives 1.

    Parameters
    ----------
    points : array-like, shape (P, k)
    labels : array-like, shape (P,)
        Exactly two distinct values; the larger is the positive class.
    method : {"centroid", "gap"}

    Returns
    -------
    float
    """
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
        # Chunked pairwise minimum keeps memory at O(chunk * P).
        d2min = np.inf
        pn = (pos**2).sum(1)
        for s in range(0, neg.shape[0], 2048):
            blk = neg[s : s + 2048]
            d2 = (blk**2).sum(1)[:, None] + pn[None, :] - 2.0 * blk @ pos.T
            d2min = min(d2min, float(d2.min()))
        return float(1.0 + math.sqrt(max(d2min, 0.0)) / (2.0 * r))
    raise ValueError(f"method must be 'centroid' or 'gap', got {method!r}")

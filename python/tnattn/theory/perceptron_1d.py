"""The 1D exponential perceptron grokking model (paper, Section 3; documentation: Science, "The 1D model").

Model: ``yhat = x - b`` (weight fixed to 1, only the bias ``b`` is trained), labels ``+-1``;
``n`` positives ``x = eps + Exp(1)`` and ``n`` negatives ``x = -(eps + Exp(1))`` (``n`` samples per
class, ``2n`` in all). Full-batch gradient flow on
``R = (1/2n) sum_i (1/2)(yhat_i - y_i)^2 + lambda1 |b| + (lambda2/2) b^2`` gives

    db/dt = xbar - lambda1 sgn(b) - (1 + lambda2) b,          xbar = mean of all 2n samples,

solved piecewise in closed form by :func:`bias`. The population test error is
``E = (1/2)(1 - exp(eps - |b|))`` for ``|b| > eps`` and 0 otherwise (:func:`test_error`). The final
bias is ``soft_threshold(xbar, lambda1) / (1 + lambda2)``, so the data set "groks" (zero final test
error) iff ``|xbar| < eps_l = eps (1 + lambda2) + lambda1`` (:func:`grokking_probability`).

Grokking time. Starting above every positive sample (``b(0) > eps + x_min``), training error
becomes zero when ``b`` passes ``eps + x_min`` and test error when it passes ``eps``:
``t_G = log[(eps + x_min - xl)/(eps - xl)] / (1 + lambda2)`` with ``xl = (xbar - lambda1)/(1 +
lambda2)`` (:func:`grokking_time`). Its density (:func:`grokking_time_pdf`) follows from the exact
joint law of ``(x_min, xbar)``: by memorylessness ``x_min ~ Exp(rate n)`` and
``2n xbar = n x_min + W`` with ``W = Gamma(n-1) - Gamma(n)`` independent of ``x_min``; we
integrate over ``x_min`` numerically (Gauss-Legendre) with the density of ``W`` evaluated exactly
by generalised Gauss-Laguerre quadrature (its integrand is a polynomial).

All functions are numpy-vectorised (float64); simulators take a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy import special

__all__ = [
    "epsilon_lambda",
    "stationary_bias",
    "bias",
    "test_error",
    "test_error_at",
    "time_to_reach",
    "critical_exponent",
    "near_critical_slope",
    "sample_mean_density",
    "grokking_probability",
    "grokking_probability_n2",
    "grokking_time",
    "grokking_time_pdf",
    "sample_datasets",
    "sample_statistics",
    "FlowSimulation",
    "simulate_gradient_flow",
]


def _check_nonneg(**kw: float) -> None:
    for name, v in kw.items():
        if not np.all(np.asarray(v) >= 0):
            raise ValueError(f"{name} must be >= 0, got {v}")


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"n (samples per class) must be a positive integer, got {n}")
    return int(n)


def epsilon_lambda(eps: Any, lambda1: float = 0.0, lambda2: float = 0.0) -> Any:
    """Effective half-gap ``eps_l = eps (1 + lambda2) + lambda1``.

    A data set groks iff ``|xbar| < eps_l``.
    """
    _check_nonneg(lambda1=lambda1, lambda2=lambda2)
    return np.asarray(eps) * (1.0 + lambda2) + lambda1


def stationary_bias(xbar: Any, lambda1: float = 0.0, lambda2: float = 0.0) -> np.ndarray:
    """Fixed point of the flow: ``sgn(xbar) max(|xbar| - lambda1, 0) / (1 + lambda2)``."""
    _check_nonneg(lambda1=lambda1, lambda2=lambda2)
    x = np.asarray(xbar, dtype=np.float64)
    return np.sign(x) * np.maximum(np.abs(x) - lambda1, 0.0) / (1.0 + lambda2)


def bias(
    t: Any, xbar: Any, b0: Any, lambda1: float = 0.0, lambda2: float = 0.0
) -> np.ndarray:
    """Exact solution ``b(t)`` of the gradient flow, including the L1 kink at ``b = 0``.

    While ``b`` keeps the sign ``s`` of ``b(0)`` it relaxes exponentially (rate ``1 + lambda2``)
    towards ``(xbar - s lambda1)/(1 + lambda2)``. If that target has the opposite sign, ``b`` reaches
    0 at a finite time; it stays there when ``|xbar| <= lambda1`` (the L1 subgradient holds it) and
    otherwise continues towards ``(xbar + s lambda1)/(1 + lambda2)``.

    Parameters
    ----------
    t : array-like
        Times (>= 0), broadcast against ``xbar`` and ``b0``.
    xbar : array-like
        Sample means.
    b0 : array-like
        Initial biases.
    lambda1, lambda2 : float
        Regularisation strengths (>= 0).

    Returns
    -------
    ndarray
        ``b(t)`` with the broadcast shape.
    """
    _check_nonneg(lambda1=lambda1, lambda2=lambda2)
    t, xbar, b0 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t, xbar, b0)))
    if np.any(t < 0):
        raise ValueError("t must be >= 0")
    c = 1.0 + lambda2
    s = np.sign(b0)
    s = np.where(s == 0, np.sign(xbar), s)  # from b0 = 0 the flow leaves towards sgn(xbar)
    x1 = (xbar - s * lambda1) / c
    # From b0 = 0 with |xbar| <= lambda1 nothing moves.
    stuck0 = (b0 == 0) & (np.abs(xbar) <= lambda1)
    crosses = (np.sign(x1) == -s) & (s != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = np.where(crosses, np.log((b0 - x1) / (-x1)) / c, np.inf)
    phase1 = x1 + (b0 - x1) * np.exp(-c * np.minimum(t, t0))
    after = t > t0
    x2 = np.where(np.abs(xbar) > lambda1, (xbar + s * lambda1) / c, 0.0)
    phase2 = x2 * (1.0 - np.exp(-c * np.where(after, t - t0, 0.0)))
    out = np.where(after, phase2, phase1)
    return np.where(stuck0, 0.0, out)


def test_error(b: Any, eps: float) -> np.ndarray:
    """Population test error ``(1/2)(1 - exp(eps - |b|))`` for ``|b| > eps``, else 0."""
    b = np.abs(np.asarray(b, dtype=np.float64))
    return np.where(b > eps, 0.5 * (1.0 - np.exp(np.minimum(eps - b, 0.0))), 0.0)


def test_error_at(
    t: Any, xbar: Any, b0: Any, eps: float, lambda1: float = 0.0, lambda2: float = 0.0
) -> np.ndarray:
    """Test error ``E(t) = test_error(bias(t, ...), eps)``."""
    return test_error(bias(t, xbar, b0, lambda1, lambda2), eps)


def time_to_reach(
    level: Any, xbar: Any, b0: Any, lambda1: float = 0.0, lambda2: float = 0.0
) -> np.ndarray:
    """Time at which a bias starting at ``b0 > level > 0`` falls to ``level``.

    Only the positive branch is needed (``level > 0``), where the target is
    ``xl = (xbar - lambda1)/(1 + lambda2)``: ``t = log[(b0 - xl)/(level - xl)]/(1 + lambda2)`` if
    ``xl < level``, else ``inf`` (never). ``t_eps`` is ``time_to_reach(eps, ...)`` and ``t_train`` is
    ``time_to_reach(eps + x_min, ...)``.
    """
    _check_nonneg(lambda1=lambda1, lambda2=lambda2)
    level, xbar, b0 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (level, xbar, b0)))
    if np.any(level <= 0) or np.any(b0 < level):
        raise ValueError("time_to_reach needs b0 >= level > 0")
    c = 1.0 + lambda2
    xl = (xbar - lambda1) / c
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(xl < level, np.log((b0 - xl) / (level - xl)) / c, np.inf)


def critical_exponent() -> float:
    """``nu = 1``: ``E`` vanishes linearly in ``t_eps - t`` (``dE/db = 1/2`` at ``b = eps``)."""
    return 1.0


def near_critical_slope(eps: float, lambda1: float = 0.0, lambda2: float = 0.0) -> float:
    """Slope ``eps_l / 2`` of the averaged ``<E> ~ (eps_l/2)(t_eps - t)`` over grokking data sets.

    At ``b = eps``, ``dE/dt = -(1/2) db/dt = (1/2)(eps_l - xbar)`` and the grokking ``xbar`` are
    symmetric about 0, so their average slope is ``eps_l / 2``.
    """
    return float(epsilon_lambda(eps, lambda1, lambda2)) / 2.0


# ---------------------------------------------------------------------------------------------
# Distribution of the sample mean and grokking probability
# ---------------------------------------------------------------------------------------------


def _log_density_sum(ax: np.ndarray, n: int) -> np.ndarray:
    """log P_n(|x|) from the finite sum of K_{n-1/2} (half-integer order is elementary)."""
    k = np.arange(n)
    # P_n(x) = sum_k n^n / Gamma(n) * (n-1+k)! / (k! (n-1-k)!) * (4n)^-k * x^(n-1-k) * e^(-2n x)
    logc = (
        n * np.log(n)
        - special.gammaln(n)
        + special.gammaln(n + k)
        - special.gammaln(k + 1)
        - special.gammaln(n - k)
        - k * np.log(4.0 * n)
    )
    p = (n - 1 - k).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lx = np.log(ax)[..., None]
        terms = logc + np.where(p == 0, 0.0, p * lx)  # x^0 = 1 also at x = 0
    return special.logsumexp(terms, axis=-1) - 2.0 * n * ax


def sample_mean_density(xbar: Any, n: int, *, method: str = "bessel") -> np.ndarray:
    """Density of the mean ``xbar`` of ``n`` positives and ``n`` negatives.

    ``P_n(xbar) = 2 n^{n+1/2} |xbar|^{n-1/2} K_{n-1/2}(2n|xbar|) / (sqrt(pi) Gamma(n))``, a
    variance-gamma law (``2n xbar`` is a difference of two Gamma(n, 1) variables).

    Parameters
    ----------
    xbar : array-like
    n : int
        Samples per class.
    method : {"bessel", "sum"}
        ``"bessel"`` evaluates the formula above in log space with the exponentially scaled
        ``scipy.special.kve`` (falling back to the sum where ``kve`` overflows, e.g. huge ``n`` at
        tiny ``|xbar|``); ``"sum"`` uses the finite sum that ``K`` of half-integer order reduces
        to. Both are exact.

    Returns
    -------
    ndarray
    """
    n = _check_n(n)
    ax = np.abs(np.asarray(xbar, dtype=np.float64))
    if method == "sum":
        return np.exp(_log_density_sum(ax, n))
    if method != "bessel":
        raise ValueError(f"method must be 'bessel' or 'sum', got {method!r}")
    nu = n - 0.5
    z = 2.0 * n * ax
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        logk = np.log(special.kve(nu, z)) - z
        logp = (
            np.log(2.0)
            + (n + 0.5) * np.log(n)
            + nu * np.log(ax)
            + logk
            - 0.5 * np.log(np.pi)
            - special.gammaln(n)
        )
    bad = ~np.isfinite(logp)
    if np.any(bad):
        logp = np.where(bad, _log_density_sum(np.where(bad, ax, 1.0), n), logp)
    return np.exp(logp)


def grokking_probability_n2(eps_lambda: Any) -> np.ndarray:
    """Closed form for ``n = 2``: ``1 - (1 + 2 eps_l) exp(-4 eps_l)``."""
    e = np.asarray(eps_lambda, dtype=np.float64)
    if np.any(e < 0):
        raise ValueError("eps_lambda must be >= 0")
    return 1.0 - (1.0 + 2.0 * e) * np.exp(-4.0 * e)


def grokking_probability(eps_lambda: Any, n: int, *, method: str = "exact") -> np.ndarray:
    """Probability ``P(|xbar| < eps_l)`` that a data set of ``n`` samples per class groks.

    Parameters
    ----------
    eps_lambda : array-like
        ``eps_l = eps (1 + lambda2) + lambda1`` (see :func:`epsilon_lambda`), >= 0.
    n : int
        Samples per class.
    method : {"exact", "quad"}
        ``"exact"``: the finite sum (integrating the half-integer Bessel form term by term)

            P = sum_{k=0}^{n-1} 2^{1-n-k} C(n-1+k, k) P(n-k, 2 n eps_l),

        with ``P(a, z)`` the regularised lower incomplete gamma function; terms are combined in
        log space, so large ``n`` (thousands) is fine. ``"quad"``: numerical integration of
        :func:`sample_mean_density` (a cross-check).

    Returns
    -------
    ndarray
    """
    n = _check_n(n)
    e = np.asarray(eps_lambda, dtype=np.float64)
    if np.any(e < 0):
        raise ValueError("eps_lambda must be >= 0")
    if method == "quad":
        from scipy import integrate

        flat = [
            2.0 * integrate.quad(lambda x: float(sample_mean_density(x, n)), 0.0, v, limit=200)[0]
            for v in e.ravel()
        ]
        return np.asarray(flat).reshape(e.shape)
    if method != "exact":
        raise ValueError(f"method must be 'exact' or 'quad', got {method!r}")
    k = np.arange(n)
    logc = (1 - n - k) * np.log(2.0) + special.gammaln(n + k) - special.gammaln(k + 1) - special.gammaln(n)
    with np.errstate(divide="ignore"):
        logg = np.log(special.gammainc((n - k).astype(np.float64), 2.0 * n * e[..., None]))
    return np.exp(special.logsumexp(logc + logg, axis=-1))


# ---------------------------------------------------------------------------------------------
# Grokking time and its density
# ---------------------------------------------------------------------------------------------


def grokking_time(
    xbar: Any, x_min: Any, eps: float, lambda1: float = 0.0, lambda2: float = 0.0
) -> np.ndarray:
    """``t_G = log[(eps + x_min - xl)/(eps - xl)]/(1 + lambda2)``, ``xl = (xbar - lambda1)/(1+lambda2)``.

    Valid for a flow that starts above every positive sample. ``nan`` where the data set does not
    grok (``|xbar| >= eps_l``).
    """
    _check_nonneg(lambda1=lambda1, lambda2=lambda2)
    xbar = np.asarray(xbar, dtype=np.float64)
    x_min = np.asarray(x_min, dtype=np.float64)
    c = 1.0 + lambda2
    xl = (xbar - lambda1) / c
    ok = np.abs(xbar) < epsilon_lambda(eps, lambda1, lambda2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.log((eps + x_min - xl) / (eps - xl)) / c
    return np.where(ok, t, np.nan)


@functools.lru_cache(maxsize=64)
def _genlaguerre(nodes: int, alpha: float) -> tuple:
    x, w = special.roots_genlaguerre(nodes, alpha)
    return x, np.log(w)


@functools.lru_cache(maxsize=16)
def _legendre(nodes: int) -> tuple:
    return np.polynomial.legendre.leggauss(nodes)


def _log_density_w(w: np.ndarray, n: int, nodes: int) -> np.ndarray:
    """log density of W = Gamma(n-1, 1) - Gamma(n, 1) (independent), exact by Gauss-Laguerre.

    For w > 0: f(w) = e^-w / (G(a)G(b)) int_0^inf (s+w)^(a-1) s^(b-1) e^(-2s) ds with a = n-1 (the
    positive part), b = n; for w < 0 the roles of a and b swap. With x = 2s the integral is a
    generalised Gauss-Laguerre integral of a polynomial of degree a-1 (resp. b-1), exact with
    ``nodes >= n/2 + 1`` points.
    """
    a, b = n - 1, n
    out = np.full(w.shape, -np.inf)
    if a == 0:  # n = 1: W = -Exp(1)
        neg = w < 0
        out[neg] = w[neg]
        return out
    for sign, pa, pb in ((1.0, a, b), (-1.0, b, a)):
        sel = (sign * w) > 0
        if not np.any(sel):
            continue
        aw = np.abs(w[sel])
        # int_0^inf x^(pb-1) e^-x (x/2 + |w|)^(pa-1) dx / 2^pb
        x, logwt = _genlaguerre(nodes, float(pb - 1))
        with np.errstate(divide="ignore"):
            lp = (pa - 1) * np.log(x[None, :] / 2.0 + aw[:, None]) + logwt[None, :]
        integral = special.logsumexp(lp, axis=1) - pb * np.log(2.0)
        out[sel] = -aw + integral - special.gammaln(pa) - special.gammaln(pb)
    return out


def grokking_time_pdf(
    t: Any,
    n: int,
    eps: float,
    lambda1: float = 0.0,
    lambda2: float = 0.0,
    *,
    conditional: bool = False,
    nodes: int = 200,
) -> np.ndarray:
    """Density of the grokking time ``t_G`` (flow started above every positive sample).

    With ``c = 1 + lambda2`` and ``E = e^{c t} - 1``, a data set with smallest positive excess
    ``m`` groks at ``t_G = t`` iff ``xbar = eps_l - c m / E``; changing variables from ``xbar`` to
    ``t`` and integrating over ``m``,

        p(t) = int_0^{m_hi} dm  n e^{-n m} * 2n f_W(2n xbar - n m) * c^2 m e^{c t} / E^2,

    where ``f_W`` is the density of ``Gamma(n-1) - Gamma(n)`` (see module docstring) and
    ``m_hi = 2 eps_l E / c`` keeps ``xbar > -eps_l`` (grokking). The ``m`` integral uses
    Gauss-Legendre nodes on ``[0, m*]`` and ``[m*, m_hi]`` where ``m*`` is the kink of ``f_W``
    (``W = 0``), truncated where ``e^{-n m} < e^{-60}``.

    Parameters
    ----------
    t : array-like
        Grokking times (> 0).
    n : int
        Samples per class (up to ~150: the Gauss-Laguerre weights overflow beyond).
    eps, lambda1, lambda2 : float
    conditional : bool
        False: the defective density whose integral is the grokking probability. True: divided by
        the grokking probability (density of ``t_G`` given that the data set groks).
    nodes : int
        Gauss-Legendre nodes per ``m`` sub-interval.

    Returns
    -------
    ndarray
        Same shape as ``t``.
    """
    n = _check_n(n)
    if n > 150:
        raise ValueError(f"grokking_time_pdf supports n <= 150 (got {n}); sample instead")
    _check_nonneg(lambda1=lambda1, lambda2=lambda2)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    tt = np.asarray(t, dtype=np.float64)
    flat = tt.ravel()
    c = 1.0 + lambda2
    el = float(epsilon_lambda(eps, lambda1, lambda2))
    gl_x, gl_w = _legendre(nodes)
    lag_nodes = n // 2 + 2
    out = np.zeros_like(flat)
    pos = flat > 0
    tp = np.minimum(flat[pos], 600.0 / c)  # beyond, the density is below 1e-200 anyway
    E = np.expm1(c * tp)
    m_hi = np.minimum(2.0 * el * E / c, 60.0 / n)
    m_star = np.minimum(2.0 * el / (1.0 + 2.0 * c / E), m_hi)
    dens = np.zeros_like(tp)
    for lo, hi in ((np.zeros_like(m_star), m_star), (m_star, m_hi)):
        half = 0.5 * (hi - lo)
        m = lo[:, None] + half[:, None] * (gl_x[None, :] + 1.0)  # (K, nodes)
        xbar = el - c * m / E[:, None]
        w = 2.0 * n * xbar - n * m
        logf = _log_density_w(w.ravel(), n, lag_nodes).reshape(w.shape)
        with np.errstate(divide="ignore"):
            logint = (
                np.log(n) - n * m + np.log(2.0 * n) + logf + 2.0 * np.log(c) + np.log(m)
                + c * tp[:, None] - 2.0 * np.log(E[:, None])
            )
        dens += half * (np.exp(logint) * gl_w[None, :]).sum(axis=1)
    out[pos] = dens
    if conditional:
        out = out / grokking_probability(el, n)
    return out.reshape(tt.shape)


# ---------------------------------------------------------------------------------------------
# Sampling and simulation
# ---------------------------------------------------------------------------------------------


def sample_datasets(n: int, eps: float, size: int, rng: np.random.Generator) -> tuple:
    """Sample ``size`` data sets of ``n`` positives and ``n`` negatives.

    Returns
    -------
    (positives, negatives) : ndarrays of shape (size, n)
        ``eps + Exp(1)`` and ``-(eps + Exp(1))``.
    """
    n = _check_n(n)
    pos = eps + rng.exponential(1.0, size=(size, n))
    neg = -(eps + rng.exponential(1.0, size=(size, n)))
    return pos, neg


def sample_statistics(n: int, size: int, rng: np.random.Generator) -> tuple:
    """Exact sampling of ``(xbar, x_min)`` without drawing whole data sets.

    ``x_min ~ Exp(rate n)``; the other ``n - 1`` positive excesses are iid ``Exp(1)`` by
    memorylessness, so ``2n xbar = n x_min + Gamma(n-1) - Gamma(n)``.

    Returns
    -------
    (xbar, x_min) : ndarrays of shape (size,)
    """
    n = _check_n(n)
    x_min = rng.exponential(1.0 / n, size=size)
    g_pos = rng.gamma(n - 1, size=size) if n > 1 else np.zeros(size)
    g_neg = rng.gamma(n, size=size)
    return (n * x_min + g_pos - g_neg) / (2.0 * n), x_min


@dataclass
class FlowSimulation:
    """Result of :func:`simulate_gradient_flow` (R data sets).

    Attributes
    ----------
    xbar, x_min : ndarray, shape (R,)
        Sample mean and smallest positive excess over ``eps`` of each data set.
    t_train, t_eps, t_grok : ndarray, shape (R,)
        Times at which training / test error reach zero under the ``definition`` of
        :func:`simulate_gradient_flow` (``nan`` if never); ``t_grok = t_eps - t_train``. The bias
        moves monotonically towards its stationary value (arXiv:2210.15435, Sec. 3), so for a
        data set that groks (zero final test error) both conventions give the same times. They
        differ where the bias passes through ``[-eps, eps]`` on its way to a stationary value
        outside it: the test error is zero for a while, then not; ``"first_zero"`` gives that
        passage's start, ``"stays_zero"`` gives ``nan``. Such a data set does not grok under
        either convention (``final_test_error > 0``).
    final_bias, final_test_error : ndarray, shape (R,)
    times : ndarray, shape (T,) or None
        Recorded times (only with ``record_every``).
    bias, train_error, test_error : ndarray, shape (R, T) or None
        Recorded histories.
    """

    xbar: np.ndarray
    x_min: np.ndarray
    t_train: np.ndarray
    t_eps: np.ndarray
    t_grok: np.ndarray
    final_bias: np.ndarray
    final_test_error: np.ndarray
    times: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    train_error: Optional[np.ndarray] = None
    test_error: Optional[np.ndarray] = None


def simulate_gradient_flow(
    n: int,
    eps: float,
    n_datasets: int,
    rng: np.random.Generator,
    *,
    lambda1: float = 0.0,
    lambda2: float = 0.0,
    b0: float = 10.0,
    t_max: float = 20.0,
    dt: float = 1e-3,
    record_every: Optional[int] = None,
    definition: str = "first_zero",
) -> FlowSimulation:
    """Monte Carlo: integrate the bias flow numerically on sampled data sets.

    Each data set is drawn with :func:`sample_datasets`; the flow is integrated with the
    forward-backward (proximal) Euler scheme ``b <- soft(b + dt (xbar - (1+lambda2) b), dt lambda1)``,
    the standard discretisation of an L1 gradient flow (it does not chatter at ``b = 0``). After
    every step the training error (counted on the samples) and the population test error are
    evaluated; ``t_train`` / ``t_eps`` are the times of the first step with zero error
    (``definition="first_zero"``) or of the step after the last one with nonzero error
    (``"stays_zero"``). This is independent of the closed forms (only the data and the ODE are
    used), so it checks them.

    Parameters
    ----------
    n : int
        Samples per class.
    eps : float
        Half-gap between the classes.
    n_datasets : int
        Number R of independent data sets (vectorised).
    rng : numpy.random.Generator
    lambda1, lambda2 : float
    b0 : float
        Initial bias (default 10, above every positive sample with overwhelming probability).
    t_max, dt : float
        Integration horizon and step.
    record_every : int, optional
        Store ``bias``/errors every that many steps (memory R x T).
    definition : {"first_zero", "stays_zero"}
        Grokking-time convention (:func:`tnattn.metrics.zero_times`); the default is the paper's
        (arXiv:2210.15435, Sec. 3: the first time the error is zero). See :class:`FlowSimulation`
        for when the two differ.

    Returns
    -------
    FlowSimulation

    Raises
    ------
    ValueError
        For ``n < 1``, negative penalties, ``dt``/``t_max`` out of order or an unknown
        ``definition``.
    """
    from tnattn.metrics import check_definition

    check_definition(definition)
    n = _check_n(n)
    _check_nonneg(lambda1=lambda1, lambda2=lambda2)
    if not (dt > 0 and t_max > dt):
        raise ValueError("need 0 < dt < t_max")
    pos, neg = sample_datasets(n, eps, n_datasets, rng)
    pos.sort(axis=1)
    neg.sort(axis=1)
    xbar = (pos.sum(1) + neg.sum(1)) / (2 * n)
    x_min = pos[:, 0] - eps
    steps = int(round(t_max / dt))
    b = np.full(n_datasets, float(b0))
    c = 1.0 + lambda2
    last_train = np.zeros(n_datasets)  # time of the last step with nonzero error
    last_test = np.zeros(n_datasets)
    first_train = np.full(n_datasets, np.nan)  # time of the first step with zero error
    first_test = np.full(n_datasets, np.nan)
    rec_t, rec_b, rec_tr, rec_te = [], [], [], []

    def errors(bb, full):
        # Positives are wrong where x < b, negatives where x > b (prediction sign(x - b)). Only
        # recorded steps need the count; otherwise "any wrong" follows from the extreme samples.
        if full:
            wrong = (pos < bb[:, None]).sum(1) + (neg > bb[:, None]).sum(1)
            return wrong / (2 * n), test_error(bb, eps)
        return ((pos[:, 0] < bb) | (neg[:, -1] > bb)).astype(np.float64), test_error(bb, eps)

    tr, te = errors(b, True)
    never_train = tr > 0  # whether the error was ever nonzero (else t = 0)
    never_test = te > 0
    first_train[tr == 0] = 0.0
    first_test[te == 0] = 0.0
    if record_every:
        rec_t.append(0.0), rec_b.append(b.copy()), rec_tr.append(tr), rec_te.append(te)
    for k in range(1, steps + 1):
        z = b + dt * (xbar - c * b)
        b = np.sign(z) * np.maximum(np.abs(z) - dt * lambda1, 0.0)
        rec = bool(record_every) and k % record_every == 0
        tr, te = errors(b, rec)
        tk = k * dt
        last_train = np.where(tr > 0, tk, last_train)
        last_test = np.where(te > 0, tk, last_test)
        first_train = np.where(np.isnan(first_train) & (tr == 0), tk, first_train)
        first_test = np.where(np.isnan(first_test) & (te == 0), tk, first_test)
        never_train |= tr > 0
        never_test |= te > 0
        if rec:
            rec_t.append(tk), rec_b.append(b.copy()), rec_tr.append(tr), rec_te.append(te)
    if definition == "first_zero":
        t_train, t_eps = first_train, first_test
    else:
        # Zero from the step after the last nonzero one; nan if still nonzero at the end.
        t_train = np.where(tr > 0, np.nan, np.where(never_train, last_train + dt, 0.0))
        t_eps = np.where(te > 0, np.nan, np.where(never_test, last_test + dt, 0.0))
    out = FlowSimulation(
        xbar=xbar,
        x_min=x_min,
        t_train=t_train,
        t_eps=t_eps,
        t_grok=t_eps - t_train,
        final_bias=b,
        final_test_error=te,
    )
    if record_every:
        out.times = np.asarray(rec_t)
        out.bias = np.stack(rec_b, 1)
        out.train_error = np.stack(rec_tr, 1)
        out.test_error = np.stack(rec_te, 1)
    return out

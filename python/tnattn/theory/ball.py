"""The D-dimensional ball perceptron grokking model (paper, Section 3).

See also the documentation: Science, "The D-dimensional ball model".

Data: ``n`` positives uniform in the unit D-ball shifted by ``+eps e_1`` and ``n`` negatives
shifted by ``-eps e_1`` (labels ``+-1``; separable by a hyperplane through 0 iff ``eps >= 1``). The
perceptron has weights only (no bias). Full-batch gradient flow on the square loss with L1/L2:

    dw/dt = a - G w - lambda1 sgn(w),   G = (1/2n) sum x x^T + lambda2 I,   a = (1/2n) sum y x.

Test error (:func:`test_error`): with ``h = eps w_1/|w|`` the misclassified part of each ball is a
cap, ``E = (1/2) I_{1-h^2}((D+1)/2, 1/2)`` for ``0 <= h < 1`` and 0 for ``h >= 1``; hence
``nu = (D+1)/2`` (:func:`critical_exponent`), or ``(D+1-2 xi)/2`` for a density diverging like
``delta^-xi`` at the domain boundary.

Two-branch grokking time (our derivation; :func:`grokking_time_pdf`). In the mean-field limit
(``G, a`` replaced by their expectations, valid for many samples) the flow decouples:
``G = diag(k1, k, ..., k)`` with ``k1 = eps^2 + 1/(D+2) + lambda2`` and ``k = 1/(D+2) + lambda2``
(the covariance of the unit ball is ``I/(D+2)``), ``a = eps e_1``. From ``w_1(0) = 0`` and a random
perpendicular part ``w_perp(0) ~ N(0, sigma0^2 I_{D-1})`` (``init="perp"``),
``w_1(t) = w1* (1 - e^{-k1 t})`` with ``w1* = eps/k1`` and ``w_perp(t) = w_perp(0) e^{-k t}``; ``h``
rises monotonically and the misclassified sets shrink (are nested), so a training set of ``2n``
points independent of the trajectory is classified correctly at time ``t`` with probability
``(1 - E(t))^{2n}``::

    P(t_G >= s | p0) = (1 - E(h(t_eps - s)))^{2n},      p0 = |w_perp(0)|.

Mixing over ``p0^2 / sigma0^2 ~ chi^2_{D-1}`` gives the full density. Because ``k << k1`` the
mixture has two branches: if ``p0 < p_c = sqrt(eps^2 - 1) w1*`` the test error vanishes while
``w_1`` is still relaxing (fast branch, rate ``~eps^2``), with weight
``p_fast = P(chi^2_{D-1} < p_c^2/sigma0^2)`` (:func:`fast_branch_weight`); otherwise one waits for
``w_perp`` to decay at the slow rate ``k = lambda_{2,D}``, and then ``h(t_eps - s) =
eps / sqrt(1 + (eps^2 - 1) e^{2 k s})`` does not depend on ``p0``: the slow branch has a universal
density (:func:`slow_branch_pdf`) whose scale shrinks with ``n`` like ``n^{-2/(D+1)}``.
The paper gives the slow-branch time ``ln(eps^4/(eps^4 - 1)) / (2 lambda_{2,D})``
(:func:`paper_slow_branch_time`); our finite-``n`` cap law does not reduce to it, and the
perceptron-ball experiment plots both against simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy import special, stats

__all__ = [
    "test_error",
    "overlap",
    "test_error_of_weights",
    "critical_exponent",
    "predicted_xi",
    "sample_ball",
    "sample_datasets",
    "moments",
    "stationary_weights",
    "flow_weights",
    "BallFlow",
    "simulate_gradient_flow",
    "grokking_probability_mc",
    "mean_field_rates",
    "fast_branch_weight",
    "slow_branch_pdf",
    "grokking_time_pdf",
    "paper_slow_branch_time",
]


def _check_D(D: int) -> int:
    if int(D) != D or D < 1:
        raise ValueError(f"D must be a positive integer, got {D}")
    return int(D)


def _check_nonneg(**kw: float) -> None:
    for name, v in kw.items():
        if not np.all(np.asarray(v) >= 0):
            raise ValueError(f"{name} must be >= 0, got {v}")


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------


def test_error(h: Any, D: int) -> np.ndarray:
    """Fraction of a unit D-ball beyond a hyperplane at signed distance ``h`` from its centre.

    ``E = (1/2) I_{1-h^2}((D+1)/2, 1/2)`` for ``0 <= h < 1`` (regularised incomplete beta), 0 for
    ``h >= 1``, ``1 - E(-h)`` for ``h < 0`` (more than half the ball is on the wrong side).

    Parameters
    ----------
    h : array-like
        ``eps w_1 / |w|``.
    D : int

    Returns
    -------
    ndarray
    """
    D = _check_D(D)
    h = np.asarray(h, dtype=np.float64)
    ah = np.minimum(np.abs(h), 1.0)
    cap = 0.5 * special.betainc((D + 1) / 2.0, 0.5, 1.0 - ah**2)
    return np.where(h >= 0, cap, 1.0 - cap)


def _test_error_slope(h: np.ndarray, D: int) -> np.ndarray:
    """|dE/dh| = (1 - h^2)^((D-1)/2) / B((D+1)/2, 1/2) for |h| < 1, else 0."""
    h = np.asarray(h, dtype=np.float64)
    inside = np.abs(h) < 1
    base = np.where(inside, 1.0 - h**2, 1.0)
    return np.where(inside, base ** ((D - 1) / 2.0) / special.beta((D + 1) / 2.0, 0.5), 0.0)


def overlap(w: Any, eps: float) -> np.ndarray:
    """``h = eps w_1 / |w|`` for weights of shape (..., D); 0 where ``w = 0``."""
    w = np.asarray(w, dtype=np.float64)
    nrm = np.linalg.norm(w, axis=-1)
    return np.where(nrm > 0, eps * w[..., 0] / np.where(nrm > 0, nrm, 1.0), 0.0)


def test_error_of_weights(w: Any, eps: float) -> np.ndarray:
    """Population test error of weights ``w`` of shape (..., D)."""
    w = np.asarray(w, dtype=np.float64)
    return test_error(overlap(w, eps), w.shape[-1])


def critical_exponent(D: Any, xi: Any = 0.0) -> Any:
    """``nu = (D + 1 - 2 xi)/2`` (``xi = 0``: uniform density, ``nu = (D+1)/2``)."""
    return (np.asarray(D, dtype=np.float64) + 1.0 - 2.0 * np.asarray(xi, dtype=np.float64)) / 2.0


def predicted_xi(D_eff: Any, nu: Any) -> Any:
    """Invert :func:`critical_exponent`: ``xi = (D_eff - 2 nu + 1)/2``."""
    return (np.asarray(D_eff, dtype=np.float64) - 2.0 * np.asarray(nu, dtype=np.float64) + 1.0) / 2.0


def paper_slow_branch_time(eps: float, D: int, lambda2: float = 0.0) -> float:
    """The paper's slow-branch grokking time (paper, Section 3).

    ``t_G = ln(eps^4 / (eps^4 - 1)) / (2 lambda_{2,D})`` with ``lambda_{2,D} = lambda2 + 1/(D+2)``.
    Kept for comparison; see the module docstring for the finite-``n`` law we derive and test.
    """
    D = _check_D(D)
    if eps <= 1:
        raise ValueError(f"eps must be > 1, got {eps}")
    return float(np.log(eps**4 / (eps**4 - 1.0)) / (2.0 * (lambda2 + 1.0 / (D + 2))))


# ---------------------------------------------------------------------------------------------
# Sampling and gradient flow
# ---------------------------------------------------------------------------------------------


def sample_ball(size: tuple, D: int, rng: np.random.Generator) -> np.ndarray:
    """Points uniform in the unit D-ball, shape ``size + (D,)`` (direction x radius^(1/D))."""
    D = _check_D(D)
    size = tuple(np.atleast_1d(size).tolist())
    g = rng.standard_normal(size + (D,))
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    return g * rng.uniform(size=size + (1,)) ** (1.0 / D)


def sample_datasets(n_datasets: int, n: int, D: int, eps: float, rng: np.random.Generator) -> tuple:
    """Sample R data sets of ``n`` positives (+eps e_1) and ``n`` negatives (-eps e_1).

    Returns
    -------
    X : ndarray, shape (R, 2n, D)
    y : ndarray, shape (2n,)
        ``+1`` for the first ``n`` rows, ``-1`` for the rest.
    """
    D = _check_D(D)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    X = sample_ball((n_datasets, 2 * n), D, rng)
    X[:, :n, 0] += eps
    X[:, n:, 0] -= eps
    y = np.concatenate([np.ones(n), -np.ones(n)])
    return X, y


def moments(X: np.ndarray, y: np.ndarray, lambda2: float = 0.0) -> tuple:
    """``G = mean(x x^T) + lambda2 I`` (R, D, D) and ``a = mean(y x)`` (R, D)."""
    _check_nonneg(lambda2=lambda2)
    X = np.asarray(X, dtype=np.float64)
    P, D = X.shape[-2], X.shape[-1]
    G = np.einsum("rpi,rpj->rij", X, X) / P + lambda2 * np.eye(D)
    a = np.einsum("p,rpi->ri", np.asarray(y, dtype=np.float64), X) / P
    return G, a


def stationary_weights(
    G: np.ndarray, a: np.ndarray, lambda1: float = 0.0, *, iters: int = 5000, tol: float = 1e-12
) -> np.ndarray:
    """Fixed point of the flow, ``0 in a - G w - lambda1 d|w|_1``.

    ``lambda1 = 0``: ``w = G^+ a`` (pseudo-inverse: for fewer points than dimensions and no L2,
    the minimum-norm solution, i.e. the limit of the flow started at ``w = 0``). ``lambda1 > 0``: the Lasso problem
    ``min (1/2) w^T G w - a.w + lambda1 |w|_1``, solved by FISTA (accelerated proximal gradient,
    step ``1/L`` with ``L`` the largest eigenvalue of each ``G``), vectorised over data sets and
    stopped when every update is below ``tol``.

    Parameters
    ----------
    G : ndarray, shape (R, D, D)
    a : ndarray, shape (R, D)
    lambda1 : float

    Returns
    -------
    ndarray, shape (R, D)
    """
    _check_nonneg(lambda1=lambda1)
    if lambda1 == 0:
        return (np.linalg.pinv(G, hermitian=True) @ a[..., None])[..., 0]
    L = np.linalg.eigvalsh(G)[..., -1:]
    w = np.zeros_like(a)
    z, tk = w.copy(), 1.0
    for _ in range(iters):
        grad = np.einsum("rij,rj->ri", G, z) - a
        u = z - grad / L
        w_new = np.sign(u) * np.maximum(np.abs(u) - lambda1 / L, 0.0)
        tk1 = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
        z = w_new + ((tk - 1.0) / tk1) * (w_new - w)
        done = np.max(np.abs(w_new - w)) < tol
        w, tk = w_new, tk1
        if done:
            break
    return w


def flow_weights(
    G: np.ndarray,
    a: np.ndarray,
    w0: np.ndarray,
    times: Any,
    lambda1: float = 0.0,
    *,
    dt: float = 1e-3,
) -> np.ndarray:
    """Weights ``w(t)`` of the gradient flow at the given times.

    ``lambda1 = 0``: closed form through the eigendecomposition ``G = V diag(l) V^T``,
    ``w(t) = w* + V e^{-l t} V^T (w0 - w*)``. ``lambda1 > 0``: the flow has a discontinuous
    right-hand side; we integrate it with the proximal (forward-backward) Euler scheme
    ``w <- soft(w + dt (a - G w), dt lambda1)``, which converges to the Filippov solution as
    ``dt -> 0`` and does not chatter at ``w_i = 0``.

    Parameters
    ----------
    G : ndarray, shape (R, D, D)
        Including the L2 term.
    a : ndarray, shape (R, D)
    w0 : ndarray, shape (R, D)
    times : array-like, shape (T,)
        Non-decreasing times >= 0.
    lambda1 : float
    dt : float
        Euler step (``lambda1 > 0`` only).

    Returns
    -------
    ndarray, shape (R, T, D)
    """
    _check_nonneg(lambda1=lambda1)
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or np.any(np.diff(t) < 0) or (t.size and t[0] < 0):
        raise ValueError("times must be a non-decreasing 1D array of times >= 0")
    if lambda1 == 0:
        ws = np.linalg.solve(G, a[..., None])[..., 0]
        lam, V = np.linalg.eigh(G)
        c = np.einsum("rji,rj->ri", V, w0 - ws)
        decay = np.exp(-lam[:, None, :] * t[None, :, None])
        return ws[:, None] + np.einsum("rij,rtj->rti", V, c[:, None] * decay)
    out = np.empty((G.shape[0], t.size, G.shape[-1]))
    w, now = np.array(w0, dtype=np.float64), 0.0
    for j, target in enumerate(t):
        while now < target - 1e-12:
            h = min(dt, target - now)
            u = w + h * (a - np.einsum("rij,rj->ri", G, w))
            w = np.sign(u) * np.maximum(np.abs(u) - h * lambda1, 0.0)
            now += h
        out[:, j] = w
    return out


def _weights_at(G, a, w0, t_per_run):
    """Closed-form w(t_r) for one time per data set (lambda1 = 0), shape (R, D)."""
    ws = np.linalg.solve(G, a[..., None])[..., 0]
    lam, V = np.linalg.eigh(G)
    c = np.einsum("rji,rj->ri", V, w0 - ws) * np.exp(-lam * t_per_run[:, None])
    return ws + np.einsum("rij,rj->ri", V, c)


@dataclass
class BallFlow:
    """Result of :func:`simulate_gradient_flow` (R data sets, T recorded times).

    Attributes
    ----------
    times : ndarray, shape (T,)
    test_error : ndarray, shape (R, T)
        Population test error (cap fraction) along the flow.
    train_zero : ndarray of bool, shape (R, T)
        Whether every training point is classified correctly.
    t_train, t_eps, t_grok : ndarray, shape (R,)
        Times at which training / test error reach zero under the ``definition`` of
        :func:`simulate_gradient_flow` (``nan`` if never), refined by bisection between records
        when ``lambda1 = 0``; ``t_grok = t_eps - t_train``.
    w0, w_final : ndarray, shape (R, D)
        Initial and stationary weights.
    final_test_error : ndarray, shape (R,)
        Test error of the stationary weights (0: the data set groks).
    """

    times: np.ndarray
    test_error: np.ndarray
    train_zero: np.ndarray
    t_train: np.ndarray
    t_eps: np.ndarray
    t_grok: np.ndarray
    w0: np.ndarray
    w_final: np.ndarray
    final_test_error: np.ndarray


def _initial_weights(R: int, D: int, sigma0: float, init: str, rng: np.random.Generator) -> np.ndarray:
    w0 = sigma0 * rng.standard_normal((R, D))
    if init == "perp":
        w0[:, 0] = 0.0
    elif init != "gaussian":
        raise ValueError(f"init must be 'perp' or 'gaussian', got {init!r}")
    return w0


def _first_zero_index(ok: np.ndarray, definition: str) -> tuple:
    """Index of the first record with ok (``"first_zero"``) or from which ok stays True
    (``"stays_zero"``), per row (R,), and whether it exists."""
    hit = ok
    if definition == "stays_zero":
        hit = np.flip(np.logical_and.accumulate(np.flip(ok, -1), axis=-1), -1)
    return np.argmax(hit, axis=-1), hit.any(axis=-1)


def simulate_gradient_flow(
    n: int,
    D: int,
    eps: float,
    n_datasets: int,
    rng: np.random.Generator,
    *,
    lambda1: float = 0.0,
    lambda2: float = 0.0,
    sigma0: float = 1.0,
    init: str = "perp",
    times: Optional[Any] = None,
    dt: float = 1e-3,
    refine: int = 30,
    chunk: int = 256,
    definition: str = "first_zero",
) -> BallFlow:
    """Monte Carlo of gradient flow on sampled ball data sets (finite ``n``, no mean field).

    Parameters
    ----------
    n, D, eps : int, int, float
        Samples per class, dimension, half-distance of the ball centres.
    n_datasets : int
        R independent data sets (each with its own initial weights).
    rng : numpy.random.Generator
    lambda1, lambda2 : float
    sigma0 : float
        Scale of the initial weights.
    init : {"perp", "gaussian"}
        ``"perp"``: ``w_1(0) = 0``, ``w_perp(0) ~ N(0, sigma0^2)`` (the setting of the two-branch
        theory); ``"gaussian"``: ``w(0) ~ N(0, sigma0^2 I)``.
    times : array-like, shape (T,), optional
        Record times (default: 400 points, dense near 0 and out to 40 slow relaxation times).
    dt : float
        Euler step for ``lambda1 > 0``.
    refine : int
        Bisection steps for ``t_train`` and ``t_eps`` between records (``lambda1 = 0`` only; 0 to
        disable).
    chunk : int
        Data sets per block when counting training errors (memory ``chunk * T * 2n``).
    definition : {"first_zero", "stays_zero"}
        Grokking-time convention (:func:`tnattn.metrics.zero_times`); the default is the paper's
        (arXiv:2210.15435, Sec. 3: the first time the error is zero).

    Returns
    -------
    BallFlow
    """
    from tnattn.metrics import check_definition

    check_definition(definition)
    D = _check_D(D)
    _check_nonneg(lambda1=lambda1, lambda2=lambda2, sigma0=sigma0)
    X, y = sample_datasets(n_datasets, n, D, eps, rng)
    G, a = moments(X, y, lambda2)
    w0 = _initial_weights(n_datasets, D, sigma0, init, rng)
    k_slow = lambda2 + 1.0 / (D + 2)
    if times is None:
        times = np.concatenate([[0.0], np.geomspace(1e-3, 40.0 / k_slow, 399)])
    times = np.asarray(times, dtype=np.float64)
    W = flow_weights(G, a, w0, times, lambda1, dt=dt)  # (R, T, D)
    E = test_error_of_weights(W, eps)
    yX = X * y[None, :, None]  # a point is right when w . (y x) > 0
    train_zero = np.empty(E.shape, dtype=bool)
    for s in range(0, n_datasets, chunk):
        m = np.einsum("rtd,rpd->rtp", W[s : s + chunk], yX[s : s + chunk])
        train_zero[s : s + chunk] = (m > 0).all(-1)
    w_final = stationary_weights(G, a, lambda1)
    final_E = test_error_of_weights(w_final, eps)

    def first_times(ok, predicate):
        idx, exists = _first_zero_index(ok, definition)
        t = np.where(exists, times[idx], np.nan)
        if refine and lambda1 == 0:
            # Bisection between the failing record before it and the first success.
            sel = exists & (idx > 0)
            lo = times[np.maximum(idx - 1, 0)].copy()
            hi = times[idx].copy()
            for _ in range(refine):
                mid = 0.5 * (lo + hi)
                good = predicate(mid)
                hi = np.where(sel & good, mid, hi)
                lo = np.where(sel & ~good, mid, lo)
            t = np.where(sel, hi, t)
        return t

    def test_ok(t):
        return test_error_of_weights(_weights_at(G, a, w0, t), eps) == 0

    def train_ok(t):
        w = _weights_at(G, a, w0, t)
        return (np.einsum("rd,rpd->rp", w, yX) > 0).all(-1)

    # Errors that are still nonzero at the last record never reached zero.
    t_eps = first_times(E == 0, test_ok)
    t_train = first_times(train_zero, train_ok)
    return BallFlow(times, E, train_zero, t_train, t_eps, t_eps - t_train, w0, w_final, final_E)


def grokking_probability_mc(
    n: int,
    D: int,
    eps: float,
    n_datasets: int,
    rng: np.random.Generator,
    *,
    lambda1: float = 0.0,
    lambda2: float = 0.0,
    chunk: int = 4096,
) -> tuple:
    """Monte Carlo grokking probability: fraction of data sets whose stationary weights have zero
    test error (``h >= 1``).

    Returns
    -------
    (p, stderr) : (float, float)
        Estimate and binomial standard error.
    """
    D = _check_D(D)
    hits = 0
    for s in range(0, n_datasets, chunk):
        m = min(chunk, n_datasets - s)
        X, y = sample_datasets(m, n, D, eps, rng)
        G, a = moments(X, y, lambda2)
        w = stationary_weights(G, a, lambda1)
        hits += int(np.sum(overlap(w, eps) >= 1.0))
    from tnattn.metrics import binomial_stderr

    p = hits / n_datasets
    return p, float(binomial_stderr(p, n_datasets))


# ---------------------------------------------------------------------------------------------
# Mean-field two-branch grokking-time theory
# ---------------------------------------------------------------------------------------------


def mean_field_rates(eps: float, D: int, lambda2: float = 0.0) -> tuple:
    """``(k1, k, w1*)``: fast rate ``eps^2 + 1/(D+2) + lambda2``, slow rate
    ``lambda_{2,D} = 1/(D+2) + lambda2`` and stationary ``w_1 = eps / k1``."""
    D = _check_D(D)
    _check_nonneg(lambda2=lambda2)
    k = 1.0 / (D + 2) + lambda2
    k1 = eps**2 + k
    return k1, k, eps / k1


def fast_branch_weight(
    eps: float, D: int, lambda2: float = 0.0, sigma0: float = 1.0, t: Optional[float] = None
) -> float:
    """Weight of the fast branch (``init="perp"``, mean field).

    ``t=None``: the scale-separated limit ``p_fast = P(chi^2_{D-1} < (eps^2 - 1) w1*^2 / sigma0^2)``
    -- the test error vanishes as soon as ``w_1`` has relaxed iff ``|w_perp(0)| < p_c``.
    With ``t``: the exact mean-field probability that the test error is already zero at time
    ``t``, ``P(chi^2_{D-1} < (eps^2-1) w_1(t)^2 e^{2 k t} / sigma0^2)``.
    """
    D = _check_D(D)
    if eps <= 1:
        raise ValueError(f"eps must be > 1 for zero test error, got {eps}")
    if D == 1:
        return 1.0
    k1, k, w1s = mean_field_rates(eps, D, lambda2)
    if t is None:
        thr = (eps**2 - 1.0) * w1s**2
    else:
        thr = (eps**2 - 1.0) * (w1s * -np.expm1(-k1 * t)) ** 2 * np.exp(2.0 * k * t)
    return float(stats.chi2.cdf(thr / sigma0**2, D - 1))


def _h_slow(s: np.ndarray, eps: float, k: float) -> np.ndarray:
    return eps / np.sqrt(1.0 + (eps**2 - 1.0) * np.exp(2.0 * k * s))


def slow_branch_pdf(s: Any, n: int, eps: float, D: int, lambda2: float = 0.0) -> np.ndarray:
    """Universal slow-branch density of ``t_G`` (mean field, scale-separated limit).

    ``P(t_G >= s) = (1 - E(h(s)))^{2n}`` with ``h(s) = eps / sqrt(1 + (eps^2-1) e^{2 k s})`` and
    ``k = lambda_{2,D}``; the density is ``2n (1 - E)^{2n-1} |E'(h)| |h'(s)|`` (normalised to 1).
    """
    D = _check_D(D)
    _, k, _ = mean_field_rates(eps, D, lambda2)
    s = np.asarray(s, dtype=np.float64)
    h = _h_slow(np.maximum(s, 0.0), eps, k)
    ex = np.exp(2.0 * k * np.maximum(s, 0.0))
    dh = eps * (eps**2 - 1.0) * k * ex * (1.0 + (eps**2 - 1.0) * ex) ** -1.5
    E = test_error(h, D)
    out = 2 * n * (1.0 - E) ** (2 * n - 1) * _test_error_slope(h, D) * dh
    return np.where(s > 0, out, 0.0)


def grokking_time_pdf(
    s: Any,
    n: int,
    eps: float,
    D: int,
    lambda2: float = 0.0,
    sigma0: float = 1.0,
    *,
    nodes: int = 400,
    branches: bool = False,
) -> Any:
    """Mean-field density of ``t_G`` for ``init="perp"``, mixed over ``p0 = |w_perp(0)|``.

    For each ``p0`` (Gauss-Legendre nodes in the chi^2_{D-1} quantile ``u = F(p0^2/sigma0^2)``),
    ``t_eps`` solves ``sqrt(eps^2-1) w_1(t) = p0 e^{-k t}`` (bisection; ``w_1`` rises and the right
    side falls, so the root is unique) and ``p(s | p0) = 2n (1 - E)^{2n-1} |E'(h)| |dh/dt|`` at
    ``t = t_eps - s`` (0 for ``s > t_eps``). Exact within the mean-field model (see module
    docstring), with no scale-separation assumption.

    Parameters
    ----------
    s : array-like
        Grokking times.
    n, eps, D, lambda2, sigma0
        Model parameters (``eps > 1``).
    nodes : int
        Quadrature nodes over ``p0``.
    branches : bool
        Also return the fast (``p0 < p_c``) and slow (``p0 >= p_c``) parts.

    Returns
    -------
    ndarray, or (total, fast, slow) with ``branches=True``
        Densities; ``total`` integrates to 1, ``fast`` to :func:`fast_branch_weight`.
    """
    D = _check_D(D)
    if D < 2:
        raise ValueError("the two-branch law needs D >= 2 (a perpendicular direction)")
    if eps <= 1:
        raise ValueError(f"eps must be > 1, got {eps}")
    k1, k, w1s = mean_field_rates(eps, D, lambda2)
    r = np.sqrt(eps**2 - 1.0)
    s = np.asarray(s, dtype=np.float64)
    flat = s.ravel()
    gx, gw = np.polynomial.legendre.leggauss(nodes)
    u = 0.5 * (gx + 1.0)  # quantiles in (0, 1); weights sum to 1 after halving
    wq = 0.5 * gw
    p0 = sigma0 * np.sqrt(stats.chi2.ppf(u, D - 1))  # (Q,)
    # t_eps(p0): root of g(t) = r w1s (1 - e^{-k1 t}) - p0 e^{-k t}, g(0) < 0, g(inf) > 0.
    lo = np.zeros_like(p0)
    hi = np.full_like(p0, 1.0)
    while True:
        g = r * w1s * -np.expm1(-k1 * hi) - p0 * np.exp(-k * hi)
        if np.all(g > 0):
            break
        hi = np.where(g > 0, hi, 2.0 * hi)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        g = r * w1s * -np.expm1(-k1 * mid) - p0 * np.exp(-k * mid)
        lo, hi = np.where(g > 0, lo, mid), np.where(g > 0, mid, hi)
    t_eps = 0.5 * (lo + hi)
    t = t_eps[None, :] - flat[:, None]  # (K, Q)
    valid = (t > 0) & (flat[:, None] > 0)
    tt = np.where(valid, t, 1.0)
    w1 = w1s * -np.expm1(-k1 * tt)
    pp = p0[None, :] * np.exp(-k * tt)
    nrm = np.sqrt(w1**2 + pp**2)
    h = eps * w1 / nrm
    dw1 = w1s * k1 * np.exp(-k1 * tt)
    dp = -k * pp
    dh = eps * (dw1 * pp**2 - w1 * pp * dp) / nrm**3  # d/dt of eps w1/sqrt(w1^2+p^2)
    E = test_error(h, D)
    dens = 2 * n * (1.0 - E) ** (2 * n - 1) * _test_error_slope(h, D) * np.abs(dh)
    dens = np.where(valid, dens, 0.0)
    fast_mask = p0 < r * w1s
    total = (dens * wq).sum(1).reshape(s.shape)
    if not branches:
        return total
    fast = (dens * (wq * fast_mask)).sum(1).reshape(s.shape)
    return total, fast, total - fast

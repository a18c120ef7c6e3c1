"""Tests of tnattn.metrics on synthetic data with planted answers."""

import math

import numpy as np
import pytest
import torch

from tnattn import metrics


# --------------------------------------------------------------------------- effective dimension
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_effective_dimension_isotropic_gaussian(k):
    rng = np.random.default_rng(k)
    pts = np.concatenate([rng.standard_normal((20000, k)), np.zeros((20000, 10 - k))], axis=1)
    # Random rotation: D_eff must not depend on the axes.
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    assert metrics.effective_dimension(pts @ q) == pytest.approx(k, rel=0.02)


def test_effective_dimension_known_spectrum_and_batch():
    # Two axes with variances 3 and 1: s = (3/4, 1/4), D_eff = exp(H) computed by hand.
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((200000, 2)) * np.sqrt([3.0, 1.0])
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert metrics.effective_dimension(pts) == pytest.approx(expected, rel=0.01)
    batch = torch.randn(3, 5000, 4, generator=torch.Generator().manual_seed(1))
    out = metrics.effective_dimension(batch)
    assert out.shape == (3,)
    assert np.all(np.abs(out - 4) < 0.15)


def test_effective_dimension_rejects_bad_input():
    with pytest.raises(ValueError, match="points"):
        metrics.effective_dimension(np.zeros(5))
    with pytest.raises(TypeError, match="points"):
        metrics.effective_dimension(object())


# ------------------------------------------------------------------------------- grokking times
def test_grokking_times_single_history():
    train = [0.5, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0]
    test = [0.6, 0.4, 0.3, 0.1, 0.0, 0.0, 0.0]
    g = metrics.grokking_times(train, test)
    assert (g.t_train, g.t_eps, g.t_grok) == (2.0, 4.0, 2.0)
    g = metrics.grokking_times(train, test, times=np.arange(7) * 10.0)
    assert (g.t_train, g.t_eps, g.t_grok) == (20.0, 40.0, 20.0)


def test_grokking_times_definitions_and_not_reached():
    train = np.array([[0.3, 0.0, 0.1, 0.0, 0.0], [0.3, 0.2, 0.1, 0.1, 0.1]])
    test = np.array([[0.3, 0.2, 0.0, 0.1, 0.0], [0.3, 0.2, 0.1, 0.1, 0.1]])
    # The paper's definition (default): the first zero.
    g = metrics.grokking_times(train, test)
    np.testing.assert_array_equal(g.t_train, [1.0, np.nan])
    np.testing.assert_array_equal(g.t_eps, [2.0, np.nan])
    g = metrics.grokking_times(train, test, definition="stays_zero")
    np.testing.assert_array_equal(g.t_train, [3.0, np.nan])
    np.testing.assert_array_equal(g.t_eps, [4.0, np.nan])
    assert math.isnan(metrics.grokking_times([0.1, 0.1], [0.1, 0.0]).t_grok)
    with pytest.raises(ValueError, match="definition"):
        metrics.grokking_times(train, test, definition="persistent")


def test_zero_times_skips_unmeasured_records():
    # nan = not measured: never a zero, and no evidence against "stays zero" either.
    err = [0.4, np.nan, 0.0, np.nan, 0.0, 0.2, np.nan, 0.0, np.nan]
    assert metrics.zero_times(err) == 2.0
    assert metrics.zero_times(err, definition="stays_zero") == 7.0
    assert metrics.zero_times(err, np.arange(9) * 5.0, definition="stays_zero") == 35.0
    assert math.isnan(metrics.zero_times([np.nan, 0.1]))


def test_grokking_times_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        metrics.grokking_times([0.0, 0.0], [0.0])


# ---------------------------------------------------------------------------------- loss spikes
def test_detect_loss_spikes_finds_planted_spikes_only():
    rng = np.random.default_rng(3)
    T = 2000
    loss = np.exp(-np.arange(T) / 300.0) * (1 + 0.05 * rng.standard_normal(T)) + 1e-4
    planted = [400, 900, 1500]
    for p in planted:
        loss[p : p + 5] *= 50.0
    found = metrics.detect_loss_spikes(loss)
    np.testing.assert_array_equal(found, planted)
    # The same smooth noisy curve without spikes gives nothing.
    clean = np.exp(-np.arange(T) / 300.0) * (1 + 0.05 * rng.standard_normal(T)) + 1e-4
    assert metrics.detect_loss_spikes(clean).size == 0


def test_detect_loss_spikes_nan_and_args():
    loss = np.ones(50)
    loss[30] = np.nan
    assert list(metrics.detect_loss_spikes(loss)) == [30]
    with pytest.raises(ValueError, match="window"):
        metrics.detect_loss_spikes(loss, window=2)
    with pytest.raises(ValueError, match="loss"):
        metrics.detect_loss_spikes(np.ones((3, 40)))


# ----------------------------------------------------------------------------- power laws / nu
def test_fit_power_law_exact():
    x = np.geomspace(0.01, 1, 20)
    fit = metrics.fit_power_law(x, 3.0 * x**1.7)
    assert fit.exponent == pytest.approx(1.7, abs=1e-10)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-10)


@pytest.mark.parametrize("nu", [0.8, 1.0, 2.0])
def test_fit_critical_exponent_recovers_planted_exponent(nu):
    # Synthetic runs: E(t) = a (t_eps - t)^nu (clipped to 0.5) before t_eps, 0 after, with random
    # t_eps and prefactor a per run and multiplicative noise; time step 0.002.
    rng = np.random.default_rng(7)
    R, t = 200, np.arange(0, 20, 0.002)
    t_eps = rng.uniform(5, 15, R)
    a = rng.uniform(0.02, 0.06, R)
    tau = t_eps[:, None] - t[None]
    E = np.where(tau > 0, np.minimum(a[:, None] * np.clip(tau, 0, None) ** nu, 0.5), 0.0)
    E = E * np.exp(0.1 * rng.standard_normal(E.shape))
    fit = metrics.fit_critical_exponent(E, t, max_error=0.05)
    assert fit.n_runs == R
    assert abs(fit.nu - nu) < max(4 * fit.nu_err, 0.05)
    assert fit.nu_err < 0.1
    # Computing t_eps internally (persistent zero) gives the same answer as passing it.
    fit2 = metrics.fit_critical_exponent(E, t, t_eps=np.ceil(t_eps / 0.002) * 0.002, max_error=0.05)
    assert fit2.nu == pytest.approx(fit.nu, abs=0.02)


def test_fit_critical_exponent_requires_grokked_runs():
    with pytest.raises(ValueError, match="no run"):
        metrics.fit_critical_exponent(np.ones((3, 10)), np.arange(10.0))


def _power_law_run(nu, t_eps, start, a=1e-3):
    """Integer-epoch records of E = a (t_eps - t)^nu from epoch ``start`` on, zero from t_eps."""
    t = np.arange(start, t_eps + 6, dtype=float)
    return t, np.where(t < t_eps, a * np.clip(t_eps - t, 0, None) ** nu, 0.0)


def test_fit_critical_exponent_short_run_contributes_only_where_it_has_data():
    # The scenario: true exponent 2, an explicit window (1, 50). One long run alone gives
    # 2 (integer records, interpolated log-log between them). A short run whose history
    # starts 10 epochs before its t_eps must not hold its first value over the rest of the
    # window (holding it gives 1.79 here).
    t1, e1 = _power_law_run(2.0, 100.0, 0)
    t2, e2 = _power_law_run(2.0, 100.0, 90)
    T = t1.size
    times = np.stack([t1, np.concatenate([np.full(T - t2.size, np.nan), t2])])
    errs = np.stack([e1, np.concatenate([np.full(T - t2.size, np.nan), e2])])
    one = metrics.fit_critical_exponent(errs[:1], times[:1], [100.0], window=(1, 50), n_boot=0)
    both = metrics.fit_critical_exponent(errs, times, [100.0, 100.0], window=(1, 50), n_boot=0)
    assert one.nu == pytest.approx(2.0, abs=1e-6)
    assert both.nu == pytest.approx(one.nu, abs=1e-9)
    assert both.fit_err < 1e-6  # an exact power law: no residuals
    # The short run counts on the grid points it covers (tau <= 10) and nowhere else.
    np.testing.assert_array_equal(both.count, np.where(both.tau <= 10.0, 2, 1))


def test_fit_critical_exponent_bootstrap_covers_truth():
    # Runs with random prefactors and noise, E = a (t_eps - t)^1.5 * noise (mean-one lognormal):
    # the expected aligned mean is a power law with exponent 1.5; the bootstrap interval
    # (scipy.stats.bootstrap over runs) contains it and the error bar matches the scatter.
    rng = np.random.default_rng(3)
    R, t = 60, np.arange(0.0, 200.0, 0.5)
    te = rng.uniform(100, 150, R)
    a = rng.lognormal(np.log(1e-3), 0.5, R)
    noise = rng.lognormal(-0.5 * 0.3**2, 0.3, (R, t.size))
    E = np.where(t[None] < te[:, None], a[:, None] * np.clip(te[:, None] - t[None], 0, None) ** 1.5, 0.0) * noise
    fit = metrics.fit_critical_exponent(E, t, te, window=(2, 50), n_boot=300, seed=1)
    assert fit.nu_ci[0] <= 1.5 <= fit.nu_ci[1]
    assert 0.005 < fit.nu_err < 0.1
    assert abs(fit.nu - 1.5) < 3 * fit.nu_err
    # the regression's own slope error, from the residuals of the noisy mean
    assert 0 < fit.fit_err < 0.1


def test_fit_critical_exponent_argument_errors():
    t, e = _power_law_run(1.0, 50.0, 0)
    with pytest.raises(ValueError, match="window"):
        metrics.fit_critical_exponent(e, t, [50.0], window=(5, 2))
    with pytest.raises(ValueError, match="n_boot"):
        metrics.fit_critical_exponent(e, t, [50.0], n_boot=-1)
    with pytest.raises(ValueError, match="definition"):
        metrics.fit_critical_exponent(e, t, definition="nope")


# ------------------------------------------------------------------------------------------- xi
@pytest.mark.parametrize("xi", [0.3, 0.6])
def test_boundary_divergence_xi_recovers_planted_divergence(xi):
    # X = U^(1/(1-xi)) has density (1-xi) x^(-xi) on [0, 1]: a divergence delta^-xi at x = 0.
    rng = np.random.default_rng(11)
    x = rng.uniform(size=400000) ** (1.0 / (1.0 - xi))
    fit = metrics.boundary_divergence_xi(x)
    assert fit.xi == pytest.approx(xi, abs=0.06)


def test_boundary_divergence_xi_bounded_density_and_circular_vectors():
    rng = np.random.default_rng(12)
    assert abs(metrics.boundary_divergence_xi(rng.uniform(size=200000)).xi) < 0.05
    # Angles on an arc straddling the cut at pi, density diverging at one end of the arc.
    xi = 0.5
    u = rng.uniform(size=400000) ** (1.0 / (1.0 - xi))  # divergence at u = 0
    theta = np.pi - 0.3 + 0.6 * u  # arc [pi-0.3, pi+0.3], wraps to negative angles
    vec = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    assert metrics.boundary_divergence_xi(vec).xi == pytest.approx(xi, abs=0.06)


def test_boundary_divergence_xi_interior_spike_is_not_an_edge_divergence():
    # The example: 200,000 uniform samples plus 4,000 at exactly 0.37. The largest density
    # anywhere sits on the spike (the paper's literal "max density" reads about 0.5); the edges are
    # flat.
    rng = np.random.default_rng(21)
    x = np.concatenate([rng.uniform(size=200000), np.full(4000, 0.37)])
    fit = metrics.boundary_divergence_xi(x)
    assert abs(fit.xi) < 0.05
    assert abs(fit.xi_lower) < 0.05 and abs(fit.xi_upper) < 0.05
    assert metrics.boundary_divergence_xi(x, method="max_density").xi > 0.4
    assert fit.edge_density.shape == (6, 2)


def test_boundary_divergence_xi_reports_both_edges():
    rng = np.random.default_rng(22)
    u = rng.uniform(size=200000)
    # u**2 has density 1/(2 sqrt(x)): xi = 1/2 at the lower edge, bounded (1/2) at the upper one.
    fit = metrics.boundary_divergence_xi(u**2)
    assert fit.xi_lower == pytest.approx(0.5, abs=0.05)
    assert abs(fit.xi_upper) < 0.05
    assert fit.xi == fit.xi_lower
    # Mirrored: the divergence moves to the upper edge.
    fit = metrics.boundary_divergence_xi(1.0 - u**2)
    assert fit.xi_upper == pytest.approx(0.5, abs=0.05) and abs(fit.xi_lower) < 0.05
    uni = metrics.boundary_divergence_xi(u)
    assert abs(uni.xi_lower) < 0.05 and abs(uni.xi_upper) < 0.05
    with pytest.raises(ValueError, match="method"):
        metrics.boundary_divergence_xi(u, method="peak")


def test_xi_star_picks_max_class():
    rng = np.random.default_rng(13)
    P = 200000
    lab = rng.integers(0, 2, P)
    # Class 1 has divergences 0.5 (left) and 0.3 (right); class 0 is uniform on both sides.
    u = rng.uniform(size=P)
    left = np.where(lab == 1, u ** (1 / 0.5), u)
    right = np.where(lab == 1, rng.uniform(size=P) ** (1 / 0.7), rng.uniform(size=P))
    best, per = metrics.xi_star(left, right, lab)
    assert best == pytest.approx(0.8, abs=0.1)
    assert set(per) == {0.0, 1.0}


# ---------------------------------------------------------------------------- class separation
def _ball(rng, n, D):
    g = rng.standard_normal((n, D))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return g * rng.uniform(size=(n, 1)) ** (1.0 / D)


@pytest.mark.parametrize("eps", [1.2, 1.6])
def test_class_separation_on_ball_model(eps):
    rng = np.random.default_rng(5)
    D, n = 3, 8000
    e1 = np.eye(D)[0]
    pts = np.concatenate([_ball(rng, n, D) + eps * e1, _ball(rng, n, D) - eps * e1])
    lab = np.concatenate([np.ones(n), -np.ones(n)])
    assert metrics.class_separation(pts, lab) == pytest.approx(eps, abs=0.02)
    assert metrics.class_separation(pts, lab, method="gap") == pytest.approx(eps, abs=0.03)
    with pytest.raises(ValueError, match="method"):
        metrics.class_separation(pts, lab, method="nope")


def test_class_separation_spread_units_hand_computed():
    # Classes {(2, +-1)} and {(-2, +-1)}: centroids (+-2, 0), mean squared distance to the
    # centroid 1 (root intra-class variance 1), closest opposite points 4 apart: eps = 4.
    pts = np.array([[2.0, 1.0], [2.0, -1.0], [-2.0, 1.0], [-2.0, -1.0]])
    lab = np.array([1, 1, -1, -1])
    assert metrics.class_separation(pts, lab, method="spread") == pytest.approx(4.0)
    # Gap units: radius 1, gap 4 -> 1 + 4 / 2 = 3; centroid: (4 / 2) / 1 = 2.
    assert metrics.class_separation(pts, lab, method="gap") == pytest.approx(3.0)
    assert metrics.class_separation(pts, lab) == pytest.approx(2.0)


def test_binomial_stderr_hand_values_and_floor():
    # sqrt(0.5 * 0.5 / 100) = 0.05; at p = 0 (and 1) p(1-p) is floored at 1/n: sqrt(0.01 / 100) = 0.01.
    assert metrics.binomial_stderr(0.5, 100) == pytest.approx(0.05)
    np.testing.assert_allclose(metrics.binomial_stderr(np.array([0.0, 1.0, 0.5]), 100), [0.01, 0.01, 0.05])

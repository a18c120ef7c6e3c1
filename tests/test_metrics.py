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


def test_grokking_times_persistent_and_not_reached():
    train = np.array([[0.3, 0.0, 0.1, 0.0, 0.0], [0.3, 0.2, 0.1, 0.1, 0.1]])
    test = np.array([[0.3, 0.2, 0.0, 0.1, 0.0], [0.3, 0.2, 0.1, 0.1, 0.1]])
    g = metrics.grokking_times(train, test)
    np.testing.assert_array_equal(g.t_train, [3.0, np.nan])
    np.testing.assert_array_equal(g.t_eps, [4.0, np.nan])
    g = metrics.grokking_times(train, test, persistent=False)
    np.testing.assert_array_equal(g.t_train, [1.0, np.nan])
    np.testing.assert_array_equal(g.t_eps, [2.0, np.nan])
    assert math.isnan(metrics.grokking_times([0.1, 0.1], [0.1, 0.0]).t_grok)


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

"""The 1D perceptron grokking model: closed forms against each other and against Monte Carlo."""

import numpy as np
import pytest
from scipy import integrate

from tnattn.theory import perceptron_1d as p1


def test_general_n_formula_equals_n2_closed_form():
    e = np.linspace(0.0, 2.0, 41)
    np.testing.assert_allclose(p1.grokking_probability(e, 2), p1.grokking_probability_n2(e), atol=1e-14)


@pytest.mark.parametrize("n", [1, 3, 10, 60])
def test_grokking_probability_sum_equals_bessel_integral(n):
    e = np.array([0.02, 0.1, 0.4, 1.0])
    np.testing.assert_allclose(
        p1.grokking_probability(e, n), p1.grokking_probability(e, n, method="quad"), rtol=1e-7
    )


@pytest.mark.parametrize("n", [1, 2, 7, 40, 400])
def test_sample_mean_density_forms_agree_and_normalise(n):
    x = np.array([0.0, 1e-6, 0.03, 0.3, 1.5])
    np.testing.assert_allclose(
        p1.sample_mean_density(x, n), p1.sample_mean_density(x, n, method="sum"), rtol=1e-9
    )
    total = integrate.quad(lambda v: float(p1.sample_mean_density(v, n)), -25, 25, points=[0.0], limit=400)[0]
    assert total == pytest.approx(1.0, abs=1e-7)


def test_large_n_probability_is_finite_and_monotone():
    e = np.linspace(0.001, 0.04, 30)
    pr = p1.grokking_probability(e, 5000)
    assert np.all(np.isfinite(pr)) and np.all(np.diff(pr) > 0) and pr[-1] <= 1.0
    # Central limit: 2n xbar / sqrt(2n) -> N(0, 1), so P(|xbar| < e) -> erf(e sqrt(n)).
    from scipy.special import erf

    np.testing.assert_allclose(pr, erf(e * np.sqrt(5000)), atol=3e-3)


def test_bias_closed_form_pieces():
    # Without L1: plain exponential relaxation.
    t = np.linspace(0, 5, 11)
    np.testing.assert_allclose(p1.bias(t, 0.2, 3.0, 0.0, 0.5), 0.2 / 1.5 + (3.0 - 0.2 / 1.5) * np.exp(-1.5 * t))
    # L1 with |xbar| <= lambda1: reaches 0 in finite time and sticks there.
    b = p1.bias(np.array([0.0, 1.0, 50.0]), 0.05, 1.0, 0.1, 0.0)
    assert b[0] == 1.0 and 0 < b[1] < 1.0 and b[2] == 0.0
    # L1 with xbar < -lambda1: crosses 0 and relaxes to (xbar + lambda1)/(1 + lambda2).
    assert p1.bias(80.0, -0.5, 1.0, 0.1, 0.0) == pytest.approx(-0.4)
    # time_to_reach inverts bias on the positive branch.
    tr = p1.time_to_reach(0.7, 0.1, 3.0, 0.05, 0.2)
    assert p1.bias(tr, 0.1, 3.0, 0.05, 0.2) == pytest.approx(0.7)


def test_simulated_grokking_probability_matches_closed_form():
    rng = np.random.default_rng(2024)
    n, eps, l1, l2, R = 2, 0.25, 0.05, 0.2, 20000
    sim = p1.simulate_gradient_flow(n, eps, R, rng, lambda1=l1, lambda2=l2, dt=0.01, t_max=15.0)
    measured = np.mean(sim.final_test_error == 0)
    expected = float(p1.grokking_probability(p1.epsilon_lambda(eps, l1, l2), n))
    sigma = np.sqrt(expected * (1 - expected) / R)
    assert abs(measured - expected) < 4 * sigma


@pytest.mark.parametrize("n,eps,l1,l2", [(2, 0.3, 0.0, 0.0), (3, 0.2, 0.05, 0.1)])
def test_grokking_time_pdf_matches_simulated_histogram(n, eps, l1, l2):
    rng = np.random.default_rng(7 + n)
    R, dt = 20000, 0.005
    sim = p1.simulate_gradient_flow(n, eps, R, rng, lambda1=l1, lambda2=l2, dt=dt, t_max=14.0)
    # The density is that of the data sets that grok (zero final test error).
    tg = sim.t_grok[(sim.final_test_error == 0) & np.isfinite(sim.t_grok)]
    edges = np.linspace(0.0, 3.0, 13)
    counts, _ = np.histogram(tg, bins=edges)
    fine = np.linspace(1e-6, 3.0, 6001)
    pdf = p1.grokking_time_pdf(fine, n, eps, l1, l2)
    cdf = np.concatenate([[0.0], integrate.cumulative_trapezoid(pdf, fine)])
    expected = R * np.diff(np.interp(edges, fine, cdf))
    # Poisson 4.5 sigma plus 3% for the Euler step (times are resolved to dt).
    assert np.all(np.abs(counts - expected) < 4.5 * np.sqrt(expected) + 0.03 * expected + 2), (counts, expected)
    # The defective density integrates to the grokking probability.
    tot = integrate.quad(lambda t: float(p1.grokking_time_pdf(t, n, eps, l1, l2)), 0, np.inf, limit=400)[0]
    assert tot == pytest.approx(float(p1.grokking_probability(p1.epsilon_lambda(eps, l1, l2), n)), rel=1e-6)


def test_grokking_time_formula_matches_simulation_per_dataset():
    rng = np.random.default_rng(1)
    sim = p1.simulate_gradient_flow(4, 0.3, 2000, rng, lambda1=0.02, lambda2=0.1, dt=0.002, t_max=12.0)
    pred = p1.grokking_time(sim.xbar, sim.x_min, 0.3, 0.02, 0.1)
    ok = np.isfinite(pred) & np.isfinite(sim.t_grok)
    assert ok.sum() > 500
    # Forward Euler resolves crossing times to O(dt) (a few steps at most over these horizons).
    assert np.max(np.abs(pred[ok] - sim.t_grok[ok])) < 5 * 0.002


def test_exact_statistics_sampler_matches_full_datasets():
    rng = np.random.default_rng(3)
    n = 4
    xb, xm = p1.sample_statistics(n, 200000, rng)
    pos, neg = p1.sample_datasets(n, 0.5, 200000, rng)
    xb2 = (pos.sum(1) + neg.sum(1)) / (2 * n)
    xm2 = pos.min(1) - 0.5
    for a, b in ((xb, xb2), (xm, xm2), (xb * xm, xb2 * xm2)):
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 4.5 * se


def test_test_error_and_exponent():
    assert p1.test_error(0.3, 0.3) == 0.0
    assert p1.test_error(-1.3, 0.3) == pytest.approx(0.5 * (1 - np.exp(-1.0)))
    assert p1.critical_exponent() == 1.0
    assert p1.near_critical_slope(0.2, 0.1, 0.5) == pytest.approx(0.2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n"):
        p1.grokking_probability(0.1, 0)
    with pytest.raises(ValueError, match="lambda1"):
        p1.bias(1.0, 0.1, 1.0, lambda1=-1.0)
    with pytest.raises(ValueError, match="method"):
        p1.sample_mean_density(0.1, 2, method="x")


def test_simulated_zero_times_under_both_definitions_known_answer():
    # lambda = 0: b(t) = xbar + (b0 - xbar) e^{-t}, falling from b0 = 10. The test error is zero
    # while |b| <= eps, so it reaches zero when b passes eps, at t = ln((b0 - xbar) / (eps - xbar)),
    # and the training error when b passes the smallest positive sample. Where xbar < -eps the test
    # error becomes nonzero again: the paper's first zero is still that time, "stays zero" is nan.
    # (For n = 1, xbar lies between the two samples, so the training error stays zero.)
    n, eps, R, dt, b0, t_max = 1, 0.1, 4000, 1e-3, 10.0, 12.0
    first = p1.simulate_gradient_flow(n, eps, R, np.random.default_rng(5), dt=dt, t_max=t_max)
    stays = p1.simulate_gradient_flow(n, eps, R, np.random.default_rng(5), dt=dt, t_max=t_max,
                                      definition="stays_zero")
    pos, neg = p1.sample_datasets(n, eps, R, np.random.default_rng(5))
    xbar = (pos.sum(1) + neg.sum(1)) / (2 * n)
    np.testing.assert_allclose(first.xbar, xbar)
    reach = xbar < eps - 1e-3  # b passes eps well within t_max
    t_test = np.log((b0 - xbar[reach]) / (eps - xbar[reach]))
    t_train = np.log((b0 - xbar) / (pos.min(1) - xbar))
    # Euler steps: (1 - dt)^k instead of e^{-k dt}, a relative lag of about dt/2, plus one step.
    tol = dt * (0.5 * t_max + 2)
    np.testing.assert_allclose(first.t_eps[reach], t_test, atol=tol)
    assert np.all(np.isnan(first.t_eps[xbar > eps + 1e-3]))  # never reaches the band
    np.testing.assert_allclose(first.t_train, t_train, atol=tol)
    np.testing.assert_allclose(stays.t_train, first.t_train, rtol=0, atol=1e-9)  # (k dt against (k-1) dt + dt)
    left = xbar < -eps - 1e-3  # the test error becomes nonzero again
    assert 0.2 * R < left.sum() < 0.6 * R
    assert np.all(np.isnan(stays.t_eps[left])) and np.all(first.final_test_error[left] > 0)
    grok = np.abs(xbar) < eps - 1e-3  # stationary bias inside the band: both conventions agree
    assert grok.sum() > 0.05 * R
    np.testing.assert_allclose(first.t_eps[grok], stays.t_eps[grok], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="definition"):
        p1.simulate_gradient_flow(n, eps, 3, np.random.default_rng(0), definition="last")

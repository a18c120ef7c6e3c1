"""The D-ball perceptron grokking model: closed forms against Monte Carlo."""

import numpy as np
import pytest
from scipy import integrate

from tnattn import metrics
from tnattn.theory import ball as B


@pytest.mark.parametrize("D", [1, 2, 3, 6])
def test_cap_fraction_matches_monte_carlo(D):
    rng = np.random.default_rng(D)
    P = 400000
    u = B.sample_ball((P,), D, rng)
    for h in (-0.3, 0.0, 0.4, 0.8, 1.0):
        measured = np.mean(u[:, 0] < -h)  # points beyond the plane at distance h from the centre
        expected = float(B.test_error(h, D))
        assert abs(measured - expected) < 4 * np.sqrt(max(expected * (1 - expected), 1e-6) / P) + 1e-6


def test_test_error_of_weights_matches_sampled_test_set():
    rng = np.random.default_rng(0)
    D, eps = 4, 1.1
    X, y = B.sample_datasets(1, 100000, D, eps, rng)
    for w in (np.array([1.0, 0.3, -0.2, 0.1]), np.array([0.2, 1.0, 0.0, 0.5]), np.array([1.0, 0.1, 0, 0])):
        measured = np.mean(np.sign(X[0] @ w) != y)
        expected = float(B.test_error_of_weights(w, eps))
        assert abs(measured - expected) < 4 * np.sqrt(max(expected * (1 - expected), 1e-6) / y.size) + 1e-6


@pytest.mark.parametrize("D", [2, 3, 5])
def test_critical_exponent_from_closed_form_and_simulated_flows(D):
    # Closed form: E ~ (1 - h)^((D+1)/2) as h -> 1.
    d = np.geomspace(1e-6, 1e-4, 10)
    fit = metrics.fit_power_law(d, B.test_error(1 - d, D))
    assert fit.exponent == pytest.approx(B.critical_exponent(D), abs=1e-3)
    # Simulated flows (finite data sets) aligned at their bisection-refined t_eps: the same
    # exponent. Wide initial weights put most runs on the slow branch, where h(t) is nearly linear
    # over the fit window (the asymptotic law needs tau << the time scale of h).
    rng = np.random.default_rng(10 + D)
    t = np.linspace(0, 40, 4001)
    sim = B.simulate_gradient_flow(200, D, 1.3, 60, rng, times=t, sigma0=3.0)
    ok = np.isfinite(sim.t_eps) & (sim.t_eps > 1.0)
    assert ok.sum() > 40
    nu = metrics.fit_critical_exponent(sim.test_error[ok], t, sim.t_eps[ok], max_error=3e-3, n_boot=50)
    assert abs(nu.nu - B.critical_exponent(D)) < max(4 * nu.nu_err, 0.06)


def test_xi_generalisation_and_inverse():
    assert B.critical_exponent(3, 0.5) == pytest.approx(1.5)
    assert B.predicted_xi(3.0, B.critical_exponent(3.0, 0.4)) == pytest.approx(0.4)


def test_stationary_lasso_solution_and_proximal_flow():
    rng = np.random.default_rng(4)
    X, y = B.sample_datasets(50, 10, 5, 1.05, rng)
    G, a = B.moments(X, y, 0.01)
    lam1 = 0.05
    w = B.stationary_weights(G, a, lam1)
    g = a - np.einsum("rij,rj->ri", G, w)  # must lie in lambda1 * subdifferential of |w|_1
    nz = np.abs(w) > 1e-10
    assert np.allclose(g[nz], lam1 * np.sign(w[nz]), atol=1e-7)
    assert np.all(np.abs(g[~nz]) <= lam1 + 1e-7)
    # The proximal flow integrator reaches the same fixed point.
    wt = B.flow_weights(G, a, rng.standard_normal((50, 5)), [200.0], lam1, dt=0.01)[:, 0]
    np.testing.assert_allclose(wt, w, atol=1e-4)
    # lambda1 = 0: the closed-form flow reaches G^-1 a and starts at w0.
    w0 = rng.standard_normal((50, 5))
    traj = B.flow_weights(G, a, w0, [0.0, 1e4])
    np.testing.assert_allclose(traj[:, 0], w0, atol=1e-12)
    np.testing.assert_allclose(traj[:, 1], B.stationary_weights(G, a), atol=1e-8)


def test_grokking_probability_trends():
    rng = np.random.default_rng(5)
    R, n, eps = 3000, 20, 1.1
    p = {D: B.grokking_probability_mc(n, D, eps, R, rng) for D in (2, 8, 16)}
    # lambda1 = 0: falls with D.
    assert p[2][0] - 4 * p[2][1] > p[8][0] + 4 * p[8][1]
    assert p[8][0] - 4 * p[8][1] > p[16][0] + 4 * p[16][1]
    # 0 < lambda1 < eps: L1 sparsifies w towards e_1 and rescues high D.
    p16 = B.grokking_probability_mc(n, 16, eps, R, rng, lambda1=0.1)
    assert p16[0] - 4 * p16[1] > p[16][0] + 4 * p[16][1]


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_fast_branch_weight_matches_monte_carlo(t):
    rng = np.random.default_rng(int(10 * t))
    D, eps, n, R = 3, 1.3, 300, 4000
    hits = 0
    for _ in range(4):
        X, y = B.sample_datasets(R // 4, n, D, eps, rng)
        G, a = B.moments(X, y)
        w0 = rng.standard_normal((R // 4, D))
        w0[:, 0] = 0.0
        w = B.flow_weights(G, a, w0, [t])[:, 0]
        hits += int(np.sum(B.test_error_of_weights(w, eps) == 0))
    expected = B.fast_branch_weight(eps, D, 0.0, 1.0, t=t)
    sigma = np.sqrt(expected * (1 - expected) / R)
    # 4 sigma plus 0.01 for the finite-n corrections to the mean-field rates.
    assert abs(hits / R - expected) < 4 * sigma + 0.01


def test_two_branch_pdf_normalisation():
    s = np.concatenate([[0.0], np.geomspace(1e-5, 60, 6000)])
    tot, fast, slow = B.grokking_time_pdf(s, 200, 1.5, 3, 0.01, 1.0, branches=True)
    assert np.trapezoid(tot, s) == pytest.approx(1.0, abs=2e-3)
    assert np.trapezoid(fast, s) == pytest.approx(B.fast_branch_weight(1.5, 3, 0.01, 1.0), abs=3e-3)
    assert np.trapezoid(B.slow_branch_pdf(s, 200, 1.5, 3, 0.01), s) == pytest.approx(1.0, abs=2e-3)


def test_grokking_time_pdf_matches_simulated_histogram():
    rng = np.random.default_rng(21)
    D, n, eps, R = 3, 200, 1.3, 1000
    times = np.concatenate([[0.0], np.geomspace(1e-3, 60.0, 150)])
    sim = B.simulate_gradient_flow(n, D, eps, R, rng, times=times)
    tg = sim.t_grok[np.isfinite(sim.t_grok)]
    assert tg.size > 0.95 * R
    edges = np.array([0.0, 0.03, 0.06, 0.1, 0.15, 0.22, 0.32, 0.45, 0.65, 1.0, 2.0])
    counts, _ = np.histogram(tg, edges)
    s = np.concatenate([[0.0], np.geomspace(1e-6, 10.0, 8000)])
    cdf = np.concatenate([[0.0], integrate.cumulative_trapezoid(B.grokking_time_pdf(s, n, eps, D), s)])
    expected = tg.size * np.diff(np.interp(edges, s, cdf))
    # Poisson 4.5 sigma plus 10% for finite-n corrections to the mean-field theory.
    assert np.all(np.abs(counts - expected) < 4.5 * np.sqrt(expected) + 0.1 * expected + 2), (counts, expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="D"):
        B.test_error(0.5, 0)
    with pytest.raises(ValueError, match="init"):
        B.simulate_gradient_flow(5, 2, 1.2, 3, np.random.default_rng(0), init="zeros")
    with pytest.raises(ValueError, match="eps"):
        B.fast_branch_weight(0.9, 3)


def test_simulate_gradient_flow_grokking_time_definitions():
    # The paper's first zero (default) is never later than "stays zero"; both see the same flows.
    kw = dict(n=20, D=3, eps=1.2, n_datasets=40, init="gaussian")
    first = B.simulate_gradient_flow(rng=np.random.default_rng(4), **kw)
    stays = B.simulate_gradient_flow(rng=np.random.default_rng(4), definition="stays_zero", **kw)
    both = np.isfinite(first.t_eps) & np.isfinite(stays.t_eps)
    assert both.sum() > 10
    assert np.all(first.t_eps[both] <= stays.t_eps[both] + 1e-12)
    assert np.array_equal(np.isfinite(first.t_eps), np.isfinite(first.t_eps) | np.isfinite(stays.t_eps))
    with pytest.raises(ValueError, match="definition"):
        B.simulate_gradient_flow(rng=np.random.default_rng(4), definition="x", **kw)


def test_first_zero_index_known_answers():
    # Records ok/not ok per run: the paper's first zero is the first True; "stays zero" the start
    # of the final run of Trues (none if the last record is not ok).
    ok = np.array([[False, True, False, True, True],
                   [True, True, True, True, True],
                   [False, True, True, False, False],
                   [False, False, False, False, False]])
    idx, exists = B._first_zero_index(ok, "first_zero")
    np.testing.assert_array_equal(idx[exists], [1, 0, 1])
    np.testing.assert_array_equal(exists, [True, True, True, False])
    idx, exists = B._first_zero_index(ok, "stays_zero")
    np.testing.assert_array_equal(exists, [True, True, False, False])
    np.testing.assert_array_equal(idx[exists], [3, 0])

"""tnattn.ensemble.nu_budget on synthetic ensembles with a planted exponent."""

import math

import numpy as np
import pytest

from tnattn.ensemble.nu_budget import WINDOW_FAMILY, format_budget, nu_error_budget, subepoch_t_eps


def _ensemble(nu, n=80, T=400, seed=0, noise=0.0):
    """Test errors E = a (t* - t)^nu recorded every epoch (row t = epoch t + 1), with the true zero
    crossing t* uniform between epochs: the recorded t_eps = ceil(t*) is late by up to one epoch."""
    rng = np.random.default_rng(seed)
    t_star = rng.uniform(150, 350, n)
    a = rng.uniform(2e-4, 6e-4, n)
    epochs = np.arange(1, T + 1, dtype=float)
    tau = np.clip(t_star[:, None] - epochs[None], 0, None)
    E = np.minimum(a[:, None] * tau**nu, 0.5)
    if noise:
        E = E * rng.lognormal(-0.5 * noise**2, noise, E.shape)
    t_eps = np.ceil(t_star)
    E[epochs[None] >= t_eps[:, None]] = 0.0
    return E, t_eps, t_star


@pytest.mark.parametrize("nu", [1.0, 2.0])
def test_recorded_t_eps_biases_nu_up_and_interpolation_removes_it(nu):
    E, t_eps, t_star = _ensemble(nu)
    rec = nu_error_budget(E, t_eps, n_boot=50)
    # The paper's procedure on integer epochs overstates nu in the window (1, 10) epochs.
    assert rec["nu"] > nu + 0.1
    assert rec["by_estimate"]["interpolated"] == pytest.approx(nu, abs=0.02)
    # The resolution systematic is the size of that bias, and the total error covers the truth.
    assert rec["resolution_syst"] == pytest.approx(rec["nu"] - rec["by_estimate"]["interpolated"], abs=1e-9)
    assert abs(rec["nu"] - nu) <= rec["total"]
    assert rec["total"] == pytest.approx(math.sqrt(rec["stat"] ** 2 + rec["window_syst"] ** 2 + rec["resolution_syst"] ** 2))
    # Centred on the interpolated t*: nu is right, and the windows agree.
    itp = nu_error_budget(E, t_eps, t_eps_estimate="interpolated", n_boot=50)
    assert itp["nu"] == pytest.approx(nu, abs=0.02)
    assert itp["window_syst"] < 0.02
    assert len(itp["by_window"]) == len(WINDOW_FAMILY)  # (1, 10) is in the family
    assert rec["n_runs"] == 80 and rec["jump_fraction"] == 0.0


def test_interpolated_t_star_matches_the_true_crossing():
    E, t_eps, t_star = _ensemble(1.5, n=20)
    epochs = np.arange(1, E.shape[1] + 1, dtype=float)
    runs = [(epochs[: int(te)], E[e, : int(te)], te) for e, te in enumerate(t_eps)]
    est = subepoch_t_eps(runs, "interpolated", nu=1.5)
    np.testing.assert_allclose(est, t_star, atol=1e-6)
    np.testing.assert_array_equal(subepoch_t_eps(runs, "midpoint"), t_eps - 0.5)
    np.testing.assert_array_equal(subepoch_t_eps(runs, "recorded"), t_eps)
    with pytest.raises(ValueError, match="estimate"):
        subepoch_t_eps(runs, "exact")


def test_statistical_error_from_noisy_runs_and_jumps():
    E, t_eps, _ = _ensemble(1.0, noise=0.3, seed=2)
    # Five runs fall from 30 % to zero within one epoch.
    for e in range(5):
        k = int(t_eps[e]) - 2  # row of the last epoch before t_eps
        E[e, k] = 0.3
    out = nu_error_budget(E, t_eps, t_eps_estimate="interpolated", n_boot=200, seed=1)
    assert out["jump_fraction"] == pytest.approx(5 / 80)
    assert 0.005 < out["stat"] < 0.2
    assert out["nu_ci"][0] < out["nu"] < out["nu_ci"][1]
    text = format_budget([dict(out, label="test")])
    assert text.splitlines()[2].startswith("| test |")


def test_bad_input_and_no_runs():
    E, t_eps, _ = _ensemble(1.0, n=5)
    with pytest.raises(ValueError, match="windows"):
        nu_error_budget(E, t_eps, window=(10, 1))
    with pytest.raises(ValueError, match="t_eps_estimate"):
        nu_error_budget(E, t_eps, t_eps_estimate="x")
    with pytest.raises(ValueError, match="t_eps"):
        nu_error_budget(E, t_eps[:3])
    none = nu_error_budget(E, np.full(5, np.nan))
    assert math.isnan(none["nu"]) and "error" in none


def test_window_systematic_on_a_bent_power_law():
    # E = a tau for tau <= 5 epochs and a 5 (tau/5)^2 beyond (continuous): every window of the
    # family that ends at tau = 5 sees slope 1 exactly, every other one a mix of 1 and 2. The window
    # systematic is half the spread, so (max - 1)/2 with the steepest window below slope 2.
    rng = np.random.default_rng(4)
    n, T = 40, 300
    t_star = rng.uniform(100, 200, n)
    epochs = np.arange(1, T + 1, dtype=float)
    tau = np.clip(t_star[:, None] - epochs[None], 0, None)
    E = np.minimum(1e-3 * np.where(tau <= 5, tau, 5 * (tau / 5) ** 2), 0.5)
    t_eps = np.ceil(t_star)
    E[epochs[None] >= t_eps[:, None]] = 0.0
    out = nu_error_budget(E, t_eps, t_eps_estimate="interpolated", n_boot=0)
    nus = {tuple(b["window"]): b["nu"] for b in out["by_window"]}
    for w in ((1.0, 5.0), (2.0, 5.0)):
        assert nus[w] == pytest.approx(1.0, abs=0.02)
    assert 1.3 < max(nus.values()) < 2.0 and max(nus.values()) == nus[(3.0, 20.0)]
    assert out["window_syst"] == pytest.approx(0.5 * (max(nus.values()) - min(nus.values())))
    assert out["window_syst"] == pytest.approx(0.5 * (nus[(3.0, 20.0)] - 1.0), abs=0.01)

"""Experiment ``perceptron-ball``: the D-ball grokking model, theory against simulation.

Writes ``results.json`` and ``perceptron_ball.png`` into ``config.out``:

* the cap test error ``E(h)`` (regularised incomplete beta) against sampled test sets (paper Fig. 5);
* the critical exponent: simulated flows aligned at ``t_eps``, averaged and fitted, against
  ``nu = (D+1)/2`` (paper Fig. 6);
* the Monte Carlo grokking probability against D for several lambda1 (falls with D at
  lambda1 = 0, rises towards 1 for 0 < lambda1 < eps);
* the two-branch grokking-time density (mean-field theory with its fast and slow branches) against
  the histogram of simulated grokking times.

``t_train`` and ``t_eps`` of the simulated flows follow ``grokking_definition`` (default the
paper's first zero, :func:`tnattn.theory.ball.simulate_gradient_flow`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tnattn import metrics
from tnattn._fields import check_fields, check_ranges, require
from tnattn.experiments._common import check_choices, grokking_definition_field, option as _f, progress_bar, run_locked
from tnattn.metrics import binomial_stderr
from tnattn.theory import ball as B

NAME = "perceptron-ball"


@dataclass
class Config:
    out: str = _f("results/perceptron-ball", "output folder (JSON + PNG)")
    seed: int = _f(0, "seed of the Monte Carlo generator")
    progress: bool = _f(True, "show progress bars")
    D_values: tuple[int, ...] = _f((2, 3, 5), "dimensions for the cap error and nu")
    eps: float = _f(1.3, "half-distance of the ball centres (> 1)")
    n: int = _f(200, "training samples per class of the simulated flows")
    runs: int = _f(100, "simulated flows per dimension for nu")
    lambda2: float = _f(0.0, "L2 strength of the simulated flows")
    sigma0: float = _f(3.0, "scale of the initial weights (nu runs)")
    cap_points: int = _f(100000, "sampled test points per cap-error curve")
    prob_n: int = _f(5, "samples per class for the probability curves")
    prob_eps: float = _f(1.05, "eps for the probability curves")
    prob_D: tuple[int, ...] = _f((2, 4, 8, 12, 16, 24), "dimensions of the probability curves")
    prob_lambda1: tuple[float, ...] = _f((0.0, 0.02, 0.05), "lambda1 values of the probability curves")
    prob_datasets: int = _f(2000, "data sets per probability point")
    time_D: int = _f(3, "dimension of the grokking-time histogram")
    time_eps: float = _f(1.5, "eps of the grokking-time histogram")
    time_sigma0: float = _f(1.0, "initial weight scale of the grokking-time runs")
    time_lambda2: float = _f(0.01, "lambda2 of the grokking-time runs")
    time_runs: int = _f(1500, "simulated flows for the grokking-time histogram")
    grokking_definition: str = grokking_definition_field()

    def __post_init__(self):
        self.D_values, self.prob_D = tuple(self.D_values), tuple(self.prob_D)
        self.prob_lambda1 = tuple(self.prob_lambda1)
        check_fields(self)
        check_ranges(self, positive=("D_values", "n", "runs", "sigma0", "cap_points", "prob_n", "prob_D",
                                     "prob_datasets", "time_D", "time_sigma0", "time_runs", "prob_eps"),
                     nonnegative=("seed", "lambda2", "prob_lambda1", "time_lambda2"),
                     above={"eps": 1.0, "time_eps": 1.0})
        for name in ("D_values", "prob_D", "prob_lambda1"):
            require(len(getattr(self, name)) >= 1, name, "must hold at least one value")
        check_choices(self, "grokking_definition")


def run(config: Config) -> dict:
    """Run the experiment; write ``results.json`` and ``perceptron_ball.png``; return the results."""
    from tnattn.plots.theory import plot_perceptron_ball

    return run_locked(config, _run, name=NAME, plot=plot_perceptron_ball, png="perceptron_ball.png", summary=_summary)


def _run(config: Config) -> dict:
    rng = np.random.default_rng(config.seed)

    cap, critical = {}, {}
    for D in progress_bar(config.D_values, config.progress, "perceptron-ball: cap error and nu"):
        D = int(D)
        u = B.sample_ball((config.cap_points,), D, rng)
        h_mc = np.linspace(-0.5, 0.95, 12)
        mc = np.array([np.mean(u[:, 0] < -h) for h in h_mc])
        h = np.linspace(-0.5, 1.0, 301)
        cap[str(D)] = {
            "h": h,
            "theory": B.test_error(h, D),
            "h_mc": h_mc,
            "mc": mc,
            "mc_stderr": binomial_stderr(mc, config.cap_points),
        }
        # Fine uniform records: the fit window starts at 10 record steps before t_eps.
        t = np.linspace(0.0, 12.0 / (1.0 / (D + 2) + config.lambda2), 6001)
        sim = B.simulate_gradient_flow(config.n, D, config.eps, config.runs, rng, lambda2=config.lambda2,
                                       sigma0=config.sigma0, times=t, definition=config.grokking_definition)
        # Fit on runs that grok after w_1 has relaxed (t_eps > 5/eps^2): there h(t) is nearly
        # linear over the fit window, as the asymptotic law needs; fast-branch runs cross h = 1
        # while h still curves on the window's time scale and bias the slope.
        ok = np.isfinite(sim.t_eps) & (sim.t_eps > 5.0 / config.eps**2)
        entry = {"nu_theory": float(B.critical_exponent(D)), "n_runs": int(ok.sum()), "nu": float("nan"),
                 "nu_err": float("nan"), "tau": [], "mean_error": [], "prefactor": float("nan")}
        if ok.sum() >= 2:
            try:
                fit = metrics.fit_critical_exponent(sim.test_error[ok], t, sim.t_eps[ok], max_error=3e-3, n_boot=100)
                entry.update(nu=fit.nu, nu_err=fit.nu_err, tau=fit.tau, mean_error=fit.mean_error,
                             window=fit.window, prefactor=fit.prefactor)
            except ValueError as exc:
                entry["fit_error"] = str(exc)
        critical[str(D)] = entry

    curves = {}
    grid = [(l1, D) for l1 in config.prob_lambda1 for D in config.prob_D]
    for l1, D in progress_bar(grid, config.progress, "perceptron-ball: grokking probability"):
        p, se = B.grokking_probability_mc(config.prob_n, int(D), config.prob_eps, config.prob_datasets, rng,
                                          lambda1=float(l1))
        c = curves.setdefault(str(l1), {"p": [], "stderr": []})
        c["p"].append(p)
        c["stderr"].append(se)
    probability = {"D": list(config.prob_D), "n": config.prob_n, "eps": config.prob_eps, "curves": curves}

    D, eps, l2, s0 = config.time_D, config.time_eps, config.time_lambda2, config.time_sigma0
    k_slow = 1.0 / (D + 2) + l2
    times = np.concatenate([[0.0], np.geomspace(1e-3, 40.0 / k_slow, 300)])
    sim = B.simulate_gradient_flow(config.n, D, eps, config.time_runs, rng, lambda2=l2, sigma0=s0, times=times,
                                   definition=config.grokking_definition)
    tg = sim.t_grok[np.isfinite(sim.t_grok)]
    s = np.geomspace(1e-4, 10.0 / k_slow, 600)
    total, fast, slow = B.grokking_time_pdf(s, config.n, eps, D, l2, s0, branches=True)
    grokking_time = {
        "D": D, "n": config.n, "eps": eps, "lambda2": l2, "sigma0": s0,
        "t_grok_samples": tg,
        "grid": s,
        "pdf_total": total,
        "pdf_fast": fast,
        "pdf_slow": slow,
        "p_fast": B.fast_branch_weight(eps, D, l2, s0),
        "paper_slow_time": B.paper_slow_branch_time(eps, D, l2),
        "grokked_fraction_mc": float(np.mean(np.isfinite(sim.t_grok))),
        "median_t_grok_mc": float(np.median(tg)) if tg.size else float("nan"),
    }
    return {"cap": cap, "critical": critical, "probability": probability, "grokking_time": grokking_time}


def _summary(results: dict) -> dict:
    """What goes into the JSON: everything except the raw grokking-time samples."""
    summary = dict(results)
    times = results["grokking_time"]
    summary["grokking_time"] = {k: v for k, v in times.items() if k != "t_grok_samples"}
    summary["grokking_time"]["n_samples"] = int(times["t_grok_samples"].size)
    return summary

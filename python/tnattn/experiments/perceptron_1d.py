"""Experiment ``perceptron-1d``: the 1D exponential grokking model, theory against simulation.

Writes ``results.json`` and ``perceptron_1d.png`` into ``config.out``:

* the bias and test error of a few simulated data sets against the closed-form flow (paper Fig. 2);
* the grokking probability against ``eps`` for several ``n`` (closed form, and the Monte Carlo
  fraction of simulated data sets with zero final test error) -- paper Fig. 3;
* the grokking-time density (numerical integration over the joint law of ``(xbar, x_min)``)
  against the histogram of simulated grokking times, without and with regularisation.

A data set groks when its final test error is zero (the theory's grokking probability); its
``t_train`` and ``t_eps`` follow ``grokking_definition`` (default the paper's first zero; in this
model both conventions agree on the data sets that grok). ``transient_zero_mc`` counts the data
sets whose test error is zero for a while on the way to a nonzero final error: under
``"first_zero"`` they have a finite ``t_eps`` but do not grok.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tnattn._fields import check_fields, check_ranges, require
from tnattn.experiments._common import check_choices, grokking_definition_field, option as _f, progress_bar, run_locked
from tnattn.metrics import binomial_stderr
from tnattn.theory import perceptron_1d as p1

NAME = "perceptron-1d"


@dataclass
class Config:
    out: str = _f("results/perceptron-1d", "output folder (JSON + PNG)")
    seed: int = _f(0, "seed of the Monte Carlo generator")
    progress: bool = _f(True, "show progress bars")
    n_values: tuple[int, ...] = _f((1, 2, 5, 20), "samples per class for the probability curves")
    eps_max: float = _f(1.0, "largest eps of the probability curves")
    n_eps: int = _f(9, "eps points with Monte Carlo estimates")
    prob_datasets: int = _f(4000, "simulated data sets per probability point")
    n: int = _f(2, "samples per class for the grokking-time density")
    eps: float = _f(0.3, "half-gap eps for the grokking-time density")
    lambda1: float = _f(0.05, "L1 strength of the regularised density")
    lambda2: float = _f(0.2, "L2 strength of the regularised density")
    time_datasets: int = _f(20000, "simulated data sets per grokking-time histogram")
    dt: float = _f(0.005, "Euler step of the simulated flows")
    t_max: float = _f(15.0, "horizon of the simulated flows")
    grokking_definition: str = grokking_definition_field()

    def __post_init__(self):
        self.n_values = tuple(self.n_values)
        check_fields(self)
        check_ranges(self, positive=("n_values", "eps_max", "prob_datasets", "n", "eps", "time_datasets", "dt"),
                     nonnegative=("seed", "lambda1", "lambda2"), above={"n_eps": 1})
        require(len(self.n_values) >= 1, "n_values", "must name at least one sample count")
        require(self.t_max > self.dt, "t_max", f"must be > dt ({self.dt}), got {self.t_max}")
        check_choices(self, "grokking_definition")


def run(config: Config) -> dict:
    """Run the experiment; write ``results.json`` and ``perceptron_1d.png``; return the results."""
    from tnattn.plots.theory import plot_perceptron_1d

    return run_locked(config, _run, name=NAME, plot=plot_perceptron_1d, png="perceptron_1d.png", summary=_summary)


def _run(config: Config) -> dict:
    rng = np.random.default_rng(config.seed)

    # Probability against eps: closed form (dense) and simulated flows (points).
    eps_dense = np.linspace(0.0, config.eps_max, 201)
    eps_pts = np.linspace(config.eps_max / config.n_eps, config.eps_max, config.n_eps)
    prob = {}
    steps = [(n, e) for n in config.n_values for e in eps_pts]
    mc = {n: [] for n in config.n_values}
    for n, e in progress_bar(steps, config.progress, "perceptron-1d: probability"):
        sim = p1.simulate_gradient_flow(int(n), float(e), config.prob_datasets, rng, dt=0.02, t_max=config.t_max)
        mc[n].append(float(np.mean(sim.final_test_error == 0)))
    for n in config.n_values:
        p_mc = np.asarray(mc[n])
        prob[str(n)] = {
            "eps": eps_dense,
            "theory": p1.grokking_probability(eps_dense, int(n)),
            "eps_mc": eps_pts,
            "mc": p_mc,
            "mc_stderr": binomial_stderr(p_mc, config.prob_datasets),
        }

    # Grokking-time density, plain and regularised.
    times = {}
    settings = [("none", 0.0, 0.0), ("L1+L2", config.lambda1, config.lambda2)]
    example = None
    for label, l1, l2 in progress_bar(settings, config.progress, "perceptron-1d: grokking times"):
        sim = p1.simulate_gradient_flow(
            config.n, config.eps, config.time_datasets, rng, lambda1=l1, lambda2=l2, dt=config.dt,
            t_max=config.t_max, record_every=max(1, int(round(0.05 / config.dt))) if example is None else None,
            definition=config.grokking_definition,
        )
        grokked = sim.final_test_error == 0
        tg = sim.t_grok[grokked & np.isfinite(sim.t_grok)]
        hi = float(np.quantile(tg, 0.99)) if tg.size else 1.0
        grid = np.linspace(1e-4, max(hi, 1e-3), 300)
        el = float(p1.epsilon_lambda(config.eps, l1, l2))
        times[label] = {
            "lambda1": l1,
            "lambda2": l2,
            "t_grok_samples": tg,
            "grid": grid,
            "pdf_conditional": p1.grokking_time_pdf(grid, config.n, config.eps, l1, l2, conditional=True),
            "probability_theory": float(p1.grokking_probability(el, config.n)),
            "probability_mc": float(np.mean(grokked)),
            "transient_zero_mc": int(np.sum(~grokked & np.isfinite(sim.t_eps))),
            "mean_t_grok_mc": float(tg.mean()) if tg.size else float("nan"),
        }
        if example is None:
            k = min(6, config.time_datasets)
            b_theory = p1.bias(sim.times[None, :], sim.xbar[:k, None], 10.0, l1, l2)
            example = {
                "times": sim.times,
                "bias_sim": sim.bias[:k],
                "bias_theory": b_theory,
                "test_error_sim": sim.test_error[:k],
                "train_error_sim": sim.train_error[:k],
                "eps": config.eps,
            }
    return {
        "probability": prob,
        "grokking_time": times,
        "example_flows": example,
        "critical_exponent": p1.critical_exponent(),
    }


def _summary(results: dict) -> dict:
    """What goes into the JSON: everything except the raw grokking-time samples."""
    s = dict(results)
    s["grokking_time"] = {
        k: {kk: vv for kk, vv in v.items() if kk != "t_grok_samples"} | {"n_samples": len(v["t_grok_samples"])}
        for k, v in results["grokking_time"].items()
    }
    return s

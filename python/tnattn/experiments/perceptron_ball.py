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

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tnattn import metrics
from tnattn._fields import check_fields, check_ranges, require
from tnattn.io import result_envelope, write_json
from tnattn.locks import lock_directory
from tnattn.metrics import GROKKING_DEFINITIONS
from tnattn.theory import ball as B

NAME = "perceptron-ball"


@dataclass
class Config:
    out: str = field(default="results/perceptron-ball", metadata={"help": "output folder (JSON + PNG)"})
    seed: int = field(default=0, metadata={"help": "seed of the Monte Carlo generator"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    D_values: tuple[int, ...] = field(default=(2, 3, 5), metadata={"help": "dimensions for the cap error and nu"})
    eps: float = field(default=1.3, metadata={"help": "half-distance of the ball centres (> 1)"})
    n: int = field(default=200, metadata={"help": "training samples per class of the simulated flows"})
    runs: int = field(default=100, metadata={"help": "simulated flows per dimension for nu"})
    lambda2: float = field(default=0.0, metadata={"help": "L2 strength of the simulated flows"})
    sigma0: float = field(default=3.0, metadata={"help": "scale of the initial weights (nu runs)"})
    cap_points: int = field(default=100000, metadata={"help": "sampled test points per cap-error curve"})
    prob_n: int = field(default=5, metadata={"help": "samples per class for the probability curves"})
    prob_eps: float = field(default=1.05, metadata={"help": "eps for the probability curves"})
    prob_D: tuple[int, ...] = field(default=(2, 4, 8, 12, 16, 24), metadata={"help": "dimensions of the probability curves"})
    prob_lambda1: tuple[float, ...] = field(default=(0.0, 0.02, 0.05), metadata={"help": "lambda1 values of the probability curves"})
    prob_datasets: int = field(default=2000, metadata={"help": "data sets per probability point"})
    time_D: int = field(default=3, metadata={"help": "dimension of the grokking-time histogram"})
    time_eps: float = field(default=1.5, metadata={"help": "eps of the grokking-time histogram"})
    time_sigma0: float = field(default=1.0, metadata={"help": "initial weight scale of the grokking-time runs"})
    time_lambda2: float = field(default=0.01, metadata={"help": "lambda2 of the grokking-time runs"})
    time_runs: int = field(default=1500, metadata={"help": "simulated flows for the grokking-time histogram"})
    grokking_definition: str = field(default="first_zero", metadata={"help": "t_train/t_eps: first time with zero error (the paper's) or first time from which it stays zero", "choices": ("first_zero", "stays_zero")})

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
        require(self.grokking_definition in GROKKING_DEFINITIONS, "grokking_definition",
                f"must be one of {GROKKING_DEFINITIONS}, got {self.grokking_definition!r}")


def _tqdm(it, progress, desc):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc)


def run(config: Config) -> dict:
    """Run the experiment; write ``results.json`` and ``perceptron_ball.png``; return the results."""
    config.__post_init__()  # (again: the fields may have been changed after construction)
    # Nothing is resumed (a rerun recomputes everything); the lock keeps two runs from writing one folder.
    with lock_directory(config.out, "experiment directory"):
        return _run(config)


def _run(config: Config) -> dict:
    t_start = time.time()
    rng = np.random.default_rng(config.seed)
    out = Path(config.out)

    cap, critical = {}, {}
    for D in _tqdm(config.D_values, config.progress, "perceptron-ball: cap error and nu"):
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
            "mc_stderr": np.sqrt(np.maximum(mc * (1 - mc), 1.0 / config.cap_points) / config.cap_points),
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
    for l1, D in _tqdm(grid, config.progress, "perceptron-ball: grokking probability"):
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
    results = {
        "cap": cap,
        "critical": critical,
        "probability": probability,
        "grokking_time": grokking_time,
        "seconds": time.time() - t_start,
    }
    from tnattn.plots.theory import plot_perceptron_ball

    plot_perceptron_ball(results, out / "perceptron_ball.png")
    summary = dict(results)
    summary["grokking_time"] = {k: v for k, v in grokking_time.items() if k != "t_grok_samples"}
    summary["grokking_time"]["n_samples"] = int(tg.size)
    write_json(out / "results.json", result_envelope(NAME, config, summary))
    return results

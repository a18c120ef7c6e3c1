"""Experiment ``scenario-b``: frozen random context tensors at D = 2, only C is trained.

Writes ``results.json`` and ``scenario_b.png`` into ``config.out`` and prints a Table-1-style
comparison:

1. grokking probability -- the fraction of random ``A ~ N(0, 1)`` whose stationary linear solution
   classifies a long random test set perfectly -- against lambda1 and lambda2 (same ``A`` samples
   for every setting);
2. for the first ``n_analyse`` accepted tensors (no regularisation): ``C`` trained by gradient flow
   from ``n_inits`` random initialisations; measured ``D_eff``, ``nu`` (with its total
   uncertainty: bootstrap, fit-window and time-resolution parts, :func:`table_1`), ``xi*``,
   ``eps`` and the grokking times, and the predicted ``xi = (D_eff - 2 nu + 1)/2`` of the D-ball
   model.

Also printed and stored: the probability under both conventions for tensors whose dominant
eigenvalue of ``A[0]`` is a complex pair (:data:`tnattn.scenario_b.PROBABILITY_CONVENTIONS`), the
paired difference of every regularised setting to the unregularised one with the smallest
difference the run can detect (:func:`probability_report`), and every analysed tensor under every
estimator choice (:func:`sensitivity_table`; the headline choices are ``--deff-on``,
``--xi-method``, ``--eps-method`` and ``--grokking-definition``).

See :mod:`tnattn.scenario_b` for the pipeline and the documented choices (boundary vectors,
stationary solutions, estimators).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tnattn import scenario_b as sb
from tnattn._fields import check_fields, check_ranges
from tnattn.experiments._common import check_choices, grokking_definition_field, option as _f, progress_bar, run_locked
from tnattn.metrics import EPS_METHODS, XI_METHODS

NAME = "scenario-b"

#: Paper Table 1 (Scenario B, three accepted A), for the printed comparison only.
PAPER_TABLE_1 = [
    {"D_eff": 3.0, "nu": 0.85, "xi_star": 1.2, "xi_predicted": 1.15, "eps": 1.45},
    {"D_eff": 3.8, "nu": 0.75, "xi_star": 1.8, "xi_predicted": 1.65, "eps": 1.46},
    {"D_eff": 3.0, "nu": 0.84, "xi_star": 1.6, "xi_predicted": 1.16, "eps": 1.6},
]


@dataclass
class Config:
    out: str = _f("results/scenario-b", "output folder (JSON + PNG)")
    seed: int = _f(0, "seed of A samples, test sets and initialisations")
    progress: bool = _f(True, "show progress bars")
    n_tensors: int = _f(4000, "random A per probability point (paper: 20000)")
    lambda1_values: tuple[float, ...] = _f((1e-5, 1e-4, 1e-3, 1e-2), "L1 strengths (lambda2 = 0)")
    lambda2_values: tuple[float, ...] = _f((1e-4, 1e-3, 1e-2), "L2 strengths (lambda1 = 0)")
    test_sequences: int = _f(1000, "random test sequences for acceptance")
    test_length: int = _f(100, "length of the test sequences")
    chunk: int = _f(2000, "tensors per vectorised block")
    n_analyse: int = _f(3, "accepted tensors to train and measure")
    n_inits: int = _f(100, "random initialisations of C per tensor")
    analysis_sequences: int = _f(100, "test sequences for the measurements")
    deff_on: str = _f("test", "D_eff of the test, train or per-class test features", choices=sb.DEFF_ON)
    xi_method: str = _f("edges", "xi at the edges of the support or from the max density", choices=XI_METHODS)
    eps_method: str = _f("gap", "eps estimator: centroid, gap or spread units", choices=EPS_METHODS)
    grokking_definition: str = grokking_definition_field()

    def __post_init__(self):
        self.lambda1_values, self.lambda2_values = tuple(self.lambda1_values), tuple(self.lambda2_values)
        check_fields(self)
        check_ranges(self, positive=("n_tensors", "test_sequences", "test_length", "chunk", "analysis_sequences"),
                     nonnegative=("seed", "lambda1_values", "lambda2_values", "n_analyse"), above={"n_inits": 1})
        check_choices(self, "deff_on", "xi_method", "eps_method", "grokking_definition")


def _row(k: int, a: sb.TensorAnalysis) -> dict:
    tg = a.t_grok[np.isfinite(a.t_grok)]
    return {
        "tensor": k,
        "D_eff": a.D_eff,
        "nu": a.nu,
        "nu_err": a.nu_err,
        "nu_fit_err": a.nu_fit_err,
        "nu_window_syst": a.nu_window_syst,
        "nu_resolution_syst": a.nu_resolution_syst,
        "nu_total": a.nu_total,
        "nu_by_window": a.nu_by_window,
        "xi_star": a.xi_star,
        "xi_predicted": a.xi_predicted,
        "xi_per_class": a.xi_per_class,
        "eps_gap": a.eps_gap,
        "eps_centroid": a.eps_centroid,
        "eps_spread": a.eps_spread,
        "eps": a.eps,
        "variants": a.variants,
        "options": a.options,
        "grokked_fraction": a.grokked_fraction,
        "error_jump": a.error_jump,
        "median_t_grok": float(np.median(tg)) if tg.size else float("nan"),
        "t_grok": a.t_grok,
        "t_train": a.t_train,
        "t_eps": a.t_eps,
        "curves": a.curves,
    }


def format_table(rows: list) -> str:
    """Table-1-style text: our measurements, then the paper's values for comparison."""
    head = f"{'':8s}{'D_eff':>7s}{'nu':>15s}{'xi*':>7s}{'xi pred':>9s}{'eps gap':>9s}{'eps cen':>9s}{'jump':>9s}{'med t_G':>10s}"
    lines = ["Scenario B (D = 2, rule 30): measured (nu +- total uncertainty)", head]
    for r in rows:
        nu = f"{r['nu']:.3f}+-{r['nu_total']:.3f}"
        lines.append(
            f"A{r['tensor']:<7d}{r['D_eff']:7.2f}{nu:>15s}{r['xi_star']:7.2f}{r['xi_predicted']:9.2f}"
            f"{r['eps_gap']:9.2f}{r['eps_centroid']:9.2f}{r['error_jump']:9.2g}{r['median_t_grok']:10.3g}"
        )
    lines.append("Paper Table 1 (estimator of eps unpublished):")
    for k, p in enumerate(PAPER_TABLE_1):
        lines.append(
            f"paper{k:<3d}{p['D_eff']:7.2f}{p['nu']:15.2f}{p['xi_star']:7.2f}{p['xi_predicted']:9.2f}{p['eps']:9.2f}"
        )
    return "\n".join(lines)


def table_1(rows: list) -> str:
    """Markdown Table 1 with nu's error budget: the bootstrap over initialisations (stat), the
    fit-window systematic, the time-resolution systematic, their total in quadrature
    (:class:`tnattn.scenario_b.TensorAnalysis`) and, for reference, the regression standard error.
    """
    lines = ["| A | D_eff | nu | stat | window syst | resolution syst | **total** | fit s.e. | xi* (measured) | xi predicted = (D_eff − 2nu + 1)/2 | eps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| A{r['tensor']} | {r['D_eff']:.2f} | {r['nu']:.3f} | {r['nu_err']:.3f} | {r['nu_window_syst']:.3f} | "
            f"{r['nu_resolution_syst']:.3f} | **{r['nu_total']:.3f}** | {r['nu_fit_err']:.3f} | {r['xi_star']:.2f} | "
            f"{r['xi_predicted']:.2f} | {r['eps']:.2f} |"
        )
    return "\n".join(lines)


def probability_report(prob: dict) -> dict:
    """Grokking probability under both conventions and, for every regularised setting, the paired
    difference to the unregularised one (first setting) with the smallest difference the run could
    detect (:func:`tnattn.scenario_b.minimum_detectable_effect`, 5 % two-sided, 80 % power).

    Parameters
    ----------
    prob : dict
        Result of :func:`tnattn.scenario_b.grokking_probability` (first setting unregularised).

    Returns
    -------
    dict
        ``rows``: per setting ``lambda1``, ``lambda2``, ``p_all_tensors``, ``p_real_dominant``
        (with ``*_stderr``), ``accepted_fallback``, ``diff`` (p - p_none, all tensors), ``diff_se``
        (paired), ``mde`` (paired) and ``mde_unpaired``; ``text``: a Markdown table.
    """
    n = prob["n_tensors"]
    base = set(prob["accepted_indices"][0])
    p0 = prob["probability"][0]
    conv = prob["by_convention"]
    rows = []
    for j, (l1, l2) in enumerate(zip(prob["lambda1"], prob["lambda2"])):
        acc = set(prob["accepted_indices"][j])
        d = len(acc ^ base) / n
        rows.append({
            "lambda1": l1, "lambda2": l2,
            "p_all_tensors": conv["all_tensors"]["probability"][j], "p_all_tensors_stderr": conv["all_tensors"]["stderr"][j],
            "p_real_dominant": conv["real_dominant"]["probability"][j], "p_real_dominant_stderr": conv["real_dominant"]["stderr"][j],
            "accepted_fallback": prob["accepted_fallback"][j],
            "diff": prob["probability"][j] - p0, "diff_se": math.sqrt(d / n) if j else 0.0,
            "mde": sb.minimum_detectable_effect(p0, n, discordant=d) if j else None,
            "mde_unpaired": sb.minimum_detectable_effect(p0, n) if j else None,
        })  # fmt: skip
    lines = [f"{n} tensors; complex dominant pair: {prob['fallback_fraction']:.1%} of them",
             "| setting | P, all tensors | P, real dominant eigenvalue only | accepted with complex pair | P - P(none) (paired s.e.) | detectable difference (paired / independent) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        name = "none" if not (r["lambda1"] or r["lambda2"]) else (f"L1 {r['lambda1']:g}" if r["lambda1"] else f"L2 {r['lambda2']:g}")
        diff = "–" if r["mde"] is None else f"{100 * r['diff']:+.2f} ± {100 * r['diff_se']:.2f} %"
        mde = "–" if r["mde"] is None else f"{100 * r['mde']:.2f} / {100 * r['mde_unpaired']:.2f} %"
        lines.append(
            f"| {name} | {100 * r['p_all_tensors']:.2f} ± {100 * r['p_all_tensors_stderr']:.2f} % | "
            f"{100 * r['p_real_dominant']:.2f} ± {100 * r['p_real_dominant_stderr']:.2f} % | {r['accepted_fallback']} | {diff} | {mde} |"
        )
    return {"rows": rows, "text": "\n".join(lines)}


def sensitivity_table(rows: list) -> str:
    """Markdown table of every analysed tensor under every estimator choice (Table-1 quantities)."""
    lines = ["| A | nu ± total (fit s.e.) | D_eff test / train / per class | xi* edges / max density | xi pred. (test / train / per class D_eff) | eps centroid / gap / spread |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        v = r["variants"]
        lines.append(
            f"| A{r['tensor']} | {r['nu']:.3f} ± {r['nu_total']:.3f} ({r['nu_fit_err']:.3f}) | "
            + " / ".join(f"{v['D_eff'][k]:.2f}" for k in sb.DEFF_ON) + " | "
            + " / ".join(f"{v['xi_star'][k]:.2f}" for k in ("edges", "max_density")) + " | "
            + " / ".join(f"{v['xi_predicted'][k]:.2f}" for k in sb.DEFF_ON) + " | "
            + " / ".join(f"{v['eps'][k]:.2f}" for k in ("centroid", "gap", "spread")) + " |"
        )
    return "\n".join(lines)


def run(config: Config) -> dict:
    """Run the experiment; write ``results.json`` and ``scenario_b.png``; return the results."""
    from tnattn.plots.theory import plot_scenario_b

    return run_locked(config, _run, name=NAME, plot=plot_scenario_b, png="scenario_b.png", summary=_summary)


def _run(config: Config) -> dict:
    l1 = [0.0] + [float(v) for v in config.lambda1_values] + [0.0] * len(config.lambda2_values)
    l2 = [0.0] + [0.0] * len(config.lambda1_values) + [float(v) for v in config.lambda2_values]
    prob = sb.grokking_probability(
        config.n_tensors, l1, l2, test_sequences=config.test_sequences, test_length=config.test_length,
        seed=config.seed, chunk=config.chunk, progress=config.progress,
    )
    As, us, vs = prob.pop("accepted_tensors")
    picks = list(range(min(config.n_analyse, len(As))))
    picks = progress_bar(picks, config.progress and bool(picks), "scenario B: training C")
    rows = []
    for k in picks:
        a = sb.analyse_tensor(As[k], us[k], vs[k], n_inits=config.n_inits,
                              test_sequences=config.analysis_sequences, seed=config.seed + k,
                              deff_on=config.deff_on, xi_method=config.xi_method, eps_method=config.eps_method,
                              definition=config.grokking_definition)  # fmt: skip
        rows.append(_row(k, a))
    table = format_table(rows)
    report = probability_report(prob)
    sens = sensitivity_table(rows)
    t1 = table_1(rows)
    print(report["text"])
    print(table)
    print("Table 1 with the error budget of nu:")
    print(t1)
    print("Sensitivity of the Table-1 quantities to the estimator choices:")
    print(sens)
    return {
        "probability": prob,
        "tensors": rows,
        "accepted_A": [A.tolist() for A in As[: config.n_analyse]],
        "accepted_boundaries": [[u.tolist(), v.tolist()] for u, v in zip(us[: config.n_analyse], vs[: config.n_analyse])],
        "table": table,
        "table_1": t1,
        "probability_report": report,
        "sensitivity_table": sens,
        "paper_table_1": PAPER_TABLE_1,
    }


def _summary(results: dict) -> dict:
    """What goes into the JSON: everything except the per-site test curves of each tensor."""
    summary = dict(results)
    summary["tensors"] = [
        {k: v for k, v in r.items() if k != "curves"}
        | {"curves": {ck: cv for ck, cv in r["curves"].items() if not ck.startswith("test_")}}
        for r in results["tensors"]
    ]
    return summary

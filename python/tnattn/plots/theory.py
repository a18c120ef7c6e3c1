"""Figures that overlay perceptron-grokking theory on simulation (paper Figs 2, 3, 5, 6, 10-13).

Each function takes the results dict returned by the matching experiment's ``run`` and writes one
PNG with several panels:

* :func:`plot_perceptron_1d` -- flows, grokking probability vs eps, grokking-time densities;
* :func:`plot_perceptron_ball` -- cap test error, aligned critical curves, probability vs D,
  two-branch grokking-time density;
* :func:`plot_scenario_b` -- probability vs lambda, test-error curves, aligned critical curves,
  grokking times, context-angle histograms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tnattn.plots import save_figure  # (importing tnattn.plots selects the Agg backend)

__all__ = ["plot_perceptron_1d", "plot_perceptron_ball", "plot_scenario_b"]


def plot_perceptron_1d(results: dict, path) -> Path:
    """Three panels: example flows, probability vs eps, grokking-time densities."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    ex = results["example_flows"]
    t = np.asarray(ex["times"])
    for k in range(len(ex["bias_sim"])):
        c = f"C{k}"
        ax[0].plot(t, ex["bias_sim"][k], color=c, lw=2, alpha=0.5)
        ax[0].plot(t, np.asarray(ex["bias_theory"])[k], color=c, ls="--", lw=1)
    ax[0].axhline(ex["eps"], color="k", lw=0.8, ls=":")
    ax[0].set_yscale("symlog", linthresh=0.1)
    ax[0].set_xscale("symlog", linthresh=0.1)
    ax[0].set_xlim(0, float(t[-1]))
    ax[0].set_xlabel("t")
    ax[0].set_ylabel("bias b(t)")
    ax[0].set_title("flows: simulation (thick) vs closed form (dashed);\ndotted: b = eps (test error 0 below)")

    for j, (n, d) in enumerate(results["probability"].items()):
        c = f"C{j}"
        ax[1].plot(d["eps"], d["theory"], color=c, label=f"n = {n}")
        ax[1].errorbar(d["eps_mc"], d["mc"], yerr=d["mc_stderr"], fmt="o", color=c, ms=4)
    ax[1].set_xlabel("eps (lambda = 0)")
    ax[1].set_ylabel("grokking probability")
    ax[1].set_title("P(|xbar| < eps): theory (lines) vs simulated flows (points)")
    ax[1].legend()

    for j, (label, d) in enumerate(results["grokking_time"].items()):
        c = f"C{j}"
        tg = np.asarray(d["t_grok_samples"])
        if tg.size:
            ax[2].hist(tg, bins=60, range=(0, float(d["grid"][-1])), density=True, color=c, alpha=0.35,
                       label=f"{label}: simulation")
        ax[2].plot(d["grid"], d["pdf_conditional"], color=c, lw=2,
                   label=f"{label}: theory (l1={d['lambda1']:g}, l2={d['lambda2']:g})")
    ax[2].set_xlabel("grokking time t_G = t_eps - t_train")
    ax[2].set_ylabel("density (given grokking)")
    ax[2].set_title("grokking-time density")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, bbox_inches="tight")


def plot_perceptron_ball(results: dict, path) -> Path:
    """Four panels: cap error, aligned critical curves, probability vs D, two-branch density."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    cap = results["cap"]
    for j, (D, d) in enumerate(cap.items()):
        c = f"C{j}"
        ax[0, 0].plot(d["h"], d["theory"], color=c, label=f"D = {D}")
        ax[0, 0].errorbar(d["h_mc"], d["mc"], yerr=d["mc_stderr"], fmt="o", color=c, ms=3)
    ax[0, 0].set_yscale("log")
    ax[0, 0].set_xlabel("h = eps w_1 / |w|")
    ax[0, 0].set_ylabel("test error")
    ax[0, 0].set_title("cap fraction: theory (lines) vs sampled test sets (points)")
    ax[0, 0].legend()

    for j, (D, d) in enumerate(results["critical"].items()):
        c = f"C{j}"
        tau, m = np.asarray(d["tau"]), np.asarray(d["mean_error"])
        ok = m > 0
        ax[0, 1].loglog(tau[ok], m[ok], "o", ms=3, color=c,
                        label=f"D={D}: nu = {d['nu']:.3f} +- {d['nu_err']:.3f} (theory {d['nu_theory']:.1f})")
        if np.isfinite(d["nu"]):
            ref = d["prefactor"] * tau ** d["nu_theory"]
            ax[0, 1].loglog(tau, ref, "--", color=c, lw=1)
    ax[0, 1].set_xlabel("t_eps - t")
    ax[0, 1].set_ylabel("<test error> (runs aligned at t_eps)")
    ax[0, 1].set_title("critical behaviour; dashed: slope (D+1)/2")
    ax[0, 1].legend(fontsize=8)

    pr = results["probability"]
    for j, (l1, d) in enumerate(pr["curves"].items()):
        ax[1, 0].errorbar(pr["D"], d["p"], yerr=d["stderr"], marker="o", color=f"C{j}", label=f"lambda1 = {l1}")
    ax[1, 0].set_xlabel("D")
    ax[1, 0].set_ylabel("grokking probability (Monte Carlo)")
    ax[1, 0].set_title(f"n = {pr['n']} per class, eps = {pr['eps']}")
    ax[1, 0].legend()

    tg = results["grokking_time"]
    samples = np.asarray(tg["t_grok_samples"])
    samples = samples[samples > 0]
    # Densities per unit ln t_G (t p(t)), so areas on the log axis are probabilities.
    if samples.size:
        lo, hi = np.log10(samples.min()), np.log10(samples.max())
        bins = np.logspace(lo - 0.1, hi + 0.1, 40)
        w = np.full(samples.size, 1.0 / (samples.size * np.log(bins[1] / bins[0])))
        ax[1, 1].hist(samples, bins=bins, weights=w, alpha=0.35, color="C0", label="simulation")
    s = np.asarray(tg["grid"])
    ax[1, 1].plot(s, s * np.asarray(tg["pdf_total"]), "C0", lw=2, label="mean-field theory")
    ax[1, 1].plot(s, s * np.asarray(tg["pdf_fast"]), "C1--", lw=1.2, label=f"fast branch (p_fast = {tg['p_fast']:.2f})")
    ax[1, 1].plot(s, s * np.asarray(tg["pdf_slow"]), "C2--", lw=1.2, label="slow branch")
    ax[1, 1].axvline(tg["paper_slow_time"], color="k", ls=":", label="paper's slow-branch time")
    ax[1, 1].set_xscale("log")
    ax[1, 1].set_xlabel("grokking time t_G")
    ax[1, 1].set_ylabel("density per unit ln t_G")
    ax[1, 1].set_title(f"two-branch t_G law (D={tg['D']}, n={tg['n']}, eps={tg['eps']}, sigma0={tg['sigma0']})")
    ax[1, 1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, bbox_inches="tight")


def plot_scenario_b(results: dict, path) -> Path:
    """Five panels for Scenario B (see module docstring)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(17, 9))
    pr = results["probability"]
    l1 = np.asarray(pr["lambda1"], dtype=float)
    l2 = np.asarray(pr["lambda2"], dtype=float)
    p = np.asarray(pr["probability"])
    se = np.asarray(pr["stderr"])
    base = (l1 == 0) & (l2 == 0)
    for mask, lam, label, c in (((l1 > 0) & (l2 == 0), l1, "L1", "C3"), ((l2 > 0) & (l1 == 0), l2, "L2", "C0")):
        if mask.any():
            order = np.argsort(lam[mask])
            ax[0, 0].errorbar(lam[mask][order], p[mask][order], yerr=se[mask][order], marker="o", color=c, label=label)
    if base.any():
        ax[0, 0].axhspan(p[base][0] - se[base][0], p[base][0] + se[base][0], color="grey", alpha=0.3,
                         label="no regularisation")
    ax[0, 0].set_xscale("log")
    ax[0, 0].set_xlabel("lambda")
    ax[0, 0].set_ylabel("grokking probability")
    ax[0, 0].set_title(f"accepted fraction of {pr['n_tensors']} random A (D = 2)")
    ax[0, 0].legend()

    rows = results["tensors"]
    for j, r in enumerate(rows):
        cv = r["curves"]
        t = np.asarray(cv["times"])
        for k in range(min(3, len(cv["test_error"]))):
            ax[0, 1].plot(t, np.asarray(cv["test_error"][k]), color=f"C{j}", lw=1,
                          label=f"A{j}: test" if k == 0 else None)
            ax[0, 1].plot(t, np.asarray(cv["train_error"][k]), color=f"C{j}", lw=1, ls=":",
                          label=f"A{j}: train" if k == 0 else None)
    ax[0, 1].set_xscale("log")
    ax[0, 1].set_yscale("symlog", linthresh=1e-4)
    ax[0, 1].set_ylim(0, None)
    ax[0, 1].set_xlabel("t (gradient-flow time)")
    ax[0, 1].set_ylabel("error")
    ax[0, 1].set_title("training C from random inits")
    ax[0, 1].legend(fontsize=7)

    for j, r in enumerate(rows):
        cv = r["curves"]
        if cv.get("aligned_tau") is None:
            continue
        tau, m = np.asarray(cv["aligned_tau"]), np.asarray(cv["aligned_mean_error"])
        ok = m > 0
        ax[0, 2].loglog(tau[ok], m[ok], "o-", ms=3, color=f"C{j}", label=f"A{j}: nu = {r['nu']:.2f} +- {r['nu_total']:.2f}")
    ax[0, 2].set_xlabel("t_eps - t")
    ax[0, 2].set_ylabel("<test error>")
    ax[0, 2].set_title("runs aligned at t_eps")
    ax[0, 2].legend(fontsize=8)

    for j, r in enumerate(rows):
        tg = np.asarray(r["t_grok"], dtype=float)
        tg = tg[np.isfinite(tg) & (tg > 0)]
        if tg.size:
            bins = np.logspace(np.log10(tg.min()) - 0.05, np.log10(tg.max()) + 0.05, 30)
            ax[1, 0].hist(tg, bins=bins, alpha=0.4, color=f"C{j}", label=f"A{j}")
    ax[1, 0].set_xscale("log")
    ax[1, 0].set_xlabel("grokking time t_G")
    ax[1, 0].set_ylabel("count (random inits of C)")
    ax[1, 0].set_title("grokking times per accepted A")
    ax[1, 0].legend(fontsize=8)

    if rows and rows[0]["curves"].get("test_angles_left") is not None:
        cv = rows[0]["curves"]
        lab = np.asarray(cv["test_labels"])
        for side, axis in (("left", ax[1, 1]), ("right", ax[1, 2])):
            ang = np.asarray(cv[f"test_angles_{side}"])
            # The contexts live on a small fractal-like set: zoom to the occupied arc.
            span = (float(ang.min()), float(ang.max()))
            for cls, c in ((-1.0, "C0"), (1.0, "C3")):
                axis.hist(ang[lab == cls], bins=300, range=span, histtype="step", color=c,
                          density=True, label=f"class {int(cls):+d}")
            xs = rows[0]["xi_per_class"]
            txt = ", ".join(f"{k}: {v[0 if side == 'left' else 1]:.2f}" for k, v in xs.items())
            axis.set_title(f"A0 {side} context angles (xi per class {txt})", fontsize=9)
            axis.set_yscale("log")
            axis.set_xlabel("context angle (rad)")
            axis.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, bbox_inches="tight")

"""
Run a small Scenario A study and read its statistics
====================================================

Scenario A trains *all* tensors of many students from different random initialisations and
measures the statistics of their grokking transitions: which fraction groks, the distribution of
grokking times, the critical exponent nu of the test error, and the effective dimension D_eff of the
contexts around grokking (see :ref:`science-scenarios` and :ref:`science-metrics`).

The paper's protocol is about 1000 runs per regulariser at D = 10, 20 and 40, up to 7000 epochs each.
Here we run a miniature version, 12 runs per regulariser at D = 6 for up to 400 epochs, which takes
a few seconds; the statistics are correspondingly rough.
"""

# %%
# Run the study
# -------------
# :mod:`tnattn.experiments.scenario_a` trains one ensemble holding ``members`` runs for each
# regulariser (none, L2 1e-4, L1 1e-3) with :class:`tnattn.train.Trainer`: all members
# share each kernel call. Member ``k`` uses the same seed under every regulariser, so the
# regularisers are compared on paired runs.
import tempfile

from tnattn.experiments import scenario_a

out = tempfile.mkdtemp(prefix="tnattn-scenario-a-")
config = scenario_a.Config(
    out=out, D_values=(6,), members=12, max_epochs=400, test_size=50, deff_before=100, deff_after=20, progress=False
)
results = scenario_a.run(config)

# %%
# Read the statistics
# -------------------
# ``results["table"]`` has one row per (D, regulariser): the grokked fraction, the median grokking
# time t_G = t_eps - t_train, and nu with its bootstrap error, next to the paper's value where the
# paper has one (it has none at D = 6). ``results.json`` in ``out`` holds the same data plus the
# grokking-time histograms and the D_eff curves, and ``scenario_a.png`` draws them.
for row in results["table"]:
    print(
        f"{row['regulariser']:>4}: grokked {row['grokked']}/{row['members']} "
        f"(fraction {row['grokked_fraction']:.2f}), median t_G {row['median_t_G']}, "
        f"nu = {row['nu']:.2f} +- {row['nu_err']:.2f} from {row['n_fit']} runs, "
        f"D_eff {row['deff_at_start_of_window']:.2f} -> {row['deff_at_t_eps']:.2f} at t_eps"
    )

# %%
# The figure the experiment wrote: the aligned test error with the nu fit, the grokking-time
# distributions and D_eff around t_eps.
import matplotlib.image as mpimg
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(10, 4))
ax.imshow(mpimg.imread(f"{out}/scenario_a.png"))
ax.set_axis_off()
fig.tight_layout()

# %%
# Per-member results
# ------------------
# The merged ensemble is on disk in ``out/D6``; :func:`tnattn.ensemble.load_merged` reads it back
# with every member's grokking times and its full history.
from tnattn.ensemble import load_merged

merged = load_merged(f"{out}/D6")
print("t_eps of the first members (nan: did not grok):", merged.t_eps[:6])

# %%
# More runs, more processes
# -------------------------
# The same study shards its members over processes with ``torchrun`` (gloo on CPU, nccl on GPU);
# rank 0 merges the shards, and rerunning the same command resumes without retraining finished
# members. The full D = 10 protocol (1000 runs per regulariser, up to 7000 epochs) on two
# processes:
#
# .. code-block:: bash
#
#     torchrun --nproc-per-node 2 -m tnattn.cli experiment scenario-a \
#         --out results/scenario-a-full --D-values 10 --members 1000 --max-epochs 7000
#
# ``tnattn experiment scenario-a --help`` lists every field of the config used above as a flag.

"""
Train one model and watch it grok
=================================

A TN-attention student learns one step of the elementary cellular automaton rule 30 from short
training strings, and we watch the test error on *long* sequences: it reaches exactly zero a few
epochs after the training error does. That delay is grokking (see :ref:`science-theory`).

The run below is the same as ``tnattn train --D 6 --seed 0`` on the command line.
"""

# %%
# Configure and train
# -------------------
# :class:`~tnattn.train.TrainConfig` holds every setting of a run (the command line has one flag per
# field). Its defaults are the author's choices: Adam with learning rate 0.005, squared error on a
# sigmoid, L1 penalty 1e-3, all 256 strings of length 8 cropped at random, and test sets of 1000
# random sequences of length 1000 and 1000 of length 100. We keep the test sets smaller here so the
# page builds quickly, and stop 20 epochs after the test error reached zero.
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from tnattn.train import TrainConfig, train

run_dir = tempfile.mkdtemp(prefix="tnattn-tutorial-")
config = TrainConfig(D=6, seed=0, test_size=200, stop_after_grok=20, progress=False, plots=False, out=run_dir)
result = train(config)
print(f"t_train = {result.t_train}, t_eps = {result.t_eps}, t_G = {result.t_G}, stopped: {result.stop_reason}")

# %%
# Read the history
# ----------------
# Every epoch is one row of :attr:`~tnattn.train.TrainResult.history` (also written to
# ``history.csv`` in the run directory). The test errors are measured on the *test epochs*; the
# other epochs hold ``nan``.
history = result.history
epochs = np.array(history.column("epoch"))
train_error = np.array(history.column("train_error"))
test_error = np.array(history.column("test_error_1000"))
loss = np.array(history.column("loss"))
tested = np.isfinite(test_error)
print(f"{len(epochs)} epochs, {int(tested.sum())} of them test epochs")
print("last test errors:", np.round(test_error[tested][-5:], 4))

# %%
# Plot the transition
# -------------------
# Both errors on a log scale: the training error hits zero at ``t_train`` (it disappears from the
# log plot), the test error follows at ``t_eps``.
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(epochs, loss, color="0.6", label="loss")
ax.semilogy(epochs, np.where(train_error > 0, train_error, np.nan), label="training error")
ax.semilogy(epochs[tested], np.where(test_error[tested] > 0, test_error[tested], np.nan), ".-", label="test error (M = 1000)")
for t, name, side in ((result.t_train, "t_train ", "right"), (result.t_eps, " t_eps", "left")):
    if t is not None:
        ax.axvline(t, ls="--", color="k", lw=0.8)
        ax.text(t, 1.2e-3, name, ha=side, fontsize=8)
ax.set_xlabel("epoch")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# Check it on sequences it never saw
# ----------------------------------
# The trained model is an ordinary ``torch.nn.Module``. Sequences of any length work, because the
# contexts are computed by sliding the same tensors along the sequence.
import torch

import tnattn

rule = tnattn.elementary(30)
x = tnattn.random_sequences(50, 5000, generator=torch.Generator().manual_seed(1))
wrong = (result.model.predict(x) != rule(x)).float().mean().item()
print(f"error on 50 random sequences of length 5000: {wrong}")

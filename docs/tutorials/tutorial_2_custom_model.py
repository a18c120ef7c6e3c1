"""
Use TNAttention inside your own PyTorch model
=============================================

:class:`~tnattn.models.TNAttention` is an ordinary ``torch.nn.Module`` and
:func:`~tnattn.ops.tn_attention` an ordinary differentiable torch operation, so both compose with
the rest of PyTorch: embeddings, heads, optimisers, ``torch.compile``.

Here we put a TN-attention layer between a learned embedding and a small per-site MLP, and train
the whole model with a plain PyTorch loop on the elementary cellular automaton rule 110.
"""

# %%
# The model
# ---------
# The layer accepts integer symbols of shape ``(N, M)`` or real embeddings of shape ``(N, M, d)``;
# with embeddings the context matrix at a site is ``sum_s x[n, i, s] A[s]``. It returns ``c``
# outputs per site; with ``activation="none"`` they are raw logits for the next layer.
import torch
from torch import nn

import tnattn

torch.manual_seed(0)


class RuleLearner(nn.Module):
    """Embedding -> TN attention (c features per site) -> per-site MLP -> one logit per site."""

    def __init__(self, d_embed: int = 3, D: int = 6, c: int = 4):
        super().__init__()
        self.embed = nn.Embedding(2, d_embed)
        gen = torch.Generator().manual_seed(0)
        self.attention = tnattn.TNAttention(D=D, d=d_embed, c=c, activation="none", init_std=0.5, generator=gen)
        self.head = nn.Sequential(nn.Linear(c, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, M) int64
        h = self.attention(self.embed(x))  # (N, M, c)
        return self.head(h)[..., 0]  # (N, M) logits


print(RuleLearner())
print("trainable parameters:", sum(p.numel() for p in RuleLearner().parameters() if p.requires_grad))

# %%
# Train with a plain PyTorch loop
# -------------------------------
# Teacher: rule 110 with open boundaries. Test data: random sequences of lengths 12 and 200, to see
# whether the model learned the *local* rule rather than something that only holds at the training
# length. The training strings have random lengths from 6 to 30, as the paper's random crops do:
# with a single training length a model can also use the distance to the boundary (the contexts
# encode it), which does not carry over to other lengths.
rule = tnattn.elementary(110)
gen = torch.Generator().manual_seed(1)
test_sets = {M: tnattn.random_sequences(200, M, generator=gen) for M in (12, 200)}


def test_errors(model: nn.Module) -> dict:
    with torch.no_grad():
        return {M: round(((model(x) > 0).long() != rule(x)).float().mean().item(), 4) for M, x in test_sets.items()}


def fit(model: nn.Module, lengths: tuple[int, int], steps: int = 400) -> nn.Module:
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    loss_fn = nn.BCEWithLogitsLoss()
    for step in range(1, steps + 1):
        M = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=gen))
        x = tnattn.random_sequences(64, M, generator=gen)
        loss = loss_fn(model(x), rule(x).float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 200 == 0:
            print(f"  step {step:4d}  loss {loss.item():.5f}  test error by length {test_errors(model)}")
    return model


model = fit(RuleLearner(), (6, 30))

# %%
# Look inside: contexts and features
# ----------------------------------
# The layer exposes its intermediate quantities. ``contexts`` returns the normalised left and right
# contexts (the left and right environments of a uniform matrix product state, see
# :ref:`glossary`); ``features`` the feature vectors ``l_i (x) x_i (x) r_i`` on which the output is
# linear.
with torch.no_grad():
    e = model.embed(test_sets[12][:2, :8])
    L, R = model.attention.contexts(e)
    f = model.attention.features(e)
print("contexts:", tuple(L.shape), tuple(R.shape), " features:", tuple(f.shape))
print("context norms (all 1):", L.norm(dim=-1)[0, :4])

# %%
# The fused op on your own parameters
# -----------------------------------
# Without the module, :func:`tnattn.ops.tn_attention` takes the tensors directly and returns the
# local maps ``W`` of shape ``(N, M, d, c)`` in one fused C++ call, with autograd.
d, D, c = 2, 4, 1
A = torch.randn(d, D, D, requires_grad=True)
C = torch.randn(d, D, D, c, requires_grad=True)
u = v = torch.nn.functional.one_hot(torch.tensor(0), D).float()
x = tnattn.random_sequences(3, 10)
W = tnattn.ops.tn_attention(x, A, A, C, u, v)
W.square().sum().backward()
print("W:", tuple(W.shape), " dA:", tuple(A.grad.shape), " dC:", tuple(C.grad.shape))
# The same numbers from the plain-PyTorch reference implementation:
print("max |fused - reference|:", (W - tnattn.reference.tn_attention(x, A, A, C, u, v)).abs().max().item())

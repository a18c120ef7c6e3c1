"""tnattn.ensemble.fused.mse_step against the unfused path (the op on stacked parameters + symbol head + loss)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnattn.ensemble.fused import mse_step, supports
from tnattn.models.functional import Params
from tnattn.models.head import symbol_head_backward, symbol_head_forward
from tnattn.ops import tn_attention
from tnattn.models.head import member_losses_and_grads

F64, F32 = torch.float64, torch.float32
NAMES = ("A_left", "A_right", "C", "u", "v", "scale")

# Every test here runs once per CPU instruction-set path this machine supports (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("cpu_isa")


def make(E, N, M, d, D, *, dtype=F64, seed=0, shared_x=False, shared_A=False, scale=True, per_batch=False):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    AL = rnd(E, d, D, D)
    AR = AL if shared_A else rnd(E, d, D, D)
    b = (E, N, D) if per_batch else (E, D)
    P = Params(AL, AR, rnd(E, d, D, D, 1), rnd(*b), rnd(*b), rnd(E) if scale else None)
    xs = (N, M) if shared_x else (E, N, M)
    x = torch.randint(0, d, xs, generator=g)
    y = torch.randint(0, 2, (E, N, M), generator=g).bool()
    return x, y, P


def unfused(x, y, P, activation, normalize_map):
    """The trainer's unfused path: kernel forward, head and loss by hand, autograd for the kernel."""
    leaves = {n: getattr(P, n).detach().clone().requires_grad_() for n in NAMES if getattr(P, n) is not None}
    if P.A_right is P.A_left:
        leaves.pop("A_right")
    AR = leaves.get("A_right", leaves["A_left"])
    kernel_names = [n for n in leaves if n != "scale"]
    W = tn_attention(x, leaves["A_left"], AR, leaves["C"], leaves["u"], leaves["v"])
    E, N, M = W.shape[:3]
    if normalize_map:
        scale = leaves.get("scale")
        z, saved = symbol_head_forward(W.detach(), x, None if scale is None else scale.detach())
    else:
        idx = (x.expand(E, N, M) if x.dim() == 2 else x).reshape(E, N, M, 1, 1)
        z = W.detach().gather(3, idx).squeeze(3)
    losses, g_logits = member_losses_and_grads(z, y, "mse", activation)
    wrong = ((z[..., 0] > 0) != y).flatten(1).sum(1).double()
    if normalize_map:
        gW, g_scale = symbol_head_backward(saved, g_logits, "scale" in leaves)
    else:
        gW, g_scale = torch.zeros_like(W).scatter_(3, idx, g_logits.unsqueeze(3)), None
    grads = dict(zip(kernel_names, torch.autograd.grad(W, [leaves[n] for n in kernel_names], gW)))
    if g_scale is not None:
        grads["scale"] = g_scale
    return losses.double(), wrong, grads


def compare(x, y, P, activation="sigmoid", normalize_map=True, dtype=F64):
    got_l, got_w, got_g = mse_step(x, y, P, activation=activation, normalize_map=normalize_map)
    want_l, want_w, want_g = unfused(x, y, P, activation, normalize_map)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == F64 else {"rtol": 2e-4, "atol": 2e-6}
    torch.testing.assert_close(got_l, want_l, **tol)
    if dtype == F64:
        assert torch.equal(got_w, want_w)
    else:  # a site with |z| within rounding of 0 may flip
        assert (got_w - want_w).abs().max() <= 1
    assert set(got_g) == set(want_g), (set(got_g), set(want_g))
    for n, w in want_g.items():
        torch.testing.assert_close(got_g[n], w, **tol, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("activation", ["sigmoid", "none"])
@pytest.mark.parametrize("normalize_map", [True, False])
@pytest.mark.parametrize("shared_x", [False, True])
def test_matches_the_unfused_path(activation, normalize_map, shared_x):
    x, y, P = make(3, 11, 7, 2, 10, shared_x=shared_x, seed=1)
    compare(x, y, P, activation, normalize_map)


@pytest.mark.parametrize("kw", [dict(shared_A=True), dict(scale=False), dict(per_batch=True), dict(d=3, D=5),
                                dict(M=1), dict(N=1, D=1), dict(D=33), dict(dtype=F32)])  # fmt: skip
def test_variants(kw):
    dims = dict(E=2, N=9, M=6, d=2, D=4)
    dims.update({k: kw.pop(k) for k in list(kw) if k in dims})
    dtype = kw.get("dtype", F64)
    x, y, P = make(**dims, seed=2, **kw)
    compare(x, y, P, dtype=dtype)


@pytest.mark.parametrize("dtype,factor", [(F32, 1e-25), (F32, 1e22), (F64, 1e-170)])
def test_maps_whose_squared_norm_leaves_the_range_match_the_scale_safe_head(dtype, factor):
    # C -> factor * C scales every map W by factor, so |W|^2 underflows (or overflows) in dtype;
    # the normalised head is invariant under that, and the unfused head (the trainer's torch path,
    # rescaled by the largest entry) is the oracle. Before the fix the fused head returned 0 (or inf).
    x, y, P = make(2, 9, 5, 2, 6, dtype=dtype, seed=4)
    P = Params(P.A_left, P.A_right, P.C * factor, P.u, P.v, P.scale)
    got_l, got_w, got_g = mse_step(x, y, P, activation="sigmoid", normalize_map=True)
    want_l, want_w, want_g = unfused(x, y, P, "sigmoid", True)
    assert torch.isfinite(got_l).all() and all(torch.isfinite(g).all() for g in got_g.values())
    rel = {"rtol": 1e-4, "atol": 0} if dtype == F32 else {"rtol": 1e-10, "atol": 0}
    torch.testing.assert_close(got_l, want_l, **rel)
    for n, w in want_g.items():
        torch.testing.assert_close(got_g[n], w, rtol=rel["rtol"], atol=1e-6 * float(w.abs().max()),
                                   msg=lambda m, n=n: f"{n}: {m}")  # fmt: skip


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("E,N,M", [(2, 37, 150), (1, 9, 3400)])
def test_long_blocks_match_the_unfused_path(dtype, E, N, M):
    # Lanes-across-sequences step (D <= 12, N filling half a register): M = 150 has more sites per
    # lane than the head's float lane sums hold before moving into double (64) and, with three
    # blocks per member, more than the gradients' lane sums hold before the flush (64);
    # M = 3400 is past the length for which the step keeps the products L^T C (recomputed then).
    x, y, P = make(E, N, M, 2, 10, dtype=dtype, seed=6)
    compare(x, y, P, dtype=dtype)


@settings(max_examples=25, deadline=None)
@given(E=st.integers(1, 4), N=st.integers(1, 12), M=st.integers(1, 9), d=st.integers(2, 3), D=st.integers(1, 12),
       seed=st.integers(0, 2**16), sig=st.booleans(), norm=st.booleans())  # fmt: skip
def test_random_shapes(E, N, M, d, D, seed, sig, norm):
    x, y, P = make(E, N, M, d, D, seed=seed)
    compare(x, y, P, "sigmoid" if sig else "none", norm)


def test_zero_boundary_gives_zero_maps_and_finite_gradients():
    x, y, P = make(2, 5, 4, 2, 3, seed=3)
    P = Params(P.A_left, P.A_right, P.C, torch.zeros_like(P.u), P.v, P.scale)
    losses, wrong, g = mse_step(x, y, P)
    # every map is exactly 0: logit 0, sigmoid 1/2, residual -+1/2 -> mean loss 1/4, all predictions 0
    torch.testing.assert_close(losses, torch.full((2,), 0.25, dtype=F64))
    assert torch.equal(wrong, y.flatten(1).sum(1).double())
    assert all(torch.isfinite(t).all() for t in g.values())
    compare(x, y, P)


def test_bad_input_raises():
    x, y, P = make(2, 4, 3, 2, 3)
    with pytest.raises(ValueError, match="symbols outside"):
        mse_step(torch.full_like(x, 2), y, P)
    with pytest.raises(ValueError, match="y must have shape"):
        mse_step(x, y[:, :2], P)
    with pytest.raises(TypeError, match="y must be an integer or bool"):
        mse_step(x, y.double(), P)
    with pytest.raises(ValueError, match="activation"):
        mse_step(x, y, P, activation="tanh")
    with pytest.raises(ValueError, match="c = 1"):
        mse_step(x, y, Params(P.A_left, P.A_right, torch.cat([P.C, P.C], -1), P.u, P.v, P.scale))
    with pytest.raises(ValueError):  # empty batch
        mse_step(x[:, :0], y[:, :0], P)
    with pytest.raises(ValueError, match="integer symbols"):
        mse_step(torch.rand(2, 4, 3, 2, dtype=F64), y, P)


def test_supports():
    x, y, P = make(2, 4, 3, 2, 3)
    assert supports(x, P, loss="mse", activation="sigmoid")
    assert not supports(x, P, loss="hinge", activation="sigmoid")
    assert not supports(x.double(), P, loss="mse", activation="sigmoid")


def test_trainer_takes_the_fused_step_in_scenario_a_settings_only(monkeypatch):
    from tnattn.train import Trainer
    from tnattn.ensemble import fused as fused_mod
    from tnattn.train import TrainConfig

    calls = []
    real = fused_mod.mse_step
    monkeypatch.setattr(fused_mod, "mse_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    base = dict(D=3, train_length=5, crop_min=3, crop_max=5, batch_size=8, max_epochs=1, test_lengths=(8,),
                test_size=4, deff_probe=0, progress=False, plots=False)  # fmt: skip
    Trainer(TrainConfig(**base), [0, 1]).fit()
    assert len(calls) > 0
    calls.clear()
    Trainer(TrainConfig(**base, loss="hinge"), [0, 1]).fit()
    assert calls == []


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("shared_x", [False, True])
@pytest.mark.parametrize("normalize_map", [True, False])
def test_count_wrong_matches_positive_predictions(dtype, shared_x, normalize_map):
    from tnattn.ensemble.fused import count_wrong
    from tnattn.models.functional import positive as ensemble_positive

    x, y, P = make(4, 19, 7, 2, 10, dtype=dtype, seed=5, shared_x=shared_x)  # a full and a partial block
    P = Params(P.A_left, P.A_right, P.C, P.u, P.v, P.scale * torch.tensor([1.0, -1.0, 0.0, 2.0], dtype=dtype))
    y = y[0] if shared_x else y
    pos = ensemble_positive(P, x, normalize_map=normalize_map)
    want = (pos != y).flatten(1).sum(1).double()
    assert torch.equal(count_wrong(x, y, P, normalize_map=normalize_map), want)
    # integer labels, including ones outside {0, 1}, which are always wrong
    yi = y.long().clone()
    yi.view(-1)[::5] = 3
    want = ((pos != (yi == 1)) | (yi > 1)).flatten(1).sum(1).double()
    assert torch.equal(count_wrong(x, yi, P, normalize_map=normalize_map), want)


def test_count_wrong_rejects_bad_input():
    from tnattn.ensemble.fused import count_wrong

    x, y, P = make(2, 4, 3, 2, 3)
    with pytest.raises(ValueError, match="symbols outside"):
        count_wrong(torch.full_like(x, 2), y, P)
    with pytest.raises(ValueError, match="y must have shape"):
        count_wrong(x, y[:, :1], P)
    with pytest.raises(TypeError, match="labels"):
        count_wrong(x, y.float(), P)


def test_heads_are_options_of_tn_attention_and_work_on_one_model():
    """The fused heads are options of tnattn.ops.tn_attention; on unstacked parameters (one model)
    they give member 0 of the stacked E = 1 call, without the leading E."""
    from tnattn import ops

    x, y, P = make(1, 6, 5, 2, 3, seed=6, shared_x=True)
    y = y[0]
    one = [t[0] for t in (P.A_left, P.A_right, P.C, P.u, P.v)]
    head = ops.SquaredErrorStep(y, P.scale[0])
    res = ops.tn_attention(x, *one, head=head)
    losses, wrong, g = mse_step(x, y, P)
    assert res.losses.shape == () and torch.equal(res.losses, losses[0]) and torch.equal(res.wrong, wrong[0])
    assert res.grads.keys() == g.keys()
    for k, t in res.grads.items():
        assert torch.equal(t, g[k][0]), k
    count = ops.tn_attention(x, *one, head=ops.WrongSiteCount(y, P.scale[0]))
    assert count.shape == () and count.item() == wrong[0].item()
    with pytest.raises(ValueError, match=r"y must have shape \(N, M\)"):
        ops.tn_attention(x, *one, head=ops.SquaredErrorStep(y[None]))
    with pytest.raises(TypeError, match="head must be a SquaredErrorStep or a WrongSiteCount"):
        ops.tn_attention(x, *one, head="mse")


@pytest.mark.parametrize("fields, step", [
    ({}, "fused"),  # Scenario A's setting
    ({"loss": "hinge"}, "head"),
    ({"normalize_map": False}, "fused"),
    ({"normalize_map": False, "loss": "hinge"}, "autograd"),
    ({"random_k": 1, "alphabet": 3, "rule_seed": 4}, "head"),  # c = 3 outputs
])  # fmt: skip
def test_trainer_chooses_its_step_strategy_once(fields, step):
    from tnattn.train import Trainer
    from tnattn.ensemble.steps import STEPS
    from tnattn.train import TrainConfig

    base = dict(D=3, train_length=5, crop_min=3, crop_max=5, batch_size=8, max_epochs=1, test_lengths=(8,),
                test_size=4, deff_probe=0, progress=False, plots=False)  # fmt: skip
    trainer = Trainer(TrainConfig(**{**base, **fields}), [0, 1])
    assert trainer.step.name == step and isinstance(trainer.step, STEPS[step])


@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_the_three_step_strategies_agree(activation):
    # Same group, same parameters: the fused kernel, the hand-differentiated head and plain autograd
    # give the same losses and gradients (they differ in speed only).
    from tnattn.ensemble.steps import AutogradStep, FusedStep, HeadStep
    from tnattn.train.losses import compute_loss

    x, y, P = make(3, 6, 7, 2, 4, dtype=F64, seed=11)
    names = ("A_left", "A_right", "C", "u", "v", "scale")
    leaves = {n: getattr(P, n).detach().clone().requires_grad_() for n in names}
    P = Params(**leaves)
    member_loss = torch.vmap(lambda z, t: compute_loss(z, t, "mse", activation))
    results = [FusedStep(names, activation, True)(P, x, y), HeadStep(names, "mse", activation)(P, x, y),
               AutogradStep(names, True, member_loss)(P, x, y)]  # fmt: skip
    fused_res = results[0]
    for other in results[1:]:
        torch.testing.assert_close(other.losses, fused_res.losses, rtol=1e-10, atol=1e-12)
        for n in names:
            torch.testing.assert_close(other.grads[n], fused_res.grads[n], rtol=1e-8, atol=1e-10, msg=n)

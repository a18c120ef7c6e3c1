"""Norms without overflow or underflow (issue 13 item 3): the reference's contexts, the torch map
normalisation and the ensemble's hand-written symbol head, at parameter scales far outside
float32's squared range. Expected values are closed forms."""

from __future__ import annotations

import pytest
import torch

from tnattn import reference
from tnattn.models.head import SymbolHead, symbol_head_backward, symbol_head_forward
from tnattn.models import TNAttention

F32, F64 = torch.float32, torch.float64


@pytest.mark.parametrize("dtype,s", [(F32, 1e-20), (F32, 1e20), (F32, 1e-35), (F32, 1e36), (F64, 1e-160), (F64, 1e300)])
def test_normalize_is_scale_safe_with_exact_gradient(dtype, s):
    # v = s [3, 4]: v/|v| = [0.6, 0.8]; d(v_0/|v|)/dv = (1/|v|) (e_0 - 0.6 [0.6, 0.8]) = [0.64, -0.48] / (5 s)
    v = (torch.tensor([3.0, 4.0], dtype=F64) * s).to(dtype).requires_grad_()
    out = reference.normalize(v)
    torch.testing.assert_close(out, torch.tensor([0.6, 0.8], dtype=dtype), rtol=2e-6 if dtype == F32 else 1e-14, atol=0)
    (g,) = torch.autograd.grad(out[0], v)
    want = torch.tensor([0.64, -0.48], dtype=F64) / (5 * v.detach().double().abs().max() / 4)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g.double(), want, rtol=1e-5 if dtype == F32 else 1e-13, atol=0)


def test_normalize_exact_zero_rule_kept():
    v = torch.zeros(2, 3, dtype=F32, requires_grad=True)
    out = reference.normalize(v)
    (g,) = torch.autograd.grad(out.sum(), v)
    assert torch.equal(out, torch.zeros_like(v)) and torch.equal(g, torch.zeros_like(v))


@pytest.mark.parametrize("scale", [1e20, 1e-25, 1e30])
def test_reference_contexts_at_extreme_parameter_scales(scale):
    """A[0] = scale * swap, A[1] = scale * identity, u = e_0: the left contexts are e_0 or e_1
    exactly (the parity of the 0s read so far); the unscaled norms over/underflowed to all-zero
    contexts in float32."""
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    A = (torch.stack([swap, torch.eye(2)]) * scale).to(F32)
    x = torch.tensor([[0, 1, 0, 0, 1, 1, 0]])
    u = torch.tensor([1.0, 0.0])
    L = reference.contexts(A, x, u)
    parity = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), (x[0, :-1] == 0).long()]), 0) % 2
    want = torch.nn.functional.one_hot(parity, 2).to(F32)[None]
    assert torch.equal(L, want)
    R = reference.contexts(A, x, u, reverse=True)
    assert torch.equal(R.abs().sum(-1), torch.ones(1, 7))  # unit one-hot vectors, none zero
    assert torch.equal(reference.contexts_vectorized(A, x, u), want)


def _model(C_scale):
    torch.manual_seed(0)
    model = TNAttention(D=3, d=2, c=1, dtype=F32)
    with torch.no_grad():
        model.C.mul_(C_scale)
    return model


@pytest.mark.parametrize("C_scale", [1e-21, 1e21])
def test_torch_head_gradient_finite_at_tiny_and_huge_maps(C_scale):
    """The map normalisation is invariant under C -> s C, so the logits are those of s = 1 and the
    gradient with respect to C is the s = 1 gradient divided by s (the unscaled 1/|W|^2 factor of
    the normalisation's backward overflowed to inf for maps of norm below ~1e-19)."""
    x = torch.randint(0, 2, (4, 6), generator=torch.Generator().manual_seed(1))
    ref_model, model = _model(1.0), _model(C_scale)
    z_ref, z = ref_model.logits(x), model.logits(x)
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-6)
    (g_ref,) = torch.autograd.grad(z_ref.sum(), ref_model.C)
    (g,) = torch.autograd.grad(z.sum(), model.C)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g.double() * C_scale, g_ref.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("s", [1e-20, 1e20, 1e-30])
@pytest.mark.parametrize("symbol", [0, 1])
def test_ensemble_symbol_head_scale_safe(s, symbol):
    """W = s [3, 4] (d = 2, c = 1), scale 2: z = 2 W[x]/|W| = 1.2 or 1.6; dz/dW = (2/(5s)) (e_x -
    (W[x]/|W|) [0.6, 0.8]); dz/dscale = W[x]/|W|."""
    W = (torch.tensor([3.0, 4.0], dtype=F64) * s).to(F32).view(1, 1, 1, 2, 1).requires_grad_()
    scale = torch.tensor([2.0], dtype=F32, requires_grad=True)
    x = torch.tensor([[[symbol]]])
    z = SymbolHead.apply(W, x, scale)
    w = [0.6, 0.8][symbol]
    torch.testing.assert_close(z.view(()), torch.tensor(2 * w, dtype=F32), rtol=2e-6, atol=0)
    gW, gs = torch.autograd.grad(z.sum(), [W, scale])
    e = torch.tensor([1.0 - symbol, float(symbol)], dtype=F64)
    want = (2.0 / (5.0 * float(W.detach().double().abs().max()) / 4.0)) * (e - w * torch.tensor([0.6, 0.8], dtype=F64))
    assert torch.isfinite(gW).all()
    torch.testing.assert_close(gW.view(2).double(), want, rtol=1e-5, atol=0)
    torch.testing.assert_close(gs, torch.tensor([w], dtype=F32), rtol=2e-6, atol=0)


def test_ensemble_head_zero_map_and_matches_normalise_then_gather_at_scale():
    g = torch.Generator().manual_seed(3)
    E, N, M, d, c = 2, 3, 4, 3, 2
    W = torch.randn(E, N, M, d, c, generator=g, dtype=F64)
    W[0, 1, 2] = 0.0  # a zero map: logits 0, gradient 0
    x = torch.randint(0, d, (N, M), generator=g)
    scale = torch.randn(E, generator=g, dtype=F64)
    gz = torch.randn(E, N, M, c, generator=g, dtype=F64)
    z1, saved1 = symbol_head_forward(W, x, scale)
    gW1, gs1 = symbol_head_backward(saved1, gz)
    assert torch.equal(z1[0, 1, 2], torch.zeros(c, dtype=F64)) and torch.equal(gW1[0, 1, 2], torch.zeros(d, c, dtype=F64))
    for s in (1e-200, 1e200):  # float64 squares of these under/overflow
        z, saved = symbol_head_forward(W * s, x, scale)
        gW, gs = symbol_head_backward(saved, gz)
        torch.testing.assert_close(z, z1, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(gW * s, gW1, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(gs, gs1, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("sync_free", [False, True])
def test_ensemble_head_mixed_scales_in_one_batch(monkeypatch, sync_free):
    """Maps of norms from 1e-35 to 1e35 (float32) side by side: logits equal those of the unscaled
    maps and gradients scale by 1/s, on the CPU path (one reduction decides) and on the sync-free
    path the accelerators take; a map below float32's normal range still gives finite logits."""
    from tnattn.models import head as ens_model

    if sync_free:
        monkeypatch.setattr(ens_model, "_host_sync_is_cheap", lambda t: False)
    g = torch.Generator().manual_seed(4)
    E, N, M, d, c = 2, 3, 5, 2, 2
    W = torch.randn(E, N, M, d, c, generator=g, dtype=F32)
    s = 10.0 ** torch.randint(-35, 36, (E, N, M, 1, 1), generator=g).double()
    s[0, 0, 0] = 1e-42  # subnormal entries
    Ws = (W.double() * s).float()
    x = torch.randint(0, d, (E, N, M), generator=g)
    scale = torch.tensor([1.5, -0.5])
    gz = torch.randn(E, N, M, c, generator=g, dtype=F32)
    z0, saved0 = symbol_head_forward(W, x, scale)
    gW0, gs0 = symbol_head_backward(saved0, gz)
    z, saved = symbol_head_forward(Ws, x, scale)
    gW, gs = symbol_head_backward(saved, gz)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z[:, 1:], z0[:, 1:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z[0, 0, 1:], z0[0, 0, 1:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z[0, 0, 0], z0[0, 0, 0], rtol=2e-2, atol=1e-3)  # subnormal: few digits
    normal = (s.view(E, N, M) > 1e-35).clone()
    normal[0, 0, 0] = False
    torch.testing.assert_close((gW.double() * s)[normal], gW0.double()[normal], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gs, gs0, rtol=1e-3, atol=1e-3)  # d logits / d scale = z / scale


@pytest.mark.parametrize("init_std,lr", [(1e20, 5e-3), (1e-25, 1e-30)])
def test_training_at_extreme_init_scales_is_alive_with_finite_norms(init_std, lr):
    """The issue's `tnattn train --init-std 1e20` (float32): the contexts no longer vanish, so the run
    trains (non-zero gradient, not stopped as dead), and the logged parameter norms are the true
    norms (float32 sums of squares overflowed to inf at 1e20 and underflowed to 0 at 1e-25; the
    tiny learning rate keeps the 1e-25 parameters tiny through the run)."""
    from tnattn.data import MiniBatches, all_sequences, make_test_sets
    from tnattn.rules import elementary
    from tnattn.train import TrainConfig, Trainer

    cfg = TrainConfig(D=4, train_length=6, crop_min=3, crop_max=6, batch_size=16, test_lengths=(30,), test_size=20,
                      max_epochs=3, eval_every=1, progress=False, plots=False, lr=lr, init_std=init_std)  # fmt: skip
    model = TNAttention(D=4, init_std=init_std, dtype=F32, generator=torch.Generator().manual_seed(0))
    rule = elementary(30)
    x = all_sequences(cfg.train_length)
    batches = MiniBatches(x, rule, batch_size=16, crop=(3, 6), generator=torch.Generator().manual_seed(1))
    result = Trainer.from_model(model, batches, cfg, test_sets=make_test_sets(rule, (30,), n=20)).fit().run(0)
    assert result.stop_reason == "max_epochs"
    assert all(0 < row["grad_norm"] < float("inf") for row in result.history)
    last = result.history[-1]
    for name, p in model.named_parameters():
        want = float(torch.linalg.vector_norm(p.detach().double()))  # float64 holds every float32 square
        assert 0 < want < float("inf")
        assert last[f"norm_{name.replace('.', '_')}"] == pytest.approx(want, rel=1e-12, abs=0)

"""The head and the losses (tnattn.models.head): the closed-form path against the autograd path and
against tnattn.reference, in float64."""

from __future__ import annotations

import pytest
import torch

from tnattn import reference
from tnattn.models.head import (
    LOSSES,
    SymbolHead,
    compute_loss,
    head_logits,
    member_losses_and_grads,
    symbol_head_backward,
    symbol_head_forward,
)

F64 = torch.float64


def _maps_from_reference(E, N, M, d, c, D=3, seed=0):
    """Local maps of E random students computed by the plain-PyTorch reference, member by member."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, d, (E, N, M), generator=g)
    W = []
    for e in range(E):
        A = torch.randn(d, D, D, generator=g, dtype=F64)
        C = torch.randn(d, D, D, c, generator=g, dtype=F64)
        u, v = torch.randn(D, generator=g, dtype=F64), torch.randn(D, generator=g, dtype=F64)
        W.append(reference.tn_attention(x[e], A, A, C, u, v))
    return torch.stack(W), x


@pytest.mark.parametrize("c,shared_x", [(1, False), (3, False), (2, True)])
def test_closed_form_symbol_head_equals_autograd_of_normalise_then_gather(c, shared_x):
    E, N, M, d = 3, 4, 5, 3
    W, x = _maps_from_reference(E, N, M, d, c, seed=c)
    if shared_x:
        x = x[0]
    g = torch.Generator().manual_seed(7)
    scale = torch.randn(E, generator=g, dtype=F64)
    gz = torch.randn(E, N, M, c, generator=g, dtype=F64)
    Wr, sr = W.clone().requires_grad_(), scale.clone().requires_grad_()
    # autograd path, written out here from the reference's normalisation (the oracle)
    Z = reference.normalize(Wr.reshape(E, N, M, d * c)).reshape(E, N, M, d, c) * sr.view(E, 1, 1, 1, 1)
    xe = x.expand(E, N, M) if shared_x else x
    want = Z.gather(3, xe.reshape(E, N, M, 1, 1).expand(E, N, M, 1, c)).squeeze(3)
    gW_want, gs_want = torch.autograd.grad(want, [Wr, sr], gz)
    # the head module's autograd path
    torch.testing.assert_close(head_logits(W, x, scale, normalize_map=True), want, rtol=1e-14, atol=1e-15)
    # the closed form
    z, saved = symbol_head_forward(W, x, scale)
    gW, gs = symbol_head_backward(saved, gz)
    torch.testing.assert_close(z, want, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(gW, gW_want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gs, gs_want, rtol=1e-12, atol=1e-14)
    _, none_scale = symbol_head_backward(saved, gz, need_scale=False)
    assert none_scale is None


def test_symbol_head_function_gradcheck_and_exact_zero_rule():
    E, N, M, d, c = 2, 3, 4, 3, 2
    g = torch.Generator().manual_seed(5)
    W = torch.randn(E, N, M, d, c, generator=g, dtype=F64, requires_grad=True)
    scale = torch.randn(E, generator=g, dtype=F64, requires_grad=True)
    x = torch.randint(0, d, (E, N, M), generator=g)
    assert torch.autograd.gradcheck(lambda W, s: SymbolHead.apply(W, x, s), (W, scale))
    # a zero map gives zero logits and zero gradient, no NaN
    W0 = torch.zeros(1, 1, 2, 2, 1, dtype=F64, requires_grad=True)
    z0 = SymbolHead.apply(W0, torch.zeros(1, 2, dtype=torch.long), torch.ones(1, dtype=F64))
    (gW0,) = torch.autograd.grad(z0.sum(), [W0])
    assert torch.equal(z0, torch.zeros_like(z0)) and torch.equal(gW0, torch.zeros_like(W0))


def test_head_without_normalisation_picks_the_row_or_mixes_embeddings():
    E, N, M, d, c = 2, 3, 4, 3, 2
    W, x = _maps_from_reference(E, N, M, d, c, seed=3)
    z = head_logits(W, x, None, normalize_map=False)
    for e in range(E):
        for n in range(N):
            for i in range(M):
                assert torch.equal(z[e, n, i], W[e, n, i, x[e, n, i]])
    emb = torch.randn(N, M, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    got = head_logits(W, emb, None, normalize_map=False)
    torch.testing.assert_close(got, (emb[None, :, :, :, None] * W).sum(3), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("loss,activation", [("mse", "sigmoid"), ("mse", "none"), ("hinge", "sigmoid"), ("logistic", "sigmoid"), ("ce", "sigmoid")])
@pytest.mark.parametrize("c,shared_y", [(1, False), (3, False), (1, True), (3, True)])
def test_closed_form_losses_equal_autograd_of_compute_loss(loss, activation, c, shared_y):
    g = torch.Generator().manual_seed(8)
    E, N, M = 3, 5, 4
    z = 3.0 * torch.randn(E, N, M, c, generator=g, dtype=F64)
    y = torch.randint(0, max(c, 2), (N, M) if shared_y else (E, N, M), generator=g)
    if loss == "hinge":  # no logit on the kink 1 - s z = 0, where the two paths may pick either side
        assert bool(((1 - z.abs()).abs() > 1e-9).all())
    losses, grad = member_losses_and_grads(z, y, loss, activation)
    for e in range(E):
        ze = z[e].clone().requires_grad_()
        ref = compute_loss(ze, y if shared_y else y[e], loss, activation)
        (gref,) = torch.autograd.grad(ref, ze)
        torch.testing.assert_close(losses[e], ref.detach(), rtol=1e-14, atol=0)
        torch.testing.assert_close(grad[e], gref, rtol=1e-13, atol=1e-300)
    if c == 1:  # binary targets may come as booleans
        losses_b, grad_b = member_losses_and_grads(z, y.bool(), loss, activation)
        assert torch.equal(losses_b, losses) and torch.equal(grad_b, grad)
    with pytest.raises(ValueError, match="y must have shape"):
        member_losses_and_grads(z, y[..., :2], loss, activation)


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
def test_closed_form_losses_at_saturated_logits(loss):
    """Logits far beyond softplus's linear threshold (|z| > 20) and on both sides of the hinge."""
    z = torch.tensor([-60.0, -25.0, -19.0, -0.5, 0.5, 19.0, 25.0, 60.0], dtype=F64).view(1, 1, 8, 1)
    y = torch.tensor([[[0, 1, 0, 1, 0, 1, 0, 1]]])
    losses, grad = member_losses_and_grads(z, y, loss, "sigmoid")
    zr = z[0].clone().requires_grad_()
    ref = compute_loss(zr, y[0], loss, "sigmoid")
    (gref,) = torch.autograd.grad(ref, zr)
    torch.testing.assert_close(losses[0], ref.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(grad[0], gref, rtol=1e-14, atol=0)


def test_losses_reject_bad_choices():
    z = torch.zeros(1, 2, 3, 1)
    y = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="loss must be one of"):
        member_losses_and_grads(z, y, "l3")
    with pytest.raises(ValueError, match="activation must be"):
        member_losses_and_grads(z, y, "mse", "tanh")
    with pytest.raises(ValueError, match=r"\(E, N, M, c\)"):
        member_losses_and_grads(z[0], y)
    assert LOSSES == ("mse", "hinge", "logistic", "ce")

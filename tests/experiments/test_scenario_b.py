"""Scenario B pipeline: contexts, features, stationary solutions, acceptance, flows."""

import math

import pytest
import torch

from tnattn import reference
from tnattn import scenario_b as sb

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("D", [2, 3])
def test_ensemble_contexts_match_reference(D):
    g = _gen(D)
    A = sb.sample_tensors(4, D, generator=g)
    x = torch.randint(0, 2, (5, 11), generator=g)
    b = torch.randn(4, D, generator=g, dtype=F64)
    for rev in (False, True):
        got = sb.ensemble_contexts(A, x, b, reverse=rev)
        shared = sb.ensemble_contexts(A, x, b[0], reverse=rev)
        for e in range(4):
            want = reference.contexts(A[e], x, b[e], reverse=rev)
            torch.testing.assert_close(got[e], want, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(shared[e], reference.contexts(A[e], x, b[0], reverse=rev), rtol=1e-12, atol=1e-12)


def test_ensemble_contexts_are_the_library_op_and_agree_on_long_sequences():
    # The scan is the library's op (the fused kernels), not a copy of it; on the long test
    # sequences of the acceptance check it still agrees with the plain-PyTorch oracle.
    from tnattn.ops import contexts

    g = _gen(7)
    A = sb.sample_tensors(40, 2, generator=g)
    u, v, _ = sb.boundary_vectors(A)
    x = torch.randint(0, 2, (6, 300), generator=g)
    for b, rev in ((u, False), (v, True)):
        got = sb.ensemble_contexts(A, x, b, reverse=rev)
        assert torch.equal(got, contexts(A, x, b, reverse=rev))
        for e in range(0, 40, 3):
            torch.testing.assert_close(got[e], reference.contexts(A[e], x, b[e], reverse=rev), rtol=1e-10, atol=1e-10)


def test_boundary_vectors_are_dominant_eigenvectors_or_fallback():
    A = sb.sample_tensors(400, 2, generator=_gen(1))
    u, v, fb = sb.boundary_vectors(A)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(400, dtype=F64))
    M = A[:, 0]
    lam = torch.linalg.eigvals(M)
    cplx = lam.imag.abs().max(1).values > 1e-9 * lam.abs().max(1).values
    assert torch.equal(fb, cplx)  # fallback exactly for complex pairs
    real = ~fb
    # v: right eigenvector of the largest |eigenvalue|; u: left eigenvector.
    Mv = (M[real] @ v[real, :, None])[..., 0]
    uM = (u[real, None, :] @ M[real])[:, 0]
    lam_dom = torch.gather(lam[real].real, 1, lam[real].abs().argmax(1, keepdim=True))[:, 0]
    torch.testing.assert_close(Mv, lam_dom[:, None] * v[real], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(uM, lam_dom[:, None] * u[real], rtol=1e-9, atol=1e-9)
    # Fallback: top singular vectors.
    U, S, Vh = torch.linalg.svd(M[fb])
    torch.testing.assert_close((v[fb] * Vh[:, 0]).sum(1).abs(), torch.ones(int(fb.sum()), dtype=F64))
    torch.testing.assert_close((u[fb] * U[..., 0]).sum(1).abs(), torch.ones(int(fb.sum()), dtype=F64))


def test_rule30_labels_match_formula_with_open_boundaries():
    x = torch.randint(0, 2, (50, 9), generator=_gen(2))
    pad = torch.nn.functional.pad(x, (1, 1))
    want = pad[:, :-2] ^ (pad[:, 1:-1] | pad[:, 2:])
    torch.testing.assert_close(sb.rule_labels(x), want.to(F64) * 2 - 1)


def test_features_give_local_map_outputs():
    g = _gen(3)
    A = sb.sample_tensors(3, 2, generator=g)
    u, v, _ = sb.boundary_vectors(A)
    x = torch.randint(0, 2, (4, 6), generator=g)
    L, R = sb.ensemble_contexts(A, x, u), sb.ensemble_contexts(A, x, v, reverse=True)
    F = sb.features(L, R, x)
    c = torch.randn(3, 8, generator=g, dtype=F64)
    out = (F * c[:, None, None, :]).sum(-1)
    torch.testing.assert_close(out, sb.predict(c, L, R, x))
    # The reference local map W[n, i, s] = l^T C[s] r, read at the actual symbol.
    for e in range(3):
        W = reference.local_maps(L[e], c[e].reshape(2, 2, 2, 1), R[e])[..., 0]  # (N, M, d)
        torch.testing.assert_close(out[e], W.gather(-1, x[..., None])[..., 0])


@pytest.mark.parametrize("lambda1,lambda2", [(0.0, 0.0), (0.0, 1e-3), (1e-3, 0.0), (1e-2, 1e-3)])
def test_stationary_solution_optimality(lambda1, lambda2):
    A = sb.sample_tensors(200, 2, generator=_gen(4))
    u, v, _ = sb.boundary_vectors(A)
    prob = sb.training_problem(A, u, v)
    c = sb.stationary_solution(prob.G0, prob.a, lambda1, lambda2)
    G = prob.G0 + lambda2 * torch.eye(8, dtype=F64)
    res = prob.a - (G @ c[..., None])[..., 0]
    if lambda1 == 0:
        # Pseudo-inverse solution: zero gradient in the range of G (the residual is orthogonal to
        # everything G can reach) and no component in its null space.
        assert float((G @ res[..., None]).abs().max()) < 1e-9
    else:
        act = c != 0
        assert torch.all((res - lambda1 * torch.sign(c)).abs()[act] < 1e-9)
        assert torch.all(res.abs()[~act] <= lambda1 * (1 + 1e-8))


def test_acceptance_agrees_with_direct_zero_error_check():
    g = _gen(5)
    E = 600
    A = sb.sample_tensors(E, 2, generator=g)
    u, v, _ = sb.boundary_vectors(A)
    prob = sb.training_problem(A, u, v)
    c = sb.stationary_solution(prob.G0, prob.a)
    x = torch.randint(0, 2, (120, 40), generator=g)
    y = sb.rule_labels(x)
    ok = sb.acceptance(c, A, u, v, x, y, stages=(3, 30))
    # Direct: reference contexts per member, every site of the full test set at once.
    direct = torch.zeros(E, dtype=torch.bool)
    for e in range(E):
        L = reference.contexts(A[e], x, u[e])
        R = reference.contexts(A[e], x, v[e], reverse=True)
        out = torch.einsum("nma,nmab,nmb->nm", L, c[e].reshape(2, 2, 2)[x], R)
        direct[e] = bool(((out * y) > 0).all())
    assert torch.equal(ok, direct)
    assert 0 < int(ok.sum()) < E  # both outcomes occur at this seed


def test_grokking_probability_bookkeeping():
    res = sb.grokking_probability(300, lambda1s=(0.0, 1e-3), lambda2s=(0.0,), test_sequences=50, test_length=40, seed=3, chunk=128)
    assert res["lambda2"] == [0.0, 0.0]
    for j in range(2):
        assert res["accepted"][j] == len(res["accepted_indices"][j])
        assert res["probability"][j] == pytest.approx(res["accepted"][j] / 300)
    As, us, vs = res["accepted_tensors"]
    assert len(As) == res["accepted"][0]
    # Both conventions: all tensors, and only those with a real dominant eigenvalue of A[0].
    n_fb = round(res["fallback_fraction"] * 300)
    # recount the complex pairs from the same draws (seed 3: test set first, then blocks of 128)
    gen = torch.Generator().manual_seed(3)
    torch.randint(0, 2, (50, 40), generator=gen)
    fb = torch.cat([sb.boundary_vectors(sb.sample_tensors(m, 2, generator=gen))[2] for m in (128, 128, 44)])
    assert int(fb.sum()) == n_fb and 0 < n_fb < 300
    for j in range(2):
        acc_fb = sum(bool(fb[i]) for i in res["accepted_indices"][j])
        assert res["accepted_fallback"][j] == acc_fb
        real = res["by_convention"]["real_dominant"]
        assert real["n_tensors"] == 300 - n_fb
        assert real["probability"][j] == pytest.approx((res["accepted"][j] - acc_fb) / (300 - n_fb))
        assert res["by_convention"]["all_tensors"]["probability"][j] == res["probability"][j]
    with pytest.raises(ValueError, match="lambda1s"):
        sb.grokking_probability(10, lambda1s=(0, 1), lambda2s=(0, 1, 2))


def test_flow_weights_closed_form_matches_euler():
    g = _gen(6)
    X = torch.randn(20, 4, generator=g, dtype=F64)
    X[:, 3] = X[:, 2]  # singular G: the null-space part of c0 must stay put
    G = X.T @ X / 20
    a = torch.randn(4, generator=g, dtype=F64) @ G  # a in the range of G
    c0 = torch.randn(3, 4, generator=g, dtype=F64)
    got = sb.flow_weights(G, a, c0, torch.full((3,), 2.0, dtype=F64))
    c = c0.clone()
    dt = 1e-4
    for _ in range(20000):
        c = c + dt * (a - c @ G)
    torch.testing.assert_close(got, c, rtol=1e-3, atol=1e-3)


def _first_accepted():
    """The first accepted tensor e of a seeded sample of 400, with the sample, its training problem,
    test sequences x of length 40 and their labels y, and the generator for further draws."""
    g = _gen(7)
    A = sb.sample_tensors(400, 2, generator=g)
    u, v, _ = sb.boundary_vectors(A)
    prob = sb.training_problem(A, u, v)
    c = sb.stationary_solution(prob.G0, prob.a)
    x = torch.randint(0, 2, (30, 40), generator=g)
    y = sb.rule_labels(x)
    e = int(torch.nonzero(sb.acceptance(c, A, u, v, x, y))[0, 0])
    return g, A, u, v, prob, x, y, e


def _accepted_tensor_problem():
    """The first accepted tensor's training problem, test features Ft and labels, five initial
    classifiers and record times (shared by the train_classifier tests)."""
    g, A, u, v, prob, x, y, e = _first_accepted()
    L = sb.ensemble_contexts(A[e : e + 1], x, u[e : e + 1])
    R = sb.ensemble_contexts(A[e : e + 1], x, v[e : e + 1], reverse=True)
    Ft = sb.features(L, R, x)[0].reshape(-1, 8)
    c0 = torch.randn(5, 8, generator=g, dtype=F64)
    times = torch.cat([torch.zeros(1, dtype=F64), torch.logspace(-2, 6, 80, dtype=F64)])
    return prob.F[e], prob.y, Ft, y, c0, times


def test_train_classifier_zero_times_are_refined_crossings():
    F, Fy, Ft, y, c0, times = _accepted_tensor_problem()
    res = sb.train_classifier(F, Fy, Ft, y.reshape(-1), c0, times)
    te = res["t_eps"]
    assert torch.isfinite(te).all()
    G, a = res["G"], res["a"]
    after = sb.flow_errors(sb.flow_weights(G, a, c0, te), Ft, y.reshape(-1))
    before = sb.flow_errors(sb.flow_weights(G, a, c0, te * (1 - 1e-6)), Ft, y.reshape(-1))
    assert torch.all(after == 0)
    assert torch.all(before > 0)
    # "stays_zero" can only be later than the paper's first zero, and equal where the recorded test
    # error never leaves zero once reached.
    stays = sb.train_classifier(F, Fy, Ft, y.reshape(-1), c0, times, definition="stays_zero")
    assert torch.all(stays["t_eps"] >= te)
    te_rec = res["test_error"]
    first = (te_rec == 0).int().argmax(1)
    never_left = torch.tensor([bool((te_rec[r, first[r]:] == 0).all()) for r in range(5)])
    assert torch.all(stays["t_eps"][never_left] == te[never_left])
    with pytest.raises(ValueError, match="definition"):
        sb.train_classifier(F, Fy, Ft, y.reshape(-1), c0, times, definition="last")


def test_bad_inputs():
    with pytest.raises(ValueError, match="A"):
        sb.boundary_vectors(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="boundary"):
        sb.ensemble_contexts(torch.zeros(3, 2, 2, 2, dtype=F64), torch.zeros(1, 3, dtype=torch.long), torch.ones(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="lambda1"):
        sb.stationary_solution(torch.eye(2)[None], torch.ones(1, 2), -1.0)


def test_minimum_detectable_effect_closed_form():
    # z_0.975 = 1.959964, z_0.8 = 0.841621 (normal quantiles).
    z = 1.959964 + 0.841621
    assert sb.minimum_detectable_effect(0.0217, 20000) == pytest.approx(z * math.sqrt(2 * 0.0217 * 0.9783 / 20000), rel=1e-5)
    assert sb.minimum_detectable_effect(0.0217, 20000, discordant=0.004) == pytest.approx(z * math.sqrt(0.004 / 20000), rel=1e-5)
    with pytest.raises(ValueError, match="discordant"):
        sb.minimum_detectable_effect(0.02, 100, discordant=2.0)
    with pytest.raises(ValueError, match="n"):
        sb.minimum_detectable_effect(0.02, 0)


def test_analyse_tensor_estimator_options():
    _, A, u, v, _, _, _, e = _first_accepted()
    kw = dict(n_inits=6, test_sequences=20, test_length=40, n_times=40, gap_points=500)
    a = sb.analyse_tensor(A[e], u[e], v[e], **kw)
    b = sb.analyse_tensor(A[e], u[e], v[e], deff_on="train", xi_method="max_density", eps_method="spread", **kw)
    # Same measurements, different headline choices.
    assert a.variants["D_eff"] == pytest.approx(b.variants["D_eff"])
    assert a.D_eff == a.variants["D_eff"]["test"] and b.D_eff == b.variants["D_eff"]["train"]
    assert b.xi_star == b.variants["xi_star"]["max_density"] and a.xi_star == a.variants["xi_star"]["edges"]
    assert a.eps == a.eps_gap and b.eps == b.eps_spread
    assert b.xi_predicted == pytest.approx((b.D_eff - 2 * b.nu + 1) / 2)
    # D_eff of 24 training points in 8 dimensions is at most 8; per class averages two clouds.
    assert 1 <= a.variants["D_eff"]["train"] <= 8
    assert b.options == {"deff_on": "train", "xi_method": "max_density", "eps_method": "spread", "definition": "first_zero"}
    for bad in ({"deff_on": "all"}, {"xi_method": "peak"}, {"eps_method": "var"}, {"definition": "last"}):
        with pytest.raises(ValueError, match=list(bad)[0]):
            sb.analyse_tensor(A[e], u[e], v[e], **kw, **bad)


def test_train_classifier_brackets_the_zero_crossing():
    # t_eps_lower is the latest time known to have a nonzero test error: bisected to 2^-refine of
    # a record step with lambda1 = 0, the previous record with lambda1 > 0.
    F, Fy, Ft, y, c0, times = _accepted_tensor_problem()
    yt = y.reshape(-1)
    res = sb.train_classifier(F, Fy, Ft, yt, c0, times, refine=30)
    te, lo = res["t_eps"], res["t_eps_lower"]
    assert torch.isfinite(te).all() and torch.all(lo < te)
    assert torch.all(sb.flow_errors(sb.flow_weights(res["G"], res["a"], c0, lo), Ft, yt) > 0)
    step = times[torch.searchsorted(times, te)] - times[torch.searchsorted(times, te) - 1]
    assert torch.all(te - lo <= step * 2.0**-30 * 1.0001)
    # Without refinement (lambda1 > 0) the lower end is the previous record.
    rec = torch.tensor([0.0, 1.0, 2.0, 4.0, 8.0], dtype=F64)
    got = sb._previous_record(torch.tensor([4.0, 0.0, float("nan"), 1.0, 8.0], dtype=F64), rec)
    torch.testing.assert_close(got, torch.tensor([2.0, 0.0, float("nan"), 0.0, 4.0], dtype=F64), equal_nan=True)


def test_nu_budget_parts_add_in_quadrature():
    # Hand-computed: window = (1.2 - 0.9) / 2 = 0.15, resolution = |1.05 - 1.0| = 0.05,
    # total = sqrt(0.2^2 + 0.15^2 + 0.05^2).
    b = sb._nu_budget(1.0, 0.2, [{"nu": 1.0}, {"nu": 1.2}, {"nu": 0.9}, {"nu": float("nan")}], 1.05)
    assert b["window_syst"] == pytest.approx(0.15)
    assert b["resolution_syst"] == pytest.approx(0.05)
    assert b["total"] == pytest.approx(math.sqrt(0.04 + 0.0225 + 0.0025))
    assert math.isnan(sb._nu_budget(1.0, 0.2, [{"nu": 1.0}], float("nan"))["total"])


def test_analyse_tensor_nu_error_budget():
    _, A, u, v, _, _, _, e = _first_accepted()
    a = sb.analyse_tensor(A[e], u[e], v[e], n_inits=20, test_sequences=40, test_length=60, n_times=60, gap_points=500)
    assert math.isfinite(a.nu) and math.isfinite(a.nu_total)
    # The central window is one of the family, and the window part is half the spread of nu over it.
    nus = [w["nu"] for w in a.nu_by_window]
    assert len(nus) >= 2 and a.nu in nus
    assert a.nu_window_syst == pytest.approx(0.5 * (max(nus) - min(nus)))
    for w in a.nu_by_window:
        assert w["window"][0] < w["window"][1]
        if w["nu"] != a.nu:  # the central band may be narrower; the others span a factor 3
            assert w["band"][1] >= 3 * w["band"][0] * (1 - 1e-12)
    # t_eps is bisected to 2^-40 of a record step: the resolution part is negligible here.
    assert a.nu_resolution_syst < 1e-3
    assert a.nu_total >= max(a.nu_err, a.nu_window_syst)
    assert a.nu_total == pytest.approx(math.sqrt(a.nu_err**2 + a.nu_window_syst**2 + a.nu_resolution_syst**2))


def test_stationary_solution_minimises_the_documented_mean_risk():
    # The docstring's risk (1/P) sum_p (1/2)(<c, f_p> - y_p)^2 + lambda2/2 |c|^2, written out with
    # autograd on the P = 2^3 * 3 = 24 training sites: its gradient vanishes at the solution. (With a
    # sum instead of the mean, or a further 1/2, lambda2 would weigh 24 or 2 times less.)
    A = sb.sample_tensors(20, 2, generator=_gen(5))
    u, v, _ = sb.boundary_vectors(A)
    prob = sb.training_problem(A, u, v)
    assert prob.F.shape[1] == 24
    lam2 = 1e-2
    c = sb.stationary_solution(prob.G0, prob.a, 0.0, lam2).clone().requires_grad_(True)
    pred = torch.einsum("epk,ek->ep", prob.F, c)
    risk = (0.5 * (pred - prob.y) ** 2).sum(1) / 24 + 0.5 * lam2 * (c**2).sum(1)
    (grad,) = torch.autograd.grad(risk.sum(), c)
    assert float(grad.abs().max()) < 1e-10

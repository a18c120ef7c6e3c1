"""Tests of tnattn.models: TNAttention, TNAttentionStack, exact constructions."""

import itertools

import numpy as np
import pytest
import torch

from tnattn import reference
from tnattn.models import (
    NonFiniteParameterError,
    TNAttention,
    TNAttentionStack,
    exact_contexts,
    exact_local_rule,
    exact_rule30,
)
from tnattn.models import _backend, functional
from tnattn.rules import elementary

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def _has_ops():
    try:
        import tnattn.ops  # noqa: F401
    except ImportError:
        return False
    return True


# Every model-level test that takes `backend` runs on the reference and, once built, on the native ops.
BACKENDS = ["reference", pytest.param("ops", marks=pytest.mark.skipif(not _has_ops(), reason="tnattn.ops not built"))]


def make(D=3, d=2, c=1, seed=0, **kw):
    kw.setdefault("backend", "reference")
    kw.setdefault("dtype", F64)
    return TNAttention(D, d, c, generator=gen(seed), **kw)


def symbols(N, M, d=2, seed=1):
    return torch.randint(0, d, (N, M), generator=gen(seed))


def embeddings(N, M, d=2, seed=1):
    return torch.rand(N, M, d, generator=gen(seed), dtype=F64)


def expected_logits(model, x):
    """Logits written out from the reference op, independently of the model's own code paths."""
    W = reference.tn_attention(x, model.A_left, model.A_right, model.C, model.u, model.v)  # (N,M,d,c)
    if model.normalize_map:
        norms = W.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        W = W / norms * model.scale
    if x.is_floating_point():
        return torch.einsum("nis,niso->nio", x, W)
    N, M = x.shape
    out = torch.empty(N, M, model.c, dtype=W.dtype)
    for n in range(N):
        for i in range(M):
            out[n, i] = W[n, i, x[n, i]]
    return out


# ----------------------------------------------------------------------------------------------
# Forward pass
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("real", [False, True])
@pytest.mark.parametrize("c,normalize_map", [(1, True), (3, True), (1, False), (2, False)])
def test_forward_equals_reference_ops(shared, real, c, normalize_map, backend):
    d = 3
    model = make(D=4, d=d, c=c, shared=shared, normalize_map=normalize_map, boundary="random", scale_init=1.7,
                 backend=backend)
    x = embeddings(5, 9, d) if real else symbols(5, 9, d)
    want = expected_logits(model, x)
    torch.testing.assert_close(model.logits(x), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(x), torch.sigmoid(want), rtol=1e-12, atol=1e-12)


def test_local_maps_and_contexts_match_reference():
    model = make(D=4, d=2, c=2, shared=False, normalize_map=False)
    x = symbols(3, 8)
    W = reference.tn_attention(x, model.A_left, model.A_right, model.C, model.u, model.v)
    torch.testing.assert_close(model.local_maps(x), W)
    L, R = model.contexts(x)
    torch.testing.assert_close(L, reference.contexts(model.A_left, x, model.u))
    torch.testing.assert_close(R, reference.contexts(model.A_right, x, model.v, reverse=True))
    torch.testing.assert_close(L.norm(dim=-1), torch.ones(3, 8, dtype=F64))


def test_normalised_map_has_norm_scale():
    model = make(D=5, d=2, c=3, scale_init=2.5)
    W = model.local_maps(symbols(2, 6))
    torch.testing.assert_close(W.flatten(2).norm(dim=-1), torch.full((2, 6), 2.5, dtype=F64))


def test_integer_dtypes_agree():
    model = make(D=4)
    x = symbols(3, 7)
    want = model.logits(x)
    for dt in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(model.logits(x.to(dt)), want, rtol=0, atol=0)


def test_one_hot_embeddings_equal_symbols():
    model = make(D=4, d=3, c=2, shared=False)
    x = symbols(4, 6, 3)
    onehot = torch.nn.functional.one_hot(x, 3).to(F64)
    torch.testing.assert_close(model.logits(onehot), model.logits(x))


def test_activation_none_returns_logits():
    model = make(activation="none")
    x = symbols(2, 5)
    torch.testing.assert_close(model(x), model.logits(x), rtol=0, atol=0)


def test_vectorized_backend_agrees():
    x = symbols(4, 33)
    a = make(D=5, seed=3, backend="reference")
    b = make(D=5, seed=3, backend="vectorized")
    torch.testing.assert_close(a(x), b(x))


def test_ops_backend_equals_reference():
    x = symbols(4, 12)
    for shared in (True, False):
        ref = make(D=5, seed=4, shared=shared, backend="reference")
        fast = make(D=5, seed=4, shared=shared, backend="ops")
        assert fast.ops.name == "ops"
        out_ref, out_fast = ref(x), fast(x)
        torch.testing.assert_close(out_fast, out_ref)
        out_ref.sum().backward()
        out_fast.sum().backward()
        for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, msg=lambda m: f"{name}: {m}")


def test_backends_are_a_registry_over_member_stacks():
    from tnattn import ops

    assert _backend.BACKENDS == ("ops", "reference", "vectorized")
    g = gen(2)
    A, C = torch.randn(2, 2, 3, 3, generator=g, dtype=F64), torch.randn(2, 2, 3, 3, 1, generator=g, dtype=F64)
    u = torch.randn(2, 3, generator=g, dtype=F64)
    xs = torch.randint(0, 2, (2, 4, 6), generator=g)
    # the native backend is the one op set itself (member stacks in one kernel call, one model's
    # parameters as E = 1; tests/ops/test_ops.py checks those calls)
    fast = _backend.resolve_backend("ops")
    assert fast.name == "ops"
    assert fast.tn_attention is ops.tn_attention and fast.contexts is ops.contexts
    # the reference backends run the oracle member by member, on shared or per-member batches
    for name, fn in (("reference", reference.tn_attention), ("vectorized", reference.tn_attention_vectorized)):
        W = _backend.resolve_backend(name).tn_attention(xs, A, A, C, u, u)
        for e in range(2):
            assert torch.equal(W[e], fn(xs[e], A[e], A[e], C[e], u[e], u[e]))
        L = _backend.resolve_backend(name).contexts(A, xs[0], u, reverse=True)
        torch.testing.assert_close(L[1], reference.contexts(A[1], xs[0], u[1], reverse=True), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="per-member batches"):
        _backend.resolve_backend("reference").tn_attention(xs[:1].expand(3, 4, 6), A, A, C, u, u)
    with pytest.raises(ValueError, match=r"backend must be one of \('ops', 'reference', 'vectorized'\), got 'gpu'"):
        _backend.resolve_backend("gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        make(backend="gpu")


# ----------------------------------------------------------------------------------------------
# predict, features
# ----------------------------------------------------------------------------------------------


def test_predict_consistent_with_logits_and_forward():
    x = symbols(6, 11)
    m1 = make(D=4, c=1)
    z = m1.logits(x)[..., 0]
    p = m1.predict(x)
    assert p.dtype == torch.int64 and p.shape == x.shape
    assert torch.equal(p, (z > 0).long())
    assert torch.equal(p, (m1(x)[..., 0] > 0.5).long())
    assert 0 < p.sum() < p.numel()  # both classes occur, so the comparison is not vacuous
    m3 = make(D=4, c=3)
    z3 = m3.logits(x)
    p3 = m3.predict(x)
    for n, i in itertools.product(range(6), range(11)):
        assert p3[n, i] == int(np.argmax(z3[n, i].detach().numpy()))


@pytest.mark.parametrize("shared", [True, False])
def test_features_give_unnormalised_outputs(shared):
    d, D = 2, 3
    model = make(D=D, d=d, c=1, shared=shared)
    x = symbols(3, 7)
    f = model.features(x)
    assert f.shape == (3, 7, d * D * D)
    W = reference.tn_attention(x, model.A_left, model.A_right, model.C, model.u, model.v)
    raw = W.gather(2, x[..., None, None]).squeeze(2)  # W_i[x_i, :], unnormalised
    torch.testing.assert_close(f @ model.classifier_matrix(), raw)
    # <C, f_i> written as a sum over (s, a, b) with C in its native (s, a, b, o) layout
    L, R = model.contexts(x)
    for n, i in [(0, 0), (1, 3), (2, 6)]:
        s = int(x[n, i])
        phi = torch.zeros(d, dtype=F64)
        phi[s] = 1.0
        fi = torch.kron(L[n, i], torch.kron(phi, R[n, i]))  # l (x) phi (x) r
        torch.testing.assert_close(f[n, i], fi)
        torch.testing.assert_close((model.C[s, :, :, 0] * torch.outer(L[n, i], R[n, i])).sum(), raw[n, i, 0])


def test_features_real_embeddings():
    model = make(D=3, d=2, c=2)
    x = embeddings(2, 5)
    W = reference.tn_attention(x, model.A_left, model.A_right, model.C, model.u, model.v)
    raw = torch.einsum("nis,niso->nio", x, W)
    torch.testing.assert_close(model.features(x) @ model.classifier_matrix(), raw)


# ----------------------------------------------------------------------------------------------
# Parameters, sharing, trainability
# ----------------------------------------------------------------------------------------------


def test_shared_tensor_is_one_parameter():
    model = make(D=3, shared=True)
    assert model.A_right is model.A_left
    names = [n for n, _ in model.named_parameters()]
    assert names.count("A_left") == 1 and "A_right" not in names
    assert sorted(names) == ["A_left", "C", "scale", "u", "v"]
    model = model.to(torch.float32)
    assert model.A_right is model.A_left and model.A_left.dtype == torch.float32
    clone = make(D=3, shared=True, seed=9)
    clone.load_state_dict(model.state_dict())
    assert clone.A_right is clone.A_left
    torch.testing.assert_close(clone.A_left, model.A_left.to(F64))


def test_separate_tensors():
    model = make(D=3, shared=False, normalize_map=False)
    assert model.A_right is not model.A_left
    assert not torch.equal(model.A_right, model.A_left)
    assert model.scale is None
    assert sorted(n for n, _ in model.named_parameters()) == ["A_left", "A_right", "C", "u", "v"]
    assert model.A_left.shape == (2, 3, 3) and model.C.shape == (2, 3, 3, 1) and model.u.shape == (3,)


def _train(model, x, y, steps=5, lr=0.05, weight_decay=1e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)[..., 0]
        loss = ((out - y) ** 2).mean() + 1e-3 * sum(p.abs().sum() for p in model.parameters())
        loss.backward()
        opt.step()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("via", ["init", "set_trainable"])
def test_scenario_b_freezes_contexts_bit_identically(shared, via, backend):
    kw = dict(D=3, shared=shared, boundary="random", train_boundary=True, backend=backend)
    if via == "init":
        model = make(train_contexts=False, **kw)
    else:
        model = make(**kw).set_trainable(contexts=False)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n in ("A_left", "A_right", "u", "v")}
    assert len(frozen) == (4 if not shared else 3)
    C0, s0 = model.C.detach().clone(), model.scale.detach().clone()
    x = symbols(8, 6)
    _train(model, x, elementary(30)(x).to(F64))
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert not torch.equal(model.C, C0) and not torch.equal(model.scale, s0)


def test_trainable_flags():
    model = make(D=3, boundary="random", train_boundary=True)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(grads.values())
    model.set_trainable(classifier=False)
    assert not model.C.requires_grad and not model.scale.requires_grad and model.A_left.requires_grad
    model.set_trainable(contexts=False, classifier=True)
    assert not model.A_left.requires_grad and not model.u.requires_grad and model.C.requires_grad
    model.set_trainable(contexts=True)  # boundary flag remembered
    assert model.u.requires_grad and model.v.requires_grad
    model.set_trainable(boundary=False)
    assert not model.u.requires_grad and model.A_left.requires_grad
    assert "frozen=['u', 'v']" in repr(model)
    # boundaries train when asked: they move
    model.set_trainable(boundary=True)
    u0 = model.u.detach().clone()
    x = symbols(8, 6)
    _train(model, x, elementary(30)(x).to(F64))
    assert not torch.equal(model.u, u0)


# ----------------------------------------------------------------------------------------------
# Boundaries and initialisation
# ----------------------------------------------------------------------------------------------


def test_boundary_e1():
    model = make(D=4, shared=False)
    e = torch.tensor([1.0, 0, 0, 0], dtype=F64)
    assert torch.equal(model.u, e) and torch.equal(model.v, e)
    assert not model.u.requires_grad


def _dominant(mat):
    vals, vecs = np.linalg.eig(mat)
    k = int(np.argmax(np.abs(vals)))
    return vals[k], vecs[:, k]


def test_boundary_eig_real_and_complex_cases():
    seen = set()
    for seed in range(40):
        model = make(D=4, seed=seed, shared=False, boundary="eig")
        for vec, mat in ((model.u, model.A_left[0].detach().numpy().T), (model.v, model.A_right[0].detach().numpy())):
            vec = vec.detach().numpy()
            assert abs(np.linalg.norm(vec) - 1) < 1e-12
            lam, w = _dominant(mat)
            if abs(lam.imag) < 1e-9:  # real: an eigenvector, up to sign
                np.testing.assert_allclose(mat @ vec, lam.real * vec, atol=1e-9)
                seen.add("real")
            else:  # complex: lies in the real invariant plane spanned by Re w, Im w
                basis = np.stack([w.real, w.imag], axis=1)
                coef, *_ = np.linalg.lstsq(basis, vec, rcond=None)
                np.testing.assert_allclose(basis @ coef, vec, atol=1e-9)
                seen.add("complex")
    assert seen == {"real", "complex"}


def test_boundary_eig_fixed_unless_reset():
    model = make(D=4, boundary="eig")
    u0 = model.u.detach().clone()
    with torch.no_grad():
        model.A_left.mul_(-1).add_(0.3)
    assert torch.equal(model.u, u0)
    model.reset_boundary()
    lam, _ = _dominant(model.A_left[0].detach().numpy().T)
    if abs(lam.imag) < 1e-9:
        got = model.u.detach().numpy()
        np.testing.assert_allclose(model.A_left[0].detach().numpy().T @ got, lam.real * got, atol=1e-9)
    assert not torch.equal(model.u, u0)


def test_boundary_random():
    a, b = make(D=6, boundary="random", seed=2), make(D=6, boundary="random", seed=2)
    assert torch.equal(a.u, b.u) and not torch.equal(a.u, a.v)
    torch.testing.assert_close(a.u.norm(), torch.tensor(1.0, dtype=F64))


def test_reproducible_init():
    a, b, c = make(D=5, seed=7, shared=False), make(D=5, seed=7, shared=False), make(D=5, seed=8, shared=False)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), n
        if n in ("A_left", "A_right", "C"):
            assert not torch.equal(p, r), n
    f32 = TNAttention(5, shared=False, generator=gen(7), backend="reference")
    torch.testing.assert_close(f32.C, a.C.float())
    TNAttention(3)  # the global generator also works


def test_init_schemes():
    D = 40
    normal = make(D=D, init="normal", init_std=0.5)
    assert abs(float(normal.A_left.detach().std()) - 0.5) < 0.02
    assert abs(float(normal.C.detach().std()) - 0.5) < 0.02
    orth = make(D=6, d=3, init="orthogonal", init_std=2.0)
    for s in range(3):
        torch.testing.assert_close(orth.A_left[s] @ orth.A_left[s].T, 4.0 * torch.eye(6, dtype=F64))
    ident = make(D=D, init="identity", init_std=0.01)
    dev = ident.A_left - torch.eye(D, dtype=F64)
    assert float(dev.detach().abs().max()) < 0.01 and float(dev.detach().std()) > 0  # I + small noise


# ----------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x,exc",
    [
        (torch.zeros(2, 5), ValueError),  # float without the embedding axis
        (torch.zeros(2, 5, 2, dtype=torch.long), ValueError),  # symbols with an extra axis
        (torch.zeros(2, 5, 3, dtype=F64), ValueError),  # wrong embedding size
        (torch.full((2, 5), 2), ValueError),  # symbol out of range
        (torch.full((2, 5), -1), ValueError),
        (torch.zeros(2, 0, dtype=torch.long), ValueError),  # empty length
        (torch.zeros(2, 5, dtype=torch.bool), TypeError),
        (torch.zeros(2, 5, dtype=torch.complex64), TypeError),
        ([[0, 1]], TypeError),
        (torch.full((2, 5, 2), float("nan"), dtype=F64), ValueError),
    ],
)
def test_bad_inputs_raise(x, exc):
    model = make(D=3)
    with pytest.raises(exc, match=r"\bx\b"):
        model(x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_is_fine(backend):
    model = make(D=3, backend=backend)
    assert model(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 4, 1)
    assert model.features(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 4, 2 * 3 * 3)


def test_nan_parameter_raises():
    model = make(D=3)
    with torch.no_grad():
        model.C[0, 0, 0, 0] = float("nan")
    for method in (model, model.predict, model.features, model.contexts):
        with pytest.raises(NonFiniteParameterError, match="C"):
            method(symbols(2, 4))
    with pytest.raises(FloatingPointError):
        model(symbols(2, 4))
    with pytest.raises(ValueError):
        model(symbols(2, 4))


@pytest.mark.parametrize(
    "kw",
    [dict(D=0), dict(D=2.5), dict(d=0), dict(c=0), dict(boundary="e2"), dict(init="xavier"), dict(init_std=0.0),
     dict(activation="relu"), dict(backend="cuda"), dict(dtype=torch.int64)],
)
def test_bad_constructor_arguments(kw):
    args = dict(D=3)
    args.update(kw)
    with pytest.raises((ValueError, TypeError), match=next(iter(kw))):
        TNAttention(**args)


# ----------------------------------------------------------------------------------------------
# Exact constructions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared,D,offset", [(True, 4, 2), (False, 2, 0), (True, 6, 2), (False, 5, 0)])
def test_exact_contexts_are_one_hot_neighbours(shared, D, offset, backend):
    model = exact_rule30(D, shared=shared, backend=backend, dtype=F64)
    assert model.D == D and model.shared == shared
    x = symbols(5, 12)
    padded = torch.nn.functional.pad(x, (1, 1))  # open boundary: outside cells read 0
    L, R = model.contexts(x)
    eye = torch.eye(D, dtype=F64)
    assert torch.equal(L, eye[padded[:, :-2]])  # l_i = e_{x_{i-1}}
    assert torch.equal(R, eye[offset + padded[:, 2:]])  # r_i = e_{offset + x_{i+1}}


def test_exact_contexts_hint_formula():
    A, A_right, u, v = exact_contexts(1, 2, shared=True)
    e = torch.eye(4, dtype=F64)
    for s in range(2):
        want = torch.outer(e[0] + e[1], e[s]) + torch.outer(e[2 + s], e[2] + e[3])
        assert torch.equal(A[s], want)
    assert A_right is A and torch.equal(u, e[0]) and torch.equal(v, e[2])
    with pytest.raises(ValueError, match="D"):
        exact_contexts(1, 2, shared=True, D=3)
    with pytest.raises(ValueError, match="D"):
        exact_rule30(1, shared=False)


def _fit_classifier_only(model, x, y, steps, lr=0.1):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(x)[..., 0], y)
        loss.backward()
        opt.step()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [True, False])
def test_exact_rule30_training_only_C_reaches_zero_test_error(shared, backend):
    rule = elementary(30)
    model = exact_rule30(shared=shared, generator=gen(0), backend=backend)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"C", "scale"}
    A0 = model.A_left.detach().clone()
    x = torch.tensor(list(itertools.product((0, 1), repeat=5)))  # all 32 length-5 sequences
    y = rule(x).float()
    _fit_classifier_only(model, x, y, steps=150)
    assert torch.equal(model.A_left, A0)
    assert torch.equal(model.predict(x), rule(x))
    x_test = symbols(100, 200, seed=5)
    errors = (model.predict(x_test) != rule(x_test)).sum()
    assert errors == 0


def test_exact_local_rule_radius_two():
    # The 2-step rule-30 window table (K = 2); its open boundary reads 0 in the 5-window,
    # which is exactly what the exact registers encode.
    rule = elementary(30).iterate(2).window_table()
    model = exact_local_rule(rule, shared=False, generator=gen(1), backend="reference")
    assert model.D == 4 and model.boundary == "exact"
    x = torch.tensor(list(itertools.product((0, 1), repeat=7)))
    _fit_classifier_only(model, x, rule(x).float(), steps=200)
    x_test = symbols(50, 100, seed=6)
    assert torch.equal(model.predict(x_test), rule(x_test))
    with pytest.raises(TypeError, match="boundary"):
        exact_local_rule(rule, boundary="e1")


def test_exact_rule30_untrained_is_not_already_correct():
    # Guards the training test above against a vacuous pass: a random C does not know the rule.
    model = exact_rule30(generator=gen(0), backend="reference")
    x = symbols(20, 30)
    assert not torch.equal(model.predict(x), elementary(30)(x))


# ----------------------------------------------------------------------------------------------
# Stacks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_stack_composes_layers_and_backprops(backend):
    stack = TNAttentionStack.build(3, 3, d=2, c_hidden=3, c=1, generator=gen(0), backend=backend, dtype=F64)
    assert [(l.d, l.c) for l in stack.layers] == [(2, 3), (3, 3), (3, 1)]
    x = symbols(4, 9)
    h1 = stack.layers[0](x)
    h2 = stack.layers[1](h1)
    assert h1.shape == (4, 9, 3) and float(h1.detach().min()) > 0 and float(h1.detach().max()) < 1  # sigmoid outputs
    torch.testing.assert_close(stack.logits(x), stack.layers[2].logits(h2))
    torch.testing.assert_close(stack(x), torch.sigmoid(stack.layers[2].logits(h2)))
    assert torch.equal(stack.predict(x), (stack.layers[2].logits(h2)[..., 0] > 0).long())
    hidden = stack.hidden(x)
    assert len(hidden) == 3 and torch.equal(hidden[2], h2)
    stack(x).sum().backward()
    for n, p in stack.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), n
    stack.set_trainable(contexts=False)
    assert all(not l.A_left.requires_grad for l in stack.layers)


def test_stack_validates_layers():
    a = make(D=3, d=2, c=2)
    b = make(D=3, d=3, c=1)
    with pytest.raises(ValueError, match="layers"):
        TNAttentionStack([a, b])
    with pytest.raises(ValueError, match="layers"):
        TNAttentionStack([])
    with pytest.raises(TypeError, match="layers"):
        TNAttentionStack([a, torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="depth"):
        TNAttentionStack.build(3, 0)
    single = TNAttentionStack.build(3, 1, generator=gen(0), backend="reference", dtype=F64)
    x = symbols(2, 5)
    torch.testing.assert_close(single(x), make(D=3, seed=0)(x))


# ----------------------------------------------------------------------------------------------
# members: one class, parameters with a leading member dimension E (seeds=[...])
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"shared": False, "boundary": "random"}, {"boundary": "eig", "init": "orthogonal"}])
def test_members_are_the_seeded_single_models(kw):
    seeds = [3, 11, 7]
    ens = TNAttention(5, seeds=seeds, **kw)
    x = torch.randint(0, 2, (6, 9), generator=torch.Generator().manual_seed(0))
    xe = torch.randint(0, 2, (3, 6, 9), generator=torch.Generator().manual_seed(1))
    shared_logits, own_logits = ens.logits(x), ens.logits(xe)
    for e, s in enumerate(seeds):
        single = TNAttention(5, generator=torch.Generator().manual_seed(s), **kw)
        for name, p in single.named_parameters():
            assert torch.equal(getattr(ens, name)[e], p), name
        torch.testing.assert_close(shared_logits[e], single.logits(x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(own_logits[e], single.logits(xe[e]), rtol=1e-6, atol=1e-6)
        assert torch.equal(ens.member(e).C, single.C)
    assert ens.A_right is ens.A_left if kw.get("shared", True) else ens.A_right is not ens.A_left
    assert ens.logits(x, members=[2, 0]).shape == (2, 6, 9, 1)
    torch.testing.assert_close(ens.logits(x, members=[2, 0])[0], shared_logits[2])


def test_model_rejects_bad_input():
    with pytest.raises(ValueError, match="seeds"):
        TNAttention(3, seeds=[])
    with pytest.raises(TypeError, match="generator"):
        TNAttention(3, seeds=[1], generator=torch.Generator())
    a, b = TNAttention(3), TNAttention(4)
    with pytest.raises(ValueError, match="member 1 has D=4"):
        TNAttention.from_members([a, b])
    ens = TNAttention(3, seeds=[0, 1])
    with pytest.raises(ValueError, match=r"\(E=2, N, M\)"):
        ens.logits(torch.zeros(3, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="symbols outside"):
        ens.logits(torch.full((2, 3), 2))
    with pytest.raises(ValueError, match="members must lie"):
        ens.logits(torch.zeros(2, 3, dtype=torch.long), members=[5])


@pytest.mark.parametrize("kw", [{}, {"normalize_map": False}, {"c": 3, "d": 3}])
def test_predict_equals_thresholded_logits(kw):
    ens = TNAttention(4, seeds=[0, 1, 2], **kw)
    if ens.scale is not None:
        with torch.no_grad():
            ens.scale[1] = -ens.scale[1]  # a negative scale flips the signs
    x = torch.randint(0, ens.d, (3, 20, 7), generator=torch.Generator().manual_seed(0))
    z = ens.logits(x)
    want = (z[..., 0] > 0).long() if ens.c == 1 else z.argmax(-1)
    assert torch.equal(ens.predict(x), want)


def test_positive_matches_logits_for_shared_inputs_zero_scale_and_zero_maps():
    ens = TNAttention(4, seeds=[3, 4, 5], dtype=torch.float64)
    with torch.no_grad():
        ens.scale[0] = 0.0  # logit 0 everywhere: never positive
        ens.scale[1] = -ens.scale[1]
        ens.u[2] = 0.0  # zero left contexts: zero maps, logit 0
    x = torch.randint(0, 2, (20, 7), generator=torch.Generator().manual_seed(1))  # shared by all members
    P = ens.stacked()
    got = functional.positive(P, x, normalize_map=True)
    assert torch.equal(got, ens.logits(x)[..., 0] > 0)
    assert not got[0].any() and not got[2].any() and got[1].any()
    with pytest.raises(ValueError, match="c = 1"):
        functional.positive(P, x.double(), normalize_map=True)


def test_a_single_model_is_the_member_stack_at_e_1():
    """The forward pass runs on the stacked (E = 1) views of the parameters: the functional call
    on ``stacked()`` gives the model's outputs and its gradients reach the parameters."""
    model = make(D=4, seed=5, dtype=F64)
    x = symbols(3, 8)
    P = model.stacked()
    assert model.E == 1 and not model.has_member_dim and P.E == 1 and P.A_right is P.A_left
    assert P.A_left.shape == (1, 2, 4, 4) and P.scale.shape == (1,)
    z = functional.logits(P, x, normalize_map=True, backend=model.backend)
    assert torch.equal(z[0], model.logits(x))
    z.sum().backward()
    assert model.C.grad is not None and model.scale.grad is not None
    with pytest.raises(ValueError, match="members= needs a model with a member dimension"):
        model.logits(x, members=[0])
    with pytest.raises(ValueError, match=r"shape \(N, M\), got \(1, 3, 8\)"):
        model.logits(x[None])
    assert torch.equal(model.member(0).C, model.C)


@pytest.mark.parametrize("backend", BACKENDS)
def test_members_features_contexts_and_maps_are_those_of_each_member(backend):
    ens = TNAttention(3, 3, 2, seeds=[4, 9], shared=False, dtype=F64, backend=backend)
    x = torch.randint(0, 3, (2, 5, 6), generator=gen(3))
    f, W, (L, R) = ens.features(x), ens.local_maps(x), ens.contexts(x)
    assert ens.classifier_matrix().shape == (2, 3 * 3 * 3, 2)
    for e in range(2):
        m = ens.member(e)
        assert m.backend == backend
        torch.testing.assert_close(f[e], m.features(x[e]), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(W[e], m.local_maps(x[e]), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(L[e], m.contexts(x[e])[0], rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(R[e], m.contexts(x[e])[1], rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(ens.classifier_matrix()[e], m.classifier_matrix(), rtol=0, atol=0)
    # features @ classifier_matrix gives the raw outputs W[x] of each member
    raw = TNAttention(3, 3, 2, seeds=[4, 9], shared=False, dtype=F64, normalize_map=False, backend=backend)
    torch.testing.assert_close(raw.features(x) @ raw.classifier_matrix().unsqueeze(1), raw.logits(x), rtol=1e-12, atol=1e-12)


def test_members_reset_boundary_per_member_and_load_their_state_dict():
    ens = TNAttention(4, seeds=[1, 2], boundary="eig", dtype=F64)
    with torch.no_grad():
        ens.A_left.mul_(torch.linspace(0.5, 2.0, 32, dtype=F64).view(2, 4, 4))
    ens.reset_boundary()
    for e in range(2):
        m = ens.member(e)
        m.reset_boundary()
        assert torch.equal(ens.u[e], m.u) and torch.equal(ens.v[e], m.v)
    rnd = TNAttention(4, seeds=[1, 2], boundary="random", dtype=F64)
    rnd.reset_boundary(gen(0))
    g = gen(0)
    from tnattn.models import init as _init

    want = [_init.random_unit(4, g) for _ in range(4)]  # u_0, v_0, u_1, v_1: members in order
    assert torch.equal(rnd.u, torch.stack([want[0], want[2]])) and torch.equal(rnd.v, torch.stack([want[1], want[3]]))
    copy = TNAttention(4, seeds=[7, 8], dtype=F64)
    copy.load_state_dict(ens.state_dict())
    assert torch.equal(copy.A_left, ens.A_left) and copy.A_right is copy.A_left
    with pytest.raises(TypeError, match="single TNAttention"):
        TNAttention.from_members([ens])


def test_deprecated_ensemble_model_names_warn_and_still_work():
    import tnattn.ensemble as ens_pkg

    x = symbols(3, 6)
    with pytest.warns(DeprecationWarning, match="EnsembleTNAttention is deprecated"):
        Ens = ens_pkg.EnsembleTNAttention
    model = Ens(3, seeds=[0, 1])
    assert isinstance(model, TNAttention) and model.E == 2
    with pytest.warns(DeprecationWarning, match="StackedParams is deprecated"):
        assert ens_pkg.StackedParams is functional.Params
    with pytest.warns(DeprecationWarning, match="ensemble_logits is deprecated"):
        z = ens_pkg.ensemble_logits(model.stacked(), x, normalize_map=True)
    assert torch.equal(z, model.logits(x))
    with pytest.warns(DeprecationWarning, match="ensemble_contexts is deprecated"):
        L, R = ens_pkg.ensemble_contexts(model.stacked(), x)
    assert torch.equal(L, model.contexts(x)[0]) and torch.equal(R, model.contexts(x)[1])
    with pytest.raises(AttributeError):
        ens_pkg.no_such_name
    with pytest.raises(ImportError):
        import tnattn.ensemble.model  # noqa: F401  (the module is gone)


def test_a_stack_of_member_models_is_the_stack_of_each_member():
    """Layer k's per-member outputs (E, N, M, c_k) are layer k+1's per-member embeddings."""
    stack = TNAttentionStack([TNAttention(3, 2, 2, seeds=[0, 1], dtype=F64), TNAttention(3, 2, 1, seeds=[2, 3], dtype=F64)])
    x = symbols(4, 6)
    z = stack.logits(x)
    assert z.shape == (2, 4, 6, 1)
    for e in range(2):
        single = TNAttentionStack([layer.member(e) for layer in stack.layers])
        torch.testing.assert_close(z[e], single.logits(x), rtol=1e-12, atol=1e-12)


"""Every op under every autograd transform, against the same transform of tnattn.reference.

Ops: tnattn.ops.contexts (left and right), tnattn.ops.tn_attention, their stacked (E, ...) calls (per
member and shared inputs) and tn_attention with differentiable real embeddings, each through the
public function and through the raw registered op (torch.ops.tnattn.*, what torch.compile and
torch.export trace). Transforms: torch.autograd.grad (first order and create_graph double
backward), torch.autograd.functional.*, forward-mode AD with dual tensors and torch.func (grad,
vjp, jvp, jacrev, jacfwd, hessian, vmap, linearize and compositions). The raw backward ops
(torch.ops.tnattn.*_backward) are exact to second order and refuse torch.func grad transforms and
forward-mode AD of themselves with an error naming the op and the transform (issue 13, items 1-2).
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from tnattn import ops, reference

F64 = torch.float64
d, D, N, M, c, E = 2, 3, 2, 4, 2, 2


def _rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


X = torch.randint(0, d, (N, M), generator=torch.Generator().manual_seed(7))
XE = torch.randint(0, d, (E, N, M), generator=torch.Generator().manual_seed(8))


def _ref_ctx_ens(A, x, b, reverse=False):
    return torch.stack([reference.contexts(A[e], x if x.dim() == 2 else x[e], b[e], reverse=reverse) for e in range(E)])


def _ref_tn_ens(x, AL, AR, C, u, v):
    return torch.stack(
        [reference.tn_attention(x if x.dim() == 2 else x[e], AL[e], AR[e], C[e], u[e], v[e]) for e in range(E)]
    )


# name -> (op under test, reference, differentiable arguments)
CASES = {
    "contexts": (
        lambda A, b: ops.contexts(A, X, b),
        lambda A, b: reference.contexts(A, X, b),
        (_rand(d, D, D, seed=1), _rand(D, seed=2)),
    ),
    "contexts_right_per_sequence": (
        lambda A, b: ops.contexts(A, X, b, reverse=True),
        lambda A, b: reference.contexts(A, X, b, reverse=True),
        (_rand(d, D, D, seed=3), _rand(N, D, seed=4)),
    ),
    "tn_attention": (
        lambda AL, AR, C, u, v: ops.tn_attention(X, AL, AR, C, u, v),
        lambda AL, AR, C, u, v: reference.tn_attention(X, AL, AR, C, u, v),
        (_rand(d, D, D, seed=5), _rand(d, D, D, seed=6), _rand(d, D, D, c, seed=7), _rand(D, seed=8), _rand(D, seed=9)),
    ),
    "tn_attention_shared_embeddings": (
        lambda x, A, C: ops.tn_attention(x, A, A, C, A[0, 0], A[1, 1]),
        lambda x, A, C: reference.tn_attention(x, A, A, C, A[0, 0], A[1, 1]),
        (_rand(N, M, d, seed=10), _rand(d, D, D, seed=11), _rand(d, D, D, 1, seed=12)),
    ),
    "contexts_stacked": (
        lambda A, b: ops.contexts(A, XE, b, reverse=True),
        lambda A, b: _ref_ctx_ens(A, XE, b, reverse=True),
        (_rand(E, d, D, D, seed=13), _rand(E, D, seed=14)),
    ),
    "tn_attention_stacked_shared_x": (
        lambda AL, AR, C, u, v: ops.tn_attention(X, AL, AR, C, u, v),
        lambda AL, AR, C, u, v: _ref_tn_ens(X, AL, AR, C, u, v),
        (_rand(E, d, D, D, seed=15), _rand(E, d, D, D, seed=16), _rand(E, d, D, D, c, seed=17),
         _rand(E, N, D, seed=18), _rand(E, D, seed=19)),
    ),  # fmt: skip
    "tn_attention_stacked_embeddings": (
        lambda x, A, C, u: ops.tn_attention(x, A, A, C, u, u),
        lambda x, A, C, u: _ref_tn_ens_emb(x, A, C, u),
        (_rand(E, N, M, d, seed=20), _rand(E, d, D, D, seed=21), _rand(E, d, D, D, 1, seed=22), _rand(E, D, seed=23)),
    ),
}


# the same cases through the raw registered ops (what torch.compile and torch.export trace)
_raw = torch.ops.tnattn
RAW_CASES = {
    "contexts": lambda A, b: _raw.contexts(A, X, b),
    "contexts_right_per_sequence": lambda A, b: _raw.contexts(A, X, b, reverse=True),
    "tn_attention": lambda AL, AR, C, u, v: _raw.tn_attention(X, AL, AR, C, u, v),
    "tn_attention_shared_embeddings": lambda x, A, C: _raw.tn_attention(x, A, A, C, A[0, 0], A[1, 1]),
    "contexts_stacked": lambda A, b: _raw.contexts(A, XE, b, reverse=True),
    "tn_attention_stacked_shared_x": lambda AL, AR, C, u, v: _raw.tn_attention(X, AL, AR, C, u, v),
    "tn_attention_stacked_embeddings": lambda x, A, C, u: _raw.tn_attention(x, A, A, C, u, u),
}
assert RAW_CASES.keys() == CASES.keys()


def _ref_tn_ens_emb(x, A, C, u):
    return torch.stack([reference.tn_attention(x[e], A[e], A[e], C[e], u[e], u[e]) for e in range(E)])


def _loss(f):
    # not .pow(2).sum(): contexts are unit vectors, so that loss would be constant
    return lambda *a: f(*a).sin().sum()


def _argnums(args):
    return tuple(range(len(args)))


def _ones(args):
    return tuple(torch.ones_like(a) for a in args)


def _tangents(args):
    return tuple(_rand(*a.shape, seed=100 + i) for i, a in enumerate(args))


def _leaves(args):
    return tuple(a.detach().clone().requires_grad_() for a in args)


def _double_backward(f, args):
    a = _leaves(args)
    g = torch.autograd.grad(_loss(f)(*a), a, create_graph=True)
    return torch.autograd.grad(sum(gi.pow(2).sum() for gi in g), a)


def _dual(f, args):
    with fwAD.dual_level():
        out = f(*(fwAD.make_dual(a, t) for a, t in zip(args, _tangents(args))))
        return fwAD.unpack_dual(out).tangent


def _batch(args):
    return tuple(torch.stack([a, 1.5 * a + 0.25]) for a in args)


def _first(f, a):
    leaves = _leaves(a)
    return torch.autograd.grad(_loss(f)(*leaves), leaves)


def _batched_cotangents(f, a):
    leaves = _leaves(a)
    out = f(*leaves)
    grads = torch.stack([_rand(*out.shape, seed=200 + k) for k in range(3)])
    return torch.autograd.grad(out, leaves, grads, is_grads_batched=True)


TRANSFORMS = {
    "autograd.grad": _first,
    "autograd.grad_is_grads_batched": _batched_cotangents,
    "create_graph": _double_backward,
    "functional.jacobian": lambda f, a: torch.autograd.functional.jacobian(f, a),
    "functional.jacobian_vectorize": lambda f, a: torch.autograd.functional.jacobian(f, a, vectorize=True),
    "functional.hessian": lambda f, a: torch.autograd.functional.hessian(_loss(f), a),
    "functional.vjp": lambda f, a: torch.autograd.functional.vjp(f, a, torch.ones_like(f(*a)))[1],
    "functional.jvp": lambda f, a: torch.autograd.functional.jvp(f, a, _tangents(a))[1],
    "functional.hvp": lambda f, a: torch.autograd.functional.hvp(_loss(f), a, _tangents(a))[1],
    "functional.vhp": lambda f, a: torch.autograd.functional.vhp(_loss(f), a, _tangents(a))[1],
    "forward_ad.dual": _dual,
    "func.grad": lambda f, a: torch.func.grad(_loss(f), argnums=_argnums(a))(*a),
    "func.vjp": lambda f, a: torch.func.vjp(f, *a)[1](torch.ones_like(f(*a))),
    "func.jvp": lambda f, a: torch.func.jvp(f, a, _tangents(a))[1],
    "func.jacrev": lambda f, a: torch.func.jacrev(f, argnums=_argnums(a))(*a),
    "func.jacfwd": lambda f, a: torch.func.jacfwd(f, argnums=_argnums(a))(*a),
    "func.hessian": lambda f, a: torch.func.hessian(_loss(f), argnums=_argnums(a))(*a),
    "func.vmap": lambda f, a: torch.func.vmap(f)(*_batch(a)),
    "func.vmap_partial": lambda f, a: torch.func.vmap(f, in_dims=(0,) + (None,) * (len(a) - 1))(*_batch(a[:1]), *a[1:]),
    "func.vmap_grad": lambda f, a: torch.func.vmap(torch.func.grad(_loss(f), argnums=_argnums(a)))(*_batch(a)),
    "func.grad_vmap": lambda f, a: torch.func.grad(
        lambda *b: torch.func.vmap(_loss(f))(*b).sum(), argnums=_argnums(a)
    )(*_batch(a)),
    "func.jacfwd_jacrev": lambda f, a: torch.func.jacfwd(torch.func.jacrev(_loss(f)))(*a),
}




def _flat(r):
    if isinstance(r, torch.Tensor):
        return [r]
    return [t for x in r for t in _flat(x)]


@pytest.mark.parametrize("raw", [False, True], ids=["public", "raw_op"])
@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("case", list(CASES))
def test_transform_matches_reference(case, transform, raw):
    """The public functions and the raw registered ops torch.ops.tnattn.* (issue 13 items 1-2)."""
    op, ref, args = CASES[case]
    if raw:
        op = RAW_CASES[case]
    t = TRANSFORMS[transform]
    want, got = _flat(t(ref, args)), _flat(t(op, args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    # the oracle is not trivially zero (a silently constant derivative would match a zero oracle)
    assert any(bool(w.abs().max() > 1e-6) for w in want)


def test_double_backward_issue_example():
    """The issue's example: d=2, D=4, N=3, M=6, float64, loss = W.pow(2).sum(); g.pow(2).sum() must
    depend on A (it was silently constant)."""
    g0 = torch.Generator().manual_seed(0)
    A = torch.randn(2, 4, 4, dtype=F64, generator=g0, requires_grad=True)
    C = torch.randn(2, 4, 4, 1, dtype=F64, generator=g0)
    u, v = torch.randn(4, dtype=F64, generator=g0), torch.randn(4, dtype=F64, generator=g0)
    x = torch.randint(0, 2, (3, 6), generator=g0)
    got, want = [], []
    for fn, out in ((ops.tn_attention, got), (reference.tn_attention, want)):
        (g,) = torch.autograd.grad(fn(x, A, A, C, u, v).pow(2).sum(), A, create_graph=True)
        assert g.requires_grad
        out.append(torch.autograd.grad(g.pow(2).sum(), A)[0])
    assert want[0].abs().max() > 1e-3
    torch.testing.assert_close(got[0], want[0], rtol=1e-9, atol=1e-11)


def test_first_order_backward_uses_the_kernel_and_matches():
    """Without create_graph the fused backward kernel runs (no reference recomputation) and the
    gradient is a constant of the graph."""
    A = _rand(d, D, D, seed=30).requires_grad_()
    C, u = _rand(d, D, D, 1, seed=31), _rand(D, seed=32)
    (g,) = torch.autograd.grad(ops.tn_attention(X, A, A, C, u, u).sum(), A)
    assert not g.requires_grad and g.grad_fn is None
    (w,) = torch.autograd.grad(reference.tn_attention(X, A, A, C, u, u).sum(), A)
    torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


# The raw backward ops: name -> (call(grad, *primals) -> the op's gradients in primal order,
# reference(*primals), primals, which gradients the call asks for). Gradients not asked for come
# back as (0,) placeholders.
def _tn_ens_bw(g, x, AL, AR, C, u, v):
    return _raw.tn_attention_backward(g, x, AL, AR, C, u, v, [True, True, False, True, False, True])


RAW_BACKWARD = {
    "contexts": (
        lambda g, A, b: _raw.contexts_backward(g, A, X, b, True, True, True, False)[:2],
        lambda A, b: reference.contexts(A, X, b, reverse=True),
        (_rand(d, D, D, seed=40), _rand(N, D, seed=41)),
        (True, True),
    ),
    "tn_attention": (
        lambda g, AL, AR, C, u, v: _raw.tn_attention_backward(g, X, AL, AR, C, u, v, [False] + [True] * 5)[1:],
        lambda AL, AR, C, u, v: reference.tn_attention(X, AL, AR, C, u, v),
        (_rand(d, D, D, seed=42), _rand(d, D, D, seed=43), _rand(d, D, D, c, seed=44), _rand(D, seed=45),
         _rand(N, D, seed=46)),
        (True, True, True, True, True),
    ),  # fmt: skip
    "contexts_stacked": (
        lambda g, A, b: _raw.contexts_backward(g, A, XE, b, False, False, True, False)[:2],
        lambda A, b: _ref_ctx_ens(A, XE, b),
        (_rand(E, d, D, D, seed=47), _rand(E, D, seed=48)),
        (False, True),
    ),
    "tn_attention_stacked": (
        _tn_ens_bw,
        lambda x, AL, AR, C, u, v: torch.stack(
            [reference.tn_attention(x[e], AL[e], AR[e], C[e], u[e], v[e]) for e in range(E)]
        ),
        (_rand(E, N, M, d, seed=49), _rand(E, d, D, D, seed=50), _rand(E, d, D, D, seed=51), _rand(E, d, D, D, c, seed=52),
         _rand(E, D, seed=53), _rand(E, N, D, seed=54)),
        (True, True, False, True, False, True),
    ),  # fmt: skip
}


def _asked(grads, asked):
    for g, a in zip(grads, asked):
        assert a or g.shape == (0,)  # a placeholder
    return [g for g, a in zip(grads, asked) if a]


@pytest.mark.parametrize("name", list(RAW_BACKWARD))
def test_raw_backward_op_derivative_matches_reference(name):
    """The raw backward ops are exact to the first and second order (what double backward through
    the raw forward ops differentiates), against autograd of the reference."""
    call, ref, primals, asked = RAW_BACKWARD[name]
    leaves = _leaves(primals)
    grad = _rand(*ref(*primals).shape, seed=60).requires_grad_()
    got = _asked(call(grad, *leaves), asked)
    want = torch.autograd.grad(ref(*leaves), [p for p, a in zip(leaves, asked) if a], grad, create_graph=True)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    d_got = torch.autograd.grad(sum(g.sin().sum() for g in got), (*leaves, grad), allow_unused=True)
    d_want = torch.autograd.grad(sum(w.sin().sum() for w in want), (*leaves, grad), allow_unused=True)
    for g, w in zip(d_got, d_want):
        if w is None:
            assert g is None or torch.count_nonzero(g) == 0
        else:
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    assert any(bool(w.abs().max() > 1e-6) for w in d_want if w is not None)


@pytest.mark.parametrize(
    "transform,kind",
    [("func.grad", "grad transforms"), ("func.vjp", "grad transforms"), ("func.jacrev", "grad transforms"),
     ("func.hessian", "grad transforms"), ("func.jvp", "forward-mode AD"), ("func.jacfwd", "forward-mode AD"),
     ("forward_ad.dual", "forward-mode AD")],
)  # fmt: skip
@pytest.mark.parametrize("name", list(RAW_BACKWARD))
def test_raw_backward_ops_refuse_transforms_by_name(name, transform, kind):
    """torch.func grad transforms and forward-mode AD of a raw backward op itself: a clear error
    naming the op and the transform (torch's generated autograd would fail with an internal
    message, or drop the tangents)."""
    call, ref, primals, asked = RAW_BACKWARD[name]
    grad = _rand(*ref(*primals).shape, seed=60)

    def f(*p):
        return torch.cat([g.reshape(-1) for g in _asked(call(grad, *p), asked)])

    op = name.removesuffix("_stacked")  # one registered op serves single-model and stacked calls
    with pytest.raises(NotImplementedError, match=rf"torch\.ops\.tnattn\.{op}_backward .* does not support .*{kind}"):
        TRANSFORMS[transform](f, primals)


# transforms whose oracle is another transform of the reference (the reference's own symbol-range
# check reads data, which make_fx tracing in linearize refuses; its indexing has no forward-mode
# batching rule)
PAIRED = {
    "func.linearize": (
        lambda f, a: torch.func.linearize(f, *a)[1](*_tangents(a)),
        TRANSFORMS["func.jvp"],
    ),
    "functional.hessian_vectorize_forward": (
        lambda f, a: torch.autograd.functional.hessian(_loss(f), a, vectorize=True, outer_jacobian_strategy="forward-mode"),
        TRANSFORMS["functional.hessian"],
    ),
    "functional.jacobian_forward": (
        lambda f, a: torch.autograd.functional.jacobian(f, a, vectorize=True, strategy="forward-mode"),
        TRANSFORMS["functional.jacobian"],
    ),
}


@pytest.mark.parametrize("raw", [False, True], ids=["public", "raw_op"])
@pytest.mark.parametrize("transform", list(PAIRED))
@pytest.mark.parametrize("case", ["tn_attention", "contexts_stacked", "tn_attention_stacked_embeddings"])
def test_paired_transform_matches_reference(case, transform, raw):
    op, ref, args = CASES[case]
    if raw:
        op = RAW_CASES[case]
    t_op, t_ref = PAIRED[transform]
    got, want = _flat(t_op(op, args)), _flat(t_ref(ref, args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


def test_raw_ops_pass_opcheck_with_gradients():
    """torch.library.opcheck (schema, autograd registration, fake tensors, AOT dispatch) on all
    four registered ops, single-model and stacked, with inputs that require grad, so that the backward ops' own derivative
    formulas are traced too."""
    rg = [a.detach().clone().requires_grad_() for a in CASES["tn_attention"][2]]
    AL, AR, C, u, v = rg
    uN = _rand(N, D, seed=70).requires_grad_()
    gW, gL = _rand(N, M, d, c, seed=71).requires_grad_(), _rand(N, M, D, seed=72).requires_grad_()
    AE, CE, bE = (_rand(E, d, D, D, seed=73).requires_grad_(), _rand(E, d, D, D, c, seed=74).requires_grad_(),
                  _rand(E, D, seed=75).requires_grad_())  # fmt: skip
    gWE, gLE = _rand(E, N, M, d, c, seed=76).requires_grad_(), _rand(E, N, M, D, seed=77).requires_grad_()
    xr = _rand(N, M, d, seed=78).requires_grad_()
    calls = [
        (_raw.contexts.default, (AL, X, uN), {"reverse": True}),
        (_raw.tn_attention.default, (xr, AL, AR, C, u, v), {}),
        (_raw.contexts_backward.default, (gL, AL, xr, u, False, True, True, True), {}),
        (_raw.tn_attention_backward.default, (gW, X, AL, AR, C, uN, v, [False, True, True, True, True, False]), {}),
        (_raw.contexts.default, (AE, XE, bE), {"reverse": True}),
        (_raw.tn_attention.default, (X, AE, AE, CE, bE, bE), {}),
        (_raw.contexts_backward.default, (gLE, AE, XE, bE, True, True, True, False), {}),
        (_raw.tn_attention_backward.default, (gWE, XE, AE, AE, CE, bE, bE, [False, True, False, True, True, True]), {}),
    ]  # fmt: skip
    for op, args, kwargs in calls:
        torch.library.opcheck(op, args, kwargs)


@pytest.mark.parametrize("raw", [False, True], ids=["public", "raw_op"])
def test_compiled_func_grad_matches_reference(raw):
    """torch.compile(fullgraph=True) of torch.func.grad through an op traces the op's fake kernel
    under the transform."""
    op, ref, (A, b) = CASES["contexts"]
    if raw:
        op = RAW_CASES["contexts"]
    got = torch.compile(torch.func.grad(_loss(op), argnums=(0, 1)), fullgraph=True, backend="aot_eager")(A, b)
    want = torch.func.grad(_loss(ref), argnums=(0, 1))(A, b)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", ["contexts_right_per_sequence", "tn_attention_shared_embeddings", "contexts_stacked"])
@pytest.mark.parametrize("raw", [False, True], ids=["public", "raw_op"])
def test_gradgradcheck_against_finite_differences(case, raw):
    """Second derivatives against finite differences (an oracle independent of the reference)."""
    op = RAW_CASES[case] if raw else CASES[case][0]
    args = _leaves(CASES[case][2])
    assert torch.autograd.gradgradcheck(op, args)


@pytest.mark.parametrize("raw", [False, True], ids=["public", "raw_op"])
@pytest.mark.parametrize("case", ["contexts", "tn_attention", "contexts_stacked", "tn_attention_stacked_shared_x"])
def test_functionalize_and_its_compositions(case, raw):
    """torch.func.functionalize (no autograd.Function rule in torch): the op's value, and grad of it."""
    op, ref, args = CASES[case]
    if raw:
        op = RAW_CASES[case]
    torch.testing.assert_close(torch.func.functionalize(op)(*args), ref(*args), rtol=1e-10, atol=1e-12)
    got = torch.func.grad(torch.func.functionalize(_loss(op)), argnums=_argnums(args))(*args)
    want = torch.func.grad(_loss(ref), argnums=_argnums(args))(*args)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)

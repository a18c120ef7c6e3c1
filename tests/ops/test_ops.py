"""Tests of tnattn.ops (C++ kernels behind torch custom ops) against tnattn.reference.

Tests that take the ``device`` fixture (tests/conftest.py) run on the CPU kernels and, where a GPU
and the CUDA build are present, on the CUDA kernels, against the same float64 CPU oracle. Their
cases include the CUDA kernels' paths (blocks of 128 sequences, the D = 16 and 32 kernels, the
runtime-D path, parameters too large for shared memory) as well as the CPU kernels' paddings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tnattn import _C, ops
from tnattn import reference as ref

F64 = torch.float64
F32 = torch.float32

# Every test here runs once per CPU instruction-set path this machine supports (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("cpu_isa")


def make_inputs(N, M, d, D, c=1, *, dtype=F64, real=False, xdtype=torch.int64, u_pb=False, v_pb=True, seed=0,
                device="cpu"):  # fmt: skip
    """Random parameters and inputs (leaf tensors requiring grad) on ``device``, drawn on the CPU
    (so every device gets the same values)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).to(device).requires_grad_()

    A_left, A_right, C = rnd(d, D, D), rnd(d, D, D), rnd(d, D, D, c)
    u = rnd(N, D) if u_pb else rnd(D)
    v = rnd(N, D) if v_pb else rnd(D)
    if real:
        x = torch.rand(N, M, d, generator=g, dtype=dtype).to(device).requires_grad_()
    else:
        x = torch.randint(0, d, (N, M), generator=g).to(xdtype).to(device)
    return x, A_left, A_right, C, u, v


def _oracle_inputs(inputs):
    """Detached float64 CPU copies for tnattn.reference (leaves where the originals are)."""
    return [t.detach().double().cpu().requires_grad_(t.requires_grad) if t.is_floating_point() else t.cpu()
            for t in inputs]


def grads_of(out, inputs, seed=1):
    """Gradients of a fixed random projection of out with respect to the floating inputs."""
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(out.device, out.dtype)
    inputs = [t for t in inputs if t.requires_grad]
    return torch.autograd.grad((out * w).sum(), inputs, allow_unused=True)


def assert_close_all(got, want, rtol, atol):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0, f"item {k}"
            continue
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=rtol, atol=atol, msg=lambda m: f"item {k}: {m}")


def check_tn_attention(N, M, d, D, c, *, dtype=F64, real=False, shared_A=False, device="cpu", **kw):
    x, A_left, A_right, C, u, v = make_inputs(N, M, d, D, c, dtype=dtype, real=real, device=device, **kw)
    if shared_A:
        A_right = A_left
    inputs = [x, A_left, A_right, C, u, v]
    W = ops.tn_attention(*inputs)
    assert W.shape == (N, M, d, c) and W.dtype == dtype and W.device.type == device
    # The oracle runs in float64 on the CPU, on the same (rounded) values.
    inputs64 = _oracle_inputs(inputs)
    if shared_A:
        inputs64[2] = inputs64[1]
    W_ref = ref.tn_attention(*inputs64)
    tol = dict(rtol=1e-10, atol=1e-11) if dtype == F64 else dict(rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(W.cpu(), W_ref.to(dtype), **tol)
    uniq = lambda ts: [t for k, t in enumerate(ts) if t.requires_grad and all(t is not s for s in ts[:k])]  # noqa: E731
    got = grads_of(W, uniq(inputs))
    want = grads_of(W_ref, uniq(inputs64))
    gtol = dict(rtol=1e-9, atol=1e-10) if dtype == F64 else dict(rtol=2e-3, atol=2e-4)
    assert_close_all(got, [None if w is None else w.to(dtype) for w in want], **gtol)


def check_contexts(N, M, d, D, *, reverse, dtype=F64, real=False, per_batch=False, xdtype=torch.int64, seed=0,
                   device="cpu"):  # fmt: skip
    x, A, _, _, u, _ = make_inputs(N, M, d, D, dtype=dtype, real=real, u_pb=per_batch, xdtype=xdtype, seed=seed,
                                   device=device)  # fmt: skip
    out = ops.contexts(A, x, u, reverse=reverse)
    assert out.shape == (N, M, D) and out.device.type == device
    inputs64 = _oracle_inputs([A, x, u])
    out_ref = ref.contexts(*inputs64, reverse=reverse)
    # The GPU kernels normalise in another order: their absolute tolerance is the one the former
    # GPU-only copy of this test used (10x the CPU's in float64, 2x in float32).
    if dtype == F64:
        tol = dict(rtol=1e-10, atol=1e-11 if device == "cuda" else 1e-12)
    else:
        tol = dict(rtol=1e-4, atol=2e-5 if device == "cuda" else 1e-5)
    torch.testing.assert_close(out.cpu(), out_ref.to(dtype), **tol)
    got = grads_of(out, [A, x, u])
    want = grads_of(out_ref, inputs64)
    gtol = dict(rtol=1e-9, atol=1e-10) if dtype == F64 else dict(rtol=2e-3, atol=2e-4)
    assert_close_all(got, [None if w is None else w.to(dtype) for w in want], **gtol)


# ------------------------------------------------------------------------------------------------
# Values and gradients against the reference


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "N,M,d,D,real,per_batch",
    [
        (3, 1, 2, 3, False, False),
        (2, 2, 3, 1, False, True),
        (4, 3, 4, 2, True, False),
        (9, 7, 2, 8, False, True),  # two blocks of sequences, padded size exactly D
        (5, 6, 3, 5, True, True),  # padding 5 -> 8
        (2, 5, 2, 13, False, False),  # padding 13 -> 16
        (2, 4, 2, 20, True, False),  # padding 20 -> a multiple of the register lanes
        (2, 4, 3, 33, False, True),  # several registers per vector
        (1, 3, 2, 64, False, False),  # the largest padded size
        (2, 3, 2, 65, True, True),  # generic runtime-D path (D > 64)
        (150, 6, 2, 8, True, True),  # CUDA: two blocks of 128 sequences
        (5, 5, 3, 16, False, True),  # CUDA: the D = 16 kernels
        (4, 4, 2, 36, True, False),  # CUDA: the runtime-D path (D > 32)
    ],
)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_contexts_matches_reference(N, M, d, D, real, per_batch, reverse, dtype, device):
    check_contexts(N, M, d, D, reverse=reverse, dtype=dtype, real=real, per_batch=per_batch, device=device)


@pytest.mark.parametrize(
    "N,M,d,D,c,real,shared_A,u_pb,v_pb",
    [
        (3, 1, 2, 3, 1, False, False, False, False),
        (2, 2, 3, 1, 2, False, True, True, False),
        (4, 3, 4, 2, 3, True, False, False, True),
        (10, 9, 2, 8, 1, False, True, False, True),
        (5, 6, 3, 6, 2, True, True, True, True),
        (3, 5, 2, 16, 3, False, False, True, False),
        (2, 3, 2, 33, 2, True, False, False, False),
        (3, 4, 2, 40, 1, False, True, False, True),
        (1, 3, 2, 64, 1, False, False, True, False),
        (2, 2, 2, 67, 1, True, False, False, False),  # generic runtime-D path (D > 64)
        (150, 7, 2, 8, 1, False, False, False, True),  # CUDA: two blocks of 128 sequences
        (70, 4, 2, 13, 3, False, True, False, True),  # CUDA: the D = 16 kernels, two blocks
        (33, 3, 3, 20, 2, True, False, False, False),  # CUDA: the D = 32 kernels, two blocks
        (6, 3, 4, 20, 8, False, False, True, False),  # CUDA: parameters too large for shared memory
    ],
)
@pytest.mark.parametrize("dtype", [F64, F32])
def test_tn_attention_matches_reference(N, M, d, D, c, real, shared_A, u_pb, v_pb, dtype, device):
    check_tn_attention(N, M, d, D, c, dtype=dtype, real=real, shared_A=shared_A, u_pb=u_pb, v_pb=v_pb, device=device)


@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(1, 11),
    M=st.integers(1, 9),
    d=st.integers(2, 4),
    D=st.integers(1, 64),
    c=st.integers(1, 3),
    real=st.booleans(),
    shared_A=st.booleans(),
    u_pb=st.booleans(),
    v_pb=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_tn_attention_hypothesis(N, M, d, D, c, real, shared_A, u_pb, v_pb, seed):
    check_tn_attention(N, M, d, D, c, real=real, shared_A=shared_A, u_pb=u_pb, v_pb=v_pb, seed=seed)


@settings(max_examples=20, deadline=None)
@given(
    N=st.integers(1, 11),
    M=st.integers(1, 9),
    d=st.integers(2, 4),
    D=st.integers(1, 64),
    reverse=st.booleans(),
    real=st.booleans(),
    per_batch=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_contexts_hypothesis(N, M, d, D, reverse, real, per_batch, seed):
    check_contexts(N, M, d, D, reverse=reverse, real=real, per_batch=per_batch, seed=seed)


@pytest.mark.parametrize("xdtype", [torch.uint8, torch.int32, torch.int64])
def test_symbol_dtypes_agree(xdtype, device):
    x, A_left, A_right, C, u, v = make_inputs(40, 7, 3, 4, 2, dtype=F32, device=device)
    W64 = ops.tn_attention(x, A_left, A_right, C, u, v)
    W = ops.tn_attention(x.to(xdtype), A_left, A_right, C, u, v)
    assert torch.equal(W, W64)
    check_contexts(4, 5, 3, 4, reverse=True, xdtype=xdtype, device=device)


def test_one_hot_embeddings_equal_symbols():
    x, A_left, A_right, C, u, v = make_inputs(5, 6, 3, 4, 2)
    onehot = torch.nn.functional.one_hot(x, 3).to(F64)
    torch.testing.assert_close(ops.tn_attention(onehot, A_left, A_right, C, u, v), ops.tn_attention(x, A_left, A_right, C, u, v))


def test_contexts_are_unit_vectors_and_projective():
    x, A, _, _, u, _ = make_inputs(3, 6, 2, 4)
    L = ops.contexts(A, x, u).detach()
    torch.testing.assert_close(L.norm(dim=-1), torch.ones(3, 6, dtype=F64))
    # l_i is parallel to u^T A[x_0] ... A[x_{i-1}] (direct product, no normalisation on the way)
    p = u.detach().clone()
    for i in range(5):
        p = p @ A.detach()[x[1, i]]
    torch.testing.assert_close(L[1, 5], p / p.norm())


# ------------------------------------------------------------------------------------------------
# Exact-zero rule


def test_zero_boundary_gives_zero_contexts_and_zero_gradients(device):
    x, A, _, C, u, v = make_inputs(3, 5, 2, 3, 2, device=device)
    u0 = torch.zeros(3, dtype=F64, device=device, requires_grad=True)
    L = ops.contexts(A, x, u0)
    assert torch.count_nonzero(L) == 0
    W = ops.tn_attention(x, A, A, C, u0, v)
    assert torch.count_nonzero(W) == 0
    gA, gu = torch.autograd.grad(W.sum() + L.sum(), [A, u0])
    assert torch.isfinite(gA).all() and torch.count_nonzero(gu) == 0


def test_annihilating_symbol_zeroes_the_rest_of_the_scan():
    # A[1] = 0: every context after the first 1 is exactly zero; values and gradients stay finite
    # and match the reference's exact-zero rule.
    x, A, B, C, u, v = make_inputs(4, 6, 2, 3, 1)
    with torch.no_grad():
        A[1].zero_()
    x = torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 1, 0]])
    L = ops.contexts(A, x, u)
    assert torch.count_nonzero(L[0, 2:]) == 0 and torch.count_nonzero(L[2, 1:]) == 0
    torch.testing.assert_close(L[1].norm(dim=-1), torch.ones(6, dtype=F64))
    torch.testing.assert_close(L[0, :2].norm(dim=-1), torch.ones(2, dtype=F64))
    check = [A, B, C, u, v]
    W = ops.tn_attention(x, A, B, C, u, v)
    W_ref = ref.tn_attention(x, A, B, C, u, v)
    torch.testing.assert_close(W, W_ref)
    got, want = grads_of(W, check), grads_of(W_ref, check)
    assert all(torch.isfinite(g).all() for g in got)
    assert_close_all(got, want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Autograd machinery


def test_gradcheck_tn_attention_int_and_real():
    x, A_left, A_right, C, u, v = make_inputs(3, 4, 2, 3, 2, u_pb=True)
    assert torch.autograd.gradcheck(lambda *t: ops.tn_attention(x, *t), (A_left, A_right, C, u, v))
    assert torch.autograd.gradcheck(lambda A, C: ops.tn_attention(x, A, A, C, u, v), (A_left, C))
    xr = make_inputs(3, 4, 2, 3, real=True)[0]
    assert torch.autograd.gradcheck(lambda *t: ops.tn_attention(*t), (xr, A_left, A_right, C, u, v))


@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_contexts(reverse):
    x, A, _, _, u, _ = make_inputs(3, 4, 3, 3, u_pb=True)
    assert torch.autograd.gradcheck(lambda A, u: ops.contexts(A, x, u, reverse=reverse), (A, u))
    xr, A, _, _, u, _ = make_inputs(2, 3, 2, 2, real=True)
    assert torch.autograd.gradcheck(lambda A, xr, u: ops.contexts(A, xr, u, reverse=reverse), (A, xr, u))


@pytest.mark.parametrize("real", [False, True])
def test_opcheck(real):
    x, A_left, A_right, C, u, v = make_inputs(3, 4, 2, 3, 2, real=real)
    torch.library.opcheck(torch.ops.tnattn.tn_attention.default, (x, A_left, A_right, C, u, v))
    torch.library.opcheck(torch.ops.tnattn.contexts.default, (A_left, x, u), {"reverse": True})
    torch.library.opcheck(torch.ops.tnattn.contexts.default, (A_left, x, v))
    d = [t.detach() for t in (A_left, A_right, C, u, v)]
    xd = x.detach()
    gW = torch.randn(3, 4, 2, 2, dtype=F64)
    torch.library.opcheck(
        torch.ops.tnattn.tn_attention_backward.default, (gW, xd, *d, [real, True, True, True, True, False])
    )
    gL = torch.randn(3, 4, 3, dtype=F64)
    torch.library.opcheck(torch.ops.tnattn.contexts_backward.default, (gL, d[0], xd, d[3], True, True, True, real))


def test_torch_compile_fullgraph_matches_eager():
    x, A_left, A_right, C, u, v = make_inputs(4, 5, 2, 3, 2, dtype=F32)

    def loss(x, A_left, A_right, C, u, v):
        W = ops.tn_attention(x, A_left, A_right, C, u, v)
        L = ops.contexts(A_left, x, u, reverse=True)
        return (W**2).sum() + L.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    params = [A_left, A_right, C, u, v]
    got = compiled(x, *params)
    g_got = torch.autograd.grad(got, params)
    want = loss(x, *params)
    g_want = torch.autograd.grad(want, params)
    torch.testing.assert_close(got, want)
    assert_close_all(list(g_got), list(g_want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("real", [False, True])
def test_eager_path_and_custom_op_path_agree(real):
    # ops.* uses a direct autograd.Function for plain eager tensors and torch.ops.tnattn.* otherwise.
    x, A_left, A_right, C, u, v = make_inputs(5, 6, 3, 4, 2, real=real, u_pb=True)
    inputs = [x, A_left, A_right, C, u, v]
    W_eager = ops.tn_attention(*inputs)
    W_op = torch.ops.tnattn.tn_attention(*inputs)
    assert torch.equal(W_eager, W_op)
    for a, b in zip(grads_of(W_eager, inputs), grads_of(W_op, inputs)):
        assert torch.equal(a, b)
    for reverse in (False, True):
        L_eager = ops.contexts(A_left, x, u, reverse=reverse)
        L_op = torch.ops.tnattn.contexts(A_left, x, u, reverse=reverse)
        assert torch.equal(L_eager, L_op)
        for a, b in zip(grads_of(L_eager, [A_left, x, u]), grads_of(L_op, [A_left, x, u])):
            assert torch.equal(a, b)


def test_no_grad_needed_returns_plain_tensor():
    x, A_left, A_right, C, u, v = make_inputs(2, 3, 2, 2)
    with torch.no_grad():
        W = ops.tn_attention(x, A_left, A_right, C, u, v)
    assert not W.requires_grad
    # Only C requires grad: the backward computes just that.
    Cg = C.detach().requires_grad_()
    W = ops.tn_attention(x, A_left.detach(), A_right.detach(), Cg, u.detach(), v.detach())
    (gC,) = torch.autograd.grad(W.sum(), [Cg])
    W_ref = ref.tn_attention(x, A_left.detach(), A_right.detach(), Cg, u.detach(), v.detach())
    torch.testing.assert_close(gC, torch.autograd.grad(W_ref.sum(), [Cg])[0])


# ------------------------------------------------------------------------------------------------
# Threads, determinism, long sequences


def test_threads_agree_and_are_deterministic():
    x, A_left, A_right, C, u, v = make_inputs(64, 64, 2, 8, 1, dtype=F32)
    params = [A_left, A_right, C, u, v]
    old = torch.get_num_threads()
    try:
        res = {}
        for nt in (1, 2, 2):
            torch.set_num_threads(nt)
            W = ops.tn_attention(x, *params)
            res.setdefault(nt, []).append((W.detach(), grads_of(W, params)))
    finally:
        torch.set_num_threads(old)
    (W1, g1), = res[1]
    (W2, g2), (W2b, g2b) = res[2]
    assert torch.equal(W1, W2) and torch.equal(W2, W2b)  # forward is per-sequence: bitwise equal
    for a, b in zip(g2, g2b):
        assert torch.equal(a, b)  # fixed reduction order for a fixed thread count
    assert_close_all(list(g1), list(g2), rtol=1e-5, atol=1e-5)


def _child_forward(queue):
    x, A_left, A_right, C, u, v = make_inputs(64, 64, 2, 8, 1, dtype=F32)
    torch.set_num_threads(2)
    queue.put(float(ops.tn_attention(x, A_left, A_right, C, u, v).detach().sum()))


def test_kernels_work_in_a_forked_child():
    # The kernels keep a persistent worker pool; a forked child (e.g. a DataLoader worker) must
    # start a fresh one instead of waiting on the parent's threads, which fork does not copy.
    import multiprocessing as mp

    x, A_left, A_right, C, u, v = make_inputs(64, 64, 2, 8, 1, dtype=F32)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = float(ops.tn_attention(x, A_left, A_right, C, u, v).detach().sum())  # pool now exists
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child_forward, args=(queue,))
        proc.start()
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
            pytest.fail("forked child hung in the kernels")
        assert proc.exitcode == 0
        assert queue.get(timeout=5) == want
    finally:
        torch.set_num_threads(old)


def test_long_sequence_is_finite_and_agrees_with_float64(device):
    M = 100_000
    x, A_left, A_right, C, u, v = make_inputs(2, M, 2, 4, 1, dtype=F32, seed=3, device=device)
    params32 = [A_left, A_right, C, u, v]
    W32 = ops.tn_attention(x, *params32)
    g32 = grads_of(W32, params32)
    params64 = [t.detach().double().requires_grad_() for t in params32]
    W64 = ops.tn_attention(x, *params64)
    g64 = grads_of(W64, params64)
    assert torch.isfinite(W32).all() and all(torch.isfinite(g).all() for g in g32)
    # The normalised scan forgets its start, so float32 rounding does not accumulate along M: the
    # error stays at the float32 level on average. Isolated sites where a step nearly annihilates
    # the context (small pre-normalisation norm) are ill-conditioned in any precision and show
    # errors up to ~1e-2 of the scale with N(0, 1) matrices (measured: 4.6e-3 and 2.6e-2 for two
    # seeds), hence the looser bound on the maximum.
    err = (W32.double() - W64.detach()).abs()
    scale = W64.detach().abs().max()
    assert err.mean() < 1e-5 * scale
    assert err.max() < 5e-2 * scale
    for a, b in zip(g32, g64):
        assert (a.double() - b).abs().max() < 1e-1 * b.abs().max()


# ------------------------------------------------------------------------------------------------
# Ensemble (E > 1) entry points of the extension, against a loop over groups


def _xkind(x):
    return {torch.uint8: _C.X_UINT8, torch.int32: _C.X_INT32, torch.int64: _C.X_INT64}.get(x.dtype, _C.X_REAL)


@pytest.mark.parametrize("real", [False, True])
@pytest.mark.parametrize("x_shared", [False, True])
def test_native_ensemble_matches_loop(real, x_shared):
    E, N, M, d, D, c = 3, 11, 5, 3, 5, 2
    g = torch.Generator().manual_seed(7)
    AL, AR = torch.randn(E, d, D, D, generator=g, dtype=F64), torch.randn(E, d, D, D, generator=g, dtype=F64)
    C = torch.randn(E, d, D, D, c, generator=g, dtype=F64)
    u = torch.randn(E, 1, D, generator=g, dtype=F64)  # shared over the batch
    v = torch.randn(E, N, D, generator=g, dtype=F64)  # per sequence
    X = 1 if x_shared else E
    x = torch.rand(X, N, M, d, generator=g, dtype=F64) if real else torch.randint(0, d, (X, N, M), generator=g).to(torch.int32)
    gW = torch.randn(E, N, M, d, c, generator=g, dtype=F64)
    W = torch.empty(E, N, M, d, c, dtype=F64)
    assert _C.tn_attention_forward(True, x.data_ptr(), _xkind(x), x_shared, AL.data_ptr(), AR.data_ptr(), C.data_ptr(),
                                   u.data_ptr(), False, v.data_ptr(), True, W.data_ptr(), E, N, M, d, D, c, 2) == 0
    gAL, gAR, gC = torch.empty_like(AL), torch.empty_like(AR), torch.empty_like(C)
    gu, gv, gx = torch.empty(E, N, D, dtype=F64), torch.empty(E, N, D, dtype=F64), torch.empty(E, N, M, d, dtype=F64)
    assert _C.tn_attention_backward(True, x.data_ptr(), _xkind(x), x_shared, AL.data_ptr(), AR.data_ptr(),
                                    C.data_ptr(), u.data_ptr(), False, v.data_ptr(), True, gW.data_ptr(),
                                    gAL.data_ptr(), gAR.data_ptr(), gC.data_ptr(), gu.data_ptr(), gv.data_ptr(),
                                    gx.data_ptr() if real else 0, E, N, M, d, D, c, 2) == 0  # fmt: skip
    for e in range(E):
        xe = x[0 if x_shared else e]
        leaves = [t[e].clone().requires_grad_() for t in (AL, AR, C)] + [u[e, 0].clone().requires_grad_(), v[e].clone().requires_grad_()]
        if real:
            xe = xe.clone().requires_grad_()
        W_ref = ref.tn_attention(xe, *leaves)
        torch.testing.assert_close(W[e], W_ref, rtol=1e-10, atol=1e-12)
        want = torch.autograd.grad((W_ref * gW[e]).sum(), leaves + ([xe] if real else []))
        got = [gAL[e], gAR[e], gC[e], gu[e].sum(0), gv[e]] + ([gx[e]] if real else [])
        assert_close_all(got, list(want), rtol=1e-9, atol=1e-10)
    # contexts entry points with E groups (right side, per-group x)
    out = torch.empty(E, N, M, D, dtype=F64)
    assert _C.contexts_forward(True, AR.data_ptr(), x.data_ptr(), _xkind(x), x_shared, u.data_ptr(), False,
                               out.data_ptr(), E, N, M, d, D, True, 2) == 0
    for e in range(E):
        torch.testing.assert_close(out[e], ref.contexts(AR[e], x[0 if x_shared else e], u[e, 0], reverse=True))


def test_native_exec_argument_selects_the_device():
    """The one binding table takes the device as its last argument: a thread count runs the CPU
    kernels; a (device, stream, alloc) tuple the CUDA kernels, which a CPU-only build refuses by
    name; anything else is a TypeError."""
    E, N, M, d, D = 1, 2, 3, 2, 2
    A, u = torch.randn(E, d, D, D, dtype=F64), torch.randn(E, 1, D, dtype=F64)
    x = torch.zeros(1, N, M, dtype=torch.int64)
    out = torch.empty(E, N, M, D, dtype=F64)
    args = (True, A.data_ptr(), x.data_ptr(), _C.X_INT64, True, u.data_ptr(), False, out.data_ptr(), E, N, M, d, D, False)
    assert _C.contexts_forward(*args, 1) == 0
    torch.testing.assert_close(out[0], ref.contexts(A[0], x[0], u[0, 0]))
    with pytest.raises(TypeError, match="exec must be a thread count"):
        _C.contexts_forward(*args, "cpu")
    if not _C.has_cuda():
        with pytest.raises(ValueError, match="no CUDA kernels"):
            _C.contexts_forward(*args, (0, 0, lambda n: 0))


# ------------------------------------------------------------------------------------------------
# Stacked calls: E members in one call through the public ops (the single-model call is E = 1)


def _stacked_params(E, d, D, c, g, dtype=F64, per_batch_v=None):
    AL = torch.randn(E, d, D, D, generator=g, dtype=dtype)
    AR = torch.randn(E, d, D, D, generator=g, dtype=dtype)
    C = torch.randn(E, d, D, D, c, generator=g, dtype=dtype)
    u = torch.randn(E, D, generator=g, dtype=dtype)
    v = torch.randn(E, D, generator=g, dtype=dtype) if per_batch_v is None else torch.randn(E, per_batch_v, D, generator=g, dtype=dtype)
    return AL, AR, C, u, v


@pytest.mark.parametrize("real", [False, True])
@pytest.mark.parametrize("shared_x", [False, True])
def test_stacked_tn_attention_member_e_is_the_single_call(real, shared_x):
    """Member e of a stacked call (values and gradients) equals the call on member e's tensors."""
    E, N, M, d, D, c = 3, 5, 7, 3, 4, 2
    g = torch.Generator().manual_seed(1)
    leaves = [t.requires_grad_() for t in _stacked_params(E, d, D, c, g, per_batch_v=N)]
    shape = (N, M) if shared_x else (E, N, M)
    x = torch.rand(*shape, d, generator=g, dtype=F64) if real else torch.randint(0, d, shape, generator=g)
    if real:
        x.requires_grad_()
    W = ops.tn_attention(x, *leaves)
    assert W.shape == (E, N, M, d, c)
    gW = torch.randn(W.shape, generator=g, dtype=F64)
    inputs = leaves + ([x] if real else [])
    got = torch.autograd.grad((W * gW).sum(), inputs)
    want = [torch.zeros_like(t) for t in inputs]
    for e in range(E):
        xe = x if shared_x else x[e]
        We = ops.tn_attention(xe, *(t[e] for t in leaves))
        torch.testing.assert_close(W[e], We, rtol=1e-12, atol=1e-12)
        ge = torch.autograd.grad((We * gW[e]).sum(), inputs)
        want = [w + g_ for w, g_ in zip(want, ge)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
def test_stacked_contexts_match_reference_per_member(reverse):
    E, N, M, d, D = 4, 6, 5, 2, 3
    g = torch.Generator().manual_seed(2)
    A = torch.randn(E, d, D, D, generator=g, dtype=F64, requires_grad=True)
    b = torch.randn(E, D, generator=g, dtype=F64, requires_grad=True)
    x = torch.randint(0, d, (E, N, M), generator=g, dtype=torch.int32)
    out = ops.contexts(A, x, b, reverse=reverse)
    gout = torch.randn(out.shape, generator=g, dtype=F64)
    gA, gb = torch.autograd.grad((out * gout).sum(), [A, b])
    for e in range(E):
        Ae, be = A[e].detach().requires_grad_(), b[e].detach().requires_grad_()
        want = ref.contexts(Ae, x[e], be, reverse=reverse)
        torch.testing.assert_close(out[e], want, rtol=1e-12, atol=1e-12)
        rA, rb = torch.autograd.grad((want * gout[e]).sum(), [Ae, be])
        torch.testing.assert_close(gA[e], rA, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(gb[e], rb, rtol=1e-9, atol=1e-11)


def test_stacked_opcheck():
    E, N, M, d, D, c = 2, 3, 4, 2, 3, 1
    g = torch.Generator().manual_seed(3)
    AL, AR, C, u, v = _stacked_params(E, d, D, c, g)
    x = torch.randint(0, d, (E, N, M), generator=g)
    torch.library.opcheck(torch.ops.tnattn.tn_attention.default, (x, AL.requires_grad_(), AR, C.requires_grad_(), u, v))
    torch.library.opcheck(torch.ops.tnattn.contexts.default, (AL, x[0], u), {"reverse": True})


def test_stacked_calls_reject_bad_input():
    E, N, M, d, D, c = 2, 3, 4, 2, 3, 1
    g = torch.Generator().manual_seed(4)
    AL, AR, C, u, v = _stacked_params(E, d, D, c, g)
    x = torch.randint(0, d, (E, N, M), generator=g)
    with pytest.raises(TypeError, match="A_left"):
        ops.tn_attention(x, "A", AR, C, u, v)
    with pytest.raises(ValueError, match="leading dimension"):
        ops.tn_attention(torch.randint(0, d, (E + 1, N, M)), AL, AR, C, u, v)
    with pytest.raises(ValueError, match="u must have shape"):
        ops.tn_attention(x, AL, AR, C, u[:1], v)
    with pytest.raises(ValueError, match="C must have shape"):
        ops.tn_attention(x, AL, AR, C[:1], u, v)
    with pytest.raises(TypeError, match="dtype"):
        ops.tn_attention(x, AL, AR, C.float(), u, v)
    with pytest.raises(ValueError, match=r"A_right has shape \(3, 2, 3, 3\) but A_left has \(2, 2, 3, 3\)"):
        ops.tn_attention(x, AL, torch.cat([AR, AR[:1]]), C, u, v)
    with pytest.raises(ValueError, match=r"A must have 4 dimensions \(E, d, D, D\)"):
        from tnattn._checks import contexts_layout

        contexts_layout(AL[0], x, u, stacked=True)
    bad = x.clone()
    bad[1, 2, 3] = d
    with pytest.raises(ValueError, match="symbols outside"):
        ops.tn_attention(bad, AL, AR, C, u, v)
    with pytest.raises(ValueError, match="n must be"):
        ops.kernel_threads(0)


def test_stacked_eager_path_and_custom_op_agree():
    E, N, M, d, D, c = 2, 3, 5, 2, 3, 1
    g = torch.Generator().manual_seed(9)
    leaves = [t.requires_grad_() for t in _stacked_params(E, d, D, c, g)]
    x = torch.randint(0, d, (N, M), generator=g)
    W1 = ops.tn_attention(x, *leaves)  # eager autograd.Function path
    W2 = torch.ops.tnattn.tn_attention(x, *leaves)  # registered custom op
    assert torch.equal(W1, W2)
    g1 = torch.autograd.grad(W1.sum(), leaves)
    g2 = torch.autograd.grad(W2.sum(), leaves)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    c1 = ops.contexts(leaves[0], x, leaves[3], reverse=True)
    assert torch.equal(c1, torch.ops.tnattn.contexts(leaves[0], x, leaves[3], reverse=True))


def test_deprecated_ensemble_aliases_warn_and_keep_their_contract():
    """tnattn.ensemble.contexts_ensemble / tn_attention_ensemble / kernel_threads: one release of
    deprecated aliases of the stacked ops; they still refuse unstacked parameters."""
    import tnattn.ensemble as ens

    E, N, M, d, D, c = 2, 3, 4, 2, 3, 1
    AL, AR, C, u, v = _stacked_params(E, d, D, c, torch.Generator().manual_seed(10))
    x = torch.randint(0, d, (E, N, M), generator=torch.Generator().manual_seed(11))
    with pytest.warns(DeprecationWarning, match=r"tnattn\.ensemble\.tn_attention_ensemble is deprecated.*tnattn\.ops\.tn_attention"):
        W = ens.tn_attention_ensemble(x, AL, AR, C, u, v)
    assert torch.equal(W, ops.tn_attention(x, AL, AR, C, u, v))
    with pytest.warns(DeprecationWarning, match=r"contexts_ensemble is deprecated"):
        L = ens.contexts_ensemble(AL, x, u, reverse=True)
    assert torch.equal(L, ops.contexts(AL, x, u, reverse=True))
    with pytest.warns(DeprecationWarning, match=r"kernel_threads is deprecated"), ens.kernel_threads(2):
        from tnattn.ops._native import num_threads

        assert num_threads() == 2
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="A must have 4 dimensions"):
        ens.contexts_ensemble(AL[0], x, u)
    import importlib

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tnattn.ensemble.ops")


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("xdtype,bad_symbol", [(torch.int64, 2), (torch.int64, -1), (torch.int32, -5), (torch.uint8, 200)])
def test_out_of_range_symbols_raise(xdtype, bad_symbol, device):
    x, A_left, A_right, C, u, v = make_inputs(20, 6, 2, 3, 1, xdtype=xdtype, device=device)
    x[13, 4] = bad_symbol
    with pytest.raises(ValueError, match=r"x holds symbols outside \[0, d\)"):
        ops.tn_attention(x, A_left, A_right, C, u, v)
    with pytest.raises(ValueError, match="x holds symbols"):
        ops.contexts(A_left, x, u, reverse=True)


def _good():
    return make_inputs(3, 4, 2, 3, 2, dtype=F32)


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: a.update(x=a["x"].to(torch.int16)), TypeError, "x must be uint8, int32 or int64"),
        (lambda a: a.update(x=a["x"].bool()), TypeError, "x must be"),
        (lambda a: a.update(x=a["x"][None]), ValueError, r"symbols x must have shape \(N, M\)"),
        (lambda a: a.update(x=torch.rand(3, 4, 5)), ValueError, "x has 5 embedding channels"),
        (lambda a: a.update(x=torch.rand(3, 4, 2, dtype=F64)), TypeError, "real embeddings x must have"),
        (lambda a: a.update(x=a["x"][:0]), ValueError, r"N = 0"),
        (lambda a: a.update(x=a["x"][:, :0]), ValueError, r"M = 0"),
        (lambda a: a.update(A_left=a["A_left"].half()), TypeError, "A_left must be float32 or float64"),
        (lambda a: a.update(A_left=a["A_left"][0]), ValueError, "A_left must have 3 dimensions"),
        (lambda a: a.update(A_left=a["A_left"][:, :, :2]), ValueError, "A_left must hold square"),
        (lambda a: a.update(A_right=torch.randn(3, 3, 3)), ValueError, "A_right has shape"),
        (lambda a: a.update(A_right=a["A_right"].double()), TypeError, "A_right has dtype"),
        (lambda a: a.update(C=torch.randn(2, 3, 4, 2)), ValueError, r"C must have shape \(d, D, D, c\)"),
        (lambda a: a.update(C=torch.randn(2, 3, 3, 0)), ValueError, "c = 0"),
        (lambda a: a.update(C=a["C"].double()), TypeError, "C has dtype"),
        (lambda a: a.update(u=torch.randn(4)), ValueError, r"u must have shape \(D,\)"),
        (lambda a: a.update(u=torch.randn(2, 3)), ValueError, r"u must have shape \(D,\) or \(N, D\)"),
        (lambda a: a.update(v=torch.randn(3, 3, 3)), ValueError, "v must have shape"),
        (lambda a: a.update(v=torch.randn(3, dtype=F64)), TypeError, "v must have the parameters' dtype"),
        (lambda a: a.update(u=torch.randn(3, device="meta")), ValueError, "u is on meta"),
        (lambda a: a.update(C=[[1.0]]), TypeError, "C must be a torch.Tensor"),
    ],
)
def test_bad_input_tn_attention(mutate, exc, match):
    x, A_left, A_right, C, u, v = _good()
    args = dict(x=x, A_left=A_left, A_right=A_right, C=C, u=u, v=v)
    mutate(args)
    with pytest.raises(exc, match=match):
        ops.tn_attention(**args)


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: a.update(boundary=torch.randn(5)), ValueError, "boundary must have shape"),
        (lambda a: a.update(boundary=a["boundary"].double()), TypeError, "boundary must have the parameters' dtype"),
        (lambda a: a.update(A=a["A"].int()), TypeError, "A must be float32 or float64"),
        (lambda a: a.update(A=torch.randn(0, 3, 3)), ValueError, "d >= 1"),
        (lambda a: a.update(x=a["x"].float()[:, :, None].expand(3, 4, 2).double()), TypeError, "real embeddings x"),
        (lambda a: a.update(x=a["x"][:, :0]), ValueError, "M = 0"),
        (lambda a: a.update(x="abc"), TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_input_contexts(mutate, exc, match):
    x, A, _, _, u, _ = _good()
    args = dict(A=A, x=x, boundary=u)
    mutate(args)
    with pytest.raises(exc, match=match):
        ops.contexts(args["A"], args["x"], args["boundary"])


def test_bond_dimension_above_kernel_limit_raises():
    x = torch.zeros(1, 2, dtype=torch.int64)
    A = torch.zeros(2, 1025, 1025)
    with pytest.raises(ValueError, match="bond dimension D above 1024"):
        ops.contexts(A, x, torch.ones(1025))


def test_non_contiguous_inputs_are_accepted():
    x, A_left, A_right, C, u, v = make_inputs(4, 6, 3, 4, 2)
    xt = x.t().contiguous().t()  # same values, transposed strides
    At = A_left.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    Cn = C.detach().permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0)
    vn = torch.stack([v.detach(), -v.detach()], dim=-1)[..., 0]
    assert not (xt.is_contiguous() or At.is_contiguous() or Cn.is_contiguous() or vn.is_contiguous())
    W = ops.tn_attention(xt, At, A_right, Cn, u, vn)
    torch.testing.assert_close(W, ops.tn_attention(x, A_left, A_right, C, u, v))
    (gA,) = torch.autograd.grad(W.sum(), [At])
    (gA_ref,) = torch.autograd.grad(ref.tn_attention(x, A_left, A_right, C, u, v).sum(), [A_left])
    torch.testing.assert_close(gA, gA_ref)
    assert np.isfinite(gA.numpy()).all()

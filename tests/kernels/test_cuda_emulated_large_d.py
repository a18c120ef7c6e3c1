"""The block-cooperative CUDA kernels of a runtime bond dimension (csrc/cuda/large_d.cuh), run
through the CUDA emulator against the CPU entry points.

D > 32 (and any D whose compile-time kernel does not fit in shared memory) takes these kernels: a
block per sequence, its threads over the D entries of every vector, fixed-order block reductions
and per-block fp64 gradient partials reduced in block order (no floating-point atomics). Covered
here: D in {33, 40, 47, 64}, float64 (tight) and float32, forward values and every gradient of
contexts (both directions) and tn_attention, integer (uint8/int32/int64) and real inputs, shared x,
shared and per-sequence boundaries, ensembles, M = 1, blocks that walk several sequences of an odd
N, a zero boundary (exact-zero rule), partial gradient requests, out-of-range symbols and bitwise
reproducibility. The emulator runs one OS thread per CUDA thread, so N and M stay small.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
import torch
from test_cuda_emulated import ALL_TN, F32, F64, Problem, assert_same, ctx_backward, ctx_forward, tn_backward, tn_forward

from tnattn import _C

pytestmark = pytest.mark.slow  # builds the emulated extension (~1 min, cached under build/)


@contextmanager
def env(name: str, value):
    """Set an environment variable the emulated build reads (None: leave it unset)."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = str(value)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def target_blocks(n):
    """Blocks per call the large-D kernels aim at (emulated builds only): a small target makes each
    block walk several sequences of its group."""
    return env("TNATTN_EMU_LARGE_D_BLOCKS", n)


# (E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype, xdtype, blocks): blocks = the emulated
# target number of blocks (None: the default, one block per sequence at these sizes).
CASES = [
    (1, 5, 4, 2, 33, 2, False, False, True, False, F64, torch.int64, None),
    (2, 3, 3, 3, 40, 1, True, True, False, True, F32, torch.int64, None),
    (1, 3, 3, 2, 64, 2, False, False, False, True, F64, torch.uint8, None),
    (2, 3, 4, 2, 47, 2, True, False, True, True, F64, torch.int64, None),
    (1, 7, 3, 2, 40, 2, False, True, True, False, F32, torch.int32, 3),  # 3 blocks: 3, 2, 2 sequences
    (2, 5, 2, 2, 40, 1, True, False, False, False, F64, torch.int64, 2),  # one block per group
    (2, 3, 1, 2, 40, 2, False, False, True, True, F64, torch.int64, None),  # M = 1
]


def _problem(E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype, xdtype, seed=0):
    return Problem(E, N, M, d, D, c, dtype=dtype, real=real, x_shared=x_shared, u_pb=u_pb, v_pb=v_pb,
                   xdtype=xdtype, seed=seed)  # fmt: skip


@pytest.mark.parametrize("E,N,M,d,D,c,real,x_shared,u_pb,v_pb,dtype,xdtype,blocks", CASES)
def test_tn_attention_matches_cpu(emu, E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype, xdtype, blocks):
    p = _problem(E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype, xdtype)
    with target_blocks(blocks):
        bad_e, W_e = tn_forward(emu, p, True)
        bad_g, g_e = tn_backward(emu, p, ALL_TN, True)
    bad_c, W_c = tn_forward(_C, p, False)
    assert bad_e == bad_g == bad_c == 0
    assert_same(W_e, W_c, p, "W")
    _, g_c = tn_backward(_C, p, ALL_TN, False)
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("E,N,M,d,D,c,real,x_shared,u_pb,v_pb,dtype,xdtype,blocks", CASES)
def test_contexts_match_cpu(emu, E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype, xdtype, blocks, reverse):
    p = _problem(E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype, xdtype, seed=1)
    with target_blocks(blocks):
        bad_e, o_e = ctx_forward(emu, p, reverse, True)
        bad_g, g_e = ctx_backward(emu, p, reverse, {"A", "b", "x"}, True)
    bad_c, o_c = ctx_forward(_C, p, reverse, False)
    assert bad_e == bad_g == bad_c == 0
    assert_same(o_e, o_c, p, "contexts")
    _, g_c = ctx_backward(_C, p, reverse, {"A", "b", "x"}, False)
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")


def test_zero_boundary_follows_the_exact_zero_rule(emu):
    # A zero boundary has norm 0: its context is the zero vector (not NaN) and passes a zero gradient.
    p = Problem(1, 3, 4, 2, 40, 2, dtype=F64, u_pb=True, v_pb=True)
    p.u[0, 1].zero_()
    p.v[0, 2].zero_()
    _, W_e = tn_forward(emu, p, True)
    _, W_c = tn_forward(_C, p, False)
    assert_same(W_e, W_c, p, "W")
    _, g_e = tn_backward(emu, p, ALL_TN, True)
    _, g_c = tn_backward(_C, p, ALL_TN, False)
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")
    assert torch.equal(g_e["u"][0, 1], torch.zeros(40, dtype=F64))
    _, o_e = ctx_forward(emu, p, False, True)
    assert torch.equal(o_e[0, 1], torch.zeros(4, 40, dtype=F64))


@pytest.mark.parametrize("needs", [{"C"}, {"AR"}, {"AL", "u"}, {"v"}, {"AR", "C", "x"}])
def test_partial_gradient_requests(emu, needs):
    p = Problem(2, 3, 4, 3, 36, 2, dtype=F64, real=True)
    _, g_e = tn_backward(emu, p, needs, True)
    _, g_c = tn_backward(_C, p, needs, False)
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")
    for needs_ctx in ({"A"}, {"b"}, {"x"}):
        _, c_e = ctx_backward(emu, p, True, needs_ctx, True)
        _, c_c = ctx_backward(_C, p, True, needs_ctx, False)
        for k in c_c:
            assert_same(c_e[k], c_c[k], p, f"contexts grad_{k}")


@pytest.mark.parametrize("xdtype,bad_symbol", [(torch.uint8, 7), (torch.int32, -3), (torch.int64, 2)])
def test_out_of_range_symbols_are_counted(emu, xdtype, bad_symbol):
    p = Problem(2, 5, 4, 2, 40, 1, xdtype=xdtype)
    p.x[0, 3, 3] = bad_symbol  # last site: read by the right scan only
    p.x[1, 1, 0] = bad_symbol  # first site: read by the left scan only
    p.x[1, 2, 2] = bad_symbol
    with target_blocks(2):  # one block per group walks all five sequences
        assert tn_forward(emu, p, True)[0] == tn_forward(_C, p, False)[0] == 3
        assert tn_backward(emu, p, ALL_TN, True)[0] == 3
        for rev in (False, True):
            assert ctx_forward(emu, p, rev, True)[0] == ctx_forward(_C, p, rev, False)[0] == 3
            assert ctx_backward(emu, p, rev, {"A"}, True)[0] == 3
    q = Problem(1, 4, 1, 2, 33, 1, xdtype=xdtype)  # M = 1: the only symbol is read by no scan
    q.x[0, 2, 0] = bad_symbol
    assert tn_forward(emu, q, True)[0] == tn_forward(_C, q, False)[0] == 1
    assert tn_backward(emu, q, ALL_TN, True)[0] == 1
    assert ctx_forward(emu, q, False, True)[0] == 1


@pytest.mark.parametrize("real", [False, True])
def test_two_calls_are_bitwise_equal(emu, real):
    # Several blocks per group, each walking several sequences: the parameter gradients are sums of
    # per-block partials in a fixed order, so repeated calls agree to the last bit.
    p = Problem(2, 7, 3, 2, 40, 2, dtype=F32, real=real, u_pb=True)
    with target_blocks(6):
        runs = [tn_backward(emu, p, ALL_TN, True)[1] for _ in range(2)]
        ctx = [ctx_backward(emu, p, True, {"A", "b", "x"}, True)[1] for _ in range(2)]
        fwd = [tn_forward(emu, p, True)[1] for _ in range(2)]
    for k, v in runs[0].items():
        if v is not None:
            assert torch.equal(v, runs[1][k]), k
    for k, v in ctx[0].items():
        if v is not None:
            assert torch.equal(v, ctx[1][k]), k
    assert torch.equal(fwd[0], fwd[1])

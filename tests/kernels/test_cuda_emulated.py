"""The CUDA kernels' logic, executed on the CPU through the CUDA emulator (no GPU needed).

``tests/cuda_emulation`` compiles csrc/cuda/*.cu as C++ against a minimal CUDA runtime in which a
block runs as real threads with a barrier for ``__syncthreads`` (see its cuda_runtime.h). This file
calls the resulting module's entry points with a CUDA execution context on host memory and compares every output with the CPU
entry points of the installed extension (themselves tested against tnattn.reference in
test_ops.py): all compile-time bond dimensions (4, 8, 16, 32) and the runtime-D kernels (more of
those in test_cuda_emulated_large_d.py), integer and
real inputs, shared x, per-sequence and shared boundaries, ensembles, partial gradient requests,
batches that span several blocks with idle threads in the last one, and out-of-range symbols.

What this cannot cover: the real compiler's device code generation, memory coalescing, the
hardware's scheduling and the CUDA runtime; tests/kernels/test_cuda.py covers those on a GPU.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
import torch

from tnattn import _C

F64, F32 = torch.float64, torch.float32
XKIND = {torch.uint8: 0, torch.int32: 1, torch.int64: 2}

pytestmark = pytest.mark.slow  # builds the emulated extension (~1 min, cached under build/)


@contextmanager
def max_shared(nbytes: int):
    """Make the emulated device report this opt-in shared-memory limit (0 forces the runtime-D path)."""
    old = os.environ.get("TNATTN_EMU_MAX_SHARED")
    os.environ["TNATTN_EMU_MAX_SHARED"] = str(nbytes)
    try:
        yield
    finally:
        if old is None:
            del os.environ["TNATTN_EMU_MAX_SHARED"]
        else:
            os.environ["TNATTN_EMU_MAX_SHARED"] = old


class Problem:
    def __init__(self, E, N, M, d, D, c=1, *, dtype=F64, real=False, x_shared=False, u_pb=False, v_pb=True,
                 xdtype=torch.int64, seed=0):  # fmt: skip
        g = torch.Generator().manual_seed(seed)
        rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
        self.E, self.N, self.M, self.d, self.D, self.c = E, N, M, d, D, c
        self.dtype, self.real, self.x_shared, self.u_pb, self.v_pb = dtype, real, x_shared, u_pb, v_pb
        self.AL, self.AR, self.C = rnd(E, d, D, D), rnd(E, d, D, D), rnd(E, d, D, D, c)
        self.u = rnd(E, N if u_pb else 1, D)
        self.v = rnd(E, N if v_pb else 1, D)
        X = 1 if x_shared else E
        if real:
            self.x = torch.rand(X, N, M, d, generator=g, dtype=dtype)
            self.xkind = 3
        else:
            self.x = torch.randint(0, d, (X, N, M), generator=g).to(xdtype)
            self.xkind = XKIND[xdtype]
        self.gW = rnd(E, N, M, d, c)
        self.gL = rnd(E, N, M, D)

    def nan(self, *shape):
        return torch.full(shape, float("nan"), dtype=self.dtype)


def _alloc_into(keep):
    def alloc(nbytes):
        buf = torch.full((max(nbytes, 1),), 255, dtype=torch.uint8)  # 0xFF bytes: NaN if read unwritten
        keep.append(buf)
        return buf.data_ptr()

    return alloc


def call(mod, name, *args, emulated):
    """Call entry point `name` of the installed CPU module, or of the emulated build with a CUDA
    execution context (device 0, stream 0, an allocator of host memory)."""
    if emulated:
        keep = []
        return getattr(mod, name)(*args, (0, 0, _alloc_into(keep)))
    return getattr(mod, name)(*args, 2)


def tn_forward(mod, p: Problem, emulated):
    W = p.nan(p.E, p.N, p.M, p.d, p.c)
    bad = call(mod, "tn_attention_forward", p.dtype == F64, p.x.data_ptr(), p.xkind, p.x_shared, p.AL.data_ptr(),
               p.AR.data_ptr(), p.C.data_ptr(), p.u.data_ptr(), p.u_pb, p.v.data_ptr(), p.v_pb, W.data_ptr(),
               p.E, p.N, p.M, p.d, p.D, p.c, emulated=emulated)  # fmt: skip
    return bad, W


def tn_backward(mod, p: Problem, needs, emulated):
    """needs: subset of {'AL', 'AR', 'C', 'u', 'v', 'x'}; unrequested gradients stay None."""
    E, N, M, d, D = p.E, p.N, p.M, p.d, p.D
    shapes = {"AL": p.AL.shape, "AR": p.AR.shape, "C": p.C.shape, "u": (E, N, D), "v": (E, N, D),
              "x": (E, N, M, d)}  # fmt: skip
    out = {k: (p.nan(*shapes[k]) if k in needs and (k != "x" or p.real) else None) for k in shapes}
    ptr = lambda k: 0 if out[k] is None else out[k].data_ptr()  # noqa: E731
    bad = call(mod, "tn_attention_backward", p.dtype == F64, p.x.data_ptr(), p.xkind, p.x_shared,
               p.AL.data_ptr(), p.AR.data_ptr(), p.C.data_ptr(), p.u.data_ptr(), p.u_pb, p.v.data_ptr(), p.v_pb,
               p.gW.data_ptr(), ptr("AL"), ptr("AR"), ptr("C"), ptr("u"), ptr("v"), ptr("x"), E, N, M, d, D, p.c,
               emulated=emulated)  # fmt: skip
    return bad, out


def ctx_forward(mod, p: Problem, reverse, emulated):
    out = p.nan(p.E, p.N, p.M, p.D)
    bad = call(mod, "contexts_forward", p.dtype == F64, p.AL.data_ptr(), p.x.data_ptr(), p.xkind, p.x_shared,
               p.u.data_ptr(), p.u_pb, out.data_ptr(), p.E, p.N, p.M, p.d, p.D, reverse, emulated=emulated)  # fmt: skip
    return bad, out


def ctx_backward(mod, p: Problem, reverse, needs, emulated):
    E, N, M, d, D = p.E, p.N, p.M, p.d, p.D
    gA = p.nan(*p.AL.shape) if "A" in needs else None
    gb = p.nan(E, N, D) if "b" in needs else None
    gx = p.nan(E, N, M, d) if ("x" in needs and p.real) else None
    ptr = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
    bad = call(mod, "contexts_backward", p.dtype == F64, p.AL.data_ptr(), p.x.data_ptr(), p.xkind, p.x_shared,
               p.u.data_ptr(), p.u_pb, p.gL.data_ptr(), ptr(gA), ptr(gb), ptr(gx), E, N, M, d, D, reverse,
               emulated=emulated)  # fmt: skip
    return bad, {"A": gA, "b": gb, "x": gx}


def tol(p: Problem):
    # Different summation orders (register tiles, block partials vs per-thread partials); float32
    # scans also differ from the CPU's SIMD order in the last bits and this is amplified along M.
    return dict(rtol=1e-10, atol=1e-11) if p.dtype == F64 else dict(rtol=2e-4, atol=2e-5)


def assert_same(got, want, p, what):
    if want is None:
        assert got is None, what
        return
    assert not torch.isnan(got).any(), f"{what}: unwritten (NaN) entries"
    torch.testing.assert_close(got, want, **tol(p), msg=lambda m: f"{what}: {m}")


ALL_TN = {"AL", "AR", "C", "u", "v", "x"}

# (E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype): D covers every compile-time size (padding
# included) and the runtime path; N covers one partial block and several blocks per group.
CASES = [
    (1, 5, 6, 2, 1, 1, False, False, False, True, F64),
    (2, 37, 5, 3, 3, 2, True, False, True, False, F64),
    (3, 150, 4, 2, 8, 1, False, True, False, True, F32),  # 2 blocks of 128 per group
    (2, 9, 7, 2, 6, 2, True, True, False, False, F32),
    (1, 70, 3, 2, 13, 1, False, False, True, True, F64),  # DC = 16, 2 blocks of 64
    (2, 33, 3, 3, 20, 2, True, False, False, True, F64),  # DC = 32, 2 blocks of 32
    (1, 6, 4, 2, 35, 1, False, False, True, False, F64),  # runtime-D path (D > 32)
]


@pytest.mark.parametrize("E,N,M,d,D,c,real,x_shared,u_pb,v_pb,dtype", CASES)
def test_tn_attention_matches_cpu(emu, E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype):
    p = Problem(E, N, M, d, D, c, dtype=dtype, real=real, x_shared=x_shared, u_pb=u_pb, v_pb=v_pb)
    bad_e, W_e = tn_forward(emu, p, True)
    bad_c, W_c = tn_forward(_C, p, False)
    assert bad_e == bad_c == 0
    assert_same(W_e, W_c, p, "W")
    bad_e, g_e = tn_backward(emu, p, ALL_TN, True)
    bad_c, g_c = tn_backward(_C, p, ALL_TN, False)
    assert bad_e == bad_c == 0
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("E,N,M,d,D,c,real,x_shared,u_pb,v_pb,dtype", CASES)
def test_contexts_match_cpu(emu, E, N, M, d, D, c, real, x_shared, u_pb, v_pb, dtype, reverse):
    p = Problem(E, N, M, d, D, c, dtype=dtype, real=real, x_shared=x_shared, u_pb=u_pb, v_pb=v_pb, seed=1)
    bad_e, o_e = ctx_forward(emu, p, reverse, True)
    bad_c, o_c = ctx_forward(_C, p, reverse, False)
    assert bad_e == bad_c == 0
    assert_same(o_e, o_c, p, "contexts")
    bad_e, g_e = ctx_backward(emu, p, reverse, {"A", "b", "x"}, True)
    bad_c, g_c = ctx_backward(_C, p, reverse, {"A", "b", "x"}, False)
    assert bad_e == bad_c == 0
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")


@pytest.mark.parametrize("D", [3, 8, 20])
@pytest.mark.parametrize("real", [False, True])
def test_runtime_d_fallback_when_shared_memory_is_short(emu, D, real):
    # With no shared memory the fast kernels do not fit: the block-cooperative runtime-D kernels
    # (large_d.cuh, within the default 48 KiB) must give the same results.
    p = Problem(2, 40, 5, 2, D, 2, dtype=F64, real=real, u_pb=True)
    with max_shared(0):
        _, W_e = tn_forward(emu, p, True)
        _, g_e = tn_backward(emu, p, ALL_TN, True)
        _, c_e = ctx_backward(emu, p, True, {"A", "b", "x"}, True)
    _, W_c = tn_forward(_C, p, False)
    _, g_c = tn_backward(_C, p, ALL_TN, False)
    _, c_c = ctx_backward(_C, p, True, {"A", "b", "x"}, False)
    assert_same(W_e, W_c, p, "W")
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")
    for k in c_c:
        assert_same(c_e[k], c_c[k], p, f"contexts grad_{k}")


@pytest.mark.parametrize("M", [1, 2])
@pytest.mark.parametrize("D", [2, 8, 40])
def test_shortest_sequences(emu, M, D):
    p = Problem(2, 3, M, 2, D, 2, dtype=F64, u_pb=True, v_pb=False)
    _, W_e = tn_forward(emu, p, True)
    _, W_c = tn_forward(_C, p, False)
    assert_same(W_e, W_c, p, "W")
    _, g_e = tn_backward(emu, p, ALL_TN, True)
    _, g_c = tn_backward(_C, p, ALL_TN, False)
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")
    for rev in (False, True):
        _, c_e = ctx_backward(emu, p, rev, {"A", "b"}, True)
        _, c_c = ctx_backward(_C, p, rev, {"A", "b"}, False)
        for k in c_c:
            assert_same(c_e[k], c_c[k], p, f"contexts grad_{k}")


@pytest.mark.parametrize("needs", [{"C"}, {"AR"}, {"AL", "u"}, {"v"}, {"u", "v"}, {"AR", "C", "x"}])
@pytest.mark.parametrize("D", [5, 36])
def test_partial_gradient_requests(emu, needs, D):
    p = Problem(2, 20, 6, 3, D, 2, dtype=F64, real=True)
    _, g_e = tn_backward(emu, p, needs, True)
    _, g_c = tn_backward(_C, p, needs, False)
    for k in g_c:
        assert_same(g_e[k], g_c[k], p, f"grad_{k}")


@pytest.mark.parametrize("xdtype,bad_symbol", [(torch.uint8, 7), (torch.int32, -3), (torch.int64, 2)])
def test_out_of_range_symbols_are_counted(emu, xdtype, bad_symbol):
    p = Problem(2, 40, 6, 2, 4, 1, xdtype=xdtype)
    p.x[0, 3, 5] = bad_symbol  # last site: read by the right scan only
    p.x[1, 7, 0] = bad_symbol  # first site: read by the left scan only
    p.x[1, 8, 2] = bad_symbol
    assert tn_forward(emu, p, True)[0] == tn_forward(_C, p, False)[0] == 3
    assert tn_backward(emu, p, ALL_TN, True)[0] == 3
    for rev in (False, True):
        assert ctx_forward(emu, p, rev, True)[0] == ctx_forward(_C, p, rev, False)[0] == 3
        assert ctx_backward(emu, p, rev, {"A"}, True)[0] == 3
    q = Problem(1, 4, 1, 2, 3, 1, xdtype=xdtype)  # M = 1: the only symbol is read by no scan
    q.x[0, 2, 0] = bad_symbol
    assert tn_forward(emu, q, True)[0] == tn_forward(_C, q, False)[0] == 1
    assert ctx_forward(emu, q, False, True)[0] == 1


def test_parameter_gradients_are_bitwise_reproducible(emu):
    p = Problem(2, 150, 9, 2, 8, 1, dtype=F32)
    runs = [tn_backward(emu, p, {"AL", "AR", "C"}, True)[1] for _ in range(2)]
    for k in ("AL", "AR", "C"):
        assert torch.equal(runs[0][k], runs[1][k]), k

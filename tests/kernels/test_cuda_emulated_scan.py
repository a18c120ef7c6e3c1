"""The chunked (parallel-in-time) CUDA forward scan (csrc/cuda/chunked_scan.cuh), run on the CPU
through the CUDA emulator (see tests/kernels/test_cuda_emulated.py for the emulator's model).

``TNATTN_CUDA_SCAN=chunked`` forces the chunked path and ``TNATTN_CUDA_SCAN_CHUNK`` its chunk length,
so that short sequences still span several chunks. Every output is compared with the CPU entry points
(the sequential scan: same values up to rounding) and with ``tnattn.reference`` in float64: chunk
lengths that do and do not divide M, M shorter than a chunk, M = 1, N > 1, E > 1, compile-time D
(4, 8, 16, padded 5) and the runtime-D path, integer and real inputs, shared x, both directions,
shared and per-sequence boundaries; the exact-zero rule (a zero boundary, matrices that annihilate
the state inside a chunk and across a chunk boundary); entries whose unrescaled chunk product would
overflow or underflow float32; out-of-range symbols; determinism; and the mode switch.
"""

from __future__ import annotations


import pytest
import torch

from tnattn import _C
from tnattn import reference as ref

F64, F32 = torch.float64, torch.float32

pytestmark = pytest.mark.slow  # builds the emulated extension (cached under build/, shared with test_cuda_emulated)


@pytest.fixture
def chunked(monkeypatch):
    """Force the chunked path; returns a setter of the chunk length (None: the default length)."""
    monkeypatch.setenv("TNATTN_CUDA_SCAN", "chunked")

    def set_chunk(Lc):
        if Lc is None:
            monkeypatch.delenv("TNATTN_CUDA_SCAN_CHUNK", raising=False)
        else:
            monkeypatch.setenv("TNATTN_CUDA_SCAN_CHUNK", str(Lc))

    return set_chunk


class Problem:
    def __init__(self, E, N, M, d, D, c=1, *, dtype=F64, real=False, x_shared=False, bpb=True, scale=1.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        rnd = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
        self.E, self.N, self.M, self.d, self.D, self.c = E, N, M, d, D, c
        self.dtype, self.real, self.x_shared, self.bpb = dtype, real, x_shared, bpb
        self.AL, self.AR = (rnd(E, d, D, D) * scale).to(dtype), (rnd(E, d, D, D) * scale).to(dtype)
        self.C = rnd(E, d, D, D, c).to(dtype)
        self.u = rnd(E, N if bpb else 1, D).to(dtype)
        self.v = rnd(E, N if bpb else 1, D).to(dtype)
        X = 1 if x_shared else E
        if real:
            self.x = torch.rand(X, N, M, d, generator=g, dtype=F64).to(dtype)
            self.xkind = 3
        else:
            self.x = torch.randint(0, d, (X, N, M), generator=g)
            self.xkind = 2

    def xs(self, e):
        return self.x[0 if self.x_shared else e]


def _exec(emulated, keep):
    if not emulated:
        return 2

    def alloc(nbytes):
        buf = torch.full((max(nbytes, 1),), 255, dtype=torch.uint8)  # 0xFF bytes: NaN if read unwritten
        keep.append(buf)
        return buf.data_ptr()

    return (0, 0, alloc)


def ctx_forward(mod, p, reverse, emulated):
    out = torch.full((p.E, p.N, p.M, p.D), float("nan"), dtype=p.dtype)
    keep = []
    bad = mod.contexts_forward(p.dtype == F64, p.AL.data_ptr(), p.x.data_ptr(), p.xkind, p.x_shared,
                               p.u.data_ptr(), p.bpb, out.data_ptr(), p.E, p.N, p.M, p.d, p.D, reverse,
                               _exec(emulated, keep))  # fmt: skip
    return bad, out


def tn_forward(mod, p, emulated):
    W = torch.full((p.E, p.N, p.M, p.d, p.c), float("nan"), dtype=p.dtype)
    keep = []
    bad = mod.tn_attention_forward(p.dtype == F64, p.x.data_ptr(), p.xkind, p.x_shared, p.AL.data_ptr(),
                                   p.AR.data_ptr(), p.C.data_ptr(), p.u.data_ptr(), p.bpb, p.v.data_ptr(), p.bpb,
                                   W.data_ptr(), p.E, p.N, p.M, p.d, p.D, p.c, _exec(emulated, keep))  # fmt: skip
    return bad, W


def ref_contexts(p, reverse):
    f = lambda t: t.to(F64)  # noqa: E731
    return torch.stack([ref.contexts(f(p.AL[e]), f(p.xs(e)) if p.real else p.xs(e), f(p.u[e] if p.bpb else p.u[e, 0]),
                                     reverse=reverse) for e in range(p.E)])  # fmt: skip


def ref_tn(p):
    f = lambda t: t.to(F64)  # noqa: E731
    bnd = lambda b, e: f(b[e] if p.bpb else b[e, 0])  # noqa: E731
    return torch.stack([ref.tn_attention(f(p.xs(e)) if p.real else p.xs(e), f(p.AL[e]), f(p.AR[e]), f(p.C[e]),
                                         bnd(p.u, e), bnd(p.v, e)) for e in range(p.E)])  # fmt: skip


def assert_close(got, want, p, what, scale=1.0):
    """float64: tight. float32: loose, relative to the output's scale (contexts are unit vectors;
    local maps scale with |C|) and to the sequence length (rounding grows along the scan)."""
    assert not torch.isnan(got).any(), f"{what}: unwritten (NaN) entries"
    if p.dtype == F64:
        tol = dict(rtol=1e-10, atol=1e-11 * scale)
    else:
        tol = dict(rtol=1e-3, atol=2e-5 * scale * max(1.0, p.M**0.5))
    torch.testing.assert_close(got.to(F64), want.to(F64), **tol, msg=lambda m: f"{what}: {m}")


# (E, N, M, d, D, real, x_shared, bpb, dtype, Lc): Lc None = the default chunk length (M < Lc).
CASES = [
    (1, 1, 37, 3, 4, False, False, False, F64, 5),  # M not a multiple of Lc
    (2, 3, 20, 2, 8, True, False, True, F64, 6),  # E > 1, N > 1, real inputs, per-sequence boundaries
    (1, 2, 7, 3, 16, False, True, True, F32, 16),  # M < Lc
    (1, 1, 1, 2, 8, False, False, False, F64, 4),  # M = 1
    (1, 2, 24, 2, 35, True, False, False, F64, 4),  # runtime D (D > 32), M a multiple of Lc
    (2, 1, 50, 4, 5, False, True, True, F32, 7),  # D padded to 8
    (1, 1, 40, 2, 8, False, False, True, F64, None),  # default chunk length
]
IDS = [f"E{c[0]}N{c[1]}M{c[2]}D{c[4]}{'real' if c[5] else 'int'}{'64' if c[8] == F64 else '32'}Lc{c[9]}" for c in CASES]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("E,N,M,d,D,real,x_shared,bpb,dtype,Lc", CASES, ids=IDS)
def test_contexts_chunked(emu, chunked, E, N, M, d, D, real, x_shared, bpb, dtype, Lc, reverse):
    chunked(Lc)
    p = Problem(E, N, M, d, D, dtype=dtype, real=real, x_shared=x_shared, bpb=bpb, seed=M + D)
    bad_e, o_e = ctx_forward(emu, p, reverse, True)
    bad_c, o_c = ctx_forward(_C, p, reverse, False)
    assert bad_e == bad_c == 0
    assert_close(o_e, o_c, p, "contexts vs CPU")
    assert_close(o_e, ref_contexts(p, reverse), p, "contexts vs reference")


@pytest.mark.parametrize("E,N,M,d,D,real,x_shared,bpb,dtype,Lc", CASES, ids=IDS)
def test_tn_attention_chunked(emu, chunked, E, N, M, d, D, real, x_shared, bpb, dtype, Lc):
    chunked(Lc)
    p = Problem(E, N, M, d, D, 2, dtype=dtype, real=real, x_shared=x_shared, bpb=bpb, seed=M * D)
    bad_e, W_e = tn_forward(emu, p, True)
    bad_c, W_c = tn_forward(_C, p, False)
    assert bad_e == bad_c == 0
    scale = float(p.C.abs().max())
    assert_close(W_e, W_c, p, "W vs CPU", scale)
    assert_close(W_e, ref_tn(p), p, "W vs reference", scale)


def test_auto_and_sequential_modes_keep_the_sequential_kernel(emu, monkeypatch):
    # Short sequences: auto chooses the sequential kernel, bit for bit the same as forcing it; the
    # chunked kernel agrees up to rounding.
    p = Problem(1, 3, 30, 2, 8, 2, seed=3)
    outs = {}
    for mode in ("sequential", "auto", "chunked"):
        monkeypatch.setenv("TNATTN_CUDA_SCAN", mode)
        monkeypatch.setenv("TNATTN_CUDA_SCAN_CHUNK", "4")
        outs[mode] = (ctx_forward(emu, p, True, True)[1], tn_forward(emu, p, True)[1])
    for k in range(2):
        assert torch.equal(outs["auto"][k], outs["sequential"][k])
        assert_close(outs["chunked"][k], outs["sequential"][k], p, "chunked vs sequential", 3.0)


@pytest.mark.parametrize("var,value", [("TNATTN_CUDA_SCAN", "fast"), ("TNATTN_CUDA_SCAN_CHUNK", "0"),
                                       ("TNATTN_CUDA_SCAN_CHUNK", "8x")])  # fmt: skip
def test_bad_environment_values_are_refused(emu, monkeypatch, var, value):
    monkeypatch.setenv("TNATTN_CUDA_SCAN", "chunked")
    monkeypatch.setenv(var, value)
    p = Problem(1, 1, 5, 2, 4)
    with pytest.raises(ValueError, match=var):
        ctx_forward(emu, p, False, True)


def test_chunked_is_deterministic(emu, chunked):
    chunked(3)
    p = Problem(2, 5, 17, 3, 8, 2, dtype=F32, real=True)
    a, b = tn_forward(emu, p, True)[1], tn_forward(emu, p, True)[1]
    assert torch.equal(a, b)


@pytest.mark.parametrize("reverse", [False, True])
def test_exact_zero_rule(emu, chunked, reverse):
    """A zero boundary gives exactly zero contexts; a state annihilated inside a chunk or exactly at
    a chunk boundary stays exactly zero from there on, as in the sequential scan and the reference."""
    chunked(4)
    D, M = 4, 19
    p = Problem(1, 3, M, 3, D, dtype=F64, seed=5)
    A = p.AL[0]
    A[0] = 0.0
    A[0, 0, 0] = 1.0  # y^T A[0] = y_0 e_0: projects onto e_0 ...
    A[1, 0, :] = 0.0  # ... and e_0^T A[1] = 0: symbol 0 then 1 annihilates the state exactly
    A[1, :, 0] = 0.0  # (A[1] e_0 = 0 for the right contexts, which step with A^T)
    A[2, 0, 0] = 1.0  # keep y_0 != 0 along the way
    p.x[:] = 2
    p.u[0, 0] = 0.0  # sequence 0: zero boundary
    seq = lambda k: k if not reverse else M - 1 - k  # noqa: E731  (site of scan position k)
    # sequence 1: the steps into positions 6 and 7 (in chunk 1) read symbols 0 and 1
    p.x[0, 1, seq(5)], p.x[0, 1, seq(6)] = 0, 1
    # sequence 2: the last step of chunk 1 reads symbol 1 (position 8 starts chunk 2)
    p.x[0, 2, seq(6)], p.x[0, 2, seq(7)] = 0, 1
    _, o_e = ctx_forward(emu, p, reverse, True)
    _, o_c = ctx_forward(_C, p, reverse, False)
    want = ref_contexts(p, reverse)
    assert_close(o_e, o_c, p, "contexts vs CPU")
    assert_close(o_e, want, p, "contexts vs reference")
    k = torch.arange(M)
    zero = torch.stack([torch.ones(M, dtype=torch.bool), k >= 7, k >= 8])  # by scan position
    if reverse:
        zero = zero.flip(1)
    assert torch.equal(o_e[0][zero], torch.zeros_like(o_e[0][zero]))
    assert (o_e[0][~zero].norm(dim=-1) > 0.5).all()
    assert torch.equal(o_c[0][zero], o_e[0][zero])


@pytest.mark.parametrize("scale", [1e6, 1e-6])
def test_no_overflow_or_underflow_of_chunk_products(emu, chunked, scale):
    # float32 with |A| ~ 1e6 (1e-6): a 12-site chunk product has entries near 1e72 (1e-72), far past
    # float32's range; the power-of-two rescaling keeps the directions.
    chunked(12)
    p = Problem(1, 2, 40, 2, 8, 2, dtype=F32, scale=scale, seed=7)
    for rev in (False, True):
        _, o_e = ctx_forward(emu, p, rev, True)
        assert torch.isfinite(o_e).all()
        assert_close(o_e, ref_contexts(p, rev), p, "contexts vs reference")
    _, W_e = tn_forward(emu, p, True)
    assert torch.isfinite(W_e).all()
    assert_close(W_e, ref_tn(p), p, "W vs reference", float(p.C.abs().max()))


def test_out_of_range_symbols_are_counted(emu, chunked):
    chunked(4)
    p = Problem(2, 4, 13, 3, 4, 2, seed=9)
    p.x[0, 1, 0] = 7  # first site
    p.x[0, 1, 9] = -1  # same sequence again: counted once
    p.x[1, 2, 12] = 3  # last site (M not a multiple of Lc)
    p.x[1, 3, 4] = 5  # first site of chunk 1
    assert ctx_forward(emu, p, False, True)[0] == ctx_forward(_C, p, False, False)[0] == 3
    assert ctx_forward(emu, p, True, True)[0] == 3
    assert tn_forward(emu, p, True)[0] == tn_forward(_C, p, False)[0] == 3

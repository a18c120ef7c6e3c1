"""The CUDA kernels of the fused heads (csrc/cuda/mse_step.cuh), executed through the CUDA emulator.

``tn_attention_mse_step`` and ``tn_attention_count_wrong`` of the emulated build (a CUDA execution
context on host memory, see tests/cuda_emulation) against the CPU entry points of the installed
extension, which tests/ensemble/test_fused.py checks against the unfused torch path: ensembles,
batches over several blocks (odd N, idle threads), M = 1, every compile-time bond dimension and
the runtime-D path, each head option, shared and per-member labels, labels outside {0, 1}, and
out-of-range symbols. tests/kernels/test_cuda_step.py runs the same comparisons on a GPU.
"""

from __future__ import annotations


import pytest
import torch

from tnattn import _C

F64, F32 = torch.float64, torch.float32

pytestmark = pytest.mark.slow  # builds the emulated extension (~1 min, cached under build/)


def _exec(emulated, keep):
    if not emulated:
        return 2

    def alloc(nbytes):
        buf = torch.full((max(nbytes, 1),), 255, dtype=torch.uint8)  # 0xFF bytes: NaN if read unwritten
        keep.append(buf)
        return buf.data_ptr()

    return (0, 0, alloc)


class StepProblem:
    """Inputs of one fused step: E members, (N, M) symbols over d letters, bond dimension D."""

    def __init__(self, E, N, M, d, D, *, dtype=F64, x_shared=False, y_shared=False, u_pb=False, v_pb=False,
                 with_scale=True, seed=0):  # fmt: skip
        g = torch.Generator().manual_seed(seed)
        rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
        self.E, self.N, self.M, self.d, self.D, self.dtype = E, N, M, d, D, dtype
        self.x_shared, self.y_shared, self.u_pb, self.v_pb = x_shared, y_shared, u_pb, v_pb
        self.AL, self.AR, self.C = rnd(E, d, D, D), rnd(E, d, D, D), rnd(E, d, D, D, 1)
        self.u, self.v = rnd(E, N if u_pb else 1, D), rnd(E, N if v_pb else 1, D)
        self.x = torch.randint(0, d, (1 if x_shared else E, N, M), generator=g)
        self.y = torch.randint(0, 2, (N, M) if y_shared else (E, N, M), generator=g).to(torch.uint8)
        self.scale = (rnd(E) * 2) if with_scale else None  # signs of both kinds

    def nan(self, *shape):
        return torch.full(shape, float("nan"), dtype=self.dtype)

    def common(self):
        p = self
        return (p.dtype == F64, p.x.data_ptr(), 2, p.x_shared, p.AL.data_ptr(), p.AR.data_ptr(), p.C.data_ptr(),
                p.u.data_ptr(), p.u_pb, p.v.data_ptr(), p.v_pb)  # fmt: skip


NEEDS_ALL = ("AL", "AR", "C", "u", "v", "scale")


def mse_step(mod, p: StepProblem, *, emulated, normalize_map=True, sigmoid=True, needs=NEEDS_ALL):
    E, N, D = p.E, p.N, p.D
    shapes = {"AL": p.AL.shape, "AR": p.AR.shape, "C": p.C.shape, "u": (E, N, D), "v": (E, N, D), "scale": (E,)}
    out = {k: p.nan(*shapes[k]) if k in needs else None for k in shapes}
    ptr = lambda k: 0 if out[k] is None else out[k].data_ptr()  # noqa: E731
    loss, wrong = torch.full((E,), float("nan"), dtype=F64), torch.full((E,), float("nan"), dtype=F64)
    scale = p.scale.data_ptr() if (p.scale is not None and normalize_map) else 0
    keep = []
    bad = mod.tn_attention_mse_step(*p.common(), scale, p.y.data_ptr(), p.y_shared, normalize_map, sigmoid,
                                    loss.data_ptr(), wrong.data_ptr(), ptr("scale"), ptr("AL"), ptr("AR"), ptr("C"),
                                    ptr("u"), ptr("v"), p.E, p.N, p.M, p.d, p.D, _exec(emulated, keep))  # fmt: skip
    return bad, loss, wrong, out


def count_wrong(mod, p: StepProblem, y, *, emulated, with_sign=True):
    wrong = torch.full((p.E,), float("nan"), dtype=F64)
    sign = torch.sign(p.scale) if (with_sign and p.scale is not None) else None
    keep = []
    bad = mod.tn_attention_count_wrong(*p.common(), 0 if sign is None else sign.data_ptr(), y.data_ptr(),
                                       y.dim() == 2, wrong.data_ptr(), p.E, p.N, p.M, p.d, p.D,
                                       _exec(emulated, keep))  # fmt: skip
    return bad, wrong


def tol(p: StepProblem):
    # Summation orders differ (the CPU's SIMD lanes and per-block sums vs the CUDA register tiles
    # and block partials); float32 differences grow along the scans.
    return dict(rtol=1e-10, atol=1e-12) if p.dtype == F64 else dict(rtol=3e-4, atol=3e-6)


def assert_step_same(got, want, p, what=""):
    bad_e, loss_e, wrong_e, g_e = got
    bad_c, loss_c, wrong_c, g_c = want
    assert bad_e == bad_c == 0
    torch.testing.assert_close(loss_e, loss_c, **tol(p), msg=lambda m: f"{what} loss: {m}")
    assert torch.equal(wrong_e, wrong_c), f"{what} wrong: {wrong_e} vs {wrong_c}"
    for k, w in g_c.items():
        if w is None:
            assert g_e[k] is None
            continue
        assert not torch.isnan(g_e[k]).any(), f"{what} grad_{k}: unwritten (NaN) entries"
        torch.testing.assert_close(g_e[k], w, **tol(p), msg=lambda m: f"{what} grad_{k}: {m}")


# (E, N, M, d, D, dtype, x_shared, y_shared, u_pb, v_pb): D = 4, 8, 16 (padded from 13) and 35
# (runtime-D path); N odd, over one or several blocks of the scan kernels (128/64/32 threads) and
# of the head kernel (1024 sites); M = 1 has no scan step at all.
CASES = [
    (3, 131, 9, 2, 4, F64, False, False, False, True),
    (2, 129, 5, 3, 8, F32, True, True, True, False),
    (2, 67, 3, 2, 13, F64, False, True, True, True),
    (2, 33, 4, 4, 16, F32, False, False, False, False),
    (2, 7, 1, 3, 8, F64, True, False, False, False),
    (1, 5, 3, 2, 35, F64, False, False, True, False),
]


@pytest.mark.parametrize("E,N,M,d,D,dtype,x_shared,y_shared,u_pb,v_pb", CASES)
def test_mse_step_matches_cpu(emu, E, N, M, d, D, dtype, x_shared, y_shared, u_pb, v_pb):
    p = StepProblem(E, N, M, d, D, dtype=dtype, x_shared=x_shared, y_shared=y_shared, u_pb=u_pb, v_pb=v_pb)
    assert_step_same(mse_step(emu, p, emulated=True), mse_step(_C, p, emulated=False), p)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("normalize_map,sigmoid,with_scale", [
    (True, True, False), (True, False, True), (False, True, True), (False, False, False),
])  # fmt: skip
def test_mse_step_head_options(emu, dtype, normalize_map, sigmoid, with_scale):
    p = StepProblem(2, 45, 4, 3, 6, dtype=dtype, with_scale=with_scale, u_pb=True, seed=2)
    kw = dict(normalize_map=normalize_map, sigmoid=sigmoid)
    assert_step_same(mse_step(emu, p, emulated=True, **kw), mse_step(_C, p, emulated=False, **kw), p, str(kw))


@pytest.mark.parametrize("needs", [("C",), ("AR", "v"), ("AL", "u", "scale"), ()])
def test_mse_step_partial_gradient_requests(emu, needs):
    p = StepProblem(2, 20, 5, 2, 5, seed=3)
    assert_step_same(mse_step(emu, p, emulated=True, needs=needs), mse_step(_C, p, emulated=False, needs=needs), p)


def test_mse_step_extreme_map_norms(emu):
    # |W|^2 under- and overflows in float32: the head rescales W by a power of two (mse_head_one).
    p = StepProblem(2, 9, 3, 3, 4, dtype=F32, seed=4)
    p.C[0] *= 1e-25
    p.C[1] *= 1e25
    got, want = mse_step(emu, p, emulated=True), mse_step(_C, p, emulated=False)
    assert torch.isfinite(want[1]).all() and torch.isfinite(want[3]["C"]).all()
    assert_step_same(got, want, p)


@pytest.mark.parametrize("E,N,M,d,D,dtype,x_shared,y_shared,u_pb,v_pb", CASES)
def test_count_wrong_matches_cpu(emu, E, N, M, d, D, dtype, x_shared, y_shared, u_pb, v_pb):
    p = StepProblem(E, N, M, d, D, dtype=dtype, x_shared=x_shared, y_shared=y_shared, u_pb=u_pb, v_pb=v_pb, seed=5)
    y = p.y.clone()
    y.view(-1)[::7] = 2  # labels outside {0, 1}: always wrong
    for with_sign in (True, False):
        bad_e, w_e = count_wrong(emu, p, y, emulated=True, with_sign=with_sign)
        bad_c, w_c = count_wrong(_C, p, y, emulated=False, with_sign=with_sign)
        assert bad_e == bad_c == 0
        assert torch.equal(w_e, w_c), (with_sign, w_e, w_c)


def test_count_wrong_agrees_with_the_step(emu):
    # Same logit sign: the step's wrong-site count equals the count head's on 0/1 labels.
    p = StepProblem(2, 70, 5, 3, 8, seed=6)
    _, _, wrong_step, _ = mse_step(emu, p, emulated=True, needs=())
    _, wrong = count_wrong(emu, p, p.y, emulated=True)
    assert torch.equal(wrong_step, wrong)


@pytest.mark.parametrize("xdtype,bad_symbol", [(torch.uint8, 9), (torch.int32, -1), (torch.int64, 3)])
def test_out_of_range_symbols_are_counted(emu, xdtype, bad_symbol):
    p = StepProblem(2, 40, 6, 3, 4, seed=7)
    p.x = p.x.to(xdtype)
    p.x[0, 3, 5] = bad_symbol  # last site
    p.x[1, 7, 0] = bad_symbol  # first site
    p.x[1, 8, 2] = bad_symbol
    kind = {torch.uint8: 0, torch.int32: 1, torch.int64: 2}[xdtype]
    common = p.common

    def with_kind():
        c = list(common())
        c[2] = kind
        return tuple(c)

    p.common = with_kind
    assert mse_step(emu, p, emulated=True)[0] == mse_step(_C, p, emulated=False)[0] == 3
    assert count_wrong(emu, p, p.y, emulated=True)[0] == count_wrong(_C, p, p.y, emulated=False)[0] == 3
    q = StepProblem(1, 4, 1, 2, 3, seed=8)  # M = 1: the only symbol is read by no scan step
    q.x[0, 2, 0] = 5
    assert mse_step(emu, q, emulated=True)[0] == 1
    assert count_wrong(emu, q, q.y, emulated=True)[0] == 1


def test_real_inputs_and_several_outputs_are_refused(emu):
    p = StepProblem(1, 3, 2, 2, 4)
    wrong = torch.empty(1, dtype=F64)
    keep = []
    xr = torch.rand(1, 3, 2, 2, dtype=F64)
    args = list(p.common())
    args[1], args[2] = xr.data_ptr(), 3
    with pytest.raises(ValueError, match="integer symbols"):
        emu.tn_attention_count_wrong(*args, 0, p.y.data_ptr(), False, wrong.data_ptr(), p.E, p.N, p.M, p.d, p.D,
                                     _exec(True, keep))  # fmt: skip
    with pytest.raises(ValueError, match="integer symbols"):
        emu.tn_attention_mse_step(*args, 0, p.y.data_ptr(), False, True, True, wrong.data_ptr(), wrong.data_ptr(),
                                  0, 0, 0, 0, 0, 0, p.E, p.N, p.M, p.d, p.D, _exec(True, keep))  # fmt: skip


def test_step_is_bitwise_reproducible(emu):
    p = StepProblem(2, 150, 7, 2, 8, dtype=F32, seed=9)
    a, b = (mse_step(emu, p, emulated=True) for _ in range(2))
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    for k in NEEDS_ALL:
        assert torch.equal(a[3][k], b[3][k]), k

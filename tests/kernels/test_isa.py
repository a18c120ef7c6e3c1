"""The instruction-set copies of the CPU kernels: selection, build info, and agreement.

Each copy is checked against :mod:`tnattn.reference` (float64, every bond dimension 1..64 and the
runtime-D path above) and against the other copies, and the norms are checked for overflow and
underflow with a known answer: contexts are projective, so scaling A by any power of ten leaves
them unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnattn
from tnattn import buildinfo, ops
from tnattn import reference as ref

pytestmark = pytest.mark.usefixtures("cpu_isa")

F64 = torch.float64


def _inputs(N, M, d, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, d, (N, M), generator=g)
    A = torch.randn(d, D, D, generator=g, dtype=dtype)
    C = torch.randn(d, D, D, 1, generator=g, dtype=dtype)
    u = torch.randn(D, generator=g, dtype=dtype)
    return x, A, C, u


def test_build_info_names_the_path_in_use(cpu_isa):
    info = tnattn.build_info()
    assert info["cpu_isa"] == cpu_isa
    assert cpu_isa in info["cpu_isas"]
    assert set(info["cpu_isas"]) <= set(info["cpu_isas_compiled"])
    assert info["cpu_isas_compiled"][0] == "baseline"
    for key in ("compiler", "cxx_flags", "native", "cuda", "version"):
        assert key in info


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 10),
    M=st.integers(1, 7),
    d=st.integers(2, 3),
    D=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_float64_forward_and_backward_match_reference_for_every_D(N, M, d, D, seed):
    x, A, C, u = _inputs(N, M, d, D, F64, seed)
    A.requires_grad_()
    C.requires_grad_()
    W = ops.tn_attention(x, A, A, C, u, u)
    Wr = ref.tn_attention(x, A, A, C, u, u)
    torch.testing.assert_close(W, Wr, rtol=1e-9, atol=1e-11)
    w = torch.randn(W.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    g = torch.autograd.grad((W * w).sum(), (A, C), allow_unused=True)
    gr = torch.autograd.grad((Wr * w).sum(), (A, C), allow_unused=True)  # M = 1 never uses A
    for a, b, p in zip(g, gr, (A, C)):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("D", [3, 8, 10, 20, 40, 64])
def test_float32_paths_agree_with_each_other(D):
    # Every path's float32 result is within float32 rounding of the float64 one, so any two paths
    # agree to twice that (they differ only in the summation order inside a mat-vec).
    x, A, C, u = _inputs(9, 33, 2, D, torch.float32, seed=D)
    W32 = ops.tn_attention(x, A, A, C, u, u).double()
    W64 = ops.tn_attention(x, A.double(), A.double(), C.double(), u.double(), u.double())
    scale = W64.abs().max()
    assert (W32 - W64).abs().max() <= 1e-4 * scale


@pytest.mark.parametrize("dtype,scales", [(torch.float32, [1e-25, 1e-20, 1e20, 1e25]), (F64, [1e-160, 1e160])])
@pytest.mark.parametrize("D", [4, 10, 64, 70])
def test_contexts_survive_extreme_scales(dtype, scales, D):
    # Contexts are normalised products, so A -> s A leaves them unchanged; before the rescaled norm
    # a plain sum of squares overflowed (or underflowed) and every context became exactly zero.
    x, A, _, u = _inputs(3, 9, 2, D, dtype, seed=1)
    want = ops.contexts(A, x, u)
    assert want.abs().sum() > 0
    for s in scales:
        got = ops.contexts(A * s, x, u)
        torch.testing.assert_close(got, want, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-5)
        got_b = ops.contexts(A, x, u * s)  # the boundary vector too
        torch.testing.assert_close(got_b, want, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=1e-5)


def test_all_zero_vectors_keep_the_exact_zero_rule():
    x, A, _, u = _inputs(2, 5, 2, 12, torch.float32, seed=2)
    out = ops.contexts(A, x, torch.zeros_like(u))
    assert torch.count_nonzero(out) == 0


def test_set_cpu_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="not available"):
        buildinfo.set_cpu_isa("sse9000")
    with pytest.raises(TypeError, match="name"):
        buildinfo.set_cpu_isa(3)


def _run(code: str, env_value: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TNATTN_CPU_ISA", None)
    if env_value is not None:
        env["TNATTN_CPU_ISA"] = env_value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_environment_variable_selects_the_path():
    r = _run("import tnattn; print(tnattn.build_info()['cpu_isa'])", "baseline")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "baseline"
    r = _run("import tnattn; print(tnattn.build_info()['cpu_isa'])", None)
    assert r.stdout.strip() == buildinfo.cpu_isas()[-1]


def test_environment_variable_with_a_bad_value_fails_at_import():
    r = _run("import tnattn", "avx9000")
    assert r.returncode != 0
    assert "TNATTN_CPU_ISA" in r.stderr and "avx9000" in r.stderr

"""GPU tests of the chunked forward scan (csrc/cuda/chunked_scan.cuh; skipped without a CUDA device
or without a CUDA build).

The chunked path against the sequential kernel on the same GPU (forced through TNATTN_CUDA_SCAN,
read at every call) on every kernel path, and one sequence of M = 10^7 sites (the case the chunked
path exists for) against the CPU kernels. The emulated tests (test_cuda_emulated_scan.py) cover the
edge cases; these cover the real compiler and hardware.

Runs under pytest, or as a script where pytest is not installed (scripts/gpu-check.sh):
``python tests/kernels/test_cuda_scan.py``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import torch

from tnattn import _C, ops

try:
    import pytest
except ImportError:  # script mode
    pytest = None

F64, F32 = torch.float64, torch.float32
CUDA_OK = torch.cuda.is_available() and _C.has_cuda()
if pytest is not None:
    pytestmark = [
        pytest.mark.cuda,
        pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and tnattn built with TNATTN_CUDA=ON"),
    ]


@contextmanager
def scan_mode(mode: str, chunk: int | None = None):
    """Set TNATTN_CUDA_SCAN (and TNATTN_CUDA_SCAN_CHUNK) for the calls inside, then restore them."""
    old = {k: os.environ.get(k) for k in ("TNATTN_CUDA_SCAN", "TNATTN_CUDA_SCAN_CHUNK")}
    os.environ["TNATTN_CUDA_SCAN"] = mode
    os.environ.pop("TNATTN_CUDA_SCAN_CHUNK", None)
    if chunk is not None:
        os.environ["TNATTN_CUDA_SCAN_CHUNK"] = str(chunk)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_inputs(N, M, d, D, c=1, *, dtype=F64, real=False, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)  # noqa: E731
    A_left, A_right, C = rnd(d, D, D), rnd(d, D, D), rnd(d, D, D, c)
    u, v = rnd(N, D), rnd(D)
    if real:
        x = torch.rand(N, M, d, generator=g, dtype=dtype).to(device)
    else:
        x = torch.randint(0, d, (N, M), generator=g).to(device)
    return [x, A_left, A_right, C, u, v]


def test_chunked_matches_sequential():
    # float64: the two paths agree to rounding on every kernel path (D = 40: runtime D), for the
    # default chunk length and a short one that does not divide M.
    for D in (4, 8, 16, 40):
        for real in (False, True):
            x, AL, AR, C, u, v = make_inputs(3, 3001, 3, D, 2, real=real, seed=D)
            with scan_mode("sequential"):
                W_s = ops.tn_attention(x, AL, AR, C, u, v)
                L_s = ops.contexts(AL, x, u)
                R_s = ops.contexts(AR, x, v, reverse=True)
            for chunk in (None, 37):
                with scan_mode("chunked", chunk):
                    W_c = ops.tn_attention(x, AL, AR, C, u, v)
                    L_c = ops.contexts(AL, x, u)
                    R_c = ops.contexts(AR, x, v, reverse=True)
                what = f"D={D} real={real} chunk={chunk}"
                scale = W_s.abs().max().item()
                torch.testing.assert_close(W_c, W_s, rtol=1e-9, atol=1e-10 * scale, msg=lambda m: f"W {what}: {m}")
                torch.testing.assert_close(L_c, L_s, rtol=1e-9, atol=1e-10, msg=lambda m: f"L {what}: {m}")
                torch.testing.assert_close(R_c, R_s, rtol=1e-9, atol=1e-10, msg=lambda m: f"R {what}: {m}")


def test_chunked_is_deterministic():
    x, AL, AR, C, u, v = make_inputs(2, 20000, 2, 8, 1, dtype=F32, seed=3)
    with scan_mode("chunked"):
        runs = [ops.tn_attention(x, AL, AR, C, u, v) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_one_sequence_of_ten_million_sites():
    # N = 1, M = 10^7, float32 on the GPU (the default choice, which must be the chunked path here,
    # and the forced one) against the CPU kernels in float64. Random products leave some sites
    # ill-conditioned, so the GPU is held to the CPU kernel's own float32 error (as in
    # test_cuda.py::test_large_batch_matches_cpu_kernels): at most 4x its worst and mean error.
    M = 10_000_000
    x, AL, AR, C, u, v = make_inputs(1, M, 2, 8, 1, dtype=F32, seed=11)
    cpu32 = [t.cpu() for t in (x, AL, AR, C, u, v)]
    cpu64 = [t if not t.is_floating_point() else t.double() for t in cpu32]
    exact = ops.tn_attention(*cpu64)
    e_cpu = (ops.tn_attention(*cpu32).double() - exact).abs()
    floor = 1e-6 * exact.abs().max().item()
    for mode in ("auto", "chunked"):
        with scan_mode(mode):
            W = ops.tn_attention(x, AL, AR, C, u, v)
        assert torch.isfinite(W).all(), mode
        e_gpu = (W.cpu().double() - exact).abs()
        assert e_gpu.max() <= 4 * e_cpu.max() + floor, f"{mode}: {e_gpu.max():.3g} vs CPU {e_cpu.max():.3g}"
        assert e_gpu.mean() <= 4 * e_cpu.mean() + floor, f"{mode}: {e_gpu.mean():.3g} vs CPU {e_cpu.mean():.3g}"
    with scan_mode("chunked"):
        L = ops.contexts(AL, x, u)
    assert torch.isfinite(L).all()
    torch.testing.assert_close(L.norm(dim=-1), torch.ones(1, M, device="cuda"), rtol=0, atol=1e-5)


def _main() -> int:
    from gpu_script import run_tests  # this file's folder is on sys.path when run as a script

    return run_tests(globals(), CUDA_OK)


if __name__ == "__main__":
    sys.exit(_main())

"""GPU tests of the block-cooperative runtime-D CUDA kernels (csrc/cuda/large_d.cuh; D > 32).

Skipped without a CUDA device or without a CUDA build. Their logic is tested without a GPU in
test_cuda_emulated_large_d.py; here the real compiler's code runs: agreement with the CPU kernels
(float64 to rounding, float32 held to the CPU kernel's own error against float64) for D in {33, 40,
47, 64}, batches larger than the blocks per group (blocks that walk several sequences), the D = 40
benchmark setting (N = 1024, M = 64), contexts in both directions, and bitwise-equal repeated calls.

Runs under pytest, or as a script (``python tests/kernels/test_cuda_large_d.py``, see
scripts/gpu-check.sh), exiting non-zero on a failure.
"""

from __future__ import annotations

import sys

import torch
from test_cuda import CUDA_OK, F32, F64, grads_of, make_inputs

from tnattn import ops

try:
    import pytest
except ImportError:  # script mode
    pytest = None

if pytest is not None:
    pytestmark = [
        pytest.mark.cuda,
        pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and tnattn built with TNATTN_CUDA=ON"),
    ]


def _cpu(inputs):
    return [t.detach().cpu().requires_grad_(t.requires_grad) for t in inputs]


def _as32(inputs):
    return [t.detach().float().requires_grad_() if t.is_floating_point() else t for t in inputs]


def _check_f32(got32, cpu32, exact, what):
    # float32: held to the CPU kernel's own float32 error against float64 (worst and mean, 4x).
    for k, (gpu, cpu_, ex) in enumerate(zip(got32, cpu32, exact)):
        e_gpu, e_cpu = (gpu.detach().cpu().double() - ex).abs(), (cpu_.detach().double() - ex).abs()
        floor = 1e-6 * ex.abs().max().item()
        assert e_gpu.max() <= 4 * e_cpu.max() + floor, f"{what} output {k}: {e_gpu.max():.3g} vs CPU {e_cpu.max():.3g}"
        assert e_gpu.mean() <= 4 * e_cpu.mean() + floor, f"{what} output {k}: {e_gpu.mean():.3g} vs CPU {e_cpu.mean():.3g}"


def _tn_case(N, M, d, D, c, real, seed):
    inputs = make_inputs(N, M, d, D, c, dtype=F64, real=real, u_pb=True, seed=seed)
    W = ops.tn_attention(*inputs)
    cpu = _cpu(inputs)
    W_cpu = ops.tn_attention(*cpu)
    torch.testing.assert_close(W.cpu(), W_cpu, rtol=1e-10, atol=1e-11)
    g, g_cpu = grads_of(W, inputs), grads_of(W_cpu, cpu)
    for a, b in zip(g, g_cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-10 * b.abs().max().item())
    in32 = _as32(inputs)
    cpu32 = _cpu(in32)
    W32, W32_cpu = ops.tn_attention(*in32), ops.tn_attention(*cpu32)
    got = [W32] + grads_of(W32, in32)
    ref = [W32_cpu] + grads_of(W32_cpu, cpu32)
    _check_f32(got, ref, [W_cpu.detach()] + g_cpu, f"tn_attention D={D}")


def test_tn_attention_large_d_matches_cpu():
    for N, M, d, D, c, real in [(300, 12, 2, 33, 2, False), (200, 10, 3, 47, 1, True), (64, 8, 2, 64, 2, False)]:
        _tn_case(N, M, d, D, c, real, seed=D)


def test_blocks_walking_several_sequences():
    # 4096 blocks per call at most (E = 1): with N = 5001 blocks 0..904 take two sequences each,
    # the others one.
    _tn_case(5001, 4, 2, 40, 1, False, seed=7)


def test_benchmark_setting_d40():
    # The setting of the D = 40 benchmark row (scripts/gpu-check.sh): N = 1024, M = 64, d = 2, c = 1.
    _tn_case(1024, 64, 2, 40, 1, False, seed=11)


def test_contexts_large_d_match_cpu():
    for reverse in (False, True):
        for real in (False, True):
            x, A, _, _, u, _ = make_inputs(150, 9, 3, 40, 1, dtype=F64, real=real, u_pb=True, seed=3)
            out = ops.contexts(A, x, u, reverse=reverse)
            cx, cA, cu = _cpu([x, A, u])
            out_cpu = ops.contexts(cA, cx, cu, reverse=reverse)
            torch.testing.assert_close(out.cpu(), out_cpu, rtol=1e-10, atol=1e-11)
            ins = [t for t in (A, x, u) if t.requires_grad]
            ins_cpu = [t for t in (cA, cx, cu) if t.requires_grad]
            for a, b in zip(grads_of(out, ins), grads_of(out_cpu, ins_cpu)):
                torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-10 * b.abs().max().item())


def test_large_d_gradients_are_bitwise_reproducible():
    for real in (False, True):
        inputs = make_inputs(2000, 16, 2, 40, 2, dtype=F32, real=real, u_pb=True, seed=2)
        runs = [grads_of(ops.tn_attention(*inputs), inputs) for _ in range(2)]
        for a, b in zip(*runs):
            assert torch.equal(a, b)
        x, A, _, _, u, _ = inputs
        ctx = [grads_of(ops.contexts(A, x, u, reverse=True), [A, u]) for _ in range(2)]
        for a, b in zip(*ctx):
            assert torch.equal(a, b)


def _main() -> int:
    from gpu_script import run_tests  # this file's folder is on sys.path when run as a script

    return run_tests(globals(), CUDA_OK)


if __name__ == "__main__":
    sys.exit(_main())

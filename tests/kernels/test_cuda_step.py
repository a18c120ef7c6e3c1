"""GPU-only tests of the fused heads on CUDA (csrc/cuda/mse_step.cuh; skipped without a CUDA device
or without a CUDA build).

The fused Scenario A step (:class:`tnattn.ops.SquaredErrorStep`) and the wrong-site count
(:class:`tnattn.ops.WrongSiteCount`) on CUDA tensors against the same call on the CPU (whose
kernels tests/ensemble/test_fused.py checks against the unfused torch path): ensembles, batches
over several blocks, every compile-time bond dimension and the runtime-D path, the head options,
shared and per-member labels; bitwise reproducibility; bad symbols and mixed devices; the
trainer's choice of the fused step on CUDA. The emulated counterpart, which runs without a GPU, is
tests/kernels/test_cuda_emulated_step.py.

Runs under pytest, or as a script (``python tests/kernels/test_cuda_step.py``, as
scripts/gpu-check.sh does where pytest is missing): every test here, non-zero exit on a failure.
"""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager

import torch

from tnattn import _C
from tnattn.ops import SquaredErrorStep, WrongSiteCount, tn_attention

try:
    import pytest
except ImportError:  # script mode (see the module docstring)
    pytest = None

F64, F32 = torch.float64, torch.float32
CUDA_OK = torch.cuda.is_available() and _C.has_cuda()
if pytest is not None:
    pytestmark = [
        pytest.mark.cuda,
        pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and tnattn built with TNATTN_CUDA=ON"),
    ]


@contextmanager
def raises(exc, match):
    try:
        yield
    except exc as e:
        assert re.search(match, str(e)), f"{type(e).__name__} message {str(e)!r} does not match {match!r}"
        return
    raise AssertionError(f"{exc.__name__} not raised")


def make(E, N, M, d, D, *, dtype=F64, seed=0, shared_x=False, shared_y=False, per_batch=False):
    """Stacked inputs on the CPU (generated there: device-independent) and labels 0/1."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    b = (E, N, D) if per_batch else (E, D)
    params = [rnd(E, d, D, D), rnd(E, d, D, D), rnd(E, d, D, D, 1), rnd(*b), rnd(*b)]
    x = torch.randint(0, d, (N, M) if shared_x else (E, N, M), generator=g)
    y = torch.randint(0, 2, (N, M) if shared_y else (E, N, M), generator=g).bool()
    scale = rnd(E) * 2
    return x, y, params, scale


def to(dev, *ts):
    return [t.to(dev) for t in ts]


def tol(dtype):
    return dict(rtol=1e-9, atol=1e-12) if dtype == F64 else dict(rtol=2e-3, atol=2e-5)


def step_on(dev, x, y, params, scale, **kw):
    x, y, *params = to(dev, x, y, *params)
    return tn_attention(x, *params, head=SquaredErrorStep(y, scale.to(dev), **kw))


# (E, N, M, d, D, dtype, shared_x, shared_y, per_batch): D = 4, 8, 16 (from 13), 32 (from 20), 40
# (runtime-D path); N odd, several blocks of 128/64/32 threads.
CASES = [
    (3, 301, 12, 2, 4, F64, False, False, False),
    (4, 257, 10, 3, 8, F32, True, True, True),
    (2, 131, 7, 2, 13, F64, False, True, False),
    (2, 65, 6, 2, 20, F32, False, False, True),
    (2, 9, 5, 2, 40, F64, False, False, False),
    (2, 33, 1, 3, 8, F64, False, False, False),
]


def _check_step_case(E, N, M, d, D, dtype, shared_x, shared_y, per_batch):
    x, y, params, scale = make(E, N, M, d, D, dtype=dtype, shared_x=shared_x, shared_y=shared_y, per_batch=per_batch)
    for kw in (dict(), dict(activation="none"), dict(normalize_map=False)):
        want = step_on("cpu", x, y, params, scale, **kw)
        got = step_on("cuda", x, y, params, scale, **kw)
        assert got.losses.device.type == "cuda"
        torch.testing.assert_close(got.losses.cpu(), want.losses, **tol(dtype))
        # float32: a site whose logit lies within rounding of 0 may flip
        slack = 0 if dtype == F64 else 2
        assert (got.wrong.cpu() - want.wrong).abs().max() <= slack, (kw, got.wrong, want.wrong)
        assert set(got.grads) == set(want.grads)
        for k, w in want.grads.items():
            torch.testing.assert_close(got.grads[k].cpu(), w, **tol(dtype), msg=lambda m: f"{kw} grad {k}: {m}")


def _check_count_case(E, N, M, d, D, dtype, shared_x, shared_y, per_batch):
    x, y, params, scale = make(E, N, M, d, D, dtype=dtype, shared_x=shared_x, shared_y=shared_y, per_batch=per_batch,
                               seed=1)  # fmt: skip
    yi = y.to(torch.int64)
    yi.view(-1)[::5] = 3  # not a 0/1 label: always wrong
    want = tn_attention(x, *params, head=WrongSiteCount(yi, scale))
    xc, yc, *pc = to("cuda", x, yi, *params)
    got = tn_attention(xc, *pc, head=WrongSiteCount(yc, scale.cuda()))
    slack = 0 if dtype == F64 else 2
    assert (got.cpu() - want).abs().max() <= slack, (got, want)


if pytest is not None:

    @pytest.mark.parametrize("case", CASES)
    def test_mse_step_matches_cpu(case):
        _check_step_case(*case)

    @pytest.mark.parametrize("case", CASES)
    def test_count_wrong_matches_cpu(case):
        _check_count_case(*case)

else:

    def test_mse_step_matches_cpu():
        for case in CASES:
            _check_step_case(*case)

    def test_count_wrong_matches_cpu():
        for case in CASES:
            _check_count_case(*case)


def test_step_is_bitwise_reproducible():
    x, y, params, scale = make(3, 1000, 16, 2, 8, dtype=F32, seed=2)
    a, b = (step_on("cuda", x, y, params, scale) for _ in range(2))
    assert torch.equal(a.losses, b.losses) and torch.equal(a.wrong, b.wrong)
    for k in a.grads:
        assert torch.equal(a.grads[k], b.grads[k]), k


def test_bad_symbols_and_devices_raise():
    x, y, params, scale = make(2, 20, 5, 2, 4, seed=3)
    xb = x.clone()
    xb[1, 4, 2] = 7
    with raises(ValueError, "symbols outside"):
        step_on("cuda", xb, y, params, scale)
    xc, *pc = to("cuda", x, *params)
    with raises(ValueError, "y is on cpu but the parameters are on cuda"):
        tn_attention(xc, *pc, head=SquaredErrorStep(y, scale.cuda()))
    with raises(ValueError, "y is on cpu but the parameters are on cuda"):
        tn_attention(xc, *pc, head=WrongSiteCount(y, scale.cuda()))


def test_trainer_chooses_the_fused_step_on_cuda():
    from tnattn.ensemble.evaluators import FusedCount, choose_evaluator
    from tnattn.ensemble.fused import supports
    from tnattn.ensemble.steps import FusedStep, choose_step
    from tnattn.models.functional import Params

    x, y, params, scale = make(2, 8, 4, 2, 4, seed=4)
    P = Params(*to("cuda", *params), scale.cuda())
    xc = x.cuda()
    assert supports(xc, P, loss="mse", activation="sigmoid")
    step = choose_step(xc, P, trainable=("C",), loss="mse", activation="sigmoid", normalize_map=True,
                       member_loss=None)  # fmt: skip
    assert isinstance(step, FusedStep)
    assert isinstance(choose_evaluator(xc, c=1, d=2, normalize_map=True), FusedCount)


# ------------------------------------------------------------------------------------------------


def _main() -> int:
    from gpu_script import run_tests  # this file's folder is on sys.path when run as a script

    return run_tests(globals(), CUDA_OK)


if __name__ == "__main__":
    sys.exit(_main())

"""Shared fixtures: the device, and the CPU instruction-set path of the native kernels.

``device``: a test that takes it runs on ``"cpu"`` and, where torch sees a GPU and tnattn was built
with its CUDA kernels, on ``"cuda"`` (marked ``cuda``; skipped elsewhere). One test body serves both
devices instead of a copy per device.

Kernel test modules declare ``pytestmark = pytest.mark.usefixtures("cpu_isa")`` and then run once
per instruction-set copy of the CPU kernels that this machine supports (``baseline``, ``avx2``,
``avx512``; see :mod:`tnattn.buildinfo`). ``TNATTN_TEST_CPU_ISAS=best`` (or a comma-separated list)
narrows the set, e.g. for a quick local run. A test on ``"cuda"`` runs once, not once per path.
"""

from __future__ import annotations

import os

import pytest
import torch

from tnattn import _C, buildinfo

CUDA_OK = torch.cuda.is_available() and _C.has_cuda()


def _test_isas() -> list[str]:
    available = buildinfo.cpu_isas()
    wanted = os.environ.get("TNATTN_TEST_CPU_ISAS", "").strip()
    if not wanted:
        return available
    if wanted == "best":
        return available[-1:]
    return [s for s in wanted.split(",") if s in available]


@pytest.fixture(params=_test_isas())
def cpu_isa(request):
    """Run the test on one CPU instruction-set path, restoring the previous one afterwards."""
    previous = buildinfo.set_cpu_isa(request.param)
    try:
        yield request.param
    finally:
        buildinfo.set_cpu_isa(previous)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and tnattn built with TNATTN_CUDA=ON")])])
def device(request) -> str:
    """``"cpu"``, then ``"cuda"`` where available (see the module docstring)."""
    if request.param == "cuda" and "cpu_isa" in request.fixturenames:
        # The CPU instruction-set path does not matter on the GPU: run there with one of them only.
        if request.getfixturevalue("cpu_isa") != _test_isas()[-1]:
            pytest.skip("cuda runs once, with the last CPU instruction-set parameter")
    return request.param


@pytest.fixture
def one_torch_thread():
    """Run the test on one torch thread (restored afterwards): the trainer tests compare runs that
    must not depend on the thread count's reduction order."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

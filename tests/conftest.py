"""Shared fixtures: the CPU instruction-set path of the native kernels.

Kernel test modules declare ``pytestmark = pytest.mark.usefixtures("cpu_isa")`` and then run once
per instruction-set copy of the CPU kernels that this machine supports (``baseline``, ``avx2``,
``avx512``; see :mod:`tnattn.buildinfo`). ``TNATTN_TEST_CPU_ISAS=best`` (or a comma-separated list)
narrows the set, e.g. for a quick local run.
"""

from __future__ import annotations

import os

import pytest

from tnattn import buildinfo


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

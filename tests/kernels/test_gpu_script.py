"""The pytest-free runner of the GPU test files (tests/kernels/gpu_script.py), run on the CPU."""

from __future__ import annotations

from gpu_script import run_tests


def test_runner_runs_every_test_and_reports_failures(capsys):
    ran = []

    def test_b_fails():
        ran.append("b")
        raise AssertionError("boom")

    def test_a_passes():
        ran.append("a")

    namespace = {"test_b_fails": test_b_fails, "test_a_passes": test_a_passes, "helper": lambda: ran.append("x")}
    assert run_tests(namespace, True) == 1
    assert ran == ["a", "b"]  # name order, and a failure does not stop the rest
    out = capsys.readouterr().out
    assert "PASS test_a_passes" in out and "FAIL test_b_fails" in out and "boom" in out
    assert "1 passed, 1 failed" in out


def test_runner_skips_without_a_device(capsys):
    assert run_tests({"test_x": lambda: 1 / 0}, False) == 0
    assert "SKIP" in capsys.readouterr().out

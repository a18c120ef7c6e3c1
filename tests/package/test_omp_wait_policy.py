"""tnattn sets OMP_WAIT_POLICY=PASSIVE for torch's OpenMP threads only when it can take effect and
the user has not chosen (python/tnattn/__init__.py says why)."""

import os
import subprocess
import sys

import pytest

CODE = "import {first}, {second}, os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _run(first: str, second: str, **env) -> str:
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", CODE.format(first=first, second=second)], env=full,
                         capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    return out.stdout.strip()


@pytest.mark.parametrize("first,second,env,want", [
    ("tnattn", "torch", {}, "PASSIVE"),                                 # before torch loads: set
    ("torch", "tnattn", {}, "None"),                                    # too late to matter: untouched
    ("tnattn", "torch", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),       # the user's choice wins
])  # fmt: skip
def test_omp_wait_policy(first, second, env, want):
    assert _run(first, second, **env) == want

"""Run a GPU test file without pytest: ``python tests/kernels/test_cuda*.py``.

scripts/gpu-check.sh runs the GPU test files this way on a device machine that may lack pytest. Each
file's ``_main`` calls :func:`run_tests` with its module globals; every ``test_*`` function that
takes no arguments runs in name order, and a failure is reported without stopping the others.
"""

from __future__ import annotations

import time
import traceback


def run_tests(namespace: dict, available: bool) -> int:
    """Run the ``test_*`` callables of ``namespace``; returns 1 if any failed, else 0.

    ``available`` False (no CUDA device, or tnattn built without CUDA) prints SKIP and returns 0.
    """
    if not available:
        print("SKIP: needs a CUDA device and tnattn built with TNATTN_CUDA=ON")
        return 0
    failed = 0
    tests = [(n, f) for n, f in sorted(namespace.items()) if n.startswith("test_") and callable(f)]
    for name, fn in tests:
        t0 = time.perf_counter()
        try:
            fn()
            print(f"PASS {name} ({time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0

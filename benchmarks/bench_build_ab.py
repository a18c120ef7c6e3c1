"""Side-by-side CPU-time comparison of two builds of tnattn (old and new), one thread.

Usage::

    python benchmarks/bench_build_ab.py OLD NEW [--D 8,10,12] [--isa avx2,avx512] [--rounds 3]

``OLD`` and ``NEW`` are folders that hold an importable ``tnattn`` package with its built ``_C``
module (for example ``git worktree add /tmp/old <rev>`` with the extension copied into
``/tmp/old/python/tnattn``, then ``/tmp/old/python``). Every measurement runs in a fresh process
with ``PYTHONPATH`` set to the build, ``TNATTN_CPU_ISA`` set to the path under test and one kernel
thread, and times with ``time.process_time`` (the best of five 0.3 s windows): CPU time is what a
busy shared machine changes least, so the ratio new/old stays meaningful when wall-clock rates do
not. Old and new alternate, round after round, and each row reports the better of its rounds.

Rows (float32, d = 2, c = 1):

- ``fwd`` / ``f+b``: ``tnattn.ops.tn_attention`` forward and forward+backward, N = M = 256;
- ``step``: the fused Scenario A step (squared error on the sigmoid of the normalised map) of
  E = 1024 members, 128 sequences of length 8 each.

Rates are million tokens (member-tokens for ``step``) per CPU second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# Runs inside the child process; prints one JSON line {row: rate}.
_CHILD = r"""
import json, os, time, torch
import tnattn
from tnattn import ops
torch.manual_seed(0)
torch.set_num_threads(1)
D = int(os.environ["AB_D"])
quick = os.environ.get("AB_QUICK") == "1"
d = 2
window = 0.01 if quick else 0.3

def rate(f, tokens):
    f(); f()
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time(); k = 0
        while time.process_time() - t0 < window:
            f(); k += 1
        best = min(best, (time.process_time() - t0) / k)
    return tokens / best / 1e6

N = M = 16 if quick else 256
A = (torch.randn(d, D, D) / D**0.5).requires_grad_()
B = (torch.randn(d, D, D) / D**0.5).requires_grad_()
C = (torch.randn(d, D, D, 1) / D).requires_grad_()
u = torch.randn(D).requires_grad_()
v = torch.randn(D).requires_grad_()
x = torch.randint(0, d, (N, M))

def fwd():
    with torch.no_grad():
        ops.tn_attention(x, A, B, C, u, v)

def fb():
    W = ops.tn_attention(x, A, B, C, u, v)
    W.backward(torch.ones_like(W))

out = {"fwd": rate(fwd, N * M), "f+b": rate(fb, N * M)}
try:
    from tnattn.ensemble import fused
    from tnattn.models.functional import Params
except ImportError:  # builds before the model redesign
    from tnattn.ensemble import fused
    from tnattn.ensemble.model import StackedParams as Params
E, Ns, Ms = (4, 16, 8) if quick else (1024, 128, 8)
def mk(*s):
    return torch.randn(*s) / D**0.5
P = Params(mk(E, d, D, D), mk(E, d, D, D), mk(E, d, D, D, 1), mk(E, D), mk(E, D), torch.ones(E))
xs = torch.randint(0, d, (E, Ns, Ms))
ys = torch.randint(0, 2, (E, Ns, Ms))
out["step"] = rate(lambda: fused.mse_step(xs, ys, P), E * Ns * Ms)
out["cpu_isa"] = tnattn.build_info()["cpu_isa"]
print(json.dumps(out))
"""


def _measure(build: str, isa: str, D: int, quick: bool) -> dict:
    # One thread: the kernels use torch.get_num_threads() threads, set to 1 in the child.
    env = dict(os.environ, PYTHONPATH=build, TNATTN_CPU_ISA=isa, AB_D=str(D), OMP_NUM_THREADS="1",
               AB_QUICK="1" if quick else "0")
    done = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"build {build!r} ({isa}, D = {D}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", help="folder holding the old build's tnattn package")
    p.add_argument("new", help="folder holding the new build's tnattn package")
    p.add_argument("--D", default="8,10,12", help="bond dimensions, comma-separated (default 8,10,12)")
    p.add_argument("--isa", default="avx2,avx512", help="instruction-set paths, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="old/new alternations per row (default 3)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and short windows (a smoke run; no real figures)")
    a = p.parse_args(argv)
    Ds = [int(s) for s in a.D.split(",")]
    isas = [s.strip() for s in a.isa.split(",") if s.strip()]
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    print(f"tnattn build A/B, CPU time, 1 thread; old = {a.old}, new = {a.new}; best of {a.rounds} rounds")
    print("| isa | D | row | old Mtok/cpu-s | new Mtok/cpu-s | new/old |")
    print("|---|---|---|---|---|---|")
    for isa in isas:
        for D in Ds:
            best = {"old": {}, "new": {}}
            for _ in range(a.rounds):
                for side, build in (("old", a.old), ("new", a.new)):
                    r = _measure(build, isa, D, a.quick)
                    if r["cpu_isa"] != isa:
                        raise SystemExit(f"asked for path {isa!r} but the build ran {r['cpu_isa']!r}")
                    for row in ("fwd", "f+b", "step"):
                        best[side][row] = max(best[side].get(row, 0.0), r[row])
            for row in ("fwd", "f+b", "step"):
                o, n = best["old"][row], best["new"][row]
                print(f"| {isa} | {D} | {row} | {o:.1f} | {n:.1f} | {n / o:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

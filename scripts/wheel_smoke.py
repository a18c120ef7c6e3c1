"""Smoke test of an installed tnattn wheel (run by cibuildwheel and tests/package/test_wheel.py).

Checks that the compiled extension loads without a compiler around, that the fused op agrees with
the plain-PyTorch oracle (values and gradients) and that the licence travelled in the wheel.
Run it from any directory except the source tree, so that the installed package is imported.
"""

from __future__ import annotations

import importlib.metadata
import sys

import torch

import tnattn
from tnattn import reference


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    d, D, c, N, M = 2, 4, 1, 3, 7
    x = torch.randint(0, d, (N, M), generator=gen)
    A = torch.randn(d, D, D, generator=gen, dtype=torch.float64, requires_grad=True)
    C = torch.randn(d, D, D, c, generator=gen, dtype=torch.float64, requires_grad=True)
    u = torch.randn(D, generator=gen, dtype=torch.float64)
    v = torch.randn(D, generator=gen, dtype=torch.float64)

    W = tnattn.ops.tn_attention(x, A, A, C, u, v)
    W_ref = reference.tn_attention(x, A, A, C, u, v)
    torch.testing.assert_close(W, W_ref, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(W.square().sum(), (A, C))
    grads_ref = torch.autograd.grad(W_ref.square().sum(), (A, C))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-11)

    # The wheel is the portable build: no -march=native, and on x86-64 every instruction-set copy,
    # each of them agreeing with the oracle.
    info = tnattn.build_info()
    if info["native"]:
        print("wheel_smoke: the wheel was built with -march=native (not portable)", file=sys.stderr)
        return 1
    for isa in tnattn.buildinfo.cpu_isas():
        previous = tnattn.buildinfo.set_cpu_isa(isa)
        torch.testing.assert_close(tnattn.ops.tn_attention(x, A, A, C, u, v), W_ref, rtol=1e-10, atol=1e-12)
        tnattn.buildinfo.set_cpu_isa(previous)

    dist = importlib.metadata.distribution("tnattn")
    licence = [f for f in (dist.files or []) if f.name == "LICENSE"]
    if not licence:
        print("wheel_smoke: no LICENSE in the installed distribution", file=sys.stderr)
        return 1
    print(f"wheel_smoke: tnattn {tnattn.__version__} from {tnattn.__file__} (CPU paths {info['cpu_isas_compiled']}, "
          f"in use {info['cpu_isa']}): ok")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

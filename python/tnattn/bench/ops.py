"""Op throughput: tnattn against the reference loop, the vectorised baseline and generic toolkits.

Every implementation computes the local maps W (N, M, d, c) of ``tn_attention(x, A_left, A_right,
C, u, v)`` for the same random problem; forward (under ``no_grad``) and forward+backward (forward,
then ``W.backward(w)`` from a fixed upstream gradient, so no loss ops are timed) are timed as the
median over repeats after warm-up (:func:`tnattn.bench.timing.median_time`), all in one process.

Implementations (:data:`IMPLS`):

``tnattn``        :func:`tnattn.ops.tn_attention` (fused native kernels; symbols as uint8)
``loop``          :func:`tnattn.reference.tn_attention`, a PyTorch loop over positions (int64)
``vectorized``    :func:`tnattn.reference.tn_attention_vectorized`, log-depth prefix products
``einsum``        :func:`tnattn.bench.peers.einsum_all_sites`: opt_einsum, one full contraction
                  per output site, O(M^2) (small M only)
``tensorkrowch``  :class:`tnattn.bench.peers.TensorKrowchAllSites`: TensorKrowch's ``UMPSLayer``
                  evaluated once per output site, O(M^2) (small M only; periodic boundary, one
                  shared tensor, so it times a related but not identical model)

Roofline: effective GFLOP/s count 2 D^2 flops per matrix-vector-sized operation the algorithm needs
per token -- forward 2 + d c (two context steps, d c local-map contractions), backward 4 + 3 d c --
and are compared with the GEMM rate of the same dtype measured in the same run (% of peak). The
same flop count is used for every implementation (the work of the O(M) algorithm), so the O(M^2)
peers and the O(M log M D^3) vectorised baseline show how far they are from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from tnattn.bench.timing import median_time, synchronize

__all__ = [
    "IMPLS",
    "OpCase",
    "matvecs_per_token",
    "make_problem",
    "make_runner",
    "bench_case",
    "available_impls",
    "DTYPES",
]

IMPLS = ("tnattn", "loop", "vectorized", "einsum", "tensorkrowch")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_FAST = {"tnattn"}


@dataclass(frozen=True)
class OpCase:
    """One point of the grid: batch N, length M, bond dimension D, alphabet d, outputs c, dtype."""

    N: int
    M: int
    D: int
    d: int = 2
    c: int = 1
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("N", "M", "D", "d", "c"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


def matvecs_per_token(d: int, c: int) -> tuple[int, int]:
    """(forward, forward+backward) matrix-vector-sized operations (2 D^2 flops each) per token."""
    fwd = 2 + d * c
    return fwd, fwd + 4 + 3 * d * c


def available_impls() -> tuple[str, ...]:
    """The implementations whose optional dependencies are importable here."""
    from tnattn.bench.peers import einsum_available, tensorkrowch_available

    ok = {"einsum": einsum_available(), "tensorkrowch": tensorkrowch_available()}
    return tuple(n for n in IMPLS if ok.get(n, True))


def make_problem(case: OpCase, device: str = "cpu", seed: int = 0) -> dict:
    """Random parameters (requires_grad), symbols and a fixed upstream gradient for ``case``.

    Entries are N(0, 1) scaled by 1/sqrt(D) so that unnormalised products (the generic peers) stay
    in range for the small M they run at.
    """
    g = torch.Generator().manual_seed(seed)
    dt = DTYPES[case.dtype]
    N, M, D, d, c = case.N, case.M, case.D, case.d, case.c
    s = 1.0 / math.sqrt(D)
    params = {
        "A_left": torch.randn(d, D, D, generator=g, dtype=dt) * s,
        "A_right": torch.randn(d, D, D, generator=g, dtype=dt) * s,
        "C": torch.randn(d, D, D, c, generator=g, dtype=dt),
        "u": torch.randn(D, generator=g, dtype=dt),
        "v": torch.randn(D, generator=g, dtype=dt),
    }
    params = {k: p.to(device).requires_grad_() for k, p in params.items()}
    x = torch.randint(0, d, (N, M), generator=g).to(device)
    w = torch.randn(N, M, d, c, generator=g, dtype=dt).to(device)
    return {"x": x, "params": params, "w": w}


def make_runner(name: str, problem: dict) -> tuple[Callable[[], object], list[torch.Tensor]]:
    """A zero-argument callable computing W with implementation ``name``, and its parameters."""
    from tnattn import ops, reference
    from tnattn.bench import peers

    x, p = problem["x"], problem["params"]
    args = (p["A_left"], p["A_right"], p["C"], p["u"], p["v"])
    if name == "tnattn":
        xs = x.to(torch.uint8) if int(x.max()) < 256 else x
        return (lambda: ops.tn_attention(xs, *args)), list(p.values())
    if name == "loop":
        return (lambda: reference.tn_attention(x, *args)), list(p.values())
    if name == "vectorized":
        return (lambda: reference.tn_attention_vectorized(x, *args)), list(p.values())
    if name == "einsum":
        return (lambda: peers.einsum_all_sites(x, *args)), list(p.values())
    if name == "tensorkrowch":
        if x.shape[1] < 2:
            raise ValueError("tensorkrowch needs M >= 2")
        model = peers.TensorKrowchAllSites(p["A_left"], p["C"], x.shape[1]).to(x.device)
        return (lambda: model(x)), list(model.parameters())
    raise ValueError(f"unknown implementation {name!r}; choose from {IMPLS}")


def bench_case(
    case: OpCase,
    impls: tuple[str, ...] | list[str],
    *,
    device: str = "cpu",
    repeats: int = 20,
    budget_s: float = 2.0,
    backward: bool = True,
    peak: Optional[dict] = None,
) -> list[dict]:
    """Time every implementation on one grid point; one row per implementation.

    Parameters
    ----------
    case : OpCase
    impls : sequence of str
        Names from :data:`IMPLS`.
    device : str
    repeats : int
        Most timed calls of the fast implementation (the slow ones get 3, after 1 warm-up call).
    budget_s : float
        Seconds of timed calls per measurement beyond the minimum of 3 repeats.
    backward : bool
        Also time forward+backward.
    peak : dict, optional
        GEMM GFLOP/s by dtype name; adds ``*_pct_peak`` columns.

    Returns
    -------
    list of dict
        Keys: the case fields, ``impl``, ``fwd_s``, ``fwd_Mtok_s``, ``fwd_GFLOP_s`` (and the same
        for ``fwd_bwd``), ``fwd_x_loop``/``fwd_bwd_x_loop`` (loop time / this time) when the loop
        ran, ``*_pct_peak`` with ``peak``, and ``error`` for an implementation that failed.
    """
    problem = make_problem(case, device)
    tokens = case.N * case.M
    mv_f, mv_fb = matvecs_per_token(case.d, case.c)
    flop = 2.0 * case.D * case.D
    rows = []
    for name in impls:
        row = {**asdict(case), "impl": name}
        try:
            f, params = make_runner(name, problem)

            def fwd():
                with torch.no_grad():
                    return f()

            def fwd_bwd():
                for q in params:
                    q.grad = None
                f().backward(problem["w"])

            fast = name in _FAST
            kw = dict(device=device, warmup=3 if fast else 1, repeats=repeats if fast else 3, budget_s=budget_s)
            t = median_time(fwd, **kw).median_s
            row.update(fwd_s=t, fwd_Mtok_s=tokens / t / 1e6, fwd_GFLOP_s=tokens * mv_f * flop / t / 1e9)
            if backward:
                t = median_time(fwd_bwd, **kw).median_s
                row.update(fwd_bwd_s=t, fwd_bwd_Mtok_s=tokens / t / 1e6, fwd_bwd_GFLOP_s=tokens * mv_fb * flop / t / 1e9)
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
            synchronize(device) if device == "cpu" else None
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        if peak and case.dtype in peak:
            for k in ("fwd", "fwd_bwd"):
                if f"{k}_GFLOP_s" in row:
                    row[f"{k}_pct_peak"] = 100.0 * row[f"{k}_GFLOP_s"] / peak[case.dtype]
        rows.append(row)
    loop = next((r for r in rows if r["impl"] == "loop" and "error" not in r), None)
    if loop is not None:
        for r in rows:
            for k in ("fwd", "fwd_bwd"):
                if f"{k}_s" in r and f"{k}_s" in loop:
                    r[f"{k}_x_loop"] = loop[f"{k}_s"] / r[f"{k}_s"]
    return rows

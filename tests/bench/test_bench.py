"""tnattn.bench: runs on a tiny grid and writes valid JSON and plots (timings are never asserted);
the generic-toolkit peers compute what they claim (checked against independent formulas)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import tnattn
from tnattn import reference
from tnattn.bench import BenchConfig, main, run
from tnattn.bench.ops import OpCase, bench_case, matvecs_per_token
from tnattn.bench.peers import TensorKrowchAllSites, einsum_all_sites, einsum_available, tensorkrowch_available
from tnattn.bench.timing import median_time


def _problem(N=3, M=7, D=4, d=2, c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    AL, AR = torch.randn(d, D, D, generator=g), torch.randn(d, D, D, generator=g)
    C = torch.randn(d, D, D, c, generator=g)
    u, v = torch.randn(D, generator=g), torch.randn(D, generator=g)
    x = torch.randint(0, d, (N, M), generator=g)
    return x, AL, AR, C, u, v


def test_quick_bench_writes_valid_json_and_plots(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--json", str(out), "--plots", str(tmp_path / "png")]) == 0
    env = json.loads(out.read_text())
    assert env["experiment"] == "bench" and "tnattn_version" in env and "--quick" in env["command"]
    res = env["results"]
    assert res["header"]["torch"] == torch.__version__
    assert res["gemm_GFLOP_s"]["float32"] > 0
    for section in ("ops", "peers"):
        rows = res[section]
        assert {r["impl"] for r in rows} >= {"tnattn", "loop", "vectorized"}
        for r in rows:
            assert "error" not in r, r
            assert r["fwd_Mtok_s"] > 0 and r["fwd_bwd_Mtok_s"] > 0
    assert sorted({r["M"] for r in res["scaling"]["M"]}) == [10, 100]
    assert [r["threads"] for r in res["scaling"]["threads"]] == [1]
    assert res["training"][0]["kind"] == "single" and res["training"][0]["member_token_steps_per_s"] > 0
    pngs = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert "bench_ops.png" in pngs and "bench_scaling_M.png" in pngs and len(pngs) >= 5


def test_cli_dispatches_to_bench(tmp_path, capsys):
    from tnattn.cli import main as cli_main

    out = tmp_path / "b.json"
    assert cli_main(["bench", "ops", "--quick", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert "ops" in res and "peers" not in res and "training" not in res
    assert "op throughput" in capsys.readouterr().out


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        main(["nonsense-section", "--quick"])
    with pytest.raises(ValueError, match="section"):
        run(BenchConfig.quick(sections=("bogus",)), verbose=False)
    with pytest.raises(ValueError, match="N"):
        OpCase(0, 4, 2)
    with pytest.raises(ValueError, match="dtype"):
        OpCase(1, 4, 2, dtype="float16")
    with pytest.raises(ValueError, match="repeats"):
        median_time(lambda: None, repeats=0)


def test_failing_implementation_is_recorded_not_raised():
    rows = bench_case(OpCase(2, 3, 2), ["tnattn", "nope"], repeats=1, budget_s=0.0)
    assert "error" not in rows[0] and "unknown implementation" in rows[1]["error"]


def test_flop_model():
    # forward: two context steps + d*c local-map contractions; backward 4 + 3*d*c more
    assert matvecs_per_token(2, 1) == (4, 4 + 4 + 6)
    assert matvecs_per_token(4, 3) == (14, 14 + 4 + 36)


def test_median_time_counts_repeats():
    calls = []
    t = median_time(lambda: calls.append(1), warmup=2, repeats=5, min_repeats=5, budget_s=0.0)
    assert len(calls) == 7 and t.repeats == 5 and t.min_s <= t.median_s


@pytest.mark.skipif(not einsum_available(), reason="opt_einsum not installed")
def test_einsum_peer_matches_reference_up_to_scale():
    x, AL, AR, C, u, v = _problem()
    W = reference.tn_attention(x, AL, AR, C, u, v)
    E = einsum_all_sites(x, AL, AR, C, u, v)
    # Without the per-step normalisation each map is scaled by a positive factor |l~| |r~|.
    nW = W / W.flatten(2).norm(dim=-1)[..., None, None]
    nE = E / E.flatten(2).norm(dim=-1)[..., None, None]
    torch.testing.assert_close(nE, nW, rtol=1e-5, atol=1e-5)
    ratio = (E.flatten(2) * W.flatten(2)).sum(-1)
    assert (ratio > 0).all()


@pytest.mark.skipif(not tensorkrowch_available(), reason="tensorkrowch not installed")
def test_tensorkrowch_peer_is_the_periodic_ring():
    x, A, _, C, _, _ = _problem(N=2, M=6, D=3, c=2)
    W = TensorKrowchAllSites(A, C, x.shape[1])(x)
    N, M = x.shape
    expect = torch.empty(N, M, C.shape[0], C.shape[3])
    for n in range(N):
        for i in range(M):
            P = torch.eye(A.shape[1])
            for j in range(1, M):  # x_{i+1} ... x_{i-1}, cyclically
                P = P @ A[x[n, (i + j) % M]]
            expect[n, i] = torch.einsum("sabo,ba->so", C, P)  # trace(C_so P)
    torch.testing.assert_close(W.detach(), expect, rtol=1e-4, atol=1e-4 * float(expect.abs().max()))
    assert math.isfinite(float(W.detach().sum()))


def test_kernels_section_rows_name_the_isa_and_check_their_arithmetic(tmp_path, capsys):
    out = tmp_path / "k.json"
    assert main(["kernels", "--quick", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    info = tnattn.build_info()
    assert res["header"]["cpu_isa"] == info["cpu_isa"]
    rows = res["kernels"]["D"]
    assert [r["D"] for r in rows] == [2, 5]
    sgemm = res["gemm_GFLOP_s"]["float32"]
    for r in rows:
        assert r["cpu_isa"] == info["cpu_isa"]
        # effective flops: 6 D^2 (forward) and 18 D^2 (forward+backward) per token
        assert r["fwd_GFLOP_s"] == pytest.approx(r["fwd_Mtok_s"] * 1e6 * 6 * r["D"] ** 2 / 1e9)
        assert r["fwd_bwd_GFLOP_s"] == pytest.approx(r["fwd_bwd_Mtok_s"] * 1e6 * 18 * r["D"] ** 2 / 1e9)
        assert r["fwd_bwd_pct_sgemm"] == pytest.approx(100 * r["fwd_bwd_GFLOP_s"] / sgemm)
    assert rows[1]["vs_prev"] == pytest.approx(rows[1]["fwd_bwd_GFLOP_s"] / rows[0]["fwd_bwd_GFLOP_s"])
    long = res["kernels"]["long"]
    assert [r["M"] for r in long["rows"]] == [100, 1000]
    assert long["cpu_isa"] == info["cpu_isa"] and all(r["cpu_isa"] == info["cpu_isa"] for r in long["rows"])
    assert all(r["peak_MB"] is not None and r["peak_MB"] >= 0 for r in long["rows"])
    assert long["memory"]["output_MB"] == pytest.approx(1000 * 2 * 4 / 2**20)
    assert "D sweep" in capsys.readouterr().out

#!/usr/bin/env bash
# The prepared GPU check of tnattn's CUDA kernels, for a lent H200 machine: builds tnattn with
# TNATTN_CUDA=ON, runs the GPU tests and the GPU op benchmark. About 6 minutes, no network needed.
#
# Expects: python3 (3.12) with torch (CUDA build, 2.11), pybind11, scikit-build-core, cmake, ninja
# and nvcc on PATH. pytest/hypothesis are optional: without pytest, tests/kernels/test_cuda.py runs as a
# script and tests/ops/test_ops.py is skipped (it needs pytest and hypothesis), and with it the GPU cases
# of its device-parametrised tests (values and gradients on every CUDA kernel path, bad symbols, ...).
#
# Usage (from anywhere):   scripts/gpu-check.sh
# Outputs go to $OUT (default /tmp/tnattn-gpu-check): gpu-check.log (everything printed here),
# build.log, bench_ops_cuda*.json. Exit status 0 when every step passed.
# Environment: SKIP_OPS_BENCH (non-empty: skip the op benchmark), PYTHON (default python3), TNATTN_CUDA_ARCHS (default 90-real;90-virtual),
# TNATTN_BUILD_DIR (CMake build folder; default scikit-build-core's build/{wheel_tag}).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/tnattn-gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1

status=0
T0=$(date +%s)
step() { echo; echo "=== $* (t = $(( $(date +%s) - T0 )) s)"; }
fail() { echo "!!! FAILED: $*"; status=1; }
has() { "$PY" -c "import $1" >/dev/null 2>&1; }

step environment
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi unavailable"
"$PY" - <<'EOF'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| torch CUDA", torch.version.cuda)
print("devices:", torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
EOF
nvcc --version | tail -2; cmake --version | head -1; echo "ninja $(ninja --version)"; echo "cores $(nproc)"
for m in pybind11 scikit_build_core pytest hypothesis numpy scipy matplotlib tqdm opt_einsum; do
  if has "$m"; then echo "  have $m"; else echo "  MISSING $m"; fi
done

step "build and install (TNATTN_CUDA=ON)"
export TNATTN_CUDA=ON TNATTN_NATIVE=ON CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" PIP_BREAK_SYSTEM_PACKAGES=1
CFG=()
if [ -n "${TNATTN_CUDA_ARCHS:-}" ]; then CFG+=(-C "cmake.define.TNATTN_CUDA_ARCHS=${TNATTN_CUDA_ARCHS}"); fi
if [ -n "${TNATTN_BUILD_DIR:-}" ]; then CFG+=(-C "build-dir=${TNATTN_BUILD_DIR}"); fi
if timeout 300 "$PY" -m pip install --no-build-isolation --no-deps --no-index -v ${CFG[@]+"${CFG[@]}"} . > "$OUT/build.log" 2>&1; then
  echo "built in $(( $(date +%s) - T0 )) s"
  grep -iE "warning|error" "$OUT/build.log" | grep -v "Werror\|-W" | head -20
else
  fail "build (see $OUT/build.log)"; tail -60 "$OUT/build.log"; exit 1
fi

step "import (outside the source tree)"
(cd /tmp && "$PY" -c "
import tnattn, tnattn._C as C
print('tnattn from', tnattn.__file__)
print('has_cuda', C.has_cuda(), '| devices seen by the extension', C.cuda.device_count())
assert C.has_cuda()
") || fail "import"

step "GPU tests: tests/kernels/test_cuda.py, tests/kernels/test_cuda_scan.py"
if has pytest; then
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider -rs tests/kernels/test_cuda.py || fail "tests/kernels/test_cuda.py"
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider -rs tests/kernels/test_cuda_scan.py || fail "tests/kernels/test_cuda_scan.py"
else
  timeout 240 "$PY" tests/kernels/test_cuda.py || fail "tests/kernels/test_cuda.py"
  timeout 120 "$PY" tests/kernels/test_cuda_scan.py || fail "tests/kernels/test_cuda_scan.py"
fi

step "GPU tests of the fused heads (mse_step, count_wrong): tests/kernels/test_cuda_step.py"
if has pytest; then
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider -rs tests/kernels/test_cuda_step.py || fail "tests/kernels/test_cuda_step.py"
else
  timeout 120 "$PY" tests/kernels/test_cuda_step.py || fail "tests/kernels/test_cuda_step.py"
fi

step "GPU tests of the large-D kernels: tests/kernels/test_cuda_large_d.py"
if has pytest; then
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider -rs tests/kernels/test_cuda_large_d.py || fail "tests/kernels/test_cuda_large_d.py"
else
  timeout 120 "$PY" tests/kernels/test_cuda_large_d.py || fail "tests/kernels/test_cuda_large_d.py"
fi

step "op tests in the CUDA build, on the CPU and (device-parametrised ones) the GPU: tests/ops/test_ops.py"
if has pytest && has hypothesis; then
  XDIST=(); if has xdist; then XDIST=(-n 8); fi
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider -x ${XDIST[@]+"${XDIST[@]}"} tests/ops/test_ops.py || fail "tests/ops/test_ops.py"
else
  echo "skipped: needs pytest and hypothesis"
fi

if [ -z "${SKIP_OPS_BENCH:-}" ]; then
step "GPU benchmark: benchmarks/bench_ops.py --device cuda"
# Large batches for the throughput target (D = 8), a D sweep (D = 40: the block-cooperative
# large-D kernels, csrc/cuda/large_d.cuh; kept small), and the vectorised baseline on a
# size where it fits in memory. Tokens/s and the ratio to the pure-torch loop come from the script.
timeout 150 "$PY" benchmarks/bench_ops.py --device cuda --impls tnattn,loop --repeats 10 --budget 1 \
  --grid "65536,256,8;16384,256,8;1024,256,8;16384,256,2;16384,256,32;1024,64,40" \
  --json "$OUT/bench_ops_cuda.json" || fail "benchmark (tnattn vs loop)"
timeout 90 "$PY" benchmarks/bench_ops.py --device cuda --impls tnattn,loop,vectorized --repeats 20 --budget 1 \
  --grid "4096,256,8" --json "$OUT/bench_ops_cuda_vectorized.json" || fail "benchmark (vectorized)"
fi

step "GPU long-sequence forward: N = 1, M = 10^7 (chunked scan) and the sequential kernel"
# tn_attention forward, float32, D = 8, d = 2, c = 1, integer x; tokens/s = N*M / median time of 5
# calls after a warm-up. The sequential kernel (one thread) runs M = 10^6 only, to keep the check short.
# These numbers fix the crossover constants of csrc/cuda/chunked_scan.cuh (kFewSequences, kLongSequence).
timeout 120 "$PY" - <<'PYEOF' || fail "GPU long-sequence forward"
import os, statistics, torch
from tnattn import ops
def rate(M, mode, N=1, D=8):
    os.environ["TNATTN_CUDA_SCAN"] = mode
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (N, M), generator=g).cuda()
    AL, AR, C = (torch.randn(*s, generator=g).cuda() for s in ((2, D, D), (2, D, D), (2, D, D, 1)))
    u, v = torch.randn(D, generator=g).cuda(), torch.randn(D, generator=g).cuda()
    ops.tn_attention(x, AL, AR, C, u, v); torch.cuda.synchronize()
    ts = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); ops.tn_attention(x, AL, AR, C, u, v); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    t = statistics.median(ts)
    print(f"tn_attention forward N={N} M={M} D={D} float32 TNATTN_CUDA_SCAN={mode}: {t * 1e3:.2f} ms, "
          f"{N * M / t / 1e9:.3f} G tok/s", flush=True)
rate(10_000_000, "auto")
rate(10_000_000, "chunked")
rate(1_000_000, "sequential")
rate(1_000_000, "chunked")
for N in (64, 1024):
    for mode in ("sequential", "chunked"):
        rate(65536, mode, N=N)
PYEOF

step "GPU ensemble training: Scenario A setting (D = 10, batch 128, crops 6-10, L1 1e-3)"
# Member-token-steps/s of tnattn.train.Trainer (E members) on the GPU; the rate is the difference between a long and a
# short run, so CUDA start-up and the first epoch's allocations cancel out.
timeout 150 "$PY" - <<'PYEOF' || fail "GPU ensemble training"
import sys, time
sys.path.insert(0, "benchmarks")
import bench_training as b
cfg = b.base_config(False)
cfg = cfg.__class__(**{**cfg.to_dict(), "device": "cuda"})
b.bench_ensemble(cfg, 64, epochs=1, threads=16, shared=False)  # CUDA context, kernels, allocator warm-up
for E in (1024, 4096):
    short = b.bench_ensemble(cfg, E, epochs=1, threads=16, shared=False)
    long = b.bench_ensemble(cfg, E, epochs=4, threads=16, shared=False)
    tok = long["member_token_steps"] - short["member_token_steps"]
    sec = long["train_s"] - short["train_s"]
    wall = long["wall_s"] - short["wall_s"]
    full = 1000 * 7000 * 1024 * 8
    print(f"E={E}: {tok / sec / 1e6:.2f} M member-token-steps/s (train), {tok / wall / 1e6:.2f} M (wall); "
          f"full D=10 protocol (1000 x 7000 epochs) extrapolated {full / (tok / wall) / 3600:.2f} h", flush=True)
PYEOF

step "done: status $status, $(( $(date +%s) - T0 )) s; outputs in $OUT"
exit $status

// Block-cooperative CUDA kernels for a runtime bond dimension: D > 32, or any D whose compile-time
// kernel (contexts.cuh, tn_attention.cuh) does not fit in shared memory.
//
// Mapping
// -------
// * One block works on one sequence at a time (a block handles sequences n = j, j + bpg, ... of its
//   group, j < bpg "blocks per group"). Its threads split the D entries of every vector: thread t
//   owns entries t, t + blockDim, ... (blockDim = D rounded up to whole warps, at most kThreads).
//   Every vector (context, adjoint carry, gradient) lives in shared memory; an owner writes its own
//   entries and a __syncthreads publishes them before the whole block reads the vector.
// * A mat-vec y^T A[s]: each thread computes its own output entries b as sum_a y[a] A[s][a][b],
//   reading row a of A[s] from global memory (consecutive threads, consecutive b: coalesced).
//   The parameters are staged once per call by the shared prep kernel (runtime.cu) in the
//   unpadded layout (Dp = D) with the transposes the adjoint scans need.
// * Scalars over the vector (norms, y.g, local maps L^T C R, gradients of real inputs) come from a
//   fixed-order block reduction (block_sums): sums of kChunk consecutive entries, then the sum of those
//   in order. The result depends on D only, never on timing.
// * Parameter gradients: each block owns one fp64 partial (its slice of the workspace, zeroed
//   before the launch) and adds its sequences' outer products there, each thread owning the columns
//   b it owns in the vectors (no two threads ever touch the same entry). reduce_partials
//   (runtime.cu) then sums the bpg partials of a group in block order. No floating-point atomics:
//   results are bitwise reproducible for a given shape (bpg depends on E, N and the output size
//   only). The only atomic is the integer count of sequences with an out-of-range symbol.
// * Passes are those of the compile-time kernels (see tn_attention.cuh); the context buffer holds
//   one sequence per block (M x (D + 1) scalars: the context and its inverse norm).
//
// The arithmetic per entry follows tnattn/common.h (same operation order per output entry; the
// reductions over the vector are chunked as above instead of one running sum).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "runtime.cuh"

namespace tnattn {
namespace cuda {
namespace large {

using namespace dev;

constexpr int kThreads = 256;  // largest block
constexpr int kChunk = 8;      // entries per first-level partial sum of block_sums
// Blocks per call the grid aims at (all groups together): enough to fill a large GPU with blocks of
// one to eight warps. Shape-only, so the reduction order does not depend on the device.
constexpr int64_t kTargetBlocks = 4096;
// Upper bound of the fp64 gradient partials (bytes): bpg shrinks when the output is large.
constexpr int64_t kPartBudget = int64_t(256) << 20;
// Upper bound of the reduction inputs staged at once (scalars): rows are processed in batches.
constexpr int kRedScalars = 8192;

inline int threads_for(int D) { return std::min(kThreads, std::max(32, (D + 31) / 32 * 32)); }

// Blocks per group. TNATTN_CUDA_EMULATION builds read TNATTN_EMU_LARGE_D_BLOCKS (a smaller target)
// so that the emulation tests cover blocks that walk several sequences.
inline int64_t blocks_per_group(int64_t E, int64_t N, int64_t out_scalars) {
  int64_t target = kTargetBlocks;
#ifdef TNATTN_CUDA_EMULATION
  if (const char* env = std::getenv("TNATTN_EMU_LARGE_D_BLOCKS")) target = std::max(1, std::atoi(env));
#endif
  int64_t bpg = std::min<int64_t>(N, (target + E - 1) / E);
  if (out_scalars > 0) bpg = std::min<int64_t>(bpg, kPartBudget / (E * out_scalars * 8));
  return std::max<int64_t>(1, bpg);
}

// Shared-memory layout of a block: nvec vectors of Dv scalars, then the reduction scratch
// (RB rows of Dv inputs, RB * NC first-level sums, RB results).
struct Layout {
  int Dv = 0, nvec = 0, RB = 1, NC = 1;
  __host__ __device__ int64_t red_in() const { return int64_t(nvec) * Dv; }
  __host__ __device__ int64_t red_mid() const { return red_in() + int64_t(RB) * Dv; }
  __host__ __device__ int64_t red_out() const { return red_mid() + (int64_t(RB) * NC + 3) / 4 * 4; }
  __host__ __device__ int64_t scalars() const { return red_out() + (RB + 3) / 4 * 4; }
};

inline Layout make_layout(int D, int nvec, int maxrows) {
  Layout l;
  l.Dv = (D + 3) / 4 * 4;
  l.nvec = nvec;
  l.RB = std::max(1, std::min(std::max(1, maxrows), kRedScalars / l.Dv));
  l.NC = (D + kChunk - 1) / kChunk;
  return l;
}

// The shared memory of a block, carved by a Layout.
template <typename T>
struct Shm {
  T* base;
  Layout l;
  TNATTN_DEV T* vec(int i) const { return base + int64_t(i) * l.Dv; }
  TNATTN_DEV T* in() const { return base + l.red_in(); }
  TNATTN_DEV T* mid() const { return base + l.red_mid(); }
  TNATTN_DEV T* out() const { return base + l.red_out(); }
};

// Loops over the vector entries this thread owns.
#define TNATTN_OWN(b, D) for (int b = static_cast<int>(threadIdx.x); b < (D); b += static_cast<int>(blockDim.x))

// out[r] = sum_j in[r * n + j] for r < rows, in a fixed order. The caller has written `in` (each
// thread its own entries); on return `out` is visible to every thread and `in` may be rewritten.
template <typename T>
TNATTN_DEV void block_sums(const Shm<T>& sh, int rows, int n) {
  __syncthreads();
  const int nc = (n + kChunk - 1) / kChunk;
  const T* in = sh.in();
  T* mid = sh.mid();
  for (int it = threadIdx.x; it < rows * nc; it += blockDim.x) {
    const int r = it / nc, c = it % nc;
    const T* src = in + int64_t(r) * n + c * kChunk;
    const int len = n - c * kChunk < kChunk ? n - c * kChunk : kChunk;
    T s = T(0);
    for (int j = 0; j < len; ++j) s += src[j];
    mid[it] = s;
  }
  __syncthreads();
  T* out = sh.out();
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    T s = T(0);
    for (int c = 0; c < nc; ++c) s += mid[r * nc + c];
    out[r] = s;
  }
  __syncthreads();
}

// sum_b u[b] v[b]
template <typename T>
TNATTN_DEV T block_dot(const Shm<T>& sh, const T* u, const T* v, int D) {
  T* in = sh.in();
  TNATTN_OWN(b, D) in[b] = u[b] * v[b];
  block_sums(sh, 1, D);
  return sh.out()[0];
}

// y = w / |w| (exact-zero rule of common.h's inv_norm); returns the inverse norm. y may alias w.
template <typename T>
TNATTN_DEV T block_normalize(const Shm<T>& sh, const T* w, T* y, int D) {
  T* in = sh.in();
  TNATTN_OWN(b, D) in[b] = w[b] * w[b];
  block_sums(sh, 1, D);
  const T inv = inv_norm(sh.out()[0]);
  TNATTN_OWN(b, D) y[b] = w[b] * inv;
  return inv;
}

// Entry b of v^T mat (common.h's vecmat order: v[0] mat[0][b] first, then rows 1..D-1).
template <typename T>
TNATTN_DEV T vecmat_col(const T* v, const T* __restrict__ mat, int D, int b) {
  T s = v[0] * mat[b];
  for (int a = 1; a < D; ++a) s += v[a] * mat[int64_t(a) * D + b];
  return s;
}

// Entry b of v^T (sum_q xs[q] mats[q]) (common.h's vecmat_embed order).
template <typename T>
TNATTN_DEV T vecmat_embed_col(const T* v, const T* __restrict__ mats, const T* xs, int d, int D, int b) {
  const int64_t DD = int64_t(D) * D;
  T s = T(0);
  for (int q = 0; q < d; ++q) {
    const T w = xs[q];
    const T* m = mats + q * DD;
    for (int a = 0; a < D; ++a) s += (w * v[a]) * m[int64_t(a) * D + b];
  }
  return s;
}

// One scan step y <- normalize(y^T mat(x)) with w as scratch; returns the inverse norm.
template <typename T, bool REAL>
TNATTN_DEV T block_step(const Shm<T>& sh, T* y, T* w, const T* mats, int sym, const T* xs, int d, int D) {
  __syncthreads();  // y complete
  if constexpr (REAL) {
    TNATTN_OWN(b, D) w[b] = vecmat_embed_col(y, mats, xs, d, D, b);
  } else {
    const T* m = mats + int64_t(sym) * D * D;
    TNATTN_OWN(b, D) w[b] = vecmat_col(y, m, D, b);
  }
  return block_normalize(sh, w, y, D);  // its first barrier ends every read of y
}

// dst[a][b] += (coef u[a]) w[b] in fp64, for the columns b this thread owns (dst: this block's
// partial, D x D). Same product order as the compile-time kernels' sink.
template <typename T>
TNATTN_DEV void outer_cols(double* dst, T coef, const T* u, const T* w, int D) {
  TNATTN_OWN(b, D) {
    const T wb = w[b];
    for (int a = 0; a < D; ++a) dst[int64_t(a) * D + b] += static_cast<double>((coef * u[a]) * wb);
  }
}

// Adjoint of one scan step (common.h's step_adjoint / step_adjoint_embed). On entry g = dLoss/dy for
// y = normalize(yp^T mat(x)) with inverse norm inv; on exit g = dLoss/dyp through this step and gw =
// dLoss/d(yp^T mat(x)). matsT: the transposed step matrices. Real inputs: gx[q] (+)= yp^T Mat[q] gw
// when gx != null (added to its value when gx_add). dmats (this block's partial of the d step
// matrices, or null): += coef_q u (x) w with (u, w) = (yp, gw), or (gw, yp) when `swap` (the
// gradient of a transposed step matrix read back untransposed).
template <typename T, bool REAL>
TNATTN_DEV void block_adjoint(const Shm<T>& sh, const T* y, T inv, T* g, const T* yp, T* gw, const T* matsT,
                              int sym, const T* xs, int d, int D, T* gx, bool gx_add, double* dmats, bool swap) {
  const T yg = block_dot(sh, y, g, D);
  TNATTN_OWN(b, D) gw[b] = (g[b] - y[b] * yg) * inv;
  __syncthreads();  // gw complete
  const int64_t DD = int64_t(D) * D;
  const T* u = swap ? gw : yp;
  const T* w = swap ? yp : gw;
  if constexpr (!REAL) {
    (void)xs;
    (void)gx;
    (void)gx_add;
    const T* m = matsT + sym * DD;
    TNATTN_OWN(b, D) g[b] = vecmat_col(gw, m, D, b);
    if (dmats) outer_cols(dmats + sym * DD, T(1), u, w, D);
  } else {
    (void)sym;
    TNATTN_OWN(b, D) g[b] = T(0);
    T* in = sh.in();
    const int RB = sh.l.RB;
    for (int q0 = 0; q0 < d; q0 += RB) {
      const int rows = d - q0 < RB ? d - q0 : RB;
      TNATTN_OWN(b, D) {
        for (int r = 0; r < rows; ++r) {
          const T uq = vecmat_col(gw, matsT + (q0 + r) * DD, D, b);  // (Mat[q] gw)[b]
          g[b] += xs[q0 + r] * uq;
          if (gx) in[int64_t(r) * D + b] = yp[b] * uq;
        }
      }
      if (gx) {  // block-uniform
        block_sums(sh, rows, D);
        for (int r = threadIdx.x; r < rows; r += blockDim.x) gx[q0 + r] = (gx_add ? gx[q0 + r] : T(0)) + sh.out()[r];
      }
    }
    if (dmats)
      for (int q = 0; q < d; ++q) outer_cols(dmats + q * DD, xs[q], u, w, D);
  }
}

// The end of an adjoint scan: gw = dLoss/d(boundary) for y = normalize(boundary).
template <typename T>
TNATTN_DEV void block_normalize_adjoint(const Shm<T>& sh, const T* y, T inv, const T* g, T* gw, int D) {
  const T yg = block_dot(sh, y, g, D);
  TNATTN_OWN(b, D) gw[b] = (g[b] - y[b] * yg) * inv;
}

// The context buffer of one block: M rows of D entries and the inverse norm.
template <typename T>
struct SeqBuf {
  T* p;
  int D;
  TNATTN_DEV T* row(int64_t i) const { return p + i * (D + 1); }
  TNATTN_DEV void put(int64_t i, const T* y, T inv) const {
    T* r = row(i);
    TNATTN_OWN(b, D) r[b] = y[b];
    if (threadIdx.x == 0) r[D] = inv;
  }
  // Loads row i into y (own entries) and returns its inverse norm.
  TNATTN_DEV T get(int64_t i, T* y) const {
    const T* r = row(i);
    TNATTN_OWN(b, D) y[b] = r[b];
    return r[D];
  }
};

template <typename T>
TNATTN_DEV void load_row(T* y, const T* src, int D) {
  TNATTN_OWN(b, D) y[b] = src[b];
}

template <typename T>
TNATTN_DEV void store_row(T* dst, const T* y, int D) {
  TNATTN_OWN(b, D) dst[b] = y[b];
}

// Symbol or embedding row of site j (flat index idx): every thread reads it (a broadcast).
template <typename T, bool REAL>
TNATTN_DEV int site_of(const void* x, int xkind, int64_t idx, int d, bool& bad, const T*& xs) {
  if constexpr (REAL) {
    xs = static_cast<const T*>(x) + idx * d;
    return 0;
  } else {
    xs = nullptr;
    return symbol(x, xkind, idx, d, bad);
  }
}

// Counts a sequence with an out-of-range symbol (all threads hold the same flag).
TNATTN_DEV void count_bad(bool bad, unsigned long long* counter) {
  if (bad && threadIdx.x == 0) atomicAdd(counter, 1ULL);
}

// Host side: the dynamic shared memory a layout needs, checked against the device's limit.
template <typename T>
std::size_t shared_bytes(const Layout& l, int D) {
  const std::size_t bytes = static_cast<std::size_t>(l.scalars()) * sizeof(T);
  const std::size_t limit = std::max<std::size_t>(48 * 1024, static_cast<std::size_t>(host::max_shared_optin()));
  if (bytes > limit)
    throw std::invalid_argument("tnattn: bond dimension D = " + std::to_string(D) +
                                " needs more shared memory than the CUDA device has");
  return bytes;
}

}  // namespace large
}  // namespace cuda
}  // namespace tnattn

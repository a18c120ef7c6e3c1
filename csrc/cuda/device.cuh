// Device-side machinery shared by the CUDA kernels (contexts.cuh, tn_attention.cuh). The per-step
// arithmetic itself (mat-vecs, normalisation, adjoint steps, local maps) comes from the
// __host__ __device__ helpers of tnattn/common.h, the same code the CPU kernels' runtime-D path uses.
//
// See tn_attention.cuh for the thread mapping. Pieces here:
//   * parameter staging: a prep kernel writes each group's matrices once per call into a padded,
//     optionally transposed layout (prep_params); blocks copy their group's slice into shared memory;
//   * per-thread vectors: registers for a compile-time bond dimension DC (fully unrolled loops);
//     a runtime D (DC == 0) has its own block-cooperative kernels (large_d.cuh), not these;
//   * Sink: where the per-token outer products of the parameter gradients go. DC > 0: staged in
//     shared memory for a chunk of time steps, then reduced by the whole block (each thread owns
//     output tiles x token ranges, fp32 partial sums per chunk, fp64 block accumulators), written as
//     one fp64 partial per block, and summed over blocks in a fixed order by reduce_partials:
//     deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tnattn/common.h"
#include "tnattn/cpu.h"

#define TNATTN_DEV __device__ __forceinline__

// The dynamic shared memory of a kernel (16-byte aligned).
#ifdef TNATTN_CUDA_EMULATION
#define TNATTN_DYNAMIC_SHARED(name) unsigned char* name = ::tnattn_emu::dynamic_shared()
#else
#define TNATTN_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace tnattn {
namespace cuda {
namespace dev {

// Largest block; kernels are compiled with __launch_bounds__(kMaxThreads).
constexpr int kMaxThreads = 128;
constexpr int kMaxTerms = 2;

// Stride (in scalars) between the context matrices of one tensor in the staged layout. The integer
// path reads row a of A[x] with a different x in every lane; padding each matrix by 4 scalars puts
// the d matrices' rows in different shared-memory banks. The embedding path reads all matrices in
// lockstep (and common.h's embedding helpers assume stride Dp*Dp), so it is not padded.
template <int DC, bool REAL>
__host__ __device__ constexpr int a_stride(int Dp) {
  return (DC > 0 && !REAL) ? DC * DC + 4 : Dp * Dp;
}

// ------------------------------------------------------------------------------------------------
// Inputs

// Symbol at flat index idx as an unsigned value (negative values wrap to huge ones, like the CPU).
TNATTN_DEV uint64_t raw_symbol(const void* x, int kind, int64_t idx) {
  if (kind == cpu::kUInt8) return static_cast<const uint8_t*>(x)[idx];
  if (kind == cpu::kInt32) return static_cast<uint32_t>(static_cast<const int32_t*>(x)[idx]);
  return static_cast<uint64_t>(static_cast<const int64_t*>(x)[idx]);
}

// Symbol in [0, d); an out-of-range one sets `bad` and reads as 0 so nothing is read out of bounds.
TNATTN_DEV int symbol(const void* x, int kind, int64_t idx, int d, bool& bad) {
  const uint64_t s = raw_symbol(x, kind, idx);
  if (s >= static_cast<uint64_t>(d)) {
    bad = true;
    return 0;
  }
  return static_cast<int>(s);
}

// One thread's sequence. Threads past the end of the batch (n >= N) run on a copy of sequence N-1
// so that every value stays finite and the block stays in lockstep; they write nothing.
struct SeqIdx {
  int64_t e, n, slot;  // group, sequence (clamped), per-thread workspace slot
  bool active;
};

TNATTN_DEV SeqIdx seq_index(int64_t N, int nblk) {
  SeqIdx s;
  const int64_t unit = blockIdx.x;
  s.e = unit / nblk;
  const int64_t n = (unit % nblk) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  s.active = n < N;
  s.n = s.active ? n : N - 1;
  s.slot = unit * blockDim.x + threadIdx.x;
  return s;
}

template <typename T>
TNATTN_DEV const T* boundary_row(const T* b, bool per_batch, int64_t N, int D, const SeqIdx& s) {
  return b + (s.e * (per_batch ? N : 1) + (per_batch ? s.n : 0)) * D;
}

// ------------------------------------------------------------------------------------------------
// Small vector helpers (registers for DC > 0: every loop is unrolled)

template <int DC, typename T>
TNATTN_DEV void vzero(T* v, int Dp) {
#pragma unroll
  for (int a = 0; a < dim<DC>(Dp); ++a) v[a] = T(0);
}

template <int DC, typename T>
TNATTN_DEV void vcopy(T* dst, const T* src, int Dp) {
#pragma unroll
  for (int a = 0; a < dim<DC>(Dp); ++a) dst[a] = src[a];
}

// dst = src[0..D) zero-padded to Dp (src in global memory).
template <int DC, typename T>
TNATTN_DEV void vload(T* dst, const T* src, int D, int Dp) {
#pragma unroll
  for (int a = 0; a < dim<DC>(Dp); ++a) dst[a] = a < D ? src[a] : T(0);
}

template <int DC, typename T>
TNATTN_DEV void vstore(T* dst, const T* src, int D, int Dp) {
#pragma unroll
  for (int a = 0; a < dim<DC>(Dp); ++a)
    if (a < D) dst[a] = src[a];
}

// The context buffer: per position i the D entries of a context and its inverse norm, interleaved
// over threads (slot fastest) so that a warp's accesses coalesce. Shape (M, D + 1, S).
template <typename T>
struct CtxBuf {
  T* p;
  int64_t S;
  int D;
  TNATTN_DEV T* at(int64_t i, int a, int64_t slot) const { return p + (i * (D + 1) + a) * S + slot; }
};

template <int DC, typename T>
TNATTN_DEV void buf_put(const CtxBuf<T>& B, int64_t i, int64_t slot, const T* y, T inv, int Dp) {
#pragma unroll
  for (int a = 0; a < dim<DC>(Dp); ++a)
    if (a < B.D) *B.at(i, a, slot) = y[a];
  *B.at(i, B.D, slot) = inv;
}

template <int DC, typename T>
TNATTN_DEV T buf_get(const CtxBuf<T>& B, int64_t i, int64_t slot, T* y, int Dp) {
#pragma unroll
  for (int a = 0; a < dim<DC>(Dp); ++a) y[a] = a < B.D ? *B.at(i, a, slot) : T(0);
  return *B.at(i, B.D, slot);
}

// ------------------------------------------------------------------------------------------------
// Scan steps in the vecmat form of common.h (mats: the d matrices of one direction, stride ms)

// y <- normalize(y^T mat(x_j)); returns the inverse pre-normalisation norm. tmp: Dp scalars.
template <int DC, bool REAL, typename T>
TNATTN_DEV T scan_step(T* y, const T* mats, int ms, int s, const T* xs, int d, T* tmp, int Dp) {
  if constexpr (REAL) {
    vecmat_embed<DC>(static_cast<const T*>(y), mats, xs, d, tmp, Dp);
  } else {
    vecmat<DC>(static_cast<const T*>(y), mats + s * ms, tmp, Dp);
  }
  vcopy<DC>(y, tmp, Dp);
  return normalize_inplace<DC>(y, Dp);
}

// Adjoint of scan_step: g holds dLoss/dy on entry and dLoss/dy_prev (through this step) on exit;
// gw receives dLoss/d(y_prev^T mat). Embedding path: gx[s] += y_prev^T mat_s gw when gx != null.
template <int DC, bool REAL, typename T>
TNATTN_DEV void adjoint_step(const T* y_prev, const T* y, T inv, T* g, const T* matsT, int ms, int s, const T* xs,
                             int d, T* gw, T* gx, T* tmp, int Dp) {
  if constexpr (REAL) {
    step_adjoint_embed<DC>(y_prev, y, inv, g, matsT, xs, d, gw, g, static_cast<T*>(nullptr), gx, tmp, Dp);
  } else {
    step_adjoint<DC>(y_prev, y, inv, g, matsT + s * ms, gw, g, static_cast<T*>(nullptr), Dp);
  }
}

// g += sum_k gW[k] Ct[k] R   (CtT: the transposed local-map matrices, stride Dp*Dp)
template <int DC, typename T>
TNATTN_DEV void local_grad_left(const T* R, const T* CtT, int K, const T* gW, T* g, int Dp) {
  for (int k = 0; k < K; ++k) {
    const T gk = gW[k];
    const T* m = CtT + k * Dp * Dp;
#pragma unroll
    for (int a = 0; a < dim<DC>(Dp); ++a) axpy<DC>(gk * R[a], m + a * Dp, g, Dp);
  }
}

// g += sum_k gW[k] Ct[k]^T L
template <int DC, typename T>
TNATTN_DEV void local_grad_right(const T* L, const T* Ct, int K, const T* gW, T* g, int Dp) {
  for (int k = 0; k < K; ++k) {
    const T gk = gW[k];
    const T* m = Ct + k * Dp * Dp;
#pragma unroll
    for (int a = 0; a < dim<DC>(Dp); ++a) axpy<DC>(gk * L[a], m + a * Dp, g, Dp);
  }
}

// ------------------------------------------------------------------------------------------------
// Parameter-gradient sink

// One family of outer-product accumulations: out[q][a][b] += coef(q) * u[a] * w[b] for q < nmat,
// read from a token's record. coef(q) = rec[coef_off + q] (gradient weights or real embeddings), or
// for integer symbols (coef_sym) 1 when rec[coef_off] == q and 0 otherwise (-1 matches nothing).
struct Term {
  int nmat = 0, u_off = 0, w_off = 0, coef_off = 0, coef_sym = 0, out_off = 0;
};

struct SinkGeo {
  Term terms[kMaxTerms];
  int nterms = 0;
  int SZ = 0;     // scalars per staged record
  int P = 0;      // output tiles (0: nothing to accumulate in this pass)
  int G = 1;      // token groups per chunk (P * G <= blockDim when P < blockDim)
  int chunk = 1;  // time steps staged between two block reductions
};

template <int DC>
__host__ __device__ constexpr int tile_width() {
  return DC >= 4 ? 4 : (DC > 0 ? DC : 1);
}

template <typename T>
TNATTN_DEV T term_coef(const Term& tm, const T* rec, int q) {
  if (tm.coef_sym) return rec[tm.coef_off] == static_cast<T>(q) ? T(1) : T(0);
  return rec[tm.coef_off + q];
}

template <typename T, int DC>
struct Sink {
  SinkGeo geo;
  T* stage;     // DC > 0: shared staging area (chunk * blockDim records); DC == 0: this thread's record
  double* acc;  // DC > 0: shared accumulators (G copies of OUT); DC == 0: the group's global accumulator
  int OUT;
  int Dp;

  TNATTN_DEV bool enabled() const { return geo.P > 0; }

  TNATTN_DEV T* record(int k) const {
    if constexpr (DC > 0) {
      return stage + (static_cast<int64_t>(k % geo.chunk) * blockDim.x + threadIdx.x) * geo.SZ;
    } else {
      return stage;
    }
  }

  // After the record of step k (0-based count within the pass, M steps in all) has been written.
  TNATTN_DEV void commit(int k, int64_t M, const T* rec, bool active) {
    if (!enabled()) return;
    if constexpr (DC > 0) {
      (void)rec;
      (void)active;
      const int t = k % geo.chunk;
      if (t == geo.chunk - 1 || k == M - 1) {
        __syncthreads();
        reduce_chunk(static_cast<int>(blockDim.x) * (t + 1));
        __syncthreads();
      }
    } else {
      static_assert(DC > 0, "the runtime bond dimension has its own kernels (large_d.cuh)");
    }
  }

  // DC > 0: sum the staged records [0, ntok) into the shared accumulators. Work item it = tile +
  // P * g: tile (term, matrix q, row a, columns b0..b0+VB) over the g-th token range.
  TNATTN_DEV void reduce_chunk(int ntok) {
    constexpr int VB = tile_width<DC>();
    constexpr int NBC = DC / VB;
    const int items = geo.P * geo.G;
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
      int tile = it % geo.P;
      const int g = it / geo.P;
      // Term of this tile, selected without indexing geo.terms dynamically (that would put the
      // sink's geometry in local memory).
      static_assert(kMaxTerms == 2, "term selection below assumes at most two terms");
      const int tiles0 = geo.terms[0].nmat * DC * NBC;
      const bool second = geo.nterms > 1 && tile >= tiles0;
      if (second) tile -= tiles0;
      const Term tm = second ? geo.terms[1] : geo.terms[0];
      const int q = tile / (DC * NBC);
      const int a = (tile / NBC) % DC;
      const int b0 = (tile % NBC) * VB;
      const int j0 = ntok * g / geo.G, j1 = ntok * (g + 1) / geo.G;
      T part[VB];
#pragma unroll
      for (int v = 0; v < VB; ++v) part[v] = T(0);
      for (int j = j0; j < j1; ++j) {
        const T* rec = stage + static_cast<int64_t>(j) * geo.SZ;
        const T alpha = term_coef(tm, rec, q) * rec[tm.u_off + a];
#pragma unroll
        for (int v = 0; v < VB; ++v) part[v] += alpha * rec[tm.w_off + b0 + v];
      }
      double* dst = acc + static_cast<int64_t>(g) * OUT + tm.out_off + (q * DC + a) * DC + b0;
#pragma unroll
      for (int v = 0; v < VB; ++v) dst[v] += static_cast<double>(part[v]);
    }
  }
};

// Shared-memory accumulators: zero them (DC > 0) at the start of a kernel ...
TNATTN_DEV void zero_shared(double* acc, int64_t count) {
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc[i] = 0.0;
}

// ... and at its end write the block's partial sums (summing the G copies in order).
TNATTN_DEV void write_block_partial(const double* acc, int G, int OUT, double* part) {
  __syncthreads();
  double* dst = part + static_cast<int64_t>(blockIdx.x) * OUT;
  for (int o = threadIdx.x; o < OUT; o += blockDim.x) {
    double s = 0.0;
    for (int g = 0; g < G; ++g) s += acc[static_cast<int64_t>(g) * OUT + o];
    dst[o] = s;
  }
}

// Copy this block's group of staged parameters into shared memory.
template <typename T>
TNATTN_DEV void load_params(const T* prep, int64_t PS, int64_t e, T* sp) {
  const T* src = prep + e * PS;
  for (int64_t i = threadIdx.x; i < PS; i += blockDim.x) sp[i] = src[i];
}

// ------------------------------------------------------------------------------------------------
// Kernels shared by both ops (defined in runtime.cu, instantiated for float and double)

// A segment of the staged parameter layout: nmat matrices (padded Dp x Dp, stride `stride`)
// starting at dst_off within a group's PS scalars.
enum SegKind : int { kPlain = 0, kTrans = 1, kCt = 2, kCtT = 3 };
struct Seg {
  const void* src = nullptr;  // (E, d, D, D) context tensor or (E, d, D, D, c) classification tensor
  int kind = kPlain;
  int nmat = 0;
  int stride = 0;
  int64_t dst_off = 0;
};
constexpr int kMaxSegs = 6;
struct SegList {
  Seg seg[kMaxSegs];
  int n = 0;
};

// How a gradient tensor's entries map into the padded accumulator layout.
struct GradMap {
  int kind = 0;  // 0: (d, D, D) context tensor; 1: (d, D, D, c) classification tensor
  int out_off = 0;
};

}  // namespace dev
}  // namespace cuda
}  // namespace tnattn

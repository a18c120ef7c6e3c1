// CUDA kernels: fused TN attention (left contexts, right contexts, local maps) and its backward.
//
// Mapping onto the GPU
// --------------------
// * One thread per sequence (e, n); a block holds up to 128 sequences of one group e, the grid is
//   E x ceil(N / block) blocks. The time loop runs inside the kernel: one launch per op (plus a tiny
//   parameter-staging kernel before and, for gradients of A/C, a fixed-order reduction after).
//   A sequence's scan is a chain of dependent D x D mat-vecs; the GPU hides its latency by running
//   many independent chains (sequences) per SM rather than by splitting one mat-vec over threads,
//   which would cost a shuffle or shared-memory round trip per step.
// * The bond dimension is a compile-time constant DC in {4, 8, 16, 32} (D padded up with zeros,
//   which is exact: padded rows/columns/lanes stay 0 through every step). Each thread's contexts and
//   gradient vectors live in registers (DC scalars each, all loops unrolled). The group's parameters
//   (A_left, A_left^T, A_right^T, A_right, C as (d*c, D, D) and its transpose) are staged once per
//   block in shared memory; lanes reading row a of A[x] for different symbols x hit different banks
//   (per-matrix padding). D > 32, or parameters too large for shared memory, take the
//   block-cooperative kernels of large_d.cuh instead (a block per sequence, threads over the D
//   entries, fixed-order reductions).
// * Per-step arithmetic: tnattn/common.h (vecmat, normalize_inplace, step_adjoint, local_map, ...),
//   shared with the CPU kernels; float runs in fp32 throughout, double in fp64.
// * Forward: pass 1 walks right to left computing the right contexts into a context buffer (global
//   memory, interleaved over threads so that warps coalesce); pass 2 walks left to right computing
//   the left contexts and writes the local maps W.
// * Backward (nothing saved by the forward but its inputs):
//     pass 1 (left to right)  recompute the left contexts L_i and inverse norms into the buffer;
//     pass 2 (right to left)  recompute the right contexts R_i; left adjoint scan with the local
//                             gradient sum_k gW_k C_k R_i; dC and dA_left contributions; the slot of
//                             L_i is then free and receives R_i;
//     pass 3 (left to right)  recompute L_i again; right adjoint scan (local gradient
//                             sum_k gW_k C_k^T L_i) reading R_i from the buffer; dA_right.
//   The two adjoint scans need no buffer of local gradients: each recomputes its own side of the
//   local-map backward (same flop count as computing both at once).
// * Gradients of A_left, A_right and C are sums over the batch of per-token outer products. The
//   tokens of a chunk of time steps are staged in shared memory; the whole block then reduces them
//   into fp64 shared accumulators (each thread owns 1x4 output tiles over a range of tokens, fp32
//   within a chunk), writes one fp64 partial per block, and reduce_partials sums the blocks of a
//   group in a fixed order: results are bitwise reproducible for a given problem shape (so are
//   large_d.cuh's, with per-block partials as well). grad_u/v/x are per
//   sequence and written directly.
// * Symbols outside [0, d) are read as 0 (never out of bounds) and counted in a device counter; the
//   entry point returns the count and tnattn.ops raises ValueError.
#pragma once

#include <algorithm>

#include "chunked_scan.cuh"
#include "runtime.cuh"
#include "tn_attention_large.cuh"

namespace tnattn {
namespace cuda {

using namespace dev;

namespace {

template <typename T>
struct TnArgs {
  int64_t N = 0, M = 0;
  int d = 0, D = 0, c = 0, K = 0, Dp = 0, msa = 0;
  int nblk = 0;
  const void* x = nullptr;
  int xkind = 0;
  bool xshared = false;
  // staged parameters: PS scalars per group; offsets of each segment
  const T* prep = nullptr;
  int64_t PS = 0, PS_pad = 0;
  int64_t off_AL = 0, off_ALT = 0, off_ART = 0, off_AR = 0, off_Ct = 0, off_CtT = 0;
  const T* u = nullptr;
  const T* v = nullptr;
  bool upb = false, vpb = false;
  const T* gW = nullptr;  // backward input (E, N, M, K)
  T* W = nullptr;         // forward output (E, N, M, K)
  T* gu = nullptr;        // (E, N, D)
  T* gv = nullptr;
  T* gx = nullptr;  // (E, N, M, d)
  CtxBuf<T> B{};
  T* vws = nullptr;  // DC == 0: per-thread vectors and record
  int64_t vws_stride = 0;
  // parameter-gradient sinks
  SinkGeo s2{}, s3{};
  int OUT = 0, Gmax = 1;
  int64_t acc_bytes = 0;
  double* part = nullptr;  // DC > 0: (E * nblk, OUT); DC == 0: (E, OUT) atomic accumulators
  bool need_right = false;
  unsigned long long* bad = nullptr;
};

// Symbol or embedding row at site j of this thread's sequence.
template <typename T, bool REAL>
struct Site {
  int sym = 0;
  const T* xs = nullptr;
};

template <typename T, bool REAL>
TNATTN_DEV Site<T, REAL> site(const TnArgs<T>& a, int64_t xrow, int64_t j, bool& bad) {
  Site<T, REAL> st;
  if constexpr (REAL) {
    st.xs = static_cast<const T*>(a.x) + (xrow + j) * a.d;
  } else {
    st.sym = symbol(a.x, a.xkind, xrow + j, a.d, bad);
  }
  return st;
}

template <typename T, int DC>
TNATTN_DEV const T* group_params(const TnArgs<T>& a, int64_t e, unsigned char* smem) {
  if constexpr (DC > 0) {
    T* sp = reinterpret_cast<T*>(smem + a.acc_bytes);
    load_params(a.prep, a.PS, e, sp);
    return sp;
  } else {
    (void)smem;
    return a.prep + e * a.PS;
  }
}

// ------------------------------------------------------------------------------------------------
// Forward

template <typename T, int DC, bool REAL>
__global__ void __launch_bounds__(kMaxThreads) tn_forward_kernel(const TnArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const SeqIdx s = seq_index(a.N, a.nblk);
  const int Dp = DC > 0 ? DC : a.Dp;
  const T* P = group_params<T, DC>(a, s.e, smem);
  if constexpr (DC > 0) __syncthreads();
  const T* AL = P + a.off_AL;
  const T* ART = P + a.off_ART;
  const T* Ct = P + a.off_Ct;

  constexpr int NV = 3;
  T regs[DC > 0 ? NV * DC : 1];
  T* vb;
  if constexpr (DC > 0) {
    vb = regs;
  } else {
    vb = a.vws + s.slot * a.vws_stride;
  }
  T* y = vb;
  T* tmp = vb + Dp;
  T* R = vb + 2 * Dp;

  const int64_t M = a.M;
  const int64_t xrow = ((a.xshared ? 0 : s.e) * a.N + s.n) * M;
  bool bad = false;

  // Pass 1: right contexts, right to left, into the buffer.
  vload<DC>(y, boundary_row(a.v, a.vpb, a.N, a.D, s), a.D, Dp);
  T inv = normalize_inplace<DC>(y, Dp);
  buf_put<DC>(a.B, M - 1, s.slot, y, inv, Dp);
  for (int64_t i = M - 2; i >= 0; --i) {
    const auto st = site<T, REAL>(a, xrow, i + 1, bad);
    inv = scan_step<DC, REAL>(y, ART, a.msa, st.sym, st.xs, a.d, tmp, Dp);
    buf_put<DC>(a.B, i, s.slot, y, inv, Dp);
  }
  // Pass 2: left contexts, left to right, and the local maps.
  vload<DC>(y, boundary_row(a.u, a.upb, a.N, a.D, s), a.D, Dp);
  normalize_inplace<DC>(y, Dp);
  T* Wrow = a.W + ((s.e * a.N + s.n) * M) * a.K;
  for (int64_t i = 0; i < M; ++i) {
    if (i > 0) {
      const auto st = site<T, REAL>(a, xrow, i - 1, bad);
      scan_step<DC, REAL>(y, AL, a.msa, st.sym, st.xs, a.d, tmp, Dp);
    }
    buf_get<DC>(a.B, i, s.slot, R, Dp);
    if (s.active) local_map<DC>(static_cast<const T*>(y), static_cast<const T*>(R), Ct, a.K, Wrow + i * a.K, tmp, Dp);
  }
  if constexpr (!REAL) {
    if (M == 1) symbol(a.x, a.xkind, xrow, a.d, bad);  // the only symbol, unused by the scans
    if (bad && s.active) atomicAdd(a.bad, 1ULL);
  }
}

// ------------------------------------------------------------------------------------------------
// Backward

template <typename T, int DC, bool REAL>
__global__ void __launch_bounds__(kMaxThreads) tn_backward_kernel(const TnArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const SeqIdx s = seq_index(a.N, a.nblk);
  const int Dp = DC > 0 ? DC : a.Dp;
  double* acc;
  if constexpr (DC > 0) {
    acc = reinterpret_cast<double*>(smem);
    zero_shared(acc, a.acc_bytes / 8);
  } else {
    acc = a.part ? a.part + s.e * a.OUT : nullptr;
  }
  const T* P = group_params<T, DC>(a, s.e, smem);
  if constexpr (DC > 0) __syncthreads();
  const T* AL = P + a.off_AL;
  const T* ALT = P + a.off_ALT;
  const T* ART = P + a.off_ART;
  const T* AR = P + a.off_AR;
  const T* Ct = P + a.off_Ct;
  const T* CtT = P + a.off_CtT;

  constexpr int NV = 6;
  T regs[DC > 0 ? NV * DC : 1];
  T* vb;
  T* stage;
  if constexpr (DC > 0) {
    vb = regs;
    stage = reinterpret_cast<T*>(smem + a.acc_bytes) + a.PS_pad;
  } else {
    vb = a.vws + s.slot * a.vws_stride;
    stage = vb + NV * Dp;  // this thread's record
  }
  T* L = vb;
  T* R = vb + Dp;
  T* Lp = vb + 2 * Dp;  // L_{i-1} in pass 2, R_{i+1} in pass 3
  T* g = vb + 3 * Dp;   // adjoint carry
  T* gw = vb + 4 * Dp;
  T* tmp = vb + 5 * Dp;

  const int64_t M = a.M;
  const int K = a.K;
  const int64_t xrow = ((a.xshared ? 0 : s.e) * a.N + s.n) * M;
  const int64_t orow = (s.e * a.N + s.n) * M;  // first site of this sequence in per-site outputs
  bool bad = false;

  // Pass 1: left contexts and inverse norms, left to right, into the buffer.
  vload<DC>(L, boundary_row(a.u, a.upb, a.N, a.D, s), a.D, Dp);
  T invL = normalize_inplace<DC>(L, Dp);
  buf_put<DC>(a.B, 0, s.slot, L, invL, Dp);
  for (int64_t i = 1; i < M; ++i) {
    const auto st = site<T, REAL>(a, xrow, i - 1, bad);
    invL = scan_step<DC, REAL>(L, AL, a.msa, st.sym, st.xs, a.d, tmp, Dp);
    buf_put<DC>(a.B, i, s.slot, L, invL, Dp);
  }

  // Pass 2: right to left. Record layout: [L | R | L_{i-1} | gw | gW (K) | symbol or x (d)].
  {
    Sink<T, DC> sk{a.s2, stage, acc, a.OUT, Dp};
    const int o_gW = 4 * Dp, o_coef = 4 * Dp + K;
    T* gx_base = (REAL && a.gx && s.active) ? a.gx + orow * a.d : nullptr;
    if (gx_base)
      for (int q = 0; q < a.d; ++q) gx_base[(M - 1) * a.d + q] = T(0);
    vzero<DC>(g, Dp);
    vload<DC>(R, boundary_row(a.v, a.vpb, a.N, a.D, s), a.D, Dp);
    T invR = normalize_inplace<DC>(R, Dp);
    invL = buf_get<DC>(a.B, M - 1, s.slot, L, Dp);
    for (int64_t k = 0; k < M; ++k) {
      const int64_t i = M - 1 - k;
      if (k > 0) {
        const auto st = site<T, REAL>(a, xrow, i + 1, bad);
        invR = scan_step<DC, REAL>(R, ART, a.msa, st.sym, st.xs, a.d, tmp, Dp);
      }
      const T* gWi = a.gW + (orow + i) * K;
      local_grad_left<DC>(static_cast<const T*>(R), CtT, K, gWi, g, Dp);
      T* rec = sk.enabled() ? sk.record(k) : nullptr;
      if (rec) {
        vcopy<DC>(rec, L, Dp);
        vcopy<DC>(rec + Dp, R, Dp);
        for (int q = 0; q < K; ++q) rec[o_gW + q] = s.active ? gWi[q] : T(0);
      }
      T invLp = T(0);
      if (i > 0) {
        const auto st = site<T, REAL>(a, xrow, i - 1, bad);
        invLp = buf_get<DC>(a.B, i - 1, s.slot, Lp, Dp);
        T* gxj = gx_base ? gx_base + (i - 1) * a.d : nullptr;
        if (gxj)
          for (int q = 0; q < a.d; ++q) gxj[q] = T(0);
        adjoint_step<DC, REAL>(Lp, L, invL, g, ALT, a.msa, st.sym, st.xs, a.d, gw, gxj, tmp, Dp);
        if (rec) {
          vcopy<DC>(rec + 2 * Dp, Lp, Dp);
          vcopy<DC>(rec + 3 * Dp, gw, Dp);
          if constexpr (REAL) {
            for (int q = 0; q < a.d; ++q) rec[o_coef + q] = s.active ? st.xs[q] : T(0);
          } else {
            rec[o_coef] = s.active ? static_cast<T>(st.sym) : T(-1);
          }
        }
      } else {
        normalize_adjoint<DC>(L, invL, g, gw, Dp);
        if (a.gu && s.active) vstore<DC>(a.gu + (s.e * a.N + s.n) * a.D, gw, a.D, Dp);
        if (rec) {
          vzero<DC>(rec + 2 * Dp, Dp);
          vzero<DC>(rec + 3 * Dp, Dp);
          for (int q = 0; q < (REAL ? a.d : 1); ++q) rec[o_coef + q] = REAL ? T(0) : T(-1);
        }
      }
      buf_put<DC>(a.B, i, s.slot, R, invR, Dp);  // L_i is consumed: its slot now holds R_i
      sk.commit(k, M, rec, s.active);
      vcopy<DC>(L, Lp, Dp);
      invL = invLp;
    }
  }

  // Pass 3: left to right, right adjoint. Record layout: [gw | R_{i+1} | symbol or x (d)].
  if (a.need_right) {
    Sink<T, DC> sk{a.s3, stage, acc, a.OUT, Dp};
    const int o_coef = 2 * Dp;
    T* gx_base = (REAL && a.gx && s.active) ? a.gx + orow * a.d : nullptr;
    vzero<DC>(g, Dp);
    vload<DC>(L, boundary_row(a.u, a.upb, a.N, a.D, s), a.D, Dp);
    normalize_inplace<DC>(L, Dp);
    T invR = buf_get<DC>(a.B, 0, s.slot, R, Dp);
    for (int64_t i = 0; i < M; ++i) {
      if (i > 0) {
        const auto st = site<T, REAL>(a, xrow, i - 1, bad);
        scan_step<DC, REAL>(L, AL, a.msa, st.sym, st.xs, a.d, tmp, Dp);
      }
      const T* gWi = a.gW + (orow + i) * K;
      local_grad_right<DC>(static_cast<const T*>(L), Ct, K, gWi, g, Dp);
      T* rec = sk.enabled() ? sk.record(i) : nullptr;
      T invRn = T(0);
      T* Rn = Lp;
      if (i < M - 1) {
        const auto st = site<T, REAL>(a, xrow, i + 1, bad);
        invRn = buf_get<DC>(a.B, i + 1, s.slot, Rn, Dp);
        T* gxj = gx_base ? gx_base + (i + 1) * a.d : nullptr;
        adjoint_step<DC, REAL>(Rn, R, invR, g, AR, a.msa, st.sym, st.xs, a.d, gw, gxj, tmp, Dp);
        if (rec) {
          vcopy<DC>(rec, gw, Dp);
          vcopy<DC>(rec + Dp, Rn, Dp);
          if constexpr (REAL) {
            for (int q = 0; q < a.d; ++q) rec[o_coef + q] = s.active ? st.xs[q] : T(0);
          } else {
            rec[o_coef] = s.active ? static_cast<T>(st.sym) : T(-1);
          }
        }
      } else {
        normalize_adjoint<DC>(R, invR, g, gw, Dp);
        if (a.gv && s.active) vstore<DC>(a.gv + (s.e * a.N + s.n) * a.D, gw, a.D, Dp);
        if (rec) {
          vzero<DC>(rec, Dp);
          vzero<DC>(rec + Dp, Dp);
          for (int q = 0; q < (REAL ? a.d : 1); ++q) rec[o_coef + q] = REAL ? T(0) : T(-1);
        }
      }
      sk.commit(i, M, rec, s.active);
      vcopy<DC>(R, Rn, Dp);
      invR = invRn;
    }
  }

  if constexpr (DC > 0) {
    if (a.s2.P > 0 || a.s3.P > 0) write_block_partial(acc, a.Gmax, a.OUT, a.part);
  }
  if constexpr (!REAL) {
    if (M == 1) symbol(a.x, a.xkind, xrow, a.d, bad);
    if (bad && s.active) atomicAdd(a.bad, 1ULL);
  }
}

// ------------------------------------------------------------------------------------------------
// Planning and launch

// Staged parameter layout and sink geometry for a compile-time bond dimension DC (0 = runtime).
template <typename T>
struct TnPlan {
  int DC = 0, Dp = 0, NT = 0, nblk = 0;
  int64_t units = 0, S = 0;
  TnArgs<T> a{};
  dev::SegList segs{};
  std::size_t smem = 0;
};

inline void add_seg(dev::SegList& L, const void* src, int kind, int nmat, int stride, int64_t& off, int64_t& dst) {
  dev::Seg& sg = L.seg[L.n++];
  sg.src = src;
  sg.kind = kind;
  sg.nmat = nmat;
  sg.stride = stride;
  sg.dst_off = off;
  dst = off;
  off += static_cast<int64_t>(nmat) * stride;
}

inline SinkGeo make_geo(const Term* terms, int nterms, int SZ, int DC, int NT, int chunk) {
  SinkGeo gm;
  gm.nterms = nterms;
  gm.SZ = SZ;
  gm.chunk = chunk;
  // Fast path: one tile per (matrix, row, group of 4 columns). Runtime-D path (atomics): any P > 0
  // just marks the sink enabled.
  const int tiles_per_mat = DC > 0 ? DC * (DC / 4) : 1;
  int P = 0;
  for (int t = 0; t < nterms; ++t) {
    gm.terms[t] = terms[t];
    P += terms[t].nmat * tiles_per_mat;
  }
  gm.P = P;
  gm.G = (DC > 0 && P > 0 && P < NT) ? std::min(NT / P, 32) : 1;
  return gm;
}

template <typename T>
TnPlan<T> plan_tn(int DC, bool backward, bool real, const Dims& dm, const T* AL, const T* AR, const T* C,
                  bool need_AL, bool need_AR, bool need_C, bool need_right) {
  TnPlan<T> p;
  p.DC = DC;
  const int D = dm.D, d = dm.d, c = dm.c, K = d * c;
  p.Dp = DC > 0 ? DC : D;
  const int Dp = p.Dp;
  p.NT = host::block_threads(DC, dm.N);
  p.nblk = static_cast<int>((dm.N + p.NT - 1) / p.NT);
  p.units = host::grid_units(dm.E, p.nblk);
  p.S = p.units * p.NT;
  TnArgs<T>& a = p.a;
  a.N = dm.N;
  a.M = dm.M;
  a.d = d;
  a.D = D;
  a.c = c;
  a.K = K;
  a.Dp = Dp;
  a.msa = (DC > 0 && !real) ? DC * DC + 4 : Dp * Dp;
  a.nblk = p.nblk;
  int64_t off = 0;
  add_seg(p.segs, AL, dev::kPlain, d, a.msa, off, a.off_AL);
  add_seg(p.segs, AR, dev::kTrans, d, a.msa, off, a.off_ART);
  add_seg(p.segs, C, dev::kCt, K, Dp * Dp, off, a.off_Ct);
  if (backward) {
    add_seg(p.segs, AL, dev::kTrans, d, a.msa, off, a.off_ALT);
    add_seg(p.segs, AR, dev::kPlain, d, a.msa, off, a.off_AR);
    add_seg(p.segs, C, dev::kCtT, K, Dp * Dp, off, a.off_CtT);
  }
  a.PS = off;
  a.PS_pad = (off + 3) / 4 * 4;
  a.need_right = need_right;
  const int dw = real ? d : 1;
  const std::size_t ts = sizeof(T);
  if (!backward) {
    p.smem = DC > 0 ? a.PS_pad * ts : 0;
    a.vws_stride = 3 * static_cast<int64_t>(Dp);
    return p;
  }
  // Accumulator layout: [dC (K mats) | dA_left (d) | dA_right (d)], padded Dp x Dp matrices.
  a.OUT = (K + 2 * d) * Dp * Dp;
  Term t2[2];
  int n2 = 0;
  if (need_C) t2[n2++] = Term{K, 0, Dp, 4 * Dp, 0, 0};
  if (need_AL) t2[n2++] = Term{d, 2 * Dp, 3 * Dp, 4 * Dp + K, real ? 0 : 1, K * Dp * Dp};
  Term t3[1];
  int n3 = 0;
  if (need_AR && need_right) t3[n3++] = Term{d, 0, Dp, 2 * Dp, real ? 0 : 1, (K + d) * Dp * Dp};
  const int SZ2 = host::round4(4 * Dp + K + dw), SZ3 = host::round4(2 * Dp + dw);
  const int SZ = std::max(SZ2, SZ3);
  // Chunk: as many time steps as fit in ~32 KiB of staging (at most 8).
  const int chunk = DC > 0 ? static_cast<int>(std::max<std::size_t>(
                                 1, std::min<std::size_t>(8, 32768 / (std::size_t(p.NT) * SZ * ts))))
                           : 1;
  a.s2 = make_geo(t2, n2, SZ2, DC, p.NT, chunk);
  a.s3 = make_geo(t3, n3, SZ3, DC, p.NT, chunk);
  a.Gmax = std::max(a.s2.G, a.s3.G);
  const bool any = a.s2.P > 0 || a.s3.P > 0;
  a.acc_bytes = (DC > 0 && any) ? (static_cast<int64_t>(a.Gmax) * a.OUT * 8 + 15) / 16 * 16 : 0;
  p.smem = DC > 0 ? a.acc_bytes + a.PS_pad * ts + std::size_t(p.NT) * chunk * SZ * ts : 0;
  a.vws_stride = 6 * static_cast<int64_t>(Dp) + SZ;
  return p;
}

// Chooses the fast path when its shared memory fits, else the runtime-D path.
template <typename T>
TnPlan<T> choose_tn(bool backward, bool real, const Dims& dm, const T* AL, const T* AR, const T* C, bool nAL,
                    bool nAR, bool nC, bool nright) {
  const int DC = host::fast_dim(dm.D);
  if (DC > 0) {
    TnPlan<T> p = plan_tn<T>(DC, backward, real, dm, AL, AR, C, nAL, nAR, nC, nright);
    if (p.smem <= static_cast<std::size_t>(host::max_shared_optin())) return p;
  }
  // DC == 0: the chunked scan uses this plan's layout; everything else goes to tn_attention_large.cuh.
  return plan_tn<T>(0, backward, real, dm, AL, AR, C, nAL, nAR, nC, nright);
}

// Workspace of a plan: staged parameters, context buffer, partials, runtime-D vectors, bad counter.
template <typename T>
struct TnSpace {
  T* prep = nullptr;
  T* buf = nullptr;
  double* part = nullptr;
  T* vws = nullptr;
  unsigned long long* bad = nullptr;
};

template <typename T>
TnSpace<T> allocate(TnPlan<T>& p, const Dims& dm, bool need_part, const Launch& L) {
  host::Workspace ws;
  const std::size_t o_prep = ws.add(std::size_t(dm.E) * p.a.PS * sizeof(T));
  const std::size_t o_buf = ws.add(std::size_t(dm.M) * (dm.D + 1) * p.S * sizeof(T));
  const int64_t nparts = p.DC > 0 ? p.units : dm.E;
  const std::size_t part_bytes = need_part ? std::size_t(nparts) * p.a.OUT * sizeof(double) : 0;
  const std::size_t o_part = ws.add(part_bytes);
  const std::size_t vws_bytes = p.DC == 0 ? std::size_t(p.S) * p.a.vws_stride * sizeof(T) : 0;
  const std::size_t o_vws = ws.add(vws_bytes);
  const std::size_t o_bad = ws.add(sizeof(unsigned long long));
  unsigned char* base = ws.allocate(L);
  TnSpace<T> sp;
  sp.prep = reinterpret_cast<T*>(base + o_prep);
  sp.buf = reinterpret_cast<T*>(base + o_buf);
  sp.part = part_bytes ? reinterpret_cast<double*>(base + o_part) : nullptr;
  sp.vws = vws_bytes ? reinterpret_cast<T*>(base + o_vws) : nullptr;
  sp.bad = reinterpret_cast<unsigned long long*>(base + o_bad);
  cudaStream_t st = host::stream_of(L);
  host::memset_async(sp.bad, sizeof(unsigned long long), st);
  if (p.DC == 0 && part_bytes) host::memset_async(sp.part, part_bytes, st);
  p.a.prep = sp.prep;
  p.a.B = CtxBuf<T>{sp.buf, p.S, dm.D};
  p.a.part = sp.part;
  p.a.vws = sp.vws;
  p.a.bad = sp.bad;
  return sp;
}

}  // namespace

// The entry points unpack their parameter struct (tnattn/api.h) into the names the kernels use.
template <typename T>
int64_t tn_attention_forward(const TnAttentionParams<T>& P, const Launch& L) {
  const XArg x = P.in.x;
  const T *AL = P.in.A_left, *AR = P.in.A_right, *C = P.in.C, *u = P.in.u, *v = P.in.v;
  const bool upb = P.in.u_per_batch, vpb = P.in.v_per_batch;
  const Dims dm = P.in.dims;
  T* W = P.W;
  host::DeviceGuard guard(L.device);
  const bool real = x.kind == cpu::kReal;
  TnPlan<T> p = choose_tn<T>(false, real, dm, AL, AR, C, false, false, false, false);
  if (chunked::use_chunked(dm)) {  // few, long sequences: chunked_scan.cuh (right contexts, then left + W)
    chunked::Forward<T> f = chunked::from_plan<T>(dm, p, real, x);
    f.c = dm.c;
    f.ndir = 2;
    f.dir[0] = chunked::Dir<T>{p.a.off_ART, v, vpb, true};
    f.dir[1] = chunked::Dir<T>{p.a.off_AL, u, upb, false};
    f.W = W;
    f.off_Ct = p.a.off_Ct;
    f.K = p.a.K;
    return chunked::forward(f, L);
  }
  if (p.DC == 0) return large::tn_attention_forward<T>(P, L);
  TnSpace<T> sp = allocate(p, dm, false, L);
  cudaStream_t st = host::stream_of(L);
  TnArgs<T>& a = p.a;
  a.x = x.ptr;
  a.xkind = x.kind;
  a.xshared = x.shared;
  a.u = u;
  a.v = v;
  a.upb = upb;
  a.vpb = vpb;
  a.W = W;
  host::launch_prep<T>(p.segs, dm.E, dm.d, dm.D, dm.c, p.Dp, a.PS, sp.prep, st);
  host::dispatch<false>(p.DC, real, [&](auto dc, auto re) {
    auto kern = tn_forward_kernel<T, decltype(dc)::value, decltype(re)::value>;
    host::allow_shared(kern, p.smem);
    host::launch(kern, static_cast<unsigned>(p.units), p.NT, p.smem, st, "tn_forward_kernel", a);
  });
  return real ? 0 : host::read_counter(sp.bad, st);
}

template <typename T>
int64_t tn_attention_backward(const TnAttentionParams<T>& P, const Launch& L) {
  const XArg x = P.in.x;
  const T *AL = P.in.A_left, *AR = P.in.A_right, *C = P.in.C, *u = P.in.u, *v = P.in.v;
  const bool upb = P.in.u_per_batch, vpb = P.in.v_per_batch;
  const Dims dm = P.in.dims;
  const T* gW = P.grad_W;
  T *gAL = P.grad.A_left, *gAR = P.grad.A_right, *gC = P.grad.C, *gu = P.grad.u, *gv = P.grad.v, *gx = P.grad_x;
  host::DeviceGuard guard(L.device);
  const bool real = x.kind == cpu::kReal;
  if (!real) gx = nullptr;
  const bool need_right = gAR || gv || gx;
  TnPlan<T> p = choose_tn<T>(true, real, dm, AL, AR, C, gAL != nullptr, gAR != nullptr, gC != nullptr, need_right);
  if (p.DC == 0) return large::tn_attention_backward<T>(P, L);
  const bool need_part = gAL || gAR || gC;
  TnSpace<T> sp = allocate(p, dm, need_part, L);
  cudaStream_t st = host::stream_of(L);
  TnArgs<T>& a = p.a;
  a.x = x.ptr;
  a.xkind = x.kind;
  a.xshared = x.shared;
  a.u = u;
  a.v = v;
  a.upb = upb;
  a.vpb = vpb;
  a.gW = gW;
  a.gu = gu;
  a.gv = gv;
  a.gx = gx;
  host::launch_prep<T>(p.segs, dm.E, dm.d, dm.D, dm.c, p.Dp, a.PS, sp.prep, st);
  host::dispatch<false>(p.DC, real, [&](auto dc, auto re) {
    auto kern = tn_backward_kernel<T, decltype(dc)::value, decltype(re)::value>;
    host::allow_shared(kern, p.smem);
    host::launch(kern, static_cast<unsigned>(p.units), p.NT, p.smem, st, "tn_backward_kernel", a);
  });
  if (need_part) {
    const int64_t nblk = p.DC > 0 ? p.nblk : 1;
    const int Dp = p.Dp, K = dm.d * dm.c;
    if (gC) host::launch_reduce<T>(sp.part, nblk, a.OUT, dm.E, dm.d, dm.D, dm.c, Dp, dev::GradMap{1, 0}, gC, st);
    if (gAL)
      host::launch_reduce<T>(sp.part, nblk, a.OUT, dm.E, dm.d, dm.D, dm.c, Dp, dev::GradMap{0, K * Dp * Dp}, gAL, st);
    if (gAR)
      host::launch_reduce<T>(sp.part, nblk, a.OUT, dm.E, dm.d, dm.D, dm.c, Dp,
                             dev::GradMap{0, (K + dm.d) * Dp * Dp}, gAR, st);
  }
  return real ? 0 : host::read_counter(sp.bad, st);
}

}  // namespace cuda
}  // namespace tnattn

// TN attention (forward and backward) for a runtime bond dimension: the block-cooperative kernels
// of large_d.cuh. Same passes as tn_attention.cuh (see the comment there).
#pragma once

#include "large_d.cuh"

namespace tnattn {
namespace cuda {
namespace large {

template <typename T>
struct TnArgs {
  int64_t N = 0, M = 0, bpg = 1;
  int d = 0, D = 0, K = 0;
  const void* x = nullptr;
  int xkind = 0;
  bool xshared = false;
  // staged parameters per group (D x D matrices): AL, ART, Ct (K) [, ALT, AR, CtT (K)]
  const T* prep = nullptr;
  int64_t PS = 0, off_AL = 0, off_ART = 0, off_Ct = 0, off_ALT = 0, off_AR = 0, off_CtT = 0;
  const T* u = nullptr;
  const T* v = nullptr;
  bool upb = false, vpb = false;
  const T* gW = nullptr;
  T* W = nullptr;
  T* gu = nullptr;
  T* gv = nullptr;
  T* gx = nullptr;
  T* buf = nullptr;  // per block: M x (D + 1)
  // per block: [dC (K) | dA_left (d) | dA_right (d)] D x D matrices (null: no parameter gradient)
  double* part = nullptr;
  int64_t OUT = 0;
  bool need_C = false, need_AL = false, need_AR = false, need_right = false;
  Layout lay{};
  unsigned long long* bad = nullptr;
};

template <typename T>
TNATTN_DEV const T* bnd_row(const T* b, bool per_batch, int64_t N, int D, int64_t e, int64_t n) {
  return b + (e * (per_batch ? N : 1) + (per_batch ? n : 0)) * D;
}

template <typename T, bool REAL>
__global__ void __launch_bounds__(kThreads) tn_forward_kernel(const TnArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const Shm<T> sh{reinterpret_cast<T*>(smem), a.lay};
  T* y = sh.vec(0);
  T* w = sh.vec(1);
  T* R = sh.vec(2);
  const int D = a.D, d = a.d, K = a.K;
  const int64_t M = a.M, e = blockIdx.x / a.bpg, DD = int64_t(D) * D;
  const T* P = a.prep + e * a.PS;
  const T* AL = P + a.off_AL;
  const T* ART = P + a.off_ART;
  const T* Ct = P + a.off_Ct;
  const SeqBuf<T> B{a.buf + int64_t(blockIdx.x) * M * (D + 1), D};
  for (int64_t n = blockIdx.x % a.bpg; n < a.N; n += a.bpg) {
    bool bad = false;
    const int64_t xrow = ((a.xshared ? 0 : e) * a.N + n) * M;
    // Pass 1: right contexts, right to left, into the buffer.
    load_row(w, bnd_row(a.v, a.vpb, a.N, D, e, n), D);
    T inv = block_normalize(sh, w, y, D);
    B.put(M - 1, y, inv);
    for (int64_t i = M - 2; i >= 0; --i) {
      const T* xs;
      const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + i + 1, d, bad, xs);
      inv = block_step<T, REAL>(sh, y, w, ART, sym, xs, d, D);
      B.put(i, y, inv);
    }
    // Pass 2: left contexts, left to right, and the local maps W[k] = L^T Ct[k] R.
    __syncthreads();  // y is rewritten
    load_row(w, bnd_row(a.u, a.upb, a.N, D, e, n), D);
    block_normalize(sh, w, y, D);
    T* Wrow = a.W + (e * a.N + n) * M * K;
    T* in = sh.in();
    for (int64_t i = 0; i < M; ++i) {
      if (i > 0) {
        const T* xs;
        const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + i - 1, d, bad, xs);
        block_step<T, REAL>(sh, y, w, AL, sym, xs, d, D);
      }
      B.get(i, R);
      __syncthreads();  // y complete
      for (int k0 = 0; k0 < K; k0 += a.lay.RB) {
        const int rows = K - k0 < a.lay.RB ? K - k0 : a.lay.RB;
        TNATTN_OWN(b, D) {
          for (int r = 0; r < rows; ++r) in[int64_t(r) * D + b] = vecmat_col(y, Ct + (k0 + r) * DD, D, b) * R[b];
        }
        block_sums(sh, rows, D);
        for (int r = threadIdx.x; r < rows; r += blockDim.x) Wrow[i * K + k0 + r] = sh.out()[r];
      }
    }
    if constexpr (!REAL) {
      if (M == 1) symbol(a.x, a.xkind, xrow, d, bad);  // the only symbol, read by no scan
      count_bad(bad, a.bad);
    }
    __syncthreads();
  }
}

template <typename T, bool REAL>
__global__ void __launch_bounds__(kThreads) tn_backward_kernel(const TnArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const Shm<T> sh{reinterpret_cast<T*>(smem), a.lay};
  T* L = sh.vec(0);
  T* R = sh.vec(1);
  T* Lp = sh.vec(2);  // L_{i-1} in pass 2, R_{i+1} in pass 3
  T* g = sh.vec(3);
  T* gw = sh.vec(4);
  T* w = sh.vec(5);
  const int D = a.D, d = a.d, K = a.K;
  const int64_t M = a.M, e = blockIdx.x / a.bpg, DD = int64_t(D) * D;
  const T* P = a.prep + e * a.PS;
  const T* AL = P + a.off_AL;
  const T* ALT = P + a.off_ALT;
  const T* ART = P + a.off_ART;
  const T* AR = P + a.off_AR;
  const T* Ct = P + a.off_Ct;
  const T* CtT = P + a.off_CtT;
  const SeqBuf<T> B{a.buf + int64_t(blockIdx.x) * M * (D + 1), D};
  double* part = a.part ? a.part + int64_t(blockIdx.x) * a.OUT : nullptr;
  double* dC = (part && a.need_C) ? part : nullptr;
  double* dAL = (part && a.need_AL) ? part + K * DD : nullptr;
  double* dAR = (part && a.need_AR) ? part + (K + d) * DD : nullptr;
  for (int64_t n = blockIdx.x % a.bpg; n < a.N; n += a.bpg) {
    bool bad = false;
    const int64_t xrow = ((a.xshared ? 0 : e) * a.N + n) * M;
    const int64_t orow = (e * a.N + n) * M;
    T* gx_base = (REAL && a.gx) ? a.gx + orow * d : nullptr;

    // Pass 1: left contexts and inverse norms into the buffer.
    load_row(w, bnd_row(a.u, a.upb, a.N, D, e, n), D);
    T invL = block_normalize(sh, w, L, D);
    B.put(0, L, invL);
    for (int64_t i = 1; i < M; ++i) {
      const T* xs;
      const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + i - 1, d, bad, xs);
      invL = block_step<T, REAL>(sh, L, w, AL, sym, xs, d, D);
      B.put(i, L, invL);
    }

    // Pass 2: right to left; left adjoint scan, dC, dA_left, grad_u.
    __syncthreads();  // L and the buffer are rewritten
    if (gx_base)
      for (int q = threadIdx.x; q < d; q += blockDim.x) gx_base[(M - 1) * d + q] = T(0);
    TNATTN_OWN(b, D) g[b] = T(0);
    load_row(w, bnd_row(a.v, a.vpb, a.N, D, e, n), D);
    T invR = block_normalize(sh, w, R, D);
    invL = B.get(M - 1, L);
    for (int64_t i = M - 1; i >= 0; --i) {
      if (i < M - 1) {
        const T* xs;
        const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + i + 1, d, bad, xs);
        invR = block_step<T, REAL>(sh, R, w, ART, sym, xs, d, D);
      }
      __syncthreads();  // R and L complete
      const T* gWi = a.gW + (orow + i) * K;
      // g += sum_k gW[k] Ct[k] R (common.h's local_map_backward order)
      TNATTN_OWN(b, D) {
        T acc = g[b];
        for (int k = 0; k < K; ++k) {
          const T gk = gWi[k];
          const T* m = CtT + k * DD;
          for (int c = 0; c < D; ++c) acc += (gk * R[c]) * m[int64_t(c) * D + b];
        }
        g[b] = acc;
      }
      if (dC)
        for (int k = 0; k < K; ++k) outer_cols(dC + k * DD, gWi[k], L, R, D);
      T invLp = T(0);
      if (i > 0) {
        const T* xs;
        const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + i - 1, d, bad, xs);
        invLp = B.get(i - 1, Lp);
        block_adjoint<T, REAL>(sh, L, invL, g, Lp, gw, ALT, sym, xs, d, D, gx_base ? gx_base + (i - 1) * d : nullptr,
                               false, dAL, false);
      } else {
        block_normalize_adjoint(sh, L, invL, g, gw, D);
        if (a.gu) store_row(a.gu + (e * a.N + n) * D, gw, D);
      }
      B.put(i, R, invR);  // L_i is consumed: its row now holds R_i
      __syncthreads();    // every read of L, R and Lp in this step is done
      TNATTN_OWN(b, D) L[b] = Lp[b];
      invL = invLp;
    }

    // Pass 3: left to right; right adjoint scan, dA_right, grad_v, the rest of grad_x.
    if (a.need_right) {
      __syncthreads();
      TNATTN_OWN(b, D) g[b] = T(0);
      load_row(w, bnd_row(a.u, a.upb, a.N, D, e, n), D);
      block_normalize(sh, w, L, D);
      invR = B.get(0, R);
      for (int64_t i = 0; i < M; ++i) {
        if (i > 0) {
          const T* xs;
          const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + i - 1, d, bad, xs);
          block_step<T, REAL>(sh, L, w, AL, sym, xs, d, D);
        }
        __syncthreads();  // L and R complete
        const T* gWi = a.gW + (orow + i) * K;
        // g += sum_k gW[k] Ct[k]^T L
        TNATTN_OWN(b, D) {
          T acc = g[b];
          for (int k = 0; k < K; ++k) {
            const T gk = gWi[k];
            const T* m = Ct + k * DD;
            for (int c = 0; c < D; ++c) acc += (gk * L[c]) * m[int64_t(c) * D + b];
          }
          g[b] = acc;
        }
        T invRn = T(0);
        if (i < M - 1) {
          const T* xs;
          const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + i + 1, d, bad, xs);
          invRn = B.get(i + 1, Lp);
          block_adjoint<T, REAL>(sh, R, invR, g, Lp, gw, AR, sym, xs, d, D, gx_base ? gx_base + (i + 1) * d : nullptr,
                                 true, dAR, true);
        } else {
          block_normalize_adjoint(sh, R, invR, g, gw, D);
          if (a.gv) store_row(a.gv + (e * a.N + n) * D, gw, D);
        }
        __syncthreads();
        TNATTN_OWN(b, D) R[b] = Lp[b];
        invR = invRn;
      }
    }
    if constexpr (!REAL) {
      if (M == 1) symbol(a.x, a.xkind, xrow, d, bad);
      count_bad(bad, a.bad);
    }
    __syncthreads();
  }
}

template <typename T>
struct TnCall {
  TnArgs<T> a{};
  dev::SegList segs{};
  int NT = 0;
  int64_t units = 0;
  std::size_t smem = 0;
};

inline void add_seg(dev::SegList& S, const void* src, int kind, int nmat, int64_t DD, int64_t& off, int64_t& dst) {
  S.seg[S.n++] = dev::Seg{src, kind, nmat, static_cast<int>(DD), off};
  dst = off;
  off += nmat * DD;
}

template <typename T>
TnCall<T> tn_call(bool backward, bool nAL, bool nAR, bool nC, bool nright, const TnInputs<T>& in,
                  const Launch& L) {
  const Dims dm = in.dims;
  TnCall<T> c;
  TnArgs<T>& a = c.a;
  const int D = dm.D, d = dm.d, K = dm.d * dm.c;
  const int64_t DD = int64_t(D) * D;
  a.N = dm.N;
  a.M = dm.M;
  a.d = d;
  a.D = D;
  a.K = K;
  a.need_C = nC;
  a.need_AL = nAL;
  a.need_AR = nAR && nright;
  a.need_right = nright;
  const bool need_part = backward && (nAL || nAR || nC);
  a.OUT = need_part ? (K + 2 * d) * DD : 0;
  a.bpg = blocks_per_group(dm.E, dm.N, a.OUT);
  c.units = host::grid_units(dm.E, static_cast<int>(a.bpg));
  c.NT = threads_for(D);
  int64_t off = 0;
  add_seg(c.segs, in.A_left, dev::kPlain, d, DD, off, a.off_AL);
  add_seg(c.segs, in.A_right, dev::kTrans, d, DD, off, a.off_ART);
  add_seg(c.segs, in.C, dev::kCt, K, DD, off, a.off_Ct);
  if (backward) {
    add_seg(c.segs, in.A_left, dev::kTrans, d, DD, off, a.off_ALT);
    add_seg(c.segs, in.A_right, dev::kPlain, d, DD, off, a.off_AR);
    add_seg(c.segs, in.C, dev::kCtT, K, DD, off, a.off_CtT);
  }
  a.PS = off;
  a.lay = make_layout(D, backward ? 6 : 3, std::max(K, d));
  c.smem = shared_bytes<T>(a.lay, D);
  host::Workspace ws;
  const std::size_t o_prep = ws.add(std::size_t(dm.E) * a.PS * sizeof(T));
  const std::size_t buf_bytes = std::size_t(c.units) * dm.M * (D + 1) * sizeof(T);
  const std::size_t o_buf = ws.add(buf_bytes);
  const std::size_t part_bytes = std::size_t(c.units) * a.OUT * sizeof(double);
  const std::size_t o_part = ws.add(part_bytes);
  const std::size_t o_bad = ws.add(sizeof(unsigned long long));
  unsigned char* base = ws.allocate(L);
  cudaStream_t st = host::stream_of(L);
  a.prep = reinterpret_cast<T*>(base + o_prep);
  a.buf = reinterpret_cast<T*>(base + o_buf);
  a.part = part_bytes ? reinterpret_cast<double*>(base + o_part) : nullptr;
  a.bad = reinterpret_cast<unsigned long long*>(base + o_bad);
  host::memset_async(a.bad, sizeof(unsigned long long), st);
  if (part_bytes) host::memset_async(a.part, part_bytes, st);
  host::launch_prep<T>(c.segs, dm.E, d, D, dm.c, D, a.PS, const_cast<T*>(a.prep), st);
  a.x = in.x.ptr;
  a.xkind = in.x.kind;
  a.xshared = in.x.shared;
  a.u = in.u;
  a.v = in.v;
  a.upb = in.u_per_batch;
  a.vpb = in.v_per_batch;
  return c;
}

// Enqueue a forward / backward without waiting for the stream; they return the device counter of
// sequences with an out-of-range symbol. Called by the entry points below and by mse_step.cuh (all
// inside the caller's device guard). gx: grad_x (real inputs only, else null).
template <typename T>
unsigned long long* enqueue_forward(const TnInputs<T>& in, T* W, const Launch& L) {
  const bool real = in.x.kind == cpu::kReal;
  TnCall<T> c = tn_call<T>(false, false, false, false, false, in, L);
  c.a.W = W;
  cudaStream_t st = host::stream_of(L);
  auto go = [&](auto kern) {
    host::allow_shared(kern, c.smem);
    host::launch(kern, static_cast<unsigned>(c.units), c.NT, c.smem, st, "large::tn_forward_kernel", c.a);
  };
  if (real)
    go(tn_forward_kernel<T, true>);
  else
    go(tn_forward_kernel<T, false>);
  return c.a.bad;
}

template <typename T>
unsigned long long* enqueue_backward(const TnInputs<T>& in, const T* gW, const TnParamGrads<T>& g, T* gx,
                                     const Launch& L) {
  const Dims dm = in.dims;
  const bool real = in.x.kind == cpu::kReal;
  if (!real) gx = nullptr;
  const bool need_right = g.A_right || g.v || gx;
  TnCall<T> c = tn_call<T>(true, g.A_left != nullptr, g.A_right != nullptr, g.C != nullptr, need_right, in, L);
  TnArgs<T>& a = c.a;
  a.gW = gW;
  a.gu = g.u;
  a.gv = g.v;
  a.gx = gx;
  cudaStream_t st = host::stream_of(L);
  auto go = [&](auto kern) {
    host::allow_shared(kern, c.smem);
    host::launch(kern, static_cast<unsigned>(c.units), c.NT, c.smem, st, "large::tn_backward_kernel", a);
  };
  if (real)
    go(tn_backward_kernel<T, true>);
  else
    go(tn_backward_kernel<T, false>);
  const int D = dm.D, K = dm.d * dm.c;
  const int OUT = static_cast<int>(a.OUT);
  if (g.C) host::launch_reduce<T>(a.part, a.bpg, OUT, dm.E, dm.d, D, dm.c, D, dev::GradMap{1, 0}, g.C, st);
  if (g.A_left)
    host::launch_reduce<T>(a.part, a.bpg, OUT, dm.E, dm.d, D, dm.c, D, dev::GradMap{0, K * D * D}, g.A_left, st);
  if (g.A_right)
    host::launch_reduce<T>(a.part, a.bpg, OUT, dm.E, dm.d, D, dm.c, D, dev::GradMap{0, (K + dm.d) * D * D},
                           g.A_right, st);
  return a.bad;
}

// Entry points, called by tn_attention.cuh's (inside its device guard).
template <typename T>
int64_t tn_attention_forward(const TnAttentionParams<T>& P, const Launch& L) {
  unsigned long long* bad = enqueue_forward<T>(P.in, P.W, L);
  return P.in.x.kind == cpu::kReal ? 0 : host::read_counter(bad, host::stream_of(L));
}

template <typename T>
int64_t tn_attention_backward(const TnAttentionParams<T>& P, const Launch& L) {
  unsigned long long* bad = enqueue_backward<T>(P.in, P.grad_W, P.grad, P.grad_x, L);
  return P.in.x.kind == cpu::kReal ? 0 : host::read_counter(bad, host::stream_of(L));
}

}  // namespace large
}  // namespace cuda
}  // namespace tnattn

// CUDA kernels: normalised contexts (forward) and their reverse adjoint scan (backward).
// Same mapping as tn_attention.cuh (see the comment there): one thread per sequence, the time loop
// inside the kernel, contexts in registers, the group's matrices in shared memory, dA reduced
// through staged chunks and fixed-order block partials.
//
// A "direction" is a matrix tensor in vecmat form: left contexts (reverse = false) step with
// mat = A and take their adjoint with A^T; right contexts (reverse = true) walk backwards with
// mat = A^T and take their adjoint with A. Positions in scan order: k = 0..M-1 is site i = k (left)
// or i = M-1-k (right); the step into site i reads the symbol of the previous site j in scan order.
#pragma once

#include <algorithm>

#include "chunked_scan.cuh"
#include "contexts_large.cuh"
#include "runtime.cuh"

namespace tnattn {
namespace cuda {

using namespace dev;

namespace {

template <typename T>
struct CtxArgs {
  int64_t N = 0, M = 0;
  int d = 0, D = 0, Dp = 0, msa = 0;
  int nblk = 0;
  bool reverse = false;
  const void* x = nullptr;
  int xkind = 0;
  bool xshared = false;
  const T* prep = nullptr;
  int64_t PS = 0, PS_pad = 0, off_mat = 0, off_matT = 0;
  const T* bnd = nullptr;
  bool bpb = false;
  T* out = nullptr;           // forward (E, N, M, D)
  const T* gout = nullptr;    // backward input (E, N, M, D)
  T* gb = nullptr;            // (E, N, D)
  T* gx = nullptr;            // (E, N, M, d)
  CtxBuf<T> B{};
  T* vws = nullptr;
  int64_t vws_stride = 0;
  SinkGeo sk{};
  int OUT = 0;
  int64_t acc_bytes = 0;
  double* part = nullptr;
  unsigned long long* bad = nullptr;
};

// Site of scan position k, and of the position before it.
TNATTN_DEV int64_t pos(bool reverse, int64_t M, int64_t k) { return reverse ? M - 1 - k : k; }

template <typename T, bool REAL>
TNATTN_DEV int site_sym(const CtxArgs<T>& a, int64_t xrow, int64_t j, bool& bad, const T*& xs) {
  if constexpr (REAL) {
    xs = static_cast<const T*>(a.x) + (xrow + j) * a.d;
    return 0;
  } else {
    xs = nullptr;
    return symbol(a.x, a.xkind, xrow + j, a.d, bad);
  }
}

template <typename T, int DC>
TNATTN_DEV const T* group_params(const CtxArgs<T>& a, int64_t e, unsigned char* smem) {
  if constexpr (DC > 0) {
    T* sp = reinterpret_cast<T*>(smem + a.acc_bytes);
    load_params(a.prep, a.PS, e, sp);
    return sp;
  } else {
    (void)smem;
    return a.prep + e * a.PS;
  }
}

template <typename T, int DC, bool REAL>
__global__ void __launch_bounds__(kMaxThreads) contexts_forward_kernel(const CtxArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const SeqIdx s = seq_index(a.N, a.nblk);
  const int Dp = DC > 0 ? DC : a.Dp;
  const T* mat = group_params<T, DC>(a, s.e, smem) + a.off_mat;
  if constexpr (DC > 0) __syncthreads();
  constexpr int NV = 2;
  T regs[DC > 0 ? NV * DC : 1];
  T* vb;
  if constexpr (DC > 0) {
    vb = regs;
  } else {
    vb = a.vws + s.slot * a.vws_stride;
  }
  T* y = vb;
  T* tmp = vb + Dp;
  const int64_t M = a.M;
  const int64_t xrow = ((a.xshared ? 0 : s.e) * a.N + s.n) * M;
  T* orow = a.out + (s.e * a.N + s.n) * M * a.D;
  bool bad = false;
  vload<DC>(y, boundary_row(a.bnd, a.bpb, a.N, a.D, s), a.D, Dp);
  normalize_inplace<DC>(y, Dp);
  if (s.active) vstore<DC>(orow + pos(a.reverse, M, 0) * a.D, y, a.D, Dp);
  for (int64_t k = 1; k < M; ++k) {
    const int64_t i = pos(a.reverse, M, k), j = pos(a.reverse, M, k - 1);
    const T* xs;
    const int sym = site_sym<T, REAL>(a, xrow, j, bad, xs);
    scan_step<DC, REAL>(y, mat, a.msa, sym, xs, a.d, tmp, Dp);
    if (s.active) vstore<DC>(orow + i * a.D, y, a.D, Dp);
  }
  if constexpr (!REAL) {
    symbol(a.x, a.xkind, xrow + pos(a.reverse, M, M - 1), a.d, bad);  // last site: not read by the scan
    if (bad && s.active) atomicAdd(a.bad, 1ULL);
  }
}

template <typename T, int DC, bool REAL>
__global__ void __launch_bounds__(kMaxThreads) contexts_backward_kernel(const CtxArgs<T> a) {
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
  const T* mat = P + a.off_mat;
  const T* matT = P + a.off_matT;

  constexpr int NV = 5;
  T regs[DC > 0 ? NV * DC : 1];
  T* vb;
  T* stage;
  if constexpr (DC > 0) {
    vb = regs;
    stage = reinterpret_cast<T*>(smem + a.acc_bytes) + a.PS_pad;
  } else {
    vb = a.vws + s.slot * a.vws_stride;
    stage = vb + NV * Dp;
  }
  T* y = vb;
  T* yp = vb + Dp;
  T* g = vb + 2 * Dp;
  T* gw = vb + 3 * Dp;
  T* tmp = vb + 4 * Dp;

  const int64_t M = a.M;
  const bool rev = a.reverse;
  const int64_t xrow = ((a.xshared ? 0 : s.e) * a.N + s.n) * M;
  const int64_t orow = (s.e * a.N + s.n) * M;
  bool bad = false;

  // Pass 1: the contexts and their inverse norms, in scan order, into the buffer (indexed by site).
  vload<DC>(y, boundary_row(a.bnd, a.bpb, a.N, a.D, s), a.D, Dp);
  T inv = normalize_inplace<DC>(y, Dp);
  buf_put<DC>(a.B, pos(rev, M, 0), s.slot, y, inv, Dp);
  for (int64_t k = 1; k < M; ++k) {
    const T* xs;
    const int sym = site_sym<T, REAL>(a, xrow, pos(rev, M, k - 1), bad, xs);
    inv = scan_step<DC, REAL>(y, mat, a.msa, sym, xs, a.d, tmp, Dp);
    buf_put<DC>(a.B, pos(rev, M, k), s.slot, y, inv, Dp);
  }

  // Pass 2: adjoint scan in reverse scan order. Record layout: [y_prev | gw | symbol or x (d)];
  // the term reads (u, w) = (y_prev, gw) for d(A) (left) or (gw, y_prev) for d(A^T)^T (right).
  Sink<T, DC> sk{a.sk, stage, acc, a.OUT, Dp};
  const int o_coef = 2 * Dp;
  T* gx_base = (REAL && a.gx && s.active) ? a.gx + orow * a.d : nullptr;
  if (gx_base)
    for (int q = 0; q < a.d; ++q) gx_base[pos(rev, M, M - 1) * a.d + q] = T(0);
  vzero<DC>(g, Dp);
  // y currently holds the context of the last scan position, inv its inverse norm.
  for (int64_t k = M - 1; k >= 0; --k) {
    const int64_t i = pos(rev, M, k);
    const T* go = a.gout + (orow + i) * a.D;
#pragma unroll
    for (int b = 0; b < dim<DC>(Dp); ++b)
      if (b < a.D) g[b] += go[b];
    const int64_t step = M - 1 - k;  // count within this pass
    T* rec = sk.enabled() ? sk.record(step) : nullptr;
    T invp = T(0);
    if (k > 0) {
      const int64_t j = pos(rev, M, k - 1);
      const T* xs;
      const int sym = site_sym<T, REAL>(a, xrow, j, bad, xs);
      invp = buf_get<DC>(a.B, j, s.slot, yp, Dp);
      T* gxj = gx_base ? gx_base + j * a.d : nullptr;
      if (gxj)
        for (int q = 0; q < a.d; ++q) gxj[q] = T(0);
      adjoint_step<DC, REAL>(yp, y, inv, g, matT, a.msa, sym, xs, a.d, gw, gxj, tmp, Dp);
      if (rec) {
        vcopy<DC>(rec, yp, Dp);
        vcopy<DC>(rec + Dp, gw, Dp);
        if constexpr (REAL) {
          for (int q = 0; q < a.d; ++q) rec[o_coef + q] = s.active ? xs[q] : T(0);
        } else {
          rec[o_coef] = s.active ? static_cast<T>(sym) : T(-1);
        }
      }
    } else {
      normalize_adjoint<DC>(y, inv, g, gw, Dp);
      if (a.gb && s.active) vstore<DC>(a.gb + (s.e * a.N + s.n) * a.D, gw, a.D, Dp);
      if (rec) {
        vzero<DC>(rec, Dp);
        vzero<DC>(rec + Dp, Dp);
        for (int q = 0; q < (REAL ? a.d : 1); ++q) rec[o_coef + q] = REAL ? T(0) : T(-1);
      }
    }
    sk.commit(step, M, rec, s.active);
    vcopy<DC>(y, yp, Dp);
    inv = invp;
  }
  if constexpr (DC > 0) {
    if (a.sk.P > 0) write_block_partial(acc, a.sk.G, a.OUT, a.part);
  }
  if constexpr (!REAL) {
    symbol(a.x, a.xkind, xrow + pos(rev, M, M - 1), a.d, bad);
    if (bad && s.active) atomicAdd(a.bad, 1ULL);
  }
}

// ------------------------------------------------------------------------------------------------
// Planning and launch

template <typename T>
struct CtxPlan {
  int DC = 0, Dp = 0, NT = 0, nblk = 0;
  int64_t units = 0, S = 0;
  CtxArgs<T> a{};
  dev::SegList segs{};
  std::size_t smem = 0;
};

template <typename T>
CtxPlan<T> plan_ctx(int DC, bool backward, bool real, bool reverse, const Dims& dm, const T* A, bool need_A) {
  CtxPlan<T> p;
  p.DC = DC;
  const int D = dm.D, d = dm.d;
  p.Dp = DC > 0 ? DC : D;
  const int Dp = p.Dp;
  p.NT = host::block_threads(DC, dm.N);
  p.nblk = static_cast<int>((dm.N + p.NT - 1) / p.NT);
  p.units = host::grid_units(dm.E, p.nblk);
  p.S = p.units * p.NT;
  CtxArgs<T>& a = p.a;
  a.N = dm.N;
  a.M = dm.M;
  a.d = d;
  a.D = D;
  a.Dp = Dp;
  a.msa = (DC > 0 && !real) ? DC * DC + 4 : Dp * Dp;
  a.nblk = p.nblk;
  a.reverse = reverse;
  // mat: the step matrices in vecmat form (A, or A^T for right contexts); matT: their transposes.
  dev::SegList& L = p.segs;
  L.n = backward ? 2 : 1;
  L.seg[0] = dev::Seg{A, reverse ? dev::kTrans : dev::kPlain, d, a.msa, 0};
  a.off_mat = 0;
  if (backward) {
    L.seg[1] = dev::Seg{A, reverse ? dev::kPlain : dev::kTrans, d, a.msa, static_cast<int64_t>(d) * a.msa};
    a.off_matT = static_cast<int64_t>(d) * a.msa;
  }
  a.PS = static_cast<int64_t>(L.n) * d * a.msa;
  a.PS_pad = (a.PS + 3) / 4 * 4;
  const std::size_t ts = sizeof(T);
  if (!backward) {
    p.smem = DC > 0 ? a.PS_pad * ts : 0;
    a.vws_stride = 2 * static_cast<int64_t>(Dp);
    return p;
  }
  const int dw = real ? d : 1;
  const int SZ = host::round4(2 * Dp + dw);
  a.OUT = d * Dp * Dp;
  SinkGeo& gm = a.sk;
  gm.SZ = SZ;
  gm.chunk = DC > 0 ? static_cast<int>(std::max<std::size_t>(
                          1, std::min<std::size_t>(8, 32768 / (std::size_t(p.NT) * SZ * ts))))
                    : 1;
  if (need_A) {
    gm.nterms = 1;
    // reverse: the kernel accumulates d(A^T) as y_prev (x) gw; read it transposed as gw (x) y_prev.
    gm.terms[0] = Term{d, reverse ? Dp : 0, reverse ? 0 : Dp, 2 * Dp, real ? 0 : 1, 0};
    gm.P = DC > 0 ? d * DC * (DC / 4) : d;
  }
  gm.G = (DC > 0 && gm.P > 0 && gm.P < p.NT) ? std::min(p.NT / gm.P, 32) : 1;
  a.acc_bytes = (DC > 0 && gm.P > 0) ? (static_cast<int64_t>(gm.G) * a.OUT * 8 + 15) / 16 * 16 : 0;
  p.smem = DC > 0 ? a.acc_bytes + a.PS_pad * ts + std::size_t(p.NT) * gm.chunk * SZ * ts : 0;
  a.vws_stride = 5 * static_cast<int64_t>(Dp) + SZ;
  return p;
}

template <typename T>
CtxPlan<T> choose_ctx(bool backward, bool real, bool reverse, const Dims& dm, const T* A, bool need_A) {
  const int DC = host::fast_dim(dm.D);
  if (DC > 0) {
    CtxPlan<T> p = plan_ctx<T>(DC, backward, real, reverse, dm, A, need_A);
    if (p.smem <= static_cast<std::size_t>(host::max_shared_optin())) return p;
  }
  // DC == 0: the chunked scan uses this plan's layout; everything else goes to contexts_large.cuh.
  return plan_ctx<T>(0, backward, real, reverse, dm, A, need_A);
}

template <typename T>
unsigned long long* allocate(CtxPlan<T>& p, const Dims& dm, bool backward, bool need_part, const Launch& L) {
  host::Workspace ws;
  const std::size_t o_prep = ws.add(std::size_t(dm.E) * p.a.PS * sizeof(T));
  const std::size_t buf_bytes = backward ? std::size_t(dm.M) * (dm.D + 1) * p.S * sizeof(T) : 0;
  const std::size_t o_buf = ws.add(buf_bytes);
  const int64_t nparts = p.DC > 0 ? p.units : dm.E;
  const std::size_t part_bytes = need_part ? std::size_t(nparts) * p.a.OUT * sizeof(double) : 0;
  const std::size_t o_part = ws.add(part_bytes);
  const std::size_t vws_bytes = p.DC == 0 ? std::size_t(p.S) * p.a.vws_stride * sizeof(T) : 0;
  const std::size_t o_vws = ws.add(vws_bytes);
  const std::size_t o_bad = ws.add(sizeof(unsigned long long));
  unsigned char* base = ws.allocate(L);
  cudaStream_t st = host::stream_of(L);
  p.a.prep = reinterpret_cast<T*>(base + o_prep);
  p.a.B = CtxBuf<T>{buf_bytes ? reinterpret_cast<T*>(base + o_buf) : nullptr, p.S, dm.D};
  p.a.part = part_bytes ? reinterpret_cast<double*>(base + o_part) : nullptr;
  p.a.vws = vws_bytes ? reinterpret_cast<T*>(base + o_vws) : nullptr;
  p.a.bad = reinterpret_cast<unsigned long long*>(base + o_bad);
  host::memset_async(p.a.bad, sizeof(unsigned long long), st);
  if (p.DC == 0 && part_bytes) host::memset_async(p.a.part, part_bytes, st);
  return p.a.bad;
}

}  // namespace

// The entry points unpack their parameter struct (tnattn/api.h) into the names the kernels use.
template <typename T>
int64_t contexts_forward(const ContextsParams<T>& P, const Launch& L) {
  const T* A = P.A;
  const XArg x = P.x;
  const T* boundary = P.boundary;
  const bool bpb = P.boundary_per_batch, reverse = P.reverse;
  T* out = P.out;
  const Dims dm = P.dims;
  host::DeviceGuard guard(L.device);
  const bool real = x.kind == cpu::kReal;
  CtxPlan<T> p = choose_ctx<T>(false, real, reverse, dm, A, false);
  if (chunked::use_chunked(dm)) {  // few, long sequences: chunked_scan.cuh
    chunked::Forward<T> f = chunked::from_plan<T>(dm, p, real, x);
    f.dir[0] = chunked::Dir<T>{0, boundary, bpb, reverse};
    f.out = out;
    return chunked::forward(f, L);
  }
  if (p.DC == 0) return large::contexts_forward<T>(P, L);
  unsigned long long* bad = allocate(p, dm, false, false, L);
  cudaStream_t st = host::stream_of(L);
  CtxArgs<T>& a = p.a;
  a.x = x.ptr;
  a.xkind = x.kind;
  a.xshared = x.shared;
  a.bnd = boundary;
  a.bpb = bpb;
  a.out = out;
  host::launch_prep<T>(p.segs, dm.E, dm.d, dm.D, 1, p.Dp, a.PS, const_cast<T*>(a.prep), st);
  host::dispatch<false>(p.DC, real, [&](auto dc, auto re) {
    auto kern = contexts_forward_kernel<T, decltype(dc)::value, decltype(re)::value>;
    host::allow_shared(kern, p.smem);
    host::launch(kern, static_cast<unsigned>(p.units), p.NT, p.smem, st, "contexts_forward_kernel", a);
  });
  return real ? 0 : host::read_counter(bad, st);
}

template <typename T>
int64_t contexts_backward(const ContextsParams<T>& P, const Launch& L) {
  const T* A = P.A;
  const XArg x = P.x;
  const T* boundary = P.boundary;
  const bool bpb = P.boundary_per_batch, reverse = P.reverse;
  const T* grad_out = P.grad_out;
  T *grad_A = P.grad_A, *grad_boundary = P.grad_boundary, *grad_x = P.grad_x;
  const Dims dm = P.dims;
  host::DeviceGuard guard(L.device);
  const bool real = x.kind == cpu::kReal;
  if (!real) grad_x = nullptr;
  CtxPlan<T> p = choose_ctx<T>(true, real, reverse, dm, A, grad_A != nullptr);
  if (p.DC == 0) return large::contexts_backward<T>(P, L);
  unsigned long long* bad = allocate(p, dm, true, grad_A != nullptr, L);
  cudaStream_t st = host::stream_of(L);
  CtxArgs<T>& a = p.a;
  a.x = x.ptr;
  a.xkind = x.kind;
  a.xshared = x.shared;
  a.bnd = boundary;
  a.bpb = bpb;
  a.gout = grad_out;
  a.gb = grad_boundary;
  a.gx = grad_x;
  host::launch_prep<T>(p.segs, dm.E, dm.d, dm.D, 1, p.Dp, a.PS, const_cast<T*>(a.prep), st);
  host::dispatch<false>(p.DC, real, [&](auto dc, auto re) {
    auto kern = contexts_backward_kernel<T, decltype(dc)::value, decltype(re)::value>;
    host::allow_shared(kern, p.smem);
    host::launch(kern, static_cast<unsigned>(p.units), p.NT, p.smem, st, "contexts_backward_kernel", a);
  });
  if (grad_A)
    host::launch_reduce<T>(a.part, p.DC > 0 ? p.nblk : 1, a.OUT, dm.E, dm.d, dm.D, 1, p.Dp, dev::GradMap{0, 0},
                           grad_A, st);
  return real ? 0 : host::read_counter(bad, st);
}

}  // namespace cuda
}  // namespace tnattn

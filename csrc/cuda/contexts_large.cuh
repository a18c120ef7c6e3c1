// Contexts (forward and backward) for a runtime bond dimension: the block-cooperative kernels of
// large_d.cuh. Same passes and scan-order conventions as contexts.cuh.
#pragma once

#include "large_d.cuh"

namespace tnattn {
namespace cuda {
namespace large {

template <typename T>
struct CtxArgs {
  int64_t N = 0, M = 0, bpg = 1;
  int d = 0, D = 0;
  bool reverse = false;
  const void* x = nullptr;
  int xkind = 0;
  bool xshared = false;
  const T* prep = nullptr;  // per group: [mat (d) | matT (d)], D x D each
  int64_t PS = 0, off_matT = 0;
  const T* bnd = nullptr;
  bool bpb = false;
  T* out = nullptr;
  const T* gout = nullptr;
  T* gb = nullptr;
  T* gx = nullptr;
  T* buf = nullptr;        // per block: M x (D + 1)
  double* part = nullptr;  // per block: d x D x D
  Layout lay{};
  unsigned long long* bad = nullptr;
};

TNATTN_DEV int64_t ctx_pos(bool reverse, int64_t M, int64_t k) { return reverse ? M - 1 - k : k; }

template <typename T, bool REAL>
__global__ void __launch_bounds__(kThreads) ctx_forward_kernel(const CtxArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const Shm<T> sh{reinterpret_cast<T*>(smem), a.lay};
  T* y = sh.vec(0);
  T* w = sh.vec(1);
  const int D = a.D;
  const int64_t M = a.M, e = blockIdx.x / a.bpg;
  const T* mat = a.prep + e * a.PS;
  for (int64_t n = blockIdx.x % a.bpg; n < a.N; n += a.bpg) {
    bool bad = false;
    const int64_t xrow = ((a.xshared ? 0 : e) * a.N + n) * M;
    T* orow = a.out + (e * a.N + n) * M * D;
    load_row(w, a.bnd + (e * (a.bpb ? a.N : 1) + (a.bpb ? n : 0)) * D, D);
    block_normalize(sh, w, y, D);
    store_row(orow + ctx_pos(a.reverse, M, 0) * D, y, D);
    for (int64_t k = 1; k < M; ++k) {
      const T* xs;
      const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + ctx_pos(a.reverse, M, k - 1), a.d, bad, xs);
      block_step<T, REAL>(sh, y, w, mat, sym, xs, a.d, D);
      store_row(orow + ctx_pos(a.reverse, M, k) * D, y, D);
    }
    if constexpr (!REAL) {
      symbol(a.x, a.xkind, xrow + ctx_pos(a.reverse, M, M - 1), a.d, bad);  // last site: read by no step
      count_bad(bad, a.bad);
    }
    __syncthreads();  // the next sequence rewrites the vectors
  }
}

template <typename T, bool REAL>
__global__ void __launch_bounds__(kThreads) ctx_backward_kernel(const CtxArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const Shm<T> sh{reinterpret_cast<T*>(smem), a.lay};
  T* y = sh.vec(0);
  T* yp = sh.vec(1);
  T* g = sh.vec(2);
  T* gw = sh.vec(3);
  T* w = sh.vec(4);
  const int D = a.D, d = a.d;
  const int64_t M = a.M, e = blockIdx.x / a.bpg;
  const bool rev = a.reverse;
  const T* mat = a.prep + e * a.PS;
  const T* matT = mat + a.off_matT;
  const SeqBuf<T> B{a.buf + int64_t(blockIdx.x) * M * (D + 1), D};
  double* part = a.part ? a.part + int64_t(blockIdx.x) * d * D * D : nullptr;
  for (int64_t n = blockIdx.x % a.bpg; n < a.N; n += a.bpg) {
    bool bad = false;
    const int64_t xrow = ((a.xshared ? 0 : e) * a.N + n) * M;
    const int64_t orow = (e * a.N + n) * M;
    // Pass 1: contexts and inverse norms in scan order, stored by site.
    load_row(w, a.bnd + (e * (a.bpb ? a.N : 1) + (a.bpb ? n : 0)) * D, D);
    T inv = block_normalize(sh, w, y, D);
    B.put(ctx_pos(rev, M, 0), y, inv);
    for (int64_t k = 1; k < M; ++k) {
      const T* xs;
      const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + ctx_pos(rev, M, k - 1), d, bad, xs);
      inv = block_step<T, REAL>(sh, y, w, mat, sym, xs, d, D);
      B.put(ctx_pos(rev, M, k), y, inv);
    }
    // Pass 2: the adjoint scan in reverse scan order; y holds the last context.
    T* gx_base = (REAL && a.gx) ? a.gx + orow * d : nullptr;
    if (gx_base)
      for (int q = threadIdx.x; q < d; q += blockDim.x) gx_base[ctx_pos(rev, M, M - 1) * d + q] = T(0);
    TNATTN_OWN(b, D) g[b] = T(0);
    for (int64_t k = M - 1; k >= 0; --k) {
      const T* go = a.gout + (orow + ctx_pos(rev, M, k)) * D;
      TNATTN_OWN(b, D) g[b] += go[b];
      if (k > 0) {
        const int64_t j = ctx_pos(rev, M, k - 1);
        const T* xs;
        const int sym = site_of<T, REAL>(a.x, a.xkind, xrow + j, d, bad, xs);
        const T invp = B.get(j, yp);
        // Left contexts step with A (gradient yp (x) gw); right contexts with A^T, whose gradient
        // read back as dA is gw (x) yp.
        block_adjoint<T, REAL>(sh, y, inv, g, yp, gw, matT, sym, xs, d, D, gx_base ? gx_base + j * d : nullptr,
                               false, part, rev);
        TNATTN_OWN(b, D) y[b] = yp[b];
        inv = invp;
      } else {
        block_normalize_adjoint(sh, y, inv, g, gw, D);
        if (a.gb) store_row(a.gb + (e * a.N + n) * D, gw, D);
      }
      __syncthreads();  // yp and y are rewritten next
    }
    if constexpr (!REAL) {
      symbol(a.x, a.xkind, xrow + ctx_pos(rev, M, M - 1), d, bad);
      count_bad(bad, a.bad);
    }
  }
}

// Plan and workspace of one call.
template <typename T>
struct CtxCall {
  CtxArgs<T> a{};
  dev::SegList segs{};
  int NT = 0;
  int64_t units = 0;
  std::size_t smem = 0;
  double* part = nullptr;
};

template <typename T>
CtxCall<T> ctx_call(bool backward, bool need_A, bool reverse, const Dims& dm, const T* A, const Launch& L) {
  CtxCall<T> c;
  CtxArgs<T>& a = c.a;
  const int D = dm.D, d = dm.d;
  const int64_t DD = int64_t(D) * D;
  a.N = dm.N;
  a.M = dm.M;
  a.d = d;
  a.D = D;
  a.reverse = reverse;
  const int64_t out_scalars = (backward && need_A) ? d * DD : 0;
  a.bpg = blocks_per_group(dm.E, dm.N, out_scalars);
  c.units = host::grid_units(dm.E, static_cast<int>(a.bpg));
  c.NT = threads_for(D);
  // mat: the step matrices in vecmat form (A, or A^T for right contexts); matT: their transposes.
  c.segs.n = backward ? 2 : 1;
  c.segs.seg[0] = dev::Seg{A, reverse ? dev::kTrans : dev::kPlain, d, static_cast<int>(DD), 0};
  if (backward) c.segs.seg[1] = dev::Seg{A, reverse ? dev::kPlain : dev::kTrans, d, static_cast<int>(DD), d * DD};
  a.PS = c.segs.n * d * DD;
  a.off_matT = d * DD;
  a.lay = make_layout(D, backward ? 5 : 2, d);
  c.smem = shared_bytes<T>(a.lay, D);
  host::Workspace ws;
  const std::size_t o_prep = ws.add(std::size_t(dm.E) * a.PS * sizeof(T));
  const std::size_t buf_bytes = backward ? std::size_t(c.units) * dm.M * (D + 1) * sizeof(T) : 0;
  const std::size_t o_buf = ws.add(buf_bytes);
  const std::size_t part_bytes = std::size_t(c.units) * out_scalars * sizeof(double);
  const std::size_t o_part = ws.add(part_bytes);
  const std::size_t o_bad = ws.add(sizeof(unsigned long long));
  unsigned char* base = ws.allocate(L);
  cudaStream_t st = host::stream_of(L);
  a.prep = reinterpret_cast<T*>(base + o_prep);
  a.buf = buf_bytes ? reinterpret_cast<T*>(base + o_buf) : nullptr;
  a.part = part_bytes ? reinterpret_cast<double*>(base + o_part) : nullptr;
  a.bad = reinterpret_cast<unsigned long long*>(base + o_bad);
  host::memset_async(a.bad, sizeof(unsigned long long), st);
  if (part_bytes) host::memset_async(a.part, part_bytes, st);
  host::launch_prep<T>(c.segs, dm.E, d, D, 1, D, a.PS, const_cast<T*>(a.prep), st);
  return c;
}

// Entry points, called by contexts.cuh's (inside its device guard).
template <typename T>
int64_t contexts_forward(const ContextsParams<T>& P, const Launch& L) {
  const Dims dm = P.dims;
  const bool real = P.x.kind == cpu::kReal;
  CtxCall<T> c = ctx_call<T>(false, false, P.reverse, dm, P.A, L);
  CtxArgs<T>& a = c.a;
  a.x = P.x.ptr;
  a.xkind = P.x.kind;
  a.xshared = P.x.shared;
  a.bnd = P.boundary;
  a.bpb = P.boundary_per_batch;
  a.out = P.out;
  cudaStream_t st = host::stream_of(L);
  auto go = [&](auto kern) {
    host::allow_shared(kern, c.smem);
    host::launch(kern, static_cast<unsigned>(c.units), c.NT, c.smem, st, "large::ctx_forward_kernel", a);
  };
  if (real)
    go(ctx_forward_kernel<T, true>);
  else
    go(ctx_forward_kernel<T, false>);
  return real ? 0 : host::read_counter(a.bad, st);
}

template <typename T>
int64_t contexts_backward(const ContextsParams<T>& P, const Launch& L) {
  const Dims dm = P.dims;
  const bool real = P.x.kind == cpu::kReal;
  CtxCall<T> c = ctx_call<T>(true, P.grad_A != nullptr, P.reverse, dm, P.A, L);
  CtxArgs<T>& a = c.a;
  a.x = P.x.ptr;
  a.xkind = P.x.kind;
  a.xshared = P.x.shared;
  a.bnd = P.boundary;
  a.bpb = P.boundary_per_batch;
  a.gout = P.grad_out;
  a.gb = P.grad_boundary;
  a.gx = real ? P.grad_x : nullptr;
  cudaStream_t st = host::stream_of(L);
  auto go = [&](auto kern) {
    host::allow_shared(kern, c.smem);
    host::launch(kern, static_cast<unsigned>(c.units), c.NT, c.smem, st, "large::ctx_backward_kernel", a);
  };
  if (real)
    go(ctx_backward_kernel<T, true>);
  else
    go(ctx_backward_kernel<T, false>);
  if (P.grad_A)
    host::launch_reduce<T>(a.part, a.bpg, static_cast<int>(dm.d * int64_t(dm.D) * dm.D), dm.E, dm.d, dm.D, 1, dm.D,
                           dev::GradMap{0, 0}, P.grad_A, st);
  return real ? 0 : host::read_counter(a.bad, st);
}

}  // namespace large
}  // namespace cuda
}  // namespace tnattn

// CUDA kernels of the fused Scenario A heads: tn_attention_mse_step (local maps, symbol head,
// squared-error loss, wrong-site count and every parameter gradient) and tn_attention_count_wrong.
//
// Launch sequence (all enqueued on the call's stream, for all E members at once; the host waits
// only once, at the end, to read the out-of-range-symbol counter, like the other entry points):
//   mse_step:     prep + tn_forward_kernel        local maps W into a workspace (E, N, M, d)
//                 site_head_kernel                per site the head of mse_head_one (CPU,
//                                                 csrc/cpu/tn_attention.inc): logit, residual,
//                                                 gradient gW into a workspace, and per-block fp64
//                                                 partial sums (r^2, wrong site, d loss / d scale)
//                 head_reduce_kernel              per member the block partials in a fixed order
//                 prep + tn_backward_kernel       the backward of tn_attention with grad_W = gW,
//                 + reduce_partials (A_L, A_R, C) its own deterministic partials (tn_attention.cuh)
//   count_wrong:  prep + tn_forward_kernel, site_head_kernel (count mode), head_reduce_kernel.
// The forward and backward kernels are those of tn_attention.cuh, reused as they are; the
// workspace holds W and gW, which the CPU path keeps per block in cache. (A single kernel that keeps
// them in registers, and an epoch per launch, are the next steps of issue 17; they need a device to
// measure against this sequence.)
//
// Determinism: every sum has a fixed order for a given shape. The head sums go thread-local
// (sites t, t + NT, ... of the block's range), then a shared-memory tree over the block's threads,
// then the blocks of a member in order; the parameter gradients use tn_backward_kernel's per-block
// partials and reduce_partials (for D > 32 those of large_d.cuh, also in a fixed order).
#pragma once

#include <cfloat>
#include <cmath>

#include "tn_attention.cuh"

namespace tnattn {
namespace cuda {

namespace {

// Math in T (float: the f-suffixed functions, so that nothing is promoted to double).
TNATTN_DEV float h_exp(float x) { return expf(x); }
TNATTN_DEV double h_exp(double x) { return exp(x); }
TNATTN_DEV float h_fabs(float x) { return fabsf(x); }
TNATTN_DEV double h_fabs(double x) { return fabs(x); }
TNATTN_DEV int h_ilogb(float x) { return ilogbf(x); }
TNATTN_DEV int h_ilogb(double x) { return ilogb(x); }
TNATTN_DEV float h_ldexp(float x, int e) { return ldexpf(x, e); }
TNATTN_DEV double h_ldexp(double x, int e) { return ldexp(x, e); }
// std::numeric_limits<T>::min()/max() (not constexpr-callable from device code without
// --expt-relaxed-constexpr).
TNATTN_DEV float h_min(float) { return FLT_MIN; }
TNATTN_DEV double h_min(double) { return DBL_MIN; }
TNATTN_DEV float h_max(float) { return FLT_MAX; }
TNATTN_DEV double h_max(double) { return DBL_MAX; }

// Threads of the head kernels (a power of two: tree reduction) and sites per thread and block.
constexpr int kHeadThreads = 128;
constexpr int kHeadSitesPerThread = 8;
constexpr int64_t kHeadSites = int64_t(kHeadThreads) * kHeadSitesPerThread;

template <typename T>
struct HeadArgs {
  int64_t E = 0, N = 0, M = 0, NM = 0;
  int d = 0;
  int64_t nbh = 0;  // head blocks per member
  const void* x = nullptr;
  int xkind = 0;
  bool xshared = false;
  const uint8_t* y = nullptr;
  bool yshared = false;
  const T* W = nullptr;  // (E, N, M, d)
  // mse mode (count = false)
  T* gW = nullptr;  // (E, N, M, d)
  const T* scale = nullptr;
  bool normalize_map = true, sigmoid = true;
  T two_over_n = T(0);
  // count mode
  bool count = false;
  const T* sign = nullptr;
  double* part = nullptr;  // (E * nbh, 3)
};

// mse_head_one (csrc/cpu/tn_attention.inc) with the same operations in the same order (nvcc may
// contract multiply-adds into FMAs, the emulation does not); g (global memory, not aliasing w)
// receives the gradient of the mean loss towards the K map entries.
template <typename T>
TNATTN_DEV void mse_head_site(const HeadArgs<T>& a, int K, const T* w, int s, T target, T scale, T* g,
                              double* sums) {
  T inv = T(1), fac = T(1), post = T(1);
  if (a.normalize_map) {
    T sq = w[0] * w[0];
    for (int k = 1; k < K; ++k) sq += w[k] * w[k];
    if (!(sq >= h_min(T(0)) && sq <= h_max(T(0))) && sq == sq) {
      // |W| under- or overflows: work with W / 2^ex (exact), scale the gradient back (as the CPU).
      T m = T(0);
      for (int k = 0; k < K; ++k) m = h_fabs(w[k]) > m ? h_fabs(w[k]) : m;
      if (m > T(0) && m <= h_max(T(0))) {
        const int ex = h_ilogb(m);
        T* ws = g;  // g is written below, after its last read of ws
        for (int k = 0; k < K; ++k) ws[k] = h_ldexp(w[k], -ex);
        w = ws;
        post = h_ldexp(T(1), -ex);
        sq = w[0] * w[0];
        for (int k = 1; k < K; ++k) sq += w[k] * w[k];
      }
    }
    const T nrm = tn_sqrt(sq);
    inv = nrm == T(0) ? T(0) : T(1) / nrm;
    fac = a.scale ? inv * scale : inv;
  }
  const T sel = w[s];
  const T z = sel * fac;
  T r, gz;
  if (a.sigmoid) {
    const T sg = T(1) / (T(1) + h_exp(-z));
    r = sg - target;
    gz = ((r * a.two_over_n) * (T(1) - sg)) * sg;
  } else {
    r = z - (T(2) * target - T(1));
    gz = r * a.two_over_n;
  }
  sums[0] += static_cast<double>(r) * static_cast<double>(r);
  sums[1] += ((z > T(0)) != (target != T(0))) ? 1.0 : 0.0;
  if (a.normalize_map) {
    const T t = gz * sel;
    const T uu = t * inv;
    sums[2] += static_cast<double>(uu);
    const T neg_q = -((uu * fac) * inv);
    for (int k = 0; k < K; ++k) g[k] = w[k] * neg_q;
    g[s] += gz * fac;
    if (post != T(1))
      for (int k = 0; k < K; ++k) g[k] *= post;
  } else {
    for (int k = 0; k < K; ++k) g[k] = T(0);
    g[s] = gz;
  }
}

// One block: kHeadSites consecutive sites of one member; writes the block's three sums to part.
template <typename T>
__global__ void __launch_bounds__(kHeadThreads) site_head_kernel(const HeadArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  double* red = reinterpret_cast<double*>(smem);  // (3, kHeadThreads)
  const int64_t e = blockIdx.x / a.nbh, b = blockIdx.x % a.nbh;
  const int t = threadIdx.x;
  const int K = a.d;
  const T scale = a.scale ? a.scale[e] : T(1);
  const T sg = a.sign ? a.sign[e] : T(1);
  const uint8_t* y = a.y + (a.yshared ? 0 : e * a.NM);
  const int64_t xbase = (a.xshared ? 0 : e) * a.NM;
  double sums[3] = {0.0, 0.0, 0.0};
  const int64_t j1 = (b + 1) * kHeadSites < a.NM ? (b + 1) * kHeadSites : a.NM;
  for (int64_t j = b * kHeadSites + t; j < j1; j += kHeadThreads) {
    bool bad = false;  // counted by the scan kernels; an out-of-range symbol reads as 0 here
    const int s = symbol(a.x, a.xkind, xbase + j, a.d, bad);
    const T* w = a.W + (e * a.NM + j) * K;
    const uint8_t label = y[j];
    if (a.count) {
      const bool positive = sg * w[s] > T(0);
      sums[1] += (label > 1 || positive != (label == 1)) ? 1.0 : 0.0;
    } else {
      mse_head_site(a, K, w, s, static_cast<T>(label != 0), scale, a.gW + (e * a.NM + j) * K, sums);
    }
  }
  for (int q = 0; q < 3; ++q) red[q * kHeadThreads + t] = sums[q];
  __syncthreads();
  for (int h = kHeadThreads / 2; h > 0; h /= 2) {
    if (t < h)
      for (int q = 0; q < 3; ++q) red[q * kHeadThreads + t] += red[q * kHeadThreads + t + h];
    __syncthreads();
  }
  if (t == 0)
    for (int q = 0; q < 3; ++q) a.part[(e * a.nbh + b) * 3 + q] = red[q * kHeadThreads];
}

// Per member: the sums of its head blocks, in block order. Any output may be null.
template <typename T>
__global__ void __launch_bounds__(kHeadThreads) head_reduce_kernel(const double* part, int64_t E, int64_t nbh,
                                                                   double* loss, double* wrong, T* grad_scale) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= E) return;
  double s[3] = {0.0, 0.0, 0.0};
  for (int64_t b = 0; b < nbh; ++b)
    for (int q = 0; q < 3; ++q) s[q] += part[(e * nbh + b) * 3 + q];
  if (loss) loss[e] = s[0];
  if (wrong) wrong[e] = s[1];
  if (grad_scale) grad_scale[e] = static_cast<T>(s[2]);
}

// The forward of tn_attention_forward (tn_attention.cuh) into W, without waiting for the stream;
// returns the device counter of bad sequences.
template <typename T>
unsigned long long* enqueue_forward(const TnInputs<T>& in, T* W, const Launch& L) {
  const Dims dm = in.dims;
  TnPlan<T> p = choose_tn<T>(false, false, dm, in.A_left, in.A_right, in.C, false, false, false, false);
  if (p.DC == 0) return large::enqueue_forward<T>(in, W, L);  // runtime D: tn_attention_large.cuh
  TnSpace<T> sp = allocate(p, dm, false, L);
  cudaStream_t st = host::stream_of(L);
  TnArgs<T>& a = p.a;
  a.x = in.x.ptr;
  a.xkind = in.x.kind;
  a.xshared = in.x.shared;
  a.u = in.u;
  a.v = in.v;
  a.upb = in.u_per_batch;
  a.vpb = in.v_per_batch;
  a.W = W;
  host::launch_prep<T>(p.segs, dm.E, dm.d, dm.D, dm.c, p.Dp, a.PS, sp.prep, st);
  host::dispatch<false>(p.DC, false, [&](auto dc, auto re) {
    auto kern = tn_forward_kernel<T, decltype(dc)::value, decltype(re)::value>;
    host::allow_shared(kern, p.smem);
    host::launch(kern, static_cast<unsigned>(p.units), p.NT, p.smem, st, "tn_forward_kernel", a);
  });
  return sp.bad;
}

// The backward of tn_attention_backward (tn_attention.cuh) for integer symbols, without waiting
// for the stream; returns the device counter of bad sequences.
template <typename T>
unsigned long long* enqueue_backward(const TnInputs<T>& in, const T* gW, const TnParamGrads<T>& g,
                                     const Launch& L) {
  const Dims dm = in.dims;
  const bool need_right = g.A_right || g.v;
  TnPlan<T> p = choose_tn<T>(true, false, dm, in.A_left, in.A_right, in.C, g.A_left != nullptr,
                             g.A_right != nullptr, g.C != nullptr, need_right);
  if (p.DC == 0) return large::enqueue_backward<T>(in, gW, g, nullptr, L);
  const bool need_part = g.A_left || g.A_right || g.C;
  TnSpace<T> sp = allocate(p, dm, need_part, L);
  cudaStream_t st = host::stream_of(L);
  TnArgs<T>& a = p.a;
  a.x = in.x.ptr;
  a.xkind = in.x.kind;
  a.xshared = in.x.shared;
  a.u = in.u;
  a.v = in.v;
  a.upb = in.u_per_batch;
  a.vpb = in.v_per_batch;
  a.gW = gW;
  a.gu = g.u;
  a.gv = g.v;
  a.gx = nullptr;
  host::launch_prep<T>(p.segs, dm.E, dm.d, dm.D, dm.c, p.Dp, a.PS, sp.prep, st);
  host::dispatch<false>(p.DC, false, [&](auto dc, auto re) {
    auto kern = tn_backward_kernel<T, decltype(dc)::value, decltype(re)::value>;
    host::allow_shared(kern, p.smem);
    host::launch(kern, static_cast<unsigned>(p.units), p.NT, p.smem, st, "tn_backward_kernel", a);
  });
  if (need_part) {
    const int64_t nblk = p.DC > 0 ? p.nblk : 1;
    const int Dp = p.Dp, K = dm.d * dm.c;
    if (g.C) host::launch_reduce<T>(sp.part, nblk, a.OUT, dm.E, dm.d, dm.D, dm.c, Dp, dev::GradMap{1, 0}, g.C, st);
    if (g.A_left)
      host::launch_reduce<T>(sp.part, nblk, a.OUT, dm.E, dm.d, dm.D, dm.c, Dp, dev::GradMap{0, K * Dp * Dp},
                             g.A_left, st);
    if (g.A_right)
      host::launch_reduce<T>(sp.part, nblk, a.OUT, dm.E, dm.d, dm.D, dm.c, Dp,
                             dev::GradMap{0, (K + dm.d) * Dp * Dp}, g.A_right, st);
  }
  return sp.bad;
}

// Workspace of the head: the maps W, their gradient gW (mse mode) and the block partials.
template <typename T>
struct HeadSpace {
  T* W = nullptr;
  T* gW = nullptr;
  double* part = nullptr;
};

template <typename T>
HeadSpace<T> allocate_head(HeadArgs<T>& h, const Dims& dm, bool with_grad, const Launch& L) {
  h.E = dm.E;
  h.N = dm.N;
  h.M = dm.M;
  h.NM = dm.N * dm.M;
  h.d = dm.d;
  h.nbh = (h.NM + kHeadSites - 1) / kHeadSites;
  if (h.nbh > 0x7fffffffLL / dm.E)
    throw std::invalid_argument("tnattn: E * ceil(N * M / 1024) exceeds the CUDA grid limit");
  const std::size_t maps = std::size_t(dm.E) * dm.N * dm.M * dm.d * sizeof(T);
  host::Workspace ws;
  const std::size_t o_W = ws.add(maps);
  const std::size_t o_gW = ws.add(with_grad ? maps : 0);
  const std::size_t o_part = ws.add(std::size_t(dm.E) * h.nbh * 3 * sizeof(double));
  unsigned char* base = ws.allocate(L);
  HeadSpace<T> sp;
  sp.W = reinterpret_cast<T*>(base + o_W);
  sp.gW = with_grad ? reinterpret_cast<T*>(base + o_gW) : nullptr;
  sp.part = reinterpret_cast<double*>(base + o_part);
  h.W = sp.W;
  h.gW = sp.gW;
  h.part = sp.part;
  return sp;
}

template <typename T>
void launch_head(const HeadArgs<T>& h, double* loss, double* wrong, T* grad_scale, cudaStream_t st) {
  const std::size_t smem = 3 * kHeadThreads * sizeof(double);
  host::launch(site_head_kernel<T>, static_cast<unsigned>(h.E * h.nbh), kHeadThreads, smem, st, "site_head_kernel",
               h);
  const unsigned g = static_cast<unsigned>((h.E + kHeadThreads - 1) / kHeadThreads);
  host::launch(head_reduce_kernel<T>, g, kHeadThreads, 0, st, "head_reduce_kernel",
               static_cast<const double*>(h.part), h.E, h.nbh, loss, wrong, grad_scale);
}

inline void check_symbols_c1(const XArg& x, const Dims& dm, const char* op) {
  if (x.kind == cpu::kReal) throw std::invalid_argument(std::string("tnattn: ") + op + " needs integer symbols");
  if (dm.c != 1) throw std::invalid_argument(std::string("tnattn: ") + op + " needs c = 1");
}

}  // namespace

template <typename T>
int64_t tn_attention_mse_step(const MseStepParams<T>& P, const Launch& L) {
  const Dims dm = P.in.dims;
  check_symbols_c1(P.in.x, dm, "tn_attention_mse_step");
  host::DeviceGuard guard(L.device);
  cudaStream_t st = host::stream_of(L);
  HeadArgs<T> h;
  HeadSpace<T> hs = allocate_head(h, dm, true, L);
  h.x = P.in.x.ptr;
  h.xkind = P.in.x.kind;
  h.xshared = P.in.x.shared;
  h.y = P.head.y;
  h.yshared = P.head.y_shared;
  h.scale = P.head.normalize_map ? P.head.scale : nullptr;
  h.normalize_map = P.head.normalize_map;
  h.sigmoid = P.head.sigmoid;
  h.two_over_n = static_cast<T>(2.0 / static_cast<double>(dm.N * dm.M));  // as mean_grad_factor (CPU)
  enqueue_forward<T>(P.in, hs.W, L);
  launch_head<T>(h, P.loss, P.wrong, P.grad_scale, st);
  unsigned long long* bad = enqueue_backward<T>(P.in, hs.gW, P.grad, L);
  return host::read_counter(bad, st);
}

template <typename T>
int64_t tn_attention_count_wrong(const CountWrongParams<T>& P, const Launch& L) {
  const Dims dm = P.in.dims;
  check_symbols_c1(P.in.x, dm, "tn_attention_count_wrong");
  host::DeviceGuard guard(L.device);
  cudaStream_t st = host::stream_of(L);
  HeadArgs<T> h;
  HeadSpace<T> hs = allocate_head(h, dm, false, L);
  h.x = P.in.x.ptr;
  h.xkind = P.in.x.kind;
  h.xshared = P.in.x.shared;
  h.y = P.y;
  h.yshared = P.y_shared;
  h.count = true;
  h.sign = P.sign;
  unsigned long long* bad = enqueue_forward<T>(P.in, hs.W, L);
  launch_head<T>(h, nullptr, P.wrong, static_cast<T*>(nullptr), st);
  return host::read_counter(bad, st);
}

}  // namespace cuda
}  // namespace tnattn

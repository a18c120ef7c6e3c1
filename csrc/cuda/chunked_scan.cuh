// CUDA kernels: the chunked (parallel-in-time) forward scan for few, long sequences.
//
// The sequential kernels (contexts.cuh, tn_attention.cuh) run one thread per sequence; with few
// sequences (N = 1, M = 10^7) almost all of the GPU idles. This path splits each sequence into
// chunks of Lc sites and scans them in parallel, exactly (only rounding differs):
//
//   phase 1  per chunk c (all but the last), the transfer product P_c = mat(x_k0) ... mat(x_k1) of
//            the chunk's symbol matrices (vecmat order), one thread per (sequence, chunk, row r):
//            row r of P_c is the chain e_r^T mat(x_k0) ... , the same D x D mat-vecs as the scan.
//            After every step the row is rescaled by a power of two (exact) and the exponent kept,
//            so that no product over- or underflows; per-row exponents are fine because only the
//            direction of the contexts matters (every context is normalised).
//   phase 2  one thread per sequence walks the chunks: state_0 = normalize(boundary) (as the
//            sequential kernel), state_{c+1} = normalize(state_c^T P_c), combining the rows of P_c
//            with their exponents relative to the largest one in play. The exact-zero rule holds:
//            a zero state (or a product that annihilates it) stays exactly zero.
//   phase 3  one thread per (sequence, chunk): from the chunk's true boundary state, the chunk's
//            sites are scanned and normalised per site exactly as the sequential kernel does
//            (scan_step of device.cuh); then contexts are written, or the local maps computed.
//
// Cost per sequence of M sites: the sequential scan does M steps (one D x D mat-vec each); this path
// does ~M (phase 3) + ~D*M (phase 1: D rows per chunk) + M/Lc (phase 2) steps, but the chains that
// must run one after another are only ~Lc + M/Lc + Lc long (Lc ~ sqrt(M) by default) instead of
// M. Extra memory: the chunk products (E*N*M/Lc*D*D scalars) and states; tn_attention also keeps its
// right contexts (E*N*M*D scalars). The reduction order depends only on the shape (and Lc), so the
// results are deterministic. The backward passes keep the sequential kernels.
//
// Choice (host side, at every call): TNATTN_CUDA_SCAN = auto (default) | sequential | chunked, and
// TNATTN_CUDA_SCAN_CHUNK = Lc (optional; a positive integer, for tests and tuning).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <utility>

#include "runtime.cuh"

namespace tnattn {
namespace cuda {
namespace chunked {

using namespace dev;

namespace {

TNATTN_DEV float tn_frexp(float x, int* e) { return frexpf(x, e); }
TNATTN_DEV double tn_frexp(double x, int* e) { return frexp(x, e); }
TNATTN_DEV float tn_ldexp(float x, int e) { return ldexpf(x, e); }
TNATTN_DEV double tn_ldexp(double x, int e) { return ldexp(x, e); }

// One direction of a forward scan, with everything the three phases read.
template <typename T>
struct ScanArgs {
  int64_t N = 0, M = 0, Lc = 0, nch = 0;  // sites per chunk, chunks per sequence
  int d = 0, D = 0, Dp = 0, msa = 0;
  bool reverse = false;
  const void* x = nullptr;
  int xkind = 0;
  bool xshared = false;
  const T* prep = nullptr;  // staged parameters (launch_prep), PS scalars per group
  int64_t PS = 0, off_mat = 0;
  const T* bnd = nullptr;
  bool bpb = false;
  T* prod = nullptr;      // (E*N*nch, Dp, Dp) chunk products (last chunk of a sequence unused)
  int* pexp = nullptr;    // (E*N*nch, Dp) their row exponents
  T* state = nullptr;     // (E*N*nch, Dp) normalised state at each chunk's first site
  T* out = nullptr;       // contexts (E, N, M, D), or null
  const T* R = nullptr;   // local-map mode: right contexts (E, N, M, D) ...
  T* W = nullptr;         // ... and the local maps written (E, N, M, K)
  int64_t off_Ct = 0;
  int K = 0;
  unsigned* flags = nullptr;  // per sequence: 1 when it holds an out-of-range symbol
  T* vws = nullptr;           // DC == 0: per-thread vectors
  int64_t vws_stride = 0;
  int nblk = 0;  // blocks per group of the kernel being launched
  int64_t count = 0;  // work items per group of that kernel
};

// Work item of this thread within its group's `count` items (clamped copy when past the end: the
// block keeps its barrier, the thread writes nothing).
struct Item {
  int64_t e, idx, slot;
  bool active;
};

TNATTN_DEV Item item_index(int64_t count, int nblk) {
  Item it;
  const int64_t unit = blockIdx.x;
  it.e = unit / nblk;
  const int64_t i = (unit % nblk) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  it.active = i < count;
  it.idx = it.active ? i : count - 1;
  it.slot = unit * blockDim.x + threadIdx.x;
  return it;
}

template <typename T, int DC>
TNATTN_DEV const T* params(const ScanArgs<T>& a, int64_t e, unsigned char* smem) {
  if constexpr (DC > 0) {
    T* sp = reinterpret_cast<T*>(smem);
    load_params(a.prep, a.PS, e, sp);
    __syncthreads();
    return sp;
  } else {
    (void)smem;
    return a.prep + e * a.PS;
  }
}

template <typename T, int DC>
TNATTN_DEV T* vectors(const ScanArgs<T>& a, const Item& it, T* regs) {
  if constexpr (DC > 0) {
    (void)a;
    (void)it;
    return regs;
  } else {
    (void)regs;
    return a.vws + it.slot * a.vws_stride;
  }
}

TNATTN_DEV int64_t site_of(bool reverse, int64_t M, int64_t k) { return reverse ? M - 1 - k : k; }

// out = v^T mat(site k of the sequence at x row xrow), unnormalised.
template <typename T, int DC, bool REAL>
TNATTN_DEV void step_raw(const ScanArgs<T>& a, const T* mats, int64_t xrow, int64_t j, const T* v, T* out,
                         bool& bad) {
  if constexpr (REAL) {
    vecmat_embed<DC>(v, mats, static_cast<const T*>(a.x) + (xrow + j) * a.d, a.d, out, a.Dp);
    (void)bad;
  } else {
    const int s = symbol(a.x, a.xkind, xrow + j, a.d, bad);
    vecmat<DC>(v, mats + s * a.msa, out, a.Dp);
  }
}

// Phase 1: row r of the product of chunk c, rescaled by powers of two after every step.
template <typename T, int DC, bool REAL>
__global__ void __launch_bounds__(kMaxThreads) chunk_products_kernel(const ScanArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const Item it = item_index(a.count, a.nblk);
  const T* mats = params<T, DC>(a, it.e, smem) + a.off_mat;
  const int Dp = DC > 0 ? DC : a.Dp;
  T regs[DC > 0 ? 2 * DC : 1];
  T* v = vectors<T, DC>(a, it, regs);
  T* tmp = v + Dp;
  const int r = static_cast<int>(it.idx % Dp);
  const int64_t rest = it.idx / Dp, c = rest % (a.nch - 1), n = rest / (a.nch - 1);
  const int64_t xrow = ((a.xshared ? 0 : it.e) * a.N + n) * a.M;
#pragma unroll
  for (int b = 0; b < dim<DC>(Dp); ++b) v[b] = (b == r && r < a.D) ? T(1) : T(0);
  int ex = 0;
  bool bad = false;
  const int64_t k1 = (c + 1) * a.Lc;  // the last chunk has no product: k1 <= M here
  for (int64_t k = c * a.Lc; k < k1; ++k) {
    step_raw<T, DC, REAL>(a, mats, xrow, site_of(a.reverse, a.M, k), v, tmp, bad);
    T m = T(0);
#pragma unroll
    for (int b = 0; b < dim<DC>(Dp); ++b) {
      v[b] = tmp[b];
      const T av = tmp[b] < T(0) ? -tmp[b] : tmp[b];
      m = av > m ? av : m;
    }
    if (m > T(0)) {
      int e = 0;
      tn_frexp(m, &e);  // m = f * 2^e, f in [0.5, 1): scale the row's largest entry into [0.5, 1)
#pragma unroll
      for (int b = 0; b < dim<DC>(Dp); ++b) v[b] = tn_ldexp(v[b], -e);
      ex += e;
    }
  }
  if (!it.active) return;
  const int64_t q = (it.e * a.N + n) * a.nch + c;
  T* row = a.prod + (q * Dp + r) * Dp;
#pragma unroll
  for (int b = 0; b < dim<DC>(Dp); ++b) row[b] = v[b];
  a.pexp[q * Dp + r] = ex;
}

// Phase 2: the chunks' boundary states, one thread per sequence.
template <typename T, int DC>
__global__ void __launch_bounds__(kMaxThreads) chunk_states_kernel(const ScanArgs<T> a) {
  const Item it = item_index(a.count, a.nblk);
  if (!it.active) return;  // no barrier in this kernel
  const int Dp = DC > 0 ? DC : a.Dp;
  T regs[DC > 0 ? 2 * DC : 1];
  T* y = vectors<T, DC>(a, it, regs);
  T* w = y + Dp;
  const int64_t n = it.idx;
  const int64_t q0 = (it.e * a.N + n) * a.nch;
  vload<DC>(y, a.bnd + (it.e * (a.bpb ? a.N : 1) + (a.bpb ? n : 0)) * a.D, a.D, Dp);
  normalize_inplace<DC>(y, Dp);
  vcopy<DC>(a.state + q0 * Dp, y, Dp);
  for (int64_t c = 0; c + 1 < a.nch; ++c) {
    const T* P = a.prod + (q0 + c) * Dp * Dp;
    const int* ex = a.pexp + (q0 + c) * Dp;
    // w = y^T P with the rows of P at their true relative scale 2^(ex[r] - emax), emax the largest
    // exponent among the rows that y weights (rows with y[r] = 0 do not matter).
    bool any = false;
    int emax = 0;
#pragma unroll
    for (int r = 0; r < dim<DC>(Dp); ++r)
      if (y[r] != T(0)) {
        emax = any ? (ex[r] > emax ? ex[r] : emax) : ex[r];
        any = true;
      }
    vzero<DC>(w, Dp);
#pragma unroll
    for (int r = 0; r < dim<DC>(Dp); ++r)
      if (y[r] != T(0)) axpy<DC>(tn_ldexp(y[r], ex[r] - emax), P + r * Dp, w, Dp);
    vcopy<DC>(y, w, Dp);
    normalize_inplace<DC>(y, Dp);
    vcopy<DC>(a.state + (q0 + c + 1) * Dp, y, Dp);
  }
}

// Phase 3: one thread per (sequence, chunk) scans the chunk's sites from its boundary state; writes
// the contexts (out) or, in local-map mode, the local maps with the right contexts read from R.
template <typename T, int DC, bool REAL>
__global__ void __launch_bounds__(kMaxThreads) chunk_scan_kernel(const ScanArgs<T> a) {
  TNATTN_DYNAMIC_SHARED(smem);
  const Item it = item_index(a.count, a.nblk);
  const T* P = params<T, DC>(a, it.e, smem);
  const T* mats = P + a.off_mat;
  const T* Ct = P + a.off_Ct;
  const int Dp = DC > 0 ? DC : a.Dp;
  T regs[DC > 0 ? 3 * DC : 1];
  T* y = vectors<T, DC>(a, it, regs);
  T* tmp = y + Dp;
  T* R = y + 2 * Dp;
  const int64_t c = it.idx % a.nch, n = it.idx / a.nch;
  const int64_t seq = it.e * a.N + n;
  const int64_t xrow = ((a.xshared ? 0 : it.e) * a.N + n) * a.M;
  const int64_t k0 = c * a.Lc, k1 = k0 + a.Lc < a.M ? k0 + a.Lc : a.M;
  bool bad = false;
  vcopy<DC>(y, a.state + (seq * a.nch + c) * Dp, Dp);
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t i = site_of(a.reverse, a.M, k);
    if (k > k0) {
      const int64_t j = site_of(a.reverse, a.M, k - 1);
      if constexpr (REAL) {
        scan_step<DC, REAL>(y, mats, a.msa, 0, static_cast<const T*>(a.x) + (xrow + j) * a.d, a.d, tmp, Dp);
      } else {
        const int s = symbol(a.x, a.xkind, xrow + j, a.d, bad);
        scan_step<DC, REAL>(y, mats, a.msa, s, static_cast<const T*>(nullptr), a.d, tmp, Dp);
      }
    }
    if (!it.active) continue;
    if (a.W) {
      vload<DC>(R, a.R + (seq * a.M + i) * a.D, a.D, Dp);
      local_map<DC>(static_cast<const T*>(y), static_cast<const T*>(R), Ct, a.K, a.W + (seq * a.M + i) * a.K, tmp,
                    Dp);
    } else {
      vstore<DC>(a.out + (seq * a.M + i) * a.D, y, a.D, Dp);
    }
  }
  if constexpr (!REAL) {
    // The chunk's last site is read by the next chunk's scan (or by none): check it here so that
    // every site of the sequence is checked by exactly one chunk's thread.
    symbol(a.x, a.xkind, xrow + site_of(a.reverse, a.M, k1 - 1), a.d, bad);
    if (bad && it.active) a.flags[seq] = 1u;  // every writer stores the same value
  }
}

// The number of sequences flagged (one thread per sequence).
__global__ void __launch_bounds__(kMaxThreads) count_flags_kernel(const unsigned* flags, int64_t S,
                                                                   unsigned long long* bad) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < S && flags[i]) atomicAdd(bad, 1ULL);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Host side: the choice between the sequential and the chunked kernels, and the launches

enum class Mode { kAuto, kSequential, kChunked };

// TNATTN_CUDA_SCAN, read at every call so that tests can force either path.
inline Mode scan_mode() {
  const char* env = std::getenv("TNATTN_CUDA_SCAN");
  if (!env || !*env) return Mode::kAuto;
  const std::string s(env);
  if (s == "auto") return Mode::kAuto;
  if (s == "sequential") return Mode::kSequential;
  if (s == "chunked") return Mode::kChunked;
  throw std::invalid_argument("tnattn: TNATTN_CUDA_SCAN must be auto, sequential or chunked, got '" + s + "'");
}

// The heuristic of Mode::kAuto. The sequential kernels keep one thread per sequence busy for M
// steps, so they leave the GPU idle when E*N is small next to its ~10^5 resident threads, and
// that matters only when M is long enough for the chunking's extra launches and D-fold phase-1 work
// to pay. Both constants are placeholders until a device measurement (scripts/gpu-check.sh, the
// N = 1, M = 10^7 timing line and the sequential benchmarks) fixes the crossover.
constexpr int64_t kFewSequences = 8192;  // E*N below this: the sequential kernel underfills the GPU
constexpr int64_t kLongSequence = 2048;  // M from this: chunking pays for its overheads

inline bool use_chunked(const Dims& dm) {
  const Mode m = scan_mode();
  if (m != Mode::kAuto) return m == Mode::kChunked;
  return dm.E * dm.N < kFewSequences && dm.M >= kLongSequence;
}

// Chunk length: ~sqrt(M) balances the phase-3 chains (Lc sites) against the phase-2 chain (M/Lc
// chunks); never so short that the chains outnumber what the GPU holds at once (~2^18 threads:
// more chunks would only add phase-1 work), and at least 16 sites. TNATTN_CUDA_SCAN_CHUNK overrides.
inline int64_t chunk_length(const Dims& dm) {
  if (const char* env = std::getenv("TNATTN_CUDA_SCAN_CHUNK")) {
    if (*env) {
      char* end = nullptr;
      const long long v = std::strtoll(env, &end, 10);
      if (*end != '\0' || v <= 0)
        throw std::invalid_argument(std::string("tnattn: TNATTN_CUDA_SCAN_CHUNK must be a positive integer, got '") +
                                    env + "'");
      return v;
    }
  }
  const int64_t S = dm.E * dm.N;
  int64_t Lc = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(dm.M))));
  Lc = std::max<int64_t>(Lc, (S * dm.M + (int64_t(1) << 18) - 1) >> 18);
  return std::max<int64_t>(Lc, 16);
}

// What an op hands over: its staged-parameter layout (the sequential plan's, so the same prep
// kernel fills it) and up to two directions; the last one may compute local maps from the first
// one's contexts (tn_attention: right contexts first, then left contexts and W).
template <typename T>
struct Dir {
  int64_t off_mat = 0;
  const T* bnd = nullptr;
  bool bpb = false, reverse = false;
};

template <typename T>
struct Forward {
  Dims dm{};
  int DC = 0, Dp = 0, msa = 0, c = 1;
  bool real = false;
  XArg x{};
  dev::SegList segs{};
  int64_t PS = 0, PS_pad = 0;
  Dir<T> dir[2];
  int ndir = 1;
  T* out = nullptr;     // contexts op: the output (E, N, M, D)
  T* W = nullptr;       // tn_attention: the local maps (E, N, M, K); dir[0] fills a right-context buffer
  int64_t off_Ct = 0;
  int K = 0;
};

// The fields common to both ops, from a sequential forward plan (CtxPlan or TnPlan).
template <typename T, class Plan>
Forward<T> from_plan(const Dims& dm, const Plan& p, bool real, XArg x) {
  Forward<T> f;
  f.dm = dm;
  f.DC = p.DC;
  f.Dp = p.Dp;
  f.msa = p.a.msa;
  f.real = real;
  f.x = x;
  f.segs = p.segs;
  f.PS = p.a.PS;
  f.PS_pad = p.a.PS_pad;
  return f;
}

template <typename T>
int64_t forward(const Forward<T>& f, const Launch& L) {
  const Dims& dm = f.dm;
  const int Dp = f.Dp, DC = f.DC;
  const int64_t S = dm.E * dm.N;
  const int64_t Lc = std::min<int64_t>(chunk_length(dm), std::max<int64_t>(dm.M, 1));
  const int64_t nch = (dm.M + Lc - 1) / Lc;
  const std::size_t ts = sizeof(T);
  if (S == 0 || dm.M == 0) return 0;
  // Work items per group of the three kernels, and their block sizes (at most kMaxThreads; fewer
  // for small counts).
  const int64_t items[3] = {dm.N * (nch - 1) * Dp, dm.N, dm.N * nch};
  auto threads = [](int64_t count) {
    return static_cast<int>(std::min<int64_t>(dev::kMaxThreads, std::max<int64_t>(32, (count + 31) / 32 * 32)));
  };
  int64_t max_threads = 0;
  for (int64_t c : items) {
    const int nt = threads(c);
    max_threads = std::max<int64_t>(max_threads, dm.E * ((c + nt - 1) / nt) * nt);
  }
  host::Workspace ws;
  const std::size_t o_prep = ws.add(std::size_t(dm.E) * f.PS * ts);
  const std::size_t o_prod = ws.add(std::size_t(S) * nch * Dp * Dp * ts);
  const std::size_t o_exp = ws.add(std::size_t(S) * nch * Dp * sizeof(int));
  const std::size_t o_state = ws.add(std::size_t(S) * nch * Dp * ts);
  const std::size_t rbuf_bytes = f.W ? std::size_t(S) * dm.M * dm.D * ts : 0;
  const std::size_t o_rbuf = ws.add(rbuf_bytes);
  const int64_t vstride = 3 * static_cast<int64_t>(Dp);
  const std::size_t vws_bytes = DC == 0 ? std::size_t(max_threads) * vstride * ts : 0;
  const std::size_t o_vws = ws.add(vws_bytes);
  const std::size_t o_flags = ws.add(std::size_t(S) * sizeof(unsigned));
  const std::size_t o_bad = ws.add(sizeof(unsigned long long));
  unsigned char* base = ws.allocate(L);
  cudaStream_t st = host::stream_of(L);
  T* prep = reinterpret_cast<T*>(base + o_prep);
  T* rbuf = rbuf_bytes ? reinterpret_cast<T*>(base + o_rbuf) : nullptr;
  unsigned* flags = reinterpret_cast<unsigned*>(base + o_flags);
  auto* bad = reinterpret_cast<unsigned long long*>(base + o_bad);
  if (!f.real) {
    host::memset_async(flags, std::size_t(S) * sizeof(unsigned), st);
    host::memset_async(bad, sizeof(unsigned long long), st);
  }
  host::launch_prep<T>(f.segs, dm.E, dm.d, dm.D, f.c, Dp, f.PS, prep, st);

  ScanArgs<T> a;
  a.N = dm.N;
  a.M = dm.M;
  a.Lc = Lc;
  a.nch = nch;
  a.d = dm.d;
  a.D = dm.D;
  a.Dp = Dp;
  a.msa = f.msa;
  a.x = f.x.ptr;
  a.xkind = f.x.kind;
  a.xshared = f.x.shared;
  a.prep = prep;
  a.PS = f.PS;
  a.prod = reinterpret_cast<T*>(base + o_prod);
  a.pexp = reinterpret_cast<int*>(base + o_exp);
  a.state = reinterpret_cast<T*>(base + o_state);
  a.flags = flags;
  a.vws = vws_bytes ? reinterpret_cast<T*>(base + o_vws) : nullptr;
  a.vws_stride = vstride;
  a.off_Ct = f.off_Ct;
  a.K = f.K;
  const std::size_t smem = DC > 0 ? std::size_t(f.PS_pad) * ts : 0;
  // Sets the item count of the next launch; returns its (grid, block).
  auto shape = [&](int64_t count) {
    const int nt = threads(count);
    a.count = count;
    a.nblk = static_cast<int>((count + nt - 1) / nt);
    return std::pair<unsigned, int>(static_cast<unsigned>(host::grid_units(dm.E, a.nblk)), nt);
  };
  host::dispatch(DC, f.real, [&](auto dc, auto re) {
    constexpr int DCc = decltype(dc)::value;
    constexpr bool REAL = decltype(re)::value;
    for (int k = 0; k < f.ndir; ++k) {
      const Dir<T>& dr = f.dir[k];
      a.off_mat = dr.off_mat;
      a.bnd = dr.bnd;
      a.bpb = dr.bpb;
      a.reverse = dr.reverse;
      const bool local = f.W && k == f.ndir - 1;
      a.out = f.W ? (local ? nullptr : rbuf) : f.out;
      a.W = local ? f.W : nullptr;
      a.R = local ? rbuf : nullptr;
      if (nch > 1) {
        auto k1 = chunk_products_kernel<T, DCc, REAL>;
        host::allow_shared(k1, smem);
        const auto g1 = shape(items[0]);
        host::launch(k1, g1.first, g1.second, smem, st, "chunk_products_kernel", a);
      }
      const auto g2 = shape(items[1]);
      host::launch(chunk_states_kernel<T, DCc>, g2.first, g2.second, 0, st, "chunk_states_kernel", a);
      auto k3 = chunk_scan_kernel<T, DCc, REAL>;
      host::allow_shared(k3, smem);
      const auto g3 = shape(items[2]);
      host::launch(k3, g3.first, g3.second, smem, st, "chunk_scan_kernel", a);
    }
  });
  if (f.real) return 0;
  const int ntS = threads(S);
  host::launch(count_flags_kernel, static_cast<unsigned>((S + ntS - 1) / ntS), ntS, 0, st, "count_flags_kernel",
               static_cast<const unsigned*>(flags), S, bad);
  return host::read_counter(bad, st);
}

}  // namespace chunked
}  // namespace cuda
}  // namespace tnattn

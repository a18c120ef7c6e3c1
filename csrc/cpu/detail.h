// CPU-only machinery shared by contexts.inc and tn_attention.inc: threads, work blocks, symbol
// staging, the block scans (several sequences advanced in lockstep) and deterministic reductions.
// Included inside an instruction-set namespace after simd.h (see isa_unit.cpp).

using tnattn::cpu::detail::pool_run;

// Sequences advanced in lockstep by one thread. One sequence's scan is a chain of dependent
// mat-vecs (latency bound); interleaving kBlock independent chains lets the out-of-order core
// overlap them. Measured on the benchmark machine: see benchmarks/README.md.
constexpr int kBlock = 8;

// ------------------------------------------------------------------------------------------------
// Scratch memory

// Allocator of the kernels' large per-call scratch (contexts, norms, staged symbols). A buffer of
// kHugeBytes or more is aligned to it and marked for transparent huge pages: a fresh multi-MB
// buffer otherwise takes one page fault per 4 KiB on first touch, which on one long sequence cost
// as much time as the scans themselves and made the per-token cost grow with M (measured: a third
// of the process time in the OS's page-fault and page-clearing paths at N = 1, M = 10^6, D = 8).
constexpr size_t kHugeBytes = size_t(2) << 20;

template <typename T>
struct ScratchAlloc {
  using value_type = T;
  ScratchAlloc() = default;
  template <class U>
  ScratchAlloc(const ScratchAlloc<U>&) noexcept {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugeBytes) return static_cast<T*>(::operator new(bytes));
    const size_t rounded = (bytes + kHugeBytes - 1) / kHugeBytes * kHugeBytes;
    void* p = std::aligned_alloc(kHugeBytes, rounded);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, rounded, MADV_HUGEPAGE);  // advice only: without THP the buffer works as usual
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept {
    if (n * sizeof(T) < kHugeBytes) ::operator delete(p);
    else std::free(p);
  }
  template <class U>
  bool operator==(const ScratchAlloc<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const ScratchAlloc<U>&) const noexcept { return false; }
};

// A std::vector on ScratchAlloc (value-initialised like any vector).
template <typename T>
using Scratch = std::vector<T, ScratchAlloc<T>>;

// ------------------------------------------------------------------------------------------------
// Threads

// Work below this many scalar multiply-adds runs on the calling thread: waking a worker costs
// ~10 us (spawning a thread, the fallback, ~20-60 us).
constexpr double kMinWorkPerThread = 2.0e5;

inline int choose_threads(int requested, int64_t units, double work) {
  int t = std::max(1, requested);
  t = static_cast<int>(std::min<int64_t>(t, units));
  const int by_work = static_cast<int>(std::max(1.0, work / kMinWorkPerThread));
  return std::max(1, std::min(t, by_work));
}

// Calls fn(tid, lo, hi) on contiguous, balanced ranges of [0, total) on nthreads threads (the caller
// runs range 0; the others run on the persistent pool, or on fresh std::threads when the pool is
// busy). An exception in any range is rethrown after all have finished.
template <class F>
void parallel_ranges(int64_t total, int nthreads, F&& fn) {
  if (nthreads <= 1 || total <= 1) {
    fn(0, int64_t(0), total);
    return;
  }
  struct Ctx {
    F* fn;
    int64_t total;
    int nthreads;
    std::vector<std::exception_ptr> errors;
  } ctx{&fn, total, nthreads, std::vector<std::exception_ptr>(nthreads)};
  auto range = [](void* p, int t) {
    Ctx& c = *static_cast<Ctx*>(p);
    const int64_t lo = c.total * t / c.nthreads, hi = c.total * (t + 1) / c.nthreads;
    try {
      (*c.fn)(t, lo, hi);
    } catch (...) {
      c.errors[t] = std::current_exception();
    }
  };
  if (!pool_run(nthreads, range, &ctx)) {
    std::vector<std::thread> threads;
    threads.reserve(nthreads - 1);
    for (int t = 1; t < nthreads; ++t) threads.emplace_back(range, &ctx, t);
    range(&ctx, 0);
    for (auto& th : threads) th.join();
  }
  for (auto& e : ctx.errors)
    if (e) std::rethrow_exception(e);
}

// Work units are (group e, block b) pairs, b over ceil(N / kBlock) blocks of sequences.
struct Blocks {
  int64_t N, bs, nb;  // bs sequences per block (kBlock, or the lane count of the SoA path)
  explicit Blocks(int64_t N_, int bs_ = kBlock) : N(N_), bs(bs_), nb((N_ + bs_ - 1) / bs_) {}
  int64_t e(int64_t unit) const { return unit / nb; }
  int64_t n0(int64_t unit) const { return (unit % nb) * bs; }
  int np(int64_t unit) const { return static_cast<int>(std::min<int64_t>(bs, N - n0(unit))); }
};

// Per-thread partial sums of a per-group gradient (size `size` per group), accumulated in double
// and reduced in thread order, so the result depends on num_threads but not on timing.
struct GroupPartials {
  int64_t size = 0;
  std::vector<int64_t> first, last;  // groups touched by each thread
  std::vector<std::vector<double>> buf;
  GroupPartials(int nthreads, int64_t size_, int64_t total_units, const Blocks& blk) : size(size_) {
    first.resize(nthreads);
    last.resize(nthreads);
    buf.resize(nthreads);
    for (int t = 0; t < nthreads; ++t) {
      const int64_t lo = total_units * t / nthreads, hi = total_units * (t + 1) / nthreads;
      first[t] = hi > lo ? blk.e(lo) : 0;
      last[t] = hi > lo ? blk.e(hi - 1) : -1;
    }
  }
  // Called by thread t only (allocation happens in the owning thread).
  double* slot(int t, int64_t e) {
    if (buf[t].empty()) buf[t].assign(static_cast<size_t>((last[t] - first[t] + 1) * size), 0.0);
    return buf[t].data() + (e - first[t]) * size;
  }
  template <typename T>
  void flush(int t, int64_t e, T* local) {
    double* s = slot(t, e);
    for (int64_t k = 0; k < size; ++k) {
      s[k] += static_cast<double>(local[k]);
      local[k] = T(0);
    }
  }
  // As flush, from a zero-padded local layout (count, Dp, Dp) into the compact (count, D, D) one.
  template <typename T>
  void flush_padded(int t, int64_t e, T* local, int count, int D, int Dp) {
    double* s = slot(t, e);
    for (int q = 0; q < count; ++q)
      for (int a = 0; a < D; ++a)
        for (int b = 0; b < D; ++b) {
          T& v = local[(int64_t(q) * Dp + a) * Dp + b];
          s[(int64_t(q) * D + a) * D + b] += static_cast<double>(v);
          v = T(0);
        }
  }
  // out[e * size + map(k)] = sum_t partial; map permutes the local layout into the output's.
  template <typename T, class Map>
  void reduce_into(T* out, int64_t E, Map map) const {
    std::vector<double> acc(static_cast<size_t>(size));
    for (int64_t e = 0; e < E; ++e) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (size_t t = 0; t < buf.size(); ++t)
        if (!buf[t].empty() && e >= first[t] && e <= last[t]) {
          const double* s = buf[t].data() + (e - first[t]) * size;
          for (int64_t k = 0; k < size; ++k) acc[k] += s[k];
        }
      for (int64_t k = 0; k < size; ++k) out[e * size + map(k)] = static_cast<T>(acc[k]);
    }
  }
};

// ------------------------------------------------------------------------------------------------
// Inputs of one block

// Copies the symbols of sequences n0..n0+np-1 of group e into sym[p * M + i] as int32 and checks
// their range (a vectorisable max per sequence; negative values wrap to large unsigned ones).
// Returns the number of sequences with an out-of-range symbol; their copies must not be used.
template <typename S>
int stage_typed(const S* x, int64_t M, int np, int d, int32_t* sym) {
  using U = typename std::make_unsigned<S>::type;
  int bad = 0;
  for (int p = 0; p < np; ++p) {
    const S* xp = x + p * M;
    int32_t* sp = sym + p * M;
    U mx = 0;
    for (int64_t i = 0; i < M; ++i) {
      const U s = static_cast<U>(xp[i]);
      mx = s > mx ? s : mx;
      sp[i] = static_cast<int32_t>(s);
    }
    bad += (static_cast<uint64_t>(mx) < static_cast<uint64_t>(d)) ? 0 : 1;
  }
  return bad;
}

inline int stage_symbols(const XArg& x, int64_t e, int64_t n0, int np, const Dims& dm, int32_t* sym) {
  const int64_t xe = x.shared ? 0 : e;
  const int64_t off = (xe * dm.N + n0) * dm.M;
  switch (x.kind) {
    case kUInt8: return stage_typed(static_cast<const uint8_t*>(x.ptr) + off, dm.M, np, dm.d, sym);
    case kInt32: return stage_typed(static_cast<const int32_t*>(x.ptr) + off, dm.M, np, dm.d, sym);
    default: return stage_typed(static_cast<const int64_t*>(x.ptr) + off, dm.M, np, dm.d, sym);
  }
}

// The inputs of a block: staged symbols (int path) or row pointers into the embeddings (real path).
template <typename T>
struct BlockX {
  const int32_t* sym = nullptr;  // sym[p * M + i]
  const T* xr[kBlock] = {};      // xr[p] + i * d
  int np = 0;
};

// Element (p, i) of a per-block array of vectors (or scalars).
template <typename T>
struct Strided {
  T* base = nullptr;
  int64_t ps = 0, is = 0;
  T* at(int p, int64_t i) const { return base + p * ps + i * is; }
};

template <typename T>
const T* boundary_row(const T* boundary, bool per_batch, const Dims& dm, int64_t e, int64_t n) {
  return boundary + (e * (per_batch ? dm.N : 1) + (per_batch ? n : 0)) * dm.D;
}

// Staging of one block's inputs; returns the number of bad sequences (then the block is skipped).
template <typename T, bool REAL>
int prepare_block(const XArg& x, const Dims& dm, int64_t e, int64_t n0, int np, int32_t* sym, BlockX<T>& X) {
  X.np = np;
  if constexpr (REAL) {
    const int64_t xe = x.shared ? 0 : e;
    for (int p = 0; p < np; ++p) X.xr[p] = static_cast<const T*>(x.ptr) + ((xe * dm.N + n0 + p) * dm.M) * dm.d;
    return 0;
  } else {
    X.sym = sym;
    return stage_symbols(x, e, n0, np, dm, sym);
  }
}

// ------------------------------------------------------------------------------------------------
// Block scans. A "direction" is a matrix tensor mat (d, Dp, Dp) applied in vecmat form: left
// contexts use mat = A, right contexts use mat = A^T and walk the sequence backwards. All vectors
// and matrices here are in the kernel's padded layout (stride Dp = Ops::D).

// Y(p, i0) = b_p/|b_p|;  Y(p, i) = normalize(Y(p, j)^T mat[x_j]) with j the previous position.
// Inv(p, i) receives the inverse pre-normalisation norms (inv_norm) when Inv.base is non-null.
template <class Ops, typename T, bool REAL>
void scan_forward(const Ops& ops, const T* mat, const BlockX<T>& X, int d, const T* const* bnd, int Dreal,
                  int64_t M, bool reverse, Strided<T> Y, Strided<T> Inv) {
  const int64_t DD = int64_t(ops.D) * ops.D;
  const int np = X.np;
  // Each step normalises its vector in registers and stores it once. (Batching the square roots
  // and divisions of the block into one vector operation was measured slower: it needs the
  // unnormalised vectors stored and reloaded.)
  auto put = [&](int p, int64_t i, T inv) {
    if (Inv.base) *Inv.at(p, i) = inv;
  };
  const int64_t i0 = reverse ? M - 1 : 0;
  for (int p = 0; p < np; ++p) put(p, i0, ops.boundary(bnd[p], Dreal, Y.at(p, i0)));
  for (int64_t k = 1; k < M; ++k) {
    const int64_t i = reverse ? M - 1 - k : k;
    const int64_t j = reverse ? i + 1 : i - 1;
    for (int p = 0; p < np; ++p) {
      if constexpr (REAL) {
        put(p, i, ops.step_embed(Y.at(p, j), mat, X.xr[p] + j * d, d, Y.at(p, i)));
      } else {
        put(p, i, ops.step(Y.at(p, j), mat + X.sym[p * M + j] * DD, Y.at(p, i)));
      }
    }
  }
}

// Reverse (adjoint) scan of scan_forward, given its contexts Y and inverse norms Inv, in the
// opposite direction. local(i, carry) must add dLoss/dY(p, i) from outside the recurrence (the
// "local" gradient) into the padded vectors carry + p * Dp for p < np; it is called once per
// position, in scan order from the last position back to the first, so it may also do other
// per-site backward work. carry holds np * Dp scalars: the gradient flowing back through the
// recurrence. Accumulates dmat (d, Dp, Dp)
// and gX[p] (M, d) (real path) when non-null; writes the padded boundary gradient of sequence p to
// gB + p * Dp when gB is non-null.
template <class Ops, typename T, bool REAL, class Local>
void scan_backward(const Ops& ops, const T* matT, const BlockX<T>& X, int d, int64_t M, bool reverse,
                   Strided<const T> Y, Strided<const T> Inv, Local&& local, T* carry, T* dmat, T* gB,
                   T* const* gX) {
  const int Dp = ops.D;
  const int64_t DD = int64_t(Dp) * Dp;
  const int np = X.np;
  std::fill(carry, carry + np * Dp, T(0));
  for (int64_t k = M - 1; k >= 1; --k) {
    const int64_t i = reverse ? M - 1 - k : k;
    const int64_t j = reverse ? i + 1 : i - 1;
    local(i, carry);  // carry + p * Dp = total dLoss/dY(p, i) ...
    for (int p = 0; p < np; ++p) {
      T* g = carry + p * Dp;
      // ... and the adjoint step turns it into the recurrence's part of dLoss/dY(p, j), in place.
      if constexpr (REAL) {
        ops.adjoint_embed(Y.at(p, j), Y.at(p, i), *Inv.at(p, i), g, g, matT, X.xr[p] + j * d, d, dmat,
                          gX ? gX[p] + j * d : nullptr);
      } else {
        const int64_t s = X.sym[p * M + j];
        ops.adjoint(Y.at(p, j), Y.at(p, i), *Inv.at(p, i), g, g, matT + s * DD, dmat ? dmat + s * DD : nullptr);
      }
    }
  }
  const int64_t i0 = reverse ? M - 1 : 0;
  local(i0, carry);
  if (gB)
    for (int p = 0; p < np; ++p) ops.boundary_adjoint(Y.at(p, i0), *Inv.at(p, i0), carry + p * Dp, gB + p * Dp);
}

// ------------------------------------------------------------------------------------------------
// Small tensor rearrangements (per group, outside the time loop)

// out[s] = in[s] (or in[s]^T) zero-padded from (D, D) to (Dp, Dp), for s < count.
template <typename T>
void pad_mats(const T* in, T* out, int count, int D, int Dp, bool transpose) {
  std::fill(out, out + int64_t(count) * Dp * Dp, T(0));
  for (int s = 0; s < count; ++s)
    for (int a = 0; a < D; ++a)
      for (int b = 0; b < D; ++b) {
        const T val = in[(int64_t(s) * D + a) * D + b];
        if (transpose)
          out[(int64_t(s) * Dp + b) * Dp + a] = val;
        else
          out[(int64_t(s) * Dp + a) * Dp + b] = val;
      }
}

// C (d, D, D, c) -> Ct (d*c, Dp, Dp) with k = s*c + o, zero-padded, optionally transposed.
template <typename T>
void c_to_ct(const T* C, T* Ct, int d, int D, int c, int Dp, bool transpose) {
  std::fill(Ct, Ct + int64_t(d) * c * Dp * Dp, T(0));
  for (int s = 0; s < d; ++s)
    for (int a = 0; a < D; ++a)
      for (int b = 0; b < D; ++b)
        for (int o = 0; o < c; ++o) {
          const T val = C[((int64_t(s) * D + a) * D + b) * c + o];
          const int64_t k = int64_t(s) * c + o;
          Ct[(k * Dp + (transpose ? b : a)) * Dp + (transpose ? a : b)] = val;
        }
}

// ------------------------------------------------------------------------------------------------
// Bond dimension dispatch. D is padded to a multiple of the lane count W of the widest register of
// this instruction set (kNativeBytes), held in P registers; small D use narrower registers (down to
// 4 lanes) rather than wasting most of a wide one. D beyond 64 (or beyond 16 registers) takes the
// runtime-D path. Instantiating only these (W, P) pairs bounds the compile time.
template <typename T, class F>
auto dispatch_dim(int D, F&& f) {
  constexpr int NW = kNativeBytes / int(sizeof(T));  // lanes of one native register
  constexpr int W4 = NW < 4 ? NW : 4;
  constexpr int W8 = NW < 8 ? NW : 8;
  if (D <= W4) return f(StepOps<T, W4, 1>(D));
  if (NW > W4 && D <= W8) return f(StepOps<T, W8, 1>(D));
  const int P = (D + NW - 1) / NW;
  // The next supported register count at or above P, only where NW * P <= 64.
  auto pick = [&](auto Pc) -> bool { return P <= decltype(Pc)::value && NW * decltype(Pc)::value <= 64; };
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I3 = std::integral_constant<int, 3>;
  using I4 = std::integral_constant<int, 4>;
  using I5 = std::integral_constant<int, 5>;
  using I6 = std::integral_constant<int, 6>;
  using I8 = std::integral_constant<int, 8>;
  using I10 = std::integral_constant<int, 10>;
  using I12 = std::integral_constant<int, 12>;
  using I16 = std::integral_constant<int, 16>;
  if (NW > W8 && pick(I1{})) return f(StepOps<T, NW, 1>(D));
  if constexpr (NW == 16) {
    // 16-lane registers pad D = 17..24 and 33..40 to 32 and 48; 8-lane ones waste less (24, 40),
    // measured faster at D = 20 and 40.
    if (D > 16 && D <= 24) return f(StepOps<T, 8, 3>(D));
    if (D > 32 && D <= 40) return f(StepOps<T, 8, 5>(D));
  }
  if (pick(I2{})) return f(StepOps<T, NW, 2>(D));
  if (pick(I3{})) return f(StepOps<T, NW, 3>(D));
  if (pick(I4{})) return f(StepOps<T, NW, 4>(D));
  if constexpr (NW * 5 <= 64) {
    if (pick(I5{})) return f(StepOps<T, NW, 5>(D));
    if (pick(I6{})) return f(StepOps<T, NW, 6>(D));
  }
  if constexpr (NW * 8 <= 64) {
    if (pick(I8{})) return f(StepOps<T, NW, 8>(D));
  }
  if constexpr (NW * 10 <= 64) {
    if (pick(I10{})) return f(StepOps<T, NW, 10>(D));
    if (pick(I12{})) return f(StepOps<T, NW, 12>(D));
  }
  if constexpr (NW * 16 <= 64) {
    if (pick(I16{})) return f(StepOps<T, NW, 16>(D));
  }
  return f(StepOps<T, 0, 0>(D));
}

inline void check_dims(const Dims& dm) {
  if (dm.D > StepOps<float, 0, 0>::kMaxGenericD)
    throw std::invalid_argument("tnattn: bond dimension D above 1024 is not supported by the CPU kernels");
}

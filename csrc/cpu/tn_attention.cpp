// CPU kernels: fused TN attention (left contexts, right contexts, local maps) and its backward.
//
// Per block of kBlock sequences the forward runs the left scan into a scratch buffer, then the right
// scan, then the local maps; the backward recomputes both scans (with their norms), runs the local
// map backward and the two reverse adjoint scans. The scratch is O(M * kBlock * D) per thread and
// stays in cache for the usual lengths, so nothing besides the inputs is saved between forward and
// backward.
#include <atomic>
#include <vector>

#include "detail.h"

namespace tnattn {
namespace cpu {

using namespace detail;

namespace {

// Per-group parameter rearrangements, refreshed when a thread moves to a new group.
template <typename T>
struct GroupParams {
  std::vector<T> ALT, ART, Ct, CtT;
  int64_t e = -1;
  GroupParams(int d, int D, int c, bool need_CtT)
      : ALT(size_t(d) * D * D), ART(size_t(d) * D * D), Ct(size_t(d) * c * D * D),
        CtT(need_CtT ? size_t(d) * c * D * D : 0) {}
  void load(int64_t e_, const T* AL, const T* AR, const T* C, int d, int D, int c) {
    if (e_ == e) return;
    e = e_;
    transpose_mats(AL, ALT.data(), d, D);
    transpose_mats(AR, ART.data(), d, D);
    c_to_ct(C, Ct.data(), d, D, c);
    if (!CtT.empty()) transpose_mats(Ct.data(), CtT.data(), d * c, D);
  }
};

template <typename T>
const T* bnd_row(const T* b, bool per_batch, const Dims& dm, int64_t e, int64_t n) {
  return b + (e * (per_batch ? dm.N : 1) + (per_batch ? n : 0)) * dm.D;
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

template <typename T, int DC, bool REAL>
int64_t forward_impl(XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb, const T* v, bool vpb,
                     T* W, Dims dm, int num_threads) {
  const int D = dm.D, d = dm.d, c = dm.c, K = d * c;
  const int64_t M = dm.M, DD = int64_t(d) * D * D;
  const Blocks blk(dm.N);
  const int64_t units = dm.E * blk.nb;
  const double work = double(dm.E) * dm.N * M * D * D * (2.0 * (REAL ? d : 1) + K);
  const int nthreads = choose_threads(num_threads, units, work);
  std::atomic<int64_t> bad{0};
  parallel_ranges(units, nthreads, [&](int, int64_t lo, int64_t hi) {
    GroupParams<T> gp(d, D, c, false);
    std::vector<int32_t> sym(REAL ? 0 : size_t(M) * kBlock);
    std::vector<T> Ls(size_t(M) * kBlock * D), Rs(size_t(M) * kBlock * D), tmp(D);
    int64_t nbad = 0;
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t e = blk.e(unit), n0 = blk.n0(unit);
      const int np = blk.np(unit);
      const T* ALe = AL + e * DD;
      gp.load(e, ALe, AR + e * DD, C + e * DD * c, d, D, c);
      BlockX<T> X;
      if (int b = prepare_block<T, REAL>(x, dm, e, n0, np, sym.data(), X)) {
        nbad += b;
        continue;
      }
      const T* ub[kBlock];
      const T* vb[kBlock];
      for (int p = 0; p < np; ++p) {
        ub[p] = bnd_row(u, upb, dm, e, n0 + p);
        vb[p] = bnd_row(v, vpb, dm, e, n0 + p);
      }
      Strided<T> L{Ls.data(), D, int64_t(np) * D}, R{Rs.data(), D, int64_t(np) * D};
      scan_forward<T, DC, REAL>(ALe, X, d, ub, M, D, false, L, Strided<T>{});
      scan_forward<T, DC, REAL>(gp.ART.data(), X, d, vb, M, D, true, R, Strided<T>{});
      for (int p = 0; p < np; ++p) {
        T* Wp = W + (e * dm.N + n0 + p) * M * K;
        for (int64_t i = 0; i < M; ++i) local_map<DC>(L.at(p, i), R.at(p, i), gp.Ct.data(), K, Wp + i * K, tmp.data(), D);
      }
    }
    bad += nbad;
  });
  return bad.load();
}

template <typename T, int DC, bool REAL>
int64_t backward_impl(XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb, const T* v, bool vpb,
                      const T* gW, T* gAL, T* gAR, T* gC, T* gu, T* gv, T* gx, Dims dm, int num_threads) {
  const int D = dm.D, d = dm.d, c = dm.c, K = d * c;
  const int64_t M = dm.M, DD = int64_t(d) * D * D, KDD = int64_t(K) * D * D;
  const Blocks blk(dm.N);
  const int64_t units = dm.E * blk.nb;
  const double work = double(dm.E) * dm.N * M * D * D * (6.0 * (REAL ? d : 1) + 3.0 * K);
  const int nthreads = choose_threads(num_threads, units, work);
  const bool need_left = gAL || gu || gx, need_right = gAR || gv || gx;
  GroupPartials pAL(nthreads, gAL ? DD : 0, units, blk), pAR(nthreads, gAR ? DD : 0, units, blk),
      pC(nthreads, gC ? KDD : 0, units, blk);
  std::atomic<int64_t> bad{0};
  parallel_ranges(units, nthreads, [&](int tid, int64_t lo, int64_t hi) {
    GroupParams<T> gp(d, D, c, true);
    std::vector<int32_t> sym(REAL ? 0 : size_t(M) * kBlock);
    const size_t vecs = size_t(M) * kBlock * D, scal = size_t(M) * kBlock;
    std::vector<T> Ls(vecs), Rs(vecs), gLs(vecs), gRs(vecs), nL(scal), nR(scal);
    std::vector<T> dAL(gAL ? DD : 0, T(0)), dART(gAR ? DD : 0, T(0)), dCt(gC ? KDD : 0, T(0));
    std::vector<T> work_buf(size_t(2 * kBlock + 1) * D);
    int64_t nbad = 0;
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t e = blk.e(unit), n0 = blk.n0(unit);
      const int np = blk.np(unit);
      const T* ALe = AL + e * DD;
      const T* ARe = AR + e * DD;
      gp.load(e, ALe, ARe, C + e * KDD, d, D, c);
      BlockX<T> X;
      if (int b = prepare_block<T, REAL>(x, dm, e, n0, np, sym.data(), X)) {
        nbad += b;
        continue;
      }
      const T* ub[kBlock];
      const T* vb[kBlock];
      T* guB[kBlock];
      T* gvB[kBlock];
      T* gX[kBlock];
      for (int p = 0; p < np; ++p) {
        const int64_t n = n0 + p;
        ub[p] = bnd_row(u, upb, dm, e, n);
        vb[p] = bnd_row(v, vpb, dm, e, n);
        guB[p] = gu ? gu + (e * dm.N + n) * D : nullptr;
        gvB[p] = gv ? gv + (e * dm.N + n) * D : nullptr;
        gX[p] = gx ? gx + (e * dm.N + n) * M * d : nullptr;
        if (gX[p]) std::fill(gX[p], gX[p] + M * d, T(0));
      }
      const int64_t st = int64_t(np) * D;
      Strided<T> L{Ls.data(), D, st}, R{Rs.data(), D, st}, GL{gLs.data(), D, st}, GR{gRs.data(), D, st};
      Strided<T> NL{nL.data(), 1, np}, NR{nR.data(), 1, np};
      scan_forward<T, DC, REAL>(ALe, X, d, ub, M, D, false, L, NL);
      scan_forward<T, DC, REAL>(gp.ART.data(), X, d, vb, M, D, true, R, NR);
      std::fill(gLs.begin(), gLs.begin() + M * st, T(0));
      std::fill(gRs.begin(), gRs.begin() + M * st, T(0));
      for (int p = 0; p < np; ++p) {
        const T* gWp = gW + (e * dm.N + n0 + p) * M * K;
        for (int64_t i = 0; i < M; ++i)
          local_map_backward<DC>(L.at(p, i), R.at(p, i), gp.Ct.data(), gp.CtT.data(), K, gWp + i * K, GL.at(p, i),
                                 GR.at(p, i), gC ? dCt.data() : nullptr, D);
      }
      auto cs = [](Strided<T> s) { return Strided<const T>{s.base, s.ps, s.is}; };
      if (need_left)
        scan_backward<T, DC, REAL>(ALe, gp.ALT.data(), X, d, M, D, false, cs(L), cs(NL), cs(GL),
                                   gAL ? dAL.data() : nullptr, gu ? guB : nullptr, gx ? gX : nullptr,
                                   work_buf.data());
      if (need_right)
        scan_backward<T, DC, REAL>(gp.ART.data(), ARe, X, d, M, D, true, cs(R), cs(NR), cs(GR),
                                   gAR ? dART.data() : nullptr, gv ? gvB : nullptr, gx ? gX : nullptr,
                                   work_buf.data());
      if (gAL) pAL.flush(tid, e, dAL.data());
      if (gAR) pAR.flush(tid, e, dART.data());
      if (gC) pC.flush(tid, e, dCt.data());
    }
    bad += nbad;
  });
  const int64_t DDl = int64_t(D) * D;
  if (gAL) pAL.reduce_into(gAL, dm.E, [](int64_t k) { return k; });
  if (gAR)
    pAR.reduce_into(gAR, dm.E, [D, DDl](int64_t k) {  // accumulated d(A_R^T)
      const int64_t s = k / DDl, r = k % DDl, b = r / D, a = r % D;
      return s * DDl + a * D + b;
    });
  if (gC)
    pC.reduce_into(gC, dm.E, [D, DDl, c](int64_t k) {  // (s*c+o, a, b) -> (s, a, b, o)
      const int64_t so = k / DDl, r = k % DDl, s = so / c, o = so % c;
      return (s * DDl + r) * c + o;
    });
  return bad.load();
}

}  // namespace

template <typename T>
int64_t tn_attention_forward(XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb, const T* v,
                             bool vpb, T* W, Dims dm, int num_threads) {
  return dispatch_dim(dm.D, [&](auto dc) {
    constexpr int DC = decltype(dc)::value;
    return x.kind == kReal ? forward_impl<T, DC, true>(x, AL, AR, C, u, upb, v, vpb, W, dm, num_threads)
                           : forward_impl<T, DC, false>(x, AL, AR, C, u, upb, v, vpb, W, dm, num_threads);
  });
}

template <typename T>
int64_t tn_attention_backward(XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb, const T* v,
                              bool vpb, const T* gW, T* gAL, T* gAR, T* gC, T* gu, T* gv, T* gx, Dims dm,
                              int num_threads) {
  return dispatch_dim(dm.D, [&](auto dc) {
    constexpr int DC = decltype(dc)::value;
    return x.kind == kReal
               ? backward_impl<T, DC, true>(x, AL, AR, C, u, upb, v, vpb, gW, gAL, gAR, gC, gu, gv, gx, dm,
                                            num_threads)
               : backward_impl<T, DC, false>(x, AL, AR, C, u, upb, v, vpb, gW, gAL, gAR, gC, gu, gv, nullptr,
                                             dm, num_threads);
  });
}

#define TNATTN_INSTANTIATE(T)                                                                                \
  template int64_t tn_attention_forward<T>(XArg, const T*, const T*, const T*, const T*, bool, const T*, bool, \
                                           T*, Dims, int);                                                   \
  template int64_t tn_attention_backward<T>(XArg, const T*, const T*, const T*, const T*, bool, const T*,     \
                                            bool, const T*, T*, T*, T*, T*, T*, T*, Dims, int);
TNATTN_INSTANTIATE(float)
TNATTN_INSTANTIATE(double)
#undef TNATTN_INSTANTIATE

}  // namespace cpu
}  // namespace tnattn

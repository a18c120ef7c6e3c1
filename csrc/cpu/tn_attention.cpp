// CPU kernels: fused TN attention (left contexts, right contexts, local maps) and its backward.
//
// Per block of kBlock sequences the forward runs the left scan into a scratch buffer, then the right
// scan, then the local maps. The backward recomputes both scans (with their inverse norms), then runs
// the left adjoint scan (last site to first) fused with each site's local-map backward, and finally
// the right adjoint scan (first site to last). The scratch is O(M * kBlock * Dp) per thread and stays
// in cache for the usual lengths, so nothing besides the inputs is saved between forward and
// backward.
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "detail.h"

namespace tnattn {
namespace cpu {

using namespace detail;

namespace {

// Per-group parameters in the kernel layout (zero-padded to Dp), refreshed when a thread moves to a
// new group: A_left and A_left^T, A_right^T and A_right, C as (d*c, Dp, Dp) and its transpose.
template <typename T>
struct GroupParams {
  std::vector<T> AL, ALT, ART, AR, Ct, CtT;
  int64_t e = -1;
  GroupParams(int d, int Dp, int c, bool backward)
      : AL(size_t(d) * Dp * Dp), ALT(backward ? size_t(d) * Dp * Dp : 0), ART(size_t(d) * Dp * Dp),
        AR(backward ? size_t(d) * Dp * Dp : 0), Ct(size_t(d) * c * Dp * Dp),
        CtT(backward ? size_t(d) * c * Dp * Dp : 0) {}
  void load(int64_t e_, const T* ALe, const T* ARe, const T* Ce, int d, int D, int Dp, int c) {
    if (e_ == e) return;
    e = e_;
    pad_mats(ALe, AL.data(), d, D, Dp, false);
    pad_mats(ARe, ART.data(), d, D, Dp, true);
    c_to_ct(Ce, Ct.data(), d, D, c, Dp, false);
    if (!ALT.empty()) {
      pad_mats(ALe, ALT.data(), d, D, Dp, true);
      pad_mats(ARe, AR.data(), d, D, Dp, false);
      c_to_ct(Ce, CtT.data(), d, D, c, Dp, true);
    }
  }
};

// Local maps of every site of a block, W[(p * M + i) * K + k] (the layout of the op's output),
// Ops::kGroup sites at a time; wdump (kGroup * K scalars) takes the results of unused group slots.
template <class Ops, typename T>
void block_local_maps(const Ops& ops, const Strided<T>& L, const Strided<T>& R, const T* Ct, int K, int64_t M,
                      int np, T* W, T* wdump) {
  for (int64_t i = 0; i < M; ++i)
    for (int p0 = 0; p0 < np; p0 += Ops::kGroup) {
      const T* Lg[Ops::kGroup];
      const T* Rg[Ops::kGroup];
      T* Wg[Ops::kGroup];
      for (int j = 0; j < Ops::kGroup; ++j) {
        const int p = p0 + j < np ? p0 + j : np - 1;  // unused slots repeat a site ...
        Lg[j] = L.at(p, i);
        Rg[j] = R.at(p, i);
        Wg[j] = p0 + j < np ? W + (p * M + i) * K : wdump + j * K;  // ... into scratch
      }
      ops.local_maps_group(Lg, Rg, Ct, K, Wg);
    }
}

// What tn_attention_count_wrong compares the block's local maps with.
template <typename T>
struct CountHead {
  const T* sign;     // (E,) or nullptr
  const uint8_t* y;  // labels, see tnattn/cpu.h
  bool y_shared;
};

// Wrong sites of one block from its local maps Wb (np, M, d) (c = 1).
template <typename T>
double count_wrong_block(const CountHead<T>& head, const T* Wb, const int32_t* sym, const Dims& dm, int64_t e,
                         int64_t n0, int np) {
  const int64_t M = dm.M;
  const int K = dm.d;
  const T sg = head.sign ? head.sign[e] : T(1);
  const uint8_t* y = head.y + ((head.y_shared ? 0 : e * dm.N) + n0) * M;
  int64_t wrong = 0;
  for (int p = 0; p < np; ++p)
    for (int64_t i = 0; i < M; ++i) {
      const uint8_t label = y[p * M + i];
      const bool positive = sg * Wb[(p * M + i) * K + sym[p * M + i]] > T(0);
      wrong += (label > 1 || positive != (label == 1)) ? 1 : 0;
    }
  return static_cast<double>(wrong);
}

template <class Ops, typename T, bool REAL>
int64_t forward_impl(const Ops& ops, XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb,
                     const T* v, bool vpb, T* W, Dims dm, int num_threads, const CountHead<T>* count = nullptr,
                     double* count_out = nullptr) {
  // count != nullptr: W is not written; the block's maps go to a scratch buffer and count_out (E,)
  // receives the wrong-site counts (tn_attention_count_wrong).
  const int D = dm.D, d = dm.d, c = dm.c, K = d * c, Dp = ops.D;
  const int64_t M = dm.M, DD = int64_t(d) * D * D;
  const Blocks blk(dm.N);
  const int64_t units = dm.E * blk.nb;
  const double work = double(dm.E) * dm.N * M * Dp * Dp * (2.0 * (REAL ? d : 1) + K);
  const int nthreads = choose_threads(num_threads, units, work);
  std::atomic<int64_t> bad{0};
  GroupPartials pCount(nthreads, count ? 1 : 0, units, blk);
  parallel_ranges(units, nthreads, [&](int tid, int64_t lo, int64_t hi) {
    GroupParams<T> gp(d, Dp, c, false);
    std::vector<int32_t> sym(REAL ? 0 : size_t(M) * kBlock);
    std::vector<T> Ls(size_t(M) * kBlock * Dp), Rs(size_t(M) * kBlock * Dp), wdump(size_t(Ops::kGroup) * K);
    std::vector<T> Wb(count ? size_t(M) * kBlock * K : 0);
    int64_t nbad = 0;
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t e = blk.e(unit), n0 = blk.n0(unit);
      const int np = blk.np(unit);
      gp.load(e, AL + e * DD, AR + e * DD, C + e * DD * c, d, D, Dp, c);
      BlockX<T> X;
      if (int b = prepare_block<T, REAL>(x, dm, e, n0, np, sym.data(), X)) {
        nbad += b;
        continue;
      }
      const T* ub[kBlock];
      const T* vb[kBlock];
      for (int p = 0; p < np; ++p) {
        ub[p] = boundary_row(u, upb, dm, e, n0 + p);
        vb[p] = boundary_row(v, vpb, dm, e, n0 + p);
      }
      const int64_t st = int64_t(np) * Dp;
      Strided<T> L{Ls.data(), Dp, st}, R{Rs.data(), Dp, st};
      scan_forward<Ops, T, REAL>(ops, gp.AL.data(), X, d, ub, D, M, false, L, Strided<T>{});
      scan_forward<Ops, T, REAL>(ops, gp.ART.data(), X, d, vb, D, M, true, R, Strided<T>{});
      // Local maps in their own pass (fusing them into the right scan measured slower).
      if (count) {
        block_local_maps(ops, L, R, gp.Ct.data(), K, M, np, Wb.data(), wdump.data());
        if constexpr (!REAL) {
          double w = count_wrong_block(*count, Wb.data(), X.sym, dm, e, n0, np);
          pCount.flush(tid, e, &w);
        }
      } else {
        block_local_maps(ops, L, R, gp.Ct.data(), K, M, np, W + (e * dm.N + n0) * M * K, wdump.data());
      }
    }
    bad += nbad;
  });
  if (count) pCount.reduce_into(count_out, dm.E, [](int64_t k) { return k; });
  return bad.load();
}

// The fused head of tn_attention_mse_step for the sites of one block: local maps W (np, M, K) of
// the block's contexts, then per site the logit, the residual and the gradient of the mean squared
// residual towards the map (gW, same layout), in the order of operations of the torch path
// (tnattn.ensemble.model.symbol_head_forward/backward, tnattn.train.losses.member_losses_and_grads).
// sums[0..2] += the block's sum of r^2, wrong sites and d(mean loss)/d(scale).
template <class Ops, typename T>
void mse_head_block(const Ops& ops, const MseHead<T>& head, const Strided<T>& L, const Strided<T>& R, const T* Ct,
                    const int32_t* sym, const Dims& dm, int64_t e, int64_t n0, int np, T* Wb, T* gWb, T* wdump,
                    double* sums) {
  const int64_t M = dm.M;
  const int K = dm.d;  // c = 1
  block_local_maps(ops, L, R, Ct, K, M, np, Wb, wdump);
  const T two_over_n = static_cast<T>(2.0 / static_cast<double>(dm.N * M));  // as torch: a double scalar
  const T scale = head.scale ? head.scale[e] : T(1);
  const uint8_t* y = head.y + ((head.y_shared ? 0 : e * dm.N) + n0) * M;
  double loss = 0, wrong = 0, gscale = 0;
  for (int p = 0; p < np; ++p)
    for (int64_t i = 0; i < M; ++i) {
      const T* w = Wb + (p * M + i) * K;
      T* g = gWb + (p * M + i) * K;
      const int s = sym[p * M + i];
      const T target = static_cast<T>(y[p * M + i] != 0);
      const T sel = w[s];
      T inv = T(1), fac = T(1);
      if (head.normalize_map) {
        T sq = w[0] * w[0];
        for (int k = 1; k < K; ++k) sq += w[k] * w[k];
        const T nrm = std::sqrt(sq);
        inv = nrm == T(0) ? T(0) : T(1) / nrm;  // exact-zero rule; a NaN stays NaN
        fac = head.scale ? inv * scale : inv;
      }
      const T z = sel * fac;
      T r, gz;
      if (head.sigmoid) {
        const T sg = T(1) / (T(1) + std::exp(-z));
        r = sg - target;
        gz = ((r * two_over_n) * (T(1) - sg)) * sg;  // ATen's sigmoid_backward: g * (1 - s) * s
      } else {
        r = z - (T(2) * target - T(1));
        gz = r * two_over_n;
      }
      loss += static_cast<double>(r) * static_cast<double>(r);
      wrong += ((z > T(0)) != (target != T(0))) ? 1.0 : 0.0;
      if (head.normalize_map) {
        const T t = gz * sel;
        const T uu = t * inv;
        gscale += static_cast<double>(uu);
        const T neg_q = -((uu * fac) * inv);
        for (int k = 0; k < K; ++k) g[k] = w[k] * neg_q;
        g[s] += gz * fac;
      } else {
        for (int k = 0; k < K; ++k) g[k] = T(0);
        g[s] = gz;
      }
    }
  sums[0] += loss;
  sums[1] += wrong;
  sums[2] += gscale;
}

template <class Ops, typename T, bool REAL>
int64_t backward_impl(const Ops& ops, XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb,
                      const T* v, bool vpb, const T* gW, T* gAL, T* gAR, T* gC, T* gu, T* gv, T* gx, Dims dm,
                      int num_threads, const MseHead<T>* head = nullptr, double* head_sums = nullptr) {
  // head != nullptr: gW is not read; the fused head (mse_head_block) produces it per block and
  // head_sums (E, 3) receives the per-group loss, wrong-site and scale-gradient sums.
  const int D = dm.D, d = dm.d, c = dm.c, K = d * c, Dp = ops.D;
  const int64_t M = dm.M, DD = int64_t(d) * D * D, DDp = int64_t(d) * Dp * Dp;
  const Blocks blk(dm.N);
  const int64_t units = dm.E * blk.nb;
  const double work = double(dm.E) * dm.N * M * Dp * Dp * (6.0 * (REAL ? d : 1) + 3.0 * K);
  const int nthreads = choose_threads(num_threads, units, work);
  // The left adjoint pass always runs (it carries the local-map backward, which dC needs too).
  const bool need_right = gAR || gv || gx;
  GroupPartials pAL(nthreads, gAL ? DD : 0, units, blk), pAR(nthreads, gAR ? DD : 0, units, blk),
      pC(nthreads, gC ? DD * c : 0, units, blk), pHead(nthreads, head ? 3 : 0, units, blk);
  std::atomic<int64_t> bad{0};
  parallel_ranges(units, nthreads, [&](int tid, int64_t lo, int64_t hi) {
    GroupParams<T> gp(d, Dp, c, true);
    std::vector<int32_t> sym(REAL ? 0 : size_t(M) * kBlock);
    const size_t vecs = size_t(M) * kBlock * Dp, scal = size_t(M) * kBlock;
    std::vector<T> Ls(vecs), Rs(vecs), gRs(vecs), nL(scal), nR(scal), carry(size_t(kBlock) * Dp);
    std::vector<T> dAL(gAL ? DDp : 0, T(0)), dART(gAR ? DDp : 0, T(0)), dCt(gC ? DDp * c : 0, T(0));
    std::vector<T> guP(size_t(kBlock) * Dp), gvP(size_t(kBlock) * Dp);
    std::vector<T> zeros(size_t(K), T(0)), dump(size_t(2 * Ops::kGroup) * Dp);  // for unused group slots
    std::vector<T> Wb(head ? size_t(M) * kBlock * K : 0), gWb(head ? size_t(M) * kBlock * K : 0);
    std::vector<T> wdump(head ? size_t(Ops::kGroup) * K : 0);
    double hsums[3] = {0, 0, 0};
    int64_t nbad = 0;
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t e = blk.e(unit), n0 = blk.n0(unit);
      const int np = blk.np(unit);
      gp.load(e, AL + e * DD, AR + e * DD, C + e * DD * c, d, D, Dp, c);
      BlockX<T> X;
      if (int b = prepare_block<T, REAL>(x, dm, e, n0, np, sym.data(), X)) {
        nbad += b;
        continue;
      }
      const T* ub[kBlock];
      const T* vb[kBlock];
      T* gX[kBlock];
      for (int p = 0; p < np; ++p) {
        const int64_t n = n0 + p;
        ub[p] = boundary_row(u, upb, dm, e, n);
        vb[p] = boundary_row(v, vpb, dm, e, n);
        gX[p] = gx ? gx + (e * dm.N + n) * M * d : nullptr;
        if (gX[p]) std::fill(gX[p], gX[p] + M * d, T(0));
      }
      const int64_t st = int64_t(np) * Dp;
      Strided<T> L{Ls.data(), Dp, st}, R{Rs.data(), Dp, st}, GR{gRs.data(), Dp, st};
      Strided<T> NL{nL.data(), 1, np}, NR{nR.data(), 1, np};
      scan_forward<Ops, T, REAL>(ops, gp.AL.data(), X, d, ub, D, M, false, L, NL);
      scan_forward<Ops, T, REAL>(ops, gp.ART.data(), X, d, vb, D, M, true, R, NR);
      auto cs = [](Strided<T> s) { return Strided<const T>{s.base, s.ps, s.is}; };
      const T* gW_blk = head ? gWb.data() : gW + (e * dm.N + n0) * M * K;
      if (head) {
        mse_head_block(ops, *head, L, R, gp.Ct.data(), X.sym, dm, e, n0, np, Wb.data(), gWb.data(), wdump.data(),
                       hsums);
        pHead.flush(tid, e, hsums);
      }
      // Left adjoint scan (last site to first), fused with the local-map backward of each site: its
      // gradient towards L goes straight into the scan, the one towards R is kept for the right
      // adjoint scan, and dC accumulates.
      auto local_left = [&](int64_t i, T* carry) {
        for (int p0 = 0; p0 < np; p0 += Ops::kGroup) {
          const T* Lg[Ops::kGroup];
          const T* Rg[Ops::kGroup];
          const T* gWg[Ops::kGroup];
          T* gLg[Ops::kGroup];
          T* gRg[Ops::kGroup];
          for (int j = 0; j < Ops::kGroup; ++j) {
            const bool used = p0 + j < np;
            const int p = used ? p0 + j : np - 1;  // unused slots: a valid site with zero gW
            Lg[j] = L.at(p, i);
            Rg[j] = R.at(p, i);
            gWg[j] = used ? gW_blk + (p * M + i) * K : zeros.data();
            gLg[j] = used ? carry + p * Dp : dump.data() + j * Dp;
            gRg[j] = used ? GR.at(p, i) : dump.data() + (Ops::kGroup + j) * Dp;
          }
          ops.local_map_backward_group(Lg, Rg, gp.Ct.data(), gp.CtT.data(), K, gWg, gLg, gRg,
                                       gC ? dCt.data() : nullptr);
        }
      };
      scan_backward<Ops, T, REAL>(ops, gp.ALT.data(), X, d, M, false, cs(L), cs(NL), local_left, carry.data(),
                                  gAL ? dAL.data() : nullptr, gu ? guP.data() : nullptr, gx ? gX : nullptr);
      if (need_right) {
        auto local_right = [&](int64_t i, T* carry) {
          for (int p = 0; p < np; ++p) ops.add(carry + p * Dp, GR.at(p, i));
        };
        scan_backward<Ops, T, REAL>(ops, gp.AR.data(), X, d, M, true, cs(R), cs(NR), local_right, carry.data(),
                                    gAR ? dART.data() : nullptr, gv ? gvP.data() : nullptr, gx ? gX : nullptr);
      }
      for (int p = 0; p < np; ++p) {
        const int64_t n = n0 + p;
        if (gu) std::copy(guP.data() + p * Dp, guP.data() + p * Dp + D, gu + (e * dm.N + n) * D);
        if (gv) std::copy(gvP.data() + p * Dp, gvP.data() + p * Dp + D, gv + (e * dm.N + n) * D);
      }
      // Per-block flush into double keeps float accumulation chains short (M * kBlock terms).
      if (gAL) pAL.flush_padded(tid, e, dAL.data(), d, D, Dp);
      if (gAR) pAR.flush_padded(tid, e, dART.data(), d, D, Dp);
      if (gC) pC.flush_padded(tid, e, dCt.data(), K, D, Dp);
    }
    bad += nbad;
  });
  const int64_t DDl = int64_t(D) * D;
  if (head) pHead.reduce_into(head_sums, dm.E, [](int64_t k) { return k; });
  if (gAL) pAL.reduce_into(gAL, dm.E, [](int64_t k) { return k; });
  if (gAR)
    pAR.reduce_into(gAR, dm.E, [D, DDl](int64_t k) {  // accumulated d(A_R^T)
      const int64_t s = k / DDl, r = k % DDl, b = r / D, a = r % D;
      return s * DDl + a * D + b;
    });
  if (gC)
    pC.reduce_into(gC, dm.E, [DDl, c](int64_t k) {  // (s*c+o, a, b) -> (s, a, b, o)
      const int64_t so = k / DDl, r = k % DDl, s = so / c, o = so % c;
      return (s * DDl + r) * c + o;
    });
  return bad.load();
}

}  // namespace

template <typename T>
int64_t tn_attention_forward(XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb, const T* v,
                             bool vpb, T* W, Dims dm, int num_threads) {
  check_dims(dm);
  return dispatch_dim<T>(dm.D, [&](auto ops) {
    using Ops = decltype(ops);
    return x.kind == kReal ? forward_impl<Ops, T, true>(ops, x, AL, AR, C, u, upb, v, vpb, W, dm, num_threads)
                           : forward_impl<Ops, T, false>(ops, x, AL, AR, C, u, upb, v, vpb, W, dm, num_threads);
  });
}

template <typename T>
int64_t tn_attention_backward(XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb, const T* v,
                              bool vpb, const T* gW, T* gAL, T* gAR, T* gC, T* gu, T* gv, T* gx, Dims dm,
                              int num_threads) {
  check_dims(dm);
  return dispatch_dim<T>(dm.D, [&](auto ops) {
    using Ops = decltype(ops);
    return x.kind == kReal ? backward_impl<Ops, T, true>(ops, x, AL, AR, C, u, upb, v, vpb, gW, gAL, gAR, gC, gu,
                                                         gv, gx, dm, num_threads)
                           : backward_impl<Ops, T, false>(ops, x, AL, AR, C, u, upb, v, vpb, gW, gAL, gAR, gC, gu,
                                                          gv, nullptr, dm, num_threads);
  });
}

template <typename T>
int64_t tn_attention_mse_step(XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb, const T* v,
                              bool vpb, MseHead<T> head, double* loss, double* wrong, T* grad_scale, T* gAL, T* gAR,
                              T* gC, T* gu, T* gv, Dims dm, int num_threads) {
  check_dims(dm);
  if (x.kind == kReal) throw std::invalid_argument("tnattn: tn_attention_mse_step needs integer symbols");
  if (dm.c != 1) throw std::invalid_argument("tnattn: tn_attention_mse_step needs c = 1");
  std::vector<double> sums(size_t(dm.E) * 3, 0.0);
  const int64_t bad = dispatch_dim<T>(dm.D, [&](auto ops) {
    using Ops = decltype(ops);
    return backward_impl<Ops, T, false>(ops, x, AL, AR, C, u, upb, v, vpb, nullptr, gAL, gAR, gC, gu, gv, nullptr,
                                        dm, num_threads, &head, sums.data());
  });
  for (int64_t e = 0; e < dm.E; ++e) {
    loss[e] = sums[e * 3];
    wrong[e] = sums[e * 3 + 1];
    if (grad_scale) grad_scale[e] = static_cast<T>(sums[e * 3 + 2]);
  }
  return bad;
}

template <typename T>
int64_t tn_attention_count_wrong(XArg x, const T* AL, const T* AR, const T* C, const T* u, bool upb, const T* v,
                                 bool vpb, const T* sign, const uint8_t* y, bool y_shared, double* wrong, Dims dm,
                                 int num_threads) {
  check_dims(dm);
  if (x.kind == kReal) throw std::invalid_argument("tnattn: tn_attention_count_wrong needs integer symbols");
  if (dm.c != 1) throw std::invalid_argument("tnattn: tn_attention_count_wrong needs c = 1");
  const CountHead<T> head{sign, y, y_shared};
  return dispatch_dim<T>(dm.D, [&](auto ops) {
    using Ops = decltype(ops);
    return forward_impl<Ops, T, false>(ops, x, AL, AR, C, u, upb, v, vpb, nullptr, dm, num_threads, &head, wrong);
  });
}

#define TNATTN_INSTANTIATE(T)                                                                                \
  template int64_t tn_attention_forward<T>(XArg, const T*, const T*, const T*, const T*, bool, const T*, bool, \
                                           T*, Dims, int);                                                   \
  template int64_t tn_attention_backward<T>(XArg, const T*, const T*, const T*, const T*, bool, const T*,     \
                                            bool, const T*, T*, T*, T*, T*, T*, T*, Dims, int);      \
  template int64_t tn_attention_mse_step<T>(XArg, const T*, const T*, const T*, const T*, bool, const T*, bool, \
                                            MseHead<T>, double*, double*, T*, T*, T*, T*, T*, T*, Dims, int); \
  template int64_t tn_attention_count_wrong<T>(XArg, const T*, const T*, const T*, const T*, bool, const T*,    \
                                               bool, const T*, const uint8_t*, bool, double*, Dims, int);
TNATTN_INSTANTIATE(float)
TNATTN_INSTANTIATE(double)
#undef TNATTN_INSTANTIATE

}  // namespace cpu
}  // namespace tnattn

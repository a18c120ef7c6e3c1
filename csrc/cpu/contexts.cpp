// CPU kernels: normalised contexts (forward) and their reverse adjoint scan (backward).
#include <atomic>
#include <stdexcept>
#include <vector>

#include "detail.h"

namespace tnattn {
namespace cpu {

using namespace detail;

namespace {

template <class Ops, typename T, bool REAL>
int64_t forward_impl(const Ops& ops, const T* A, XArg x, const T* boundary, bool bpb, T* out, Dims dm,
                     bool reverse, int num_threads) {
  const int D = dm.D, d = dm.d, Dp = ops.D;
  const int64_t M = dm.M;
  const Blocks blk(dm.N);
  const int64_t units = dm.E * blk.nb;
  const double work = double(dm.E) * dm.N * M * Dp * Dp * (REAL ? d : 1);
  const int nthreads = choose_threads(num_threads, units, work);
  // With D already a padded size the scan writes straight into `out`; else via a padded scratch.
  const bool direct = (D == Dp);
  std::atomic<int64_t> bad{0};
  parallel_ranges(units, nthreads, [&](int, int64_t lo, int64_t hi) {
    std::vector<int32_t> sym(REAL ? 0 : size_t(M) * kBlock);
    std::vector<T> mat(size_t(d) * Dp * Dp);
    std::vector<T> Ys(direct ? 0 : size_t(M) * kBlock * Dp);
    int64_t cur_e = -1, nbad = 0;
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t e = blk.e(unit), n0 = blk.n0(unit);
      const int np = blk.np(unit);
      if (e != cur_e) pad_mats(A + e * d * D * D, mat.data(), d, D, Dp, /*transpose=*/reverse);
      cur_e = e;
      BlockX<T> X;
      if (int b = prepare_block<T, REAL>(x, dm, e, n0, np, sym.data(), X)) {
        nbad += b;
        continue;
      }
      const T* bnd[kBlock];
      for (int p = 0; p < np; ++p) bnd[p] = boundary_row(boundary, bpb, dm, e, n0 + p);
      T* out_blk = out + (e * dm.N + n0) * M * D;
      Strided<T> Y = direct ? Strided<T>{out_blk, M * D, D} : Strided<T>{Ys.data(), Dp, int64_t(np) * Dp};
      scan_forward<Ops, T, REAL>(ops, mat.data(), X, d, bnd, D, M, reverse, Y, Strided<T>{});
      if (!direct)
        for (int p = 0; p < np; ++p)
          for (int64_t i = 0; i < M; ++i) std::copy(Y.at(p, i), Y.at(p, i) + D, out_blk + (p * M + i) * D);
    }
    bad += nbad;
  });
  return bad.load();
}

template <class Ops, typename T, bool REAL>
int64_t backward_impl(const Ops& ops, const T* A, XArg x, const T* boundary, bool bpb, const T* grad_out,
                      T* grad_A, T* grad_boundary, T* grad_x, Dims dm, bool reverse, int num_threads) {
  const int D = dm.D, d = dm.d, Dp = ops.D;
  const int64_t M = dm.M, DDp = int64_t(d) * Dp * Dp;
  const Blocks blk(dm.N);
  const int64_t units = dm.E * blk.nb;
  const double work = 3.0 * dm.E * dm.N * M * Dp * Dp * (REAL ? d : 1);
  const int nthreads = choose_threads(num_threads, units, work);
  GroupPartials partA(nthreads, grad_A ? int64_t(d) * D * D : 0, units, blk);
  std::atomic<int64_t> bad{0};
  parallel_ranges(units, nthreads, [&](int tid, int64_t lo, int64_t hi) {
    std::vector<int32_t> sym(REAL ? 0 : size_t(M) * kBlock);
    std::vector<T> mat(DDp), matT(DDp), dmat(grad_A ? DDp : 0, T(0));
    const size_t vecs = size_t(M) * kBlock * Dp;
    std::vector<T> Ys(vecs), Gs(vecs), Ns(size_t(M) * kBlock), gBp(size_t(kBlock) * Dp), carry(size_t(kBlock) * Dp);
    int64_t cur_e = -1, nbad = 0;
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t e = blk.e(unit), n0 = blk.n0(unit);
      const int np = blk.np(unit);
      if (e != cur_e) {
        // Left: mat = A, adjoint with A^T. Right: mat = A^T, adjoint with A, accumulates d(A^T).
        pad_mats(A + e * d * D * D, mat.data(), d, D, Dp, reverse);
        pad_mats(A + e * d * D * D, matT.data(), d, D, Dp, !reverse);
        cur_e = e;
      }
      BlockX<T> X;
      if (int b = prepare_block<T, REAL>(x, dm, e, n0, np, sym.data(), X)) {
        nbad += b;
        continue;
      }
      const T* bnd[kBlock];
      T* gX[kBlock];
      for (int p = 0; p < np; ++p) {
        bnd[p] = boundary_row(boundary, bpb, dm, e, n0 + p);
        gX[p] = grad_x ? grad_x + (e * dm.N + n0 + p) * M * d : nullptr;
        if (gX[p]) std::fill(gX[p], gX[p] + M * d, T(0));
      }
      const int64_t st = int64_t(np) * Dp;
      Strided<T> Y{Ys.data(), Dp, st}, Nr{Ns.data(), 1, np};
      scan_forward<Ops, T, REAL>(ops, mat.data(), X, d, bnd, D, M, reverse, Y, Nr);
      // The incoming gradient, copied into the padded layout once (see StepOps::add).
      const T* go = grad_out + (e * dm.N + n0) * M * D;
      Strided<T> G{Gs.data(), Dp, st};
      std::fill(Gs.begin(), Gs.begin() + M * st, T(0));
      for (int p = 0; p < np; ++p)
        for (int64_t i = 0; i < M; ++i) std::copy(go + (p * M + i) * D, go + (p * M + i + 1) * D, G.at(p, i));
      auto local = [&](int64_t i, T* carry) {
        for (int p = 0; p < np; ++p) ops.add(carry + p * Dp, G.at(p, i));
      };
      scan_backward<Ops, T, REAL>(ops, matT.data(), X, d, M, reverse, Strided<const T>{Y.base, Y.ps, Y.is},
                                  Strided<const T>{Nr.base, Nr.ps, Nr.is}, local, carry.data(),
                                  grad_A ? dmat.data() : nullptr, grad_boundary ? gBp.data() : nullptr,
                                  grad_x ? gX : nullptr);
      if (grad_boundary)
        for (int p = 0; p < np; ++p)
          std::copy(gBp.data() + p * Dp, gBp.data() + p * Dp + D, grad_boundary + (e * dm.N + n0 + p) * D);
      // Per-block flush into double keeps float accumulation chains short (M * kBlock terms).
      if (grad_A) partA.flush_padded(tid, e, dmat.data(), d, D, Dp);
    }
    bad += nbad;
  });
  if (grad_A) {
    if (!reverse) {
      partA.reduce_into(grad_A, dm.E, [](int64_t k) { return k; });
    } else {  // accumulated d(A^T): transpose back
      partA.reduce_into(grad_A, dm.E, [D](int64_t k) {
        const int64_t DDl = int64_t(D) * D, s = k / DDl, r = k % DDl, b = r / D, a = r % D;
        return s * DDl + a * D + b;
      });
    }
  }
  return bad.load();
}

}  // namespace

template <typename T>
int64_t contexts_forward(const T* A, XArg x, const T* boundary, bool bpb, T* out, Dims dm, bool reverse,
                         int num_threads) {
  check_dims(dm);
  return dispatch_dim<T>(dm.D, [&](auto ops) {
    using Ops = decltype(ops);
    return x.kind == kReal ? forward_impl<Ops, T, true>(ops, A, x, boundary, bpb, out, dm, reverse, num_threads)
                           : forward_impl<Ops, T, false>(ops, A, x, boundary, bpb, out, dm, reverse, num_threads);
  });
}

template <typename T>
int64_t contexts_backward(const T* A, XArg x, const T* boundary, bool bpb, const T* grad_out, T* grad_A,
                          T* grad_boundary, T* grad_x, Dims dm, bool reverse, int num_threads) {
  check_dims(dm);
  return dispatch_dim<T>(dm.D, [&](auto ops) {
    using Ops = decltype(ops);
    return x.kind == kReal ? backward_impl<Ops, T, true>(ops, A, x, boundary, bpb, grad_out, grad_A, grad_boundary,
                                                         grad_x, dm, reverse, num_threads)
                           : backward_impl<Ops, T, false>(ops, A, x, boundary, bpb, grad_out, grad_A, grad_boundary,
                                                          nullptr, dm, reverse, num_threads);
  });
}

template int64_t contexts_forward<float>(const float*, XArg, const float*, bool, float*, Dims, bool, int);
template int64_t contexts_forward<double>(const double*, XArg, const double*, bool, double*, Dims, bool, int);
template int64_t contexts_backward<float>(const float*, XArg, const float*, bool, const float*, float*, float*,
                                          float*, Dims, bool, int);
template int64_t contexts_backward<double>(const double*, XArg, const double*, bool, const double*, double*,
                                           double*, double*, Dims, bool, int);

}  // namespace cpu
}  // namespace tnattn

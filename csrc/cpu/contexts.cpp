// CPU kernels: normalised contexts (forward) and their reverse adjoint scan (backward).
#include <atomic>
#include <vector>

#include "detail.h"

namespace tnattn {
namespace cpu {

using namespace detail;

namespace {

template <typename T>
const T* boundary_row(const T* boundary, bool per_batch, const Dims& dm, int64_t e, int64_t n) {
  const int64_t Nb = per_batch ? dm.N : 1;
  return boundary + (e * Nb + (per_batch ? n : 0)) * dm.D;
}

template <typename T>
BlockX<T> block_inputs(const XArg& x, int64_t e, int64_t n0, int np, const Dims& dm) {
  BlockX<T> X;
  X.np = np;
  if (x.kind == kReal) {
    const int64_t xe = x.shared ? 0 : e;
    for (int p = 0; p < np; ++p) X.xr[p] = static_cast<const T*>(x.ptr) + ((xe * dm.N + n0 + p) * dm.M) * dm.d;
  }
  return X;
}

template <typename T, int DC, bool REAL>
int64_t contexts_forward_impl(const T* A, XArg x, const T* boundary, bool bpb, T* out, Dims dm,
                              bool reverse, int num_threads) {
  const int D = dm.D, d = dm.d;
  const Blocks blk(dm.N);
  const int64_t units = dm.E * blk.nb;
  const double work = double(dm.E) * dm.N * dm.M * D * D * (REAL ? d : 1);
  const int nthreads = choose_threads(num_threads, units, work);
  std::atomic<int64_t> bad{0};
  parallel_ranges(units, nthreads, [&](int, int64_t lo, int64_t hi) {
    std::vector<int32_t> sym(REAL ? 0 : static_cast<size_t>(dm.M) * kBlock);
    std::vector<T> AT(static_cast<size_t>(d) * D * D);
    int64_t cur_e = -1;
    int64_t nbad = 0;
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t e = blk.e(unit), n0 = blk.n0(unit);
      const int np = blk.np(unit);
      const T* Ae = A + e * d * D * D;
      if (reverse && e != cur_e) transpose_mats(Ae, AT.data(), d, D);
      cur_e = e;
      BlockX<T> X = block_inputs<T>(x, e, n0, np, dm);
      if constexpr (!REAL) {
        const int b = stage_symbols(x, e, n0, np, dm, sym.data());
        if (b) {
          nbad += b;
          continue;
        }
        X.sym = sym.data();
      }
      const T* bnd[kBlock];
      for (int p = 0; p < np; ++p) bnd[p] = boundary_row(boundary, bpb, dm, e, n0 + p);
      Strided<T> Y{out + (e * dm.N + n0) * dm.M * D, dm.M * D, D};
      scan_forward<T, DC, REAL>(reverse ? AT.data() : Ae, X, d, bnd, dm.M, D, reverse, Y, Strided<T>{});
    }
    bad += nbad;
  });
  return bad.load();
}

template <typename T, int DC, bool REAL>
int64_t contexts_backward_impl(const T* A, XArg x, const T* boundary, bool bpb, const T* grad_out,
                               T* grad_A, T* grad_boundary, T* grad_x, Dims dm, bool reverse,
                               int num_threads) {
  const int D = dm.D, d = dm.d;
  const int64_t M = dm.M;
  const Blocks blk(dm.N);
  const int64_t units = dm.E * blk.nb;
  const double work = 3.0 * dm.E * dm.N * dm.M * D * D * (REAL ? d : 1);
  const int nthreads = choose_threads(num_threads, units, work);
  const int64_t DD = int64_t(d) * D * D;
  GroupPartials partA(nthreads, grad_A ? DD : 0, units, blk);
  std::atomic<int64_t> bad{0};
  parallel_ranges(units, nthreads, [&](int tid, int64_t lo, int64_t hi) {
    std::vector<int32_t> sym(REAL ? 0 : static_cast<size_t>(M) * kBlock);
    std::vector<T> AT(DD), dmat(grad_A ? DD : 0, T(0));
    std::vector<T> Ys(static_cast<size_t>(M) * kBlock * D), Ns(static_cast<size_t>(M) * kBlock);
    std::vector<T> work_buf(static_cast<size_t>(2 * kBlock + 1) * D);
    int64_t cur_e = -1;
    int64_t nbad = 0;
    for (int64_t unit = lo; unit < hi; ++unit) {
      const int64_t e = blk.e(unit), n0 = blk.n0(unit);
      const int np = blk.np(unit);
      const T* Ae = A + e * DD;
      if (e != cur_e) {
        transpose_mats(Ae, AT.data(), d, D);
        cur_e = e;
      }
      BlockX<T> X = block_inputs<T>(x, e, n0, np, dm);
      if constexpr (!REAL) {
        const int b = stage_symbols(x, e, n0, np, dm, sym.data());
        if (b) {
          nbad += b;
          continue;
        }
        X.sym = sym.data();
      }
      const T* bnd[kBlock];
      for (int p = 0; p < np; ++p) bnd[p] = boundary_row(boundary, bpb, dm, e, n0 + p);
      // Left: mat = A, adjoint uses A^T. Right: mat = A^T, adjoint uses A (and accumulates d(A^T)).
      const T* mat = reverse ? AT.data() : Ae;
      const T* matT = reverse ? Ae : AT.data();
      Strided<T> Y{Ys.data(), D, int64_t(np) * D};
      Strided<T> Nr{Ns.data(), 1, np};
      scan_forward<T, DC, REAL>(mat, X, d, bnd, M, D, reverse, Y, Nr);
      T* gB[kBlock];
      T* gX[kBlock];
      for (int p = 0; p < np; ++p) {
        gB[p] = grad_boundary ? grad_boundary + (e * dm.N + n0 + p) * D : nullptr;
        gX[p] = grad_x ? grad_x + (e * dm.N + n0 + p) * M * d : nullptr;
        if (gX[p]) std::fill(gX[p], gX[p] + M * d, T(0));
      }
      Strided<const T> G{grad_out + (e * dm.N + n0) * M * D, M * D, D};
      scan_backward<T, DC, REAL>(mat, matT, X, d, M, D, reverse, Strided<const T>{Y.base, Y.ps, Y.is},
                                 Strided<const T>{Nr.base, Nr.ps, Nr.is}, G,
                                 grad_A ? dmat.data() : nullptr, grad_boundary ? gB : nullptr,
                                 grad_x ? gX : nullptr, work_buf.data());
      // Per-block flush into double keeps float accumulation chains short (M * kBlock terms).
      if (grad_A) partA.flush(tid, e, dmat.data());
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
  return dispatch_dim(dm.D, [&](auto dc) {
    constexpr int DC = decltype(dc)::value;
    return x.kind == kReal ? contexts_forward_impl<T, DC, true>(A, x, boundary, bpb, out, dm, reverse, num_threads)
                           : contexts_forward_impl<T, DC, false>(A, x, boundary, bpb, out, dm, reverse, num_threads);
  });
}

template <typename T>
int64_t contexts_backward(const T* A, XArg x, const T* boundary, bool bpb, const T* grad_out, T* grad_A,
                          T* grad_boundary, T* grad_x, Dims dm, bool reverse, int num_threads) {
  return dispatch_dim(dm.D, [&](auto dc) {
    constexpr int DC = decltype(dc)::value;
    return x.kind == kReal
               ? contexts_backward_impl<T, DC, true>(A, x, boundary, bpb, grad_out, grad_A, grad_boundary,
                                                     grad_x, dm, reverse, num_threads)
               : contexts_backward_impl<T, DC, false>(A, x, boundary, bpb, grad_out, grad_A, grad_boundary,
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

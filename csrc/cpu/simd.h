// Per-step operations of the CPU kernels, in two flavours with one interface:
//   StepOps<T, DP> with DP in {4, 8, 16, 32}: the vectors are zero-padded to DP lanes and each one
//     is a single GCC/Clang vector (generic vector extensions: SSE/AVX/AVX-512 or NEON, whatever
//     the compiler targets). Zero padding is exact: padded matrix rows/columns and vector lanes are
//     0 and stay 0 through every operation (mat-vecs, norms, adjoints, outer products).
//   StepOps<T, 0>: runtime D, no padding, the portable helpers of tnattn/common.h.
// Both implement exactly the arithmetic of tnattn/common.h (same formulas, same exact-zero rule);
// only the summation order inside a dot product / mat-vec differs.
#pragma once

#include <cstring>

#include "tnattn/common.h"

namespace tnattn {
namespace cpu {
namespace detail {

template <typename T, int W>
struct VecT {
  typedef T type __attribute__((vector_size(W * sizeof(T))));
};
template <typename T, int W>
using vec = typename VecT<T, W>::type;

template <int W, typename T>
inline vec<T, W> vload(const T* p) {
  vec<T, W> v;
  std::memcpy(&v, p, sizeof(v));  // unaligned load
  return v;
}
template <int W, typename T>
inline void vstore(T* p, vec<T, W> v) {
  std::memcpy(p, &v, sizeof(v));
}
// Pairwise (tree) horizontal sum: short dependency chain, fixed order.
template <int W, typename T>
inline T hsum(vec<T, W> v) {
  if constexpr (W == 1) {
    return v[0];
  } else {
    vec<T, W / 2> lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return hsum<W / 2, T>(lo + hi);
  }
}

template <typename T, int DP>
struct StepOps {
  static_assert(DP == 4 || DP == 8 || DP == 16 || DP == 32, "padded sizes are powers of two");
  using V = vec<T, DP>;
  static constexpr int D = DP;  // padded length: the stride of every vector and matrix row
  // Rows that can be nonzero: the real D rounded up to even (the mat-vecs run two accumulators).
  // Padded rows are zero and are multiplied by zero vector lanes, so skipping them is exact; at
  // D = 10 (padded to 16) this removes 3/8 of the vector operations of every mat-vec.
  int rows;
  explicit StepOps(int Dreal) : rows(Dreal + (Dreal & 1) < DP ? Dreal + (Dreal & 1) : DP) {}

  // v^T mat (mat: DP rows of DP).
  // One row per vector operation, v[a] broadcast from memory. (Packing two D = 8 float rows into
  // one AVX-512 register with in-register broadcasts was measured slower: shuffle-port bound.)
  V vm(V v, const T* mat) const {
    T vs[DP];
    vstore<DP>(vs, v);
    V a0 = vload<DP>(mat) * vs[0];  // two accumulators halve the FMA chain
    V a1 = vload<DP>(mat + DP) * vs[1];
    for (int a = 2; a < rows; a += 2) {
      a0 += vload<DP>(mat + a * DP) * vs[a];
      a1 += vload<DP>(mat + (a + 1) * DP) * vs[a + 1];
    }
    return a0 + a1;
  }
  // dmat += u (x) w, u[a] broadcast from memory
  void outer_mem(const T* u, V w, T* dmat) const {
    for (int a = 0; a < rows; ++a) vstore<DP>(dmat + a * DP, vload<DP>(dmat + a * DP) + w * u[a]);
  }
  void outer(V u, V w, T* dmat) const {
    T us[DP];
    vstore<DP>(us, u);
    outer_mem(us, w, dmat);
  }
  // v^T mat with v[a] broadcast straight from memory (no round trip through a register).
  V vm_mem(const T* v, const T* mat) const {
    V a0 = vload<DP>(mat) * v[0];
    V a1 = vload<DP>(mat + DP) * v[1];
    for (int a = 2; a < rows; a += 2) {
      a0 += vload<DP>(mat + a * DP) * v[a];
      a1 += vload<DP>(mat + (a + 1) * DP) * v[a + 1];
    }
    return a0 + a1;
  }
  // Normalise acc with the exact-zero rule, store it once, return the inverse norm.
  static T finish(V acc, T* y) {
    const T inv = inv_norm(hsum<DP, T>(acc * acc));
    vstore<DP>(y, acc * inv);
    return inv;
  }
  // y = b/|b| from an unpadded boundary b (Dreal entries), zero-padded; returns 1/|b| (or 0).
  T boundary(const T* b, int Dreal, T* y) const {
    T tmp[DP] = {};
    for (int k = 0; k < Dreal; ++k) tmp[k] = b[k];
    return finish(vload<DP>(tmp), y);
  }
  // y = normalize(yp^T mat); returns the inverse pre-normalisation norm.
  T step(const T* yp, const T* mat, T* y) const { return finish(vm_mem(yp, mat), y); }
  // y = normalize(yp^T sum_s xs[s] mats[s]).
  T step_embed(const T* yp, const T* mats, const T* xs, int d, T* y) const {
    V acc = V{};
    for (int s = 0; s < d; ++s) acc += vm_mem(yp, mats + s * DP * DP) * xs[s];
    return finish(acc, y);
  }
  // Whole-vector updates. (Element-wise scalar writes followed by a vector read of the same vector
  // defeat store-to-load forwarding, which costs ~15 cycles on the scan's dependency chain.)
  void add(T* g, const T* src) const { vstore<DP>(g, vload<DP>(g) + vload<DP>(src)); }
  void zero(T* g) const { vstore<DP>(g, V{}); }

  static V adjoint_gw(const T* y, T inv, const T* g) {  // (g - y (y.g)) * inv
    const V yv = vload<DP>(y), gv = vload<DP>(g);
    const T yg = hsum<DP, T>(yv * gv);
    return (gv - yv * yg) * inv;
  }
  // Backward of y = normalize(y_prev^T mat_s) (inv = 1/|y_prev^T mat_s|) given g = dLoss/dy:
  // gprev = mat_s gw (= gw^T matT_s), the gradient reaching y_prev through this step (gprev may
  // alias g); dmat_s += y_prev (x) gw when non-null.
  void adjoint(const T* y_prev, const T* y, T inv, const T* g, T* gprev, const T* matT_s, T* dmat_s) const {
    const V gw = adjoint_gw(y, inv, g);
    vstore<DP>(gprev, vm(gw, matT_s));
    if (dmat_s) outer_mem(y_prev, gw, dmat_s);
  }
  // The same for an embedding xs (d weights); gx[s] += y_prev^T mat_s gw when gx is non-null.
  // gprev = sum_s xs[s] mat_s gw (may alias g).
  void adjoint_embed(const T* y_prev, const T* y, T inv, const T* g, T* gprev, const T* matsT, const T* xs, int d,
                     T* dmats, T* gx) const {
    const V gw = adjoint_gw(y, inv, g);
    const V ypv = vload<DP>(y_prev);
    V gp = V{};
    for (int s = 0; s < d; ++s) {
      const V u = vm(gw, matsT + s * DP * DP);  // mat_s gw
      gp += u * xs[s];
      if (gx) gx[s] += hsum<DP, T>(ypv * u);
      if (dmats) outer(ypv * xs[s], gw, dmats + s * DP * DP);
    }
    vstore<DP>(gprev, gp);
  }
  // Boundary gradient: gb = adjoint of b -> b/|b| (padded output).
  void boundary_adjoint(const T* y, T inv, const T* g, T* gb) const { vstore<DP>(gb, adjoint_gw(y, inv, g)); }
  // W[k] = L^T Ct[k] R for k < K.
  void local_map(const T* L, const T* R, const T* Ct, int K, T* W) const {
    const V Lv = vload<DP>(L), Rv = vload<DP>(R);
    for (int k = 0; k < K; ++k) W[k] = hsum<DP, T>(vm(Lv, Ct + k * DP * DP) * Rv);
  }
  // gL += sum_k gW[k] Ct[k] R, gR += sum_k gW[k] Ct[k]^T L, dCt[k] += gW[k] L (x) R.
  void local_map_backward(const T* L, const T* R, const T* Ct, const T* CtT, int K, const T* gW, T* gL, T* gR,
                          T* dCt) const {
    V gLv = vload<DP>(gL), gRv = vload<DP>(gR);
    const V Lv = vload<DP>(L), Rv = vload<DP>(R);
    for (int k = 0; k < K; ++k) {
      const V gLk = Lv * gW[k];
      gRv += vm(gLk, Ct + k * DP * DP);
      gLv += vm(Rv * gW[k], CtT + k * DP * DP);
      if (dCt) outer(gLk, Rv, dCt + k * DP * DP);
    }
    vstore<DP>(gL, gLv);
    vstore<DP>(gR, gRv);
  }
  // Local maps of kGroup sites at once, so that every row of C is loaded once per group instead of
  // once per site (the per-site form is load-bound). Pointers of unused slots may repeat a valid
  // site; their results go to scratch.
  static constexpr int kGroup = 4;
  void local_maps_group(const T* const* L, const T* const* R, const T* Ct, int K, T* const* W) const {
    V Rv[kGroup];
    for (int j = 0; j < kGroup; ++j) Rv[j] = vload<DP>(R[j]);
    for (int k = 0; k < K; ++k) {
      const T* ck = Ct + k * DP * DP;
      V t[kGroup] = {};
      for (int a = 0; a < rows; ++a) {
        const V row = vload<DP>(ck + a * DP);
        for (int j = 0; j < kGroup; ++j) t[j] += row * L[j][a];
      }
      for (int j = 0; j < kGroup; ++j) W[j][k] = hsum<DP, T>(t[j] * Rv[j]);
    }
  }
  // local_map_backward for kGroup sites: gL[j] += ..., gR[j] = ... (written, not accumulated),
  // dCt += sum_j gW[j][k] L[j] (x) R[j]. Unused slots must point at zero gW.
  void local_map_backward_group(const T* const* L, const T* const* R, const T* Ct, const T* CtT, int K,
                                const T* const* gW, T* const* gL, T* const* gR, T* dCt) const {
    V Lv[kGroup], Rv[kGroup], gLv[kGroup], gRv[kGroup];
    for (int j = 0; j < kGroup; ++j) {
      Lv[j] = vload<DP>(L[j]);
      Rv[j] = vload<DP>(R[j]);
      gLv[j] = vload<DP>(gL[j]);
      gRv[j] = V{};
    }
    for (int k = 0; k < K; ++k) {
      const T* ck = Ct + k * DP * DP;
      const T* ckt = CtT + k * DP * DP;
      V t[kGroup] = {}, u[kGroup] = {};
      for (int a = 0; a < rows; ++a) {
        const V row = vload<DP>(ck + a * DP), rowt = vload<DP>(ckt + a * DP);
        for (int j = 0; j < kGroup; ++j) {
          t[j] += row * L[j][a];   // (L^T Ct[k])
          u[j] += rowt * R[j][a];  // (Ct[k] R)
        }
      }
      T gLk[kGroup][DP];
      for (int j = 0; j < kGroup; ++j) {
        const T g = gW[j][k];
        gRv[j] += t[j] * g;
        gLv[j] += u[j] * g;
        vstore<DP>(gLk[j], Lv[j] * g);
      }
      if (dCt) {
        T* dk = dCt + k * DP * DP;
        for (int a = 0; a < rows; ++a) {
          V row = vload<DP>(dk + a * DP);
          for (int j = 0; j < kGroup; ++j) row += Rv[j] * gLk[j][a];
          vstore<DP>(dk + a * DP, row);
        }
      }
    }
    for (int j = 0; j < kGroup; ++j) {
      vstore<DP>(gL[j], gLv[j]);
      vstore<DP>(gR[j], gRv[j]);
    }
  }
};

// Runtime-D flavour: the portable helpers, no padding.
template <typename T>
struct StepOps<T, 0> {
  int D;
  explicit StepOps(int D_) : D(D_) {}
  T boundary(const T* b, int, T* y) const {
    for (int k = 0; k < D; ++k) y[k] = b[k];
    return normalize_inplace<0>(y, D);
  }
  T step(const T* yp, const T* mat, T* y) const {
    vecmat<0>(yp, mat, y, D);
    return normalize_inplace<0>(y, D);
  }
  T step_embed(const T* yp, const T* mats, const T* xs, int d, T* y) const {
    vecmat_embed<0>(yp, mats, xs, d, y, D);
    return normalize_inplace<0>(y, D);
  }
  void add(T* g, const T* src) const {
    for (int k = 0; k < D; ++k) g[k] += src[k];
  }
  void zero(T* g) const {
    for (int k = 0; k < D; ++k) g[k] = T(0);
  }
  // Stack scratch: the runtime-D path is only used for 32 < D <= kMaxGenericD.
  void adjoint(const T* y_prev, const T* y, T inv, const T* g, T* gprev, const T* matT_s, T* dmat_s) const {
    T gw[kMaxGenericD];
    step_adjoint<0>(y_prev, y, inv, g, matT_s, gw, gprev, dmat_s, D);
  }
  void adjoint_embed(const T* y_prev, const T* y, T inv, const T* g, T* gprev, const T* matsT, const T* xs, int d,
                     T* dmats, T* gx) const {
    T gw[kMaxGenericD], u[kMaxGenericD];
    step_adjoint_embed<0>(y_prev, y, inv, g, matsT, xs, d, gw, gprev, dmats, gx, u, D);
  }
  void boundary_adjoint(const T* y, T inv, const T* g, T* gb) const { normalize_adjoint<0>(y, inv, g, gb, D); }
  void local_map(const T* L, const T* R, const T* Ct, int K, T* W) const {
    T tmp[kMaxGenericD];
    tnattn::local_map<0>(L, R, Ct, K, W, tmp, D);
  }
  void local_map_backward(const T* L, const T* R, const T* Ct, const T* CtT, int K, const T* gW, T* gL, T* gR,
                          T* dCt) const {
    tnattn::local_map_backward<0>(L, R, Ct, CtT, K, gW, gL, gR, dCt, D);
  }
  static constexpr int kGroup = 4;
  void local_maps_group(const T* const* L, const T* const* R, const T* Ct, int K, T* const* W) const {
    for (int j = 0; j < kGroup; ++j) local_map(L[j], R[j], Ct, K, W[j]);
  }
  void local_map_backward_group(const T* const* L, const T* const* R, const T* Ct, const T* CtT, int K,
                                const T* const* gW, T* const* gL, T* const* gR, T* dCt) const {
    for (int j = 0; j < kGroup; ++j) {
      zero(gR[j]);
      local_map_backward(L[j], R[j], Ct, CtT, K, gW[j], gL[j], gR[j], dCt);
    }
  }
  // Largest D of the runtime path (stack scratch); bigger D is rejected by the entry points.
  static constexpr int kMaxGenericD = 1024;
};

// Padded length for a bond dimension: the smallest supported power of two, or 0 (runtime path).
inline int padded_dim(int D) {
  if (D <= 4) return 4;
  if (D <= 8) return 8;
  if (D <= 16) return 16;
  if (D <= 32) return 32;
  return 0;
}

}  // namespace detail
}  // namespace cpu
}  // namespace tnattn

// Per-step arithmetic of TN attention, shared by the CPU kernels (csrc/cpu) and the CUDA kernels
// (csrc/cuda). Everything here is a small inline template on the scalar type T (float, double) and
// on a compile-time bond dimension DC: DC > 0 fixes D at compile time (fully unrollable loops,
// registers, vectorisation); DC == 0 takes the runtime argument Drt instead. No allocation, no std::
// containers, no exceptions: the helpers must compile for the device as well.
//
// Layout conventions (all row-major, contiguous):
//   a matrix Mat of the (d, D, D) tensor for symbol s is  Mat + s * D * D,  Mat[a * D + b];
//   the "vecmat" form out[b] = sum_a v[a] * Mat[a][b] is the only mat-vec form used, because it
//   broadcasts v[a] and streams contiguous rows (FMA chains, no horizontal reductions).
//   A left step  l^T A[s]  is vecmat(l, A[s]); a right step  A[s] r  is vecmat(r, A^T[s]), so the
//   kernels keep transposed copies of the small parameter tensors where they need them.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define TNATTN_HD __host__ __device__ __forceinline__
#else
#define TNATTN_HD inline __attribute__((always_inline))
#endif
#define TNATTN_RESTRICT __restrict__
// Full unrolling of the D-loops in device code: with a compile-time DC the CUDA kernels keep their
// vectors in registers only if every index is a constant after unrolling (nvcc's own heuristics stop
// short for DC = 32 and demote the vectors to local memory). A runtime trip count is left alone.
// Empty on the host (the CPU kernels' padded paths use csrc/cpu/simd.h instead).
#if defined(__CUDA_ARCH__)
#define TNATTN_UNROLL _Pragma("unroll")
#else
#define TNATTN_UNROLL
#endif

namespace tnattn {

// The bond dimension in effect: the compile-time one when given, else the runtime one.
template <int DC>
TNATTN_HD constexpr int dim(int Drt) {
  return DC > 0 ? DC : Drt;
}

TNATTN_HD float tn_sqrt(float x) { return sqrtf(x); }
TNATTN_HD double tn_sqrt(double x) { return sqrt(x); }

template <int DC, typename T>
TNATTN_HD T dot(const T* TNATTN_RESTRICT a, const T* TNATTN_RESTRICT b, int Drt) {
  const int D = dim<DC>(Drt);
  T s = T(0);
  TNATTN_UNROLL
  for (int k = 0; k < D; ++k) s += a[k] * b[k];
  return s;
}

// acc[b] += alpha * row[b]
template <int DC, typename T>
TNATTN_HD void axpy(T alpha, const T* TNATTN_RESTRICT row, T* TNATTN_RESTRICT acc, int Drt) {
  const int D = dim<DC>(Drt);
  TNATTN_UNROLL
  for (int b = 0; b < D; ++b) acc[b] += alpha * row[b];
}

// out[b] = sum_a v[a] * mat[a * D + b]   (out must not alias v or mat)
template <int DC, typename T>
TNATTN_HD void vecmat(const T* TNATTN_RESTRICT v, const T* TNATTN_RESTRICT mat, T* TNATTN_RESTRICT out,
                      int Drt) {
  const int D = dim<DC>(Drt);
  TNATTN_UNROLL
  for (int b = 0; b < D; ++b) out[b] = v[0] * mat[b];
  TNATTN_UNROLL
  for (int a = 1; a < D; ++a) axpy<DC>(v[a], mat + a * D, out, Drt);
}

// Embedding-weighted step for real inputs: out[b] = sum_s xs[s] sum_a v[a] mats[s][a][b], i.e.
// vecmat with the matrix sum_s xs[s] mats[s] (never formed).
template <int DC, typename T>
TNATTN_HD void vecmat_embed(const T* TNATTN_RESTRICT v, const T* TNATTN_RESTRICT mats,
                            const T* TNATTN_RESTRICT xs, int d, T* TNATTN_RESTRICT out, int Drt) {
  const int D = dim<DC>(Drt);
  TNATTN_UNROLL
  for (int b = 0; b < D; ++b) out[b] = T(0);
  for (int s = 0; s < d; ++s) {
    const T w = xs[s];
    const T* m = mats + s * D * D;
    TNATTN_UNROLL
    for (int a = 0; a < D; ++a) axpy<DC>(w * v[a], m + a * D, out, Drt);
  }
}

// Reciprocal of the norm sqrt(ss) under the exact-zero rule: 1/sqrt(ss), or 0 when the norm is 0.
// The kernels carry this "inverse norm" from the forward scan to its adjoint (no division there).
template <typename T>
TNATTN_HD T inv_norm(T ss) {
  const T n = tn_sqrt(ss);
  return n > T(0) ? T(1) / n : T(0);
}

// Normalise v in place and return its inverse pre-normalisation norm (inv_norm). Exact-zero rule:
// when the computed norm is 0, v becomes (stays) the zero vector instead of NaN, and
// normalize_adjoint then passes a zero gradient. The norm is the plain sum of squares in T,
// matching torch.linalg.vector_norm.
template <int DC, typename T>
TNATTN_HD T normalize_inplace(T* v, int Drt) {
  const int D = dim<DC>(Drt);
  T ss = T(0);
  TNATTN_UNROLL
  for (int b = 0; b < D; ++b) ss += v[b] * v[b];
  const T inv = inv_norm(ss);
  TNATTN_UNROLL
  for (int b = 0; b < D; ++b) v[b] *= inv;
  return inv;
}

// Adjoint of y = w / |w| with inv = 1/|w| (0 under the exact-zero rule): given g = dLoss/dy,
// gw = dLoss/dw = (g - y (y.g)) * inv. gw may alias g.
template <int DC, typename T>
TNATTN_HD void normalize_adjoint(const T* TNATTN_RESTRICT y, T inv, const T* g, T* gw, int Drt) {
  const int D = dim<DC>(Drt);
  const T yg = dot<DC>(y, g, Drt);
  TNATTN_UNROLL
  for (int b = 0; b < D; ++b) gw[b] = (g[b] - y[b] * yg) * inv;
}

// dmat[a][b] += alpha * u[a] * w[b]
template <int DC, typename T>
TNATTN_HD void outer_acc(T alpha, const T* TNATTN_RESTRICT u, const T* TNATTN_RESTRICT w,
                         T* TNATTN_RESTRICT dmat, int Drt) {
  const int D = dim<DC>(Drt);
  TNATTN_UNROLL
  for (int a = 0; a < D; ++a) axpy<DC>(alpha * u[a], w, dmat + a * D, Drt);
}

// Local maps at one site: W[k] = sum_{a,b} L[a] Ct[k][a][b] R[b] for k < K, where Ct is C
// rearranged to (K = d*c, D, D) with k = s*c + o. `tmp` holds D scalars.
template <int DC, typename T>
TNATTN_HD void local_map(const T* TNATTN_RESTRICT L, const T* TNATTN_RESTRICT R,
                         const T* TNATTN_RESTRICT Ct, int K, T* TNATTN_RESTRICT W,
                         T* TNATTN_RESTRICT tmp, int Drt) {
  const int D = dim<DC>(Drt);
  TNATTN_UNROLL
  for (int k = 0; k < K; ++k) {
    vecmat<DC>(L, Ct + k * D * D, tmp, Drt);  // tmp = L^T Ct[k]
    W[k] = dot<DC>(tmp, R, Drt);
  }
}

// Backward of local_map at one site, given gW[k] = dLoss/dW[k]:
//   gL[a] += sum_k gW[k] (Ct[k] R)[a]     (uses CtT[k] = Ct[k]^T, vecmat form)
//   gR[b] += sum_k gW[k] (L^T Ct[k])[b]
//   dCt[k][a][b] += gW[k] L[a] R[b]       (dCt may be null)
template <int DC, typename T>
TNATTN_HD void local_map_backward(const T* TNATTN_RESTRICT L, const T* TNATTN_RESTRICT R,
                                  const T* TNATTN_RESTRICT Ct, const T* TNATTN_RESTRICT CtT, int K,
                                  const T* TNATTN_RESTRICT gW, T* TNATTN_RESTRICT gL,
                                  T* TNATTN_RESTRICT gR, T* TNATTN_RESTRICT dCt, int Drt) {
  const int D = dim<DC>(Drt);
  TNATTN_UNROLL
  for (int k = 0; k < K; ++k) {
    const T g = gW[k];
    const T* ck = Ct + k * D * D;
    const T* ckt = CtT + k * D * D;
    TNATTN_UNROLL
    for (int a = 0; a < D; ++a) {
      axpy<DC>(g * L[a], ck + a * D, gR, Drt);
      axpy<DC>(g * R[a], ckt + a * D, gL, Drt);
    }
    if (dCt) outer_acc<DC>(g, L, R, dCt + k * D * D, Drt);
  }
}

// Backward of one scan step y = normalize(w), w = y_prev^T Mat[s], for an integer symbol s, with
// inv = 1/|w| as returned by normalize_inplace. g = dLoss/dy (total). Writes gw = dLoss/dw and gprev = dLoss/dy_prev through this step
// (= Mat[s] gw = vecmat(gw, Mat^T[s])); accumulates dmat_s += y_prev (x) gw when dmat_s != null.
// gprev may alias g (g is consumed before gprev is written), which lets a scan carry one buffer.
template <int DC, typename T>
TNATTN_HD void step_adjoint(const T* TNATTN_RESTRICT y_prev, const T* TNATTN_RESTRICT y, T inv,
                            const T* g, const T* TNATTN_RESTRICT matT_s, T* TNATTN_RESTRICT gw,
                            T* gprev,
                            T* TNATTN_RESTRICT dmat_s, int Drt) {
  normalize_adjoint<DC>(y, inv, g, gw, Drt);
  vecmat<DC>(static_cast<const T*>(gw), matT_s, gprev, Drt);
  if (dmat_s) outer_acc<DC>(T(1), y_prev, gw, dmat_s, Drt);
}

// The same for a real embedding xs (d weights): w = y_prev^T (sum_s xs[s] Mat[s]). Also
// accumulates gx[s] += y_prev^T Mat[s] gw (when gx != null). `u` holds D scalars of scratch.
// gprev may alias g.
template <int DC, typename T>
TNATTN_HD void step_adjoint_embed(const T* TNATTN_RESTRICT y_prev, const T* TNATTN_RESTRICT y, T inv,
                                  const T* g, const T* TNATTN_RESTRICT matsT,
                                  const T* TNATTN_RESTRICT xs, int d, T* TNATTN_RESTRICT gw,
                                  T* gprev, T* TNATTN_RESTRICT dmats,
                                  T* TNATTN_RESTRICT gx, T* TNATTN_RESTRICT u, int Drt) {
  const int D = dim<DC>(Drt);
  normalize_adjoint<DC>(y, inv, g, gw, Drt);
  TNATTN_UNROLL
  for (int b = 0; b < D; ++b) gprev[b] = T(0);
  for (int s = 0; s < d; ++s) {
    vecmat<DC>(gw, matsT + s * D * D, u, Drt);  // u = Mat[s] gw
    axpy<DC>(xs[s], u, gprev, Drt);
    if (gx) gx[s] += dot<DC>(y_prev, u, Drt);
    if (dmats) outer_acc<DC>(xs[s], y_prev, gw, dmats + s * D * D, Drt);
  }
}

}  // namespace tnattn

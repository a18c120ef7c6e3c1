// Per-step operations of the CPU kernels, in two flavours with one interface:
//   StepOps<T, W, P>: the vectors are zero-padded to DP = W * P entries held as P native vectors of
//     W lanes (a Pack). W * sizeof(T) never exceeds the register width of the instruction set this
//     translation unit is compiled for (kNativeBytes: 16 for SSE2/NEON, 32 for AVX2, 64 for
//     AVX-512): GCC lowers vector types wider than the target's registers through memory, which was
//     the measured 15x cliff above D = 8 on AVX2 machines. Zero padding is exact: padded matrix
//     rows/columns and vector lanes are 0 and stay 0 through every operation.
//   StepOps<T, 0, 0>: runtime D, no padding, the portable helpers of tnattn/common.h (D > 64).
// Both implement exactly the arithmetic of tnattn/common.h (same formulas, same exact-zero rule);
// only the summation order inside a dot product / mat-vec differs (and with it the last bits of a
// float result between instruction sets).
//
// This header is included inside an instruction-set namespace (see isa_unit.cpp): every name here
// is compiled once per instruction set, under that set's target options.

template <typename T, int W>
struct VecT {
  typedef T type __attribute__((vector_size(W * sizeof(T))));
};
template <typename T, int W>
using vec = typename VecT<T, W>::type;

// P native vectors of W lanes, with the element-wise arithmetic the steps need. The loops have
// compile-time trip counts and are unrolled, so a Pack lives in P registers.
template <typename T, int W, int P>
struct Pack {
  using R = vec<T, W>;
  static constexpr int kLen = W * P;
  R r[P];

  static Pack load(const T* p) {
    Pack v;
#pragma GCC unroll 16
    for (int k = 0; k < P; ++k) std::memcpy(&v.r[k], p + k * W, sizeof(R));  // unaligned load
    return v;
  }
  static void store(T* p, const Pack& v) {
#pragma GCC unroll 16
    for (int k = 0; k < P; ++k) std::memcpy(p + k * W, &v.r[k], sizeof(R));
  }
  // Horizontal sum in a fixed order: the P registers pairwise, then a tree inside the register.
  static T hsum(const Pack& v) {
    R s = v.r[0];
#pragma GCC unroll 16
    for (int k = 1; k < P; ++k) s += v.r[k];
    return hsum_reg<W>(s);
  }
  template <int N>
  static T hsum_reg(vec<T, N> x) {
    if constexpr (N == 1) {
      return x[0];
    } else {
      vec<T, N / 2> lo, hi;
      std::memcpy(&lo, &x, sizeof(lo));
      std::memcpy(&hi, reinterpret_cast<const char*>(&x) + sizeof(lo), sizeof(hi));
      return hsum_reg<N / 2>(lo + hi);
    }
  }
  friend Pack operator+(Pack a, const Pack& b) {
#pragma GCC unroll 16
    for (int k = 0; k < P; ++k) a.r[k] += b.r[k];
    return a;
  }
  friend Pack operator-(Pack a, const Pack& b) {
#pragma GCC unroll 16
    for (int k = 0; k < P; ++k) a.r[k] -= b.r[k];
    return a;
  }
  friend Pack operator*(Pack a, const Pack& b) {
#pragma GCC unroll 16
    for (int k = 0; k < P; ++k) a.r[k] *= b.r[k];
    return a;
  }
  friend Pack operator*(Pack a, T s) {
#pragma GCC unroll 16
    for (int k = 0; k < P; ++k) a.r[k] *= s;
    return a;
  }
  Pack& operator+=(const Pack& b) {
#pragma GCC unroll 16
    for (int k = 0; k < P; ++k) r[k] += b.r[k];
    return *this;
  }
};

// Inverse norm 1/|v| from the plain sum of squares ss when ss is a normal number (the hot path,
// identical to tnattn::inv_norm); otherwise (underflow, overflow, zero, NaN) from a rescaled sum,
// as BLAS nrm2 does, so that entries beyond ~1e19 or below ~1e-19 (float) keep their direction
// instead of collapsing to the zero vector. An all-zero v keeps the exact-zero rule (returns 0).
template <typename T>
__attribute__((noinline)) T rescaled_inv_norm(const T* v, int n, T ss) {
  T m = T(0);
  for (int k = 0; k < n; ++k) m = std::fabs(v[k]) > m ? std::fabs(v[k]) : m;
  if (m == T(0)) return T(0);
  if (!(m <= std::numeric_limits<T>::max())) return inv_norm(ss);  // inf/NaN: as before
  // Scale by a power of two near 1/m (exact) and sum in double: no overflow or underflow left.
  const int ex = std::ilogb(m);
  double s = 0;
  for (int k = 0; k < n; ++k) {
    const double q = std::ldexp(static_cast<double>(v[k]), -ex);
    s += q * q;
  }
  return static_cast<T>(std::ldexp(1.0 / std::sqrt(s), -ex));
}

template <class V, typename T>
inline T safe_inv_norm(const V& acc, T ss) {
  if (ss >= std::numeric_limits<T>::min() && ss <= std::numeric_limits<T>::max()) return T(1) / std::sqrt(ss);
  T tmp[V::kLen];
  V::store(tmp, acc);
  return rescaled_inv_norm(tmp, V::kLen, ss);
}

template <typename T, int W, int P>
struct StepOps {
  static_assert(W * sizeof(T) <= kNativeBytes, "no vector wider than the instruction set's registers");
  using V = Pack<T, W, P>;
  static constexpr int DP = W * P;
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
    V::store(vs, v);
    return vm_mem(vs, mat);
  }
  // dmat += u (x) w, u[a] broadcast from memory
  void outer_mem(const T* u, V w, T* dmat) const {
    for (int a = 0; a < rows; ++a) V::store(dmat + a * DP, V::load(dmat + a * DP) + w * u[a]);
  }
  void outer(V u, V w, T* dmat) const {
    T us[DP];
    V::store(us, u);
    outer_mem(us, w, dmat);
  }
  // v^T mat with v[a] broadcast straight from memory (no round trip through a register).
  V vm_mem(const T* v, const T* mat) const {
    if (rows > DP) __builtin_unreachable();  // (rows <= DP: lets the compiler see the bounds)
    if constexpr (P <= 2) {  // two accumulators halve the FMA chain of short packs
      V a0 = V::load(mat) * v[0];
      V a1 = V::load(mat + DP) * v[1];
      for (int a = 2; a < rows; a += 2) {
        a0 += V::load(mat + a * DP) * v[a];
        a1 += V::load(mat + (a + 1) * DP) * v[a + 1];
      }
      return a0 + a1;
    } else {  // P >= 3 registers are already P independent chains
      V a0 = V::load(mat) * v[0];
      for (int a = 1; a < rows; ++a) a0 += V::load(mat + a * DP) * v[a];
      return a0;
    }
  }
  // Normalise acc with the exact-zero rule, store it once, return the inverse norm.
  static T finish(V acc, T* y) {
    const T inv = safe_inv_norm(acc, V::hsum(acc * acc));
    V::store(y, acc * inv);
    return inv;
  }
  // y = b/|b| from an unpadded boundary b (Dreal entries), zero-padded; returns 1/|b| (or 0).
  T boundary(const T* b, int Dreal, T* y) const {
    T tmp[DP] = {};
    for (int k = 0; k < Dreal; ++k) tmp[k] = b[k];
    return finish(V::load(tmp), y);
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
  void add(T* g, const T* src) const { V::store(g, V::load(g) + V::load(src)); }
  void zero(T* g) const { V::store(g, V{}); }

  static V adjoint_gw(const T* y, T inv, const T* g) {  // (g - y (y.g)) * inv
    const V yv = V::load(y), gv = V::load(g);
    const T yg = V::hsum(yv * gv);
    return (gv - yv * yg) * inv;
  }
  // Backward of y = normalize(y_prev^T mat_s) (inv = 1/|y_prev^T mat_s|) given g = dLoss/dy:
  // gprev = mat_s gw (= gw^T matT_s), the gradient reaching y_prev through this step (gprev may
  // alias g); dmat_s += y_prev (x) gw when non-null.
  void adjoint(const T* y_prev, const T* y, T inv, const T* g, T* gprev, const T* matT_s, T* dmat_s) const {
    const V gw = adjoint_gw(y, inv, g);
    V::store(gprev, vm(gw, matT_s));
    if (dmat_s) outer_mem(y_prev, gw, dmat_s);
  }
  // The same for an embedding xs (d weights); gx[s] += y_prev^T mat_s gw when gx is non-null.
  // gprev = sum_s xs[s] mat_s gw (may alias g).
  void adjoint_embed(const T* y_prev, const T* y, T inv, const T* g, T* gprev, const T* matsT, const T* xs, int d,
                     T* dmats, T* gx) const {
    const V gw = adjoint_gw(y, inv, g);
    const V ypv = V::load(y_prev);
    V gp = V{};
    for (int s = 0; s < d; ++s) {
      const V u = vm(gw, matsT + s * DP * DP);  // mat_s gw
      gp += u * xs[s];
      if (gx) gx[s] += V::hsum(ypv * u);
      if (dmats) outer(ypv * xs[s], gw, dmats + s * DP * DP);
    }
    V::store(gprev, gp);
  }
  // Boundary gradient: gb = adjoint of b -> b/|b| (padded output).
  void boundary_adjoint(const T* y, T inv, const T* g, T* gb) const { V::store(gb, adjoint_gw(y, inv, g)); }
  // W[k] = L^T Ct[k] R for k < K.
  void local_map(const T* L, const T* R, const T* Ct, int K, T* Wout) const {
    const V Lv = V::load(L), Rv = V::load(R);
    for (int k = 0; k < K; ++k) Wout[k] = V::hsum(vm(Lv, Ct + k * DP * DP) * Rv);
  }
  // gL += sum_k gW[k] Ct[k] R, gR += sum_k gW[k] Ct[k]^T L, dCt[k] += gW[k] L (x) R.
  void local_map_backward(const T* L, const T* R, const T* Ct, const T* CtT, int K, const T* gW, T* gL, T* gR,
                          T* dCt) const {
    V gLv = V::load(gL), gRv = V::load(gR);
    const V Lv = V::load(L), Rv = V::load(R);
    for (int k = 0; k < K; ++k) {
      const V gLk = Lv * gW[k];
      gRv += vm(gLk, Ct + k * DP * DP);
      gLv += vm(Rv * gW[k], CtT + k * DP * DP);
      if (dCt) outer(gLk, Rv, dCt + k * DP * DP);
    }
    V::store(gL, gLv);
    V::store(gR, gRv);
  }
  // Local maps of kGroup sites at once, so that every row of C is loaded once per group instead of
  // once per site (the per-site form is load-bound). Pointers of unused slots may repeat a valid
  // site; their results go to scratch.
  // Sites per group: as many as the registers hold (6 packs per site in the backward).
  static constexpr int kGroup = P == 1 ? 4 : (P == 2 ? 2 : 1);
  void local_maps_group(const T* const* L, const T* const* R, const T* Ct, int K, T* const* Wout) const {
    V Rv[kGroup];
    for (int j = 0; j < kGroup; ++j) Rv[j] = V::load(R[j]);
    for (int k = 0; k < K; ++k) {
      const T* ck = Ct + k * DP * DP;
      V t[kGroup] = {};
      for (int a = 0; a < rows; ++a) {
        const V row = V::load(ck + a * DP);
        for (int j = 0; j < kGroup; ++j) t[j] += row * L[j][a];
      }
      for (int j = 0; j < kGroup; ++j) Wout[j][k] = V::hsum(t[j] * Rv[j]);
    }
  }
  // local_map_backward for kGroup sites: gL[j] += ..., gR[j] = ... (written, not accumulated),
  // dCt += sum_j gW[j][k] L[j] (x) R[j]. Unused slots must point at zero gW.
  void local_map_backward_group(const T* const* L, const T* const* R, const T* Ct, const T* CtT, int K,
                                const T* const* gW, T* const* gL, T* const* gR, T* dCt) const {
    V Lv[kGroup], Rv[kGroup], gLv[kGroup], gRv[kGroup];
    for (int j = 0; j < kGroup; ++j) {
      Lv[j] = V::load(L[j]);
      Rv[j] = V::load(R[j]);
      gLv[j] = V::load(gL[j]);
      gRv[j] = V{};
    }
    for (int k = 0; k < K; ++k) {
      const T* ck = Ct + k * DP * DP;
      const T* ckt = CtT + k * DP * DP;
      V t[kGroup] = {}, u[kGroup] = {};
      for (int a = 0; a < rows; ++a) {
        const V row = V::load(ck + a * DP), rowt = V::load(ckt + a * DP);
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
        V::store(gLk[j], Lv[j] * g);
      }
      if (dCt) {
        T* dk = dCt + k * DP * DP;
        for (int a = 0; a < rows; ++a) {
          V row = V::load(dk + a * DP);
          for (int j = 0; j < kGroup; ++j) row += Rv[j] * gLk[j][a];
          V::store(dk + a * DP, row);
        }
      }
    }
    for (int j = 0; j < kGroup; ++j) {
      V::store(gL[j], gLv[j]);
      V::store(gR[j], gRv[j]);
    }
  }
};

// Runtime-D flavour: the portable helpers, no padding.
template <typename T>
struct StepOps<T, 0, 0> {
  int D;
  explicit StepOps(int D_) : D(D_) {}
  // normalize_inplace of tnattn/common.h with the rescaled inverse norm of safe_inv_norm.
  T normalize(T* y) const {
    T ss = T(0);
    for (int k = 0; k < D; ++k) ss += y[k] * y[k];
    const T inv = ss >= std::numeric_limits<T>::min() && ss <= std::numeric_limits<T>::max()
                      ? T(1) / std::sqrt(ss)
                      : rescaled_inv_norm(y, D, ss);
    for (int k = 0; k < D; ++k) y[k] *= inv;
    return inv;
  }
  T boundary(const T* b, int, T* y) const {
    for (int k = 0; k < D; ++k) y[k] = b[k];
    return normalize(y);
  }
  T step(const T* yp, const T* mat, T* y) const {
    vecmat<0>(yp, mat, y, D);
    return normalize(y);
  }
  T step_embed(const T* yp, const T* mats, const T* xs, int d, T* y) const {
    vecmat_embed<0>(yp, mats, xs, d, y, D);
    return normalize(y);
  }
  void add(T* g, const T* src) const {
    for (int k = 0; k < D; ++k) g[k] += src[k];
  }
  void zero(T* g) const {
    for (int k = 0; k < D; ++k) g[k] = T(0);
  }
  // Stack scratch: the runtime-D path is only used for 64 < D <= kMaxGenericD.
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
  void local_maps_group(const T* const* L, const T* const* R, const T* Ct, int K, T* const* Wout) const {
    for (int j = 0; j < kGroup; ++j) local_map(L[j], R[j], Ct, K, Wout[j]);
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


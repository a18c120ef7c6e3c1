// C++ entry points of the CPU kernels (no torch headers: raw pointers to contiguous row-major
// buffers, sizes and flags). The Python layer (tnattn.ops) checks shapes, dtypes, devices and makes
// everything contiguous before calling through tnattn._C.
//
// Every entry point has a leading group (ensemble) dimension E: E independent parameter sets
// processed in one call. Shapes (T = float or double):
//   A, A_left, A_right : (E, d, D, D)         C : (E, d, D, D, c)
//   boundary, u, v     : (E, N, D) when *_per_batch, else (E, 1, D) (shared over the batch)
//   x                  : integer symbols (X, N, M) of uint8/int32/int64, or real embeddings
//                        (X, N, M, d) of T, where X = 1 when x.shared (same inputs for every group)
//                        and X = E otherwise
//   contexts out       : (E, N, M, D)           local maps W : (E, N, M, d, c)
// Gradient outputs are fully written by the kernels (no need to zero them); pass nullptr for any
// gradient that is not wanted. grad_boundary/grad_u/grad_v are per sequence (E, N, D) and grad_x is
// per group (E, N, M, d) even when the input is shared: the caller sums over the broadcast
// dimensions. Gradients of A/C are reduced over the batch inside the kernel, deterministically for
// a given num_threads.
//
// Each function returns the number of sequences that hold a symbol outside [0, d) (0 = success).
// Such sequences are skipped: their outputs are unspecified and the caller must raise.
#pragma once

#include <cstdint>

namespace tnattn {
namespace cpu {

enum XKind : int { kUInt8 = 0, kInt32 = 1, kInt64 = 2, kReal = 3 };

struct XArg {
  const void* ptr;  // see the shapes above
  int kind;         // XKind
  bool shared;      // one x for all E groups
};

struct Dims {
  int64_t E, N, M;
  int d, D, c;  // c is ignored by the contexts functions
};

// Normalised contexts (left: reverse = false; right: reverse = true).
template <typename T>
int64_t contexts_forward(const T* A, XArg x, const T* boundary, bool boundary_per_batch, T* out,
                         Dims dims, bool reverse, int num_threads);

// Backward of contexts_forward given grad_out (E, N, M, D). Recomputes the contexts internally.
template <typename T>
int64_t contexts_backward(const T* A, XArg x, const T* boundary, bool boundary_per_batch,
                          const T* grad_out, T* grad_A, T* grad_boundary, T* grad_x, Dims dims,
                          bool reverse, int num_threads);

// Fused TN attention: left contexts of A_left from u, right contexts of A_right from v and the local
// maps W[e,n,i,s,o] = sum_ab L[a] C[e,s,a,b,o] R[b], in one pass per block of sequences.
template <typename T>
int64_t tn_attention_forward(XArg x, const T* A_left, const T* A_right, const T* C, const T* u,
                             bool u_per_batch, const T* v, bool v_per_batch, T* W, Dims dims,
                             int num_threads);

// Backward of tn_attention_forward given grad_W (E, N, M, d, c). Recomputes the contexts.
template <typename T>
int64_t tn_attention_backward(XArg x, const T* A_left, const T* A_right, const T* C, const T* u,
                              bool u_per_batch, const T* v, bool v_per_batch, const T* grad_W,
                              T* grad_A_left, T* grad_A_right, T* grad_C, T* grad_u, T* grad_v,
                              T* grad_x, Dims dims, int num_threads);

// The symbol head and squared-error loss of tn_attention_mse_step (one output, c = 1).
template <typename T>
struct MseHead {
  const uint8_t* y;    // 0/1 targets: (E, N, M), or (N, M) when y_shared
  bool y_shared;
  const T* scale;      // (E,) or nullptr (used only with normalize_map)
  bool normalize_map;  // logit z = scale * W[x] / |W| (|W| over the d map entries), else z = W[x]
  bool sigmoid;        // residual r = sigmoid(z) - y, else r = z - (2y - 1)
};

// One training step of Scenario A fused: the local maps, the symbol head and the mean squared
// residual of every group, and its gradients, without writing W or grad_W. Writes loss[e] (the sum
// of r^2 over the group's N*M sites; the mean loss is loss[e] / (N*M)), wrong[e] (sites with
// (z > 0) != y), grad_scale[e] and the parameter gradients (as tn_attention_backward) of the mean
// loss. Symbols only (x.kind != kReal) and c = 1, else std::invalid_argument.
template <typename T>
int64_t tn_attention_mse_step(XArg x, const T* A_left, const T* A_right, const T* C, const T* u,
                              bool u_per_batch, const T* v, bool v_per_batch, MseHead<T> head,
                              double* loss, double* wrong, T* grad_scale, T* grad_A_left,
                              T* grad_A_right, T* grad_C, T* grad_u, T* grad_v, Dims dims,
                              int num_threads);

// Wrong-site counts of the sign prediction of one output (c = 1), without writing W: wrong[e] is the
// number of sites where (sign * W[x] > 0) != (y == 1), plus every site whose label y is not 0 or 1
// (y as uint8: (E, N, M), or (N, M) when y_shared). sign is (E,) (the sign of the map's scale) or
// nullptr (+1). Symbols only, else std::invalid_argument.
template <typename T>
int64_t tn_attention_count_wrong(XArg x, const T* A_left, const T* A_right, const T* C, const T* u,
                                 bool u_per_batch, const T* v, bool v_per_batch, const T* sign,
                                 const uint8_t* y, bool y_shared, double* wrong, Dims dims,
                                 int num_threads);

}  // namespace cpu
}  // namespace tnattn

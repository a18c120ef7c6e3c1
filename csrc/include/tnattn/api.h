// Kernel-facing parameters of the native ops: one struct per op, shared by the CPU entry points
// (tnattn/cpu.h) and the CUDA entry points (csrc/cuda/api.h), and the execution context that says
// where a call runs. No torch, CUDA or pybind11 headers.
//
// Every op has a leading member (group, ensemble) dimension E: E independent parameter sets
// processed in one call; one model is E = 1. Buffers are contiguous and row-major (T = float or
// double):
//   A, A_left, A_right : (E, d, D, D)         C : (E, d, D, D, c)
//   boundary, u, v     : (E, N, D) when *_per_batch, else (E, 1, D) (shared over the batch)
//   x                  : integer symbols (X, N, M) of uint8/int32/int64, or real embeddings
//                        (X, N, M, d) of T, where X = 1 when x.shared (same inputs for every member)
//                        and X = E otherwise
//   contexts out       : (E, N, M, D)           local maps W : (E, N, M, d, c)
// Gradient outputs are fully written by the kernels (no need to zero them); nullptr marks a
// gradient that is not wanted. grad_boundary/grad_u/grad_v are per sequence (E, N, D) and grad_x is
// per member (E, N, M, d) even when the input is shared: the caller sums over the broadcast
// dimensions. Gradients of A/C are reduced over the batch inside the kernel, deterministically for a
// given thread count (CPU) or shape (CUDA, D <= 32).
//
// Each entry point returns the number of sequences that hold a symbol outside [0, d) (0 = success).
// Such sequences are skipped: their outputs are unspecified and the caller must raise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace tnattn {

enum XKind : int { kUInt8 = 0, kInt32 = 1, kInt64 = 2, kReal = 3 };

struct XArg {
  const void* ptr = nullptr;  // see the shapes above
  int kind = kUInt8;          // XKind
  bool shared = false;        // one x for all E members
};

struct Dims {
  int64_t E, N, M;
  int d, D, c;  // c is ignored by the contexts op
};

// Where a call runs. On the CPU: the threaded kernels with num_threads threads (small problems run
// on the calling thread). On CUDA (device >= 0, a build with TNATTN_WITH_CUDA): the kernels are
// enqueued on `stream` (a cudaStream_t as an integer: torch's current stream of that device), with
// `device` made current for the call and restored after it; `alloc(bytes)` returns device memory on
// that device, valid until the call returns and usable by work enqueued on `stream` (tnattn.ops
// hands out torch tensors, so the memory comes from torch's caching allocator); it is called at most
// once per entry point.
struct Exec {
  int num_threads = 1;
  int device = -1;
  std::uintptr_t stream = 0;
  std::function<void*(std::size_t)> alloc;

  bool on_cuda() const { return device >= 0; }
};

// contexts: the normalised left (reverse = false) or right (reverse = true) contexts of A from the
// boundary vectors. Forward writes `out`; backward reads `grad_out` (E, N, M, D) and writes the
// wanted gradients (it recomputes the contexts internally).
template <typename T>
struct ContextsParams {
  const T* A = nullptr;
  XArg x;
  const T* boundary = nullptr;
  bool boundary_per_batch = false;
  bool reverse = false;
  Dims dims{};
  T* out = nullptr;             // forward
  const T* grad_out = nullptr;  // backward: incoming gradient and the gradients it writes
  T* grad_A = nullptr;
  T* grad_boundary = nullptr;
  T* grad_x = nullptr;
};

// The inputs of TN attention: left contexts of A_left from u, right contexts of A_right from v and
// the local maps W[e,n,i,s,o] = sum_ab L[a] C[e,s,a,b,o] R[b].
template <typename T>
struct TnInputs {
  XArg x;
  const T* A_left = nullptr;
  const T* A_right = nullptr;
  const T* C = nullptr;
  const T* u = nullptr;
  bool u_per_batch = false;
  const T* v = nullptr;
  bool v_per_batch = false;
  Dims dims{};
};

// Gradients of the parameters of TN attention (nullptr = not wanted).
template <typename T>
struct TnParamGrads {
  T* A_left = nullptr;
  T* A_right = nullptr;
  T* C = nullptr;
  T* u = nullptr;
  T* v = nullptr;
};

// tn_attention: forward writes W (E, N, M, d, c); backward reads grad_W of that shape and writes
// the wanted gradients (it recomputes the contexts).
template <typename T>
struct TnAttentionParams {
  TnInputs<T> in;
  T* W = nullptr;             // forward
  const T* grad_W = nullptr;  // backward
  TnParamGrads<T> grad;
  T* grad_x = nullptr;
};

// The symbol head and squared-error loss of the fused step (one output, c = 1).
template <typename T>
struct MseHead {
  const uint8_t* y = nullptr;  // 0/1 targets: (E, N, M), or (N, M) when y_shared
  bool y_shared = false;
  const T* scale = nullptr;    // (E,) or nullptr (used only with normalize_map)
  bool normalize_map = true;   // logit z = scale * W[x] / |W| (|W| over the d map entries), else z = W[x]
  bool sigmoid = true;         // residual r = sigmoid(z) - y, else r = z - (2y - 1)
};

// tn_attention_mse_step, one training step of Scenario A fused: the local maps, the symbol head and
// the mean squared residual of every member, and its gradients, without writing W or grad_W.
// Writes loss[e] (the sum of r^2 over the member's N*M sites; the mean loss is loss[e] / (N*M)),
// wrong[e] (sites with (z > 0) != y), grad_scale[e] and the parameter gradients (as the backward
// of tn_attention) of the mean loss. Symbols only (x.kind != kReal) and c = 1, else
// std::invalid_argument. CPU and CUDA (on CUDA, W and grad_W go through a workspace: see
// csrc/cuda/mse_step.cuh).
template <typename T>
struct MseStepParams {
  TnInputs<T> in;
  MseHead<T> head;
  double* loss = nullptr;   // (E,)
  double* wrong = nullptr;  // (E,)
  T* grad_scale = nullptr;  // (E,)
  TnParamGrads<T> grad;
};

// tn_attention_count_wrong: wrong-site counts of the sign prediction of one output (c = 1),
// without writing W: wrong[e] is the number of sites where (sign * W[x] > 0) != (y == 1), plus
// every site whose label y is not 0 or 1 (y as uint8: (E, N, M), or (N, M) when y_shared). sign is
// (E,) (the sign of the map's scale) or nullptr (+1). Symbols only, else std::invalid_argument.
// CPU and CUDA.
template <typename T>
struct CountWrongParams {
  TnInputs<T> in;
  const T* sign = nullptr;
  const uint8_t* y = nullptr;
  bool y_shared = false;
  double* wrong = nullptr;  // (E,)
};

}  // namespace tnattn

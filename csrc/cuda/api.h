// Host entry points of the CUDA kernels. Plain C++ (no CUDA or torch headers), so the pybind11
// layer (register.cpp) compiles with the host compiler. Same buffers, shapes and return value as the
// CPU entry points of tnattn/cpu.h (see there), with the thread count replaced by a Launch:
//   device  the CUDA device that holds every buffer (made current for the call, then restored);
//   stream  the cudaStream_t (as an integer) to enqueue on: torch's current stream of that device;
//   alloc   returns `bytes` of device memory on that device, valid until the call returns and
//           usable by work enqueued on `stream` (tnattn.ops hands out torch tensors, so the memory
//           comes from torch's caching allocator). Called at most once per entry point.
// Kernels are enqueued asynchronously. With integer symbols the call waits for the stream at the end
// to read the number of sequences that hold an out-of-range symbol (the return value); with real
// embeddings it returns 0 without waiting. CUDA errors throw std::runtime_error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "tnattn/cpu.h"

namespace tnattn {
namespace cuda {

using cpu::Dims;
using cpu::XArg;

struct Launch {
  int device = 0;
  std::uintptr_t stream = 0;
  std::function<void*(std::size_t)> alloc;
};

template <typename T>
int64_t contexts_forward(const T* A, XArg x, const T* boundary, bool boundary_per_batch, T* out, Dims dims,
                         bool reverse, const Launch& launch);

template <typename T>
int64_t contexts_backward(const T* A, XArg x, const T* boundary, bool boundary_per_batch, const T* grad_out,
                          T* grad_A, T* grad_boundary, T* grad_x, Dims dims, bool reverse, const Launch& launch);

template <typename T>
int64_t tn_attention_forward(XArg x, const T* A_left, const T* A_right, const T* C, const T* u, bool u_per_batch,
                             const T* v, bool v_per_batch, T* W, Dims dims, const Launch& launch);

template <typename T>
int64_t tn_attention_backward(XArg x, const T* A_left, const T* A_right, const T* C, const T* u, bool u_per_batch,
                              const T* v, bool v_per_batch, const T* grad_W, T* grad_A_left, T* grad_A_right,
                              T* grad_C, T* grad_u, T* grad_v, T* grad_x, Dims dims, const Launch& launch);

// Number of CUDA devices the runtime sees (0 when there is no driver or no device; never throws).
int device_count();

}  // namespace cuda
}  // namespace tnattn

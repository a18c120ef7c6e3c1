// Host entry points of the CUDA kernels. Plain C++ (no CUDA or torch headers), so the pybind11
// layer (csrc/bindings.cpp) compiles with the host compiler. The same parameter structs, buffers,
// shapes and return value as the CPU entry points (tnattn/api.h), with the execution context's CUDA
// fields: device (made current for the call, then restored), stream and the workspace allocator.
// Kernels are enqueued asynchronously. With integer symbols the call waits for the stream at the end
// to read the number of sequences that hold an out-of-range symbol (the return value); with real
// embeddings it returns 0 without waiting. CUDA errors throw std::runtime_error. The fused heads
// (MseStepParams, CountWrongParams; csrc/cuda/mse_step.cuh) take integer symbols and c = 1, else
// std::invalid_argument, and always wait once at the end (the bad-symbol count).
#pragma once

#include <cstdint>

#include "tnattn/api.h"
#include "tnattn/cpu.h"

namespace tnattn {
namespace cuda {

using ::tnattn::Dims;
using ::tnattn::XArg;
// The execution context of a CUDA call (tnattn/api.h); the kernels read device, stream and alloc.
using Launch = ::tnattn::Exec;

template <typename T>
int64_t contexts_forward(const ContextsParams<T>& p, const Launch& launch);
template <typename T>
int64_t contexts_backward(const ContextsParams<T>& p, const Launch& launch);
template <typename T>
int64_t tn_attention_forward(const TnAttentionParams<T>& p, const Launch& launch);
template <typename T>
int64_t tn_attention_backward(const TnAttentionParams<T>& p, const Launch& launch);
template <typename T>
int64_t tn_attention_mse_step(const MseStepParams<T>& p, const Launch& launch);
template <typename T>
int64_t tn_attention_count_wrong(const CountWrongParams<T>& p, const Launch& launch);

// Number of CUDA devices the runtime sees (0 when there is no driver or no device; never throws).
int device_count();

}  // namespace cuda
}  // namespace tnattn

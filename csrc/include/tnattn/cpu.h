// C++ entry points of the CPU kernels (no torch headers). The Python layer (tnattn.ops) checks
// shapes, dtypes, devices and makes everything contiguous before calling through tnattn._C.
//
// One entry point per op and direction, each taking the op's parameter struct and the execution
// context (tnattn/api.h: buffers, shapes, flags and the return value are described there; the CPU
// kernels read exec.num_threads). They forward to the instruction-set copy of the kernels chosen at
// load time (csrc/cpu/isa.h, dispatch.cpp).
#pragma once

#include <cstdint>

#include "tnattn/api.h"

namespace tnattn {
namespace cpu {

// The common names, also under tnattn::cpu (the kernels and the CUDA sources qualify them so).
using ::tnattn::Dims;
using ::tnattn::Exec;
using ::tnattn::kInt32;
using ::tnattn::kInt64;
using ::tnattn::kReal;
using ::tnattn::kUInt8;
using ::tnattn::MseHead;
using ::tnattn::XArg;
using ::tnattn::XKind;

template <typename T>
int64_t contexts_forward(const ContextsParams<T>& p, const Exec& exec);
template <typename T>
int64_t contexts_backward(const ContextsParams<T>& p, const Exec& exec);
template <typename T>
int64_t tn_attention_forward(const TnAttentionParams<T>& p, const Exec& exec);
template <typename T>
int64_t tn_attention_backward(const TnAttentionParams<T>& p, const Exec& exec);
template <typename T>
int64_t tn_attention_mse_step(const MseStepParams<T>& p, const Exec& exec);
template <typename T>
int64_t tn_attention_count_wrong(const CountWrongParams<T>& p, const Exec& exec);

}  // namespace cpu
}  // namespace tnattn

// Instruction-set dispatch of the CPU kernels.
//
// The kernels (contexts.inc, tn_attention.inc) are compiled once per instruction set by
// isa_unit.cpp, each copy in its own namespace and under its own target options, so that one
// build runs on every CPU of its architecture. Each copy fills a KernelTable with its entry points;
// dispatch.cpp picks the best table the running CPU supports when the module loads (or the one
// named by the environment variable TNATTN_CPU_ISA), and the public functions of tnattn/cpu.h
// forward to it.
#pragma once

#include "tnattn/cpu.h"

namespace tnattn {
namespace cpu {

// The entry points of one copy: the op's parameter struct (tnattn/api.h) and the thread count.
template <typename T>
struct KernelSet {
  int64_t (*contexts_forward)(const ContextsParams<T>&, int num_threads) = nullptr;
  int64_t (*contexts_backward)(const ContextsParams<T>&, int num_threads) = nullptr;
  int64_t (*tn_attention_forward)(const TnAttentionParams<T>&, int num_threads) = nullptr;
  int64_t (*tn_attention_backward)(const TnAttentionParams<T>&, int num_threads) = nullptr;
  int64_t (*tn_attention_mse_step)(const MseStepParams<T>&, int num_threads) = nullptr;
  int64_t (*tn_attention_count_wrong)(const CountWrongParams<T>&, int num_threads) = nullptr;
};

struct KernelTable {
  const char* name = nullptr;  // "baseline", "avx2", "avx512"
  KernelSet<float> f;
  KernelSet<double> d;
};

// The name of the instruction-set path in use, the compiled ones (best last), and a switch for
// tests and comparisons (returns false for a name that is not compiled or not supported by this CPU).
const char* cpu_isa();
const char* cpu_isas_compiled();  // comma-separated
const char* cpu_isas_supported();  // comma-separated: compiled and runnable on this CPU
bool set_cpu_isa(const char* name);

}  // namespace cpu
}  // namespace tnattn

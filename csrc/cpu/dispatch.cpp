// Run-time choice of the instruction-set copy of the CPU kernels (see isa.h), and the public entry
// points of tnattn/cpu.h, which forward to the chosen copy.
#include <atomic>
#include <cstring>
#include <string>

#include "isa.h"

namespace tnattn {
namespace cpu {

// The fill functions of every compiled copy (isa_unit.cpp, contexts.inc, tn_attention.inc).
#define TNATTN_DECLARE_ISA(NS)             \
  namespace NS {                           \
  void fill_contexts(KernelTable& t);      \
  void fill_tn_attention(KernelTable& t);  \
  }
TNATTN_DECLARE_ISA(isa_baseline)
#ifdef TNATTN_HAVE_AVX2
TNATTN_DECLARE_ISA(isa_avx2)
#endif
#ifdef TNATTN_HAVE_AVX512
TNATTN_DECLARE_ISA(isa_avx512)
#endif
#undef TNATTN_DECLARE_ISA

namespace {

struct Registry {
  KernelTable tables[3];
  bool runnable[3] = {false, false, false};
  int count = 0;
  std::string compiled, supported;
  std::atomic<const KernelTable*> active{nullptr};

  template <class FillC, class FillT>
  void add(const char* name, FillC fc, FillT ft, bool can_run) {
    KernelTable& t = tables[count];
    t.name = name;
    fc(t);
    ft(t);
    runnable[count] = can_run;
    compiled += (compiled.empty() ? "" : ",") + std::string(name);
    if (can_run) {
      supported += (supported.empty() ? "" : ",") + std::string(name);
      active.store(&t);  // tables are added worst to best: the last runnable one wins
    }
    ++count;
  }

  Registry() {
    add("baseline", isa_baseline::fill_contexts, isa_baseline::fill_tn_attention, true);
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
#ifdef TNATTN_HAVE_AVX2
    add("avx2", isa_avx2::fill_contexts, isa_avx2::fill_tn_attention,
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
#endif
#ifdef TNATTN_HAVE_AVX512
    add("avx512", isa_avx512::fill_contexts, isa_avx512::fill_tn_attention,
        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
#endif
#endif
  }
};

Registry& registry() {
  static Registry r;  // thread-safe initialisation (C++11)
  return r;
}

inline const KernelTable& active() { return *registry().active.load(std::memory_order_acquire); }

}  // namespace

const char* cpu_isa() { return active().name; }
const char* cpu_isas_compiled() { return registry().compiled.c_str(); }
const char* cpu_isas_supported() { return registry().supported.c_str(); }

bool set_cpu_isa(const char* name) {
  Registry& r = registry();
  for (int i = 0; i < r.count; ++i)
    if (r.runnable[i] && std::strcmp(r.tables[i].name, name) == 0) {
      r.active.store(&r.tables[i], std::memory_order_release);
      return true;
    }
  return false;
}

namespace {
template <typename T>
const KernelSet<T>& kernels();
template <>
const KernelSet<float>& kernels<float>() {
  return active().f;
}
template <>
const KernelSet<double>& kernels<double>() {
  return active().d;
}
}  // namespace

// The public entry points: the op's parameter struct and the execution context, forwarded to the
// active copy with the context's thread count.
template <typename T>
int64_t contexts_forward(const ContextsParams<T>& p, const Exec& exec) {
  return kernels<T>().contexts_forward(p, exec.num_threads);
}

template <typename T>
int64_t contexts_backward(const ContextsParams<T>& p, const Exec& exec) {
  return kernels<T>().contexts_backward(p, exec.num_threads);
}

template <typename T>
int64_t tn_attention_forward(const TnAttentionParams<T>& p, const Exec& exec) {
  return kernels<T>().tn_attention_forward(p, exec.num_threads);
}

template <typename T>
int64_t tn_attention_backward(const TnAttentionParams<T>& p, const Exec& exec) {
  return kernels<T>().tn_attention_backward(p, exec.num_threads);
}

template <typename T>
int64_t tn_attention_mse_step(const MseStepParams<T>& p, const Exec& exec) {
  return kernels<T>().tn_attention_mse_step(p, exec.num_threads);
}

template <typename T>
int64_t tn_attention_count_wrong(const CountWrongParams<T>& p, const Exec& exec) {
  return kernels<T>().tn_attention_count_wrong(p, exec.num_threads);
}

#define TNATTN_INSTANTIATE(T)                                                             \
  template int64_t contexts_forward<T>(const ContextsParams<T>&, const Exec&);            \
  template int64_t contexts_backward<T>(const ContextsParams<T>&, const Exec&);           \
  template int64_t tn_attention_forward<T>(const TnAttentionParams<T>&, const Exec&);     \
  template int64_t tn_attention_backward<T>(const TnAttentionParams<T>&, const Exec&);    \
  template int64_t tn_attention_mse_step<T>(const MseStepParams<T>&, const Exec&);        \
  template int64_t tn_attention_count_wrong<T>(const CountWrongParams<T>&, const Exec&);
TNATTN_INSTANTIATE(float)
TNATTN_INSTANTIATE(double)
#undef TNATTN_INSTANTIATE

}  // namespace cpu
}  // namespace tnattn

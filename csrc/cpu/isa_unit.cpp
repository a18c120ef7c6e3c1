// One instruction-set copy of one kernel file. CMake compiles this file once per (instruction set,
// kernel file) with TNATTN_ISA_ID (0 baseline, 2 avx2, 3 avx512) and TNATTN_ISA_PART (1 contexts,
// 2 tn_attention).
//
// Every header with inline or template code that is NOT instruction-set specific (the standard
// library, tnattn/common.h) is included before the target pragma: its out-of-line copies are then
// compiled for the baseline, so the linker may keep any copy without putting AVX code on a path
// that an older CPU runs. Everything after the pragma lives in a namespace of its own per set.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>  // madvise: huge pages for large scratch (csrc/cpu/detail.h)
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // the SoA path's vector square roots (csrc/cpu/soa.inc)
#endif

#include "isa.h"
#include "pool.h"
#include "tnattn/common.h"
#include "tnattn/cpu.h"

#if TNATTN_ISA_ID == 0
#define TNATTN_ISA_NS isa_baseline
#define TNATTN_ISA_BYTES 16
#elif TNATTN_ISA_ID == 2
#define TNATTN_ISA_NS isa_avx2
#define TNATTN_ISA_BYTES 32
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#elif TNATTN_ISA_ID == 3
#define TNATTN_ISA_NS isa_avx512
#define TNATTN_ISA_BYTES 64
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#endif
#else
#error "unknown TNATTN_ISA_ID"
#endif

namespace tnattn {
namespace cpu {
namespace TNATTN_ISA_NS {

// Register width of this instruction set in bytes: no vector type in the kernels is wider.
constexpr int kNativeBytes = TNATTN_ISA_BYTES;

namespace detail {
#include "simd.h"
#include "detail.h"
}  // namespace detail

#if TNATTN_ISA_PART == 1
#include "contexts.inc"
#elif TNATTN_ISA_PART == 2
#include "tn_attention.inc"
#else
#error "unknown TNATTN_ISA_PART"
#endif

}  // namespace TNATTN_ISA_NS
}  // namespace cpu
}  // namespace tnattn

#if TNATTN_ISA_ID != 0
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

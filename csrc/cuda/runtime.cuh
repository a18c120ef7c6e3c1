// Host-side helpers of the CUDA entry points: error checks, the device guard, workspace carving,
// launch-size choices and the two small kernels every op shares (parameter staging and the final,
// fixed-order reduction of per-block gradient partials).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "api.h"
#include "device.cuh"

namespace tnattn {
namespace cuda {
namespace host {

// Throws std::runtime_error (RuntimeError in Python) naming the failed step and the CUDA error.
void check(cudaError_t err, const char* what);

// After every kernel launch: configuration errors surface here (execution errors at the next
// synchronising call, which is also checked).
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

// Makes `device` current for the lifetime of the guard, then restores the previous device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1, cur_ = -1;
};

inline cudaStream_t stream_of(const Launch& L) { return reinterpret_cast<cudaStream_t>(L.stream); }

// Largest dynamic shared memory a block may opt into, and the number of SMs, of the current device.
int max_shared_optin();

// Pieces of one workspace allocation, each aligned to 256 bytes.
class Workspace {
 public:
  std::size_t add(std::size_t bytes) {
    const std::size_t off = total_;
    total_ += (bytes + 255) / 256 * 256;
    return off;
  }
  // Allocates everything through the launch's allocator (once) and returns the base address.
  unsigned char* allocate(const Launch& L);
  std::size_t total() const { return total_; }

 private:
  std::size_t total_ = 0;
};

// Compile-time bond dimension of the fast kernels for a runtime D (padded up), or 0 (runtime D:
// the block-cooperative kernels of large_d.cuh, or the chunked scan's runtime path).
inline int fast_dim(int D) {
  if (D <= 4) return 4;
  if (D <= 8) return 8;
  if (D <= 16) return 16;
  if (D <= 32) return 32;
  return 0;
}

// Threads per block: one sequence per thread; fewer threads for large DC (registers, shared memory)
// and never many more than the batch (small ensembles of short batches, e.g. Scenario B).
inline int block_threads(int DC, int64_t N) {
  const int cap = DC == 0 ? 64 : DC <= 8 ? dev::kMaxThreads : DC == 16 ? 64 : 32;
  const int64_t warps = (N + 31) / 32;
  return static_cast<int>(std::min<int64_t>(cap, warps * 32));
}

template <bool RUNTIME_D, class W>
void runtime_d(W& with_real) {
  if constexpr (RUNTIME_D)
    with_real(std::integral_constant<int, 0>{});
  else
    throw std::logic_error("tnattn: a runtime bond dimension has no kernel on this path");
}

// Calls f(std::integral_constant<int, DC>, std::bool_constant<REAL>) for the kernels' template
// arguments. RUNTIME_D = false leaves DC == 0 out (throws): the one-thread-per-sequence kernels of
// contexts.cuh / tn_attention.cuh exist for DC > 0 only, a runtime D goes to large_d.cuh instead.
template <bool RUNTIME_D = true, class F>
void dispatch(int DC, bool real, F&& f) {
  auto with_real = [&](auto dc) {
    if (real)
      f(dc, std::true_type{});
    else
      f(dc, std::false_type{});
  };
  switch (DC) {
    case 4: with_real(std::integral_constant<int, 4>{}); break;
    case 8: with_real(std::integral_constant<int, 8>{}); break;
    case 16: with_real(std::integral_constant<int, 16>{}); break;
    case 32: with_real(std::integral_constant<int, 32>{}); break;
    case 0: runtime_d<RUNTIME_D>(with_real); break;
    default: throw std::logic_error("tnattn: unsupported compile-time bond dimension");
  }
}

// Sets the dynamic shared-memory limit of a kernel when it needs more than the default 48 KiB.
template <class K>
void allow_shared(K kernel, std::size_t bytes) {
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

// Every kernel launch goes through here. TNATTN_CUDA_EMULATION builds (tests/cuda_emulation: the
// same sources compiled as C++ for the CPU, one std::thread per CUDA thread) run the kernel there.
template <class... P, class... A>
void launch(void (*kernel)(P...), unsigned grid, unsigned block, std::size_t smem, cudaStream_t stream,
            const char* what, A&&... args) {
#ifdef TNATTN_CUDA_EMULATION
  ::tnattn_emu::launch(grid, block, smem, [&] { kernel(args...); });
  (void)stream;
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
#endif
  check_launch(what);
}

inline int64_t grid_units(int64_t E, int nblk) {
  const int64_t units = E * nblk;
  if (units > 0x7fffffffLL) throw std::invalid_argument("tnattn: E * ceil(N / block) exceeds the CUDA grid limit");
  return units;
}

inline int round4(int n) { return (n + 3) / 4 * 4; }

// Stage each group's parameter matrices into `dst` (E x PS scalars) following `segs`.
template <typename T>
void launch_prep(const dev::SegList& segs, int64_t E, int d, int D, int c, int Dp, int64_t PS, T* dst,
                 cudaStream_t stream);

// out[e, r] = sum over the nblk partials of group e (fixed order) of the accumulator entry of r.
template <typename T>
void launch_reduce(const double* part, int64_t nblk, int OUT, int64_t E, int d, int D, int c, int Dp,
                   dev::GradMap map, T* out, cudaStream_t stream);

// Zero `bytes` at p on the stream.
void memset_async(void* p, std::size_t bytes, cudaStream_t stream);

// Reads the device counter of bad sequences (waits for the stream).
int64_t read_counter(const unsigned long long* counter, cudaStream_t stream);

}  // namespace host
}  // namespace cuda
}  // namespace tnattn

// A minimal CUDA runtime for compiling tnattn's CUDA sources (csrc/cuda) with a host C++ compiler,
// so that the kernels' logic (indexing, passes, shared-memory staging, block reductions, barriers)
// runs and is tested on machines without a GPU. Tests only (tests/kernels/test_cuda_emulated.py); it is
// found before the real cuda_runtime.h through the include path, with TNATTN_CUDA_EMULATION defined.
//
// Model: a launch runs its blocks one after another; a block runs as blockDim.x std::threads that
// share one shared-memory buffer, and __syncthreads() is a real barrier. Shared memory is filled
// with 0xFF bytes (NaN) before every block so that reads of unwritten shared memory show up.
// "Device" memory is host memory; memcpy/memset are synchronous; streams are ignored.
// TNATTN_EMU_MAX_SHARED (environment) sets the reported opt-in shared-memory limit (default 227 KiB)
// so that tests can force the runtime-D fallback.
#pragma once

#ifndef TNATTN_CUDA_EMULATION
#error "tests/cuda_emulation/cuda_runtime.h is only for TNATTN_CUDA_EMULATION builds"
#endif

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __shared__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
typedef struct CUstream_st* cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace tnattn_emu {

class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lk(m_);
    const unsigned gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lk, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  unsigned n_, count_ = 0, gen_ = 0;
};

inline thread_local uint3 tl_thread, tl_block;
inline thread_local dim3 tl_bdim, tl_gdim;
inline thread_local unsigned char* tl_smem = nullptr;
inline thread_local Barrier* tl_barrier = nullptr;
inline std::mutex atomic_mutex;

inline unsigned char* dynamic_shared() { return tl_smem; }

template <class F>
void launch(unsigned grid, unsigned block, std::size_t smem, F&& fn) {
  if (block == 0 || grid == 0) return;
  Barrier bar(block);
  std::vector<double> buf((smem + sizeof(double) - 1) / sizeof(double) + 2);
  unsigned char* sm = reinterpret_cast<unsigned char*>(buf.data());
  std::vector<std::thread> threads;
  threads.reserve(block);
  for (unsigned t = 0; t < block; ++t) {
    threads.emplace_back([&, t] {
      tl_thread = uint3{t, 0, 0};
      tl_bdim = dim3{block, 1, 1};
      tl_gdim = dim3{grid, 1, 1};
      tl_barrier = &bar;
      tl_smem = sm;
      for (unsigned b = 0; b < grid; ++b) {
        tl_block = uint3{b, 0, 0};
        if (t == 0) std::memset(sm, 0xFF, smem);
        bar.wait();
        fn();
        bar.wait();
      }
    });
  }
  for (auto& th : threads) th.join();
}

}  // namespace tnattn_emu

#define threadIdx (::tnattn_emu::tl_thread)
#define blockIdx (::tnattn_emu::tl_block)
#define blockDim (::tnattn_emu::tl_bdim)
#define gridDim (::tnattn_emu::tl_gdim)

inline void __syncthreads() { ::tnattn_emu::tl_barrier->wait(); }

inline double atomicAdd(double* p, double v) {
  std::lock_guard<std::mutex> lk(::tnattn_emu::atomic_mutex);
  const double old = *p;
  *p = old + v;
  return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  const char* env = std::getenv("TNATTN_EMU_MAX_SHARED");
  *v = env ? std::atoi(env) : 227 * 1024;
  return cudaSuccess;
}
template <class K>
inline cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

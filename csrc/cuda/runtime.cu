// Host helpers and the shared small kernels of the CUDA entry points (see runtime.cuh).
#include <algorithm>

#include "runtime.cuh"

namespace tnattn {
namespace cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state (no driver / no device)
    return 0;
  }
  return n;
}

namespace host {

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // do not leave a non-sticky error behind for the next call
  throw std::runtime_error(std::string("tnattn CUDA error in ") + what + ": " + cudaGetErrorName(err) + ": " +
                           cudaGetErrorString(err));
}

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&prev_), "cudaGetDevice");
  if (device != prev_) check(cudaSetDevice(device), "cudaSetDevice");
  cur_ = device;
}

DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0 && prev_ != cur_) cudaSetDevice(prev_);  // destructor: nothing sensible to throw
}

int max_shared_optin() {
  int dev = 0, v = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
        "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  return v;
}

unsigned char* Workspace::allocate(const Launch& L) {
  if (total_ == 0) return nullptr;
  if (!L.alloc) throw std::invalid_argument("tnattn: the CUDA entry points need a workspace allocator");
  void* p = L.alloc(total_);
  if (!p) throw std::runtime_error("tnattn: workspace allocation failed");
  return static_cast<unsigned char*>(p);
}

void memset_async(void* p, std::size_t bytes, cudaStream_t stream) {
  check(cudaMemsetAsync(p, 0, bytes, stream), "cudaMemsetAsync");
}

int64_t read_counter(const unsigned long long* counter, cudaStream_t stream) {
  unsigned long long h = 0;
  check(cudaMemcpyAsync(&h, counter, sizeof(h), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync(bad count)");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return static_cast<int64_t>(h);
}

namespace {

constexpr int kSmallBlock = 256;

template <typename T>
__global__ void prep_params_kernel(const dev::SegList segs, int64_t E, int d, int D, int c, int Dp, int64_t PS,
                                   T* __restrict__ dst) {
  const int64_t total = E * PS;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = idx / PS, off = idx % PS;
    T val = T(0);
    for (int k = 0; k < segs.n; ++k) {
      const dev::Seg& sg = segs.seg[k];
      const int64_t rel = off - sg.dst_off;
      if (rel < 0 || rel >= static_cast<int64_t>(sg.nmat) * sg.stride) continue;
      const int q = static_cast<int>(rel / sg.stride), r = static_cast<int>(rel % sg.stride);
      const int a = r / Dp, b = r % Dp;
      if (r >= Dp * Dp || a >= D || b >= D) break;  // padding
      const T* src = static_cast<const T*>(sg.src);
      const int64_t DD = static_cast<int64_t>(D) * D;
      switch (sg.kind) {
        case dev::kPlain: val = src[(e * d + q) * DD + a * D + b]; break;
        case dev::kTrans: val = src[(e * d + q) * DD + b * D + a]; break;
        case dev::kCt:
        case dev::kCtT: {
          const int s = q / c, o = q % c;
          const int aa = sg.kind == dev::kCt ? a : b, bb = sg.kind == dev::kCt ? b : a;
          val = src[((e * d + s) * DD + static_cast<int64_t>(aa) * D + bb) * c + o];
          break;
        }
        default: break;
      }
      break;
    }
    dst[idx] = val;
  }
}

template <typename T>
__global__ void reduce_partials_kernel(const double* __restrict__ part, int64_t nblk, int OUT, int64_t E, int d,
                                       int D, int c, int Dp, dev::GradMap map, T* __restrict__ out) {
  const int64_t per_group = static_cast<int64_t>(d) * D * D * (map.kind == 1 ? c : 1);
  const int64_t total = E * per_group;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = idx / per_group, r = idx % per_group;
    int64_t p;
    if (map.kind == 0) {  // (s, a, b) -> matrix s, row a, column b
      const int64_t s = r / (static_cast<int64_t>(D) * D), a = (r / D) % D, b = r % D;
      p = (s * Dp + a) * Dp + b;
    } else {  // (s, a, b, o) -> matrix k = s*c + o, row a, column b
      const int64_t o = r % c, b = (r / c) % D, a = (r / (static_cast<int64_t>(c) * D)) % D,
                    s = r / (static_cast<int64_t>(c) * D * D);
      p = ((s * c + o) * Dp + a) * Dp + b;
    }
    const double* src = part + e * nblk * OUT + map.out_off + p;
    double acc = 0.0;
    for (int64_t k = 0; k < nblk; ++k) acc += src[k * OUT];
    out[idx] = static_cast<T>(acc);
  }
}

inline unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kSmallBlock - 1) / kSmallBlock;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535)));
}

}  // namespace

template <typename T>
void launch_prep(const dev::SegList& segs, int64_t E, int d, int D, int c, int Dp, int64_t PS, T* dst,
                 cudaStream_t stream) {
  launch(prep_params_kernel<T>, grid_for(E * PS), kSmallBlock, 0, stream, "prep_params_kernel", segs, E, d, D, c,
         Dp, PS, dst);
}

template <typename T>
void launch_reduce(const double* part, int64_t nblk, int OUT, int64_t E, int d, int D, int c, int Dp,
                   dev::GradMap map, T* out, cudaStream_t stream) {
  const int64_t total = E * d * D * D * (map.kind == 1 ? c : 1);
  launch(reduce_partials_kernel<T>, grid_for(total), kSmallBlock, 0, stream, "reduce_partials_kernel", part, nblk,
         OUT, E, d, D, c, Dp, map, out);
}

template void launch_prep<float>(const dev::SegList&, int64_t, int, int, int, int, int64_t, float*, cudaStream_t);
template void launch_prep<double>(const dev::SegList&, int64_t, int, int, int, int, int64_t, double*, cudaStream_t);
template void launch_reduce<float>(const double*, int64_t, int, int64_t, int, int, int, int, dev::GradMap, float*,
                                   cudaStream_t);
template void launch_reduce<double>(const double*, int64_t, int, int64_t, int, int, int, int, dev::GradMap, double*,
                                    cudaStream_t);

}  // namespace host
}  // namespace cuda
}  // namespace tnattn

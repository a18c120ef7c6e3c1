// Explicit instantiation of the TN-attention CUDA entry points for float (one translation unit per
// scalar type, so that a parallel build compiles them concurrently). Kernels: tn_attention.cuh.
#include "tn_attention.cuh"

namespace tnattn {
namespace cuda {

template int64_t tn_attention_forward<float>(XArg, const float*, const float*, const float*, const float*, bool, const float*, bool,
                                          float*, Dims, const Launch&);
template int64_t tn_attention_backward<float>(XArg, const float*, const float*, const float*, const float*, bool, const float*, bool,
                                           const float*, float*, float*, float*, float*, float*, float*, Dims, const Launch&);

}  // namespace cuda
}  // namespace tnattn

// Explicit instantiation of the TN-attention CUDA entry points for float (one translation unit per
// scalar type, so that a parallel build compiles them concurrently). Kernels: tn_attention.cuh.
#include "tn_attention.cuh"

namespace tnattn {
namespace cuda {

template int64_t tn_attention_forward<float>(const TnAttentionParams<float>&, const Launch&);
template int64_t tn_attention_backward<float>(const TnAttentionParams<float>&, const Launch&);

}  // namespace cuda
}  // namespace tnattn

// Explicit instantiation of the TN-attention CUDA entry points for double (one translation unit per
// scalar type, so that a parallel build compiles them concurrently). Kernels: tn_attention.cuh.
#include "tn_attention.cuh"

namespace tnattn {
namespace cuda {

template int64_t tn_attention_forward<double>(const TnAttentionParams<double>&, const Launch&);
template int64_t tn_attention_backward<double>(const TnAttentionParams<double>&, const Launch&);

}  // namespace cuda
}  // namespace tnattn

// Explicit instantiation of the TN-attention CUDA entry points for double (one translation unit per
// scalar type, so that a parallel build compiles them concurrently). Kernels: tn_attention.cuh.
#include "tn_attention.cuh"

namespace tnattn {
namespace cuda {

template int64_t tn_attention_forward<double>(XArg, const double*, const double*, const double*, const double*, bool, const double*, bool,
                                          double*, Dims, const Launch&);
template int64_t tn_attention_backward<double>(XArg, const double*, const double*, const double*, const double*, bool, const double*, bool,
                                           const double*, double*, double*, double*, double*, double*, double*, Dims, const Launch&);

}  // namespace cuda
}  // namespace tnattn

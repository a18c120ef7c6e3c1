// Explicit instantiation of the fused-head CUDA entry points for float (one translation unit per scalar
// type, so that a parallel build compiles them concurrently). Kernels: mse_step.cuh.
#include "mse_step.cuh"

namespace tnattn {
namespace cuda {

template int64_t tn_attention_mse_step<float>(const MseStepParams<float>&, const Launch&);
template int64_t tn_attention_count_wrong<float>(const CountWrongParams<float>&, const Launch&);

}  // namespace cuda
}  // namespace tnattn

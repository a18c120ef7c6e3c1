// Explicit instantiation of the contexts CUDA entry points for float (one translation unit per scalar
// type, so that a parallel build compiles them concurrently). Kernels: contexts.cuh.
#include "contexts.cuh"

namespace tnattn {
namespace cuda {

template int64_t contexts_forward<float>(const ContextsParams<float>&, const Launch&);
template int64_t contexts_backward<float>(const ContextsParams<float>&, const Launch&);

}  // namespace cuda
}  // namespace tnattn

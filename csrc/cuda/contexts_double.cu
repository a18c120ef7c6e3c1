// Explicit instantiation of the contexts CUDA entry points for double (one translation unit per scalar
// type, so that a parallel build compiles them concurrently). Kernels: contexts.cuh.
#include "contexts.cuh"

namespace tnattn {
namespace cuda {

template int64_t contexts_forward<double>(const ContextsParams<double>&, const Launch&);
template int64_t contexts_backward<double>(const ContextsParams<double>&, const Launch&);

}  // namespace cuda
}  // namespace tnattn

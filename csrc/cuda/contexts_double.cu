// Explicit instantiation of the contexts CUDA entry points for double (one translation unit per scalar
// type, so that a parallel build compiles them concurrently). Kernels: contexts.cuh.
#include "contexts.cuh"

namespace tnattn {
namespace cuda {

template int64_t contexts_forward<double>(const double*, XArg, const double*, bool, double*, Dims, bool, const Launch&);
template int64_t contexts_backward<double>(const double*, XArg, const double*, bool, const double*, double*, double*, double*, Dims, bool,
                                       const Launch&);

}  // namespace cuda
}  // namespace tnattn

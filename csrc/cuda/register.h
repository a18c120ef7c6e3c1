// Registers the CUDA entry points (submodule tnattn._C.cuda) on the extension module; only compiled
// and called in a build with TNATTN_CUDA (TNATTN_WITH_CUDA defined).
#pragma once

#include <pybind11/pybind11.h>

namespace tnattn {
namespace cuda {

void register_bindings(pybind11::module_& m);

}  // namespace cuda
}  // namespace tnattn

// pybind11 module tnattn._C: placeholder until the kernels land.
#include <pybind11/pybind11.h>
namespace py = pybind11;
PYBIND11_MODULE(_C, m) {
  m.doc() = "tnattn native kernels (CPU; CUDA when built with TNATTN_CUDA)";
  m.def("has_cuda", []() { return false; });
}

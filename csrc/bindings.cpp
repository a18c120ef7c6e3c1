// pybind11 module tnattn._C: thin wrappers around the C++ entry points of tnattn/cpu.h.
//
// Tensors travel as raw addresses (Python ints from tensor.data_ptr(); 0 = null) plus sizes and
// flags, so no torch headers are needed. tnattn.ops guarantees contiguity, dtypes, devices and
// shapes before calling. `dbl` selects double (true) or float (false) for all floating buffers.
// The GIL is released while the kernels run.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "cpu/isa.h"
#include "tnattn/cpu.h"

#ifdef TNATTN_WITH_CUDA
#include "cuda/register.h"  // submodule tnattn._C.cuda: the same entry points on CUDA devices
#endif

// Set by CMake (tnattn.build_info()); defaults for builds that do not go through it.
#ifndef TNATTN_BUILD_COMPILER
#define TNATTN_BUILD_COMPILER "unknown"
#endif
#ifndef TNATTN_BUILD_FLAGS
#define TNATTN_BUILD_FLAGS "unknown"
#endif
#ifndef TNATTN_BUILD_NATIVE
#define TNATTN_BUILD_NATIVE 0
#endif

namespace py = pybind11;
using tnattn::cpu::Dims;
using tnattn::cpu::XArg;

namespace {

template <typename T>
T* ptr(std::uintptr_t a) {
  return reinterpret_cast<T*>(a);
}

XArg make_x(std::uintptr_t x, int x_kind, bool x_shared) {
  if (x_kind < 0 || x_kind > 3) throw py::value_error("x_kind must be 0 (uint8), 1 (int32), 2 (int64) or 3 (real)");
  return XArg{reinterpret_cast<const void*>(x), x_kind, x_shared};
}

Dims make_dims(int64_t E, int64_t N, int64_t M, int d, int D, int c) {
  if (E < 1 || N < 1 || M < 1 || d < 1 || D < 1 || c < 1)
    throw py::value_error("tnattn._C: all sizes must be positive");
  return Dims{E, N, M, d, D, c};
}

int64_t contexts_forward(bool dbl, std::uintptr_t A, std::uintptr_t x, int x_kind, bool x_shared,
                         std::uintptr_t boundary, bool boundary_per_batch, std::uintptr_t out, int64_t E,
                         int64_t N, int64_t M, int d, int D, bool reverse, int num_threads) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, 1);
  py::gil_scoped_release nogil;
  if (dbl)
    return tnattn::cpu::contexts_forward<double>(ptr<const double>(A), xa, ptr<const double>(boundary),
                                                 boundary_per_batch, ptr<double>(out), dm, reverse, num_threads);
  return tnattn::cpu::contexts_forward<float>(ptr<const float>(A), xa, ptr<const float>(boundary),
                                              boundary_per_batch, ptr<float>(out), dm, reverse, num_threads);
}

int64_t contexts_backward(bool dbl, std::uintptr_t A, std::uintptr_t x, int x_kind, bool x_shared,
                          std::uintptr_t boundary, bool boundary_per_batch, std::uintptr_t grad_out,
                          std::uintptr_t grad_A, std::uintptr_t grad_boundary, std::uintptr_t grad_x, int64_t E,
                          int64_t N, int64_t M, int d, int D, bool reverse, int num_threads) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, 1);
  py::gil_scoped_release nogil;
  if (dbl)
    return tnattn::cpu::contexts_backward<double>(ptr<const double>(A), xa, ptr<const double>(boundary),
                                                  boundary_per_batch, ptr<const double>(grad_out), ptr<double>(grad_A),
                                                  ptr<double>(grad_boundary), ptr<double>(grad_x), dm, reverse,
                                                  num_threads);
  return tnattn::cpu::contexts_backward<float>(ptr<const float>(A), xa, ptr<const float>(boundary),
                                               boundary_per_batch, ptr<const float>(grad_out), ptr<float>(grad_A),
                                               ptr<float>(grad_boundary), ptr<float>(grad_x), dm, reverse,
                                               num_threads);
}

int64_t tn_attention_forward(bool dbl, std::uintptr_t x, int x_kind, bool x_shared, std::uintptr_t A_left,
                             std::uintptr_t A_right, std::uintptr_t C, std::uintptr_t u, bool u_per_batch,
                             std::uintptr_t v, bool v_per_batch, std::uintptr_t W, int64_t E, int64_t N, int64_t M,
                             int d, int D, int c, int num_threads) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, c);
  py::gil_scoped_release nogil;
  if (dbl)
    return tnattn::cpu::tn_attention_forward<double>(xa, ptr<const double>(A_left), ptr<const double>(A_right),
                                                     ptr<const double>(C), ptr<const double>(u), u_per_batch,
                                                     ptr<const double>(v), v_per_batch, ptr<double>(W), dm,
                                                     num_threads);
  return tnattn::cpu::tn_attention_forward<float>(xa, ptr<const float>(A_left), ptr<const float>(A_right),
                                                  ptr<const float>(C), ptr<const float>(u), u_per_batch,
                                                  ptr<const float>(v), v_per_batch, ptr<float>(W), dm, num_threads);
}

int64_t tn_attention_backward(bool dbl, std::uintptr_t x, int x_kind, bool x_shared, std::uintptr_t A_left,
                              std::uintptr_t A_right, std::uintptr_t C, std::uintptr_t u, bool u_per_batch,
                              std::uintptr_t v, bool v_per_batch, std::uintptr_t grad_W, std::uintptr_t grad_A_left,
                              std::uintptr_t grad_A_right, std::uintptr_t grad_C, std::uintptr_t grad_u,
                              std::uintptr_t grad_v, std::uintptr_t grad_x, int64_t E, int64_t N, int64_t M, int d,
                              int D, int c, int num_threads) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, c);
  py::gil_scoped_release nogil;
  if (dbl)
    return tnattn::cpu::tn_attention_backward<double>(
        xa, ptr<const double>(A_left), ptr<const double>(A_right), ptr<const double>(C), ptr<const double>(u),
        u_per_batch, ptr<const double>(v), v_per_batch, ptr<const double>(grad_W), ptr<double>(grad_A_left),
        ptr<double>(grad_A_right), ptr<double>(grad_C), ptr<double>(grad_u), ptr<double>(grad_v),
        ptr<double>(grad_x), dm, num_threads);
  return tnattn::cpu::tn_attention_backward<float>(
      xa, ptr<const float>(A_left), ptr<const float>(A_right), ptr<const float>(C), ptr<const float>(u),
      u_per_batch, ptr<const float>(v), v_per_batch, ptr<const float>(grad_W), ptr<float>(grad_A_left),
      ptr<float>(grad_A_right), ptr<float>(grad_C), ptr<float>(grad_u), ptr<float>(grad_v), ptr<float>(grad_x), dm,
      num_threads);
}

// Calls f(T{}) with T = double when dbl, else float, with the GIL released.
template <class F>
int64_t with_dtype(bool dbl, F&& f) {
  py::gil_scoped_release nogil;
  return dbl ? f(double{}) : f(float{});
}

int64_t tn_attention_mse_step(bool dbl, std::uintptr_t x, int x_kind, bool x_shared, std::uintptr_t A_left,
                              std::uintptr_t A_right, std::uintptr_t C, std::uintptr_t u, bool u_per_batch,
                              std::uintptr_t v, bool v_per_batch, std::uintptr_t scale, std::uintptr_t y, bool y_shared,
                              bool normalize_map, bool sigmoid, std::uintptr_t loss, std::uintptr_t wrong,
                              std::uintptr_t grad_scale, std::uintptr_t grad_A_left, std::uintptr_t grad_A_right,
                              std::uintptr_t grad_C, std::uintptr_t grad_u, std::uintptr_t grad_v, int64_t E, int64_t N,
                              int64_t M, int d, int D, int num_threads) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, 1);
  return with_dtype(dbl, [&](auto tag) {
    using T = decltype(tag);
    const tnattn::cpu::MseHead<T> head{ptr<const std::uint8_t>(y), y_shared, ptr<const T>(scale), normalize_map,
                                       sigmoid};
    return tnattn::cpu::tn_attention_mse_step<T>(
        xa, ptr<const T>(A_left), ptr<const T>(A_right), ptr<const T>(C), ptr<const T>(u), u_per_batch,
        ptr<const T>(v), v_per_batch, head, ptr<double>(loss), ptr<double>(wrong), ptr<T>(grad_scale),
        ptr<T>(grad_A_left), ptr<T>(grad_A_right), ptr<T>(grad_C), ptr<T>(grad_u), ptr<T>(grad_v), dm, num_threads);
  });
}

int64_t tn_attention_count_wrong(bool dbl, std::uintptr_t x, int x_kind, bool x_shared, std::uintptr_t A_left,
                                 std::uintptr_t A_right, std::uintptr_t C, std::uintptr_t u, bool u_per_batch,
                                 std::uintptr_t v, bool v_per_batch, std::uintptr_t sign, std::uintptr_t y,
                                 bool y_shared, std::uintptr_t wrong, int64_t E, int64_t N, int64_t M, int d, int D,
                                 int num_threads) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, 1);
  return with_dtype(dbl, [&](auto tag) {
    using T = decltype(tag);
    return tnattn::cpu::tn_attention_count_wrong<T>(xa, ptr<const T>(A_left), ptr<const T>(A_right), ptr<const T>(C),
                                                    ptr<const T>(u), u_per_batch, ptr<const T>(v), v_per_batch,
                                                    ptr<const T>(sign), ptr<const std::uint8_t>(y), y_shared,
                                                    ptr<double>(wrong), dm, num_threads);
  });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "tnattn native kernels (CPU; CUDA when built with TNATTN_CUDA)";
#ifdef TNATTN_WITH_CUDA
  m.def("has_cuda", []() { return true; }, "True when the extension was built with the CUDA kernels (TNATTN_CUDA).");
  tnattn::cuda::register_bindings(m);
#else
  m.def("has_cuda", []() { return false; }, "True when the extension was built with the CUDA kernels (TNATTN_CUDA).");
#endif
  m.def("cpu_isa", []() { return std::string(tnattn::cpu::cpu_isa()); },
        "Name of the instruction-set copy of the CPU kernels in use: 'baseline', 'avx2' or 'avx512'.");
  m.def("cpu_isas_compiled", []() { return std::string(tnattn::cpu::cpu_isas_compiled()); },
        "Comma-separated instruction-set copies compiled into this build, worst to best.");
  m.def("cpu_isas_supported", []() { return std::string(tnattn::cpu::cpu_isas_supported()); },
        "Comma-separated compiled copies that this CPU can run, worst to best.");
  m.def("set_cpu_isa", [](const std::string& name) { return tnattn::cpu::set_cpu_isa(name.c_str()); },
        py::arg("name"),
        "Use the named instruction-set copy from now on (process-wide). Returns False, changing nothing, when "
        "it is not compiled or this CPU cannot run it.");
  m.attr("BUILD_COMPILER") = TNATTN_BUILD_COMPILER;
  m.attr("BUILD_FLAGS") = TNATTN_BUILD_FLAGS;
  m.attr("BUILD_NATIVE") = bool(TNATTN_BUILD_NATIVE);
  m.attr("X_UINT8") = int(tnattn::cpu::kUInt8);
  m.attr("X_INT32") = int(tnattn::cpu::kInt32);
  m.attr("X_INT64") = int(tnattn::cpu::kInt64);
  m.attr("X_REAL") = int(tnattn::cpu::kReal);
  m.def("contexts_forward", &contexts_forward, py::arg("dbl"), py::arg("A"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("boundary"), py::arg("boundary_per_batch"), py::arg("out"), py::arg("E"),
        py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"), py::arg("reverse"), py::arg("num_threads"),
        "Normalised contexts into out (E, N, M, D). Returns the number of sequences with symbols outside [0, d).");
  m.def("contexts_backward", &contexts_backward, py::arg("dbl"), py::arg("A"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("boundary"), py::arg("boundary_per_batch"), py::arg("grad_out"),
        py::arg("grad_A"), py::arg("grad_boundary"), py::arg("grad_x"), py::arg("E"), py::arg("N"), py::arg("M"),
        py::arg("d"), py::arg("D"), py::arg("reverse"), py::arg("num_threads"),
        "Backward of contexts_forward: grad_A (E,d,D,D), grad_boundary (E,N,D), grad_x (E,N,M,d); 0 = skip.");
  m.def("tn_attention_forward", &tn_attention_forward, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"), py::arg("u_per_batch"),
        py::arg("v"), py::arg("v_per_batch"), py::arg("W"), py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"),
        py::arg("D"), py::arg("c"), py::arg("num_threads"),
        "Fused TN attention local maps into W (E, N, M, d, c). Returns the number of bad sequences.");
  m.def("tn_attention_backward", &tn_attention_backward, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"),
        py::arg("u_per_batch"), py::arg("v"), py::arg("v_per_batch"), py::arg("grad_W"), py::arg("grad_A_left"),
        py::arg("grad_A_right"), py::arg("grad_C"), py::arg("grad_u"), py::arg("grad_v"), py::arg("grad_x"),
        py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"), py::arg("c"), py::arg("num_threads"),
        "Backward of tn_attention_forward; gradient buffers as in tnattn/cpu.h (0 = skip).");
  m.def("tn_attention_mse_step", &tn_attention_mse_step, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"),
        py::arg("u_per_batch"), py::arg("v"), py::arg("v_per_batch"), py::arg("scale"), py::arg("y"),
        py::arg("y_shared"), py::arg("normalize_map"), py::arg("sigmoid"), py::arg("loss"), py::arg("wrong"),
        py::arg("grad_scale"), py::arg("grad_A_left"), py::arg("grad_A_right"), py::arg("grad_C"), py::arg("grad_u"),
        py::arg("grad_v"), py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"),
        py::arg("num_threads"),
        "Fused Scenario A step (c = 1): local maps, symbol head, squared-error loss and its gradients; see "
        "tnattn/cpu.h. Returns the number of bad sequences.");
  m.def("tn_attention_count_wrong", &tn_attention_count_wrong, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"),
        py::arg("u_per_batch"), py::arg("v"), py::arg("v_per_batch"), py::arg("sign"), py::arg("y"),
        py::arg("y_shared"), py::arg("wrong"), py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"),
        py::arg("num_threads"),
        "Wrong-site counts of the sign prediction (c = 1) into wrong (E,), float64, without writing the maps; "
        "see tnattn/cpu.h. Returns the number of bad sequences.");
}

// pybind11 module tnattn._C: the one binding table of the native ops, CPU and CUDA alike.
//
// Each op is bound once. Its Python arguments are the fields of the op's parameter struct
// (tnattn/api.h) in a fixed order -- tensors as raw addresses (Python ints from tensor.data_ptr();
// 0 = null), sizes and flags, `dbl` selecting double (true) or float (false) for every floating
// buffer -- followed by one execution argument `exec`:
//   an int                          the CPU kernels with that many threads;
//   a tuple (device, stream, alloc) the CUDA kernels (a build with TNATTN_CUDA) on CUDA device
//                                   `device`, enqueued on `stream` (a cudaStream_t as an integer,
//                                   torch.cuda.current_stream(device).cuda_stream), with
//                                   alloc(nbytes) -> device address of at least nbytes on that
//                                   device, valid until the call returns (tnattn.ops passes torch
//                                   tensors' data_ptr()).
// The flat argument list (rather than a bound struct filled attribute by attribute from Python)
// keeps the per-call overhead of the eager ops at one pybind11 call. tnattn.ops guarantees
// contiguity, dtypes, devices and shapes before calling. The GIL is released while the kernels run
// (alloc takes it back). CUDA errors raise RuntimeError with the CUDA message.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "cpu/isa.h"
#include "tnattn/api.h"
#include "tnattn/cpu.h"

#ifdef TNATTN_WITH_CUDA
#include "cuda/api.h"
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
using tnattn::Dims;
using tnattn::Exec;
using tnattn::XArg;
using addr = std::uintptr_t;

namespace {

template <typename T>
T* ptr(addr a) {
  return reinterpret_cast<T*>(a);
}

// The execution context of one call, built from its `exec` argument. On CUDA the context holds a
// py::function (the allocator): it is dropped with the GIL held.
struct ExecHolder {
  Exec exec;
  ExecHolder() = default;
  ExecHolder(const ExecHolder&) = delete;
  ExecHolder& operator=(const ExecHolder&) = delete;
  ~ExecHolder() {
    if (exec.alloc) {
      py::gil_scoped_acquire gil;
      exec.alloc = nullptr;
    }
  }
};

void make_exec(const py::object& arg, ExecHolder& h) {
  if (py::isinstance<py::int_>(arg)) {
    h.exec.num_threads = arg.cast<int>();
    return;
  }
  if (!py::isinstance<py::tuple>(arg) || py::len(arg) != 3)
    throw py::type_error("tnattn._C: exec must be a thread count (int) or a tuple (device, stream, alloc)");
#ifdef TNATTN_WITH_CUDA
  py::tuple t = arg.cast<py::tuple>();
  const int device = t[0].cast<int>();
  if (device < 0) throw py::value_error("tnattn._C: device must be a CUDA device index >= 0");
  h.exec.device = device;
  h.exec.stream = t[1].cast<addr>();
  py::function alloc = t[2].cast<py::function>();
  // Called from the entry points with the GIL released: take it back for the Python allocator.
  h.exec.alloc = [alloc](std::size_t nbytes) -> void* {
    py::gil_scoped_acquire gil;
    py::object r = alloc(nbytes);
    return reinterpret_cast<void*>(r.cast<addr>());
  };
#else
  throw py::value_error("tnattn._C: this build has no CUDA kernels (TNATTN_CUDA=OFF); pass a thread count");
#endif
}

XArg make_x(addr x, int x_kind, bool x_shared) {
  if (x_kind < 0 || x_kind > 3) throw py::value_error("x_kind must be 0 (uint8), 1 (int32), 2 (int64) or 3 (real)");
  return XArg{reinterpret_cast<const void*>(x), x_kind, x_shared};
}

Dims make_dims(int64_t E, int64_t N, int64_t M, int d, int D, int c, const Exec& exec) {
  if (E < 1 || N < 1 || M < 1 || d < 1 || D < 1 || c < 1)
    throw py::value_error("tnattn._C: all sizes must be positive");
  if (exec.on_cuda() && D > 1024)
    throw py::value_error("tnattn._C: bond dimension D above 1024 is not supported on CUDA");
  return Dims{E, N, M, d, D, c};
}

template <typename T>
tnattn::TnInputs<T> make_inputs(addr x, int x_kind, bool x_shared, addr A_left, addr A_right, addr C, addr u,
                                bool u_per_batch, addr v, bool v_per_batch, Dims dims) {
  tnattn::TnInputs<T> in;
  in.x = make_x(x, x_kind, x_shared);
  in.A_left = ptr<const T>(A_left);
  in.A_right = ptr<const T>(A_right);
  in.C = ptr<const T>(C);
  in.u = ptr<const T>(u);
  in.u_per_batch = u_per_batch;
  in.v = ptr<const T>(v);
  in.v_per_batch = v_per_batch;
  in.dims = dims;
  return in;
}

template <typename T>
tnattn::TnParamGrads<T> make_grads(addr A_left, addr A_right, addr C, addr u, addr v) {
  return tnattn::TnParamGrads<T>{ptr<T>(A_left), ptr<T>(A_right), ptr<T>(C), ptr<T>(u), ptr<T>(v)};
}

// Runs f(T{}) with T = double when dbl, else float, with the GIL released.
template <class F>
int64_t with_dtype(bool dbl, F&& f) {
  py::gil_scoped_release nogil;
  return dbl ? f(double{}) : f(float{});
}

// The device choice: the CUDA entry point when the context is on CUDA, else the CPU one.
#ifdef TNATTN_WITH_CUDA
#define TNATTN_ON_DEVICE(OP, P, EXEC) \
  ((EXEC).on_cuda() ? tnattn::cuda::OP(P, EXEC) : tnattn::cpu::OP(P, EXEC))
#else
#define TNATTN_ON_DEVICE(OP, P, EXEC) tnattn::cpu::OP(P, EXEC)
#endif

int64_t contexts(bool backward, bool dbl, addr A, addr x, int x_kind, bool x_shared, addr boundary,
                 bool boundary_per_batch, addr out, addr grad_out, addr grad_A, addr grad_boundary, addr grad_x,
                 int64_t E, int64_t N, int64_t M, int d, int D, bool reverse, const py::object& exec_arg) {
  ExecHolder h;
  make_exec(exec_arg, h);
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, 1, h.exec);
  return with_dtype(dbl, [&](auto tag) {
    using T = decltype(tag);
    tnattn::ContextsParams<T> p;
    p.A = ptr<const T>(A);
    p.x = xa;
    p.boundary = ptr<const T>(boundary);
    p.boundary_per_batch = boundary_per_batch;
    p.reverse = reverse;
    p.dims = dm;
    p.out = ptr<T>(out);
    p.grad_out = ptr<const T>(grad_out);
    p.grad_A = ptr<T>(grad_A);
    p.grad_boundary = ptr<T>(grad_boundary);
    p.grad_x = ptr<T>(grad_x);
    return backward ? TNATTN_ON_DEVICE(contexts_backward, p, h.exec) : TNATTN_ON_DEVICE(contexts_forward, p, h.exec);
  });
}

int64_t contexts_forward(bool dbl, addr A, addr x, int x_kind, bool x_shared, addr boundary, bool boundary_per_batch,
                         addr out, int64_t E, int64_t N, int64_t M, int d, int D, bool reverse,
                         const py::object& exec) {
  return contexts(false, dbl, A, x, x_kind, x_shared, boundary, boundary_per_batch, out, 0, 0, 0, 0, E, N, M, d, D,
                  reverse, exec);
}

int64_t contexts_backward(bool dbl, addr A, addr x, int x_kind, bool x_shared, addr boundary, bool boundary_per_batch,
                          addr grad_out, addr grad_A, addr grad_boundary, addr grad_x, int64_t E, int64_t N, int64_t M,
                          int d, int D, bool reverse, const py::object& exec) {
  return contexts(true, dbl, A, x, x_kind, x_shared, boundary, boundary_per_batch, 0, grad_out, grad_A, grad_boundary,
                  grad_x, E, N, M, d, D, reverse, exec);
}

int64_t tn_attention_forward(bool dbl, addr x, int x_kind, bool x_shared, addr A_left, addr A_right, addr C, addr u,
                             bool u_per_batch, addr v, bool v_per_batch, addr W, int64_t E, int64_t N, int64_t M,
                             int d, int D, int c, const py::object& exec_arg) {
  ExecHolder h;
  make_exec(exec_arg, h);
  const Dims dm = make_dims(E, N, M, d, D, c, h.exec);
  return with_dtype(dbl, [&](auto tag) {
    using T = decltype(tag);
    tnattn::TnAttentionParams<T> p;
    p.in = make_inputs<T>(x, x_kind, x_shared, A_left, A_right, C, u, u_per_batch, v, v_per_batch, dm);
    p.W = ptr<T>(W);
    return TNATTN_ON_DEVICE(tn_attention_forward, p, h.exec);
  });
}

int64_t tn_attention_backward(bool dbl, addr x, int x_kind, bool x_shared, addr A_left, addr A_right, addr C, addr u,
                              bool u_per_batch, addr v, bool v_per_batch, addr grad_W, addr grad_A_left,
                              addr grad_A_right, addr grad_C, addr grad_u, addr grad_v, addr grad_x, int64_t E,
                              int64_t N, int64_t M, int d, int D, int c, const py::object& exec_arg) {
  ExecHolder h;
  make_exec(exec_arg, h);
  const Dims dm = make_dims(E, N, M, d, D, c, h.exec);
  return with_dtype(dbl, [&](auto tag) {
    using T = decltype(tag);
    tnattn::TnAttentionParams<T> p;
    p.in = make_inputs<T>(x, x_kind, x_shared, A_left, A_right, C, u, u_per_batch, v, v_per_batch, dm);
    p.grad_W = ptr<const T>(grad_W);
    p.grad = make_grads<T>(grad_A_left, grad_A_right, grad_C, grad_u, grad_v);
    p.grad_x = ptr<T>(grad_x);
    return TNATTN_ON_DEVICE(tn_attention_backward, p, h.exec);
  });
}

int64_t tn_attention_mse_step(bool dbl, addr x, int x_kind, bool x_shared, addr A_left, addr A_right, addr C, addr u,
                              bool u_per_batch, addr v, bool v_per_batch, addr scale, addr y, bool y_shared,
                              bool normalize_map, bool sigmoid, addr loss, addr wrong, addr grad_scale,
                              addr grad_A_left, addr grad_A_right, addr grad_C, addr grad_u, addr grad_v, int64_t E,
                              int64_t N, int64_t M, int d, int D, const py::object& exec_arg) {
  ExecHolder h;
  make_exec(exec_arg, h);
  const Dims dm = make_dims(E, N, M, d, D, 1, h.exec);
  return with_dtype(dbl, [&](auto tag) {
    using T = decltype(tag);
    tnattn::MseStepParams<T> p;
    p.in = make_inputs<T>(x, x_kind, x_shared, A_left, A_right, C, u, u_per_batch, v, v_per_batch, dm);
    p.head = tnattn::MseHead<T>{ptr<const std::uint8_t>(y), y_shared, ptr<const T>(scale), normalize_map, sigmoid};
    p.loss = ptr<double>(loss);
    p.wrong = ptr<double>(wrong);
    p.grad_scale = ptr<T>(grad_scale);
    p.grad = make_grads<T>(grad_A_left, grad_A_right, grad_C, grad_u, grad_v);
    return TNATTN_ON_DEVICE(tn_attention_mse_step, p, h.exec);
  });
}

int64_t tn_attention_count_wrong(bool dbl, addr x, int x_kind, bool x_shared, addr A_left, addr A_right, addr C,
                                 addr u, bool u_per_batch, addr v, bool v_per_batch, addr sign, addr y, bool y_shared,
                                 addr wrong, int64_t E, int64_t N, int64_t M, int d, int D,
                                 const py::object& exec_arg) {
  ExecHolder h;
  make_exec(exec_arg, h);
  const Dims dm = make_dims(E, N, M, d, D, 1, h.exec);
  return with_dtype(dbl, [&](auto tag) {
    using T = decltype(tag);
    tnattn::CountWrongParams<T> p;
    p.in = make_inputs<T>(x, x_kind, x_shared, A_left, A_right, C, u, u_per_batch, v, v_per_batch, dm);
    p.sign = ptr<const T>(sign);
    p.y = ptr<const std::uint8_t>(y);
    p.y_shared = y_shared;
    p.wrong = ptr<double>(wrong);
    return TNATTN_ON_DEVICE(tn_attention_count_wrong, p, h.exec);
  });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "tnattn native kernels (CPU; CUDA when built with TNATTN_CUDA)";
#ifdef TNATTN_WITH_CUDA
  m.def("has_cuda", []() { return true; }, "True when the extension was built with the CUDA kernels (TNATTN_CUDA).");
  py::module_ c = m.def_submodule("cuda", "The CUDA runtime as the extension sees it (the ops take exec tuples)");
  c.def("device_count", &tnattn::cuda::device_count,
        "Number of CUDA devices visible to the extension's CUDA runtime.");
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
  m.attr("X_UINT8") = int(tnattn::kUInt8);
  m.attr("X_INT32") = int(tnattn::kInt32);
  m.attr("X_INT64") = int(tnattn::kInt64);
  m.attr("X_REAL") = int(tnattn::kReal);
  m.def("contexts_forward", &contexts_forward, py::arg("dbl"), py::arg("A"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("boundary"), py::arg("boundary_per_batch"), py::arg("out"), py::arg("E"),
        py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"), py::arg("reverse"), py::arg("exec"),
        "Normalised contexts into out (E, N, M, D) (ContextsParams). Returns the number of sequences with "
        "symbols outside [0, d).");
  m.def("contexts_backward", &contexts_backward, py::arg("dbl"), py::arg("A"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("boundary"), py::arg("boundary_per_batch"), py::arg("grad_out"),
        py::arg("grad_A"), py::arg("grad_boundary"), py::arg("grad_x"), py::arg("E"), py::arg("N"), py::arg("M"),
        py::arg("d"), py::arg("D"), py::arg("reverse"), py::arg("exec"),
        "Backward of contexts_forward: grad_A (E,d,D,D), grad_boundary (E,N,D), grad_x (E,N,M,d); 0 = skip.");
  m.def("tn_attention_forward", &tn_attention_forward, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"), py::arg("u_per_batch"),
        py::arg("v"), py::arg("v_per_batch"), py::arg("W"), py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"),
        py::arg("D"), py::arg("c"), py::arg("exec"),
        "Fused TN attention local maps into W (E, N, M, d, c) (TnAttentionParams). Returns the number of bad "
        "sequences.");
  m.def("tn_attention_backward", &tn_attention_backward, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"),
        py::arg("u_per_batch"), py::arg("v"), py::arg("v_per_batch"), py::arg("grad_W"), py::arg("grad_A_left"),
        py::arg("grad_A_right"), py::arg("grad_C"), py::arg("grad_u"), py::arg("grad_v"), py::arg("grad_x"),
        py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"), py::arg("c"), py::arg("exec"),
        "Backward of tn_attention_forward; gradient buffers as in tnattn/api.h (0 = skip).");
  m.def("tn_attention_mse_step", &tn_attention_mse_step, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"),
        py::arg("u_per_batch"), py::arg("v"), py::arg("v_per_batch"), py::arg("scale"), py::arg("y"),
        py::arg("y_shared"), py::arg("normalize_map"), py::arg("sigmoid"), py::arg("loss"), py::arg("wrong"),
        py::arg("grad_scale"), py::arg("grad_A_left"), py::arg("grad_A_right"), py::arg("grad_C"), py::arg("grad_u"),
        py::arg("grad_v"), py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"), py::arg("exec"),
        "Fused Scenario A step (c = 1; MseStepParams): local maps, symbol head, squared-error loss and its "
        "gradients; see tnattn/api.h. Returns the number of bad sequences.");
  m.def("tn_attention_count_wrong", &tn_attention_count_wrong, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"),
        py::arg("u_per_batch"), py::arg("v"), py::arg("v_per_batch"), py::arg("sign"), py::arg("y"),
        py::arg("y_shared"), py::arg("wrong"), py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"),
        py::arg("exec"),
        "Wrong-site counts of the sign prediction (c = 1; CountWrongParams) into wrong (E,), float64, without "
        "writing the maps; see tnattn/api.h. Returns the number of bad sequences.");
}

// pybind11 wrappers of the CUDA entry points: submodule tnattn._C.cuda with the same functions and
// arguments as the CPU ones in tnattn._C, except that the trailing num_threads is replaced by
//   device  the CUDA device index of every buffer,
//   stream  the cudaStream_t as an integer (torch.cuda.current_stream(device).cuda_stream),
//   alloc   a Python callable alloc(nbytes) -> device address of at least nbytes on that device that
//           stays valid until the call returns (tnattn.ops passes torch tensors' data_ptr()).
// The GIL is released while kernels are enqueued (and while waiting for the bad-symbol count);
// alloc is called with the GIL held. CUDA errors raise RuntimeError with the CUDA message.
#include "register.h"

#include <cstdint>

#include "api.h"

namespace py = pybind11;

namespace tnattn {
namespace cuda {
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
    throw py::value_error("tnattn._C.cuda: all sizes must be positive");
  if (D > 1024) throw py::value_error("tnattn._C.cuda: bond dimension D above 1024 is not supported");
  return Dims{E, N, M, d, D, c};
}

Launch make_launch(int device, std::uintptr_t stream, py::function alloc) {
  if (device < 0) throw py::value_error("tnattn._C.cuda: device must be a CUDA device index >= 0");
  Launch L;
  L.device = device;
  L.stream = stream;
  // Called from the entry points with the GIL released: take it back for the Python allocator.
  L.alloc = [alloc](std::size_t nbytes) -> void* {
    py::gil_scoped_acquire gil;
    py::object r = alloc(nbytes);
    return reinterpret_cast<void*>(r.cast<std::uintptr_t>());
  };
  return L;
}

// The std::function holds a py::function: drop it with the GIL held.
struct LaunchHolder {
  Launch L;
  ~LaunchHolder() {
    py::gil_scoped_acquire gil;
    L.alloc = nullptr;
  }
};

int64_t contexts_forward_py(bool dbl, std::uintptr_t A, std::uintptr_t x, int x_kind, bool x_shared,
                            std::uintptr_t boundary, bool boundary_per_batch, std::uintptr_t out, int64_t E,
                            int64_t N, int64_t M, int d, int D, bool reverse, int device, std::uintptr_t stream,
                            py::function alloc) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, 1);
  LaunchHolder h{make_launch(device, stream, std::move(alloc))};
  py::gil_scoped_release nogil;
  if (dbl)
    return contexts_forward<double>(ptr<const double>(A), xa, ptr<const double>(boundary), boundary_per_batch,
                                    ptr<double>(out), dm, reverse, h.L);
  return contexts_forward<float>(ptr<const float>(A), xa, ptr<const float>(boundary), boundary_per_batch,
                                 ptr<float>(out), dm, reverse, h.L);
}

int64_t contexts_backward_py(bool dbl, std::uintptr_t A, std::uintptr_t x, int x_kind, bool x_shared,
                             std::uintptr_t boundary, bool boundary_per_batch, std::uintptr_t grad_out,
                             std::uintptr_t grad_A, std::uintptr_t grad_boundary, std::uintptr_t grad_x, int64_t E,
                             int64_t N, int64_t M, int d, int D, bool reverse, int device, std::uintptr_t stream,
                             py::function alloc) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, 1);
  LaunchHolder h{make_launch(device, stream, std::move(alloc))};
  py::gil_scoped_release nogil;
  if (dbl)
    return contexts_backward<double>(ptr<const double>(A), xa, ptr<const double>(boundary), boundary_per_batch,
                                     ptr<const double>(grad_out), ptr<double>(grad_A), ptr<double>(grad_boundary),
                                     ptr<double>(grad_x), dm, reverse, h.L);
  return contexts_backward<float>(ptr<const float>(A), xa, ptr<const float>(boundary), boundary_per_batch,
                                  ptr<const float>(grad_out), ptr<float>(grad_A), ptr<float>(grad_boundary),
                                  ptr<float>(grad_x), dm, reverse, h.L);
}

int64_t tn_attention_forward_py(bool dbl, std::uintptr_t x, int x_kind, bool x_shared, std::uintptr_t A_left,
                                std::uintptr_t A_right, std::uintptr_t C, std::uintptr_t u, bool u_per_batch,
                                std::uintptr_t v, bool v_per_batch, std::uintptr_t W, int64_t E, int64_t N, int64_t M,
                                int d, int D, int c, int device, std::uintptr_t stream, py::function alloc) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, c);
  LaunchHolder h{make_launch(device, stream, std::move(alloc))};
  py::gil_scoped_release nogil;
  if (dbl)
    return tn_attention_forward<double>(xa, ptr<const double>(A_left), ptr<const double>(A_right),
                                        ptr<const double>(C), ptr<const double>(u), u_per_batch, ptr<const double>(v),
                                        v_per_batch, ptr<double>(W), dm, h.L);
  return tn_attention_forward<float>(xa, ptr<const float>(A_left), ptr<const float>(A_right), ptr<const float>(C),
                                     ptr<const float>(u), u_per_batch, ptr<const float>(v), v_per_batch,
                                     ptr<float>(W), dm, h.L);
}

int64_t tn_attention_backward_py(bool dbl, std::uintptr_t x, int x_kind, bool x_shared, std::uintptr_t A_left,
                                 std::uintptr_t A_right, std::uintptr_t C, std::uintptr_t u, bool u_per_batch,
                                 std::uintptr_t v, bool v_per_batch, std::uintptr_t grad_W,
                                 std::uintptr_t grad_A_left, std::uintptr_t grad_A_right, std::uintptr_t grad_C,
                                 std::uintptr_t grad_u, std::uintptr_t grad_v, std::uintptr_t grad_x, int64_t E,
                                 int64_t N, int64_t M, int d, int D, int c, int device, std::uintptr_t stream,
                                 py::function alloc) {
  const XArg xa = make_x(x, x_kind, x_shared);
  const Dims dm = make_dims(E, N, M, d, D, c);
  LaunchHolder h{make_launch(device, stream, std::move(alloc))};
  py::gil_scoped_release nogil;
  if (dbl)
    return tn_attention_backward<double>(
        xa, ptr<const double>(A_left), ptr<const double>(A_right), ptr<const double>(C), ptr<const double>(u),
        u_per_batch, ptr<const double>(v), v_per_batch, ptr<const double>(grad_W), ptr<double>(grad_A_left),
        ptr<double>(grad_A_right), ptr<double>(grad_C), ptr<double>(grad_u), ptr<double>(grad_v),
        ptr<double>(grad_x), dm, h.L);
  return tn_attention_backward<float>(xa, ptr<const float>(A_left), ptr<const float>(A_right), ptr<const float>(C),
                                      ptr<const float>(u), u_per_batch, ptr<const float>(v), v_per_batch,
                                      ptr<const float>(grad_W), ptr<float>(grad_A_left), ptr<float>(grad_A_right),
                                      ptr<float>(grad_C), ptr<float>(grad_u), ptr<float>(grad_v),
                                      ptr<float>(grad_x), dm, h.L);
}

}  // namespace

void register_bindings(py::module_& m) {
  py::module_ c = m.def_submodule("cuda", "CUDA kernels (same entry points as tnattn._C; see register.cpp)");
  c.def("device_count", &device_count, "Number of CUDA devices visible to the extension's CUDA runtime.");
  c.def("contexts_forward", &contexts_forward_py, py::arg("dbl"), py::arg("A"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("boundary"), py::arg("boundary_per_batch"), py::arg("out"), py::arg("E"),
        py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"), py::arg("reverse"), py::arg("device"),
        py::arg("stream"), py::arg("alloc"));
  c.def("contexts_backward", &contexts_backward_py, py::arg("dbl"), py::arg("A"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("boundary"), py::arg("boundary_per_batch"), py::arg("grad_out"),
        py::arg("grad_A"), py::arg("grad_boundary"), py::arg("grad_x"), py::arg("E"), py::arg("N"), py::arg("M"),
        py::arg("d"), py::arg("D"), py::arg("reverse"), py::arg("device"), py::arg("stream"), py::arg("alloc"));
  c.def("tn_attention_forward", &tn_attention_forward_py, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"),
        py::arg("u_per_batch"), py::arg("v"), py::arg("v_per_batch"), py::arg("W"), py::arg("E"), py::arg("N"),
        py::arg("M"), py::arg("d"), py::arg("D"), py::arg("c"), py::arg("device"), py::arg("stream"),
        py::arg("alloc"));
  c.def("tn_attention_backward", &tn_attention_backward_py, py::arg("dbl"), py::arg("x"), py::arg("x_kind"),
        py::arg("x_shared"), py::arg("A_left"), py::arg("A_right"), py::arg("C"), py::arg("u"),
        py::arg("u_per_batch"), py::arg("v"), py::arg("v_per_batch"), py::arg("grad_W"), py::arg("grad_A_left"),
        py::arg("grad_A_right"), py::arg("grad_C"), py::arg("grad_u"), py::arg("grad_v"), py::arg("grad_x"),
        py::arg("E"), py::arg("N"), py::arg("M"), py::arg("d"), py::arg("D"), py::arg("c"), py::arg("device"),
        py::arg("stream"), py::arg("alloc"));
}

}  // namespace cuda
}  // namespace tnattn

// Python bindings of the augmentation kernels: the private module `delira.augment._C`.
// Argument checking that needs Python knowledge lives in the Python layer; this file checks
// what the kernels rely on and converts C++ exceptions into ValueError / TypeError / RuntimeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "delira_build_config.h"

#include "../core/flip.h"
#include "../cpu/flip_cpu.h"
#include "../cpu/parallel.h"
#if DELIRA_AUGMENT_WITH_CUDA
#include "../cuda/flip_cuda.h"
#endif

namespace py = pybind11;
using delira::DType;

namespace {

DType dtype_of(const py::dtype& dt) {
  if (dt.equal(py::dtype::of<float>())) return DType::Float32;
  if (dt.equal(py::dtype::of<double>())) return DType::Float64;
  if (dt.equal(py::dtype::of<std::uint8_t>())) return DType::UInt8;
  if (dt.equal(py::dtype::of<std::int16_t>())) return DType::Int16;
  if (dt.equal(py::dtype::of<std::int32_t>())) return DType::Int32;
  if (dt.equal(py::dtype::of<std::int64_t>())) return DType::Int64;
  throw py::type_error("unsupported dtype " + py::str(dt).cast<std::string>() +
                       "; supported are float32, float64, uint8, int16, int32, int64 in native byte "
                       "order (convert with x.astype(...))");
}

DType dtype_from_name(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(DType::Int64); ++i) {
    if (name == delira::dtype_name(static_cast<DType>(i))) return static_cast<DType>(i);
  }
  throw py::type_error("unsupported dtype " + name +
                       "; supported are float32, float64, uint8, int16, int32, int64");
}

delira::FlipGeometry make_geometry(const std::vector<std::int64_t>& shape,
                                   const std::vector<std::int64_t>& strides,
                                   const std::vector<int>& axes) {
  const int ndim = static_cast<int>(shape.size());
  if (ndim < 1 || ndim > delira::kMaxDims) {
    throw py::value_error("flip: x has " + std::to_string(ndim) + " dimensions; supported are 1 to " +
                          std::to_string(delira::kMaxDims));
  }
  if (strides.size() != shape.size()) throw py::value_error("flip: strides and shape differ in length");
  delira::FlipGeometry g;
  g.ndim = ndim;
  for (int d = 0; d < ndim; ++d) {
    g.shape[d] = shape[d];
    g.in_strides[d] = strides[d];
  }
  for (int a : axes) {
    int axis = a < 0 ? a + ndim : a;
    if (axis < 0 || axis >= ndim) {
      throw py::value_error("flip: axis " + std::to_string(a) + " is out of range for an array with " +
                            std::to_string(ndim) + " dimensions");
    }
    g.flip[axis] = !g.flip[axis];
  }
  return g;
}

py::array flip_cpu(const py::array& x, const std::vector<int>& axes) {
  const DType dtype = dtype_of(x.dtype());
  const auto itemsize = static_cast<std::int64_t>(x.itemsize());
  std::vector<std::int64_t> shape(x.shape(), x.shape() + x.ndim());
  std::vector<std::int64_t> strides(x.ndim());
  for (py::ssize_t d = 0; d < x.ndim(); ++d) {
    if (x.strides(d) % itemsize != 0) {
      throw py::value_error("flip: x has a stride that is not a multiple of its item size; pass "
                            "numpy.ascontiguousarray(x)");
    }
    strides[d] = x.strides(d) / itemsize;
  }
  delira::FlipGeometry g = make_geometry(shape, strides, axes);
  py::array out(x.dtype(), std::vector<py::ssize_t>(shape.begin(), shape.end()));
  const void* src = x.data();
  void* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    delira::cpu::flip(src, dst, dtype, g);
  }
  return out;
}

#if DELIRA_AUGMENT_WITH_CUDA
void flip_cuda(std::uintptr_t in_ptr, std::uintptr_t out_ptr, const std::string& dtype,
               const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
               const std::vector<int>& axes, std::uintptr_t stream) {
  delira::FlipGeometry g = make_geometry(shape, strides, axes);
  py::gil_scoped_release release;
  delira::cuda::flip(reinterpret_cast<const void*>(in_ptr), reinterpret_cast<void*>(out_ptr),
                     dtype_from_name(dtype), g, reinterpret_cast<void*>(stream));
}
#endif

py::dict build_info() {
  py::dict info;
  info["compiled"] = true;
#if DELIRA_AUGMENT_WITH_CUDA
  info["cuda_compiled"] = true;
  info["cuda_version"] = delira::cuda::runtime_version();
  info["cuda_architectures"] = std::string(DELIRA_AUGMENT_CUDA_ARCHITECTURES);
#else
  info["cuda_compiled"] = false;
  info["cuda_version"] = py::none();
  info["cuda_architectures"] = py::none();
#endif
  info["openmp"] = delira::cpu::openmp_enabled();
  info["num_threads"] = delira::cpu::get_num_threads();
  info["compiler"] = std::string(DELIRA_AUGMENT_COMPILER);
  return info;
}

py::tuple cuda_device_count() {
#if DELIRA_AUGMENT_WITH_CUDA
  std::string error;
  int n = delira::cuda::device_count(&error);
  if (n < 0) return py::make_tuple(0, error);
  return py::make_tuple(n, py::none());
#else
  return py::make_tuple(0, std::string("the extension was built without CUDA"));
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled kernels of delira.augment (private; use the functions of delira.augment).";
  m.def("flip", &flip_cpu, py::arg("x"), py::arg("axes"),
        "Copy of x with the given axes reversed (CPU executor).");
#if DELIRA_AUGMENT_WITH_CUDA
  m.def("flip_cuda", &flip_cuda, py::arg("in_ptr"), py::arg("out_ptr"), py::arg("dtype"),
        py::arg("shape"), py::arg("strides"), py::arg("axes"), py::arg("stream"),
        "Flip of a device buffer into a contiguous device buffer on a CUDA stream.");
#endif
  m.def("build_info", &build_info, "How the extension was built.");
  m.def("cuda_device_count", &cuda_device_count,
        "(number of visible CUDA devices, error text or None).");
  m.def("get_num_threads", &delira::cpu::get_num_threads);
  m.def("set_num_threads", &delira::cpu::set_num_threads, py::arg("n"));
}

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
#include "../core/spec.h"
#include "../cpu/engine.h"
#include "../cpu/flip_cpu.h"
#include "../cpu/parallel.h"
#if DELIRA_AUGMENT_WITH_CUDA
#include "../cuda/engine_cuda.h"
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

#if DELIRA_AUGMENT_WITH_CUDA
DType dtype_from_name(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(DType::Int64); ++i) {
    if (name == delira::dtype_name(static_cast<DType>(i))) return static_cast<DType>(i);
  }
  throw py::type_error("unsupported dtype " + name +
                       "; supported are float32, float64, uint8, int16, int32, int64");
}

// The dtype argument of the CUDA entry points: its name ("float32") or anything numpy.dtype() takes
// (a numpy dtype or type), so that a caller passing the CudaArray's numpy dtype cannot hit pybind11's
// "incompatible function arguments".
DType dtype_arg(const py::object& dtype) {
  if (py::isinstance<py::str>(dtype)) return dtype_from_name(dtype.cast<std::string>());
  return dtype_of(py::dtype::from_args(dtype));
}
#endif

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
void flip_cuda(std::uintptr_t in_ptr, std::uintptr_t out_ptr, const py::object& dtype,
               const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
               const std::vector<int>& axes, std::uintptr_t stream) {
  delira::FlipGeometry g = make_geometry(shape, strides, axes);
  const DType dt = dtype_arg(dtype);
  py::gil_scoped_release release;
  delira::cuda::flip(reinterpret_cast<const void*>(in_ptr), reinterpret_cast<void*>(out_ptr), dt, g,
                     reinterpret_cast<void*>(stream));
}
#endif


// ---------------------------------------------------------------------------------------------
// The augmentation engine. Shapes and values are checked in Python (delira.augment.functional);
// the checks here protect the kernels from inconsistent calls.

delira::cpu::ArrayRef array_ref(const py::array& x, const char* name) {
  delira::cpu::ArrayRef ref;
  if (x.ndim() < 1 || x.ndim() > delira::kMaxDims) {
    throw py::value_error(std::string(name) + " must have 1 to 5 dimensions");
  }
  ref.data = x.data();
  ref.dtype = dtype_of(x.dtype());
  ref.ndim = static_cast<int>(x.ndim());
  const auto itemsize = static_cast<std::int64_t>(x.itemsize());
  for (int d = 0; d < ref.ndim; ++d) {
    ref.shape[d] = x.shape(d);
    if (x.strides(d) % itemsize != 0) {
      throw py::value_error(std::string(name) + " has a stride that is not a multiple of its item size");
    }
    ref.stride[d] = x.strides(d) / itemsize;
  }
  return ref;
}

delira::cpu::OutRef out_ref(py::array& x) {
  delira::cpu::OutRef ref;
  ref.data = x.mutable_data();
  ref.dtype = dtype_of(x.dtype());
  ref.ndim = static_cast<int>(x.ndim());
  for (int d = 0; d < ref.ndim; ++d) ref.shape[d] = x.shape(d);
  return ref;
}

delira::BorderMode border_mode(int mode) {
  if (mode < 0 || mode > 3) throw py::value_error("unknown border mode " + std::to_string(mode));
  return static_cast<delira::BorderMode>(mode);
}

delira::cpu::Program make_program(std::int64_t n, const std::vector<int>& kinds, const std::vector<int>& refs,
                                  const py::array_t<float, py::array::c_style | py::array::forcecast>& params,
                                  const py::array_t<bool, py::array::c_style | py::array::forcecast>& active,
                                  const py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>& seeds) {
  delira::cpu::Program prog;
  const auto n_ops = static_cast<std::int64_t>(kinds.size());
  if (static_cast<std::int64_t>(refs.size()) != n_ops) throw py::value_error("op_refs must have one entry per op");
  if (params.ndim() != 3 || params.shape(0) != n || params.shape(1) != n_ops || params.shape(2) != 3) {
    throw py::value_error("op_params must have shape (N, n_ops, 3)");
  }
  if (active.ndim() != 2 || active.shape(0) != n || active.shape(1) != n_ops) {
    throw py::value_error("op_active must have shape (N, n_ops)");
  }
  if (seeds.ndim() != 1 || seeds.shape(0) != n) throw py::value_error("seeds must have shape (N,)");
  for (std::int64_t j = 0; j < n_ops; ++j) {
    if (kinds[j] < 0 || kinds[j] > static_cast<int>(delira::OpKind::PercentileClip)) {
      throw py::value_error("unknown intensity op " + std::to_string(kinds[j]));
    }
    if (refs[j] >= n_ops) throw py::value_error("op_refs points past the program");
    prog.kinds.push_back(static_cast<delira::OpKind>(kinds[j]));
    prog.refs.push_back(refs[j]);
  }
  const float* p = params.data();
  const bool* a = active.data();
  for (std::int64_t i = 0; i < n * n_ops; ++i) {
    delira::OpParams q;
    q.p[0] = p[3 * i];
    q.p[1] = p[3 * i + 1];
    q.p[2] = p[3 * i + 2];
    q.active = a[i];
    prog.params.push_back(q);
  }
  prog.seeds.assign(seeds.data(), seeds.data() + n);
  return prog;
}

// Elastic control points and their per-sample origin/spacing into `spec` (or nothing for None).
void set_elastic(delira::cpu::SpatialSpec& spec, const py::object& elastic,
                 const py::array_t<float, py::array::c_style | py::array::forcecast>& grid_origin,
                 const py::array_t<float, py::array::c_style | py::array::forcecast>& grid_spacing, std::int64_t n) {
  if (elastic.is_none()) return;
  const int sd = spec.ndim;
  auto grid = elastic.cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
  if (grid.ndim() != sd + 2 || grid.shape(0) != n || grid.shape(1) != sd) {
    throw py::value_error("elastic control points must have shape (N, ndim, *grid)");
  }
  if (grid_origin.size() != n * sd || grid_spacing.size() != n * sd) {
    throw py::value_error("grid_origin and grid_spacing must have shape (N, ndim)");
  }
  for (int d = 0; d < sd; ++d) {
    spec.grid[d] = grid.shape(2 + d);
    if (spec.grid[d] < 4) throw py::value_error("elastic grid needs at least 4 control points per axis");
  }
  spec.elastic.assign(grid.data(), grid.data() + grid.size());
  spec.grid_origin.assign(grid_origin.data(), grid_origin.data() + grid_origin.size());
  spec.grid_spacing.assign(grid_spacing.data(), grid_spacing.data() + grid_spacing.size());
}

py::tuple resample(const py::object& data, const py::object& seg, const std::vector<std::int64_t>& out_shape,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& affine,
                   const py::object& elastic,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& grid_origin,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& grid_spacing, int order_data, int mode_data, double cval_data,
                   int order_seg, int mode_seg, double cval_seg, const std::vector<int>& op_kinds,
                   const std::vector<int>& op_refs,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& op_params,
                   const py::array_t<bool, py::array::c_style | py::array::forcecast>& op_active,
                   const py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>& seeds) {
  const int sd = static_cast<int>(out_shape.size());
  if (sd != 2 && sd != 3) throw py::value_error("output_shape must have 2 or 3 entries");
  delira::cpu::SpatialSpec spec;
  spec.ndim = sd;
  for (int d = 0; d < sd; ++d) {
    if (out_shape[d] < 0) throw py::value_error("output_shape must be non-negative");
    spec.out_shape[d] = out_shape[d];
  }
  spec.affine.assign(affine.data(), affine.data() + affine.size());
  spec.order_data = order_data;
  spec.mode_data = border_mode(mode_data);
  spec.cval_data = cval_data;
  spec.order_seg = order_seg;
  spec.mode_seg = border_mode(mode_seg);
  spec.cval_seg = cval_seg;

  py::array data_arr, seg_arr;
  delira::cpu::ArrayRef data_ref, seg_ref;
  delira::cpu::OutRef out_data_ref, out_seg_ref;
  py::object out_data = py::none(), out_seg = py::none();
  std::int64_t n = -1;
  auto out_dims = [&](const py::array& a) {
    std::vector<py::ssize_t> dims = {a.shape(0), a.shape(1)};
    for (int d = 0; d < sd; ++d) dims.push_back(static_cast<py::ssize_t>(out_shape[d]));
    return dims;
  };
  if (!data.is_none()) {
    data_arr = data.cast<py::array>();
    data_ref = array_ref(data_arr, "data");
    py::array o(data_arr.dtype(), out_dims(data_arr));
    out_data_ref = out_ref(o);
    out_data = o;
    n = data_arr.shape(0);
  }
  if (!seg.is_none()) {
    seg_arr = seg.cast<py::array>();
    seg_ref = array_ref(seg_arr, "seg");
    py::array o(seg_arr.dtype(), out_dims(seg_arr));
    out_seg_ref = out_ref(o);
    out_seg = o;
    if (n < 0) n = seg_arr.shape(0);
  }
  if (n < 0) throw py::value_error("nothing to resample: give data, seg or both");
  set_elastic(spec, elastic, grid_origin, grid_spacing, n);
  delira::cpu::Program prog = make_program(n, op_kinds, op_refs, op_params, op_active, seeds);
  {
    py::gil_scoped_release release;
    delira::cpu::resample(data_ref, out_data_ref, seg_ref, out_seg_ref, spec, prog);
  }
  return py::make_tuple(out_data, out_seg);
}

py::array apply_program(const py::array& x, const std::vector<int>& op_kinds, const std::vector<int>& op_refs,
                        const py::array_t<float, py::array::c_style | py::array::forcecast>& op_params,
                        const py::array_t<bool, py::array::c_style | py::array::forcecast>& op_active,
                        const py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>& seeds) {
  delira::cpu::ArrayRef ref = array_ref(x, "x");
  if (ref.ndim < 3) throw py::value_error("x must be (N, C, *spatial)");
  std::vector<py::ssize_t> dims(x.shape(), x.shape() + x.ndim());
  py::array out(x.dtype(), dims);
  delira::cpu::OutRef oref = out_ref(out);
  delira::cpu::Program prog = make_program(x.shape(0), op_kinds, op_refs, op_params, op_active, seeds);
  {
    py::gil_scoped_release release;
    delira::cpu::apply_program(ref, oref, prog);
  }
  return out;
}

py::array gaussian_blur(const py::array& x, const py::array_t<float, py::array::c_style | py::array::forcecast>& sigma,
                        double truncate) {
  if (x.ndim() < 3) throw py::value_error("x must be (N, C, *spatial)");
  // A contiguous copy, filtered in place.
  py::array out = py::array::ensure(x, py::array::c_style);
  if (out.ptr() == x.ptr()) out = py::array(x.dtype(), std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()), x.data());
  delira::cpu::OutRef oref = out_ref(out);
  std::vector<float> s(sigma.data(), sigma.data() + sigma.size());
  {
    py::gil_scoped_release release;
    delira::cpu::gaussian_blur(oref, static_cast<int>(x.ndim()) - 2, s, truncate);
  }
  return out;
}

#if DELIRA_AUGMENT_WITH_CUDA
// ---------------------------------------------------------------------------------------------
// The CUDA executor: device pointers, shapes and strides (in elements) come from the Python layer,
// which reads them from __cuda_array_interface__ and allocates the outputs through the input's framework.

delira::cuda::DeviceArray device_array(std::uintptr_t ptr, const py::object& dtype, const std::vector<std::int64_t>& shape,
                                       const std::vector<std::int64_t>& strides, const char* name) {
  delira::cuda::DeviceArray a;
  if (ptr == 0) return a;
  if (shape.size() != strides.size() || shape.size() < 3 || shape.size() > 5) {
    throw py::value_error(std::string(name) + " must be (N, C, *spatial) with matching strides");
  }
  a.data = reinterpret_cast<const void*>(ptr);
  a.dtype = dtype_arg(dtype);
  a.ndim = static_cast<int>(shape.size());
  for (int d = 0; d < a.ndim; ++d) {
    a.shape[d] = shape[d];
    a.stride[d] = strides[d];
  }
  return a;
}

void resample_cuda(std::uintptr_t data_ptr, const py::object& data_dtype, const std::vector<std::int64_t>& data_shape,
                   const std::vector<std::int64_t>& data_strides, std::uintptr_t seg_ptr, const py::object& seg_dtype,
                   const std::vector<std::int64_t>& seg_shape, const std::vector<std::int64_t>& seg_strides,
                   std::uintptr_t out_ptr, std::uintptr_t seg_out_ptr, const std::vector<std::int64_t>& out_shape,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& affine, const py::object& elastic,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& grid_origin,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& grid_spacing, int order_data,
                   int mode_data, double cval_data, int order_seg, int mode_seg, double cval_seg,
                   const std::vector<int>& op_kinds, const std::vector<int>& op_refs,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& op_params,
                   const py::array_t<bool, py::array::c_style | py::array::forcecast>& op_active,
                   const py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>& seeds,
                   std::uintptr_t stream) {
  const int sd = static_cast<int>(out_shape.size());
  if (sd != 2 && sd != 3) throw py::value_error("output_shape must have 2 or 3 entries");
  delira::cuda::DeviceArray data = device_array(data_ptr, data_dtype, data_shape, data_strides, "data");
  delira::cuda::DeviceArray seg = device_array(seg_ptr, seg_dtype, seg_shape, seg_strides, "seg");
  if (!data.data && !seg.data) throw py::value_error("nothing to resample: give data, seg or both");
  const std::int64_t n = data.data ? data.shape[0] : seg.shape[0];
  delira::cpu::SpatialSpec spec;
  spec.ndim = sd;
  for (int d = 0; d < sd; ++d) spec.out_shape[d] = out_shape[d];
  spec.affine.assign(affine.data(), affine.data() + affine.size());
  spec.order_data = order_data;
  spec.mode_data = border_mode(mode_data);
  spec.cval_data = cval_data;
  spec.order_seg = order_seg;
  spec.mode_seg = border_mode(mode_seg);
  spec.cval_seg = cval_seg;
  set_elastic(spec, elastic, grid_origin, grid_spacing, n);
  delira::cpu::Program prog = make_program(n, op_kinds, op_refs, op_params, op_active, seeds);
  delira::throw_if(delira::check_resample(data, sd + 2, seg, sd + 2, spec, prog));  // the CPU executor's checks
  py::gil_scoped_release release;
  delira::cuda::resample(data, reinterpret_cast<void*>(out_ptr), seg, reinterpret_cast<void*>(seg_out_ptr), spec, prog,
                         reinterpret_cast<void*>(stream));
}

void apply_program_cuda(std::uintptr_t ptr, const py::object& dtype, const std::vector<std::int64_t>& shape,
                        const std::vector<int>& op_kinds, const std::vector<int>& op_refs,
                        const py::array_t<float, py::array::c_style | py::array::forcecast>& op_params,
                        const py::array_t<bool, py::array::c_style | py::array::forcecast>& op_active,
                        const py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>& seeds,
                        std::uintptr_t stream) {
  if (shape.size() < 3 || shape.size() > 5) throw py::value_error("x must be (N, C, *spatial)");
  const DType dt = dtype_arg(dtype);
  delira::cpu::Program prog = make_program(shape[0], op_kinds, op_refs, op_params, op_active, seeds);
  delira::throw_if(delira::check_apply_program(static_cast<int>(shape.size()), shape.data(), dt, prog));
  py::gil_scoped_release release;
  delira::cuda::apply_program(reinterpret_cast<void*>(ptr), dt, shape.data(), static_cast<int>(shape.size()), prog,
                              reinterpret_cast<void*>(stream));
}

void gaussian_blur_cuda(std::uintptr_t ptr, const py::object& dtype, const std::vector<std::int64_t>& shape,
                        const py::array_t<float, py::array::c_style | py::array::forcecast>& sigma, double truncate,
                        std::uintptr_t stream) {
  if (shape.size() < 3 || shape.size() > 5) throw py::value_error("x must be (N, C, *spatial)");
  const DType dt = dtype_arg(dtype);
  delira::throw_if(delira::check_gaussian_blur(static_cast<int>(shape.size()), shape.data(), dt,
                                               static_cast<std::int64_t>(sigma.size())));
  std::vector<float> s(sigma.data(), sigma.data() + sigma.size());
  py::gil_scoped_release release;
  delira::cuda::gaussian_blur(reinterpret_cast<void*>(ptr), dt, shape.data(), static_cast<int>(shape.size()), s, truncate,
                              reinterpret_cast<void*>(stream));
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
  info["cpu_isa"] = delira::cpu::active_isa();
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
  // Argument errors of kind "type" from the shared checks (core/spec.h) become TypeError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const delira::SpecTypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });
  m.def("flip", &flip_cpu, py::arg("x"), py::arg("axes"),
        "Copy of x with the given axes reversed (CPU executor).");
#if DELIRA_AUGMENT_WITH_CUDA
  m.def("flip_cuda", &flip_cuda, py::arg("in_ptr"), py::arg("out_ptr"), py::arg("dtype"),
        py::arg("shape"), py::arg("strides"), py::arg("axes"), py::arg("stream"),
        "Flip of a device buffer into a contiguous device buffer on a CUDA stream.");
#endif
  m.def("resample", &resample, py::arg("data"), py::arg("seg"), py::arg("out_shape"), py::arg("affine"),
        py::arg("elastic"), py::arg("grid_origin"), py::arg("grid_spacing"), py::arg("order_data"),
        py::arg("mode_data"), py::arg("cval_data"), py::arg("order_seg"), py::arg("mode_seg"), py::arg("cval_seg"),
        py::arg("op_kinds"), py::arg("op_refs"), py::arg("op_params"), py::arg("op_active"), py::arg("seeds"),
        "Fused spatial resampling of data and seg plus the intensity program (CPU executor).");
  m.def("apply_program", &apply_program, py::arg("x"), py::arg("op_kinds"), py::arg("op_refs"),
        py::arg("op_params"), py::arg("op_active"), py::arg("seeds"), "Intensity program on (N, C, *spatial).");
  m.def("gaussian_blur", &gaussian_blur, py::arg("x"), py::arg("sigma"), py::arg("truncate"),
        "Separable gaussian filter (mode reflect) of (N, C, *spatial) with per-sample sigma (N, ndim).");
#if DELIRA_AUGMENT_WITH_CUDA
  m.def("resample_cuda", &resample_cuda, py::arg("data_ptr"), py::arg("data_dtype"), py::arg("data_shape"),
        py::arg("data_strides"), py::arg("seg_ptr"), py::arg("seg_dtype"), py::arg("seg_shape"), py::arg("seg_strides"),
        py::arg("out_ptr"), py::arg("seg_out_ptr"), py::arg("out_shape"), py::arg("affine"), py::arg("elastic"),
        py::arg("grid_origin"), py::arg("grid_spacing"), py::arg("order_data"), py::arg("mode_data"),
        py::arg("cval_data"), py::arg("order_seg"), py::arg("mode_seg"), py::arg("cval_seg"), py::arg("op_kinds"),
        py::arg("op_refs"), py::arg("op_params"), py::arg("op_active"), py::arg("seeds"), py::arg("stream"),
        "The fused pass on device arrays (CUDA executor); pointers and strides (in elements) from "
        "__cuda_array_interface__, dtypes as names or numpy dtypes, outputs C-contiguous on the inputs' device.");
  m.def("apply_program_cuda", &apply_program_cuda, py::arg("ptr"), py::arg("dtype"), py::arg("shape"),
        py::arg("op_kinds"), py::arg("op_refs"), py::arg("op_params"), py::arg("op_active"), py::arg("seeds"),
        py::arg("stream"), "Intensity program in place on a contiguous device array.");
  m.def("gaussian_blur_cuda", &gaussian_blur_cuda, py::arg("ptr"), py::arg("dtype"), py::arg("shape"),
        py::arg("sigma"), py::arg("truncate"), py::arg("stream"),
        "Gaussian filter in place on a contiguous device array.");
#endif
  m.def("build_info", &build_info, "How the extension was built.");
  m.def("cuda_device_count", &cuda_device_count,
        "(number of visible CUDA devices, error text or None).");
  m.def("get_num_threads", &delira::cpu::get_num_threads);
  m.def("set_num_threads", &delira::cpu::set_num_threads, py::arg("n"));
}

// Python bindings of the augmentation kernels: the private module `delira.augment._C`.
// Argument checking that needs Python knowledge lives in the Python layer; this file checks
// what the kernels rely on and converts C++ exceptions into ValueError / TypeError / RuntimeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "delira_build_config.h"
#include "dlpack_abi.h"

#include "../core/flip.h"
#include "../core/spec.h"
#include "../cpu/engine.h"
#include "../cpu/flip_cpu.h"
#include "../cpu/parallel.h"
#if DELIRA_AUGMENT_WITH_CUDA
#include "../cuda/engine_cuda.h"
#include "../cuda/flip_cuda.h"
#include "../cuda/interop_cuda.h"
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
    if (kinds[j] < 0 || kinds[j] > delira::kLastOpKind) {
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

// ---------------------------------------------------------------------------------------------
// DLPack import: a capsule ("dltensor" or "dltensor_versioned") consumed at the C level. The object
// owns the producer's managed tensor from the moment the capsule is renamed "used_..." and calls its
// deleter exactly once: on release() or when it is destroyed, whichever comes first.

namespace dl = delira::dlpack;

// The numpy type string of a DLPack dtype, or a TypeError naming the argument.
std::string dlpack_typestr(const dl::DataType& t, const std::string& name) {
  if (t.lanes != 1) {
    throw py::type_error(name + " has a vector DLPack dtype (" + std::to_string(t.lanes) +
                         " lanes), which numpy has no dtype for; pass an array of scalars");
  }
  const int bits = t.bits;
  const bool byte_sized = bits % 8 == 0 && bits > 0;
  const std::string size = std::to_string(bits / 8);
  switch (t.code) {
    case dl::kInt:
    case dl::kUInt:
      if (bits == 8 || bits == 16 || bits == 32 || bits == 64) {
        return std::string(bits == 8 ? "|" : "<") + (t.code == dl::kInt ? "i" : "u") + size;
      }
      break;
    case dl::kFloat:
      if (bits == 16 || bits == 32 || bits == 64) return "<f" + size;
      break;
    case dl::kComplex:
      if (bits == 64 || bits == 128) return "<c" + size;
      break;
    case dl::kBool:
      if (bits == 8) return "|b1";
      break;
    case dl::kBfloat:
      throw py::type_error(name + " has dtype bfloat16, which numpy and delira.augment do not support; convert it "
                           "to float32 first (x.astype('float32'), tf.cast(x, tf.float32), x.float())");
    default:
      break;
  }
  throw py::type_error(name + " has DLPack dtype code " + std::to_string(t.code) + " with " + std::to_string(bits) +
                       " bits" + (byte_sized ? "" : " (not whole bytes)") +
                       ", which has no numpy dtype; convert it to float32, float64 or an integer type first");
}

class DLPackTensor {
 public:
  DLPackTensor(const py::object& capsule, const std::string& name) : name_(name) {
    PyObject* cap = capsule.ptr();
    if (!PyCapsule_CheckExact(cap)) {
      throw py::type_error(name + " must be a DLPack capsule (from x.__dlpack__() or tf.experimental.dlpack.to_dlpack), "
                           "got " + std::string(Py_TYPE(cap)->tp_name));
    }
    const char* cname = PyCapsule_GetName(cap);
    const std::string cap_name = cname == nullptr ? std::string() : std::string(cname);
    if (cap_name == dl::kCapsuleNameUsed || cap_name == dl::kVersionedCapsuleNameUsed) {
      throw py::value_error(name + ": this DLPack capsule was already consumed (a capsule can be imported once); "
                            "export the array again with x.__dlpack__()");
    }
    if (cap_name == dl::kVersionedCapsuleName) {
      versioned_ = true;
    } else if (cap_name != dl::kCapsuleName) {
      throw py::type_error(name + " is a capsule named '" + cap_name + "', not a DLPack capsule ('dltensor' or "
                           "'dltensor_versioned')");
    }
    void* p = PyCapsule_GetPointer(cap, cname);
    if (p == nullptr) throw py::error_already_set();
    dl::Tensor* t = nullptr;
    if (versioned_) {
      auto* m = static_cast<dl::ManagedTensorVersioned*>(p);
      if (m->version.major != dl::kMajorVersion) {
        // Not consumed: the capsule keeps ownership, and its destructor calls the producer's deleter.
        PyErr_SetString(PyExc_BufferError,
                        (name + ": DLPack version " + std::to_string(m->version.major) + "." +
                         std::to_string(m->version.minor) + " is not supported (delira.augment reads DLPack 1.x); "
                         "export with x.__dlpack__(max_version=(1, 0))")
                            .c_str());
        throw py::error_already_set();
      }
      version_ = m->version;
      flags_ = m->flags;
      t = &m->dl_tensor;
    } else {
      t = &static_cast<dl::ManagedTensor*>(p)->dl_tensor;
    }
    if (PyCapsule_SetName(cap, versioned_ ? dl::kVersionedCapsuleNameUsed : dl::kCapsuleNameUsed) != 0) {
      throw py::error_already_set();
    }
    managed_ = p;  // ours from here on: the deleter is called also when a check below fails
    tensor_ = t;
    try {
      read();
    } catch (...) {
      release();  // a constructor that throws runs no destructor
      throw;
    }
  }

  ~DLPackTensor() { release(); }
  DLPackTensor(const DLPackTensor&) = delete;
  DLPackTensor& operator=(const DLPackTensor&) = delete;

  // Calls the producer's deleter (once; later calls do nothing). The data must not be used afterwards.
  void release() {
    void* m = managed_;
    managed_ = nullptr;
    tensor_ = nullptr;
    if (m == nullptr) return;
    if (versioned_) {
      auto* v = static_cast<dl::ManagedTensorVersioned*>(m);
      if (v->deleter != nullptr) v->deleter(v);
    } else {
      auto* u = static_cast<dl::ManagedTensor*>(m);
      if (u->deleter != nullptr) u->deleter(u);
    }
  }

  bool released() const { return managed_ == nullptr; }
  std::uintptr_t ptr() const { return ptr_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  const std::vector<std::int64_t>& strides() const { return strides_; }
  const std::string& typestr() const { return typestr_; }
  int itemsize() const { return itemsize_; }
  int device_type() const { return device_type_; }
  int device_id() const { return device_id_; }
  bool versioned() const { return versioned_; }
  bool readonly() const { return (flags_ & dl::kFlagReadOnly) != 0; }
  std::uint64_t flags() const { return flags_; }
  py::object version() const {
    if (!versioned_) return py::none();
    return py::make_tuple(version_.major, version_.minor);
  }
  bool is_host() const { return device_type_ == dl::kCPU || device_type_ == dl::kCUDAHost; }

  // numpy's array interface of host memory (numpy keeps this object alive as the array's base).
  py::dict array_interface() const {
    if (released()) throw py::value_error(name_ + ": the DLPack tensor was released");
    if (!is_host()) {
      throw py::value_error(name_ + " is in device memory (DLPack device type " + std::to_string(device_type_) +
                            "), not host memory");
    }
    py::list shape, strides;
    for (std::size_t d = 0; d < shape_.size(); ++d) {
      shape.append(shape_[d]);
      strides.append(strides_[d] * itemsize_);
    }
    py::dict iface;
    iface["shape"] = py::tuple(shape);
    iface["strides"] = py::tuple(strides);
    iface["typestr"] = typestr_;
    iface["data"] = py::make_tuple(ptr_, readonly());
    iface["version"] = 3;
    return iface;
  }

 private:
  void read() {
    const dl::Tensor& t = *tensor_;
    device_type_ = t.device.device_type;
    device_id_ = t.device.device_id;
    if (device_type_ != dl::kCPU && device_type_ != dl::kCUDAHost && device_type_ != dl::kCUDA &&
        device_type_ != dl::kCUDAManaged) {
      throw py::value_error(name_ + " is on DLPack device type " + std::to_string(device_type_) +
                            "; delira.augment reads host memory (kDLCPU, kDLCUDAHost) and NVIDIA GPU memory "
                            "(kDLCUDA, kDLCUDAManaged): move the array to the CPU or a CUDA GPU first");
    }
    if (t.ndim < 0 || t.ndim > 64) throw py::value_error(name_ + " has an invalid DLPack ndim " + std::to_string(t.ndim));
    typestr_ = dlpack_typestr(t.dtype, name_);
    itemsize_ = t.dtype.bits / 8;
    shape_.assign(t.shape, t.shape + t.ndim);
    for (std::int64_t e : shape_) {
      if (e < 0) throw py::value_error(name_ + " has a negative DLPack extent " + std::to_string(e));
    }
    if (t.strides != nullptr) {
      strides_.assign(t.strides, t.strides + t.ndim);
    } else {  // compact row-major
      strides_.assign(static_cast<std::size_t>(t.ndim), 1);
      for (int d = t.ndim - 2; d >= 0; --d) strides_[d] = strides_[d + 1] * std::max<std::int64_t>(shape_[d + 1], 1);
    }
    ptr_ = reinterpret_cast<std::uintptr_t>(t.data) + static_cast<std::uintptr_t>(t.byte_offset);
  }

  std::string name_;
  void* managed_ = nullptr;
  dl::Tensor* tensor_ = nullptr;
  bool versioned_ = false;
  dl::PackVersion version_{0, 0};
  std::uint64_t flags_ = 0;
  std::uintptr_t ptr_ = 0;
  std::vector<std::int64_t> shape_, strides_;
  std::string typestr_;
  int itemsize_ = 0;
  int device_type_ = 0;
  int device_id_ = 0;
};

#if DELIRA_AUGMENT_WITH_CUDA
// ---------------------------------------------------------------------------------------------
// Output buffers of calls on TensorFlow / JAX GPU arrays: C-contiguous device memory from delira's
// stream-ordered pool, exported to the input's framework through DLPack. The memory lives as long as
// the Python object or any exported capsule (shared ownership); a buffer that was never exported is
// freed stream-ordered on its stream, an exported one after the device is idle (the consumer may still
// be reading it on a stream delira does not know).

struct BufferState {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  int device = 0;
  void* stream = nullptr;
  std::atomic<bool> exported{false};
  ~BufferState() { delira::cuda::buffer_free(ptr, device, stream, exported.load()); }
};

dl::DataType dlpack_dtype(DType t) {
  switch (t) {
    case DType::Float32: return {dl::kFloat, 32, 1};
    case DType::Float64: return {dl::kFloat, 64, 1};
    case DType::UInt8: return {dl::kUInt, 8, 1};
    case DType::Int16: return {dl::kInt, 16, 1};
    case DType::Int32: return {dl::kInt, 32, 1};
    case DType::Int64: return {dl::kInt, 64, 1};
  }
  return {dl::kFloat, 32, 1};
}

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float64: return 8;
    case DType::UInt8: return 1;
    case DType::Int16: return 2;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
  }
  return 4;
}

const char* dtype_typestr(DType t) {
  switch (t) {
    case DType::Float32: return "<f4";
    case DType::Float64: return "<f8";
    case DType::UInt8: return "|u1";
    case DType::Int16: return "<i2";
    case DType::Int32: return "<i4";
    case DType::Int64: return "<i8";
  }
  return "<f4";
}

// What an exported capsule owns: a reference to the buffer and the shape/strides arrays.
struct ExportContext {
  std::shared_ptr<BufferState> state;
  std::vector<std::int64_t> shape, strides;
  dl::ManagedTensor legacy{};
  dl::ManagedTensorVersioned versioned{};
};

void delete_legacy(dl::ManagedTensor* self) { delete static_cast<ExportContext*>(self->manager_ctx); }
void delete_versioned(dl::ManagedTensorVersioned* self) { delete static_cast<ExportContext*>(self->manager_ctx); }

// Capsule destructor: a capsule nobody consumed still owns its managed tensor.
void capsule_destructor(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, dl::kVersionedCapsuleName)) {
    auto* m = static_cast<dl::ManagedTensorVersioned*>(PyCapsule_GetPointer(capsule, dl::kVersionedCapsuleName));
    if (m != nullptr && m->deleter != nullptr) m->deleter(m);
  } else if (PyCapsule_IsValid(capsule, dl::kCapsuleName)) {
    auto* m = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(capsule, dl::kCapsuleName));
    if (m != nullptr && m->deleter != nullptr) m->deleter(m);
  }
  PyErr_Clear();  // PyCapsule_IsValid/GetPointer must not leave an error behind in a destructor
}

class CudaBuffer {
 public:
  CudaBuffer(int device, const py::object& dtype, const std::vector<std::int64_t>& shape, std::uintptr_t stream)
      : dtype_(dtype_arg(dtype)), shape_(shape) {
    if (shape.size() > static_cast<std::size_t>(delira::kMaxDims)) {
      throw py::value_error("CudaBuffer: at most " + std::to_string(delira::kMaxDims) + " dimensions");
    }
    std::size_t n = 1;
    for (std::int64_t e : shape) {
      if (e < 0) throw py::value_error("CudaBuffer: negative extent");
      n *= static_cast<std::size_t>(e);
    }
    state_ = std::make_shared<BufferState>();
    state_->bytes = n * dtype_size(dtype_);
    state_->device = device;
    state_->stream = reinterpret_cast<void*>(stream);
    py::gil_scoped_release release;
    state_->ptr = delira::cuda::buffer_alloc(state_->bytes, device, state_->stream);
  }

  std::uintptr_t ptr() const { return reinterpret_cast<std::uintptr_t>(state_->ptr); }
  int device() const { return state_->device; }
  std::uintptr_t stream() const { return reinterpret_cast<std::uintptr_t>(state_->stream); }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  std::string dtype() const { return delira::dtype_name(dtype_); }
  std::size_t nbytes() const { return state_->bytes; }
  bool exported() const { return state_->exported.load(); }

  py::dict cuda_array_interface() const {
    py::dict iface;
    iface["shape"] = py::tuple(py::cast(shape_));
    iface["typestr"] = dtype_typestr(dtype_);
    iface["data"] = py::make_tuple(state_->bytes ? ptr() : 0, false);
    iface["strides"] = py::none();
    iface["version"] = 3;
    return iface;
  }

  py::tuple dlpack_device() const { return py::make_tuple(static_cast<int>(dl::kCUDA), state_->device); }

  // The Python DLPack protocol. `stream`: the consumer's stream (None = the legacy default stream, 1
  // legacy, 2 per-thread, else a pointer; -1: the consumer synchronises itself, so the buffer's work is
  // waited for here); the consumer's stream is made to wait for the work enqueued on the buffer so far.
  py::object dlpack(const py::object& stream, const py::object& max_version, const py::object& dl_device,
                    const py::object& copy) {
    if (!dl_device.is_none()) {
      auto dev = dl_device.cast<py::tuple>();
      if (dev.size() != 2 || dev[0].cast<int>() != dl::kCUDA || dev[1].cast<int>() != state_->device) {
        PyErr_SetString(PyExc_BufferError, "delira.augment CudaBuffer: export to another device is not supported");
        throw py::error_already_set();
      }
    }
    if (!copy.is_none() && copy.cast<bool>()) {
      PyErr_SetString(PyExc_BufferError, "delira.augment CudaBuffer: copy=True is not supported; export without a copy");
      throw py::error_already_set();
    }
    std::intptr_t consumer = 1;  // None: the legacy default stream
    if (!stream.is_none()) consumer = stream.cast<std::intptr_t>();
    if (consumer == 0) {
      throw py::value_error("stream=0 is ambiguous in the DLPack protocol; pass 1 (legacy default stream), 2 "
                            "(per-thread default stream) or a stream pointer");
    }
    {
      py::gil_scoped_release release;
      if (consumer == -1) {
        delira::cuda::stream_synchronize(state_->stream, state_->device);
      } else {
        delira::cuda::stream_wait(reinterpret_cast<void*>(consumer), state_->stream, state_->device);
      }
    }
    bool versioned = false;
    if (!max_version.is_none()) versioned = max_version.cast<py::tuple>()[0].cast<int>() >= 1;

    auto* ctx = new ExportContext();
    ctx->state = state_;
    ctx->shape = shape_;
    ctx->strides.assign(shape_.size(), 1);
    for (int d = static_cast<int>(shape_.size()) - 2; d >= 0; --d) {
      ctx->strides[d] = ctx->strides[d + 1] * std::max<std::int64_t>(shape_[d + 1], 1);
    }
    dl::Tensor t{};
    t.data = state_->ptr;
    t.device = {dl::kCUDA, state_->device};
    t.ndim = static_cast<std::int32_t>(shape_.size());
    t.dtype = dlpack_dtype(dtype_);
    t.shape = ctx->shape.data();
    t.strides = ctx->strides.data();
    t.byte_offset = 0;
    PyObject* capsule = nullptr;
    if (versioned) {
      ctx->versioned.version = {dl::kMajorVersion, dl::kMinorVersion};
      ctx->versioned.manager_ctx = ctx;
      ctx->versioned.deleter = delete_versioned;
      ctx->versioned.flags = 0;
      ctx->versioned.dl_tensor = t;
      capsule = PyCapsule_New(&ctx->versioned, dl::kVersionedCapsuleName, capsule_destructor);
    } else {
      ctx->legacy.dl_tensor = t;
      ctx->legacy.manager_ctx = ctx;
      ctx->legacy.deleter = delete_legacy;
      capsule = PyCapsule_New(&ctx->legacy, dl::kCapsuleName, capsule_destructor);
    }
    if (capsule == nullptr) {
      delete ctx;
      throw py::error_already_set();
    }
    state_->exported.store(true);
    return py::reinterpret_steal<py::object>(capsule);
  }

 private:
  DType dtype_;
  std::vector<std::int64_t> shape_;
  std::shared_ptr<BufferState> state_;
};

void crop_cuda(std::uintptr_t in_ptr, std::uintptr_t out_ptr, const py::object& dtype,
               const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
               const std::vector<std::int64_t>& out_shape,
               const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& starts,
               std::uint64_t pad_bits, std::uintptr_t stream) {
  const DType dt = dtype_arg(dtype);
  const int ndim = static_cast<int>(shape.size());
  if (ndim < 3 || ndim > delira::kMaxDims || strides.size() != shape.size() || out_shape.size() != shape.size()) {
    throw py::value_error("crop: x must be (N, C, *spatial) with 1 to 3 spatial axes, with matching strides and "
                          "output shape");
  }
  delira::cuda::CropGeometry g;
  g.ndim = ndim;
  for (int d = 0; d < ndim; ++d) {
    g.in_shape[d] = shape[d];
    g.in_stride[d] = strides[d];
    g.out_shape[d] = out_shape[d];
  }
  if (starts.ndim() != 2 || starts.shape(0) != shape[0] || starts.shape(1) != ndim - 2) {
    throw py::value_error("crop: starts must have shape (N, number of spatial axes)");
  }
  std::vector<std::int64_t> s(starts.data(), starts.data() + starts.size());
  py::gil_scoped_release release;
  delira::cuda::crop(reinterpret_cast<const void*>(in_ptr), reinterpret_cast<void*>(out_ptr), dt, g, s, pad_bits,
                     reinterpret_cast<void*>(stream));
}

bool any_nan_cuda(std::uintptr_t ptr, const py::object& dtype, const std::vector<std::int64_t>& shape,
                  const std::vector<std::int64_t>& strides, std::uintptr_t stream) {
  const DType dt = dtype_arg(dtype);
  if (shape.size() != strides.size() || shape.empty() || shape.size() > static_cast<std::size_t>(delira::kMaxDims)) {
    throw py::value_error("any_nan: x must have 1 to 5 dimensions with matching strides");
  }
  py::gil_scoped_release release;
  return delira::cuda::any_nan(reinterpret_cast<const void*>(ptr), dt, static_cast<int>(shape.size()), shape.data(),
                               strides.data(), reinterpret_cast<void*>(stream));
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
  py::class_<DLPackTensor>(m, "DLPackTensor",
                           "A DLPack capsule imported at the C level (renamed 'used_...'); calls the producer's "
                           "deleter once, on release() or when destroyed.")
      .def(py::init<const py::object&, const std::string&>(), py::arg("capsule"), py::arg("name") = "x")
      .def_property_readonly("ptr", &DLPackTensor::ptr, "Address of element (0, ..., 0): data + byte_offset.")
      .def_property_readonly("shape", [](const DLPackTensor& t) { return py::tuple(py::cast(t.shape())); })
      .def_property_readonly("strides", [](const DLPackTensor& t) { return py::tuple(py::cast(t.strides())); },
                             "Strides in elements (computed row-major when the producer gave none).")
      .def_property_readonly("typestr", &DLPackTensor::typestr, "numpy type string of the dtype.")
      .def_property_readonly("itemsize", &DLPackTensor::itemsize)
      .def_property_readonly("device_type", &DLPackTensor::device_type)
      .def_property_readonly("device_id", &DLPackTensor::device_id)
      .def_property_readonly("versioned", &DLPackTensor::versioned)
      .def_property_readonly("version", &DLPackTensor::version)
      .def_property_readonly("flags", &DLPackTensor::flags)
      .def_property_readonly("readonly", &DLPackTensor::readonly)
      .def_property_readonly("is_host", &DLPackTensor::is_host)
      .def_property_readonly("released", &DLPackTensor::released)
      .def_property_readonly("__array_interface__", &DLPackTensor::array_interface)
      .def("release", &DLPackTensor::release, "Call the producer's deleter now (once).");
#if DELIRA_AUGMENT_WITH_CUDA
  py::class_<CudaBuffer>(m, "CudaBuffer",
                         "C-contiguous device memory from delira's pool, exported through DLPack "
                         "(__dlpack__ / __dlpack_device__) and __cuda_array_interface__.")
      .def(py::init<int, const py::object&, const std::vector<std::int64_t>&, std::uintptr_t>(), py::arg("device"),
           py::arg("dtype"), py::arg("shape"), py::arg("stream"))
      .def_property_readonly("ptr", &CudaBuffer::ptr)
      .def_property_readonly("device", &CudaBuffer::device)
      .def_property_readonly("stream", &CudaBuffer::stream)
      .def_property_readonly("shape", [](const CudaBuffer& b) { return py::tuple(py::cast(b.shape())); })
      .def_property_readonly("dtype", &CudaBuffer::dtype)
      .def_property_readonly("nbytes", &CudaBuffer::nbytes)
      .def_property_readonly("exported", &CudaBuffer::exported)
      .def_property_readonly("__cuda_array_interface__", &CudaBuffer::cuda_array_interface)
      .def("__dlpack_device__", &CudaBuffer::dlpack_device)
      .def("__dlpack__", &CudaBuffer::dlpack, py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(), py::arg("copy") = py::none());
  m.def("crop_cuda", &crop_cuda, py::arg("in_ptr"), py::arg("out_ptr"), py::arg("dtype"), py::arg("shape"),
        py::arg("strides"), py::arg("out_shape"), py::arg("starts"), py::arg("pad_bits"), py::arg("stream"),
        "Crop with padding of a strided device array into a contiguous one; starts (N, ndim) per sample.");
  m.def("any_nan_cuda", &any_nan_cuda, py::arg("ptr"), py::arg("dtype"), py::arg("shape"), py::arg("strides"),
        py::arg("stream"), "Whether a strided float device array holds a NaN (synchronises the stream).");
  m.def("interop_stream", [](int device) { return reinterpret_cast<std::uintptr_t>(delira::cuda::interop_stream(device)); },
        py::arg("device"), "delira's own stream of a device (calls on TensorFlow / JAX arrays run on it).");
  m.def("pointer_device", [](std::uintptr_t ptr) { return delira::cuda::pointer_device(reinterpret_cast<const void*>(ptr)); },
        py::arg("ptr"), "The CUDA device that holds a pointer.");
  m.def("stream_wait", [](std::uintptr_t consumer, std::uintptr_t producer, int device) {
          py::gil_scoped_release release;
          delira::cuda::stream_wait(reinterpret_cast<void*>(consumer), reinterpret_cast<void*>(producer), device);
        }, py::arg("consumer"), py::arg("producer"), py::arg("device"),
        "Make `consumer` wait for the work enqueued on `producer` so far (no host wait).");
  m.def("stream_synchronize", [](std::uintptr_t stream, int device) {
          py::gil_scoped_release release;
          delira::cuda::stream_synchronize(reinterpret_cast<void*>(stream), device);
        }, py::arg("stream"), py::arg("device"));
  m.def("device_synchronize", [](int device) {
          py::gil_scoped_release release;
          delira::cuda::device_synchronize(device);
        }, py::arg("device"));
#endif
  m.def("build_info", &build_info, "How the extension was built.");
  m.def("cuda_device_count", &cuda_device_count,
        "(number of visible CUDA devices, error text or None).");
  m.def("get_num_threads", &delira::cpu::get_num_threads);
  m.def("set_num_threads", &delira::cpu::set_num_threads, py::arg("n"));
}

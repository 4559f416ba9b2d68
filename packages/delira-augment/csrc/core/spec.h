// Validation of the arguments of the fused pass, the stand-alone program and the gaussian filter,
// shared by the CPU and CUDA executors and the bindings (host code only: the checks run once per
// call, before any kernel). Each check returns a SpecError that says what was wrong, what was
// expected and how to fix it; an empty one (kind None) when everything is consistent.
//
// The templates take the executors' own array and spec types: an array has `data` (nullptr when
// absent), `dtype`, `ndim` and `shape`; a spec has the fields of cpu::SpatialSpec; a program those of
// cpu::Program.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "boundary.h"
#include "config.h"
#include "intensity.h"

namespace delira {

struct SpecError {
  enum Kind { None = 0, Value, Type };
  Kind kind = None;
  std::string message;
  explicit operator bool() const { return kind != None; }
};

inline SpecError value_error(std::string message) { return {SpecError::Value, std::move(message)}; }
inline SpecError type_error(std::string message) { return {SpecError::Type, std::move(message)}; }

// Thrown for a SpecError of kind Type (the bindings translate it to Python's TypeError; a kind
// Value error is a std::invalid_argument, which pybind11 translates to ValueError).
struct SpecTypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Throws `error` as SpecTypeError / std::invalid_argument; does nothing when it is empty.
inline void throw_if(const SpecError& error) {
  if (!error) return;
  if (error.kind == SpecError::Type) throw SpecTypeError(error.message);
  throw std::invalid_argument(error.message);
}

namespace spec_detail {
inline std::string num(std::int64_t v) { return std::to_string(v); }

template <typename Array>
std::string shape_of(const Array& a) {
  std::string s = "(";
  for (int d = 0; d < a.ndim; ++d) s += (d ? ", " : "") + num(a.shape[d]);
  return s + (a.ndim == 1 ? ",)" : ")");
}
}  // namespace spec_detail

// A program of `n_ops` ops with per-sample parameters for a batch of `n` samples.
template <typename Program>
SpecError check_program(const Program& prog, std::int64_t n) {
  using spec_detail::num;
  const std::int64_t n_ops = prog.n_ops();
  if (static_cast<std::int64_t>(prog.refs.size()) != n_ops) {
    return value_error("program has " + num(static_cast<std::int64_t>(prog.refs.size())) + " op_refs for " +
                       num(n_ops) + " ops; pass one entry per op (-1 where unused)");
  }
  if (static_cast<std::int64_t>(prog.params.size()) != n * n_ops) {
    return value_error("program parameters have " + num(static_cast<std::int64_t>(prog.params.size())) +
                       " entries but the batch of " + num(n) + " samples and " + num(n_ops) +
                       " ops needs (N, n_ops) = " + num(n * n_ops));
  }
  if (n_ops > 0 && static_cast<std::int64_t>(prog.seeds.size()) != n) {
    return value_error("program has " + num(static_cast<std::int64_t>(prog.seeds.size())) + " seeds for " +
                       num(n) + " samples; pass one seed per sample");
  }
  for (std::int64_t j = 0; j < n_ops; ++j) {
    const int kind = static_cast<int>(prog.kinds[j]);
    if (kind < 0 || kind > kLastOpKind) {
      return value_error("op " + num(j) + " has unknown kind " + num(kind) + "; kinds are 0 to " + num(kLastOpKind));
    }
    if (prog.refs[j] >= n_ops) {
      return value_error("op_refs[" + num(j) + "] = " + num(prog.refs[j]) + " points past the program of " +
                         num(n_ops) + " ops; use an op index or -1");
    }
  }
  return {};
}

// The fused pass: `data` (float) and `seg` (integer labels), either may be absent, resampled into
// outputs of rank data_out_ndim / seg_out_ndim with `spec`, then `prog` applied to data.
template <typename Array, typename Spec, typename Program>
SpecError check_resample(const Array& data, int data_out_ndim, const Array& seg, int seg_out_ndim, const Spec& spec,
                         const Program& prog) {
  using spec_detail::num;
  using spec_detail::shape_of;
  const int sd = spec.ndim;
  if (sd != 2 && sd != 3) {
    return value_error("the output shape has " + num(sd) + " axes; pass 2 (H, W) or 3 (D, H, W) spatial extents");
  }
  for (int d = 0; d < sd; ++d) {
    if (spec.out_shape[d] < 0) {
      return value_error("output extent " + num(spec.out_shape[d]) + " on axis " + num(d) + " is negative; pass sizes >= 0");
    }
  }
  const bool has_data = data.data != nullptr;
  const bool has_seg = seg.data != nullptr;
  if (!has_data && !has_seg) return value_error("nothing to resample: give data, seg or both");
  if (has_data && (data.ndim != sd + 2 || data_out_ndim != sd + 2)) {
    return value_error("data has shape " + shape_of(data) + " but a " + num(sd) +
                       "D output needs (N, C, *spatial) with " + num(sd) + " spatial axes");
  }
  if (has_seg && (seg.ndim != sd + 2 || seg_out_ndim != sd + 2)) {
    return value_error("seg has shape " + shape_of(seg) + " but a " + num(sd) +
                       "D output needs (N, C, *spatial) with " + num(sd) + " spatial axes");
  }
  const std::int64_t n = has_data ? data.shape[0] : seg.shape[0];
  if (has_data && has_seg && seg.shape[0] != n) {
    return value_error("data has " + num(n) + " samples but seg has " + num(seg.shape[0]) +
                       "; pass data and seg of the same batch");
  }
  if (has_data && data.dtype != DType::Float32 && data.dtype != DType::Float64) {
    return type_error(std::string("data has dtype ") + dtype_name(data.dtype) +
                      "; the fused pass needs float32 or float64 data (convert with x.astype(numpy.float32))");
  }
  if (has_seg && (seg.dtype == DType::Float32 || seg.dtype == DType::Float64)) {
    return type_error(std::string("seg has dtype ") + dtype_name(seg.dtype) +
                      "; segmentations need an integer dtype: uint8, int16, int32 or int64");
  }
  for (int d = 0; d < sd; ++d) {
    if (has_data && data.shape[2 + d] < 1) return value_error("data has an empty spatial axis: shape " + shape_of(data));
    if (has_seg && seg.shape[2 + d] < 1) return value_error("seg has an empty spatial axis: shape " + shape_of(seg));
  }
  if (static_cast<std::int64_t>(spec.affine.size()) != n * sd * (sd + 1)) {
    return value_error("affine has " + num(static_cast<std::int64_t>(spec.affine.size())) +
                       " entries; expected (N, ndim, ndim + 1) = " + num(n * sd * (sd + 1)));
  }
  if (spec.order_data != 0 && spec.order_data != 1 && spec.order_data != 3) {
    return value_error("order_data is " + num(spec.order_data) + "; use 0 (nearest), 1 (linear) or 3 (cubic B-spline)");
  }
  if (spec.order_seg != 0 && spec.order_seg != 1) {
    return value_error("order_seg is " + num(spec.order_seg) + "; use 0 (nearest) or 1 (linear per label + argmax)");
  }
  if (!spec.elastic.empty()) {
    if (static_cast<std::int64_t>(spec.grid_origin.size()) != n * sd ||
        static_cast<std::int64_t>(spec.grid_spacing.size()) != n * sd) {
      return value_error("elastic grid origin and spacing must be (N, ndim) = " + num(n * sd) + " values each");
    }
    std::int64_t g = 1;
    for (int d = 0; d < sd; ++d) {
      if (spec.grid[d] < 4) {
        return value_error("elastic grid has " + num(spec.grid[d]) + " control points on axis " + num(d) +
                           "; it needs at least 4 per axis");
      }
      g *= spec.grid[d];
    }
    for (float s : spec.grid_spacing) {
      if (!(s > 0.0f)) return value_error("elastic grid spacing must be > 0 (in output voxels)");
    }
    if (static_cast<std::int64_t>(spec.elastic.size()) != n * sd * g) {
      return value_error("elastic control points have " + num(static_cast<std::int64_t>(spec.elastic.size())) +
                         " values; expected (N, ndim, *grid) = " + num(n * sd * g));
    }
  }
  return check_program(prog, n);
}

// The stand-alone program on x (N, C, *spatial) with 1 to 3 spatial axes, float32 or float64.
template <typename Program>
SpecError check_apply_program(int ndim, const std::int64_t* shape, DType dtype, const Program& prog) {
  if (ndim < 3 || ndim > kMaxDims) {
    return value_error("x has " + spec_detail::num(ndim) + " dimensions; pass (N, C, *spatial) with 1 to 3 spatial axes");
  }
  if (dtype != DType::Float32 && dtype != DType::Float64) {
    return type_error(std::string("x has dtype ") + dtype_name(dtype) +
                      "; intensity operations need float32 or float64 data (convert with x.astype(numpy.float32))");
  }
  return check_program(prog, shape[0]);
}

// The gaussian filter of x (N, C, *spatial) with per-sample sigma (N, spatial ndim).
inline SpecError check_gaussian_blur(int ndim, const std::int64_t* shape, DType dtype, std::int64_t sigma_size) {
  using spec_detail::num;
  if (ndim < 3 || ndim > kMaxDims) {
    return value_error("x has " + num(ndim) + " dimensions; pass (N, C, *spatial) with 1 to 3 spatial axes");
  }
  if (dtype != DType::Float32 && dtype != DType::Float64) {
    return type_error(std::string("x has dtype ") + dtype_name(dtype) +
                      "; gaussian_blur needs float32 or float64 data (convert with x.astype(numpy.float32))");
  }
  if (sigma_size != shape[0] * (ndim - 2)) {
    return value_error("sigma has " + num(sigma_size) + " values; expected (N, ndim) = " + num(shape[0] * (ndim - 2)));
  }
  return {};
}

}  // namespace delira

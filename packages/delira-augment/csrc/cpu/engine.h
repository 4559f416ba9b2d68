// CPU executor of the fused augmentation pass and of the stand-alone operations.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../core/boundary.h"
#include "../core/config.h"
#include "../core/geometry.h"
#include "../core/intensity.h"

namespace delira::cpu {

// A strided (N, C, *spatial) array of any supported dtype.
struct ArrayRef {
  const void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;  // including N and C
  std::int64_t shape[kMaxDims] = {0, 0, 0, 0, 0};
  std::int64_t stride[kMaxDims] = {0, 0, 0, 0, 0};  // elements
};

// A C-contiguous (N, C, *spatial) output array.
struct OutRef {
  void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  std::int64_t shape[kMaxDims] = {0, 0, 0, 0, 0};
};

// An intensity program for a batch (see core/intensity.h).
struct Program {
  std::vector<OpKind> kinds;
  std::vector<int> refs;          // RestoreStats: index of the op whose input statistics are the target
  std::vector<OpParams> params;   // (N, n_ops), sample-major
  std::vector<std::uint64_t> seeds;  // one per sample
  int n_ops() const { return static_cast<int>(kinds.size()); }
};

// Per-batch description of the spatial part.
struct SpatialSpec {
  int ndim = 3;                     // spatial dimensions, 2 or 3
  std::int64_t out_shape[3] = {1, 1, 1};
  std::vector<float> affine;        // (N, ndim, ndim + 1): x = A o + b
  // Elastic control points (N, ndim, *grid), input-space displacements; empty for none.
  std::vector<float> elastic;
  std::int64_t grid[3] = {0, 0, 0};
  std::vector<float> grid_origin;   // (N, ndim): output index of control point 0 per axis
  std::vector<float> grid_spacing;  // (N, ndim): control point spacing in output voxels
  int order_data = 1;               // 0, 1, 3
  BorderMode mode_data = BorderMode::Constant;
  double cval_data = 0.0;
  int order_seg = 0;                // 0 nearest, 1 linear per label + argmax
  BorderMode mode_seg = BorderMode::Constant;
  double cval_seg = 0.0;
};

// The fused pass: resamples data (and seg) onto the output grid and applies the program to data.
// `seg`/`seg_out` may have data == nullptr. Throws std::invalid_argument on inconsistent input.
void resample(const ArrayRef& data, const OutRef& out, const ArrayRef& seg, const OutRef& seg_out,
              const SpatialSpec& spec, const Program& program);

// Applies the program to `x` (float32/float64), writing the contiguous `out` of the same shape.
void apply_program(const ArrayRef& x, const OutRef& out, const Program& program);

// Separable gaussian filter with mode reflect, in place on a contiguous float array (N, C, *spatial):
// sigma (N, spatial ndim) in voxels; truncate as scipy.ndimage.gaussian_filter (radius = int(truncate * sigma + 0.5)).
void gaussian_blur(const OutRef& x, int spatial_ndim, const std::vector<float>& sigma, double truncate);


// Instruction set of the engine build in use: "avx512", "avx2" or "base".
std::string active_isa();

}  // namespace delira::cpu

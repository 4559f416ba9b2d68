// Coordinate mapping of the spatial transform: output voxel index o -> input coordinate
//   x = A o + b + e(o)
// A (NDIM x NDIM) and b carry rotation, scaling, shear, translation, mirroring and the crop;
// e(o) is the elastic displacement, already expressed in input voxels: a cubic B-spline field over
// the output grid whose control points lie `spacing` output voxels apart, starting at `origin`.
#pragma once

#include <cstdint>

#include "bspline.h"
#include "config.h"

namespace delira {

template <int NDIM>
struct Affine {
  float a[NDIM][NDIM];
  float b[NDIM];
};

// Control points of an elastic field: values[(component * g0 + i) * g1 + j) ...] (C order,
// component first), NDIM components (input-space displacement), grid extents `grid`.
template <int NDIM>
struct ElasticGrid {
  const float* values = nullptr;  // nullptr: no elastic deformation
  std::int64_t grid[NDIM];
  float origin[NDIM];       // output index of control point 0 along each axis
  float inv_spacing[NDIM];  // 1 / control point spacing, in output voxels
};

// B-spline taps of the elastic grid along one axis for output index o: first control index and weights.
struct ControlTaps {
  std::int64_t first;
  float w[4];
};

DELIRA_HD DELIRA_INLINE ControlTaps control_taps(float o, float origin, float inv_spacing, std::int64_t g) {
  const float t = (o - origin) * inv_spacing;
  float f0 = t >= 0.0f ? static_cast<float>(static_cast<std::int64_t>(t)) : -1.0f;
  ControlTaps ct;
  std::int64_t k = static_cast<std::int64_t>(f0) - 1;
  float frac = t - f0;
  // Keep the four taps inside the grid (the grid is built large enough; this only guards).
  if (k < 0) {
    k = 0;
    frac = 0.0f;
  }
  if (k > g - 4) {
    k = g - 4 < 0 ? 0 : g - 4;
    frac = 1.0f;
  }
  ct.first = k;
  cubic_bspline_weights(frac > 0.999999f ? 0.999999f : frac, ct.w);
  return ct;
}

// Input coordinate along axis d of the first voxel of an output row (the leading indices `lead`
// fixed, last index 0): b + sum_e a[e] lead[e] over the leading axes, accumulated in double and
// rounded once. `a_row` holds A's row d (NDIM entries), `b` its offset. The voxel at last index i of
// the row then lies at row_step_coordinate(start, a_row[NDIM - 1], i).
template <int NDIM>
DELIRA_HD DELIRA_INLINE float row_start_coordinate(const float* a_row, float b, const std::int64_t* lead) {
  double x = b;
  for (int e = 0; e < NDIM - 1; ++e) x += static_cast<double>(a_row[e]) * static_cast<double>(lead[e]);
  return static_cast<float>(x);
}

DELIRA_HD DELIRA_INLINE float row_step_coordinate(float start, float step, std::int32_t i) {
  return start + step * static_cast<float>(i);
}

// Elastic field contraction, in two steps that both executors take in the same order:
//  1. contract_leading_axes: for one displacement component, the B-spline sum over the leading
//     axes' taps (`lead`: NDIM - 1 taps, one per leading axis) of the control values, at the
//     last-axis control indices k0 .. k0 + count - 1, into f[0 .. count);
//  2. contract_last_axis: the sum over the last axis's four taps of f.
// `G` points to the component's control values (C order, extents `grid_shape`).
template <int NDIM>
DELIRA_HD DELIRA_INLINE void contract_leading_axes(const float* G, const std::int64_t* grid_shape,
                                                   const ControlTaps* lead, std::int64_t k0, std::int64_t count,
                                                   float* f) {
  const std::int64_t gl = grid_shape[NDIM - 1];
  for (std::int64_t k = 0; k < count; ++k) f[k] = 0.0f;
  if constexpr (NDIM == 3) {
    for (int a = 0; a < 4; ++a) {
      for (int b = 0; b < 4; ++b) {
        const float w = lead[0].w[a] * lead[1].w[b];
        const float* src = G + ((lead[0].first + a) * grid_shape[1] + (lead[1].first + b)) * gl + k0;
        for (std::int64_t k = 0; k < count; ++k) f[k] += w * src[k];
      }
    }
  } else {
    for (int a = 0; a < 4; ++a) {
      const float w = lead[0].w[a];
      const float* src = G + (lead[0].first + a) * gl + k0;
      for (std::int64_t k = 0; k < count; ++k) f[k] += w * src[k];
    }
  }
}

// Displacement at a voxel whose last-axis taps start at f[0] (f from contract_leading_axes).
DELIRA_HD DELIRA_INLINE float contract_last_axis(const float* f, float w0, float w1, float w2, float w3) {
  return w0 * f[0] + w1 * f[1] + w2 * f[2] + w3 * f[3];
}

}  // namespace delira

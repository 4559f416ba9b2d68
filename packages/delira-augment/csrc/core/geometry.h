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

}  // namespace delira

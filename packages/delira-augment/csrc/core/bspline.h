// Cubic B-spline basis: weights of the four taps around a coordinate, and the poles of the
// interpolating prefilter (Unser's recursive filtering, as scipy.ndimage.spline_filter does).
#pragma once

#include "config.h"

namespace delira {

// Weights of taps floor(x)-1 .. floor(x)+2 for the fractional part t = x - floor(x) in [0, 1).
DELIRA_HD DELIRA_INLINE void cubic_bspline_weights(float t, float w[4]) {
  const float t2 = t * t;
  const float t3 = t2 * t;
  const float u = 1.0f - t;
  w[0] = u * u * u * (1.0f / 6.0f);
  w[1] = (3.0f * t3 - 6.0f * t2 + 4.0f) * (1.0f / 6.0f);
  w[2] = (-3.0f * t3 + 3.0f * t2 + 3.0f * t + 1.0f) * (1.0f / 6.0f);
  w[3] = t3 * (1.0f / 6.0f);
}

// The single pole of the cubic B-spline prefilter, sqrt(3) - 2.
constexpr double kCubicPole = -0.26794919243112270;

}  // namespace delira

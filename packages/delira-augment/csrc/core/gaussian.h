// Taps of the sampled, normalised gaussian kernel used by the gaussian filter, with the radius rule
// of scipy.ndimage.gaussian_filter: radius = int(truncate * sigma + 0.5).
#pragma once

#include <cmath>
#include <cstdint>

#include "config.h"

namespace delira {

// Radius of the kernel for standard deviation `sigma` (voxels); 0 when sigma <= 0 (no filtering).
DELIRA_HD DELIRA_INLINE std::int64_t gaussian_radius(float sigma, double truncate) {
  return sigma > 0.0f ? static_cast<std::int64_t>(truncate * sigma + 0.5) : 0;
}

DELIRA_HD DELIRA_INLINE double gaussian_tap(std::int64_t i, float sigma) {
  const double x = -0.5 * static_cast<double>(i * i) / (static_cast<double>(sigma) * sigma);
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  return std::exp(x);
#endif
}

// Writes the 2 * radius + 1 weights of taps -radius .. radius into w (float32, summing to 1 up to
// rounding). With radius 0 the single weight is 1 (sigma <= 0 included).
DELIRA_HD DELIRA_INLINE void gaussian_weights(float sigma, std::int64_t radius, float* w) {
  if (radius == 0) {
    w[0] = 1.0f;
    return;
  }
  double sum = 0.0;
  for (std::int64_t i = -radius; i <= radius; ++i) sum += gaussian_tap(i, sigma);
  for (std::int64_t i = -radius; i <= radius; ++i) w[i + radius] = static_cast<float>(gaussian_tap(i, sigma) / sum);
}

}  // namespace delira

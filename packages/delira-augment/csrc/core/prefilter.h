// Interpolating prefilter of the cubic B-spline along one line (Unser's recursive filtering with the
// single pole sqrt(3) - 2, as scipy.ndimage.spline_filter1d does), for mode mirror (whole-sample
// symmetric) or reflect (half-sample symmetric). The arithmetic is in double; the line holds values
// of type V at c[0], c[stride], ..., c[(m - 1) * stride] and is filtered in place. The CPU executor
// filters a contiguous double copy of each line (V = double, stride 1), the CUDA executor filters
// the coefficient array in place (V = the data type).
#pragma once

#include <cmath>
#include <cstdint>

#include "bspline.h"
#include "config.h"

namespace delira {

DELIRA_HD DELIRA_INLINE double prefilter_pow(double z, double e) {
#if defined(__CUDA_ARCH__)
  return pow(z, e);
#else
  return std::pow(z, e);
#endif
}

// Initial causal coefficient, mirror boundary: sum over the whole-sample symmetric extension.
template <typename V>
DELIRA_HD DELIRA_INLINE double causal_init_mirror(const V* c, std::int64_t m, std::int64_t stride, double z) {
  const double zm1 = prefilter_pow(z, static_cast<double>(m - 1));
  double sum = static_cast<double>(c[0]) + zm1 * static_cast<double>(c[(m - 1) * stride]);
  double zj = z;
  for (std::int64_t j = 1; j < m - 1; ++j) {
    sum += (zj + zm1 * zm1 / zj) * static_cast<double>(c[j * stride]);
    zj *= z;
    if (fabs(zj) < 1e-300) break;
  }
  return sum / (1.0 - zm1 * zm1);
}

// Initial causal coefficient, reflect boundary: sum over the half-sample symmetric extension.
template <typename V>
DELIRA_HD DELIRA_INLINE double causal_init_reflect(const V* c, std::int64_t m, std::int64_t stride, double z) {
  const double z2m = prefilter_pow(z, static_cast<double>(2 * m));
  double sum = 0.0;
  double zk = z;
  for (std::int64_t k = 1; k <= 2 * m; ++k) {
    const std::int64_t i = k <= m ? k - 1 : 2 * m - k;
    sum += zk * static_cast<double>(c[i * stride]);
    zk *= z;
    if (fabs(zk) < 1e-300) break;
  }
  return static_cast<double>(c[0]) + sum / (1.0 - z2m);
}

// Filters the line of m values in place (nothing to do for m < 2).
template <typename V>
DELIRA_HD DELIRA_INLINE void bspline_prefilter_line(V* c, std::int64_t m, std::int64_t stride, bool reflect) {
  if (m < 2) return;
  const double z = kCubicPole;
  const double gain = (1.0 - z) * (1.0 - 1.0 / z);
  for (std::int64_t i = 0; i < m; ++i) c[i * stride] = static_cast<V>(static_cast<double>(c[i * stride]) * gain);
  // Causal pass; `prev` carries the last coefficient in double.
  double prev = reflect ? causal_init_reflect(c, m, stride, z) : causal_init_mirror(c, m, stride, z);
  c[0] = static_cast<V>(prev);
  for (std::int64_t i = 1; i < m; ++i) {
    prev = static_cast<double>(c[i * stride]) + z * prev;
    c[i * stride] = static_cast<V>(prev);
  }
  // Anti-causal pass.
  double next = reflect ? prev * (z / (z - 1.0))
                        : (z / (z * z - 1.0)) * (z * static_cast<double>(c[(m - 2) * stride]) + prev);
  c[(m - 1) * stride] = static_cast<V>(next);
  for (std::int64_t i = m - 2; i >= 0; --i) {
    next = z * (next - static_cast<double>(c[i * stride]));
    c[i * stride] = static_cast<V>(next);
  }
}

}  // namespace delira

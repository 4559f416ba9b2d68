// Moments (count, mean, sum of squared deviations, min, max) of a set of values, and the merge of
// two partial sets (Chan, Golub and LeVeque's pairwise update). Both executors reduce their
// partials with these functions in a fixed order, so statistics do not depend on the number of
// threads or on the launch configuration.
//
// Moments is a trivial type (no constructors) so that it can live in CUDA shared memory: start
// from empty_moments().
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "config.h"
#include "intensity.h"

namespace delira {

struct Moments {
  double count;
  double mean;
  double m2;  // sum of squared deviations from the mean
  float min;
  float max;
};

DELIRA_HD DELIRA_INLINE float positive_infinity() {
#if defined(__CUDA_ARCH__)
  return __int_as_float(0x7f800000);
#else
  return std::numeric_limits<float>::infinity();
#endif
}

DELIRA_HD DELIRA_INLINE Moments empty_moments() {
  Moments m;
  m.count = 0.0;
  m.mean = 0.0;
  m.m2 = 0.0;
  m.min = positive_infinity();
  m.max = -positive_infinity();
  return m;
}

// Moments of one value.
DELIRA_HD DELIRA_INLINE Moments single_moment(float v) {
  Moments m;
  m.count = 1.0;
  m.mean = static_cast<double>(v);
  m.m2 = 0.0;
  m.min = v;
  m.max = v;
  return m;
}

// Moments of n values from sums of their deviations from `shift` (s1 = sum(v - shift),
// s2 = sum((v - shift)^2)), the shifted form that keeps s2 accurate when |mean| >> std.
DELIRA_HD DELIRA_INLINE Moments moments_from_shifted_sums(std::int64_t n, double shift, double s1, double s2,
                                                          float min, float max) {
  if (n == 0) return empty_moments();
  Moments m;
  m.count = static_cast<double>(n);
  m.mean = shift + s1 / m.count;
  m.m2 = s2 - s1 * s1 / m.count;
  if (m.m2 < 0.0) m.m2 = 0.0;
  m.min = min;
  m.max = max;
  return m;
}

// Merges `o` into `a` (Chan et al.): a keeps the earlier values, o the later ones.
DELIRA_HD DELIRA_INLINE void merge_moments(Moments& a, const Moments& o) {
  if (o.count == 0.0) return;
  if (a.count == 0.0) {
    a = o;
    return;
  }
  const double n = a.count + o.count;
  const double delta = o.mean - a.mean;
  a.mean += delta * (o.count / n);
  a.m2 += o.m2 + delta * delta * (a.count * o.count / n);
  a.count = n;
  a.min = o.min < a.min ? o.min : a.min;
  a.max = o.max > a.max ? o.max : a.max;
}

// Population standard deviation.
DELIRA_HD DELIRA_INLINE double moments_std(const Moments& m) {
  return m.count > 0.0 ? sqrt(m.m2 > 0.0 ? m.m2 / m.count : 0.0) : 0.0;
}

// Writes mean, std, min and max into the statistics of a stats op (min = max = 0 when empty);
// the percentiles are left as they are.
DELIRA_HD DELIRA_INLINE void store_moments(const Moments& m, Stats& s) {
  s.mean = m.mean;
  s.std = moments_std(m);
  s.min = m.count > 0.0 ? m.min : 0.0f;
  s.max = m.count > 0.0 ? m.max : 0.0f;
}

}  // namespace delira

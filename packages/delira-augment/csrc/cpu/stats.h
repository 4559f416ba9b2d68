// Deterministic statistics: per-row partial moments merged in a fixed order, so the result does not
// depend on how rows were distributed over threads.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace delira::cpu {

struct Moments {
  double count = 0.0;
  double mean = 0.0;
  double m2 = 0.0;  // sum of squared deviations from the mean
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();

  // Chan et al.'s pairwise update.
  void merge(const Moments& o) {
    if (o.count == 0.0) return;
    if (count == 0.0) {
      *this = o;
      return;
    }
    const double n = count + o.count;
    const double delta = o.mean - mean;
    mean += delta * (o.count / n);
    m2 += o.m2 + delta * delta * (count * o.count / n);
    count = n;
    min = o.min < min ? o.min : min;
    max = o.max > max ? o.max : max;
  }

  double std() const { return count > 0.0 ? std::sqrt(m2 > 0.0 ? m2 / count : 0.0) : 0.0; }
};

// Accumulates one row with a shift (its first value) for accuracy.
struct RowAccumulator {
  double shift = 0.0, s1 = 0.0, s2 = 0.0;
  std::int64_t n = 0;
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();

  inline void add(float v) {
    if (n == 0) shift = v;
    const double d = static_cast<double>(v) - shift;
    s1 += d;
    s2 += d * d;
    ++n;
    min = v < min ? v : min;
    max = v > max ? v : max;
  }

  Moments moments() const {
    Moments m;
    if (n == 0) return m;
    m.count = static_cast<double>(n);
    m.mean = shift + s1 / m.count;
    m.m2 = s2 - s1 * s1 / m.count;
    if (m.m2 < 0.0) m.m2 = 0.0;
    m.min = min;
    m.max = max;
    return m;
  }
};

}  // namespace delira::cpu

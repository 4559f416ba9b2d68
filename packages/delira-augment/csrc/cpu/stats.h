// Deterministic statistics of the CPU executor: per-row partial moments (core/moments.h) merged in a
// fixed order, so the result does not depend on how rows were distributed over threads.
#pragma once

#include <cstdint>
#include <limits>

#include "../core/moments.h"

namespace delira::cpu {

using ::delira::Moments;

// Sums of one row of values, shifted by its first value for accuracy.
struct RowAccumulator {
  double shift = 0.0, s1 = 0.0, s2 = 0.0;
  std::int64_t n = 0;
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();

  Moments moments() const { return moments_from_shifted_sums(n, shift, s1, s2, min, max); }
};

}  // namespace delira::cpu

// Intensity operations of the fused pipeline.
//
// A program is a list of operations applied in order to every voxel of a sample. Pointwise ops
// (noise, multiply, add, clip) are fused into the pass that produces the voxel. Ops that need
// statistics of their input (contrast, gamma, restore-stats, z-score, percentile clip) start a new
// pass: the previous pass accumulates the statistics per (sample, channel) in a fixed order, so the
// result does not depend on the number of threads.
#pragma once

#include <cstdint>

#include "config.h"
#include "fastmath.h"
#include "rng.h"

namespace delira {

enum class OpKind : int {
  Noise = 0,           // p0 = standard deviation
  Multiply = 1,        // p0 = factor
  Add = 2,             // p0 = value
  Clip = 3,            // p0 = low, p1 = high
  Contrast = 4,        // p0 = factor, p1 = preserve range (0/1)            [needs stats]
  Gamma = 5,           // p0 = gamma, p1 = invert (0/1), p2 = retain stats   [needs stats]
  RestoreStats = 6,    // p0 = negate afterwards (0/1); target = stats of op `ref`  [needs stats]
  ZScore = 7,          // p0 = epsilon                                         [needs stats]
  PercentileClip = 8,  // p0 = lower percentile, p1 = upper percentile (0..100) [needs stats]
};

DELIRA_HD DELIRA_INLINE bool needs_stats(OpKind k) { return static_cast<int>(k) >= static_cast<int>(OpKind::Contrast); }

// Statistics of one (sample, channel) at the input of a stats op.
struct Stats {
  double mean = 0.0;
  double std = 0.0;
  float min = 0.0f;
  float max = 0.0f;
  float lo = 0.0f;  // percentiles (PercentileClip only)
  float hi = 0.0f;
};

// Parameters of one op for one sample.
struct OpParams {
  float p[3];
  bool active;
};

// Applies a pointwise op. `key` is the random stream of this (sample, op); `counter` the voxel index.
DELIRA_HD DELIRA_INLINE float apply_pointwise(OpKind kind, const OpParams& q, float v, std::uint64_t key,
                                              std::uint64_t counter) {
  switch (kind) {
    case OpKind::Noise:
      return v + q.p[0] * random_normal(key, counter);
    case OpKind::Multiply:
      return v * q.p[0];
    case OpKind::Add:
      return v + q.p[0];
    case OpKind::Clip:
      return v < q.p[0] ? q.p[0] : (v > q.p[1] ? q.p[1] : v);
    default:
      return v;
  }
}

// Applies a stats op given the statistics `s` of its input and, for RestoreStats, `target`.
DELIRA_HD DELIRA_INLINE float apply_with_stats(OpKind kind, const OpParams& q, float v, const Stats& s,
                                               const Stats& target) {
  switch (kind) {
    case OpKind::Contrast: {
      const float mean = static_cast<float>(s.mean);
      float y = (v - mean) * q.p[0] + mean;
      if (q.p[1] != 0.0f) y = y < s.min ? s.min : (y > s.max ? s.max : y);
      return y;
    }
    case OpKind::Gamma: {
      // In the inverted domain when p1 != 0: x' = -x, so min' = -max and max' = -min.
      const bool invert = q.p[1] != 0.0f;
      const float x = invert ? -v : v;
      const float lo = invert ? -s.max : s.min;
      const float range = (invert ? -s.min : s.max) - lo + 1e-7f;
      float y = fast_pow((x - lo) / range, q.p[0]) * range + lo;
      // With retained statistics, RestoreStats rescales and negates back afterwards.
      if (invert && q.p[2] == 0.0f) y = -y;
      return y;
    }
    case OpKind::RestoreStats: {
      // target: stats at the Gamma op's input (not inverted); s: stats of the gamma output.
      const bool negate = q.p[0] != 0.0f;
      const double target_mean = negate ? -target.mean : target.mean;
      const double scale = target.std / (s.std + 1e-8);
      float y = static_cast<float>((static_cast<double>(v) - s.mean) * scale + target_mean);
      return negate ? -y : y;
    }
    case OpKind::ZScore: {
      const double sd = s.std > q.p[0] ? s.std : static_cast<double>(q.p[0]);
      return static_cast<float>((static_cast<double>(v) - s.mean) / sd);
    }
    case OpKind::PercentileClip:
      return v < s.lo ? s.lo : (v > s.hi ? s.hi : v);
    default:
      return v;
  }
}

}  // namespace delira

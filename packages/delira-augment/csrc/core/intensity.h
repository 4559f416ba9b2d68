// Intensity operations of the fused pipeline, written once for both executors.
//
// A program is a list of operations applied in order to every voxel of a sample. Pointwise ops
// (noise, Rician noise, multiply, add, clip) are fused into the pass that produces the voxel. Ops that
// need statistics of their input (contrast, gamma, restore-stats, z-score, percentile clip, shift by the
// minimum) start a new
// pass: the previous pass accumulates the statistics per (sample, channel) in a fixed order, so the
// result does not depend on the number of threads (see program.h and moments.h).
//
// Every op is a per-value function templated on the value type V (float for float32 data, double
// for float64 data). Ops that need statistics are split into "coefficients" (computed once per
// (sample, channel) from the statistics) and a cheap per-value application, so that the CPU's row
// loops vectorise and the GPU's kernels do not recompute them per voxel more than needed.
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
  Rician = 9,          // p0 = standard deviation: sqrt((v + s z0)^2 + (s z1)^2)
  ShiftMin = 10,       // v - min (batchgeneratorsv2's Rician noise shifts by the minimum) [needs stats]
};

constexpr int kLastOpKind = static_cast<int>(OpKind::ShiftMin);

// The ops that need statistics of their input (an explicit set: pointwise kinds are added after them).
DELIRA_HD DELIRA_INLINE bool needs_stats(OpKind k) {
  switch (k) {
    case OpKind::Contrast:
    case OpKind::Gamma:
    case OpKind::RestoreStats:
    case OpKind::ZScore:
    case OpKind::PercentileClip:
    case OpKind::ShiftMin:
      return true;
    default:
      return false;
  }
}

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

// --- pointwise ops -------------------------------------------------------------------------------

// v + sigma * z for a standard normal value z (float product, added in V).
template <typename V>
DELIRA_HD DELIRA_INLINE V add_noise(V v, float sigma, float z) {
  return v + sigma * z;
}

DELIRA_HD DELIRA_INLINE float sqrt_value(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return __builtin_sqrtf(x);
#endif
}

DELIRA_HD DELIRA_INLINE double sqrt_value(double x) {
#if defined(__CUDA_ARCH__)
  return sqrt(x);
#else
  return __builtin_sqrt(x);
#endif
}

// Rician magnitude sqrt((v + sigma z0)^2 + (sigma z1)^2) for two independent standard normal values:
// the magnitude of a complex value with real part v whose real and imaginary parts get gaussian noise.
template <typename V>
DELIRA_HD DELIRA_INLINE V add_rician_noise(V v, float sigma, float z0, float z1) {
  const V re = v + sigma * z0;
  const V im = static_cast<V>(sigma * z1);
  return sqrt_value(re * re + im * im);
}

template <typename V>
DELIRA_HD DELIRA_INLINE V multiply_value(V v, V factor) {
  return v * factor;
}

template <typename V>
DELIRA_HD DELIRA_INLINE V add_value(V v, V offset) {
  return v + offset;
}

template <typename V>
DELIRA_HD DELIRA_INLINE V clip_value(V v, V lo, V hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// Applies a pointwise op. `key` is the random stream of this (sample, op); `counter` the noise
// counter of the voxel (program.h: noise_counter). Noise takes element (counter & 1) of Box-Muller
// pair counter >> 1 (two voxels share a pair); Rician needs two normal values per voxel and takes
// both elements of pair `counter` (one whole pair per voxel). The streams of different ops never
// overlap because their keys differ (program.h: op_stream_key mixes the op index in).
template <typename V>
DELIRA_HD DELIRA_INLINE V apply_pointwise(OpKind kind, const OpParams& q, V v, std::uint64_t key,
                                          std::uint64_t counter) {
  switch (kind) {
    case OpKind::Noise:
      return add_noise(v, q.p[0], random_normal(key, counter));
    case OpKind::Rician: {
      float z0, z1;
      random_normal_pair(key, counter, &z0, &z1);
      return add_rician_noise(v, q.p[0], z0, z1);
    }
    case OpKind::Multiply:
      return multiply_value(v, static_cast<V>(q.p[0]));
    case OpKind::Add:
      return add_value(v, static_cast<V>(q.p[0]));
    case OpKind::Clip:
      return clip_value(v, static_cast<V>(q.p[0]), static_cast<V>(q.p[1]));
    default:
      return v;
  }
}

// --- ops with statistics -------------------------------------------------------------------------

// Contrast around the mean, optionally clipped to the input range (float arithmetic).
DELIRA_HD DELIRA_INLINE float contrast_value(const OpParams& q, const Stats& s, float v) {
  const float mean = static_cast<float>(s.mean);
  float y = (v - mean) * q.p[0] + mean;
  if (q.p[1] != 0.0f) y = y < s.min ? s.min : (y > s.max ? s.max : y);
  return y;
}

// Gamma on the input range [min, max] (inverted domain x' = -x when p1 != 0, so that
// min' = -max and max' = -min). With retained statistics (p2 != 0) RestoreStats rescales and
// negates back afterwards, so the sign is left as it is here.
struct GammaCoefficients {
  float sign_in, lo, range, inv_range, gamma, sign_out;
};

DELIRA_HD DELIRA_INLINE GammaCoefficients gamma_coefficients(const OpParams& q, const Stats& s) {
  const bool invert = q.p[1] != 0.0f;
  GammaCoefficients k;
  k.sign_in = invert ? -1.0f : 1.0f;
  k.lo = invert ? -s.max : s.min;
  k.range = (invert ? -s.min : s.max) - k.lo + 1e-7f;
  k.inv_range = 1.0f / k.range;
  k.gamma = q.p[0];
  k.sign_out = (invert && q.p[2] == 0.0f) ? -1.0f : 1.0f;
  return k;
}

DELIRA_HD DELIRA_INLINE float apply_gamma(const GammaCoefficients& k, float v) {
  const float x = (k.sign_in * v - k.lo) * k.inv_range;
  return k.sign_out * (fast_pow(x, k.gamma) * k.range + k.lo);
}

// y = a v + b in the value type (RestoreStats and ZScore).
template <typename V>
struct LinearMap {
  V a, b;
};

template <typename V>
DELIRA_HD DELIRA_INLINE V apply_linear(const LinearMap<V>& m, V v) {
  return m.a * v + m.b;
}

// RestoreStats: `s` are the statistics of its input (the gamma output), `target` those at the input
// of the op it refers to (not inverted); p0 != 0 negates afterwards.
template <typename V>
DELIRA_HD DELIRA_INLINE LinearMap<V> restore_stats_map(const OpParams& q, const Stats& s, const Stats& target) {
  const bool negate = q.p[0] != 0.0f;
  const double target_mean = negate ? -target.mean : target.mean;
  const double scale = target.std / (s.std + 1e-8);
  LinearMap<V> m;
  m.a = static_cast<V>((negate ? -1.0 : 1.0) * scale);
  m.b = static_cast<V>((negate ? -1.0 : 1.0) * (target_mean - s.mean * scale));
  return m;
}

// ZScore: (v - mean) / max(std, epsilon = p0).
template <typename V>
DELIRA_HD DELIRA_INLINE LinearMap<V> zscore_map(const OpParams& q, const Stats& s) {
  const double sd = s.std > q.p[0] ? s.std : static_cast<double>(q.p[0]);
  LinearMap<V> m;
  m.a = static_cast<V>(1.0 / sd);
  m.b = static_cast<V>(-s.mean / sd);
  return m;
}

// PercentileClip to the percentiles [s.lo, s.hi] (float arithmetic).
DELIRA_HD DELIRA_INLINE float percentile_clip_value(const Stats& s, float v) {
  return v < s.lo ? s.lo : (v > s.hi ? s.hi : v);
}

// Applies a stats op given the statistics `s` of its input and, for RestoreStats, `target`.
// Per value; loops over many values hoist the coefficients (gamma_coefficients, *_map) instead.
template <typename V>
DELIRA_HD DELIRA_INLINE V apply_with_stats(OpKind kind, const OpParams& q, V v, const Stats& s, const Stats& target) {
  switch (kind) {
    case OpKind::Contrast:
      return static_cast<V>(contrast_value(q, s, static_cast<float>(v)));
    case OpKind::Gamma:
      return static_cast<V>(apply_gamma(gamma_coefficients(q, s), static_cast<float>(v)));
    case OpKind::RestoreStats:
      return apply_linear(restore_stats_map<V>(q, s, target), v);
    case OpKind::ZScore:
      return apply_linear(zscore_map<V>(q, s), v);
    case OpKind::PercentileClip:
      return static_cast<V>(percentile_clip_value(s, static_cast<float>(v)));
    case OpKind::ShiftMin:
      return v - static_cast<V>(s.min);
    default:
      return v;
  }
}

}  // namespace delira

// Branch-free float approximations of log, exp, pow and cos/sin used by the kernels.
// Pure arithmetic and bit manipulation, so loops that call them vectorise on the CPU and the same
// code runs on the GPU: both executors produce the same values. Relative error < 2e-7 in the
// ranges used (documented per function).
#pragma once

#include <cstdint>
#include <cstring>

#include "config.h"

namespace delira {

DELIRA_HD DELIRA_INLINE std::uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

DELIRA_HD DELIRA_INLINE float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// log2(x) for finite x > 0 (normal floats). x = m * 2^e with m in [sqrt(1/2), sqrt(2)); then
// log2(m) = 2/ln2 * atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, by an odd series to s^11.
DELIRA_HD DELIRA_INLINE float fast_log2(float x) {
  std::uint32_t u = float_bits(x);
  // Shift the mantissa range to [sqrt(1/2), sqrt(2)) so the series converges fast.
  const std::uint32_t offset = 0x3f3504f3u;  // bits of sqrt(1/2)
  const std::int32_t e = static_cast<std::int32_t>(u - offset) >> 23;  // arithmetic shift
  const float m = bits_float(u - (static_cast<std::uint32_t>(e) << 23));
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  // 2/ln(2) * (s + s^3/3 + s^5/5 + s^7/7 + s^9/9 + s^11/11)
  float p = 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return static_cast<float>(e) + 2.8853900817779268f * s * p;
}

// 2^x for x in [-126, 127]; inputs outside are clamped (2^-126 .. 2^127).
// Split x = n + f with f in [-0.5, 0.5]; 2^f by a degree-7 polynomial (Taylor of exp(f ln2)).
DELIRA_HD DELIRA_INLINE float fast_exp2(float x) {
  x = x < -126.0f ? -126.0f : x;
  x = x > 127.0f ? 127.0f : x;
  // round to nearest: floor(x + 0.5) by truncation and a correction (branch-free)
  const float xr = x + 0.5f;
  std::int32_t n = static_cast<std::int32_t>(xr);
  n -= (static_cast<float>(n) > xr) ? 1 : 0;
  const float f = x - static_cast<float>(n);
  const float t = f * 0.69314718055994531f;
  float p = 1.0f / 5040.0f;
  p = p * t + 1.0f / 720.0f;
  p = p * t + 1.0f / 120.0f;
  p = p * t + 1.0f / 24.0f;
  p = p * t + 1.0f / 6.0f;
  p = p * t + 0.5f;
  p = p * t + 1.0f;
  p = p * t + 1.0f;
  return p * bits_float(static_cast<std::uint32_t>(n + 127) << 23);
}

// x^g for x >= 0 (0^g = 0 for g > 0).
DELIRA_HD DELIRA_INLINE float fast_pow(float x, float g) {
  const float xs = x > 1e-30f ? x : 1e-30f;
  const float r = fast_exp2(g * fast_log2(xs));  // branch-free: vectorises
  const float at_zero = g == 0.0f ? 1.0f : 0.0f;
  const float positive = x > 0.0f ? 1.0f : 0.0f;  // arithmetic blend: GCC vectorises it, not a select
  return positive * r + (1.0f - positive) * at_zero;
}

// Natural logarithm for x > 0.
DELIRA_HD DELIRA_INLINE float fast_log(float x) { return fast_log2(x) * 0.69314718055994531f; }

// cos(2 pi t) and sin(2 pi t) for t in [0, 1). Reduced to a = 2 pi r with r in [-0.5, 0.5) and
// evaluated by Taylor polynomials valid on [-pi, pi] (degree 17 / 18, truncation error < 3e-8),
// without branches or selects so that the loop vectorises.
DELIRA_HD DELIRA_INLINE void fast_sincos_2pi(float t, float* s, float* c) {
  const float r = t - static_cast<float>(static_cast<std::int32_t>(t + 0.5f));
  const float a = r * 6.28318530717958648f;
  const float a2 = a * a;
  float sp = 1.0f / 355687428096000.0f;   // 1/17!
  sp = sp * a2 - 1.0f / 1307674368000.0f;  // 1/15!
  sp = sp * a2 + 1.0f / 6227020800.0f;     // 1/13!
  sp = sp * a2 - 1.0f / 39916800.0f;       // 1/11!
  sp = sp * a2 + 1.0f / 362880.0f;
  sp = sp * a2 - 1.0f / 5040.0f;
  sp = sp * a2 + 1.0f / 120.0f;
  sp = sp * a2 - 1.0f / 6.0f;
  sp = sp * a2 + 1.0f;
  float cp = -1.0f / 6402373705728000.0f;  // -1/18!
  cp = cp * a2 + 1.0f / 20922789888000.0f;   // 1/16!
  cp = cp * a2 - 1.0f / 87178291200.0f;      // 1/14!
  cp = cp * a2 + 1.0f / 479001600.0f;        // 1/12!
  cp = cp * a2 - 1.0f / 3628800.0f;
  cp = cp * a2 + 1.0f / 40320.0f;
  cp = cp * a2 - 1.0f / 720.0f;
  cp = cp * a2 + 1.0f / 24.0f;
  cp = cp * a2 - 0.5f;
  cp = cp * a2 + 1.0f;
  *s = a * sp;
  *c = cp;
}

}  // namespace delira

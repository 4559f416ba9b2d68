// Counter-based random numbers: every value is a pure function of (key, counter), so results do not
// depend on the number of threads, the order of evaluation, or the executor (CPU or CUDA).
// key = mix(seed of the sample, operation index); counter = voxel index.
#pragma once

#include <cstdint>

#include "config.h"
#include "fastmath.h"

namespace delira {

// 64-bit finaliser (an avalanche mixer in the style of SplitMix64): a bijection on 64-bit words.
DELIRA_HD DELIRA_INLINE std::uint64_t mix64(std::uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9ULL;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z;
}

// Key of one random stream (one operation of one sample).
DELIRA_HD DELIRA_INLINE std::uint64_t stream_key(std::uint64_t sample_seed, std::uint32_t stream) {
  return mix64(sample_seed ^ mix64(0x9e3779b97f4a7c15ULL * (static_cast<std::uint64_t>(stream) + 1)));
}

// 64 random bits for (key, counter). Two rounds of mixing make neighbouring counters independent.
DELIRA_HD DELIRA_INLINE std::uint64_t random_bits(std::uint64_t key, std::uint64_t counter) {
  return mix64(mix64(counter * 0x9e3779b97f4a7c15ULL + key) ^ key);
}

// Standard normal value for (key, counter) by the Box-Muller transform of two 24-bit uniforms.
// Tails are truncated at about 5.8 standard deviations.
DELIRA_HD DELIRA_INLINE float random_normal(std::uint64_t key, std::uint64_t counter) {
  const std::uint64_t bits = random_bits(key, counter);
  const float inv24 = 1.0f / 16777216.0f;
  const float u1 = (static_cast<float>(static_cast<std::uint32_t>(bits >> 40)) + 1.0f) * inv24;  // (0, 1]
  const float u2 = static_cast<float>(static_cast<std::uint32_t>(bits >> 8) & 0xffffffu) * inv24;  // [0, 1)
  float s, c;
  fast_sincos_2pi(u2, &s, &c);
  float radius2 = -2.0f * fast_log(u1);
  radius2 = radius2 > 0.0f ? radius2 : 0.0f;
#if defined(__CUDA_ARCH__)
  return sqrtf(radius2) * c;
#else
  return __builtin_sqrtf(radius2) * c;
#endif
}

}  // namespace delira

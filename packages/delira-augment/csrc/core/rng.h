// Counter-based random numbers: every value is a pure function of (key, counter), so results do not
// depend on the number of threads, the order of evaluation, or the executor (CPU or CUDA).
// key = mix(seed of the sample, operation index); counter = voxel index.
#pragma once

#include <cstdint>

#include "config.h"
#include "fastmath.h"

namespace delira {

// 64-bit finaliser (an avalanche mixer in the style of SplitMix64): a bijection on 64-bit words.
// Used once per (sample, operation) to derive stream keys.
DELIRA_HD DELIRA_INLINE std::uint64_t mix64(std::uint64_t z) {
  z ^= z >> 30;
  z *= 0xbf58476d1ce4e5b9ULL;
  z ^= z >> 27;
  z *= 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z;
}

// 32-bit avalanche hash (three multiply-xorshift rounds): cheap on every SIMD width and on GPUs,
// which is why the per-voxel values use it.
DELIRA_HD DELIRA_INLINE std::uint32_t hash32(std::uint32_t x) {
  x ^= x >> 17;
  x *= 0xed5ad4bbu;
  x ^= x >> 11;
  x *= 0xac4c1b51u;
  x ^= x >> 15;
  x *= 0x31848babu;
  x ^= x >> 14;
  return x;
}

// Key of one random stream (one operation of one sample).
DELIRA_HD DELIRA_INLINE std::uint64_t stream_key(std::uint64_t sample_seed, std::uint32_t stream) {
  return mix64(sample_seed ^ mix64(0x9e3779b97f4a7c15ULL * (static_cast<std::uint64_t>(stream) + 1)));
}

// Two independent 32-bit random words for (key, counter).
DELIRA_HD DELIRA_INLINE void random_words(std::uint64_t key, std::uint64_t counter, std::uint32_t* a,
                                          std::uint32_t* b) {
  const std::uint32_t k0 = static_cast<std::uint32_t>(key);
  const std::uint32_t k1 = static_cast<std::uint32_t>(key >> 32);
  std::uint32_t h = hash32(static_cast<std::uint32_t>(counter) ^ k0);
  h = hash32(h ^ static_cast<std::uint32_t>(counter >> 32) ^ k1);
  *a = h;
  *b = hash32(h ^ 0x9e3779b9u ^ k0);
}

// The pair of standard normal values of Box-Muller for (key, pair): the voxel with counter v
// takes element (v & 1) of pair v >> 1. Tails are truncated at about 5.8 standard deviations.
DELIRA_HD DELIRA_INLINE void random_normal_pair(std::uint64_t key, std::uint64_t pair, float* z0, float* z1) {
  std::uint32_t wa, wb;
  random_words(key, pair, &wa, &wb);
  const float inv24 = 1.0f / 16777216.0f;
  // Signed conversions (the values fit in 24 bits) vectorise on every instruction set.
  const float u1 = (static_cast<float>(static_cast<std::int32_t>(wa >> 8)) + 1.0f) * inv24;  // (0, 1]
  const float u2 = static_cast<float>(static_cast<std::int32_t>(wb >> 8)) * inv24;           // [0, 1)
  float s, c;
  fast_sincos_2pi(u2, &s, &c);
  float radius2 = -2.0f * fast_log(u1);
  radius2 = radius2 > 0.0f ? radius2 : 0.0f;
#if defined(__CUDA_ARCH__)
  const float r = sqrtf(radius2);
#else
  const float r = __builtin_sqrtf(radius2);
#endif
  *z0 = r * c;
  *z1 = r * s;
}

// Standard normal value for (key, counter).
DELIRA_HD DELIRA_INLINE float random_normal(std::uint64_t key, std::uint64_t counter) {
  float z0, z1;
  random_normal_pair(key, counter >> 1, &z0, &z1);
  return (counter & 1) ? z1 : z0;
}

}  // namespace delira

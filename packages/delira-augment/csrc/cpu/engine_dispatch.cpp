// Run-time choice of the engine build for this CPU: AVX-512, AVX2 + FMA, or the baseline.
// DELIRA_AUGMENT_ISA=base|avx2|avx512 caps the choice (for comparisons and debugging).
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine_isa.h"

namespace delira::cpu {
namespace {

enum class Isa { Base = 0, Avx2 = 1, Avx512 = 2 };

Isa detect() {
  Isa best = Isa::Base;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
#if defined(DELIRA_AUGMENT_HAVE_AVX2)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2")) {
    best = Isa::Avx2;
  }
#endif
#if defined(DELIRA_AUGMENT_HAVE_AVX512)
  if (best == Isa::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    best = Isa::Avx512;
  }
#endif
#endif
  if (const char* cap = std::getenv("DELIRA_AUGMENT_ISA")) {
    Isa wanted = best;
    if (std::strcmp(cap, "base") == 0) wanted = Isa::Base;
    if (std::strcmp(cap, "avx2") == 0) wanted = Isa::Avx2;
    if (std::strcmp(cap, "avx512") == 0) wanted = Isa::Avx512;
    if (static_cast<int>(wanted) < static_cast<int>(best)) best = wanted;
  }
  return best;
}

Isa isa() {
  static const Isa chosen = detect();
  return chosen;
}

}  // namespace

std::string active_isa() {
  switch (isa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "base";
  }
}

#define DELIRA_DISPATCH(CALL)                                   \
  switch (isa()) {                                              \
    DELIRA_CASE_AVX512(CALL)                                    \
    DELIRA_CASE_AVX2(CALL)                                      \
    default: isa_base::CALL; break;                             \
  }
#if defined(DELIRA_AUGMENT_HAVE_AVX512)
#define DELIRA_CASE_AVX512(CALL) case Isa::Avx512: isa_avx512::CALL; break;
#else
#define DELIRA_CASE_AVX512(CALL)
#endif
#if defined(DELIRA_AUGMENT_HAVE_AVX2)
#define DELIRA_CASE_AVX2(CALL) case Isa::Avx2: isa_avx2::CALL; break;
#else
#define DELIRA_CASE_AVX2(CALL)
#endif

void resample(const ArrayRef& data, const OutRef& out, const ArrayRef& seg, const OutRef& seg_out,
              const SpatialSpec& spec, const Program& program) {
  DELIRA_DISPATCH(resample(data, out, seg, seg_out, spec, program))
}

void apply_program(const ArrayRef& x, const OutRef& out, const Program& program) {
  DELIRA_DISPATCH(apply_program(x, out, program))
}

void gaussian_blur(const OutRef& x, int spatial_ndim, const std::vector<float>& sigma, double truncate) {
  DELIRA_DISPATCH(gaussian_blur(x, spatial_ndim, sigma, truncate))
}

}  // namespace delira::cpu

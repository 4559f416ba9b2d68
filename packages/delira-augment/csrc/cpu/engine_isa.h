// Declarations of the engine entry points in each instruction-set namespace (see engine.cpp).
#pragma once

#include <vector>

#include "engine.h"

#define DELIRA_DECLARE_ENGINE(NS)                                                                          \
  namespace delira::cpu::NS {                                                                              \
  void resample(const ArrayRef& data, const OutRef& out, const ArrayRef& seg, const OutRef& seg_out,      \
                const SpatialSpec& spec, const Program& program);                                          \
  void apply_program(const ArrayRef& x, const OutRef& out, const Program& program);                        \
  void gaussian_blur(const OutRef& x, int spatial_ndim, const std::vector<float>& sigma, double truncate); \
  }

DELIRA_DECLARE_ENGINE(isa_base)
#if defined(DELIRA_AUGMENT_HAVE_AVX2)
DELIRA_DECLARE_ENGINE(isa_avx2)
#endif
#if defined(DELIRA_AUGMENT_HAVE_AVX512)
DELIRA_DECLARE_ENGINE(isa_avx512)
#endif

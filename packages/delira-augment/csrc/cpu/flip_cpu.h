// CPU executor of `flip`.
#pragma once

#include "../core/flip.h"

namespace delira::cpu {

// Writes the flipped view of `in` (strides from `g`) into the C-contiguous buffer `out`.
void flip(const void* in, void* out, DType dtype, const FlipGeometry& g);

}  // namespace delira::cpu

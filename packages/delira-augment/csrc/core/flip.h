// Index mapping of `flip`: which input element lands at each output element.
#pragma once

#include <stdexcept>
#include <string>

#include "config.h"

namespace delira {

// Shape of an array and the strides (in elements, may be negative or zero) of the input
// view, plus which axes are reversed. The output is always C-contiguous.
struct FlipGeometry {
  int ndim = 0;
  std::int64_t shape[kMaxDims] = {0, 0, 0, 0, 0};
  std::int64_t in_strides[kMaxDims] = {0, 0, 0, 0, 0};
  bool flip[kMaxDims] = {false, false, false, false, false};

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }
};

// Offset (in elements) into the input of the element written to C-order output position `out_linear`.
DELIRA_HD DELIRA_INLINE std::int64_t flip_source_offset(const FlipGeometry& g, std::int64_t out_linear) {
  std::int64_t offset = 0;
  for (int d = g.ndim - 1; d >= 0; --d) {
    std::int64_t i = out_linear % g.shape[d];
    out_linear /= g.shape[d];
    if (g.flip[d]) i = g.shape[d] - 1 - i;
    offset += i * g.in_strides[d];
  }
  return offset;
}

// Validates a geometry built by a caller; throws std::invalid_argument naming the problem.
inline void check_flip_geometry(const FlipGeometry& g) {
  if (g.ndim < 1 || g.ndim > kMaxDims) {
    throw std::invalid_argument("flip: array has " + std::to_string(g.ndim) +
                                " dimensions; supported are 1 to " + std::to_string(kMaxDims));
  }
  for (int d = 0; d < g.ndim; ++d) {
    if (g.shape[d] < 0) {
      throw std::invalid_argument("flip: negative extent " + std::to_string(g.shape[d]) + " on axis " +
                                  std::to_string(d));
    }
  }
}

}  // namespace delira

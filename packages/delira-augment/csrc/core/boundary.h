// Border modes: how indices outside [0, n) are mapped, with the semantics of scipy.ndimage.
//   constant: a coordinate outside [0, n-1] on any axis gives cval; inside, taps beyond the edge
//             are mirrored (as scipy does for mode="constant").
//   nearest:  taps are clamped to the edge.
//   reflect:  half-sample symmetric extension  (d c b a | a b c d | d c b a).
//   mirror:   whole-sample symmetric extension (d c b | a b c d | c b a).
#pragma once

#include <cstdint>

#include "config.h"

namespace delira {

enum class BorderMode : int { Constant = 0, Nearest = 1, Reflect = 2, Mirror = 3 };

DELIRA_HD DELIRA_INLINE std::int64_t map_index(std::int64_t i, std::int64_t n, BorderMode mode) {
  if (i >= 0 && i < n) return i;
  if (n == 1) return 0;
  switch (mode) {
    case BorderMode::Nearest:
      return i < 0 ? 0 : n - 1;
    case BorderMode::Reflect: {
      const std::int64_t period = 2 * n;
      std::int64_t r = i % period;
      if (r < 0) r += period;
      return r < n ? r : period - 1 - r;
    }
    case BorderMode::Constant:  // taps of in-range coordinates: mirrored, as scipy
    case BorderMode::Mirror:
    default: {
      const std::int64_t period = 2 * n - 2;
      std::int64_t r = i % period;
      if (r < 0) r += period;
      return r < n ? r : period - r;
    }
  }
}

}  // namespace delira

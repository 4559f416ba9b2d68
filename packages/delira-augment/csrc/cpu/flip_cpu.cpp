#include "flip_cpu.h"

#include <algorithm>

#include "parallel.h"

namespace delira::cpu {
namespace {

template <typename T>
void flip_typed(const T* in, T* out, const FlipGeometry& g) {
  const std::int64_t total = g.numel();
  if (total == 0) return;
  // Rows along the last axis are copied with a fixed input step, everything else via the index map.
  const int last = g.ndim - 1;
  const std::int64_t row = g.shape[last];
  const std::int64_t rows = total / row;
  const std::int64_t step = g.flip[last] ? -g.in_strides[last] : g.in_strides[last];
  const std::int64_t chunk = std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(row, 1));
  parallel_for(rows, chunk, [&](std::int64_t begin, std::int64_t end, int) {
    for (std::int64_t r = begin; r < end; ++r) {
      const T* src = in + flip_source_offset(g, r * row);
      T* dst = out + r * row;
      for (std::int64_t i = 0; i < row; ++i) dst[i] = src[i * step];
    }
  });
}

}  // namespace

void flip(const void* in, void* out, DType dtype, const FlipGeometry& g) {
  check_flip_geometry(g);
  DELIRA_DISPATCH_DTYPE(dtype, [&] {
    flip_typed(static_cast<const scalar_t*>(in), static_cast<scalar_t*>(out), g);
  });
}

}  // namespace delira::cpu

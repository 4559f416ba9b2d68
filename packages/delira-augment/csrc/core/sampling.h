// Interpolation of a strided 2D/3D volume at a real-valued coordinate: nearest (order 0), linear
// (order 1) and cubic B-spline on prefiltered coefficients (order 3), with the border modes of
// boundary.h. Also the per-label linear interpolation + argmax used for segmentations.
#pragma once

#include <cstdint>

#include "boundary.h"
#include "bspline.h"
#include "config.h"

namespace delira {

// A 2D or 3D volume: pointer to element (0, 0[, 0]), extents and strides in elements.
template <typename T, int NDIM>
struct Volume {
  const T* data;
  std::int64_t shape[NDIM];
  std::int64_t stride[NDIM];
};

// floor for coordinates. On the host without SSE4.1 floorf is a library call, so it is computed by
// truncation instead; coordinates are clamped to +-1e9 first (far outside any volume either way).
DELIRA_HD DELIRA_INLINE float floor_f(float x) {
#if defined(__CUDA_ARCH__)
  return floorf(x);
#else
  x = x < -1e9f ? -1e9f : (x > 1e9f ? 1e9f : x);
  const float t = static_cast<float>(static_cast<std::int32_t>(x));
  return t > x ? t - 1.0f : t;
#endif
}

// Taps of one interpolation: per axis ORDER+1 element offsets and weights (tensor product).
template <int ORDER, int NDIM>
struct Taps {
  static constexpr int K = ORDER == 0 ? 1 : ORDER + 1;
  std::int64_t offset[NDIM][K];
  float weight[NDIM][K];
  bool outside;  // constant mode and the coordinate is outside the volume: the value is cval
};

// Computes the taps at coordinate x (in input voxel indices). For ORDER 3 the volume must hold
// B-spline coefficients (see the prefilter); `pad` shifts coordinates into a padded coefficient
// array (12 for mode nearest, as scipy) and `logical` holds the unpadded extents for the inside test.
template <int ORDER, int NDIM>
DELIRA_HD DELIRA_INLINE void compute_taps(const float* x, const std::int64_t* shape, const std::int64_t* stride,
                                          BorderMode mode, Taps<ORDER, NDIM>& taps, int pad = 0,
                                          const std::int64_t* logical = nullptr) {
  taps.outside = false;
  for (int d = 0; d < NDIM; ++d) {
    const std::int64_t n_logical = logical ? logical[d] : shape[d];
    if (mode == BorderMode::Constant && (x[d] < 0.0f || x[d] > static_cast<float>(n_logical - 1))) {
      taps.outside = true;
    }
  }
  if (taps.outside) return;
  for (int d = 0; d < NDIM; ++d) {
    const float xd = x[d] + static_cast<float>(pad);
    const std::int64_t n = shape[d];
    if (ORDER == 0) {
      const std::int64_t i = static_cast<std::int64_t>(floor_f(xd + 0.5f));
      taps.offset[d][0] = map_index(i, n, mode) * stride[d];
      taps.weight[d][0] = 1.0f;
    } else if (ORDER == 1) {
      const float f0 = floor_f(xd);
      const std::int64_t i = static_cast<std::int64_t>(f0);
      const float t = xd - f0;
      if (i >= 0 && i + 1 < n) {
        taps.offset[d][0] = i * stride[d];
        taps.offset[d][1] = (i + 1) * stride[d];
      } else {
        taps.offset[d][0] = map_index(i, n, mode) * stride[d];
        taps.offset[d][1] = map_index(i + 1, n, mode) * stride[d];
      }
      taps.weight[d][0] = 1.0f - t;
      taps.weight[d][1] = t;
    } else {
      const float f0 = floor_f(xd);
      const std::int64_t i = static_cast<std::int64_t>(f0);
      float w[4];
      cubic_bspline_weights(xd - f0, w);
      for (int k = 0; k < 4; ++k) {
        const std::int64_t j = i - 1 + k;
        taps.offset[d][k] = (j >= 0 && j < n ? j : map_index(j, n, mode)) * stride[d];
        taps.weight[d][k] = w[k];
      }
    }
  }
}

// Interpolated value of `data` with the taps (cval when outside). Acc is float or double.
template <typename Acc, int ORDER, int NDIM, typename T>
DELIRA_HD DELIRA_INLINE Acc gather(const T* data, const Taps<ORDER, NDIM>& taps, Acc cval) {
  if (taps.outside) return cval;
  constexpr int K = Taps<ORDER, NDIM>::K;
  if (NDIM == 2) {
    Acc acc = 0;
    for (int a = 0; a < K; ++a) {
      Acc row = 0;
      for (int b = 0; b < K; ++b) {
        row += static_cast<Acc>(taps.weight[1][b]) * static_cast<Acc>(data[taps.offset[0][a] + taps.offset[1][b]]);
      }
      acc += static_cast<Acc>(taps.weight[0][a]) * row;
    }
    return acc;
  } else {
    Acc acc = 0;
    for (int a = 0; a < K; ++a) {
      Acc plane = 0;
      for (int b = 0; b < K; ++b) {
        const std::int64_t base = taps.offset[0][a] + taps.offset[1][b];
        Acc row = 0;
        for (int c = 0; c < K; ++c) {
          row += static_cast<Acc>(taps.weight[2][c]) * static_cast<Acc>(data[base + taps.offset[2][c]]);
        }
        plane += static_cast<Acc>(taps.weight[1][b]) * row;
      }
      acc += static_cast<Acc>(taps.weight[0][a]) * plane;
    }
    return acc;
  }
}

// Label at the taps of a linear interpolation: the label whose one-hot indicator has the largest
// linearly interpolated value (ties: the smaller label), as resampling one-hot maps and taking
// the argmax. Outside (constant mode) gives cval.
template <typename L, int NDIM>
DELIRA_HD DELIRA_INLINE L gather_label_linear(const L* data, const Taps<1, NDIM>& taps, L cval) {
  if (taps.outside) return cval;
  constexpr int N = NDIM == 2 ? 4 : 8;
  L labels[N];
  float weights[N];
  int count = 0;
  for (int k = 0; k < N; ++k) {
    std::int64_t off = 0;
    float w = 1.0f;
    for (int d = 0; d < NDIM; ++d) {
      const int bit = (k >> (NDIM - 1 - d)) & 1;
      off += taps.offset[d][bit];
      w *= taps.weight[d][bit];
    }
    const L label = data[off];
    int j = 0;
    while (j < count && labels[j] != label) ++j;
    if (j == count) {
      labels[count] = label;
      weights[count] = w;
      ++count;
    } else {
      weights[j] += w;
    }
  }
  int best = 0;
  for (int j = 1; j < count; ++j) {
    if (weights[j] > weights[best] || (weights[j] == weights[best] && labels[j] < labels[best])) best = j;
  }
  return labels[best];
}

}  // namespace delira

// CPU executor: the fused resampling + intensity pass, the later statistics passes, the cubic
// B-spline prefilter and the separable gaussian filter.
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/gaussian.h"
#include "../core/moments.h"
#include "../core/prefilter.h"
#include "../core/program.h"
#include "../core/rng.h"
#include "../core/sampling.h"
#include "../core/spec.h"
#include "engine_isa.h"
#include "parallel.h"
#include "row_simd.h"
#include "stats.h"

// Row loops run on the pool of parallel.h in dynamically handed-out chunks of rows: each row's partial
// statistics are stored by row index and merged in a fixed order, so results stay independent of the
// thread count, and a thread slowed by other processes on its core does not hold the others up.
//
// This file is compiled once per instruction set (DELIRA_ISA names the namespace: isa_base,
// isa_avx2, isa_avx512); engine_dispatch.cpp picks the best one the CPU supports at run time.
#ifndef DELIRA_ISA
#define DELIRA_ISA isa_base
#endif

namespace delira::cpu::DELIRA_ISA {
namespace {

std::int64_t spatial_numel(const std::int64_t* shape, int sdim) {
  std::int64_t n = 1;
  for (int d = 0; d < sdim; ++d) n *= shape[d];
  return n;
}

// ---------------------------------------------------------------------------------------------
// Program bookkeeping (stage split, stream keys, noise counters: core/program.h).

std::vector<StageRange> split_stages(const Program& prog) {
  std::vector<StageRange> stages;
  const int count = stage_count(prog.kinds.data(), prog.n_ops());
  for (int s = 0; s < count; ++s) stages.push_back(program_stage(prog.kinds.data(), prog.n_ops(), s));
  return stages;
}

// Per-sample state of a program run: random keys per op and statistics per (channel, op).
struct ProgramState {
  const Program* prog;
  std::vector<StageRange> stages;
  std::int64_t n;                      // sample index
  std::vector<std::uint64_t> keys;     // per op
  std::vector<Stats> stats;            // (C, n_ops)
  int channels;

  ProgramState(const Program& p, std::int64_t sample, int c)
      : prog(&p), stages(split_stages(p)), n(sample), channels(c) {
    keys.resize(p.n_ops());
    for (int j = 0; j < p.n_ops(); ++j) {
      keys[j] = op_stream_key(p.seeds.data(), static_cast<std::int64_t>(p.seeds.size()), sample, j);
    }
    stats.resize(static_cast<std::size_t>(c) * p.n_ops());
  }

  const OpParams& params(int op) const { return prog->params[n * prog->n_ops() + op]; }
  Stats& stat(int c, int op) { return stats[static_cast<std::size_t>(c) * prog->n_ops() + op]; }

  // Whether the pass that runs stage s must accumulate statistics for stage s + 1.
  bool collects_after(std::size_t s) const {
    return stage_collects_moments(prog->kinds.data(), prog->n_ops(), static_cast<int>(s));
  }

  // Applies stage s to a row of values (the stats op at its head, then its pointwise ops).
  // counter0: noise counter of v[0] (core/program.h: noise_counter).
  template <typename V>
  void run_row(std::size_t s, int c, V* v, std::int64_t len, std::uint64_t counter0) {
    const StageRange& stage = stages[s];
    if (stage.head >= 0) {
      const int j = stage.head;
      const OpParams& q = params(j);
      if (q.active) run_head(prog->kinds[j], q, stat(c, j), stat(c, stats_target_op(prog->refs.data(), j)), v, len);
    }
    for (int j = stage.first_pointwise; j < stage.end; ++j) {
      const OpParams& q = params(j);
      if (!q.active) continue;
      // One loop per kind over the per-value functions of core/intensity.h, so that each vectorises.
      switch (prog->kinds[j]) {
        case OpKind::Noise:
          add_noise_row(v, len, counter0, keys[j], q.p[0]);
          break;
        case OpKind::Rician:
          add_rician_row(v, len, counter0, keys[j], q.p[0]);
          break;
        case OpKind::Multiply: {
          const V f = q.p[0];
          for (std::int64_t i = 0; i < len; ++i) v[i] = multiply_value(v[i], f);
        } break;
        case OpKind::Add: {
          const V a = q.p[0];
          for (std::int64_t i = 0; i < len; ++i) v[i] = add_value(v[i], a);
        } break;
        case OpKind::Clip: {
          const V lo = q.p[0], hi = q.p[1];
          for (std::int64_t i = 0; i < len; ++i) v[i] = clip_value(v[i], lo, hi);
        } break;
        default:
          break;
      }
    }
  }

  // A stats op over a row: coefficients once, then one loop per kind so that each vectorises.
  template <typename V>
  static void run_head(OpKind kind, const OpParams& q, const Stats& st, const Stats& target, V* v,
                       std::int64_t len) {
    switch (kind) {
      case OpKind::Gamma: {
        const GammaCoefficients k = gamma_coefficients(q, st);
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
        for (std::int64_t i = 0; i < len; ++i) v[i] = static_cast<V>(apply_gamma(k, static_cast<float>(v[i])));
      } break;
      case OpKind::RestoreStats: {
        const LinearMap<V> m = restore_stats_map<V>(q, st, target);
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
        for (std::int64_t i = 0; i < len; ++i) v[i] = apply_linear(m, v[i]);
      } break;
      case OpKind::ZScore: {
        const LinearMap<V> m = zscore_map<V>(q, st);
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
        for (std::int64_t i = 0; i < len; ++i) v[i] = apply_linear(m, v[i]);
      } break;
      case OpKind::Contrast: {
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
        for (std::int64_t i = 0; i < len; ++i) v[i] = static_cast<V>(contrast_value(q, st, static_cast<float>(v[i])));
      } break;
      case OpKind::ShiftMin: {
        const V lo = static_cast<V>(st.min);
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
        for (std::int64_t i = 0; i < len; ++i) v[i] = v[i] - lo;
      } break;
      default:
        for (std::int64_t i = 0; i < len; ++i) v[i] = apply_with_stats(kind, q, v[i], st, target);
        break;
    }
  }

  // v[i] += sigma * normal(counter0 + i), computing Box-Muller pairs once for two voxels.
  template <typename V>
  static void add_noise_row(V* v, std::int64_t len, std::uint64_t counter0, std::uint64_t key, float sigma) {
    std::int64_t i = 0;
    if (counter0 & 1) {  // the row starts with the second element of a pair
      v[0] = add_noise(v[0], sigma, random_normal(key, counter0));
      i = 1;
    }
    const std::uint64_t pair0 = (counter0 + i) >> 1;
    const std::int64_t pairs = (len - i) / 2;
    V* w = v + i;
    // Pieces of pairs whose counters share their upper 32 bits, so that the vector loop works on
    // 32-bit lanes only: the counter (hi << 32) | lo gives random_normal_pair the same value.
    for (std::int64_t p0 = 0; p0 < pairs;) {
      const std::uint64_t first = pair0 + static_cast<std::uint64_t>(p0);
      const std::uint32_t hi = static_cast<std::uint32_t>(first >> 32);
      const std::uint32_t lo0 = static_cast<std::uint32_t>(first);
      const std::int64_t to_wrap = static_cast<std::int64_t>(0x100000000ull - lo0);
      const std::int32_t n =
          static_cast<std::int32_t>(std::min<std::int64_t>(pairs - p0, std::min<std::int64_t>(to_wrap, 1 << 30)));
      V* u = w + 2 * p0;
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
      for (std::int32_t p = 0; p < n; ++p) {
        float z0, z1;
        const std::uint32_t lo = lo0 + static_cast<std::uint32_t>(p);
        random_normal_pair(key, (static_cast<std::uint64_t>(hi) << 32) | lo, &z0, &z1);
        u[2 * p] = add_noise(u[2 * p], sigma, z0);
        u[2 * p + 1] = add_noise(u[2 * p + 1], sigma, z1);
      }
      p0 += n;
    }
    if (i + 2 * pairs < len) v[len - 1] = add_noise(v[len - 1], sigma, random_normal(key, counter0 + len - 1));
  }

  // v[i] = |v[i] + sigma (z0 + i z1)| with both normal values from Box-Muller pair counter0 + i
  // (core/intensity.h: apply_pointwise).
  template <typename V>
  static void add_rician_row(V* v, std::int64_t len, std::uint64_t counter0, std::uint64_t key, float sigma) {
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
    for (std::int64_t i = 0; i < len; ++i) {
      float z0, z1;
      random_normal_pair(key, counter0 + static_cast<std::uint64_t>(i), &z0, &z1);
      v[i] = add_rician_noise(v[i], sigma, z0, z1);
    }
  }

  // Reduces row partials (C, rows) in order into the statistics of stage s + 1's head.
  void reduce(std::size_t s, const std::vector<RowAccumulator>& rows, std::int64_t rows_per_channel) {
    const int j = stages[s + 1].head;
    for (int c = 0; c < channels; ++c) {
      Moments m = empty_moments();
      for (std::int64_t r = 0; r < rows_per_channel; ++r) merge_moments(m, rows[c * rows_per_channel + r].moments());
      store_moments(m, stat(c, j));
    }
  }
};

// Statistics of a row of values.
template <typename V>
RowAccumulator accumulate(const V* v, std::int64_t len) {
  RowAccumulator acc;
  if (len == 0) return acc;
  if constexpr (std::is_same<V, float>::value && kHaveRowKernel) {
    // The explicit vector version of row_simd.h (the same sums, accumulated in another order).
    acc.shift = v[0];
    acc.n = len;
    row_sums(v, len, &acc.s1, &acc.s2, &acc.min, &acc.max);
    return acc;
  }
  const double shift = v[0];
  double s1 = 0.0, s2 = 0.0;
  V lo = v[0], hi = v[0];
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd reduction(+ : s1, s2) reduction(min : lo) reduction(max : hi)
#endif
  for (std::int64_t i = 0; i < len; ++i) {
    const double d = static_cast<double>(v[i]) - shift;
    s1 += d;
    s2 += d * d;
    lo = v[i] < lo ? v[i] : lo;
    hi = v[i] > hi ? v[i] : hi;
  }
  acc.shift = shift;
  acc.s1 = s1;
  acc.s2 = s2;
  acc.n = len;
  acc.min = static_cast<float>(lo);
  acc.max = static_cast<float>(hi);
  return acc;
}

// numpy.percentile (linear) of a copy of `values`.
float percentile(std::vector<float>& values, double pct) {
  const std::int64_t m = static_cast<std::int64_t>(values.size());
  if (m == 0) return 0.0f;
  const double pos = pct / 100.0 * static_cast<double>(m - 1);
  const std::int64_t lo = static_cast<std::int64_t>(std::floor(pos));
  const double frac = pos - static_cast<double>(lo);
  std::nth_element(values.begin(), values.begin() + lo, values.end());
  const float a = values[lo];
  if (frac == 0.0 || lo + 1 >= m) return a;
  const float b = *std::min_element(values.begin() + lo + 1, values.end());
  return static_cast<float>(a + frac * (static_cast<double>(b) - a));
}

// Runs stages 1.. of the program in place on one sample of a contiguous float buffer
// (C, numel), `rows` partials from the pass that produced the buffer.
template <typename T>
void run_later_stages(ProgramState& st, T* sample, std::int64_t numel, std::int64_t row_len,
                      std::vector<RowAccumulator>& rows) {
  const int C = st.channels;
  const std::int64_t rows_per_channel = numel / row_len;
  for (std::size_t s = 1; s < st.stages.size(); ++s) {
    const int head = st.stages[s].head;
    if (st.prog->kinds[head] == OpKind::PercentileClip) {
      const OpParams& q = st.params(head);
      for (int c = 0; c < C; ++c) {
        std::vector<float> values(sample + c * numel, sample + (c + 1) * numel);
        Stats& stat = st.stat(c, head);
        stat.lo = percentile(values, q.p[0]);
        stat.hi = percentile(values, q.p[1]);
      }
    } else {
      st.reduce(s - 1, rows, rows_per_channel);
    }
    const bool collect = st.collects_after(s);
    const std::int64_t total_rows = C * rows_per_channel;
    parallel_for(total_rows, 16, [&](std::int64_t begin, std::int64_t end, int) {
      for (std::int64_t r = begin; r < end; ++r) {
        const int c = static_cast<int>(r / rows_per_channel);
        T* row = sample + r * row_len;  // float32 / float64 rows are processed in place
        st.run_row(s, c, row, row_len, noise_counter(c, numel, (r - c * rows_per_channel) * row_len));
        if (collect) rows[r] = accumulate(row, row_len);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Cubic B-spline prefilter: copy with edge padding, then core/prefilter.h along every axis (mirror or
// reflect boundary).

// Coefficients of one (sample, channel): contiguous, padded by `pad` on every side (nearest mode).
template <typename T>
struct Coefficients {
  std::vector<T> values;
  std::int64_t shape[3] = {1, 1, 1};
  std::int64_t stride[3] = {0, 0, 0};
  int pad = 0;
};

template <typename T>
void prefilter(const T* src, const std::int64_t* src_shape, const std::int64_t* src_stride, int sdim,
               BorderMode mode, Coefficients<T>& out) {
  out.pad = mode == BorderMode::Nearest ? 12 : 0;
  std::int64_t total = 1;
  for (int d = 0; d < sdim; ++d) {
    out.shape[d] = src_shape[d] + 2 * out.pad;
    total *= out.shape[d];
  }
  std::int64_t step = 1;
  for (int d = sdim - 1; d >= 0; --d) {
    out.stride[d] = step;
    step *= out.shape[d];
  }
  out.values.assign(static_cast<std::size_t>(total), T(0));
  // Copy (with edge padding).
  const std::int64_t row = out.shape[sdim - 1];
  const std::int64_t rows = total / row;
  parallel_for(rows, 64, [&](std::int64_t begin, std::int64_t end, int) {
  for (std::int64_t r = begin; r < end; ++r) {
    std::int64_t rem = r;
    std::int64_t src_off = 0;
    for (int d = sdim - 2; d >= 0; --d) {
      const std::int64_t i = rem % out.shape[d];
      rem /= out.shape[d];
      const std::int64_t si = std::min(std::max<std::int64_t>(i - out.pad, 0), src_shape[d] - 1);
      src_off += si * src_stride[d];
    }
    T* dst = out.values.data() + r * row;
    const std::int64_t last = sdim - 1;
    for (std::int64_t i = 0; i < row; ++i) {
      const std::int64_t si = std::min(std::max<std::int64_t>(i - out.pad, 0), src_shape[last] - 1);
      dst[i] = src[src_off + si * src_stride[last]];
    }
  }
  });
  // Filter along every axis.
  for (int axis = 0; axis < sdim; ++axis) {
    const std::int64_t m = out.shape[axis];
    if (m < 2) continue;
    const std::int64_t lines = total / m;
    const std::int64_t stride = out.stride[axis];
    parallel_for(lines, 64, [&](std::int64_t begin, std::int64_t end, int) {
      std::vector<double> line(static_cast<std::size_t>(m));
      for (std::int64_t l = begin; l < end; ++l) {
        // Line l: all axes but `axis`, in C order.
        const std::int64_t inner = stride;  // product of extents after axis
        const std::int64_t outer_i = l / inner;
        const std::int64_t inner_i = l % inner;
        T* base = out.values.data() + outer_i * inner * m + inner_i;
        for (std::int64_t i = 0; i < m; ++i) line[i] = static_cast<double>(base[i * stride]);
        bspline_prefilter_line(line.data(), m, 1, mode == BorderMode::Reflect);
        for (std::int64_t i = 0; i < m; ++i) base[i * stride] = static_cast<T>(line[i]);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The fused pass.

// Block of the elastic field evaluation along a row (row_coordinates); the tap tables and the
// displacement buffer are padded by this many entries after the row.
constexpr std::int32_t kFieldBlock = 16;

// B-spline taps of the elastic grid along the last axis, as structure of arrays, cut into segments
// of output indices that share their first control point: within a segment the four control values
// are the same for every voxel, so the field is a vector loop of FMAs with broadcast values.
struct LastAxisTaps {
  struct Segment {
    std::int32_t begin, end, first;
  };
  std::vector<std::int32_t> first;
  std::vector<float> w[4];
  std::vector<Segment> segments;

  void assign(const std::vector<ControlTaps>& taps) {
    first.resize(taps.size());
    for (auto& v : w) v.assign(taps.size() + kFieldBlock, 0.0f);
    segments.clear();
    for (std::size_t i = 0; i < taps.size(); ++i) {
      first[i] = static_cast<std::int32_t>(taps[i].first);
      for (int k = 0; k < 4; ++k) w[k][i] = taps[i].w[k];
      const std::int32_t at = static_cast<std::int32_t>(i);
      if (segments.empty() || segments.back().first != first[i]) segments.push_back({at, at + 1, first[i]});
      else segments.back().end = at + 1;
    }
  }
};

template <int NDIM>
struct SampleGeometry {
  const LastAxisTaps* last_taps = nullptr;
  Affine<NDIM> affine;
  // Elastic control points of this sample, (NDIM, *grid_shape) or nullptr. The last axis is padded
  // with zeros to a multiple of 16 (grid_shape holds the padded extent, grid_last the real one), so
  // that the per-row contraction over the leading axes runs as whole vectors.
  const float* grid = nullptr;
  std::int64_t grid_shape[NDIM];
  std::int64_t grid_last = 0;
  std::int64_t out_shape[NDIM];
  const std::vector<ControlTaps>* taps[NDIM];  // per axis, per output index
};

// Per-thread buffers of one output row.
struct RowBuffers {
  std::vector<float> coord[3];      // input coordinates per axis (structure of arrays)
  std::vector<float> field;         // elastic field along the row's axis, per component
  std::vector<float> disp;          // elastic displacement of one component along the row (+ kFieldBlock)
  std::vector<float> values;        // one channel of data (float32 data)
  std::vector<double> values64;     // one channel of data (float64 data)
  std::vector<float> frac[3];       // linear interpolation: fractional parts
  std::vector<std::int64_t> base;   // linear: offset of the lower corner; nearest: offset or -1
  std::vector<std::int32_t> base32; // the same when every offset of the volume fits in 32 bits
  std::vector<std::uint8_t> kind;   // linear: 0 interior, 1 border (general path), 2 outside (cval)
  // Kernel path: rows prepared ahead (one is enough; 2 and 3 were measured no faster).
  static constexpr std::int64_t kPrefetchRows = 1;
  static constexpr std::int64_t kSlots = kPrefetchRows + 1;
  RowPlan plan[kSlots];                       // row_simd.h: sampling plans of the rows in flight
  std::vector<float> ring[kSlots][3];         // their coordinates (swapped with coord in use)

  void swap_coordinates(int slot) {
    for (int d = 0; d < 3; ++d) coord[d].swap(ring[slot][d]);
  }

  void resize(std::int64_t len) {
    for (auto& slot : ring) {
      for (auto& c : slot) c.resize(static_cast<std::size_t>(len));
    }
    for (auto& p : plan) p.resize(len);
    for (auto& c : coord) c.resize(static_cast<std::size_t>(len));
    for (auto& f : frac) f.resize(static_cast<std::size_t>(len));
    values.resize(static_cast<std::size_t>(len));
    values64.resize(static_cast<std::size_t>(len));
    base.resize(static_cast<std::size_t>(len));
    base32.resize(static_cast<std::size_t>(len));
    disp.resize(static_cast<std::size_t>(len + kFieldBlock));
    kind.resize(static_cast<std::size_t>(len));
  }

  template <typename I>
  I* offsets() {
    if constexpr (std::is_same<I, std::int32_t>::value) {
      return base32.data();
    } else {
      return base.data();
    }
  }
  template <typename I>
  const I* offsets() const {
    return const_cast<RowBuffers*>(this)->offsets<I>();
  }
};

// Whether every element offset sum_d i_d * stride_d (0 <= i_d < shape_d) of a volume, and that sum
// with one more stride per axis, fits in a 32-bit signed integer (the fast paths index in int32).
template <int NDIM>
bool offsets_fit_int32(const std::int64_t* shape, const std::int64_t* stride) {
  std::int64_t span = 0;
  for (int d = 0; d < NDIM; ++d) span += (shape[d] + 1) * (stride[d] < 0 ? -stride[d] : stride[d]);
  return span < (std::int64_t{1} << 31) - 1;
}

// core/geometry.h's contract_leading_axes over a whole padded grid line (k0 = 0, count = the padded
// extent, a multiple of 16), with the same arithmetic per value (f += w * src in the same order of
// taps), but blocks of 16 values accumulate in registers instead of in memory.
#if defined(__GNUC__)
// 16 floats as one value (GCC/Clang vector extension: one or more registers of the target ISA;
// a += w * b compiles lane by lane as the scalar expression does, FMA contraction included).
typedef float Float16 __attribute__((vector_size(64)));
#endif

template <int NDIM>
void contract_leading_axes_blocked(const float* G, const std::int64_t* grid_shape, const ControlTaps* lead, float* f) {
  const std::int64_t gl = grid_shape[NDIM - 1];
  for (std::int64_t k0 = 0; k0 < gl; k0 += 16) {
#if defined(__GNUC__)
    Float16 acc = {};
    auto add = [&acc](float w, const float* src) {
      Float16 v;
      std::memcpy(&v, src, sizeof v);
      acc += w * v;
    };
#else
    float acc[16] = {};
    auto add = [&acc](float w, const float* src) {
      for (int k = 0; k < 16; ++k) acc[k] += w * src[k];
    };
#endif
    if constexpr (NDIM == 3) {
      for (int a = 0; a < 4; ++a) {
        for (int b = 0; b < 4; ++b) {
          const float w = lead[0].w[a] * lead[1].w[b];
          add(w, G + ((lead[0].first + a) * grid_shape[1] + (lead[1].first + b)) * gl + k0);
        }
      }
    } else {
      for (int a = 0; a < 4; ++a) add(lead[0].w[a], G + (lead[0].first + a) * gl + k0);
    }
    std::memcpy(f + k0, &acc, sizeof acc);
  }
}

// Input coordinates of one output row (all leading indices fixed) into buf.coord.
template <int NDIM>
void row_coordinates(const SampleGeometry<NDIM>& g, std::int64_t row, RowBuffers& buf) {
  std::int64_t lead[NDIM] = {};
  std::int64_t rem = row;
  for (int d = NDIM - 2; d >= 0; --d) {
    lead[d] = rem % g.out_shape[d];
    rem /= g.out_shape[d];
  }
  const std::int64_t len = g.out_shape[NDIM - 1];
  if constexpr (kHaveRowCoordinates) {
    // AVX-512: affine part and elastic field in one pass, the field's control values (up to 32 along
    // the row's axis) picked per lane by a permute instead of segment by segment.
    if (g.grid == nullptr || g.grid_shape[NDIM - 1] <= 32) {
      float start[NDIM], step[NDIM];
      float* c[NDIM];
      for (int d = 0; d < NDIM; ++d) {
        start[d] = row_start_coordinate<NDIM>(g.affine.a[d], g.affine.b[d], lead);
        step[d] = g.affine.a[d][NDIM - 1];
        c[d] = buf.coord[d].data();
      }
      const float* field = nullptr;
      const float* w[4] = {nullptr, nullptr, nullptr, nullptr};
      const std::int32_t* first = nullptr;
      if (g.grid != nullptr) {
        const std::int64_t gl = g.grid_shape[NDIM - 1];
        std::int64_t grid_numel = 1;
        for (int d = 0; d < NDIM; ++d) grid_numel *= g.grid_shape[d];
        ControlTaps lead_taps[NDIM - 1];
        for (int d = 0; d < NDIM - 1; ++d) lead_taps[d] = (*g.taps[d])[lead[d]];
        if (buf.field.size() != static_cast<std::size_t>(NDIM * 32)) {
          buf.field.assign(static_cast<std::size_t>(NDIM * 32), 0.0f);
        }
        for (int comp = 0; comp < NDIM; ++comp) {
          contract_leading_axes_blocked<NDIM>(g.grid + comp * grid_numel, g.grid_shape, lead_taps,
                                              buf.field.data() + comp * 32);
          if (gl == 16) std::fill(buf.field.begin() + comp * 32 + 16, buf.field.begin() + comp * 32 + 32, 0.0f);
        }
        field = buf.field.data();
        for (int k = 0; k < 4; ++k) w[k] = g.last_taps->w[k].data();
        first = g.last_taps->first.data();
      }
      row_coordinates16(c, NDIM, static_cast<std::int32_t>(len), start, step, field, first, w);
      return;
    }
  }
  for (int d = 0; d < NDIM; ++d) {
    const float start = row_start_coordinate<NDIM>(g.affine.a[d], g.affine.b[d], lead);
    const float step = g.affine.a[d][NDIM - 1];
    float* c = buf.coord[d].data();
    const std::int32_t n32 = static_cast<std::int32_t>(len);
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
    for (std::int32_t i = 0; i < n32; ++i) c[i] = row_step_coordinate(start, step, i);  // int32: vector cvt
  }
  if (g.grid == nullptr) return;
  // Field along the last axis for this row: contract the leading axes' B-spline taps.
  const std::int64_t gl = g.grid_shape[NDIM - 1];  // padded extent
  if (buf.field.size() != static_cast<std::size_t>(NDIM * gl)) buf.field.resize(static_cast<std::size_t>(NDIM * gl));
  std::int64_t grid_numel = 1;
  for (int d = 0; d < NDIM; ++d) grid_numel *= g.grid_shape[d];
  ControlTaps lead_taps[NDIM - 1];
  for (int d = 0; d < NDIM - 1; ++d) lead_taps[d] = (*g.taps[d])[lead[d]];
  for (int comp = 0; comp < NDIM; ++comp) {
    contract_leading_axes_blocked<NDIM>(g.grid + comp * grid_numel, g.grid_shape, lead_taps,
                                        buf.field.data() + comp * gl);
  }
  // Along the row, segment by segment: the four control values are broadcast within a segment. Every
  // segment is evaluated in whole blocks of kFieldBlock voxels into buf.disp, running past its end
  // into the next segment (which overwrites those values) or into the padding after the row, so no
  // loop has a remainder; then the displacement is added to the coordinates.
  const LastAxisTaps& tx = *g.last_taps;
  const float *w0 = tx.w[0].data(), *w1 = tx.w[1].data(), *w2 = tx.w[2].data(), *w3 = tx.w[3].data();
  float* e = buf.disp.data();
  for (int comp = 0; comp < NDIM; ++comp) {
    const float* f = buf.field.data() + comp * gl;
    for (const LastAxisTaps::Segment& seg : tx.segments) {
      const float tap[4] = {f[seg.first], f[seg.first + 1], f[seg.first + 2], f[seg.first + 3]};
      for (std::int32_t i0 = seg.begin; i0 < seg.end; i0 += kFieldBlock) {
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
        for (std::int32_t i = i0; i < i0 + kFieldBlock; ++i) e[i] = contract_last_axis(tap, w0[i], w1[i], w2[i], w3[i]);
      }
    }
    float* c = buf.coord[comp].data();
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
    for (std::int32_t i = 0; i < static_cast<std::int32_t>(len); ++i) c[i] += e[i];
  }
}

// Data of one sample: per-channel base pointers into the input (orders 0/1) or coefficients (3).
template <typename T, int NDIM>
struct DataSource {
  std::vector<const T*> channel;
  std::int64_t shape[NDIM];
  std::int64_t stride[NDIM];
  std::int64_t logical[NDIM];
  int pad = 0;
  bool fits32 = false;  // offsets_fit_int32: the linear path indexes in int32
};

// Linear interpolation of one row: classify voxels once (vectorised), then gather every channel.
// Interior voxels (all eight corners inside) take the fast path; the others the general one.
template <typename T, int NDIM, typename I>
void prepare_linear(const DataSource<T, NDIM>& src, RowBuffers& buf, std::int64_t len, BorderMode mode) {
  bool fast_ok = true;
  for (int d = 0; d < NDIM; ++d) fast_ok = fast_ok && src.shape[d] >= 2;
  const bool constant = mode == BorderMode::Constant;
  const float* cx[NDIM];
  float* fr[NDIM];
  float upper[NDIM];
  std::int32_t last[NDIM];
  I stride[NDIM];
  for (int d = 0; d < NDIM; ++d) {
    cx[d] = buf.coord[d].data();
    fr[d] = buf.frac[d].data();
    upper[d] = static_cast<float>(src.shape[d] - 1);
    last[d] = static_cast<std::int32_t>(std::min<std::int64_t>(src.shape[d] - 2, 1 << 30));
    stride[d] = static_cast<I>(src.stride[d]);
  }
  I* base = buf.offsets<I>();
  std::uint8_t* kind = buf.kind.data();
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
  for (std::int64_t i = 0; i < len; ++i) {
    bool interior = fast_ok, outside = false;
    I off = 0;
    for (int d = 0; d < NDIM; ++d) {
      const float x = cx[d][i];
      float xc = x < -1e9f ? -1e9f : x;
      xc = xc > 1e9f ? 1e9f : xc;
      std::int32_t k = static_cast<std::int32_t>(xc);  // floor by truncation and correction
      k -= (static_cast<float>(k) > xc) ? 1 : 0;
      fr[d][i] = x - static_cast<float>(k);
      const bool in = (k >= 0) & (k <= last[d]);
      interior = interior & in;  // bitwise: no branches in the vector loop
      outside = outside | (x < 0.0f) | (x > upper[d]);
      off += static_cast<I>(in ? k : 0) * stride[d];  // in range: no overflow in I
    }
    base[i] = interior ? off : 0;  // non-interior voxels load from a safe place and are redone below
    kind[i] = (constant & outside) ? 2 : (interior ? 0 : 1);
  }
}

template <typename T, int NDIM, typename I>
void gather_linear(const DataSource<T, NDIM>& src, const T* data, const RowBuffers& buf, std::int64_t len,
                   BorderMode mode, T cval, T* out) {
  using Acc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const I s0 = static_cast<I>(src.stride[0]), s1 = static_cast<I>(src.stride[1]);
  const I s2 = NDIM == 3 ? static_cast<I>(src.stride[2]) : 0;
  const I* base = buf.offsets<I>();
  const float* f0 = buf.frac[0].data();
  const float* f1 = buf.frac[1].data();
  const float* f2 = buf.frac[NDIM - 1].data();
  // The vector loop reads all eight corners of every voxel; non-interior voxels read the corners of
  // voxel (0, 0, 0), which exist only when every axis has at least two elements.
  bool fast_ok = true;
  for (int d = 0; d < NDIM; ++d) fast_ok = fast_ok && src.shape[d] >= 2;
  const std::int64_t vec_len = fast_ok ? len : 0;
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
  for (std::int64_t i = 0; i < vec_len; ++i) {
    const T* p = data + base[i];
    if constexpr (NDIM == 3) {
      const Acc fz = f0[i], fy = f1[i], fx = f2[i];
      const Acc v000 = p[0], v001 = p[s2], v010 = p[s1], v011 = p[s1 + s2];
      const Acc v100 = p[s0], v101 = p[s0 + s2], v110 = p[s0 + s1], v111 = p[s0 + s1 + s2];
      const Acc c00 = v000 + fx * (v001 - v000);
      const Acc c01 = v010 + fx * (v011 - v010);
      const Acc c10 = v100 + fx * (v101 - v100);
      const Acc c11 = v110 + fx * (v111 - v110);
      const Acc c0 = c00 + fy * (c01 - c00);
      const Acc c1 = c10 + fy * (c11 - c10);
      out[i] = static_cast<T>(c0 + fz * (c1 - c0));
    } else {
      const Acc fy = f0[i], fx = f1[i];
      const Acc v00 = p[0], v01 = p[s1], v10 = p[s0], v11 = p[s0 + s1];
      const Acc c0 = v00 + fx * (v01 - v00);
      const Acc c1 = v10 + fx * (v11 - v10);
      out[i] = static_cast<T>(c0 + fy * (c1 - c0));
    }
  }
  // Voxels at the border (general taps) or outside (cval).
  Taps<1, NDIM> taps;
  for (std::int64_t i = 0; i < len; ++i) {
    if (buf.kind[i] == 0) continue;
    if (buf.kind[i] == 2) {
      out[i] = cval;
      continue;
    }
    float x[NDIM];
    for (int d = 0; d < NDIM; ++d) x[d] = buf.coord[d][i];
    compute_taps<1, NDIM>(x, src.shape, src.stride, mode, taps);
    out[i] = static_cast<T>(gather<Acc, 1, NDIM>(data, taps, static_cast<Acc>(cval)));
  }
}

// Orders 0 and 3 (and anything else): the general per-voxel path.
template <typename T, int NDIM, int ORDER>
void gather_general(const DataSource<T, NDIM>& src, const T* data, const RowBuffers& buf, std::int64_t len,
                    BorderMode mode, T cval, T* out) {
  using Acc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  Taps<ORDER, NDIM> taps;
  for (std::int64_t i = 0; i < len; ++i) {
    float x[NDIM];
    for (int d = 0; d < NDIM; ++d) x[d] = buf.coord[d][i];
    compute_taps<ORDER, NDIM>(x, src.shape, src.stride, mode, taps, src.pad, src.logical);
    out[i] = static_cast<T>(gather<Acc, ORDER, NDIM>(data, taps, static_cast<Acc>(cval)));
  }
}

// Stage 0 of the program on the sampled values v of channel c of a row, then into the output and
// the row's statistics.
template <typename T>
void finish_channel_row(ProgramState& st, int c, T* v, std::int64_t len, T* out, std::int64_t numel,
                        std::int64_t row, bool collect, RowAccumulator* accs) {
  st.run_row(0, c, v, len, noise_counter(c, numel, row * len));
  std::copy(v, v + len, out + c * numel + row * len);
  if (collect) accs[c] = accumulate(v, len);
}

template <typename T, int NDIM>
void data_row(const DataSource<T, NDIM>& src, int order, RowBuffers& buf, std::int64_t len, BorderMode mode, T cval,
              ProgramState& st, T* out, std::int64_t numel, std::int64_t row, bool collect, RowAccumulator* accs) {
  const int C = static_cast<int>(src.channel.size());
  if (order == 1) {
    if (src.fits32) prepare_linear<T, NDIM, std::int32_t>(src, buf, len, mode);
    else prepare_linear<T, NDIM, std::int64_t>(src, buf, len, mode);
  }
  T* v;
  if constexpr (std::is_same<T, double>::value) {
    v = buf.values64.data();
  } else {
    v = buf.values.data();
  }
  for (int c = 0; c < C; ++c) {
    switch (order) {
      case 0: gather_general<T, NDIM, 0>(src, src.channel[c], buf, len, mode, cval, v); break;
      case 1:
        if (src.fits32) gather_linear<T, NDIM, std::int32_t>(src, src.channel[c], buf, len, mode, cval, v);
        else gather_linear<T, NDIM, std::int64_t>(src, src.channel[c], buf, len, mode, cval, v);
        break;
      default: gather_general<T, NDIM, 3>(src, src.channel[c], buf, len, mode, cval, v); break;
    }
    finish_channel_row(st, c, v, len, out, numel, row, collect, accs);
  }
}

// Nearest-neighbour offsets of a row (vectorised): base[i] the element offset of the nearest voxel,
// kind[i] 0 (inside), 1 (index outside: the border rule is applied in the fix-up loop) or 2 (outside
// in constant mode: cval). Returns whether any voxel has kind 1.
template <int NDIM, typename I>
bool prepare_nearest(const std::int64_t* shape, const std::int64_t* stride, BorderMode mode, RowBuffers& buf,
                     std::int64_t len) {
  const bool constant = mode == BorderMode::Constant;
  I* base = buf.offsets<I>();
  std::uint8_t* kind = buf.kind.data();
  float upper[NDIM];
  std::int32_t n32[NDIM];
  I st[NDIM];
  const float* cx[NDIM];
  for (int d = 0; d < NDIM; ++d) {
    upper[d] = static_cast<float>(shape[d] - 1);
    n32[d] = static_cast<std::int32_t>(std::min<std::int64_t>(shape[d], 1 << 30));
    st[d] = static_cast<I>(stride[d]);
    cx[d] = buf.coord[d].data();
  }
  int border = 0;
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd reduction(| : border)
#endif
  for (std::int64_t i = 0; i < len; ++i) {
    I off = 0;
    bool outside = false, inside_idx = true;
    for (int d = 0; d < NDIM; ++d) {
      const float x = cx[d][i];
      outside = outside | (x < 0.0f) | (x > upper[d]);
      float xc = x + 0.5f;
      xc = xc < -1e9f ? -1e9f : xc;
      xc = xc > 1e9f ? 1e9f : xc;
      std::int32_t k = static_cast<std::int32_t>(xc);
      k -= (static_cast<float>(k) > xc) ? 1 : 0;
      const bool in = (k >= 0) & (k < n32[d]);
      inside_idx = inside_idx & in;
      off += static_cast<I>(in ? k : 0) * st[d];  // in range: no overflow in I
    }
    base[i] = inside_idx ? off : 0;
    const bool cv = constant & outside;
    kind[i] = cv ? 2 : (inside_idx ? 0 : 1);
    border |= (!cv & !inside_idx) ? 1 : 0;
  }
  if (border == 0) return false;
  for (std::int64_t i = 0; i < len; ++i) {
    if (kind[i] != 1) continue;
    std::int64_t off = 0;
    for (int d = 0; d < NDIM; ++d) {
      const std::int64_t k = static_cast<std::int64_t>(floor_f(buf.coord[d][i] + 0.5f));
      off += map_index(k, shape[d], mode) * stride[d];
    }
    base[i] = static_cast<I>(off);
    kind[i] = 0;
  }
  return true;
}

// Labels of one row, nearest neighbour: dst[i] = src[base[i]], or cval where kind[i] == 2.
template <typename L, typename I>
void copy_labels(const L* src, const I* base, const std::uint8_t* kind, std::int64_t len, L cval, L* dst) {
  for (std::int64_t i = 0; i < len; ++i) {
    const L v = src[base[i]];  // base is 0 (a valid element) where kind is 2
    dst[i] = kind[i] == 2 ? cval : v;
  }
}

// One segmentation of a sample: per-channel base pointers, extents and strides.
template <typename L, int NDIM>
struct LabelSource {
  std::vector<const L*> channel;
  const std::int64_t* shape = nullptr;
  const std::int64_t* stride = nullptr;
  bool fits32 = false;
  L* out = nullptr;  // (C, numel) output of the sample
};

template <typename L, int NDIM>
void seg_row(const LabelSource<L, NDIM>& src, int order, RowBuffers& buf, std::int64_t len, BorderMode mode, L cval,
             std::int64_t numel, std::int64_t row) {
  const int C = static_cast<int>(src.channel.size());
  const std::int64_t row_offset = row * len;
  if (order == 0) {
    // Offsets once, then every channel.
    if (src.fits32) {
      prepare_nearest<NDIM, std::int32_t>(src.shape, src.stride, mode, buf, len);
      for (int c = 0; c < C; ++c) {
        copy_labels(src.channel[c], buf.base32.data(), buf.kind.data(), len, cval, src.out + c * numel + row_offset);
      }
    } else {
      prepare_nearest<NDIM, std::int64_t>(src.shape, src.stride, mode, buf, len);
      for (int c = 0; c < C; ++c) {
        copy_labels(src.channel[c], buf.base.data(), buf.kind.data(), len, cval, src.out + c * numel + row_offset);
      }
    }
    return;
  }
  Taps<1, NDIM> taps;
  for (std::int64_t i = 0; i < len; ++i) {
    float x[NDIM];
    for (int d = 0; d < NDIM; ++d) x[d] = buf.coord[d][i];
    compute_taps<1, NDIM>(x, src.shape, src.stride, mode, taps);
    for (int c = 0; c < C; ++c) {
      src.out[c * numel + row_offset + i] = gather_label_linear<L, NDIM>(src.channel[c], taps, cval);
    }
  }
}

// The segmentation of sample n, for any label dtype.
template <int NDIM>
struct SegSource {
  LabelSource<std::uint8_t, NDIM> u8;
  LabelSource<std::int16_t, NDIM> i16;
  LabelSource<std::int32_t, NDIM> i32;
  LabelSource<std::int64_t, NDIM> i64;
  DType dtype = DType::Int16;

  template <typename L>
  static void bind(LabelSource<L, NDIM>& s, const ArrayRef& seg, const OutRef& seg_out, std::int64_t n,
                   std::int64_t numel) {
    const int C = static_cast<int>(seg.shape[1]);
    const L* base = static_cast<const L*>(seg.data) + n * seg.stride[0];
    s.channel.resize(C);
    for (int c = 0; c < C; ++c) s.channel[c] = base + c * seg.stride[1];
    s.shape = seg.shape + 2;
    s.stride = seg.stride + 2;
    s.fits32 = offsets_fit_int32<NDIM>(s.shape, s.stride);
    s.out = static_cast<L*>(seg_out.data) + n * C * numel;
  }

  SegSource(const ArrayRef& seg, const OutRef& seg_out, std::int64_t n, std::int64_t numel) : dtype(seg.dtype) {
    switch (seg.dtype) {
      case DType::UInt8: bind(u8, seg, seg_out, n, numel); break;
      case DType::Int16: bind(i16, seg, seg_out, n, numel); break;
      case DType::Int32: bind(i32, seg, seg_out, n, numel); break;
      case DType::Int64: bind(i64, seg, seg_out, n, numel); break;
      default: throw std::invalid_argument("seg must have dtype uint8, int16, int32 or int64");
    }
  }

  // Calls f(source) with the LabelSource of the segmentation's dtype.
  template <typename F>
  void visit(F&& f) const {
    switch (dtype) {
      case DType::UInt8: f(u8); break;
      case DType::Int16: f(i16); break;
      case DType::Int32: f(i32); break;
      default: f(i64); break;
    }
  }

  // One row of the portable path (seg_row) for the segmentation's dtype.
  void row(const SpatialSpec& spec, RowBuffers& buf, std::int64_t len, std::int64_t r, std::int64_t numel) const {
    visit([&](const auto& src) {
      using L = std::remove_cv_t<std::remove_pointer_t<decltype(src.out)>>;
      seg_row<L, NDIM>(src, spec.order_seg, buf, len, spec.mode_seg, static_cast<L>(spec.cval_seg), numel, r);
    });
  }
};

// ---------------------------------------------------------------------------------------------
// The fused row with the explicit SIMD kernel of row_simd.h: float32 image with linear
// interpolation and/or labels with nearest neighbour, 32-bit offsets, the image's last axis
// contiguous. Voxels at the border (taps chosen by the border rule) take the general path after.

template <int NDIM>
bool image_takes_kernel(const DataSource<float, NDIM>& src, int order) {
  bool ok = kHaveRowKernel && order == 1 && src.fits32 && src.stride[NDIM - 1] == 1;
  for (int d = 0; d < NDIM; ++d) ok = ok && src.shape[d] >= 2;
  return ok;
}

template <typename L, int NDIM>
bool labels_take_kernel(const LabelSource<L, NDIM>& src, int order) {
  return kHaveRowKernel && order == 0 && src.fits32;
}

// Small per-row pointer tables (one entry per channel) without allocating for up to 8 channels.
template <typename P>
struct ChannelTable {
  P fixed[8];
  std::vector<P> more;
  P* data(int n) {
    if (n <= 8) return fixed;
    more.resize(static_cast<std::size_t>(n));
    return more.data();
  }
};

template <int NDIM>
LinearRowArgs linear_row_args(const DataSource<float, NDIM>& src, BorderMode mode, float cval) {
  LinearRowArgs a;
  a.channel = src.channel.data();
  a.channels = static_cast<int>(src.channel.size());
  for (int d = 0; d < NDIM; ++d) {
    a.stride[d] = static_cast<std::int32_t>(src.stride[d]);
    a.last[d] = static_cast<std::int32_t>(src.shape[d] - 2);
    a.upper[d] = static_cast<float>(src.shape[d] - 1);
  }
  a.constant = mode == BorderMode::Constant;
  a.cval = cval;
  return a;
}

template <typename L, int NDIM>
NearestRowArgs<L> nearest_row_args(const LabelSource<L, NDIM>& src, BorderMode mode, L cval) {
  NearestRowArgs<L> b;
  b.channel = src.channel.data();
  b.channels = static_cast<int>(src.channel.size());
  for (int d = 0; d < NDIM; ++d) {
    b.stride[d] = static_cast<std::int32_t>(src.stride[d]);
    b.extent[d] = static_cast<std::int32_t>(src.shape[d]);
    b.upper[d] = static_cast<float>(src.shape[d] - 1);
  }
  b.constant = mode == BorderMode::Constant;
  b.cval = cval;
  // Byte extent of a channel in memory: offsets from the channel pointer lie in [lo, hi] elements.
  std::int64_t lo = 0, hi = 0;
  for (int d = 0; d < NDIM; ++d) (src.stride[d] < 0 ? lo : hi) += (src.shape[d] - 1) * src.stride[d];
  const std::int64_t size = static_cast<std::int64_t>(sizeof(L));
  const std::int64_t int32_max = (std::int64_t{1} << 31) - 1;
  b.gather_words = sizeof(L) <= 2 && (hi - lo + 1) * size >= 4 && (hi + 1) * size <= int32_max &&
                   lo * size >= -int32_max;  // byte offsets in 32 bits
  b.limit = static_cast<std::int32_t>((hi + 1) * size - 4);
  return b;
}

// One row through the kernel, whose plan (prepare_row) is ready: image (when `image`) and labels
// (when `labels`); then the border voxels by the general path and stage 0 of the program.
template <int NDIM, typename L, typename T>
void kernel_row(const DataSource<T, NDIM>* image, const LinearRowArgs* image_args,
                const LabelSource<L, NDIM>* labels, const NearestRowArgs<L>* label_args, const RowPlan& plan,
                const SpatialSpec& spec, RowBuffers& buf, std::int64_t len, std::int64_t row, std::int64_t numel,
                ProgramState& st, T* out, bool collect, RowAccumulator* accs) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "float data");
  if constexpr (!std::is_same<T, float>::value) image = nullptr;  // the kernel samples float32 images only
  LinearRowArgs a;
  NearestRowArgs<L> b;
  ChannelTable<float*> image_out;
  ChannelTable<L*> label_out;
  if constexpr (std::is_same<T, float>::value) {
  if (image) {
    a = *image_args;
    float** outs = image_out.data(a.channels);
    for (int c = 0; c < a.channels; ++c) outs[c] = out + c * numel + row * len;  // sampled into the output row
    a.out = outs;
  }
  }
  if (labels) {
    b = *label_args;
    L** outs = label_out.data(b.channels);
    for (int c = 0; c < b.channels; ++c) outs[c] = labels->out + c * numel + row * len;
    b.out = outs;
  }
  gather_row<NDIM, L>(static_cast<std::int32_t>(len), image ? &a : nullptr, labels ? &b : nullptr, plan);
  if constexpr (std::is_same<T, float>::value) {
  if (image) {
    // Border voxels: the general taps (border rule of core/sampling.h), every channel.
    Taps<1, NDIM> taps;
    for (std::int32_t j = 0; j < plan.n_border; ++j) {
      const std::int32_t i = plan.border[j];
      float x[NDIM];
      for (int d = 0; d < NDIM; ++d) x[d] = buf.coord[d][i];
      compute_taps<1, NDIM>(x, image->shape, image->stride, spec.mode_data, taps);
      for (int c = 0; c < a.channels; ++c) a.out[c][i] = gather<float, 1, NDIM>(image->channel[c], taps, a.cval);
    }
    for (int c = 0; c < a.channels; ++c) {
      // Stage 0 of the program in place on the output row (still in L1), and its statistics.
      st.run_row(0, c, a.out[c], len, noise_counter(c, numel, row * len));
      if (collect) accs[c] = accumulate(a.out[c], len);
    }
  }
  }
  if (labels) {
    for (std::int32_t j = 0; j < plan.n_label_border; ++j) {
      const std::int32_t i = plan.label_border[j];
      std::int64_t off = 0;
      for (int d = 0; d < NDIM; ++d) {
        const std::int64_t k = static_cast<std::int64_t>(floor_f(buf.coord[d][i] + 0.5f));
        off += map_index(k, labels->shape[d], spec.mode_seg) * labels->stride[d];
      }
      for (int c = 0; c < b.channels; ++c) b.out[c][i] = labels->channel[c][off];
    }
  }
}

// The plan of the row whose coordinates are in buf.coord (image and labels in one pass when they
// share the spatial shape).
template <int NDIM, typename L>
void prepare_kernel_row(const LinearRowArgs* image_args, const NearestRowArgs<L>* label_args, bool same_shape,
                        RowBuffers& buf, std::int64_t len, RowPlan& plan, bool prefetch) {
  const float* coord[NDIM];
  for (int d = 0; d < NDIM; ++d) coord[d] = buf.coord[d].data();
  const std::int32_t n = static_cast<std::int32_t>(len);
  if (image_args && label_args && !same_shape) {
    prepare_row<NDIM, L>(coord, n, image_args, nullptr, plan, prefetch);
    prepare_row<NDIM, L>(coord, n, nullptr, label_args, plan, prefetch);
  } else {
    prepare_row<NDIM, L>(coord, n, image_args, label_args, plan, prefetch);
  }
}

// Rows of the fused pass handed to a thread at a time: large chunks keep the kernel path's prefetch
// pipeline running (it restarts at every chunk; 128 rows measured faster than 32), but at least 8
// chunks per thread keep the threads balanced.
std::int64_t row_chunk(std::int64_t rows, int threads) {
  return std::max<std::int64_t>(16, std::min<std::int64_t>(128, rows / (8 * std::max(threads, 1))));
}

template <typename T, int NDIM>
void resample_typed(const ArrayRef& data, const OutRef& out, const ArrayRef& seg, const OutRef& seg_out,
                    const SpatialSpec& spec, const Program& prog) {
  const bool has_data = data.data != nullptr;
  const bool has_seg = seg.data != nullptr;
  const std::int64_t N = has_data ? data.shape[0] : seg.shape[0];
  const int C = has_data ? static_cast<int>(data.shape[1]) : 0;
  const std::int64_t numel = spatial_numel(spec.out_shape, NDIM);
  const std::int64_t len = spec.out_shape[NDIM - 1];
  const std::int64_t rows_per_sample = numel / std::max<std::int64_t>(len, 1);
  if (numel == 0 || N == 0) return;

  const bool elastic = !spec.elastic.empty();
  std::vector<ControlTaps> taps[NDIM];
  LastAxisTaps last_taps;
  std::int64_t grid_numel = 1;
  const std::int64_t grid_last = spec.grid[NDIM - 1];
  const std::int64_t grid_padded = (grid_last + 15) / 16 * 16;
  std::vector<float> padded_grid;
  if (elastic) {
    for (int d = 0; d < NDIM; ++d) grid_numel *= spec.grid[d];
    padded_grid.assign(static_cast<std::size_t>(NDIM * grid_numel / grid_last * grid_padded), 0.0f);
  }

  for (std::int64_t n = 0; n < N; ++n) {
    SampleGeometry<NDIM> g;
    for (int d = 0; d < NDIM; ++d) {
      for (int e = 0; e < NDIM; ++e) g.affine.a[d][e] = spec.affine[(n * NDIM + d) * (NDIM + 1) + e];
      g.affine.b[d] = spec.affine[(n * NDIM + d) * (NDIM + 1) + NDIM];
      g.out_shape[d] = spec.out_shape[d];
      g.grid_shape[d] = d == NDIM - 1 ? grid_padded : spec.grid[d];
      g.taps[d] = &taps[d];
    }
    g.grid_last = grid_last;
    g.grid = nullptr;
    if (elastic) {
      const float* values = spec.elastic.data() + n * NDIM * grid_numel;
      const std::int64_t lines = NDIM * grid_numel / grid_last;
      for (std::int64_t l = 0; l < lines; ++l) {
        std::copy(values + l * grid_last, values + (l + 1) * grid_last, padded_grid.data() + l * grid_padded);
      }
      g.grid = padded_grid.data();
      // B-spline taps of this sample's control grid along each axis.
      for (int d = 0; d < NDIM; ++d) {
        const float origin = spec.grid_origin[n * NDIM + d];
        const float inv_spacing = 1.0f / spec.grid_spacing[n * NDIM + d];
        taps[d].resize(static_cast<std::size_t>(spec.out_shape[d]));
        for (std::int64_t o = 0; o < spec.out_shape[d]; ++o) {
          taps[d][o] = control_taps(static_cast<float>(o), origin, inv_spacing, spec.grid[d]);
        }
      }
      last_taps.assign(taps[NDIM - 1]);
      g.last_taps = &last_taps;
    }

    ProgramState st(prog, n, C);
    const bool collect = st.collects_after(0);
    std::vector<RowAccumulator> partials(st.stages.size() > 1 ? static_cast<std::size_t>(C) * rows_per_sample : 0);

    // Data source: the input itself, or B-spline coefficients for order 3.
    DataSource<T, NDIM> src;
    std::vector<Coefficients<T>> coeffs;
    if (has_data) {
      const T* base = static_cast<const T*>(data.data) + n * data.stride[0];
      if (spec.order_data == 3) {
        coeffs.resize(C);
        for (int c = 0; c < C; ++c) {
          prefilter<T>(base + c * data.stride[1], data.shape + 2, data.stride + 2, NDIM, spec.mode_data, coeffs[c]);
          src.channel.push_back(coeffs[c].values.data());
        }
        for (int d = 0; d < NDIM; ++d) {
          src.shape[d] = coeffs[0].shape[d];
          src.stride[d] = coeffs[0].stride[d];
          src.logical[d] = data.shape[2 + d];
        }
        src.pad = coeffs[0].pad;
      } else {
        for (int c = 0; c < C; ++c) src.channel.push_back(base + c * data.stride[1]);
        for (int d = 0; d < NDIM; ++d) {
          src.shape[d] = data.shape[2 + d];
          src.stride[d] = data.stride[2 + d];
          src.logical[d] = data.shape[2 + d];
        }
      }
      src.fits32 = offsets_fit_int32<NDIM>(src.shape, src.stride);
    }
    T* out_sample = has_data ? static_cast<T*>(out.data) + n * C * numel : nullptr;
    const T cval = static_cast<T>(spec.cval_data);

    // Per-thread scratch: row buffers and per-channel accumulators.
    const int threads = get_num_threads();
    std::vector<RowBuffers> bufs(static_cast<std::size_t>(threads));
    std::vector<std::vector<RowAccumulator>> thread_accs(static_cast<std::size_t>(threads),
                                                         std::vector<RowAccumulator>(C));
    std::unique_ptr<SegSource<NDIM>> segs;
    if (has_seg) segs.reset(new SegSource<NDIM>(seg, seg_out, n, numel));
    // Which parts take the SIMD row kernel (row_simd.h).
    bool image_kernel = false, labels_kernel = false, same_shape = true;
    LinearRowArgs image_args;
    if constexpr (std::is_same<T, float>::value) {
      image_kernel = has_data && image_takes_kernel<NDIM>(src, spec.order_data);
      if (image_kernel) image_args = linear_row_args<NDIM>(src, spec.mode_data, cval);
    }
    if (has_seg) {
      segs->visit([&](const auto& lab) { labels_kernel = labels_take_kernel(lab, spec.order_seg); });
      for (int d = 0; d < NDIM; ++d) same_shape = same_shape && (!has_data || data.shape[2 + d] == seg.shape[2 + d]);
    }
    // The rows of the sample; `lab` is the label source the kernel reads (nullptr: none), which
    // fixes the label type L of the kernel.
    auto sample_rows = [&](const auto* lab) {
      using Source = std::remove_cv_t<std::remove_pointer_t<decltype(lab)>>;
      using L = std::remove_cv_t<std::remove_pointer_t<decltype(Source::out)>>;
      NearestRowArgs<L> label_args;
      if (lab) label_args = nearest_row_args<L, NDIM>(*lab, spec.mode_seg, static_cast<L>(spec.cval_seg));
      const bool kernel = image_kernel || lab != nullptr;
      parallel_for(rows_per_sample, row_chunk(rows_per_sample, threads), [&](std::int64_t begin, std::int64_t end,
                                                                               int thread) {
        RowBuffers& buf = bufs[thread];
        if (buf.base.size() != static_cast<std::size_t>(len)) buf.resize(len);
        std::vector<RowAccumulator>& accs = thread_accs[thread];
        for (std::int64_t t = begin; t < end; ++t) {
          const std::int64_t r = t;
          if (!kernel) {
            row_coordinates<NDIM>(g, r, buf);
          } else {
            // kPrefetchRows rows ahead: row t + kPrefetchRows is prepared (and its cache lines
            // prefetched) before row t is sampled. Slot t % kSlots of the ring holds row t's
            // coordinates and plan; buf.coord is swapped in while a slot is computed or sampled.
            const LinearRowArgs* ia = image_kernel ? &image_args : nullptr;
            const NearestRowArgs<L>* la = lab ? &label_args : nullptr;
            auto prepare = [&](std::int64_t row, bool prefetch) {
              const int slot = static_cast<int>(row % RowBuffers::kSlots);
              buf.swap_coordinates(slot);
              row_coordinates<NDIM>(g, row, buf);
              prepare_kernel_row<NDIM, L>(ia, la, same_shape, buf, len, buf.plan[slot], prefetch);
              buf.swap_coordinates(slot);
            };
            if (t == begin) {
              for (std::int64_t u = t; u < std::min(end, t + RowBuffers::kPrefetchRows); ++u) prepare(u, u > t);
            }
            if (t + RowBuffers::kPrefetchRows < end) prepare(t + RowBuffers::kPrefetchRows, true);
            const int slot = static_cast<int>(t % RowBuffers::kSlots);
            buf.swap_coordinates(slot);  // this row's coordinates in buf.coord until the end of the row
            kernel_row<NDIM, L, T>(image_kernel ? &src : nullptr, &image_args, lab, &label_args, buf.plan[slot], spec,
                                   buf, len, r, numel, st, out_sample, collect, accs.data());
          }
          if (has_data) {
            if (!image_kernel) {
              data_row<T, NDIM>(src, spec.order_data, buf, len, spec.mode_data, cval, st, out_sample, numel, r,
                                collect, accs.data());
            }
            if (collect) {
              for (int c = 0; c < C; ++c) partials[c * rows_per_sample + r] = accs[c];
            }
          }
          if (has_seg && lab == nullptr) segs->row(spec, buf, len, r, numel);
          if (kernel) buf.swap_coordinates(static_cast<int>(t % RowBuffers::kSlots));
        }
      });
    };
    if (labels_kernel) {
      segs->visit([&](const auto& lab) { sample_rows(&lab); });
    } else {
      sample_rows(static_cast<const LabelSource<std::int16_t, NDIM>*>(nullptr));
    }
    if (has_data && st.stages.size() > 1) run_later_stages<T>(st, out_sample, numel, len, partials);
  }
}


// ---------------------------------------------------------------------------------------------
// Gaussian filter.

// Gaussian kernel taps (core/gaussian.h).
std::vector<float> gaussian_kernel(float sigma, double truncate) {
  const std::int64_t radius = gaussian_radius(sigma, truncate);
  std::vector<float> k(static_cast<std::size_t>(2 * radius + 1));
  gaussian_weights(sigma, radius, k.data());
  return k;
}

template <typename T>
void blur_typed(const OutRef& x, int sdim, const std::vector<float>& sigma, double truncate) {
  const std::int64_t N = x.shape[0], C = x.shape[1];
  const std::int64_t numel = spatial_numel(x.shape + 2, sdim);
  for (std::int64_t n = 0; n < N; ++n) {
    for (int axis = 0; axis < sdim; ++axis) {
      const float s = sigma[n * sdim + axis];
      if (!(s > 0.0f)) continue;
      const std::vector<float> k = gaussian_kernel(s, truncate);
      const std::int64_t radius = static_cast<std::int64_t>(k.size() / 2);
      const std::int64_t m = x.shape[2 + axis];
      std::int64_t stride = 1;
      for (int d = axis + 1; d < sdim; ++d) stride *= x.shape[2 + d];
      const std::int64_t lines = C * numel / m;
      parallel_for(lines, 64, [&](std::int64_t begin, std::int64_t end, int) {
        std::vector<float> line(static_cast<std::size_t>(m + 2 * radius));
        for (std::int64_t l = begin; l < end; ++l) {
          const std::int64_t outer_i = l / stride;
          const std::int64_t inner_i = l % stride;
          T* base = static_cast<T*>(x.data) + n * C * numel + outer_i * stride * m + inner_i;
          for (std::int64_t i = -radius; i < m + radius; ++i) {
            line[i + radius] = static_cast<float>(base[map_index(i, m, BorderMode::Reflect) * stride]);
          }
          for (std::int64_t i = 0; i < m; ++i) {
            float acc = 0.0f;
            const float* w = line.data() + i;
            for (std::size_t j = 0; j < k.size(); ++j) acc += k[j] * w[j];
            base[i * stride] = static_cast<T>(acc);
          }
        }
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Stand-alone program.

template <typename T>
void program_typed(const ArrayRef& x, const OutRef& out, const Program& prog) {
  const int sdim = x.ndim - 2;
  const std::int64_t N = x.shape[0];
  const int C = static_cast<int>(x.shape[1]);
  const std::int64_t numel = spatial_numel(x.shape + 2, sdim);
  if (numel == 0) return;
  const std::int64_t len = x.shape[x.ndim - 1];
  const std::int64_t rows_per_channel = numel / len;
  for (std::int64_t n = 0; n < N; ++n) {
    ProgramState st(prog, n, C);
    const bool collect = st.collects_after(0);
    std::vector<RowAccumulator> partials(static_cast<std::size_t>(C) * rows_per_channel);
    const T* src = static_cast<const T*>(x.data) + n * x.stride[0];
    T* dst = static_cast<T*>(out.data) + n * C * numel;
    const std::int64_t total_rows = C * rows_per_channel;
    parallel_for(total_rows, 16, [&](std::int64_t begin, std::int64_t end, int) {
    for (std::int64_t r = begin; r < end; ++r) {
      const int c = static_cast<int>(r / rows_per_channel);
      std::int64_t rem = r % rows_per_channel;
      std::int64_t off = c * x.stride[1];
      for (int d = sdim - 2; d >= 0; --d) {
        off += (rem % x.shape[2 + d]) * x.stride[2 + d];
        rem /= x.shape[2 + d];
      }
      const std::int64_t step = x.stride[x.ndim - 1];
      T* v = dst + r * len;  // copy the row into the output, then work in place
      for (std::int64_t i = 0; i < len; ++i) v[i] = src[off + i * step];
      st.run_row(0, c, v, len, noise_counter(c, numel, (r - c * rows_per_channel) * len));
      if (collect) partials[r] = accumulate(v, len);
    }
    });
    run_later_stages<T>(st, dst, numel, len, partials);
  }
}

}  // namespace

void resample(const ArrayRef& data, const OutRef& out, const ArrayRef& seg, const OutRef& seg_out,
              const SpatialSpec& spec, const Program& program) {
  throw_if(check_resample(data, out.ndim, seg, seg_out.ndim, spec, program));
  const bool has_data = data.data != nullptr;
  const DType dt = has_data ? data.dtype : DType::Float32;
  if (spec.ndim == 3) {
    if (dt == DType::Float64) resample_typed<double, 3>(data, out, seg, seg_out, spec, program);
    else resample_typed<float, 3>(data, out, seg, seg_out, spec, program);
  } else {
    if (dt == DType::Float64) resample_typed<double, 2>(data, out, seg, seg_out, spec, program);
    else resample_typed<float, 2>(data, out, seg, seg_out, spec, program);
  }
}

void apply_program(const ArrayRef& x, const OutRef& out, const Program& program) {
  throw_if(check_apply_program(x.ndim, x.shape, x.dtype, program));
  if (x.dtype == DType::Float64) program_typed<double>(x, out, program);
  else program_typed<float>(x, out, program);
}

void gaussian_blur(const OutRef& x, int spatial_ndim, const std::vector<float>& sigma, double truncate) {
  throw_if(check_gaussian_blur(x.ndim, x.shape, x.dtype, static_cast<std::int64_t>(sigma.size())));
  if (x.dtype == DType::Float64) blur_typed<double>(x, spatial_ndim, sigma, truncate);
  else blur_typed<float>(x, spatial_ndim, sigma, truncate);
}

}  // namespace delira::cpu::DELIRA_ISA

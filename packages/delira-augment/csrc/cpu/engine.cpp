// CPU executor: the fused resampling + intensity pass, the later statistics passes, the cubic
// B-spline prefilter and the separable gaussian filter.
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
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
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
    for (std::int64_t p = 0; p < pairs; ++p) {
      float z0, z1;
      random_normal_pair(key, pair0 + static_cast<std::uint64_t>(p), &z0, &z1);
      w[2 * p] = add_noise(w[2 * p], sigma, z0);
      w[2 * p + 1] = add_noise(w[2 * p + 1], sigma, z1);
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

// B-spline taps of the elastic grid along the last axis, as structure of arrays for vector gathers.
struct LastAxisTaps {
  std::vector<std::int32_t> first;
  std::vector<float> w[4];

  void assign(const std::vector<ControlTaps>& taps) {
    first.resize(taps.size());
    for (auto& v : w) v.resize(taps.size());
    for (std::size_t i = 0; i < taps.size(); ++i) {
      first[i] = static_cast<std::int32_t>(taps[i].first);
      for (int k = 0; k < 4; ++k) w[k][i] = taps[i].w[k];
    }
  }
};

template <int NDIM>
struct SampleGeometry {
  const LastAxisTaps* last_taps = nullptr;
  Affine<NDIM> affine;
  const float* grid = nullptr;  // elastic control points of this sample, (NDIM, *grid) or nullptr
  std::int64_t grid_shape[NDIM];
  std::int64_t out_shape[NDIM];
  const std::vector<ControlTaps>* taps[NDIM];  // per axis, per output index
};

// Per-thread buffers of one output row.
struct RowBuffers {
  std::vector<float> coord[3];      // input coordinates per axis (structure of arrays)
  std::vector<float> field;         // elastic field along the row's axis, per component
  std::vector<float> values;        // one channel of data (float32 data)
  std::vector<double> values64;     // one channel of data (float64 data)
  std::vector<float> frac[3];       // linear interpolation: fractional parts
  std::vector<std::int64_t> base;   // linear: offset of the lower corner; nearest: offset or -1
  std::vector<std::uint8_t> kind;   // linear: 0 interior, 1 border (general path), 2 outside (cval)

  void resize(std::int64_t len) {
    for (auto& c : coord) c.resize(static_cast<std::size_t>(len));
    for (auto& f : frac) f.resize(static_cast<std::size_t>(len));
    values.resize(static_cast<std::size_t>(len));
    values64.resize(static_cast<std::size_t>(len));
    base.resize(static_cast<std::size_t>(len));
    kind.resize(static_cast<std::size_t>(len));
  }
};

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
  const std::int64_t gl = g.grid_shape[NDIM - 1];
  buf.field.resize(static_cast<std::size_t>(NDIM * gl));
  std::int64_t grid_numel = 1;
  for (int d = 0; d < NDIM; ++d) grid_numel *= g.grid_shape[d];
  ControlTaps lead_taps[NDIM - 1];
  for (int d = 0; d < NDIM - 1; ++d) lead_taps[d] = (*g.taps[d])[lead[d]];
  for (int comp = 0; comp < NDIM; ++comp) {
    contract_leading_axes<NDIM>(g.grid + comp * grid_numel, g.grid_shape, lead_taps, 0, gl,
                                buf.field.data() + comp * gl);
  }
  // Along the row: gather the four control values of every voxel (tables as structure of arrays).
  const LastAxisTaps& tx = *g.last_taps;
  const std::int32_t n32 = static_cast<std::int32_t>(len);
  for (int comp = 0; comp < NDIM; ++comp) {
    const float* f = buf.field.data() + comp * gl;
    float* c = buf.coord[comp].data();
    const std::int32_t* first = tx.first.data();
    const float *w0 = tx.w[0].data(), *w1 = tx.w[1].data(), *w2 = tx.w[2].data(), *w3 = tx.w[3].data();
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
    for (std::int32_t i = 0; i < n32; ++i) {
      const std::int32_t k = first[i];
      c[i] += contract_last_axis(f + k, w0[i], w1[i], w2[i], w3[i]);
    }
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
};

// Linear interpolation of one row: classify voxels once (vectorised), then gather every channel.
// Interior voxels (all eight corners inside) take the fast path; the others the general one.
template <typename T, int NDIM>
void prepare_linear(const DataSource<T, NDIM>& src, RowBuffers& buf, std::int64_t len, BorderMode mode) {
  bool fast_ok = true;
  for (int d = 0; d < NDIM; ++d) fast_ok = fast_ok && src.shape[d] >= 2;
  const bool constant = mode == BorderMode::Constant;
  const float* cx[NDIM];
  float* fr[NDIM];
  float upper[NDIM];
  std::int32_t last[NDIM];
  std::int64_t stride[NDIM];
  for (int d = 0; d < NDIM; ++d) {
    cx[d] = buf.coord[d].data();
    fr[d] = buf.frac[d].data();
    upper[d] = static_cast<float>(src.shape[d] - 1);
    last[d] = static_cast<std::int32_t>(std::min<std::int64_t>(src.shape[d] - 2, 1 << 30));
    stride[d] = src.stride[d];
  }
  std::int64_t* base = buf.base.data();
  std::uint8_t* kind = buf.kind.data();
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
  for (std::int64_t i = 0; i < len; ++i) {
    bool interior = fast_ok, outside = false;
    std::int64_t off = 0;
    for (int d = 0; d < NDIM; ++d) {
      const float x = cx[d][i];
      float xc = x < -1e9f ? -1e9f : x;
      xc = xc > 1e9f ? 1e9f : xc;
      std::int32_t k = static_cast<std::int32_t>(xc);  // floor by truncation and correction
      k -= (static_cast<float>(k) > xc) ? 1 : 0;
      fr[d][i] = x - static_cast<float>(k);
      interior = interior & (k >= 0) & (k <= last[d]);  // bitwise: no branches in the vector loop
      outside = outside | (x < 0.0f) | (x > upper[d]);
      off += static_cast<std::int64_t>(k) * stride[d];
    }
    base[i] = interior ? off : 0;  // non-interior voxels load from a safe place and are redone below
    kind[i] = (constant & outside) ? 2 : (interior ? 0 : 1);
  }
}

template <typename T, int NDIM>
void gather_linear(const DataSource<T, NDIM>& src, const T* data, const RowBuffers& buf, std::int64_t len,
                   BorderMode mode, T cval, T* out) {
  using Acc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const std::int64_t s0 = src.stride[0], s1 = src.stride[1], s2 = NDIM == 3 ? src.stride[2] : 0;
  const std::int64_t* base = buf.base.data();
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

template <typename T, int NDIM>
void data_row(const DataSource<T, NDIM>& src, int order, RowBuffers& buf, std::int64_t len, BorderMode mode, T cval,
              ProgramState& st, T* out, std::int64_t numel, std::int64_t row, bool collect, RowAccumulator* accs) {
  const int C = static_cast<int>(src.channel.size());
  if (order == 1) prepare_linear<T, NDIM>(src, buf, len, mode);
  T* v;
  if constexpr (std::is_same<T, double>::value) {
    v = buf.values64.data();
  } else {
    v = buf.values.data();
  }
  for (int c = 0; c < C; ++c) {
    switch (order) {
      case 0: gather_general<T, NDIM, 0>(src, src.channel[c], buf, len, mode, cval, v); break;
      case 1: gather_linear<T, NDIM>(src, src.channel[c], buf, len, mode, cval, v); break;
      default: gather_general<T, NDIM, 3>(src, src.channel[c], buf, len, mode, cval, v); break;
    }
    const std::int64_t offset = c * numel + row * len;
    st.run_row(0, c, v, len, noise_counter(c, numel, row * len));
    std::copy(v, v + len, out + offset);
    if (collect) accs[c] = accumulate(v, len);
  }
}

template <typename L, int NDIM>
void seg_row(const std::vector<const L*>& channel, const std::int64_t* shape, const std::int64_t* stride, int order,
             RowBuffers& buf, std::int64_t len, BorderMode mode, L cval, L* out, std::int64_t numel,
             std::int64_t row) {
  const int C = static_cast<int>(channel.size());
  const std::int64_t row_offset = row * len;
  if (order == 0) {
    // Offsets once (vectorised; voxels needing the border rule are fixed up after), then every channel.
    const bool constant = mode == BorderMode::Constant;
    std::int64_t* base = buf.base.data();
    std::uint8_t* kind = buf.kind.data();
    float upper[NDIM];
    std::int32_t n32[NDIM];
    std::int64_t st[NDIM];
    const float* cx[NDIM];
    for (int d = 0; d < NDIM; ++d) {
      upper[d] = static_cast<float>(shape[d] - 1);
      n32[d] = static_cast<std::int32_t>(std::min<std::int64_t>(shape[d], 1 << 30));
      st[d] = stride[d];
      cx[d] = buf.coord[d].data();
    }
#if defined(DELIRA_OPENMP_SIMD)
#pragma omp simd
#endif
    for (std::int64_t i = 0; i < len; ++i) {
      std::int64_t off = 0;
      bool outside = false, inside_idx = true;
      for (int d = 0; d < NDIM; ++d) {
        const float x = cx[d][i];
        outside = outside | (x < 0.0f) | (x > upper[d]);
        float xc = x + 0.5f;
        xc = xc < -1e9f ? -1e9f : xc;
        xc = xc > 1e9f ? 1e9f : xc;
        std::int32_t k = static_cast<std::int32_t>(xc);
        k -= (static_cast<float>(k) > xc) ? 1 : 0;
        inside_idx = inside_idx & (k >= 0) & (k < n32[d]);
        off += static_cast<std::int64_t>(k) * st[d];
      }
      base[i] = inside_idx ? off : 0;
      kind[i] = (constant & outside) ? 2 : (inside_idx ? 0 : 1);
    }
    for (std::int64_t i = 0; i < len; ++i) {
      if (kind[i] != 1) continue;
      std::int64_t off = 0;
      for (int d = 0; d < NDIM; ++d) {
        const std::int64_t k = static_cast<std::int64_t>(floor_f(buf.coord[d][i] + 0.5f));
        off += map_index(k, shape[d], mode) * stride[d];
      }
      base[i] = off;
    }
    for (int c = 0; c < C; ++c) {
      const L* src = channel[c];
      L* dst = out + c * numel + row_offset;
      for (std::int64_t i = 0; i < len; ++i) dst[i] = kind[i] == 2 ? cval : src[base[i]];
    }
    return;
  }
  Taps<1, NDIM> taps;
  for (std::int64_t i = 0; i < len; ++i) {
    float x[NDIM];
    for (int d = 0; d < NDIM; ++d) x[d] = buf.coord[d][i];
    compute_taps<1, NDIM>(x, shape, stride, mode, taps);
    for (int c = 0; c < C; ++c) out[c * numel + row_offset + i] = gather_label_linear<L, NDIM>(channel[c], taps, cval);
  }
}

template <typename L, int NDIM>
void seg_rows_typed(const ArrayRef& seg, const OutRef& seg_out, std::int64_t n, const SpatialSpec& spec,
                    RowBuffers& buf, std::int64_t len, std::int64_t row, std::int64_t numel) {
  const int C = static_cast<int>(seg.shape[1]);
  std::vector<const L*> channel(C);
  const L* base = static_cast<const L*>(seg.data) + n * seg.stride[0];
  for (int c = 0; c < C; ++c) channel[c] = base + c * seg.stride[1];
  L* out = static_cast<L*>(seg_out.data) + n * C * numel;
  seg_row<L, NDIM>(channel, seg.shape + 2, seg.stride + 2, spec.order_seg, buf, len, spec.mode_seg,
                   static_cast<L>(spec.cval_seg), out, numel, row);
}

template <int NDIM>
void seg_rows(const ArrayRef& seg, const OutRef& seg_out, std::int64_t n, const SpatialSpec& spec, RowBuffers& buf,
              std::int64_t len, std::int64_t row, std::int64_t numel) {
  switch (seg.dtype) {
    case DType::UInt8: seg_rows_typed<std::uint8_t, NDIM>(seg, seg_out, n, spec, buf, len, row, numel); break;
    case DType::Int16: seg_rows_typed<std::int16_t, NDIM>(seg, seg_out, n, spec, buf, len, row, numel); break;
    case DType::Int32: seg_rows_typed<std::int32_t, NDIM>(seg, seg_out, n, spec, buf, len, row, numel); break;
    case DType::Int64: seg_rows_typed<std::int64_t, NDIM>(seg, seg_out, n, spec, buf, len, row, numel); break;
    default: throw std::invalid_argument("seg must have dtype uint8, int16, int32 or int64");
  }
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
  if (elastic) {
    for (int d = 0; d < NDIM; ++d) grid_numel *= spec.grid[d];
  }

  for (std::int64_t n = 0; n < N; ++n) {
    SampleGeometry<NDIM> g;
    for (int d = 0; d < NDIM; ++d) {
      for (int e = 0; e < NDIM; ++e) g.affine.a[d][e] = spec.affine[(n * NDIM + d) * (NDIM + 1) + e];
      g.affine.b[d] = spec.affine[(n * NDIM + d) * (NDIM + 1) + NDIM];
      g.out_shape[d] = spec.out_shape[d];
      g.grid_shape[d] = spec.grid[d];
      g.taps[d] = &taps[d];
    }
    g.grid = elastic ? spec.elastic.data() + n * NDIM * grid_numel : nullptr;
    if (elastic) {
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
    }
    T* out_sample = has_data ? static_cast<T*>(out.data) + n * C * numel : nullptr;
    const T cval = static_cast<T>(spec.cval_data);

    // Per-thread scratch: row buffers and per-channel accumulators.
    const int threads = get_num_threads();
    std::vector<RowBuffers> bufs(static_cast<std::size_t>(threads));
    std::vector<std::vector<RowAccumulator>> thread_accs(static_cast<std::size_t>(threads), std::vector<RowAccumulator>(C));
    parallel_for(rows_per_sample, 16, [&](std::int64_t begin, std::int64_t end, int thread) {
      RowBuffers& buf = bufs[thread];
      if (buf.base.size() != static_cast<std::size_t>(len)) buf.resize(len);
      std::vector<RowAccumulator>& accs = thread_accs[thread];
      for (std::int64_t r = begin; r < end; ++r) {
        row_coordinates<NDIM>(g, r, buf);
        if (has_data) {
          data_row<T, NDIM>(src, spec.order_data, buf, len, spec.mode_data, cval, st, out_sample, numel, r, collect,
                            accs.data());
          if (collect) {
            for (int c = 0; c < C; ++c) partials[c * rows_per_sample + r] = accs[c];
          }
        }
        if (has_seg) seg_rows<NDIM>(seg, seg_out, n, spec, buf, len, r, numel);
      }
    });
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

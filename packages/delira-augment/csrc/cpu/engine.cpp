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

#include "../core/rng.h"
#include "../core/sampling.h"
#include "parallel.h"
#include "stats.h"

namespace delira::cpu {
namespace {

std::int64_t spatial_numel(const std::int64_t* shape, int sdim) {
  std::int64_t n = 1;
  for (int d = 0; d < sdim; ++d) n *= shape[d];
  return n;
}

// ---------------------------------------------------------------------------------------------
// Program bookkeeping: stages split at ops that need statistics.

struct Stage {
  int head = -1;  // op index of the stats op that starts the stage (-1 for stage 0)
  std::vector<int> pointwise;
};

std::vector<Stage> split_stages(const Program& prog) {
  std::vector<Stage> stages(1);
  for (int j = 0; j < prog.n_ops(); ++j) {
    if (needs_stats(prog.kinds[j])) {
      Stage s;
      s.head = j;
      stages.push_back(s);
    } else {
      stages.back().pointwise.push_back(j);
    }
  }
  return stages;
}

// Per-sample state of a program run: random keys per op and statistics per (channel, op).
struct ProgramState {
  const Program* prog;
  std::vector<Stage> stages;
  std::int64_t n;                      // sample index
  std::vector<std::uint64_t> keys;     // per op
  std::vector<Stats> stats;            // (C, n_ops)
  int channels;

  ProgramState(const Program& p, std::int64_t sample, int c)
      : prog(&p), stages(split_stages(p)), n(sample), channels(c) {
    keys.resize(p.n_ops());
    const std::uint64_t seed = p.seeds.empty() ? 0 : p.seeds[sample];
    for (int j = 0; j < p.n_ops(); ++j) keys[j] = stream_key(seed, static_cast<std::uint32_t>(j));
    stats.resize(static_cast<std::size_t>(c) * p.n_ops());
  }

  const OpParams& params(int op) const { return prog->params[n * prog->n_ops() + op]; }
  Stats& stat(int c, int op) { return stats[static_cast<std::size_t>(c) * prog->n_ops() + op]; }

  // Whether the pass that runs stage s must accumulate statistics for stage s + 1.
  bool collects_after(std::size_t s) const {
    return s + 1 < stages.size() && prog->kinds[stages[s + 1].head] != OpKind::PercentileClip;
  }

  inline float run_pointwise(std::size_t s, float v, std::uint64_t counter) const {
    for (int j : stages[s].pointwise) {
      const OpParams& q = params(j);
      if (q.active) v = apply_pointwise(prog->kinds[j], q, v, keys[j], counter);
    }
    return v;
  }

  inline float run_head(std::size_t s, int c, float v) {
    const int j = stages[s].head;
    const OpParams& q = params(j);
    if (!q.active) return v;
    const int ref = prog->refs[j] >= 0 ? prog->refs[j] : j;
    return apply_with_stats(prog->kinds[j], q, v, stat(c, j), stat(c, ref));
  }

  // Reduces row partials (C, rows) in order into the statistics of stage s + 1's head.
  void reduce(std::size_t s, const std::vector<RowAccumulator>& rows, std::int64_t rows_per_channel) {
    const int j = stages[s + 1].head;
    for (int c = 0; c < channels; ++c) {
      Moments m;
      for (std::int64_t r = 0; r < rows_per_channel; ++r) m.merge(rows[c * rows_per_channel + r].moments());
      Stats& st = stat(c, j);
      st.mean = m.mean;
      st.std = m.std();
      st.min = m.count > 0 ? m.min : 0.0f;
      st.max = m.count > 0 ? m.max : 0.0f;
    }
  }
};

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
    const int threads = get_num_threads();
    (void)threads;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (numel * C > 16384)
#endif
    for (std::int64_t r = 0; r < total_rows; ++r) {
      const int c = static_cast<int>(r / rows_per_channel);
      T* row = sample + r * row_len;
      RowAccumulator acc;
      const std::int64_t counter0 = r * row_len;
      for (std::int64_t i = 0; i < row_len; ++i) {
        float v = static_cast<float>(row[i]);
        v = st.run_head(s, c, v);
        v = st.run_pointwise(s, v, static_cast<std::uint64_t>(counter0 + i));
        row[i] = static_cast<T>(v);
        if (collect) acc.add(v);
      }
      if (collect) rows[r] = acc;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Cubic B-spline prefilter (recursive, one pole), mirror or reflect boundary.

void init_causal_mirror(double* c, std::int64_t m, double z) {
  const double zm1 = std::pow(z, static_cast<double>(m - 1));
  double sum = c[0] + zm1 * c[m - 1];
  double zj = z;
  for (std::int64_t j = 1; j < m - 1; ++j) {
    sum += (zj + zm1 * zm1 / zj) * c[j];
    zj *= z;
    if (std::fabs(zj) < 1e-300) break;
  }
  c[0] = sum / (1.0 - zm1 * zm1);
}

void init_causal_reflect(double* c, std::int64_t m, double z) {
  const double z2m = std::pow(z, static_cast<double>(2 * m));
  double sum = 0.0;
  double zk = z;
  for (std::int64_t k = 1; k <= 2 * m; ++k) {
    const double v = k <= m ? c[k - 1] : c[2 * m - k];
    sum += zk * v;
    zk *= z;
    if (std::fabs(zk) < 1e-300) break;
  }
  c[0] = c[0] + sum / (1.0 - z2m);
}

void filter_line(double* c, std::int64_t m, BorderMode mode) {
  if (m < 2) return;
  const double z = kCubicPole;
  const double gain = (1.0 - z) * (1.0 - 1.0 / z);
  for (std::int64_t i = 0; i < m; ++i) c[i] *= gain;
  if (mode == BorderMode::Reflect) {
    init_causal_reflect(c, m, z);
  } else {
    init_causal_mirror(c, m, z);
  }
  for (std::int64_t i = 1; i < m; ++i) c[i] += z * c[i - 1];
  if (mode == BorderMode::Reflect) {
    c[m - 1] *= z / (z - 1.0);
  } else {
    c[m - 1] = (z / (z * z - 1.0)) * (z * c[m - 2] + c[m - 1]);
  }
  for (std::int64_t i = m - 2; i >= 0; --i) c[i] = z * (c[i + 1] - c[i]);
}

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
  const int threads = get_num_threads();
  (void)threads;
  const std::int64_t row = out.shape[sdim - 1];
  const std::int64_t rows = total / row;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
  for (std::int64_t r = 0; r < rows; ++r) {
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
  // Filter along every axis.
  for (int axis = 0; axis < sdim; ++axis) {
    const std::int64_t m = out.shape[axis];
    if (m < 2) continue;
    const std::int64_t lines = total / m;
    const std::int64_t stride = out.stride[axis];
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
      std::vector<double> line(static_cast<std::size_t>(m));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (std::int64_t l = 0; l < lines; ++l) {
        // Line l: all axes but `axis`, in C order.
        const std::int64_t inner = stride;  // product of extents after axis
        const std::int64_t outer_i = l / inner;
        const std::int64_t inner_i = l % inner;
        T* base = out.values.data() + outer_i * inner * m + inner_i;
        for (std::int64_t i = 0; i < m; ++i) line[i] = static_cast<double>(base[i * stride]);
        filter_line(line.data(), m, mode == BorderMode::Reflect ? BorderMode::Reflect : BorderMode::Mirror);
        for (std::int64_t i = 0; i < m; ++i) base[i * stride] = static_cast<T>(line[i]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The fused pass.

template <int NDIM>
struct SampleGeometry {
  Affine<NDIM> affine;
  const float* grid = nullptr;  // elastic control points of this sample, (NDIM, *grid) or nullptr
  std::int64_t grid_shape[NDIM];
  std::int64_t out_shape[NDIM];
  const std::vector<ControlTaps>* taps[NDIM];  // per axis, per output index
};

// Input coordinates of one output row (all leading indices fixed): coords[i * NDIM + d].
template <int NDIM>
void row_coordinates(const SampleGeometry<NDIM>& g, std::int64_t row, float* coords, std::vector<float>& field) {
  std::int64_t lead[NDIM] = {};
  std::int64_t rem = row;
  for (int d = NDIM - 2; d >= 0; --d) {
    lead[d] = rem % g.out_shape[d];
    rem /= g.out_shape[d];
  }
  const std::int64_t len = g.out_shape[NDIM - 1];
  double base[NDIM];
  for (int d = 0; d < NDIM; ++d) {
    double b = g.affine.b[d];
    for (int e = 0; e < NDIM - 1; ++e) b += static_cast<double>(g.affine.a[d][e]) * static_cast<double>(lead[e]);
    base[d] = b;
  }
  for (std::int64_t i = 0; i < len; ++i) {
    for (int d = 0; d < NDIM; ++d) {
      coords[i * NDIM + d] = static_cast<float>(base[d] + static_cast<double>(g.affine.a[d][NDIM - 1]) * static_cast<double>(i));
    }
  }
  if (g.grid == nullptr) return;
  // Field along the last axis for this row: contract the leading axes' B-spline taps.
  const std::int64_t gl = g.grid_shape[NDIM - 1];
  field.assign(static_cast<std::size_t>(NDIM * gl), 0.0f);
  std::int64_t grid_numel = 1;
  for (int d = 0; d < NDIM; ++d) grid_numel *= g.grid_shape[d];
  if (NDIM == 3) {
    const ControlTaps& tz = (*g.taps[0])[lead[0]];
    const ControlTaps& ty = (*g.taps[1])[lead[1]];
    for (int comp = 0; comp < NDIM; ++comp) {
      const float* G = g.grid + comp * grid_numel;
      float* f = field.data() + comp * gl;
      for (int a = 0; a < 4; ++a) {
        for (int b = 0; b < 4; ++b) {
          const float w = tz.w[a] * ty.w[b];
          const float* src = G + ((tz.first + a) * g.grid_shape[1] + (ty.first + b)) * gl;
          for (std::int64_t k = 0; k < gl; ++k) f[k] += w * src[k];
        }
      }
    }
  } else {
    const ControlTaps& ty = (*g.taps[0])[lead[0]];
    for (int comp = 0; comp < NDIM; ++comp) {
      const float* G = g.grid + comp * grid_numel;
      float* f = field.data() + comp * gl;
      for (int a = 0; a < 4; ++a) {
        const float w = ty.w[a];
        const float* src = G + (ty.first + a) * gl;
        for (std::int64_t k = 0; k < gl; ++k) f[k] += w * src[k];
      }
    }
  }
  const std::vector<ControlTaps>& tx = *g.taps[NDIM - 1];
  for (std::int64_t i = 0; i < len; ++i) {
    const ControlTaps& t = tx[i];
    for (int comp = 0; comp < NDIM; ++comp) {
      const float* f = field.data() + comp * gl + t.first;
      coords[i * NDIM + comp] += t.w[0] * f[0] + t.w[1] * f[1] + t.w[2] * f[2] + t.w[3] * f[3];
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

template <typename T, int NDIM, int ORDER>
void data_row(const DataSource<T, NDIM>& src, const float* coords, std::int64_t len, BorderMode mode, T cval,
              ProgramState& st, T* out, std::int64_t numel, std::int64_t row, bool collect,
              RowAccumulator* accs) {
  using Acc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const int C = static_cast<int>(src.channel.size());
  Taps<ORDER, NDIM> taps;
  const std::int64_t row_offset = row * len;
  for (std::int64_t i = 0; i < len; ++i) {
    compute_taps<ORDER, NDIM>(coords + i * NDIM, src.shape, src.stride, mode, taps, src.pad, src.logical);
    for (int c = 0; c < C; ++c) {
      float v = static_cast<float>(gather<Acc, ORDER, NDIM>(src.channel[c], taps, static_cast<Acc>(cval)));
      const std::int64_t idx = c * numel + row_offset + i;
      v = st.run_pointwise(0, v, static_cast<std::uint64_t>(idx));
      out[idx] = static_cast<T>(v);
      if (collect) accs[c].add(v);
    }
  }
}

template <typename L, int NDIM, int ORDER>
void seg_row(const std::vector<const L*>& channel, const std::int64_t* shape, const std::int64_t* stride,
             const float* coords, std::int64_t len, BorderMode mode, L cval, L* out, std::int64_t numel,
             std::int64_t row) {
  Taps<ORDER, NDIM> taps;
  const std::int64_t row_offset = row * len;
  const int C = static_cast<int>(channel.size());
  for (std::int64_t i = 0; i < len; ++i) {
    compute_taps<ORDER, NDIM>(coords + i * NDIM, shape, stride, mode, taps);
    for (int c = 0; c < C; ++c) {
      L v;
      if constexpr (ORDER == 0) {
        std::int64_t off = 0;
        for (int d = 0; d < NDIM; ++d) off += taps.offset[d][0];
        v = taps.outside ? cval : channel[c][off];
      } else {
        v = gather_label_linear<L, NDIM>(channel[c], taps, cval);
      }
      out[c * numel + row_offset + i] = v;
    }
  }
}

template <typename L, int NDIM>
void seg_rows_dispatch(const ArrayRef& seg, const OutRef& seg_out, std::int64_t n, const SpatialSpec& spec,
                       const float* coords, std::int64_t len, std::int64_t row, std::int64_t numel) {
  const int C = static_cast<int>(seg.shape[1]);
  std::vector<const L*> channel(C);
  const L* base = static_cast<const L*>(seg.data) + n * seg.stride[0];
  for (int c = 0; c < C; ++c) channel[c] = base + c * seg.stride[1];
  L* out = static_cast<L*>(seg_out.data) + n * C * numel;
  const L cval = static_cast<L>(spec.cval_seg);
  if (spec.order_seg == 0) {
    seg_row<L, NDIM, 0>(channel, seg.shape + 2, seg.stride + 2, coords, len, spec.mode_seg, cval, out, numel, row);
  } else {
    seg_row<L, NDIM, 1>(channel, seg.shape + 2, seg.stride + 2, coords, len, spec.mode_seg, cval, out, numel, row);
  }
}

template <int NDIM>
void seg_rows(const ArrayRef& seg, const OutRef& seg_out, std::int64_t n, const SpatialSpec& spec,
              const float* coords, std::int64_t len, std::int64_t row, std::int64_t numel) {
  switch (seg.dtype) {
    case DType::UInt8: seg_rows_dispatch<std::uint8_t, NDIM>(seg, seg_out, n, spec, coords, len, row, numel); break;
    case DType::Int16: seg_rows_dispatch<std::int16_t, NDIM>(seg, seg_out, n, spec, coords, len, row, numel); break;
    case DType::Int32: seg_rows_dispatch<std::int32_t, NDIM>(seg, seg_out, n, spec, coords, len, row, numel); break;
    case DType::Int64: seg_rows_dispatch<std::int64_t, NDIM>(seg, seg_out, n, spec, coords, len, row, numel); break;
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

  // Elastic control taps per axis (shared by all samples).
  const bool elastic = !spec.elastic.empty();
  std::vector<ControlTaps> taps[NDIM];
  std::int64_t grid_numel = 1;
  if (elastic) {
    for (int d = 0; d < NDIM; ++d) {
      grid_numel *= spec.grid[d];
      taps[d].resize(static_cast<std::size_t>(spec.out_shape[d]));
      for (std::int64_t o = 0; o < spec.out_shape[d]; ++o) {
        taps[d][o] = control_taps(static_cast<float>(o), spec.grid_origin[d], 1.0f / spec.grid_spacing[d], spec.grid[d]);
      }
    }
  }

  const int threads = get_num_threads();
  (void)threads;
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

    ProgramState st(prog, n, C);
    const bool collect = st.collects_after(0);
    std::vector<RowAccumulator> partials(collect || st.stages.size() > 1 ? static_cast<std::size_t>(C) * rows_per_sample : 0);

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
    // For order 3 with mode nearest the padded coefficients are sampled with nearest clamping.
    const BorderMode data_mode = spec.mode_data;

#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
      std::vector<float> coords(static_cast<std::size_t>(len * NDIM));
      std::vector<float> field;
      std::vector<RowAccumulator> accs(C);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (std::int64_t r = 0; r < rows_per_sample; ++r) {
        row_coordinates<NDIM>(g, r, coords.data(), field);
        if (has_data) {
          for (auto& a : accs) a = RowAccumulator();
          switch (spec.order_data) {
            case 0: data_row<T, NDIM, 0>(src, coords.data(), len, data_mode, cval, st, out_sample, numel, r, collect, accs.data()); break;
            case 1: data_row<T, NDIM, 1>(src, coords.data(), len, data_mode, cval, st, out_sample, numel, r, collect, accs.data()); break;
            default: data_row<T, NDIM, 3>(src, coords.data(), len, data_mode, cval, st, out_sample, numel, r, collect, accs.data()); break;
          }
          if (collect) {
            for (int c = 0; c < C; ++c) partials[c * rows_per_sample + r] = accs[c];
          }
        }
        if (has_seg) seg_rows<NDIM>(seg, seg_out, n, spec, coords.data(), len, r, numel);
      }
    }
    if (has_data && st.stages.size() > 1) run_later_stages<T>(st, out_sample, numel, len, partials);
  }
}

void check_spec(const ArrayRef& data, const OutRef& out, const ArrayRef& seg, const OutRef& seg_out,
                const SpatialSpec& spec, const Program& prog) {
  const int sd = spec.ndim;
  if (sd != 2 && sd != 3) throw std::invalid_argument("spatial ndim must be 2 or 3, got " + std::to_string(sd));
  const bool has_data = data.data != nullptr;
  const bool has_seg = seg.data != nullptr;
  if (!has_data && !has_seg) throw std::invalid_argument("nothing to resample: give data, seg or both");
  const std::int64_t N = has_data ? data.shape[0] : seg.shape[0];
  if (has_data && (data.ndim != sd + 2 || out.ndim != sd + 2)) throw std::invalid_argument("data must be (N, C, *spatial)");
  if (has_seg && (seg.ndim != sd + 2 || seg_out.ndim != sd + 2)) throw std::invalid_argument("seg must be (N, C, *spatial)");
  if (has_seg && seg.shape[0] != N) throw std::invalid_argument("data and seg have different batch sizes");
  if (static_cast<std::int64_t>(spec.affine.size()) != N * sd * (sd + 1)) throw std::invalid_argument("affine must be (N, ndim, ndim + 1)");
  if (spec.order_data != 0 && spec.order_data != 1 && spec.order_data != 3) throw std::invalid_argument("order must be 0, 1 or 3");
  if (spec.order_seg != 0 && spec.order_seg != 1) throw std::invalid_argument("seg order must be 0 or 1");
  for (int d = 0; d < sd; ++d) {
    if (has_data && data.shape[2 + d] < 1) throw std::invalid_argument("data has an empty spatial axis");
    if (has_seg && seg.shape[2 + d] < 1) throw std::invalid_argument("seg has an empty spatial axis");
  }
  if (!spec.elastic.empty()) {
    std::int64_t g = 1;
    for (int d = 0; d < sd; ++d) {
      if (spec.grid[d] < 4) throw std::invalid_argument("elastic grid needs at least 4 control points per axis");
      if (!(spec.grid_spacing[d] > 0.0f)) throw std::invalid_argument("elastic grid spacing must be > 0");
      g *= spec.grid[d];
    }
    if (static_cast<std::int64_t>(spec.elastic.size()) != N * sd * g) throw std::invalid_argument("elastic grid has the wrong size");
  }
  if (static_cast<std::int64_t>(prog.params.size()) != N * prog.n_ops()) throw std::invalid_argument("program parameters must be (N, n_ops)");
  if (prog.n_ops() > 0 && static_cast<std::int64_t>(prog.seeds.size()) != N) throw std::invalid_argument("program needs one seed per sample");
}

// ---------------------------------------------------------------------------------------------
// Gaussian filter.

std::vector<float> gaussian_kernel(float sigma, double truncate) {
  const std::int64_t radius = static_cast<std::int64_t>(truncate * sigma + 0.5);
  std::vector<float> k(static_cast<std::size_t>(2 * radius + 1));
  double sum = 0.0;
  std::vector<double> tmp(k.size());
  for (std::int64_t i = -radius; i <= radius; ++i) {
    tmp[i + radius] = std::exp(-0.5 * static_cast<double>(i * i) / (static_cast<double>(sigma) * sigma));
    sum += tmp[i + radius];
  }
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<float>(tmp[i] / sum);
  return k;
}

template <typename T>
void blur_typed(const OutRef& x, int sdim, const std::vector<float>& sigma, double truncate) {
  const std::int64_t N = x.shape[0], C = x.shape[1];
  const std::int64_t numel = spatial_numel(x.shape + 2, sdim);
  const int threads = get_num_threads();
  (void)threads;
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
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
      {
        std::vector<float> line(static_cast<std::size_t>(m + 2 * radius));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (std::int64_t l = 0; l < lines; ++l) {
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
      }
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
  const int threads = get_num_threads();
  (void)threads;
  for (std::int64_t n = 0; n < N; ++n) {
    ProgramState st(prog, n, C);
    const bool collect = st.collects_after(0);
    std::vector<RowAccumulator> partials(static_cast<std::size_t>(C) * rows_per_channel);
    const T* src = static_cast<const T*>(x.data) + n * x.stride[0];
    T* dst = static_cast<T*>(out.data) + n * C * numel;
    const std::int64_t total_rows = C * rows_per_channel;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (numel * C > 16384)
#endif
    for (std::int64_t r = 0; r < total_rows; ++r) {
      const int c = static_cast<int>(r / rows_per_channel);
      std::int64_t rem = r % rows_per_channel;
      std::int64_t off = c * x.stride[1];
      for (int d = sdim - 2; d >= 0; --d) {
        off += (rem % x.shape[2 + d]) * x.stride[2 + d];
        rem /= x.shape[2 + d];
      }
      const std::int64_t step = x.stride[x.ndim - 1];
      RowAccumulator acc;
      for (std::int64_t i = 0; i < len; ++i) {
        const std::int64_t idx = r * len + i;
        float v = st.run_pointwise(0, static_cast<float>(src[off + i * step]), static_cast<std::uint64_t>(idx));
        dst[idx] = static_cast<T>(v);
        if (collect) acc.add(v);
      }
      if (collect) partials[r] = acc;
    }
    run_later_stages<T>(st, dst, numel, len, partials);
  }
}

}  // namespace

void resample(const ArrayRef& data, const OutRef& out, const ArrayRef& seg, const OutRef& seg_out,
              const SpatialSpec& spec, const Program& program) {
  check_spec(data, out, seg, seg_out, spec, program);
  const bool has_data = data.data != nullptr;
  const DType dt = has_data ? data.dtype : DType::Float32;
  if (dt != DType::Float32 && dt != DType::Float64) throw std::invalid_argument("data must be float32 or float64");
  if (spec.ndim == 3) {
    if (dt == DType::Float64) resample_typed<double, 3>(data, out, seg, seg_out, spec, program);
    else resample_typed<float, 3>(data, out, seg, seg_out, spec, program);
  } else {
    if (dt == DType::Float64) resample_typed<double, 2>(data, out, seg, seg_out, spec, program);
    else resample_typed<float, 2>(data, out, seg, seg_out, spec, program);
  }
}

void apply_program(const ArrayRef& x, const OutRef& out, const Program& program) {
  if (x.ndim < 3 || x.ndim > kMaxDims) throw std::invalid_argument("x must be (N, C, *spatial) with 1 to 3 spatial axes");
  if (static_cast<std::int64_t>(program.params.size()) != x.shape[0] * program.n_ops()) {
    throw std::invalid_argument("program parameters must be (N, n_ops)");
  }
  if (program.n_ops() > 0 && static_cast<std::int64_t>(program.seeds.size()) != x.shape[0]) {
    throw std::invalid_argument("program needs one seed per sample");
  }
  if (x.dtype == DType::Float64) program_typed<double>(x, out, program);
  else if (x.dtype == DType::Float32) program_typed<float>(x, out, program);
  else throw std::invalid_argument("intensity operations need float32 or float64 data");
}

void gaussian_blur(const OutRef& x, int spatial_ndim, const std::vector<float>& sigma, double truncate) {
  if (static_cast<std::int64_t>(sigma.size()) != x.shape[0] * spatial_ndim) throw std::invalid_argument("sigma must be (N, ndim)");
  if (x.dtype == DType::Float64) blur_typed<double>(x, spatial_ndim, sigma, truncate);
  else if (x.dtype == DType::Float32) blur_typed<float>(x, spatial_ndim, sigma, truncate);
  else throw std::invalid_argument("gaussian_blur needs float32 or float64 data");
}

}  // namespace delira::cpu

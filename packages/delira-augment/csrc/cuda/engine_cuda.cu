// CUDA executor: the fused resampling + intensity kernel, deterministic statistics, later program
// stages, the cubic B-spline prefilter and the gaussian filter. Uses the header-only core shared with
// the CPU executor, so both compute the same values (up to floating-point contraction).
//
// Every call runs on the caller's stream with the input's device made current (cuda_call.cuh:
// DeviceScope); its parameters go up through pinned staging and its scratch comes from a stream-ordered
// pool, so a call neither synchronises the host nor shares memory with another call. Every kernel loops
// grid-stride (grids are capped at kMaxBlocks) with 64-bit indices, and every launch is checked.
#include "engine_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/gaussian.h"
#include "../core/geometry.h"
#include "../core/intensity.h"
#include "../core/moments.h"
#include "../core/prefilter.h"
#include "../core/program.h"
#include "../core/rng.h"
#include "../core/sampling.h"
#include "../core/spec.h"
#include "cuda_call.cuh"

namespace delira::cuda {
namespace {

using detail::CallMemory;
using detail::check;
using detail::check_launch;
using detail::DeviceScope;
using detail::Layout;

constexpr int kMaxOps = 16;
constexpr int kThreads = 256;
constexpr std::int64_t kChunk = 4096;            // voxels per statistics partial (fixed: deterministic results)
constexpr std::int64_t kMaxBlocks = 65535LL * 16;  // grid cap; kernels loop grid-stride beyond it

unsigned blocks_for(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b < kMaxBlocks ? b : kMaxBlocks));
}

// ---------------------------------------------------------------------------------------------
// Checks that need no GPU: run before the first CUDA call, so a program the executor cannot run is
// refused the same way with or without a device.

void check_program_for_cuda(const cpu::Program& prog) {
  if (prog.n_ops() > kMaxOps) {
    throw std::invalid_argument("the CUDA executor takes at most " + std::to_string(kMaxOps) +
                                " intensity operations per call, got " + std::to_string(prog.n_ops()) +
                                "; split the Compose into two");
  }
}

// ---------------------------------------------------------------------------------------------
// Program description passed by value to the kernels.

// A stage of the program (core/program.h): its stats op `head` (-1 for stage 0) and the pointwise
// ops [first_pointwise, end).
using StageOps = StageRange;

struct ProgramView {
  int n_ops;
  int kinds[kMaxOps];
  int refs[kMaxOps];
  const OpParams* params;     // (N, n_ops)
  const std::uint64_t* keys;  // (N, n_ops)
  Stats* stats;               // (N, C, n_ops)
};

// The pointwise ops of stage `st` on one value of type V (float for float32 data, double for float64).
template <typename V>
__device__ __forceinline__ V run_pointwise(const ProgramView& p, const StageOps& st, std::int64_t n, V v,
                                           std::uint64_t counter) {
  for (int j = st.first_pointwise; j < st.end; ++j) {
    const OpParams& q = p.params[n * p.n_ops + j];
    if (q.active) v = apply_pointwise(static_cast<OpKind>(p.kinds[j]), q, v, p.keys[n * p.n_ops + j], counter);
  }
  return v;
}

// Moments of one value as the CPU accumulates them (cpu/engine.cpp: accumulate): the mean in double
// from the value itself (float64 data is not rounded to float), min and max rounded to float.
template <typename T>
__device__ __forceinline__ Moments value_moment(T v) {
  Moments m;
  m.count = 1.0;
  m.mean = static_cast<double>(v);
  m.m2 = 0.0;
  m.min = static_cast<float>(v);
  m.max = m.min;
  return m;
}

// ---------------------------------------------------------------------------------------------
// The fused kernel, templated on the data type T, the label type L (NoSeg: no segmentation), the
// number of spatial axes and the data's interpolation order, so that each instantiation holds only the
// code (and the registers) of its own case: 128 registers for the canonical 3D linear kernel with int16
// labels (242 with the label type switched at run time), 96 without labels (sm_90). No
// __launch_bounds__: with it ptxas gave the label-free kernels 128 registers too, and forcing two blocks
// per SM made the cubic kernels spill. tests/augment/test_cuda_host_registers.py keeps the budget.

struct NoSeg {};

template <int NDIM>
struct FusedArgs {
  // data: input (or B-spline coefficients for order 3), output
  const void* data;
  std::int64_t d_shape[NDIM];
  std::int64_t d_stride[NDIM];
  std::int64_t d_sample_stride, d_channel_stride;
  std::int64_t d_logical[NDIM];
  int pad;
  int channels;
  void* out;
  // seg
  const void* seg;
  std::int64_t s_shape[NDIM];
  std::int64_t s_stride[NDIM];
  std::int64_t s_sample_stride, s_channel_stride;
  int seg_channels;
  void* seg_out;
  // geometry
  std::int64_t n_samples;
  std::int64_t out_shape[NDIM];
  std::int64_t numel;
  const float* affine;  // (N, NDIM, NDIM + 1)
  const float* grid;    // (N, NDIM, *grid) or nullptr
  std::int64_t grid_shape[NDIM];
  const float* grid_origin;   // (N, NDIM)
  const float* grid_spacing;  // (N, NDIM)
  int order_seg;
  BorderMode mode, mode_seg;
  double cval, cval_seg;
  ProgramView program;
  StageOps stage0;
};

template <int NDIM>
__device__ __forceinline__ void input_coordinate(const FusedArgs<NDIM>& a, std::int64_t n, const std::int64_t* o,
                                                 float* x) {
  // The CPU's row arithmetic (core/geometry.h): leading axes in double, then the step along the row.
  const float* A = a.affine + n * NDIM * (NDIM + 1);
#pragma unroll
  for (int d = 0; d < NDIM; ++d) {
    const float* row = A + d * (NDIM + 1);
    const float start = row_start_coordinate<NDIM>(row, row[NDIM], o);
    x[d] = row_step_coordinate(start, row[NDIM - 1], static_cast<std::int32_t>(o[NDIM - 1]));
  }
  if (a.grid == nullptr) return;
  ControlTaps t[NDIM];
  std::int64_t gnumel = 1;
#pragma unroll
  for (int d = 0; d < NDIM; ++d) {
    t[d] = control_taps(static_cast<float>(o[d]), a.grid_origin[n * NDIM + d], 1.0f / a.grid_spacing[n * NDIM + d],
                        a.grid_shape[d]);
    gnumel *= a.grid_shape[d];
  }
  // The elastic field in the CPU's order (core/geometry.h): the leading axes' taps contracted at the
  // four last-axis control points, then the last axis.
  const float* G = a.grid + n * NDIM * gnumel;
  const ControlTaps& last = t[NDIM - 1];
#pragma unroll
  for (int comp = 0; comp < NDIM; ++comp) {
    float f[4];
    contract_leading_axes<NDIM>(G + comp * gnumel, a.grid_shape, t, last.first, 4, f);
    x[comp] += contract_last_axis(f, last.w[0], last.w[1], last.w[2], last.w[3]);
  }
}

template <typename L, int NDIM>
__device__ __forceinline__ void sample_seg(const FusedArgs<NDIM>& a, std::int64_t n, const float* x,
                                           std::int64_t voxel) {
  const L* base = static_cast<const L*>(a.seg) + n * a.s_sample_stride;
  L* out = static_cast<L*>(a.seg_out) + n * a.seg_channels * a.numel + voxel;
  const L cval = static_cast<L>(a.cval_seg);
  if (a.order_seg == 0) {
    Taps<0, NDIM> taps;
    compute_taps<0, NDIM>(x, a.s_shape, a.s_stride, a.mode_seg, taps);
    std::int64_t off = 0;
#pragma unroll
    for (int d = 0; d < NDIM; ++d) off += taps.offset[d][0];
    for (int c = 0; c < a.seg_channels; ++c) out[c * a.numel] = taps.outside ? cval : base[c * a.s_channel_stride + off];
  } else {
    Taps<1, NDIM> taps;
    compute_taps<1, NDIM>(x, a.s_shape, a.s_stride, a.mode_seg, taps);
    for (int c = 0; c < a.seg_channels; ++c) {
      out[c * a.numel] = gather_label_linear<L, NDIM>(base + c * a.s_channel_stride, taps, cval);
    }
  }
}

template <typename T, typename L, int NDIM, int ORDER>
__global__ void fused_kernel(FusedArgs<NDIM> a) {
  using Acc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const std::int64_t total = a.n_samples * a.numel;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t n = idx / a.numel;
    const std::int64_t voxel = idx - n * a.numel;
    std::int64_t o[NDIM];
    std::int64_t rem = voxel;
#pragma unroll
    for (int d = NDIM - 1; d >= 0; --d) {
      o[d] = rem % a.out_shape[d];
      rem /= a.out_shape[d];
    }
    float x[NDIM];
    input_coordinate<NDIM>(a, n, o, x);
    if (a.data != nullptr) {
      Taps<ORDER, NDIM> taps;
      compute_taps<ORDER, NDIM>(x, a.d_shape, a.d_stride, a.mode, taps, a.pad, a.d_logical);
      const T* base = static_cast<const T*>(a.data) + n * a.d_sample_stride;
      T* out = static_cast<T*>(a.out) + n * a.channels * a.numel + voxel;
      for (int c = 0; c < a.channels; ++c) {
        Acc v = gather<Acc, ORDER, NDIM>(base + c * a.d_channel_stride, taps, static_cast<Acc>(a.cval));
        if (a.stage0.end > a.stage0.first_pointwise) {
          v = run_pointwise<Acc>(a.program, a.stage0, n, v, noise_counter(c, a.numel, voxel));
        }
        out[c * a.numel] = static_cast<T>(v);
      }
    }
    if constexpr (!std::is_same<L, NoSeg>::value) {
      if (a.seg != nullptr) sample_seg<L, NDIM>(a, n, x, voxel);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics: per chunk of kChunk voxels a fixed-order reduction, then the chunks in order. The
// partial of a chunk depends only on the chunk (thread t of the block takes the voxels t, t + kThreads,
// ...), not on the grid, so the statistics are the same for any launch configuration.

template <typename T>
__global__ void chunk_stats_kernel(const T* x, std::int64_t numel, std::int64_t chunks, std::int64_t n_blocks,
                                   Moments* partials) {
  __shared__ Moments shared[kThreads];
  for (std::int64_t b = blockIdx.x; b < n_blocks; b += gridDim.x) {  // b = sc * chunks + k
    const std::int64_t sc = b / chunks;
    const std::int64_t k = b - sc * chunks;
    const T* base = x + sc * numel;
    const std::int64_t begin = k * kChunk;
    const std::int64_t end = begin + kChunk < numel ? begin + kChunk : numel;
    Moments p = empty_moments();
    for (std::int64_t i = begin + threadIdx.x; i < end; i += kThreads) merge_moments(p, value_moment(base[i]));
    shared[threadIdx.x] = p;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) merge_moments(shared[threadIdx.x], shared[threadIdx.x + s]);
      __syncthreads();
    }
    if (threadIdx.x == 0) partials[b] = shared[0];
    __syncthreads();  // `shared` is rewritten by the block's next chunk
  }
}

__global__ void finalize_stats_kernel(const Moments* partials, std::int64_t n_sc, std::int64_t chunks, int channels,
                                      int n_ops, int op, Stats* stats) {
  for (std::int64_t sc = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; sc < n_sc;
       sc += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    Moments p = empty_moments();
    for (std::int64_t k = 0; k < chunks; ++k) merge_moments(p, partials[sc * chunks + k]);
    const std::int64_t n = sc / channels;
    const std::int64_t c = sc - n * channels;
    store_moments(p, stats[(n * channels + c) * n_ops + op]);
  }
}

template <typename T>
__global__ void stage_kernel(T* x, std::int64_t n_samples, int channels, std::int64_t numel, ProgramView p,
                             StageOps st) {
  using Acc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const std::int64_t total = n_samples * channels * numel;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t sc = idx / numel;
    const std::int64_t n = sc / channels;
    const std::int64_t c = sc - n * channels;
    Acc v = static_cast<Acc>(x[idx]);
    if (st.head >= 0) {
      const OpParams& q = p.params[n * p.n_ops + st.head];
      if (q.active) {
        v = apply_with_stats<Acc>(static_cast<OpKind>(p.kinds[st.head]), q, v, p.stats[sc * p.n_ops + st.head],
                                  p.stats[sc * p.n_ops + stats_target_op(p.refs, st.head)]);
      }
    }
    v = run_pointwise<Acc>(p, st, n, v, noise_counter(c, numel, idx - sc * numel));
    x[idx] = static_cast<T>(v);
  }
}

// ---------------------------------------------------------------------------------------------
// Program bookkeeping shared by resample() and apply_program().

struct ProgramRegions {
  Layout::Region params, keys, stats, partials, select_state, select_hist;
};

struct SelectState;

struct DeviceProgram {
  ProgramView view;
  std::vector<StageOps> stages;
  Moments* partials = nullptr;
  SelectState* select_state = nullptr;       // PercentileClip: (N * C, kSelectTargets)
  unsigned long long* select_hist = nullptr;  // PercentileClip: (N * C, kSelectTargets, 256), zero between uses
};

bool has_percentile_clip(const cpu::Program& prog) {
  for (int j = 0; j < prog.n_ops(); ++j)
    if (prog.kinds[j] == OpKind::PercentileClip) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// PercentileClip: exact percentiles per (sample, channel) as the CPU executor defines them
// (cpu/engine.cpp: percentile): the values rounded to float, a = the order statistic of rank
// lo = floor(pct / 100 * (m - 1)), b = the one of rank lo + 1, and a + frac * (b - a) in double rounded
// to float. The order statistics come from a radix selection on the float's bits mapped to unsigned
// integers of the same order: four passes of 8 bits, each a histogram of the next digit among the
// values whose higher digits match the prefix found so far. Counts are integers, so the result is
// exact and does not depend on the launch configuration; no sort, no copy of the data.

constexpr int kSelectTargets = 4;                   // ranks lo and lo + 1 of the lower and the upper percentile
constexpr std::int64_t kSelectChunk = 16 * kChunk;  // values per block and pass

struct SelectState {
  std::int64_t rank;    // rank still to find among the values that match `prefix`
  std::uint32_t prefix; // the digits found so far
  std::uint32_t pad;
};

__device__ __forceinline__ std::uint32_t order_key(float v) {
  const std::uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float key_value(std::uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// pos = pct / 100 * (m - 1) and its integer part, as the CPU computes them (no contraction).
__device__ __forceinline__ double percentile_position(float pct, std::int64_t m) {
  return __dmul_rn(__ddiv_rn(static_cast<double>(pct), 100.0), static_cast<double>(m - 1));
}

__global__ void select_init_kernel(std::int64_t n_sc, int channels, std::int64_t numel, const OpParams* params,
                                   int n_ops, int head, SelectState* state) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n_sc * kSelectTargets;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t sc = i / kSelectTargets;
    const int t = static_cast<int>(i - sc * kSelectTargets);
    const OpParams& q = params[(sc / channels) * n_ops + head];
    const std::int64_t lo = static_cast<std::int64_t>(floor(percentile_position(q.p[t / 2], numel)));
    const std::int64_t rank = lo + (t % 2);
    state[i].rank = rank < numel - 1 ? rank : numel - 1;  // lo + 1 past the end is never used
    state[i].prefix = 0;
    state[i].pad = 0;
  }
}

// Histogram of digit `pass` (bits 31 - 8 pass .. 24 - 8 pass) of the values of each (sample, channel)
// that match each target's prefix. Targets with equal prefixes share one shared-memory histogram.
template <typename T>
__global__ void select_histogram_kernel(const T* x, std::int64_t numel, std::int64_t chunks, std::int64_t n_blocks,
                                        int pass, const SelectState* state, unsigned long long* hist) {
  __shared__ unsigned int h[kSelectTargets][256];
  const int shift = 24 - 8 * pass;
  const std::uint32_t mask = pass == 0 ? 0u : (0xffffffffu << (32 - 8 * pass));
  for (std::int64_t b = blockIdx.x; b < n_blocks; b += gridDim.x) {  // b = sc * chunks + k
    const std::int64_t sc = b / chunks;
    const std::int64_t k = b - sc * chunks;
    std::uint32_t prefix[kSelectTargets];
    int owner[kSelectTargets];  // the first target with the same prefix
#pragma unroll
    for (int t = 0; t < kSelectTargets; ++t) {
      prefix[t] = state[sc * kSelectTargets + t].prefix;
      owner[t] = t;
      for (int u = t - 1; u >= 0; --u)
        if (prefix[u] == prefix[t]) owner[t] = u;
    }
    for (int i = threadIdx.x; i < kSelectTargets * 256; i += blockDim.x) (&h[0][0])[i] = 0u;
    __syncthreads();
    const T* base = x + sc * numel;
    const std::int64_t begin = k * kSelectChunk;
    const std::int64_t end = begin + kSelectChunk < numel ? begin + kSelectChunk : numel;
    for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const std::uint32_t key = order_key(static_cast<float>(base[i]));
      const unsigned digit = (key >> shift) & 0xffu;
#pragma unroll
      for (int t = 0; t < kSelectTargets; ++t) {
        if (owner[t] == t && (key & mask) == prefix[t]) atomicAdd(&h[t][digit], 1u);
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kSelectTargets * 256; i += blockDim.x) {
      const int t = i / 256;
      const unsigned c = h[owner[t]][i % 256];
      if (c != 0u) atomicAdd(&hist[sc * kSelectTargets * 256 + i], static_cast<unsigned long long>(c));
    }
    __syncthreads();  // `h` is cleared for the block's next chunk
  }
}

// The digit of pass `pass` of each target: the bin where the cumulative count passes its rank. Clears
// the histogram for the next pass.
__global__ void select_scan_kernel(std::int64_t n_targets, int pass, SelectState* state, unsigned long long* hist) {
  const int shift = 24 - 8 * pass;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n_targets;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    unsigned long long* bins = hist + i * 256;
    SelectState s = state[i];
    unsigned long long below = 0;
    bool found = false;
    for (int bin = 0; bin < 256; ++bin) {
      const unsigned long long c = bins[bin];
      bins[bin] = 0ull;
      if (!found && static_cast<unsigned long long>(s.rank) < below + c) {
        s.prefix |= static_cast<std::uint32_t>(bin) << shift;
        s.rank -= static_cast<std::int64_t>(below);
        found = true;
      }
      below += c;
    }
    state[i] = s;
  }
}

// The two percentiles of every (sample, channel) from the selected order statistics.
__global__ void select_finish_kernel(std::int64_t n_sc, int channels, std::int64_t numel, const OpParams* params,
                                     int n_ops, int head, const SelectState* state, Stats* stats) {
  for (std::int64_t sc = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; sc < n_sc;
       sc += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const OpParams& q = params[(sc / channels) * n_ops + head];
    float result[2];
    for (int j = 0; j < 2; ++j) {
      const double pos = percentile_position(q.p[j], numel);
      const std::int64_t lo = static_cast<std::int64_t>(floor(pos));
      const double frac = __dsub_rn(pos, static_cast<double>(lo));
      const float a = key_value(state[sc * kSelectTargets + 2 * j].prefix);
      if (frac == 0.0 || lo + 1 >= numel) {
        result[j] = a;
      } else {
        const float b = key_value(state[sc * kSelectTargets + 2 * j + 1].prefix);
        const double av = static_cast<double>(a);
        result[j] = static_cast<float>(__dadd_rn(av, __dmul_rn(frac, __dsub_rn(static_cast<double>(b), av))));
      }
    }
    Stats& st = stats[sc * n_ops + head];
    st.lo = result[0];
    st.hi = result[1];
  }
}

template <typename T>
void select_percentiles(const T* x, std::int64_t n_sc, int channels, std::int64_t numel, const DeviceProgram& dp,
                        int head, cudaStream_t s) {
  select_init_kernel<<<blocks_for(n_sc * kSelectTargets), kThreads, 0, s>>>(n_sc, channels, numel, dp.view.params,
                                                                            dp.view.n_ops, head, dp.select_state);
  check_launch("select_init_kernel");
  const std::int64_t chunks = (numel + kSelectChunk - 1) / kSelectChunk;
  const std::int64_t n_blocks = n_sc * chunks;
  for (int pass = 0; pass < 4; ++pass) {
    select_histogram_kernel<T><<<static_cast<unsigned>(std::min(n_blocks, kMaxBlocks)), kThreads, 0, s>>>(
        x, numel, chunks, n_blocks, pass, dp.select_state, dp.select_hist);
    check_launch("select_histogram_kernel");
    select_scan_kernel<<<blocks_for(n_sc * kSelectTargets), kThreads, 0, s>>>(n_sc * kSelectTargets, pass,
                                                                              dp.select_state, dp.select_hist);
    check_launch("select_scan_kernel");
  }
  select_finish_kernel<<<blocks_for(n_sc), kThreads, 0, s>>>(n_sc, channels, numel, dp.view.params, dp.view.n_ops, head,
                                                              dp.select_state, dp.view.stats);
  check_launch("select_finish_kernel");
}

// Adds the program's parameters and stream keys (uploaded) and its statistics and partial moments
// (device only) to `layout`.
ProgramRegions pack_program(Layout& layout, const cpu::Program& prog, std::int64_t n, int channels,
                            std::int64_t chunks) {
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(n * prog.n_ops()));
  for (std::int64_t i = 0; i < n; ++i)
    for (int j = 0; j < prog.n_ops(); ++j) {
      keys[i * prog.n_ops() + j] = op_stream_key(prog.seeds.data(), static_cast<std::int64_t>(prog.seeds.size()), i, j);
    }
  ProgramRegions r;
  r.params = layout.add(prog.params.data(), prog.params.size() * sizeof(OpParams));
  r.keys = layout.add(keys.data(), keys.size() * sizeof(std::uint64_t));
  const bool later_stages = stage_count(prog.kinds.data(), prog.n_ops()) > 1;
  r.stats = layout.reserve(later_stages ? static_cast<std::size_t>(n * channels * prog.n_ops()) * sizeof(Stats) : 0);
  r.partials = layout.reserve(later_stages ? static_cast<std::size_t>(n * channels * chunks) * sizeof(Moments) : 0);
  const bool select = has_percentile_clip(prog) && chunks > 0;
  const auto targets = static_cast<std::size_t>(n * channels * kSelectTargets);
  r.select_state = layout.reserve(select ? targets * sizeof(SelectState) : 0);
  r.select_hist = layout.reserve(select ? targets * 256 * sizeof(unsigned long long) : 0);
  return r;
}

DeviceProgram device_program(const CallMemory& mem, const ProgramRegions& r, const cpu::Program& prog) {
  DeviceProgram d;
  const int count = stage_count(prog.kinds.data(), prog.n_ops());
  for (int k = 0; k < count; ++k) d.stages.push_back(program_stage(prog.kinds.data(), prog.n_ops(), k));
  d.view.n_ops = prog.n_ops();
  for (int j = 0; j < kMaxOps; ++j) {
    d.view.kinds[j] = j < prog.n_ops() ? static_cast<int>(prog.kinds[j]) : 0;
    d.view.refs[j] = j < prog.n_ops() ? prog.refs[j] : -1;
  }
  d.view.params = mem.at<const OpParams>(r.params);
  d.view.keys = mem.at<const std::uint64_t>(r.keys);
  d.view.stats = mem.at<Stats>(r.stats);
  d.partials = mem.at<Moments>(r.partials);
  d.select_state = mem.at<SelectState>(r.select_state);
  d.select_hist = mem.at<unsigned long long>(r.select_hist);
  return d;
}

// The first stage whose head is a PercentileClip (0 when there is none).
std::size_t first_percentile_stage(const DeviceProgram& dp) {
  for (std::size_t k = 1; k < dp.stages.size(); ++k)
    if (static_cast<OpKind>(dp.view.kinds[dp.stages[k].head]) == OpKind::PercentileClip) return k;
  return 0;
}

// Stages 1.. on the contiguous buffer, each preceded by the statistics of its input (the percentiles
// for PercentileClip).
template <typename T>
void run_later_stages(T* x, std::int64_t n, int channels, std::int64_t numel, DeviceProgram& dp, cudaStream_t s) {
  const std::int64_t chunks = (numel + kChunk - 1) / kChunk;
  const std::int64_t n_sc = n * channels;
  const std::int64_t n_blocks = n_sc * chunks;
  for (std::size_t k = 1; k < dp.stages.size(); ++k) {
    const int head = dp.stages[k].head;
    if (static_cast<OpKind>(dp.view.kinds[head]) == OpKind::PercentileClip) {
      if (dp.select_hist != nullptr && numel > 0) {
        // the histograms start at zero (the scan clears them after each pass)
        if (k == first_percentile_stage(dp)) {
          check(cudaMemsetAsync(dp.select_hist, 0, static_cast<std::size_t>(n_sc) * kSelectTargets * 256 *
                                                       sizeof(unsigned long long), s),
                "cudaMemsetAsync (percentile histograms)");
        }
        select_percentiles<T>(x, n_sc, channels, numel, dp, head, s);
      }
    } else {
      chunk_stats_kernel<T><<<static_cast<unsigned>(std::min(n_blocks, kMaxBlocks)), kThreads, 0, s>>>(
          x, numel, chunks, n_blocks, dp.partials);
      check_launch("chunk_stats_kernel");
      finalize_stats_kernel<<<blocks_for(n_sc), kThreads, 0, s>>>(dp.partials, n_sc, chunks, channels, dp.view.n_ops,
                                                                   head, dp.view.stats);
      check_launch("finalize_stats_kernel");
    }
    stage_kernel<T><<<blocks_for(n_sc * numel), kThreads, 0, s>>>(x, n, channels, numel, dp.view, dp.stages[k]);
    check_launch("stage_kernel");
  }
}

// ---------------------------------------------------------------------------------------------
// Cubic B-spline prefilter on the GPU: copy (edge-padded for mode nearest), then one thread per line.

template <typename T>
__global__ void pad_copy_kernel(const T* src, std::int64_t sample_stride, std::int64_t channel_stride, T* dst,
                                std::int64_t n_sc, int channels, std::int64_t c0, std::int64_t c1, std::int64_t c2,
                                std::int64_t s0, std::int64_t s1, std::int64_t s2, std::int64_t st0, std::int64_t st1,
                                std::int64_t st2, int pad) {
  const std::int64_t cnumel = c0 * c1 * c2;
  const std::int64_t total = n_sc * cnumel;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t sc = idx / cnumel;
    std::int64_t r = idx - sc * cnumel;
    const std::int64_t k = r % c2;
    r /= c2;
    const std::int64_t j = r % c1;
    const std::int64_t i = r / c1;
    auto clampi = [](std::int64_t v, std::int64_t n) { return v < 0 ? 0 : (v >= n ? n - 1 : v); };
    const std::int64_t n = sc / channels, c = sc - n * channels;
    const std::int64_t off = n * sample_stride + c * channel_stride + clampi(i - pad, s0) * st0 +
                             clampi(j - pad, s1) * st1 + clampi(k - pad, s2) * st2;
    dst[idx] = src[off];
  }
}

template <typename T>
__global__ void filter_lines_kernel(T* x, std::int64_t lines, std::int64_t m, std::int64_t stride, std::int64_t inner,
                                    bool reflect) {
  if (m < 2) return;
  for (std::int64_t l = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; l < lines;
       l += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t outer = l / inner;
    bspline_prefilter_line(x + outer * inner * m + (l - outer * inner), m, stride, reflect);
  }
}

// ---------------------------------------------------------------------------------------------

template <typename T, typename L, int NDIM>
void launch_fused_order(const FusedArgs<NDIM>& a, int order, unsigned blocks, cudaStream_t s) {
  switch (order) {
    case 0: fused_kernel<T, L, NDIM, 0><<<blocks, kThreads, 0, s>>>(a); break;
    case 3: fused_kernel<T, L, NDIM, 3><<<blocks, kThreads, 0, s>>>(a); break;
    default: fused_kernel<T, L, NDIM, 1><<<blocks, kThreads, 0, s>>>(a); break;
  }
  check_launch("fused_kernel");
}

template <typename T, int NDIM>
void launch_fused(const FusedArgs<NDIM>& a, const DeviceArray& seg, int order, unsigned blocks, cudaStream_t s) {
  if (seg.data == nullptr) return launch_fused_order<T, NoSeg, NDIM>(a, order, blocks, s);
  switch (seg.dtype) {
    case DType::UInt8: return launch_fused_order<T, std::uint8_t, NDIM>(a, order, blocks, s);
    case DType::Int16: return launch_fused_order<T, std::int16_t, NDIM>(a, order, blocks, s);
    case DType::Int32: return launch_fused_order<T, std::int32_t, NDIM>(a, order, blocks, s);
    case DType::Int64: return launch_fused_order<T, std::int64_t, NDIM>(a, order, blocks, s);
    default:
      throw std::invalid_argument(std::string("seg has dtype ") + dtype_name(seg.dtype) +
                                  "; segmentations need uint8, int16, int32 or int64 labels");
  }
}

template <typename T, int NDIM>
void resample_typed(const DeviceArray& data, void* out, const DeviceArray& seg, void* seg_out,
                    const cpu::SpatialSpec& spec, const cpu::Program& prog, int device, cudaStream_t s) {
  const bool has_data = data.data != nullptr;
  const bool has_seg = seg.data != nullptr;
  const std::int64_t N = has_data ? data.shape[0] : seg.shape[0];
  const int C = has_data ? static_cast<int>(data.shape[1]) : 0;
  std::int64_t numel = 1;
  for (int d = 0; d < NDIM; ++d) numel *= spec.out_shape[d];
  const std::int64_t chunks = (numel + kChunk - 1) / kChunk;

  // Coefficients for order 3 (contiguous, padded by 12 for mode nearest) live in the scratch.
  const bool cubic = has_data && spec.order_data == 3;
  const int pad = (cubic && spec.mode_data == BorderMode::Nearest) ? 12 : 0;
  std::int64_t cshape[3] = {1, 1, 1};
  std::int64_t cnumel = 1;
  if (has_data) {
    for (int d = 0; d < NDIM; ++d) {
      cshape[d] = data.shape[2 + d] + 2 * pad;
      cnumel *= cshape[d];
    }
  }

  // Uploaded: the affine maps, the elastic grid when there is one, the program; device only: the
  // program's statistics and the coefficients.
  Layout layout;
  const Layout::Region r_affine = layout.add(spec.affine.data(), spec.affine.size() * sizeof(float));
  const bool elastic = !spec.elastic.empty();
  const Layout::Region r_grid = layout.add(spec.elastic.data(), spec.elastic.size() * sizeof(float));
  const Layout::Region r_origin = layout.add(spec.grid_origin.data(), spec.grid_origin.size() * sizeof(float));
  const Layout::Region r_spacing = layout.add(spec.grid_spacing.data(), spec.grid_spacing.size() * sizeof(float));
  const ProgramRegions r_prog = pack_program(layout, prog, N, C > 0 ? C : 1, has_data ? chunks : 0);
  const Layout::Region r_coeff = layout.reserve(cubic ? static_cast<std::size_t>(N * C * cnumel) * sizeof(T) : 0);
  CallMemory mem(layout, device, s);
  DeviceProgram dp = device_program(mem, r_prog, prog);

  FusedArgs<NDIM> a{};
  a.n_samples = N;
  a.numel = numel;
  for (int d = 0; d < NDIM; ++d) {
    a.out_shape[d] = spec.out_shape[d];
    a.grid_shape[d] = elastic ? spec.grid[d] : 1;
  }
  a.affine = mem.at<const float>(r_affine);
  a.grid = elastic ? mem.at<const float>(r_grid) : nullptr;
  a.grid_origin = mem.at<const float>(r_origin);
  a.grid_spacing = mem.at<const float>(r_spacing);
  a.mode = spec.mode_data;
  a.mode_seg = spec.mode_seg;
  a.cval = spec.cval_data;
  a.cval_seg = spec.cval_seg;
  a.order_seg = spec.order_seg;
  a.program = dp.view;
  a.stage0 = dp.stages[0];
  a.channels = C;
  a.out = out;
  if (has_data) {
    if (cubic) {
      T* coeff = mem.at<T>(r_coeff);
      const std::int64_t s2 = NDIM == 3 ? data.shape[4] : 1;
      const std::int64_t st2 = NDIM == 3 ? data.stride[4] : 0;
      const std::int64_t c2 = NDIM == 3 ? cshape[2] : 1;
      pad_copy_kernel<T><<<blocks_for(N * C * cnumel), kThreads, 0, s>>>(
          static_cast<const T*>(data.data), data.stride[0], data.stride[1], coeff, N * C, C, cshape[0], cshape[1], c2,
          data.shape[2], data.shape[3], s2, data.stride[2], data.stride[3], st2, pad);
      check_launch("pad_copy_kernel");
      std::int64_t inner = 1;
      for (int axis = NDIM - 1; axis >= 0; --axis) {
        const std::int64_t m = cshape[axis];
        const std::int64_t lines = N * C * cnumel / m;
        filter_lines_kernel<T><<<blocks_for(lines), kThreads, 0, s>>>(coeff, lines, m, inner, inner,
                                                                        spec.mode_data == BorderMode::Reflect);
        check_launch("filter_lines_kernel");
        inner *= m;
      }
      a.data = coeff;
      a.d_sample_stride = C * cnumel;
      a.d_channel_stride = cnumel;
      std::int64_t st = 1;
      for (int d = NDIM - 1; d >= 0; --d) {
        a.d_shape[d] = cshape[d];
        a.d_stride[d] = st;
        st *= cshape[d];
        a.d_logical[d] = data.shape[2 + d];
      }
      a.pad = pad;
    } else {
      a.data = data.data;
      a.d_sample_stride = data.stride[0];
      a.d_channel_stride = data.stride[1];
      for (int d = 0; d < NDIM; ++d) {
        a.d_shape[d] = data.shape[2 + d];
        a.d_stride[d] = data.stride[2 + d];
        a.d_logical[d] = data.shape[2 + d];
      }
      a.pad = 0;
    }
  }
  if (has_seg) {
    a.seg = seg.data;
    a.seg_out = seg_out;
    a.seg_channels = static_cast<int>(seg.shape[1]);
    a.s_sample_stride = seg.stride[0];
    a.s_channel_stride = seg.stride[1];
    for (int d = 0; d < NDIM; ++d) {
      a.s_shape[d] = seg.shape[2 + d];
      a.s_stride[d] = seg.stride[2 + d];
    }
  }
  // Without data the data branch never runs: order 0 is the lightest instantiation for it.
  launch_fused<T, NDIM>(a, seg, has_data ? spec.order_data : 0, blocks_for(N * numel), s);
  if (has_data && dp.stages.size() > 1) run_later_stages<T>(static_cast<T*>(out), N, C, numel, dp, s);
}

template <typename T>
void program_typed(void* x, const std::int64_t* shape, int ndim, const cpu::Program& prog, int device,
                   cudaStream_t s) {
  const std::int64_t N = shape[0];
  const int C = static_cast<int>(shape[1]);
  std::int64_t numel = 1;
  for (int d = 2; d < ndim; ++d) numel *= shape[d];
  const std::int64_t chunks = (numel + kChunk - 1) / kChunk;
  Layout layout;
  const ProgramRegions r_prog = pack_program(layout, prog, N, C, chunks);
  CallMemory mem(layout, device, s);
  DeviceProgram dp = device_program(mem, r_prog, prog);
  T* data = static_cast<T*>(x);
  if (dp.stages[0].end > dp.stages[0].first_pointwise) {
    stage_kernel<T><<<blocks_for(N * C * numel), kThreads, 0, s>>>(data, N, C, numel, dp.view, dp.stages[0]);
    check_launch("stage_kernel");
  }
  run_later_stages<T>(data, N, C, numel, dp, s);
}

// One axis of the separable gaussian filter, src -> dst. radius[n] < 0: sample n is not filtered
// (sigma <= 0, as the CPU executor skips it) and is copied exactly.
template <typename T>
__global__ void blur_axis_kernel(const T* src, T* dst, std::int64_t total, std::int64_t m, std::int64_t stride,
                                 std::int64_t sample_numel, const float* weights, const int* radius, int max_k) {
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t n = idx / sample_numel;
    const int r = radius[n];
    if (r < 0) {
      dst[idx] = src[idx];
      continue;
    }
    const float* w = weights + n * max_k;
    const std::int64_t i = (idx / stride) % m;
    const T* line = src + (idx - i * stride);
    float acc = 0.0f;
    for (int k = -r; k <= r; ++k) acc += w[k + r] * static_cast<float>(line[map_index(i + k, m, BorderMode::Reflect) * stride]);
    dst[idx] = static_cast<T>(acc);
  }
}

template <typename T>
void blur_typed(void* x, const std::int64_t* shape, int ndim, const std::vector<float>& sigma, double truncate,
                int device, cudaStream_t s) {
  const std::int64_t N = shape[0];
  const int sd = ndim - 2;
  std::int64_t numel = 1;
  for (int d = 1; d < ndim; ++d) numel *= shape[d];  // per sample (C * spatial)
  const std::int64_t total = N * numel;
  // All axes' taps in one upload; the axes ping-pong between x and one temporary.
  struct AxisTaps {
    int max_k = 1;
    bool any = false;
    Layout::Region weights, radius;
  };
  std::vector<AxisTaps> axes(static_cast<std::size_t>(sd));
  bool any = false;
  Layout layout;
  for (int axis = 0; axis < sd; ++axis) {
    AxisTaps& t = axes[axis];
    std::vector<int> radius(static_cast<std::size_t>(N), -1);
    for (std::int64_t n = 0; n < N; ++n) {
      const float sg = sigma[n * sd + axis];
      if (!(sg > 0.0f)) continue;
      radius[n] = static_cast<int>(gaussian_radius(sg, truncate));
      t.max_k = std::max(t.max_k, 2 * radius[n] + 1);
      t.any = true;
      any = true;
    }
    std::vector<float> weights(static_cast<std::size_t>(N * t.max_k), 0.0f);
    for (std::int64_t n = 0; n < N; ++n) {
      if (radius[n] >= 0) gaussian_weights(sigma[n * sd + axis], radius[n], weights.data() + n * t.max_k);
    }
    t.weights = layout.add(weights.data(), weights.size() * sizeof(float));
    t.radius = layout.add(radius.data(), radius.size() * sizeof(int));
  }
  if (!any) return;  // every sigma <= 0: nothing to filter
  const Layout::Region r_tmp = layout.reserve(static_cast<std::size_t>(total) * sizeof(T));
  CallMemory mem(layout, device, s);
  T* src = static_cast<T*>(x);
  T* dst = mem.at<T>(r_tmp);
  for (int axis = 0; axis < sd; ++axis) {
    if (!axes[axis].any) continue;
    std::int64_t stride = 1;
    for (int d = axis + 1; d < sd; ++d) stride *= shape[2 + d];
    blur_axis_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(src, dst, total, shape[2 + axis], stride, numel,
                                                                mem.at<const float>(axes[axis].weights),
                                                                mem.at<const int>(axes[axis].radius), axes[axis].max_k);
    check_launch("blur_axis_kernel");
    std::swap(src, dst);
  }
  if (src != static_cast<T*>(x)) {
    check(cudaMemcpyAsync(x, src, static_cast<std::size_t>(total) * sizeof(T), cudaMemcpyDeviceToDevice, s),
          "cudaMemcpyAsync (blur result)");
  }
}

}  // namespace

void resample(const DeviceArray& data, void* out, const DeviceArray& seg, void* seg_out, const cpu::SpatialSpec& spec,
              const cpu::Program& program, void* stream) {
  check_program_for_cuda(program);
  const bool has_data = data.data != nullptr;
  const std::int64_t n = has_data ? data.shape[0] : seg.shape[0];
  std::int64_t numel = 1;
  for (int d = 0; d < spec.ndim; ++d) numel *= spec.out_shape[d];
  if (n == 0 || numel == 0) return;
  // The device of the inputs (and of the outputs the caller allocated) is made current for the call.
  const int device = detail::device_of(has_data ? data.data : seg.data, has_data ? "data" : "seg");
  const char* reference = has_data ? "data" : "seg";
  detail::require_same_device(has_data ? seg.data : nullptr, "seg", device, reference);
  detail::require_same_device(has_data ? out : nullptr, "the data output", device, reference);
  detail::require_same_device(seg.data != nullptr ? seg_out : nullptr, "the seg output", device, reference);
  DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  const bool f64 = has_data && data.dtype == DType::Float64;
  if (spec.ndim == 3) {
    if (f64) resample_typed<double, 3>(data, out, seg, seg_out, spec, program, device, s);
    else resample_typed<float, 3>(data, out, seg, seg_out, spec, program, device, s);
  } else {
    if (f64) resample_typed<double, 2>(data, out, seg, seg_out, spec, program, device, s);
    else resample_typed<float, 2>(data, out, seg, seg_out, spec, program, device, s);
  }
}

void apply_program(void* x, DType dtype, const std::int64_t* shape, int ndim, const cpu::Program& program, void* stream) {
  check_program_for_cuda(program);
  std::int64_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  if (total == 0) return;
  const int device = detail::device_of(x, "x");
  DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64) program_typed<double>(x, shape, ndim, program, device, s);
  else program_typed<float>(x, shape, ndim, program, device, s);
}

void gaussian_blur(void* x, DType dtype, const std::int64_t* shape, int ndim, const std::vector<float>& sigma,
                   double truncate, void* stream) {
  std::int64_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  if (total == 0) return;
  const int device = detail::device_of(x, "x");
  DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64) blur_typed<double>(x, shape, ndim, sigma, truncate, device, s);
  else blur_typed<float>(x, shape, ndim, sigma, truncate, device, s);
}

}  // namespace delira::cuda

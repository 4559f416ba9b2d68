// CUDA executor: the fused resampling + intensity kernel, deterministic statistics, later program
// stages, the cubic B-spline prefilter and the gaussian filter. Uses the header-only core shared with
// the CPU executor, so both compute the same values (up to floating-point contraction).
#include "engine_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
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

namespace delira::cuda {
namespace {

constexpr int kMaxOps = 16;
constexpr int kThreads = 256;
constexpr std::int64_t kChunk = 4096;  // voxels per statistics partial (fixed: deterministic results)

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("delira.augment CUDA error in ") + what + ": " + cudaGetErrorString(err));
  }
}

int blocks_for(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

// ---------------------------------------------------------------------------------------------
// Workspace: one device buffer per (device, stream), grown when needed. Growing synchronises the
// stream once (to free the old buffer safely); steady-state calls allocate nothing.

struct Workspace {
  char* ptr = nullptr;
  std::size_t bytes = 0;
};

char* workspace(std::size_t bytes, cudaStream_t stream) {
  static std::mutex mutex;
  static std::map<std::pair<int, cudaStream_t>, Workspace> pool;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mutex);
  Workspace& ws = pool[{device, stream}];
  if (ws.bytes < bytes) {
    if (ws.ptr != nullptr) {
      check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (workspace growth)");
      check(cudaFree(ws.ptr), "cudaFree");
    }
    std::size_t size = 1 << 20;
    while (size < bytes) size <<= 1;
    void* p = nullptr;
    check(cudaMalloc(&p, size), "cudaMalloc (workspace)");
    ws.ptr = static_cast<char*>(p);
    ws.bytes = size;
  }
  return ws.ptr;
}

// Host-side packing of the parameters, uploaded with one asynchronous copy.
struct Packer {
  std::vector<char> host;
  std::size_t add(const void* src, std::size_t bytes) {
    const std::size_t offset = (host.size() + 255) & ~static_cast<std::size_t>(255);
    host.resize(offset + bytes);
    if (bytes) std::memcpy(host.data() + offset, src, bytes);
    return offset;
  }
  std::size_t reserve(std::size_t bytes) {
    const std::size_t offset = (host.size() + 255) & ~static_cast<std::size_t>(255);
    host.resize(offset + bytes);
    return offset;
  }
};

// ---------------------------------------------------------------------------------------------
// Program description passed by value to the kernels.

// A stage of the program (core/program.h): its stats op `head` (-1 for stage 0) and the pointwise
// ops [first_pointwise, end).
using StageOps = StageRange;

struct ProgramView {
  int n_ops;
  int kinds[kMaxOps];
  int refs[kMaxOps];
  const OpParams* params;       // (N, n_ops)
  const std::uint64_t* keys;    // (N, n_ops)
  Stats* stats;                 // (N, C, n_ops)
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

// ---------------------------------------------------------------------------------------------
// The fused kernel.

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
  int seg_dtype;
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
  for (int d = 0; d < NDIM; ++d) {
    const float* row = A + d * (NDIM + 1);
    const float start = row_start_coordinate<NDIM>(row, row[NDIM], o);
    x[d] = row_step_coordinate(start, row[NDIM - 1], static_cast<std::int32_t>(o[NDIM - 1]));
  }
  if (a.grid == nullptr) return;
  ControlTaps t[NDIM];
  std::int64_t gnumel = 1;
  for (int d = 0; d < NDIM; ++d) {
    t[d] = control_taps(static_cast<float>(o[d]), a.grid_origin[n * NDIM + d], 1.0f / a.grid_spacing[n * NDIM + d],
                        a.grid_shape[d]);
    gnumel *= a.grid_shape[d];
  }
  // The elastic field in the CPU's order (core/geometry.h): the leading axes' taps contracted at the
  // four last-axis control points, then the last axis.
  const float* G = a.grid + n * NDIM * gnumel;
  const ControlTaps& last = t[NDIM - 1];
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

template <typename T, int NDIM, int ORDER>
__global__ void fused_kernel(FusedArgs<NDIM> a) {
  using Acc = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
  const std::int64_t total = a.n_samples * a.numel;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t n = idx / a.numel;
    const std::int64_t voxel = idx - n * a.numel;
    std::int64_t o[NDIM];
    std::int64_t rem = voxel;
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
    if (a.seg != nullptr) {
      switch (a.seg_dtype) {
        case static_cast<int>(DType::UInt8): sample_seg<std::uint8_t, NDIM>(a, n, x, voxel); break;
        case static_cast<int>(DType::Int16): sample_seg<std::int16_t, NDIM>(a, n, x, voxel); break;
        case static_cast<int>(DType::Int32): sample_seg<std::int32_t, NDIM>(a, n, x, voxel); break;
        default: sample_seg<std::int64_t, NDIM>(a, n, x, voxel); break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics: per chunk of kChunk voxels a fixed-order reduction, then the chunks in order.

template <typename T>
__global__ void chunk_stats_kernel(const T* x, std::int64_t numel, std::int64_t chunks, Moments* partials) {
  // one block per (sample-channel, chunk); blockIdx.x = sc * chunks + k
  const std::int64_t sc = blockIdx.x / chunks;
  const std::int64_t k = blockIdx.x - sc * chunks;
  const T* base = x + sc * numel;
  const std::int64_t begin = k * kChunk;
  const std::int64_t end = begin + kChunk < numel ? begin + kChunk : numel;
  Moments p = empty_moments();
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    merge_moments(p, single_moment(static_cast<float>(base[i])));
  }
  __shared__ Moments shared[kThreads];
  shared[threadIdx.x] = p;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) merge_moments(shared[threadIdx.x], shared[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = shared[0];
}

__global__ void finalize_stats_kernel(const Moments* partials, std::int64_t n_sc, std::int64_t chunks, int channels,
                                      int n_ops, int op, Stats* stats) {
  const std::int64_t sc = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (sc >= n_sc) return;
  Moments p = empty_moments();
  for (std::int64_t k = 0; k < chunks; ++k) merge_moments(p, partials[sc * chunks + k]);
  const std::int64_t n = sc / channels;
  const std::int64_t c = sc - n * channels;
  store_moments(p, stats[(n * channels + c) * n_ops + op]);
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

struct DeviceProgram {
  ProgramView view;
  std::vector<StageOps> stages;
  Moments* partials = nullptr;
};

std::vector<StageOps> split_stages(const cpu::Program& prog) {
  for (int j = 0; j < prog.n_ops(); ++j) {
    if (prog.kinds[j] == OpKind::PercentileClip) {
      throw std::invalid_argument(
          "PercentileClip is not available in the CUDA executor yet; clip percentiles on the CPU before moving the "
          "data to the GPU, or run this transform with backend='cpu'");
    }
  }
  std::vector<StageOps> stages;
  const int count = stage_count(prog.kinds.data(), prog.n_ops());
  for (int k = 0; k < count; ++k) stages.push_back(program_stage(prog.kinds.data(), prog.n_ops(), k));
  return stages;
}

// Packs the program into `pk`; returns offsets (params, keys, stats, partials) for later fix-up.
struct ProgramOffsets {
  std::size_t params, keys, stats, partials;
};

ProgramOffsets pack_program(Packer& pk, const cpu::Program& prog, std::int64_t n, int channels, std::int64_t chunks) {
  if (prog.n_ops() > kMaxOps) {
    throw std::invalid_argument("the CUDA executor takes at most " + std::to_string(kMaxOps) + " intensity operations per call");
  }
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(n * prog.n_ops()));
  for (std::int64_t i = 0; i < n; ++i)
    for (int j = 0; j < prog.n_ops(); ++j) {
      keys[i * prog.n_ops() + j] = op_stream_key(prog.seeds.data(), static_cast<std::int64_t>(prog.seeds.size()), i, j);
    }
  ProgramOffsets off;
  off.params = pk.add(prog.params.data(), prog.params.size() * sizeof(OpParams));
  off.keys = pk.add(keys.data(), keys.size() * sizeof(std::uint64_t));
  off.stats = pk.reserve(static_cast<std::size_t>(n * channels * (prog.n_ops() > 0 ? prog.n_ops() : 1)) * sizeof(Stats));
  off.partials = pk.reserve(static_cast<std::size_t>(n * channels * chunks) * sizeof(Moments));
  return off;
}

DeviceProgram device_program(char* dev, const ProgramOffsets& off, const cpu::Program& prog) {
  DeviceProgram d;
  d.stages = split_stages(prog);
  d.view.n_ops = prog.n_ops();
  for (int j = 0; j < prog.n_ops(); ++j) {
    d.view.kinds[j] = static_cast<int>(prog.kinds[j]);
    d.view.refs[j] = prog.refs[j];
  }
  d.view.params = reinterpret_cast<const OpParams*>(dev + off.params);
  d.view.keys = reinterpret_cast<const std::uint64_t*>(dev + off.keys);
  d.view.stats = reinterpret_cast<Stats*>(dev + off.stats);
  d.partials = reinterpret_cast<Moments*>(dev + off.partials);
  return d;
}

// Stages 1.. on the contiguous buffer, each preceded by the statistics of its input.
template <typename T>
void run_later_stages(T* x, std::int64_t n, int channels, std::int64_t numel, DeviceProgram& dp, cudaStream_t s) {
  const std::int64_t chunks = (numel + kChunk - 1) / kChunk;
  for (std::size_t k = 1; k < dp.stages.size(); ++k) {
    const std::int64_t n_sc = n * channels;
    chunk_stats_kernel<T><<<static_cast<unsigned>(n_sc * chunks), kThreads, 0, s>>>(x, numel, chunks, dp.partials);
    finalize_stats_kernel<<<blocks_for(n_sc), kThreads, 0, s>>>(dp.partials, n_sc, chunks, channels, dp.view.n_ops,
                                                                 dp.stages[k].head, dp.view.stats);
    stage_kernel<T><<<blocks_for(n * channels * numel), kThreads, 0, s>>>(x, n, channels, numel, dp.view, dp.stages[k]);
    check(cudaGetLastError(), "program stage launch");
  }
}

// ---------------------------------------------------------------------------------------------
// Cubic B-spline prefilter on the GPU: copy (edge-padded for mode nearest), then one thread per line.

template <typename T, int NDIM>
__global__ void pad_copy_kernel(const T* src, std::int64_t sample_stride, std::int64_t channel_stride, const std::int64_t* dummy,
                                T* dst, std::int64_t n_sc, int channels, std::int64_t c0, std::int64_t c1, std::int64_t c2,
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
  (void)dummy;
}

template <typename T>
__global__ void filter_lines_kernel(T* x, std::int64_t lines, std::int64_t m, std::int64_t stride, std::int64_t inner,
                                    bool reflect) {
  const std::int64_t l = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (l >= lines || m < 2) return;
  const std::int64_t outer = l / inner;
  bspline_prefilter_line(x + outer * inner * m + (l - outer * inner), m, stride, reflect);
}

// ---------------------------------------------------------------------------------------------

template <typename T, int NDIM>
void resample_typed(const DeviceArray& data, void* out, const DeviceArray& seg, void* seg_out,
                    const cpu::SpatialSpec& spec, const cpu::Program& prog, cudaStream_t s) {
  const bool has_data = data.data != nullptr;
  const bool has_seg = seg.data != nullptr;
  const std::int64_t N = has_data ? data.shape[0] : seg.shape[0];
  const int C = has_data ? static_cast<int>(data.shape[1]) : 0;
  std::int64_t numel = 1;
  for (int d = 0; d < NDIM; ++d) numel *= spec.out_shape[d];
  if (N == 0 || numel == 0) return;
  const std::int64_t chunks = (numel + kChunk - 1) / kChunk;

  // Coefficients for order 3 (contiguous, padded by 12 for mode nearest) live in the workspace.
  const int pad = (has_data && spec.order_data == 3 && spec.mode_data == BorderMode::Nearest) ? 12 : 0;
  std::int64_t cshape[3] = {1, 1, 1};
  std::int64_t cnumel = 1;
  if (has_data) {
    for (int d = 0; d < NDIM; ++d) {
      cshape[d] = data.shape[2 + d] + 2 * pad;
      cnumel *= cshape[d];
    }
  }

  Packer pk;
  const std::size_t off_affine = pk.add(spec.affine.data(), spec.affine.size() * sizeof(float));
  const std::size_t off_grid = pk.add(spec.elastic.data(), spec.elastic.size() * sizeof(float));
  const std::size_t off_origin = pk.add(spec.grid_origin.data(), spec.grid_origin.size() * sizeof(float));
  const std::size_t off_spacing = pk.add(spec.grid_spacing.data(), spec.grid_spacing.size() * sizeof(float));
  const ProgramOffsets poff = pack_program(pk, prog, N, C > 0 ? C : 1, chunks);
  const std::size_t off_coeff =
      (has_data && spec.order_data == 3) ? pk.reserve(static_cast<std::size_t>(N * C * cnumel) * sizeof(T)) : 0;
  char* dev = workspace(pk.host.size(), s);
  check(cudaMemcpyAsync(dev, pk.host.data(), off_coeff ? off_coeff : pk.host.size(), cudaMemcpyHostToDevice, s),
        "cudaMemcpyAsync (parameters)");
  DeviceProgram dp = device_program(dev, poff, prog);

  FusedArgs<NDIM> a{};
  a.n_samples = N;
  a.numel = numel;
  for (int d = 0; d < NDIM; ++d) {
    a.out_shape[d] = spec.out_shape[d];
    a.grid_shape[d] = spec.grid[d];
  }
  a.affine = reinterpret_cast<const float*>(dev + off_affine);
  a.grid = spec.elastic.empty() ? nullptr : reinterpret_cast<const float*>(dev + off_grid);
  a.grid_origin = reinterpret_cast<const float*>(dev + off_origin);
  a.grid_spacing = reinterpret_cast<const float*>(dev + off_spacing);
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
    if (spec.order_data == 3) {
      T* coeff = reinterpret_cast<T*>(dev + off_coeff);
      const std::int64_t s2 = NDIM == 3 ? data.shape[4] : 1;
      const std::int64_t st2 = NDIM == 3 ? data.stride[4] : 0;
      const std::int64_t c2 = NDIM == 3 ? cshape[2] : 1;
      pad_copy_kernel<T, NDIM><<<blocks_for(N * C * cnumel), kThreads, 0, s>>>(
          static_cast<const T*>(data.data), data.stride[0], data.stride[1], nullptr, coeff, N * C, C, cshape[0],
          cshape[1], c2, data.shape[2], data.shape[3], s2, data.stride[2], data.stride[3], st2, pad);
      std::int64_t inner = 1;
      for (int axis = NDIM - 1; axis >= 0; --axis) {
        const std::int64_t m = cshape[axis];
        const std::int64_t lines = N * C * cnumel / m;
        filter_lines_kernel<T><<<blocks_for(lines), kThreads, 0, s>>>(coeff, lines, m, inner, inner,
                                                                        spec.mode_data == BorderMode::Reflect);
        inner *= m;
      }
      check(cudaGetLastError(), "prefilter launch");
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
    a.seg_dtype = static_cast<int>(seg.dtype);
    a.s_sample_stride = seg.stride[0];
    a.s_channel_stride = seg.stride[1];
    for (int d = 0; d < NDIM; ++d) {
      a.s_shape[d] = seg.shape[2 + d];
      a.s_stride[d] = seg.stride[2 + d];
    }
  }
  const int blocks = blocks_for(N * numel);
  switch (spec.order_data) {
    case 0: fused_kernel<T, NDIM, 0><<<blocks, kThreads, 0, s>>>(a); break;
    case 3: fused_kernel<T, NDIM, 3><<<blocks, kThreads, 0, s>>>(a); break;
    default: fused_kernel<T, NDIM, 1><<<blocks, kThreads, 0, s>>>(a); break;
  }
  check(cudaGetLastError(), "fused kernel launch");
  if (has_data && dp.stages.size() > 1) run_later_stages<T>(static_cast<T*>(out), N, C, numel, dp, s);
}

template <typename T>
void program_typed(void* x, const std::int64_t* shape, int ndim, const cpu::Program& prog, cudaStream_t s) {
  const std::int64_t N = shape[0];
  const int C = static_cast<int>(shape[1]);
  std::int64_t numel = 1;
  for (int d = 2; d < ndim; ++d) numel *= shape[d];
  if (N == 0 || numel == 0) return;
  const std::int64_t chunks = (numel + kChunk - 1) / kChunk;
  Packer pk;
  const ProgramOffsets poff = pack_program(pk, prog, N, C, chunks);
  char* dev = workspace(pk.host.size(), s);
  check(cudaMemcpyAsync(dev, pk.host.data(), pk.host.size(), cudaMemcpyHostToDevice, s), "cudaMemcpyAsync (parameters)");
  DeviceProgram dp = device_program(dev, poff, prog);
  T* data = static_cast<T*>(x);
  if (dp.stages[0].end > dp.stages[0].first_pointwise) {
    stage_kernel<T><<<blocks_for(N * C * numel), kThreads, 0, s>>>(data, N, C, numel, dp.view, dp.stages[0]);
  }
  run_later_stages<T>(data, N, C, numel, dp, s);
  check(cudaGetLastError(), "program launch");
}

template <typename T>
__global__ void blur_axis_kernel(const T* src, T* dst, std::int64_t total, std::int64_t m, std::int64_t stride,
                                 std::int64_t sample_numel, const float* weights, const int* radius, int max_k) {
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const std::int64_t n = idx / sample_numel;
    const int r = radius[n];
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
                cudaStream_t s) {
  const std::int64_t N = shape[0];
  const int sd = ndim - 2;
  std::int64_t numel = 1;
  for (int d = 1; d < ndim; ++d) numel *= shape[d];  // per sample (C * spatial)
  const std::int64_t total = N * numel;
  if (total == 0) return;
  for (int axis = 0; axis < sd; ++axis) {
    int max_k = 1;
    std::vector<int> radius(static_cast<std::size_t>(N), 0);
    for (std::int64_t n = 0; n < N; ++n) {
      radius[n] = static_cast<int>(gaussian_radius(sigma[n * sd + axis], truncate));
      max_k = std::max(max_k, 2 * radius[n] + 1);
    }
    std::vector<float> weights(static_cast<std::size_t>(N * max_k), 0.0f);
    for (std::int64_t n = 0; n < N; ++n) gaussian_weights(sigma[n * sd + axis], radius[n], weights.data() + n * max_k);
    Packer pk;
    const std::size_t off_w = pk.add(weights.data(), weights.size() * sizeof(float));
    const std::size_t off_r = pk.add(radius.data(), radius.size() * sizeof(int));
    const std::size_t off_tmp = pk.reserve(static_cast<std::size_t>(total) * sizeof(T));
    char* dev = workspace(pk.host.size(), s);
    check(cudaMemcpyAsync(dev, pk.host.data(), off_tmp, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync (blur weights)");
    std::int64_t stride = 1;
    for (int d = axis + 1; d < sd; ++d) stride *= shape[2 + d];
    T* tmp = reinterpret_cast<T*>(dev + off_tmp);
    blur_axis_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(static_cast<T*>(x), tmp, total, shape[2 + axis], stride,
                                                                numel, reinterpret_cast<float*>(dev + off_w),
                                                                reinterpret_cast<int*>(dev + off_r), max_k);
    check(cudaMemcpyAsync(x, tmp, static_cast<std::size_t>(total) * sizeof(T), cudaMemcpyDeviceToDevice, s),
          "cudaMemcpyAsync (blur)");
    check(cudaGetLastError(), "blur launch");
  }
}

}  // namespace

void resample(const DeviceArray& data, void* out, const DeviceArray& seg, void* seg_out, const cpu::SpatialSpec& spec,
              const cpu::Program& program, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const bool f64 = data.data != nullptr && data.dtype == DType::Float64;
  if (spec.ndim == 3) {
    if (f64) resample_typed<double, 3>(data, out, seg, seg_out, spec, program, s);
    else resample_typed<float, 3>(data, out, seg, seg_out, spec, program, s);
  } else {
    if (f64) resample_typed<double, 2>(data, out, seg, seg_out, spec, program, s);
    else resample_typed<float, 2>(data, out, seg, seg_out, spec, program, s);
  }
}

void apply_program(void* x, DType dtype, const std::int64_t* shape, int ndim, const cpu::Program& program, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64) program_typed<double>(x, shape, ndim, program, s);
  else program_typed<float>(x, shape, ndim, program, s);
}

void gaussian_blur(void* x, DType dtype, const std::int64_t* shape, int ndim, const std::vector<float>& sigma,
                   double truncate, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64) blur_typed<double>(x, shape, ndim, sigma, truncate, s);
  else blur_typed<float>(x, shape, ndim, sigma, truncate, s);
}

}  // namespace delira::cuda

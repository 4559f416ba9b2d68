// CUDA executor of the copy-like operations: flip, crop and the NaN check; and the device plumbing
// of the DLPack interop (interop_cuda.h).
#include "flip_cuda.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda_call.cuh"
#include "interop_cuda.h"

namespace delira::cuda {
namespace {

template <typename T>
__global__ void flip_kernel(const T* __restrict__ in, T* __restrict__ out, FlipGeometry g,
                            std::int64_t total) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    out[i] = in[flip_source_offset(g, i)];
  }
}

unsigned grid_for(std::int64_t total, int threads) {
  const std::int64_t wanted = (total + threads - 1) / threads;
  return static_cast<unsigned>(wanted < 1 ? 1 : (wanted < 65535 * 8 ? wanted : 65535 * 8));
}

// One block per output row (all axes but the last, grid-stride over the rows), its threads along the
// last axis: the row's index arithmetic is done once, and the reads and writes along a row coalesce.
// Input element start[n] + o, or the pad value where that lies outside the input.
template <typename T>
__global__ void crop_kernel(const T* __restrict__ in, T* __restrict__ out, CropGeometry g,
                            const std::int64_t* __restrict__ starts, T pad, std::int64_t rows) {
  const int sd = g.ndim - 2;
  const int last = g.ndim - 1;
  const std::int64_t width = g.out_shape[last];
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    std::int64_t rem = row;
    std::int64_t o[kMaxDims];
    for (int d = last - 1; d >= 0; --d) {
      o[d] = rem % g.out_shape[d];
      rem /= g.out_shape[d];
    }
    const std::int64_t* start = starts + o[0] * sd;
    std::int64_t offset = o[0] * g.in_stride[0] + o[1] * g.in_stride[1];
    bool inside = true;
    for (int d = 2; d < last; ++d) {
      const std::int64_t src = start[d - 2] + o[d];
      inside = inside && src >= 0 && src < g.in_shape[d];
      offset += src * g.in_stride[d];
    }
    const std::int64_t first = last >= 2 ? start[last - 2] : 0;
    T* dst = out + row * width;
    for (std::int64_t x = threadIdx.x; x < width; x += blockDim.x) {
      const std::int64_t src = first + x;
      dst[x] = (inside && src >= 0 && src < g.in_shape[last]) ? in[offset + src * g.in_stride[last]] : pad;
    }
  }
}

template <typename T>
__global__ void any_nan_kernel(const T* __restrict__ in, FlipGeometry g, std::int64_t total, int* flag) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    const T v = in[flip_source_offset(g, i)];
    if (v != v) *flag = 1;  // only NaN compares unequal to itself
  }
}

}  // namespace

void crop(const void* in, void* out, DType dtype, const CropGeometry& g, const std::vector<std::int64_t>& starts,
          std::uint64_t pad_bits, void* stream) {
  if (g.ndim < 3 || g.ndim > kMaxDims) {
    throw std::invalid_argument("crop: x has " + std::to_string(g.ndim) +
                                " dimensions; expected (N, C, *spatial) with 1 to 3 spatial axes");
  }
  if (g.out_shape[0] != g.in_shape[0] || g.out_shape[1] != g.in_shape[1]) {
    throw std::invalid_argument("crop: the output must keep the input's batch and channel axes");
  }
  std::int64_t total = 1;
  for (int d = 0; d < g.ndim; ++d) {
    if (g.in_shape[d] < 0 || g.out_shape[d] < 0) throw std::invalid_argument("crop: negative extent");
    total *= g.out_shape[d];
  }
  if (static_cast<std::int64_t>(starts.size()) != g.in_shape[0] * (g.ndim - 2)) {
    throw std::invalid_argument("crop: starts must hold N x (number of spatial axes) entries");
  }
  if (total == 0) return;
  const int device = detail::device_of(in, "x");
  detail::require_same_device(out, "the output", device, "x");
  detail::DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  detail::Layout layout;
  const detail::Layout::Region r_starts = layout.add(starts.data(), starts.size() * sizeof(std::int64_t));
  detail::CallMemory mem(layout, device, s);
  const std::int64_t width = g.out_shape[g.ndim - 1];
  const std::int64_t rows = total / width;
  const int threads = width >= 256 ? 256 : static_cast<int>((width + 31) / 32 * 32);
  const unsigned blocks = static_cast<unsigned>(rows < 65535LL * 16 ? rows : 65535LL * 16);
  DELIRA_DISPATCH_DTYPE(dtype, [&] {
    scalar_t pad;
    std::memcpy(&pad, &pad_bits, sizeof(scalar_t));  // little-endian: the value's bytes come first
    crop_kernel<scalar_t><<<blocks, threads, 0, s>>>(static_cast<const scalar_t*>(in), static_cast<scalar_t*>(out), g,
                                                     mem.at<const std::int64_t>(r_starts), pad, rows);
  });
  detail::check_launch("crop_kernel");
}

bool any_nan(const void* in, DType dtype, int ndim, const std::int64_t* shape, const std::int64_t* strides,
             void* stream) {
  if (dtype != DType::Float32 && dtype != DType::Float64) return false;  // integers hold no NaN
  FlipGeometry g;
  g.ndim = ndim;
  for (int d = 0; d < ndim; ++d) {
    g.shape[d] = shape[d];
    g.in_strides[d] = strides[d];
  }
  check_flip_geometry(g);
  const std::int64_t total = g.numel();
  if (total == 0) return false;
  const int device = detail::device_of(in, "x");
  detail::DeviceScope scope(device);
  auto s = static_cast<cudaStream_t>(stream);
  detail::DeviceScratch flag(sizeof(int), device, s);
  detail::check(cudaMemsetAsync(flag.data(), 0, sizeof(int), s), "cudaMemsetAsync (NaN flag)");
  const int threads = 256;
  if (dtype == DType::Float64) {
    any_nan_kernel<double><<<grid_for(total, threads), threads, 0, s>>>(static_cast<const double*>(in), g, total,
                                                                          reinterpret_cast<int*>(flag.data()));
  } else {
    any_nan_kernel<float><<<grid_for(total, threads), threads, 0, s>>>(static_cast<const float*>(in), g, total,
                                                                         reinterpret_cast<int*>(flag.data()));
  }
  detail::check_launch("any_nan_kernel");
  int found = 0;
  detail::check(cudaMemcpyAsync(&found, flag.data(), sizeof(int), cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync (NaN flag)");
  detail::check(cudaStreamSynchronize(s), "cudaStreamSynchronize (NaN check)");
  return found != 0;
}

void* interop_stream(int device) {
  static std::mutex mutex;
  static std::map<int, cudaStream_t> streams;  // never destroyed: buffers may be freed on them at exit
  std::lock_guard<std::mutex> lock(mutex);
  auto it = streams.find(device);
  if (it != streams.end()) return it->second;
  detail::DeviceScope scope(device);
  cudaStream_t s = nullptr;
  detail::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags (interop stream)");
  streams.emplace(device, s);
  return s;
}

int pointer_device(const void* ptr) { return detail::device_of(ptr, "x"); }

void* buffer_alloc(std::size_t bytes, int device, void* stream) {
  detail::DeviceScope scope(device);
  const detail::DevicePool pool = detail::device_pool(device);
  void* p = nullptr;
  const std::size_t n = bytes == 0 ? 1 : bytes;  // a valid pointer for empty arrays too
  if (pool.stream_ordered) {
    detail::check(cudaMallocFromPoolAsync(&p, n, pool.pool, static_cast<cudaStream_t>(stream)),
                  "cudaMallocFromPoolAsync (output)");
  } else {
    detail::check(cudaMalloc(&p, n), "cudaMalloc (output)");
  }
  return p;
}

void buffer_free(void* ptr, int device, void* stream, bool wait_for_device) noexcept {
  if (ptr == nullptr) return;
  try {
    detail::DeviceScope scope(device);
    if (wait_for_device) cudaDeviceSynchronize();
    if (detail::device_pool(device).stream_ordered) {  // created by buffer_alloc: a lookup here
      cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream));
    } else {
      cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
      cudaFree(ptr);
    }
  } catch (...) {
    // Deleters cannot report errors (they may run at interpreter exit, after the driver shut down).
  }
  cudaGetLastError();  // a failed free must not poison later calls
}

void stream_wait(void* consumer, void* producer, int device) {
  if (consumer == producer) return;
  detail::DeviceScope scope(device);
  cudaEvent_t event = nullptr;
  detail::check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate (hand-over)");
  const cudaError_t rec = cudaEventRecord(event, static_cast<cudaStream_t>(producer));
  const cudaError_t wait = rec == cudaSuccess ? cudaStreamWaitEvent(static_cast<cudaStream_t>(consumer), event, 0) : rec;
  cudaEventDestroy(event);  // released once the wait has completed
  detail::check(wait, "cudaStreamWaitEvent (hand-over to the consumer's stream)");
}

void stream_synchronize(void* stream, int device) {
  detail::DeviceScope scope(device);
  detail::check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
}

void device_synchronize(int device) {
  detail::DeviceScope scope(device);
  detail::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

void flip(const void* in, void* out, DType dtype, const FlipGeometry& g, void* stream) {
  check_flip_geometry(g);
  const std::int64_t total = g.numel();
  if (total == 0) return;
  // The input's device is made current for the launch (and the output must be on it).
  const int device = detail::device_of(in, "x");
  detail::require_same_device(out, "the output", device, "x");
  detail::DeviceScope scope(device);
  const int threads = 256;
  const std::int64_t wanted = (total + threads - 1) / threads;
  const int blocks = static_cast<int>(wanted < 65535 * 8 ? wanted : 65535 * 8);
  auto s = static_cast<cudaStream_t>(stream);
  DELIRA_DISPATCH_DTYPE(dtype, [&] {
    flip_kernel<scalar_t><<<blocks, threads, 0, s>>>(static_cast<const scalar_t*>(in),
                                                      static_cast<scalar_t*>(out), g, total);
  });
  detail::check_launch("flip_kernel");
}

int device_count(std::string* error) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (error) *error = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error state
    return -1;
  }
  return n;
}

std::string runtime_version() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
}

}  // namespace delira::cuda

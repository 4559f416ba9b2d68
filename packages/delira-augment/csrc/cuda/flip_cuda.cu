#include "flip_cuda.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_call.cuh"

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

}  // namespace

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

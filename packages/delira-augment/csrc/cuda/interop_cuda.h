// CUDA executor of the copy-like operations (crop, NaN check) and the device plumbing of the DLPack
// interop (delira's own stream per device, output buffers, stream hand-over). No CUDA includes, so
// host-only code (the bindings) can call it; implemented in flip_cuda.cu.
//
// Streams are cudaStream_t values passed as void*. The DLPack/Array-API stream integers map onto them
// unchanged: 1 is the legacy default stream (cudaStreamLegacy), 2 the per-thread default stream
// (cudaStreamPerThread), larger values are stream pointers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/config.h"

namespace delira::cuda {

// A crop of (N, C, *spatial) with per-sample starts: out[n, c, o] = in[n, c, start[n] + o] where that
// lies inside the input, else the pad value. Strides in elements (any sign); the output is C-contiguous.
struct CropGeometry {
  int ndim = 0;  // 3 to kMaxDims: (N, C) and 1 to 3 spatial axes
  std::int64_t in_shape[kMaxDims] = {0, 0, 0, 0, 0};
  std::int64_t in_stride[kMaxDims] = {0, 0, 0, 0, 0};
  std::int64_t out_shape[kMaxDims] = {0, 0, 0, 0, 0};
};

// Crops `in` into `out` on `stream`. `starts` holds N x (ndim - 2) first input indices (may be
// negative or beyond the input: those voxels are padding); `pad_bits` the pad value's bytes in the
// dtype (little-endian, zero-extended to 64 bits). Asynchronous. Throws std::invalid_argument for
// inconsistent arguments or memory that is not on a device, std::runtime_error for CUDA failures.
void crop(const void* in, void* out, DType dtype, const CropGeometry& g, const std::vector<std::int64_t>& starts,
          std::uint64_t pad_bits, void* stream);

// Whether the strided float array holds a NaN. Synchronises `stream` (the answer goes to the host).
bool any_nan(const void* in, DType dtype, int ndim, const std::int64_t* shape, const std::int64_t* strides,
             void* stream);

// delira's own stream of `device` (non-blocking, created on first use, kept for the process): the
// stream of calls on arrays of frameworks that have no notion of a current stream (TensorFlow, JAX).
void* interop_stream(int device);

// The device that holds `ptr` (device or managed memory); throws std::invalid_argument otherwise.
int pointer_device(const void* ptr);

// Device memory of `bytes` on `device` from delira's stream-ordered pool, allocated on `stream`.
void* buffer_alloc(std::size_t bytes, int device, void* stream);

// Returns buffer_alloc memory. `wait_for_device`: first wait until every stream of the device is idle
// (memory that a consumer may still be reading on a stream delira does not know), then free
// stream-ordered on `stream`; otherwise free stream-ordered on `stream` right away.
void buffer_free(void* ptr, int device, void* stream, bool wait_for_device) noexcept;

// Makes `consumer` wait (on the device) for the work enqueued on `producer` so far; no host wait.
void stream_wait(void* consumer, void* producer, int device);

void stream_synchronize(void* stream, int device);
void device_synchronize(int device);

}  // namespace delira::cuda

// CUDA executor of the fused augmentation pass (no CUDA includes: callable from host-only code).
//
// Same semantics as the CPU engine (cpu/engine.h) on device memory: one kernel launch per batch for
// the fused resampling + intensity pass with per-sample parameters, then one elementwise launch per
// later program stage, with statistics reduced per (sample, channel) in a fixed order (results do
// not depend on the launch configuration). Everything runs on the caller's stream with the device
// that holds the inputs made current; parameters go up through pinned staging buffers (a true
// asynchronous copy) and scratch memory is allocated and freed stream-ordered per call, so calls from
// several threads or streams share no buffer and a call does not synchronise the host (details in
// cuda_call.cuh). Argument errors (a program the executor cannot run, inputs on different devices or
// not in device memory) are std::invalid_argument and are raised before any kernel is enqueued;
// CUDA failures are std::runtime_error naming the call that failed.
#pragma once

#include <cstdint>
#include <vector>

#include "../cpu/engine.h"

namespace delira::cuda {

// A strided device array (N, C, *spatial); data == nullptr for "absent".
struct DeviceArray {
  const void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  std::int64_t shape[kMaxDims] = {0, 0, 0, 0, 0};
  std::int64_t stride[kMaxDims] = {0, 0, 0, 0, 0};  // elements
};

// The fused pass on the GPU: data (float32/float64) and seg (integer labels) resampled into the
// C-contiguous outputs `out` / `seg_out` (device pointers of the right size, allocated by the caller's
// framework), with `spec` and `program` as for the CPU engine. `stream` is a cudaStream_t.
void resample(const DeviceArray& data, void* out, const DeviceArray& seg, void* seg_out,
              const cpu::SpatialSpec& spec, const cpu::Program& program, void* stream);

// The program alone on a contiguous float array (N, C, *spatial), in place.
void apply_program(void* x, DType dtype, const std::int64_t* shape, int ndim, const cpu::Program& program,
                   void* stream);

// Separable gaussian filter (mode reflect) in place on a contiguous float array, sigma (N, ndim).
void gaussian_blur(void* x, DType dtype, const std::int64_t* shape, int ndim, const std::vector<float>& sigma,
                   double truncate, void* stream);

}  // namespace delira::cuda

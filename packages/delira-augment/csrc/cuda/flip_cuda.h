// CUDA executor of `flip`. The header has no CUDA includes so host-only code can call it.
#pragma once

#include "../core/flip.h"

namespace delira::cuda {

// Writes the flipped view of the device buffer `in` into the C-contiguous device buffer `out`
// on `stream` (a cudaStream_t, 0 for the legacy default stream), with the device that holds `in`
// made current. Asynchronous: no host synchronisation. Throws std::invalid_argument when `in` is not
// device memory or `out` is on another device, std::runtime_error with the CUDA error text when a
// CUDA call or the launch fails (no device, bad stream, ...).
void flip(const void* in, void* out, DType dtype, const FlipGeometry& g, void* stream);

// Number of visible CUDA devices; on failure returns -1 and fills `error` with the CUDA message.
int device_count(std::string* error);

// CUDA runtime version the extension was compiled with, as "major.minor".
std::string runtime_version();

}  // namespace delira::cuda

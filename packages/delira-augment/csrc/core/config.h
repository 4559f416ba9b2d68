// Shared definitions for the host (CPU) and device (CUDA) executors.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DELIRA_HD __host__ __device__
#define DELIRA_INLINE __forceinline__
#else
#define DELIRA_HD
#define DELIRA_INLINE inline
#endif

namespace delira {

// Largest array rank the kernels accept: (N, C, D, H, W).
constexpr int kMaxDims = 5;

// Element types the kernels are instantiated for.
enum class DType : int { Float32 = 0, Float64, UInt8, Int16, Int32, Int64 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::UInt8: return "uint8";
    case DType::Int16: return "int16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
  }
  return "unknown";
}

}  // namespace delira

// Calls BODY with `scalar_t` bound to the C++ type of DTYPE.
#define DELIRA_DISPATCH_DTYPE(DTYPE, ...)                          \
  switch (DTYPE) {                                                 \
    case ::delira::DType::Float32: {                               \
      using scalar_t = float;                                      \
      __VA_ARGS__();                                               \
    } break;                                                       \
    case ::delira::DType::Float64: {                               \
      using scalar_t = double;                                     \
      __VA_ARGS__();                                               \
    } break;                                                       \
    case ::delira::DType::UInt8: {                                 \
      using scalar_t = std::uint8_t;                               \
      __VA_ARGS__();                                               \
    } break;                                                       \
    case ::delira::DType::Int16: {                                 \
      using scalar_t = std::int16_t;                               \
      __VA_ARGS__();                                               \
    } break;                                                       \
    case ::delira::DType::Int32: {                                 \
      using scalar_t = std::int32_t;                               \
      __VA_ARGS__();                                               \
    } break;                                                       \
    case ::delira::DType::Int64: {                                 \
      using scalar_t = std::int64_t;                               \
      __VA_ARGS__();                                               \
    } break;                                                       \
  }

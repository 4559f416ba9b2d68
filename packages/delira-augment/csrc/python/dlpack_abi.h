// The DLPack C ABI (https://dmlc.github.io/dlpack/latest/), written from the specification: the
// structures a producer puts into a PyCapsule named "dltensor" (DLManagedTensor, DLPack < 1.0) or
// "dltensor_versioned" (DLManagedTensorVersioned, DLPack >= 1.0), and the constants delira reads.
// Only the layout matters (it is the ABI); the names are delira's own.
#pragma once

#include <cstdint>

namespace delira::dlpack {

// Major version of the versioned structure this file describes; a capsule with another major
// version has another layout after `flags` and is refused (the producer keeps ownership).
constexpr std::uint32_t kMajorVersion = 1;
constexpr std::uint32_t kMinorVersion = 0;

// Capsule names of the Python protocol: a consumer renames the capsule to the "used_" name when it
// takes ownership, so that the producer's capsule destructor no longer calls the deleter.
constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kCapsuleNameUsed = "used_dltensor";
constexpr const char* kVersionedCapsuleName = "dltensor_versioned";
constexpr const char* kVersionedCapsuleNameUsed = "used_dltensor_versioned";

// Device types (DLDeviceType; a C enum, so 32 bits).
enum DeviceType : std::int32_t {
  kCPU = 1,
  kCUDA = 2,
  kCUDAHost = 3,  // pinned host memory
  kOpenCL = 4,
  kVulkan = 7,
  kMetal = 8,
  kVPI = 9,
  kROCM = 10,
  kROCMHost = 11,
  kExtDev = 12,
  kCUDAManaged = 13,
  kOneAPI = 14,
  kWebGPU = 15,
  kHexagon = 16,
  kMAIA = 17,
};

// Type codes (DLDataTypeCode).
enum TypeCode : std::uint8_t {
  kInt = 0,
  kUInt = 1,
  kFloat = 2,
  kOpaqueHandle = 3,
  kBfloat = 4,
  kComplex = 5,
  kBool = 6,
};

// Bits of DLManagedTensorVersioned::flags.
constexpr std::uint64_t kFlagReadOnly = 1ULL << 0;  // the consumer must not write to the data
constexpr std::uint64_t kFlagIsCopied = 1ULL << 1;  // the producer made a copy for this export

struct PackVersion {
  std::uint32_t major;
  std::uint32_t minor;
};

struct Device {
  std::int32_t device_type;  // DeviceType
  std::int32_t device_id;
};

struct DataType {
  std::uint8_t code;   // TypeCode
  std::uint8_t bits;   // bits per lane
  std::uint16_t lanes; // 1 for scalars
};

// DLTensor. `data` + `byte_offset` is the address of element (0, ..., 0); `strides` in elements
// (NULL: compact row-major); `shape` and `strides` have `ndim` entries.
struct Tensor {
  void* data;
  Device device;
  std::int32_t ndim;
  DataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;
  std::uint64_t byte_offset;
};

// DLManagedTensor (DLPack < 1.0, capsule "dltensor").
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

// DLManagedTensorVersioned (DLPack >= 1.0, capsule "dltensor_versioned"). Everything up to and
// including `flags` keeps its place in later major versions, so the deleter can always be called.
struct ManagedTensorVersioned {
  PackVersion version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned* self);
  std::uint64_t flags;
  Tensor dl_tensor;
};

}  // namespace delira::dlpack

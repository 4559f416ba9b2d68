// Host-side plumbing of one call into the CUDA executor, shared by engine_cuda.cu and flip_cuda.cu:
// error checks, the device of the call, stream-ordered scratch memory and pinned parameter staging.
//
// Memory of a call (all on the caller's stream, no host synchronisation in steady state):
//   - DeviceScratch: device memory from delira's own memory pool of the device, allocated with
//     cudaMallocFromPoolAsync on the caller's stream and returned with cudaFreeAsync on the same stream
//     once the call has enqueued its last kernel. Every call has its own scratch, so concurrent calls
//     (threads with the GIL released, several streams) never share a buffer; the stream order makes the
//     reuse of freed memory by later calls safe. The pool keeps up to DELIRA_AUGMENT_CUDA_CACHE_MB
//     (default 1024) MiB cached across synchronisations and returns the rest to the device, so the
//     memory held between calls is bounded. On a device without memory pools (cudaDevAttrMemoryPoolsSupported
//     is 0) scratch falls back to cudaMalloc, and freeing it synchronises the stream.
//   - Staging: pinned host memory for the parameter upload, from a small per-device pool (at most
//     max(kMaxStagingBuffers, calls running at once) buffers; a call that finds the pool full of
//     buffers still in flight waits for one of them). Each buffer carries an event recorded after the copy that reads it
//     and is handed out again only when that event has completed, so cudaMemcpyAsync is a true
//     asynchronous copy (from pageable memory it would wait for the stream) and the host never rewrites
//     parameters the GPU has not read yet. Growing a buffer frees the old one (cudaFreeHost), which may
//     synchronise once during warm-up.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace delira::cuda::detail {

inline void check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) {
    throw std::runtime_error("delira.augment CUDA error in " + what + ": " + cudaGetErrorString(err));
  }
}

// After every kernel launch: a bad launch configuration (or an earlier asynchronous fault) is reported
// with the name of the launch that saw it.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), std::string(kernel) + " launch"); }

// The device that holds `ptr`; throws std::invalid_argument (ValueError) for memory that is not on a
// device. `name` names the argument in messages.
inline int device_of(const void* ptr, const char* name) {
  cudaPointerAttributes attr{};
  check(cudaPointerGetAttributes(&attr, ptr), std::string("cudaPointerGetAttributes (") + name + ")");
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    throw std::invalid_argument(std::string(name) +
                                " is not in CUDA device memory; pass a torch CUDA tensor or a cupy array");
  }
  return attr.device;
}

// Throws a ValueError naming both arguments unless `ptr` (when not null) lives on `device`.
inline void require_same_device(const void* ptr, const char* name, int device, const char* reference) {
  if (ptr == nullptr) return;
  const int d = device_of(ptr, name);
  if (d != device) {
    throw std::invalid_argument(std::string(reference) + " is on cuda:" + std::to_string(device) + " but " + name +
                                " is on cuda:" + std::to_string(d) + "; move both to one device (e.g. seg.to(data.device))");
  }
}

// Makes `device` current for the lifetime of the object and restores the caller's device afterwards.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) {
      check(cudaSetDevice(device), "cudaSetDevice");
      changed_ = true;
    }
  }
  ~DeviceScope() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

// ---------------------------------------------------------------------------------------------
// Scratch: stream-ordered device memory of one call.

inline std::uint64_t pool_cache_bytes() {
  const char* env = std::getenv("DELIRA_AUGMENT_CUDA_CACHE_MB");
  std::uint64_t mb = 1024;
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0') mb = v;
  }
  return mb << 20;
}

struct DevicePool {
  bool stream_ordered = false;
  cudaMemPool_t pool = nullptr;
};

// delira's memory pool of `device` (created on first use, kept for the process).
inline DevicePool device_pool(int device) {
  static std::mutex mutex;
  static std::map<int, DevicePool> pools;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = pools.find(device);
  if (it != pools.end()) return it->second;
  DevicePool p;
  int supported = 0;
  check(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device),
        "cudaDeviceGetAttribute (memory pools)");
  if (supported) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    check(cudaMemPoolCreate(&p.pool, &props), "cudaMemPoolCreate");
    std::uint64_t threshold = pool_cache_bytes();
    check(cudaMemPoolSetAttribute(p.pool, cudaMemPoolAttrReleaseThreshold, &threshold),
          "cudaMemPoolSetAttribute (release threshold)");
    p.stream_ordered = true;
  }
  pools.emplace(device, p);
  return p;
}

class DeviceScratch {
 public:
  DeviceScratch(std::size_t bytes, int device, cudaStream_t stream) : stream_(stream) {
    if (bytes == 0) return;
    const DevicePool pool = device_pool(device);
    stream_ordered_ = pool.stream_ordered;
    void* p = nullptr;
    if (stream_ordered_) {
      check(cudaMallocFromPoolAsync(&p, bytes, pool.pool, stream), "cudaMallocFromPoolAsync (scratch)");
    } else {
      check(cudaMalloc(&p, bytes), "cudaMalloc (scratch)");
    }
    ptr_ = static_cast<char*>(p);
  }
  ~DeviceScratch() {
    if (ptr_ == nullptr) return;
    if (stream_ordered_) {
      cudaFreeAsync(ptr_, stream_);
    } else {
      cudaStreamSynchronize(stream_);
      cudaFree(ptr_);
    }
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  char* data() const { return ptr_; }

 private:
  cudaStream_t stream_;
  char* ptr_ = nullptr;
  bool stream_ordered_ = false;
};

// ---------------------------------------------------------------------------------------------
// Staging: pinned host buffers for parameter uploads.

constexpr std::size_t kMaxStagingBuffers = 8;  // buffers per device beyond those held by running calls
constexpr std::size_t kMinStagingBytes = 64 << 10;

class StagingPool {
 public:
  struct Buffer {
    char* host = nullptr;
    std::size_t capacity = 0;
    cudaEvent_t done = nullptr;  // recorded after the copy that last read the buffer
    bool in_use = false;
  };

  static StagingPool& instance() {
    static StagingPool* pool = new StagingPool();  // never destroyed: buffers live for the process
    return *pool;
  }

  // A buffer of at least `bytes` on `device` (the current device), exclusively the caller's until release().
  Buffer* acquire(std::size_t bytes, int device) {
    Buffer* wait_for = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      std::vector<Buffer*>& list = buffers_[device];
      Buffer* best = nullptr;
      Buffer* idle_small = nullptr;
      Buffer* pending = nullptr;
      std::size_t idle = 0;
      for (Buffer* b : list) {
        if (b->in_use) continue;
        ++idle;
        const cudaError_t q = cudaEventQuery(b->done);
        if (q == cudaErrorNotReady) {
          if (pending == nullptr || b->capacity > pending->capacity) pending = b;
          continue;
        }
        check(q, "cudaEventQuery (staging)");
        if (b->capacity >= bytes) {
          if (best == nullptr || b->capacity < best->capacity) best = b;
        } else if (idle_small == nullptr) {
          idle_small = b;
        }
      }
      if (best != nullptr) {
        best->in_use = true;
        return best;
      }
      if (idle < kMaxStagingBuffers) {  // room for another buffer (buffers held by running calls do not count)
        Buffer* b = new Buffer();
        try {
          allocate(*b, bytes);
        } catch (...) {
          delete b;
          throw;
        }
        b->in_use = true;
        list.push_back(b);
        return b;
      }
      if (idle_small != nullptr) {  // pool full: grow an idle buffer that is too small
        idle_small->in_use = true;
        wait_for = idle_small;
      } else {  // pool full and every idle buffer still in flight: wait for one (back-pressure)
        pending->in_use = true;
        wait_for = pending;
      }
    }
    try {
      check(cudaEventSynchronize(wait_for->done), "cudaEventSynchronize (staging)");
      if (wait_for->capacity < bytes) {
        check(cudaFreeHost(wait_for->host), "cudaFreeHost (staging)");
        wait_for->host = nullptr;
        wait_for->capacity = 0;
        allocate(*wait_for, bytes);
      }
    } catch (...) {
      release(wait_for);
      throw;
    }
    return wait_for;
  }

  void release(Buffer* b) {
    std::lock_guard<std::mutex> lock(mutex_);
    b->in_use = false;
  }

 private:
  static void allocate(Buffer& b, std::size_t bytes) {
    std::size_t capacity = kMinStagingBytes;
    while (capacity < bytes) capacity <<= 1;
    void* p = nullptr;
    check(cudaHostAlloc(&p, capacity, cudaHostAllocDefault), "cudaHostAlloc (staging)");
    b.host = static_cast<char*>(p);
    b.capacity = capacity;
    if (b.done == nullptr) check(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming), "cudaEventCreate (staging)");
  }

  std::mutex mutex_;
  std::map<int, std::vector<Buffer*>> buffers_;
};

// Uploads host bytes to device memory through a pinned staging buffer, asynchronously on `stream`.
inline void upload(void* dst, const void* src, std::size_t bytes, int device, cudaStream_t stream) {
  if (bytes == 0) return;
  StagingPool& pool = StagingPool::instance();
  StagingPool::Buffer* b = pool.acquire(bytes, device);
  try {
    std::memcpy(b->host, src, bytes);
    check(cudaMemcpyAsync(dst, b->host, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync (parameters)");
    check(cudaEventRecord(b->done, stream), "cudaEventRecord (staging)");
  } catch (...) {
    pool.release(b);
    throw;
  }
  pool.release(b);
}

// ---------------------------------------------------------------------------------------------
// Layout of one call's device memory: the parameters (packed on the host and uploaded) first, then the
// device-only regions (statistics, partial moments, B-spline coefficients, temporaries), which are
// never uploaded.

class Layout {
 public:
  struct Region {
    bool device_only = false;
    std::size_t offset = 0;
  };

  // Appends `bytes` of host data to the uploaded part.
  Region add(const void* src, std::size_t bytes) {
    const std::size_t offset = align(host_.size());
    host_.resize(offset + bytes);
    if (bytes) std::memcpy(host_.data() + offset, src, bytes);
    return {false, offset};
  }
  // Reserves `bytes` of device-only memory.
  Region reserve(std::size_t bytes) {
    const std::size_t offset = scratch_;
    scratch_ = align(scratch_ + bytes);
    return {true, offset};
  }
  const char* host() const { return host_.data(); }
  std::size_t upload_bytes() const { return host_.size(); }
  std::size_t device_only_base() const { return align(host_.size()); }
  std::size_t total_bytes() const { return device_only_base() + scratch_; }

 private:
  static std::size_t align(std::size_t n) { return (n + 255) & ~static_cast<std::size_t>(255); }
  std::vector<char> host_;
  std::size_t scratch_ = 0;
};

// The device memory of one call: `layout`'s parameters uploaded through pinned staging on `stream`,
// and its device-only regions; returned to the pool (stream-ordered) when the object goes out of scope,
// which must be after the call's last launch.
class CallMemory {
 public:
  CallMemory(const Layout& layout, int device, cudaStream_t stream)
      : layout_(layout), scratch_(layout.total_bytes(), device, stream) {
    upload(scratch_.data(), layout.host(), layout.upload_bytes(), device, stream);
  }
  template <typename P>
  P* at(const Layout::Region& r) const {
    return reinterpret_cast<P*>(scratch_.data() + (r.device_only ? layout_.device_only_base() : 0) + r.offset);
  }

 private:
  const Layout& layout_;
  DeviceScratch scratch_;
};

}  // namespace delira::cuda::detail

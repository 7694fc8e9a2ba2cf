// Device and stream plumbing shared by both extensions (header-only: each extension gets its own copy of
// the cached state). Python hands the extensions raw device pointers, sizes, strides and the CUDA stream
// as integers; nothing here touches libtorch.
//
//   require_device()          RuntimeError when no usable CUDA device exists (CPU-only machine, no
//                             driver). A success is cached: later calls cost one atomic load.
//   debug_checks()            FASTATTN_DEBUG=1 in the environment when the extension was first used (or
//                             set_debug_checks()): the expensive checks (cudaPointerGetAttributes per
//                             pointer) run only then, or where a caller asks for them once (per params
//                             object, see attention/api.cpp).
//   check_device_pointer()    the pointer is CUDA device (or managed) memory on `device`: one
//                             cudaPointerGetAttributes.
//   DeviceGuard               makes `device` current for a scope and restores the previous one.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/checks.h"

namespace fastattn {

// dtype codes shared with Python (the backends' DTYPE_CODES).
enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };

inline const char* dtype_name(int code) {
  switch (code) {
    case 0: return "float16";
    case 1: return "bfloat16";
    case 2: return "float32";
    default: return "unknown";
  }
}

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

inline void require_device() {
  static std::atomic<bool> found{false};
  if (found.load(std::memory_order_relaxed)) return;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    cudaGetLastError();  // not sticky: clear it
    std::ostringstream os;
    os << FASTATTN_EXT_NAME ": no usable CUDA device ("
       << (err != cudaSuccess ? std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)
                              : std::string("0 devices"))
       << "); the cuda backend needs an NVIDIA GPU with a working driver";
    throw std::runtime_error(os.str());
  }
  found.store(true, std::memory_order_relaxed);
}

inline std::atomic<int>& debug_flag() {
  static std::atomic<int> flag{-1};  // -1: not read from the environment yet
  return flag;
}

inline bool debug_checks() {
  int f = debug_flag().load(std::memory_order_relaxed);
  if (f < 0) {
    const char* e = std::getenv("FASTATTN_DEBUG");
    f = (e != nullptr && e[0] != '\0' && std::strcmp(e, "0") != 0) ? 1 : 0;
    debug_flag().store(f, std::memory_order_relaxed);
  }
  return f == 1;
}

inline void set_debug_checks(bool on) { debug_flag().store(on ? 1 : 0, std::memory_order_relaxed); }

// `what` names the argument in messages ("attn_fwd: q", "bias_act: y"). device < 0: any device.
inline void check_device_pointer(std::uintptr_t ptr, const char* what, int device) {
  cudaPointerAttributes attr;
  cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  if (err != cudaSuccess) {
    cudaGetLastError();
    FA_CHECK_ARG(false, what << " is not a CUDA device pointer (" << cudaGetErrorString(err) << ")");
  }
  FA_CHECK_ARG(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged,
               what << " must point to CUDA device memory (got a host pointer)");
  FA_CHECK_ARG(device < 0 || attr.type == cudaMemoryTypeManaged || attr.device == device,
               what << " is on CUDA device " << attr.device << " but the kernel runs on device " << device
                    << "; launch under torch.cuda.device(" << attr.device << ")");
}

// The pointer checks of kernels without a params object: null always, the attribute query only with
// debug_checks().
inline void require_device_pointer(std::uintptr_t ptr, const char* what) {
  FA_CHECK_ARG(ptr != 0, what << ": null data pointer");
  if (debug_checks()) {
    int dev = 0;
    FA_CUDA_CHECK(cudaGetDevice(&dev));
    check_device_pointer(ptr, what, dev);
  }
}

struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int device) {
    int cur = 0;
    FA_CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != device) {
      FA_CUDA_CHECK(cudaSetDevice(device));
      prev = cur;
    }
  }
  ~DeviceGuard() {
    if (prev >= 0) cudaSetDevice(prev);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

}  // namespace fastattn

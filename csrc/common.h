// Shared helpers of the fastattn._C extension: error checks with exact messages, the binding
// registry, and the device/stream plumbing. The extension never links libtorch: Python hands it raw
// device pointers, sizes, strides and the CUDA stream (as integers).
#pragma once

#include <cstdint>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime.h>

namespace fastattn {

// Throw std::invalid_argument (Python ValueError) naming the argument.
#define FA_CHECK_ARG(cond, ...)                                                   \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::ostringstream _fa_os;                                                  \
      _fa_os << __VA_ARGS__;                                                      \
      throw std::invalid_argument(_fa_os.str());                                  \
    }                                                                             \
  } while (0)

// Throw std::runtime_error (Python RuntimeError) on a CUDA runtime error.
#define FA_CUDA_CHECK(expr)                                                                  \
  do {                                                                                       \
    cudaError_t _fa_err = (expr);                                                            \
    if (_fa_err != cudaSuccess) {                                                            \
      std::ostringstream _fa_os;                                                             \
      _fa_os << "fastattn._C: CUDA error " << cudaGetErrorName(_fa_err) << " ("              \
             << cudaGetErrorString(_fa_err) << ") at " << __FILE__ << ":" << __LINE__ << ": " \
             << #expr;                                                                       \
      throw std::runtime_error(_fa_os.str());                                                \
    }                                                                                        \
  } while (0)

// Raise a clear RuntimeError when no usable CUDA device exists (CPU-only machine, no driver).
void require_device();

// Check that `ptr` is device (or managed) memory on the current device; `name` is the argument.
void require_device_pointer(std::uintptr_t ptr, const char* name);

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// dtype codes shared with Python (fastattn._ext / launchers): keep in sync.
enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };

}  // namespace fastattn

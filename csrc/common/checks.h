// Error checks shared by both extensions (fastattn._C and fastattn._C_blas). Plain C++ plus the CUDA
// runtime header; no pybind11, no libtorch.
//
//   FA_CHECK_ARG(cond, msg << parts)   a bad argument: throws std::invalid_argument. The module's exception
//                                      translator (common/pybind_errors.h) raises it in Python as
//                                      <module>.ArgumentError, a subclass of ValueError and RuntimeError.
//                                      The message names the argument and what is supported.
//   FA_CUDA_CHECK(expr)                a CUDA runtime error: throws std::runtime_error (RuntimeError).
//
// Messages of runtime errors start with FASTATTN_EXT_NAME ("fastattn._C" unless a translation unit of
// another extension defines it before including this header).
#pragma once

#include <cuda_runtime.h>

#include <sstream>
#include <stdexcept>
#include <string>

#ifndef FASTATTN_EXT_NAME
#define FASTATTN_EXT_NAME "fastattn._C"
#endif

#define FA_CHECK_ARG(cond, ...)                  \
  do {                                           \
    if (!(cond)) {                               \
      std::ostringstream _fa_os;                 \
      _fa_os << __VA_ARGS__;                     \
      throw std::invalid_argument(_fa_os.str()); \
    }                                            \
  } while (0)

#define FA_CUDA_CHECK(expr)                                                                              \
  do {                                                                                                   \
    cudaError_t _fa_err = (expr);                                                                        \
    if (_fa_err != cudaSuccess) {                                                                        \
      std::ostringstream _fa_os;                                                                         \
      _fa_os << FASTATTN_EXT_NAME ": CUDA error " << cudaGetErrorName(_fa_err) << " ("                   \
             << cudaGetErrorString(_fa_err) << ") at " << __FILE__ << ":" << __LINE__ << ": " << #expr; \
      throw std::runtime_error(_fa_os.str());                                                            \
    }                                                                                                    \
  } while (0)

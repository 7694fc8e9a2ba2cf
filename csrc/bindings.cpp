// The fastattn._C module: build facts, runtime status, and every registered entry point.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common.h"
#include "registry.h"

#ifndef FASTATTN_ARCHS
#define FASTATTN_ARCHS "unknown"
#endif

namespace py = pybind11;

namespace fastattn {

std::vector<std::pair<std::string, BindFn>>& binders() {
  static std::vector<std::pair<std::string, BindFn>> b;
  return b;
}

void require_device() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    cudaGetLastError();  // clear the sticky-free error state
    std::ostringstream os;
    os << "fastattn._C: no usable CUDA device ("
       << (err != cudaSuccess ? std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)
                              : std::string("0 devices"))
       << "); the cuda backend needs an NVIDIA GPU with a working driver";
    throw std::runtime_error(os.str());
  }
}

void require_device_pointer(std::uintptr_t ptr, const char* name) {
  FA_CHECK_ARG(ptr != 0, name << ": null data pointer");
  cudaPointerAttributes attr;
  cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  if (err != cudaSuccess) {
    cudaGetLastError();
    FA_CHECK_ARG(false, name << ": not a CUDA device pointer (" << cudaGetErrorString(err) << ")");
  }
  FA_CHECK_ARG(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged,
               name << ": must point to CUDA device memory (got a host pointer)");
}

}  // namespace fastattn

static py::dict build_info() {
  py::dict d;
  d["archs"] = std::string(FASTATTN_ARCHS);
  d["cuda_version"] = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string((CUDART_VERSION % 1000) / 10);
  py::list names;
  for (auto& b : fastattn::binders()) names.append(b.first);
  d["components"] = names;
  return d;
}

static std::string runtime_status() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("no device: ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  }
  int drv = 0;
  cudaDriverGetVersion(&drv);
  return std::to_string(n) + " device(s), driver CUDA " + std::to_string(drv / 1000) + "." +
         std::to_string((drv % 1000) / 10);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastattn CUDA kernels (raw pointers + strides + stream; no libtorch)";
  m.def("build_info", &build_info, "archs, CUDA version and components this extension was built with");
  m.def("runtime_status", &runtime_status, "whether the CUDA runtime finds a device here, and why not");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  for (auto& b : fastattn::binders()) b.second(m);
}

// The fastattn._C module block: build facts, runtime status, the debug switch, the ArgumentError class,
// and every component registered with common/registry.h (attention, key_ranges, ffn).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common/device.h"
#include "common/pybind_errors.h"
#include "common/registry.h"

#ifndef FASTATTN_ARCHS
#define FASTATTN_ARCHS "unknown"
#endif

namespace py = pybind11;

namespace fastattn {

std::vector<std::pair<std::string, BindFn>>& binders() {
  static std::vector<std::pair<std::string, BindFn>> b;
  return b;
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
  fastattn::register_argument_error(m);
  m.def("build_info", &build_info, "archs, CUDA version and components this extension was built with");
  m.def("runtime_status", &runtime_status, "whether the CUDA runtime finds a device here, and why not");
  m.def("debug", &fastattn::debug_checks,
        "Whether debug checks are on (FASTATTN_DEBUG=1 at first use, or set_debug): every launch then asks "
        "cudaPointerGetAttributes about each pointer (device memory, right device).");
  m.def("set_debug", &fastattn::set_debug_checks, py::arg("on"), "Turn the debug checks on or off (see debug()).");
  for (auto& b : fastattn::binders()) b.second(m);
}

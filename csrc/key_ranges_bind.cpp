#include <pybind11/pybind11.h>

#include "key_ranges.h"
#include "registry.h"

namespace py = pybind11;

static fastattn::Registrar reg_key_ranges("key_ranges", [](py::module_& m) {
  m.def("key_ranges", &fastattn::key_ranges, py::arg("mask_ptr"), py::arg("B"), py::arg("Lk"),
        py::arg("stride_b"), py::arg("stride_k"), py::arg("out_ptr"), py::arg("stream"),
        "Per batch row of a (B, Lk) bool key mask: [first visible key, last visible key + 1) into an "
        "int32 (B, 2) buffer; (Lk, 0) for a row with no visible key. Launched on `stream`.");
});

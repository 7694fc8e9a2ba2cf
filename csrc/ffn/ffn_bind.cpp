// Bindings of the CUDA feed-forward helpers (csrc/ffn) into fastattn._C.
#include <pybind11/pybind11.h>

#include "ffn/ffn_kernels.h"
#include "common/registry.h"

namespace py = pybind11;

static fastattn::Registrar reg_ffn("ffn", [](py::module_& m) {
  m.def("bias_act", &fastattn::bias_act, py::arg("y_ptr"), py::arg("bias_ptr"), py::arg("M"), py::arg("N"),
        py::arg("stride_ym"), py::arg("dtype"), py::arg("activation"), py::arg("stream"),
        "In place on an (M, N) matrix with unit column stride: y = act(y + bias). activation: 0 none, "
        "1 exact-erf GELU, 2 tanh GELU (fp32 math); bias_ptr 0 = no bias; dtype 0 fp16, 1 bf16, 2 fp32. "
        "Launched on `stream`.");
  m.def("residual_layernorm", &fastattn::residual_layernorm, py::arg("x_ptr"), py::arg("residual_ptr"),
        py::arg("weight_ptr"), py::arg("bias_ptr"), py::arg("y_ptr"), py::arg("M"), py::arg("N"),
        py::arg("stride_xm"), py::arg("stride_rm"), py::arg("stride_ym"), py::arg("eps"), py::arg("dtype"),
        py::arg("stream"),
        "y = LayerNorm(x + residual) * weight + bias over rows of N (unit column strides; fp32 statistics). "
        "residual/weight/bias pointers may be 0 (absent). Launched on `stream`.");
});

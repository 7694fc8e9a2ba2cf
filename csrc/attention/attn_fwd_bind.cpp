// pybind11 entry points of the attention forward, registered into fastattn._C as component "attention".
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "attention/attn_fwd_api.h"
#include "registry.h"

namespace py = pybind11;

static fastattn::Registrar reg_attention("attention", [](py::module_& m) {
  m.def("attention_fwd_head_dims", &fastattn::attention_fwd_head_dims,
        "Head dims with a compiled attention forward instance.");
  m.def("attention_fwd", &fastattn::attention_fwd, py::arg("q_ptr"), py::arg("k_ptr"), py::arg("v_ptr"),
        py::arg("out_ptr"), py::arg("lse_ptr"), py::arg("dtype"), py::arg("B"), py::arg("Hq"), py::arg("Hkv"),
        py::arg("Lq"), py::arg("Lk"), py::arg("head_dim"), py::arg("q_strides"), py::arg("k_strides"),
        py::arg("v_strides"), py::arg("out_strides"), py::arg("scale"), py::arg("causal"),
        py::arg("key_lengths_ptr") = 0, py::arg("key_lengths_int64") = false, py::arg("key_lengths_stride") = 1,
        py::arg("key_range_ptr") = 0, py::arg("key_mask_ptr") = 0, py::arg("key_mask_stride_b") = 0,
        py::arg("key_mask_stride_k") = 1, py::arg("stream") = 0,
        "Flash-attention forward (sm_80+ tensor cores). q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D), out "
        "(B, Hq, Lq, D) as device pointers with element strides (b, h, l, d); lse float32 contiguous "
        "(B, Hq, Lq), natural log, -inf on rows with no visible key (whose output is 0). dtype 0 float16, "
        "1 bfloat16; causal 0 none, 1 top_left, 2 bottom_right (key j visible from row i iff "
        "j <= i + Lk - Lq). Optional key padding: key_lengths (B,) int32/int64, key_range (B, 2) int32 "
        "[start, end) from key_ranges(), key_mask (B, Lk) bool (needs key_range). Validates every argument "
        "(ValueError naming it) before touching the device; RuntimeError when no CUDA device is usable. "
        "Launched on `stream`.");
});

// Binding layer of the attention forward (FlashAttention's flash_api.cpp): a parameter object validated
// in two steps, a launch that checks only what changes per call, the dtype -> head dim -> causal switch
// to a compiled instance, and the pybind11 block of components "attention" and "key_ranges".
//
// Python (fastattn._C):
//
//   params = AttnFwdParams(dtype=0, B=2, Hq=6, Hkv=2, Lq=113, Lk=203, head_dim=64, scale=0.125, causal=2,
//                          device=0, key_lengths_ptr=..., ...)       # once per plan: shapes and mask
//   params.set_strides(q_strides, k_strides, v_strides, out_strides)  # when the layout changes
//   params.scale = 0.1                                               # when the scale changes (optional)
//   attn_fwd(params, q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, stream)  # per launch
//
// Every check names the argument (ArgumentError: ValueError and RuntimeError) and runs before anything
// touches a device; "no usable CUDA device" is a RuntimeError. cudaPointerGetAttributes (is each pointer
// device memory on params.device?) runs on the first launch of each params object and, with FASTATTN_DEBUG=1
// (or _C.set_debug(True)), on every launch; other launches do integer checks only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "attention/instances/list.h"
#include "attention/key_ranges.h"
#include "attention/params.h"
#include "attention/static_switch.h"
#include "common/device.h"
#include "common/registry.h"

namespace py = pybind11;

namespace fastattn {

// ------------------------------------------------------------------------------------ instance registry
namespace {
std::vector<AttnFwdInstanceInfo>& instance_list() {
  static std::vector<AttnFwdInstanceInfo> v;
  return v;
}
}  // namespace

void register_attn_fwd_instance(const AttnFwdInstanceInfo& info) { instance_list().push_back(info); }
const std::vector<AttnFwdInstanceInfo>& attn_fwd_instances() { return instance_list(); }

namespace {

std::string head_dims_text() {
  std::ostringstream os;
  bool first = true;
  for (int d : kAttnFwdHeadDims) {
    os << (first ? "" : ", ") << d;
    first = false;
  }
  return os.str();
}

constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();

// ------------------------------------------------------------------------------------ params object
// The host side of one attention-forward problem: AttnFwdParams (params.h) with its shape, mask and
// strides filled and validated, plus what the launch needs to dispatch. Bound as fastattn._C.AttnFwdParams.
class AttnFwdParamsHost {
 public:
  AttnFwdParamsHost(int dtype, int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk, int64_t head_dim,
                    double scale, int causal, int device, std::uintptr_t key_lengths_ptr, bool key_lengths_int64,
                    int64_t key_lengths_stride, std::uintptr_t key_range_ptr, std::uintptr_t key_mask_ptr,
                    int64_t key_mask_stride_b, int64_t key_mask_stride_k)
      : p_{}, dtype_(dtype), head_dim_(head_dim), causal_(causal), device_(device) {
    FA_CHECK_ARG(dtype == static_cast<int>(DType::kFloat16) || dtype == static_cast<int>(DType::kBFloat16),
                 "attn_fwd: dtype code " << dtype << " (" << dtype_name(dtype)
                                         << ") is not supported; the cuda kernel runs float16 (0) and bfloat16 (1)");
    bool hd_ok = false;
    for (int d : kAttnFwdHeadDims) hd_ok = hd_ok || d == head_dim;
    FA_CHECK_ARG(hd_ok, "attn_fwd: head_dim=" << head_dim << " is not supported; supported head dims: "
                                              << head_dims_text());
    FA_CHECK_ARG(B >= 0 && Hq >= 0 && Lq >= 0 && Lk >= 0,
                 "attn_fwd: sizes must be >= 0, got B=" << B << ", Hq=" << Hq << ", Lq=" << Lq << ", Lk=" << Lk);
    FA_CHECK_ARG(Hkv >= 1, "attn_fwd: Hkv must be >= 1, got " << Hkv);
    FA_CHECK_ARG(Hq % Hkv == 0, "attn_fwd: Hq=" << Hq << " must be a multiple of Hkv=" << Hkv
                                                << " (query head h uses KV head h / (Hq / Hkv))");
    FA_CHECK_ARG(Lq <= kIntMax - 256 && Lk <= kIntMax - 256,
                 "attn_fwd: Lq and Lk must be < 2^31 - 256, got Lq=" << Lq << ", Lk=" << Lk);
    FA_CHECK_ARG(B * Hq <= kIntMax, "attn_fwd: B * Hq must be < 2^31 (grid x), got " << B * Hq);
    const int block_m = attn_fwd_block_m(static_cast<int>(head_dim));
    const int64_t num_m_blocks = (Lq + block_m - 1) / block_m;
    FA_CHECK_ARG(num_m_blocks <= 65535, "attn_fwd: Lq=" << Lq << " needs " << num_m_blocks << " query blocks of "
                                                        << block_m << " rows; at most 65535 (grid y) are supported");
    FA_CHECK_ARG(causal >= 0 && causal <= 2,
                 "attn_fwd: causal must be 0 (none), 1 (top_left) or 2 (bottom_right), got " << causal);
    FA_CHECK_ARG(device >= 0, "attn_fwd: device must be a CUDA device index >= 0, got " << device);
    if (key_lengths_ptr != 0) {
      FA_CHECK_ARG(key_lengths_ptr % (key_lengths_int64 ? 8 : 4) == 0,
                   "attn_fwd: key_lengths_ptr is not aligned to its " << (key_lengths_int64 ? "int64" : "int32")
                                                                      << " element size");
    }
    FA_CHECK_ARG(key_range_ptr % 4 == 0, "attn_fwd: key_range_ptr must be 4-byte aligned (int32 (B, 2))");
    FA_CHECK_ARG(key_mask_ptr == 0 || key_range_ptr != 0,
                 "attn_fwd: key_mask_ptr needs key_range_ptr (the [start, end) of each row, from key_ranges())");
    set_scale(scale);

    p_.B = static_cast<int>(B);
    p_.Hq = static_cast<int>(Hq);
    p_.Hkv = static_cast<int>(Hkv);
    p_.Lq = static_cast<int>(Lq);
    p_.Lk = static_cast<int>(Lk);
    p_.kv_group = static_cast<int>(Hq / Hkv);
    p_.num_m_blocks = static_cast<int>(num_m_blocks);
    p_.causal_offset = causal == static_cast<int>(Causal::kBottomRight) ? static_cast<int>(Lk - Lq) : 0;
    p_.key_lengths = reinterpret_cast<const void*>(key_lengths_ptr);
    p_.key_lengths_int64 = key_lengths_int64 ? 1 : 0;
    p_.key_lengths_stride = key_lengths_stride;
    p_.key_range = reinterpret_cast<const int32_t*>(key_range_ptr);
    p_.key_mask = reinterpret_cast<const uint8_t*>(key_mask_ptr);
    p_.key_mask_sb = key_mask_stride_b;
    p_.key_mask_sk = key_mask_stride_k;
    // reserved fields (varlen, split-KV, dropout) stay null / 0: value-initialised above
  }

  void set_scale(double scale) {
    FA_CHECK_ARG(std::isfinite(scale), "attn_fwd: scale must be finite, got " << scale);
    scale_ = scale;
    p_.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  }

  // Strides in elements, (b, h, l, d) each. Validated here once, not per launch.
  void set_strides(const std::vector<int64_t>& q, const std::vector<int64_t>& k, const std::vector<int64_t>& v,
                   const std::vector<int64_t>& out) {
    const int64_t q_sizes[4] = {p_.B, p_.Hq, p_.Lq, head_dim_};
    const int64_t kv_sizes[4] = {p_.B, p_.Hkv, p_.Lk, head_dim_};
    check_strides("q", q, q_sizes, false);
    check_strides("k", k, kv_sizes, false);
    check_strides("v", v, kv_sizes, false);
    check_strides("out", out, q_sizes, true);
    p_.q_sb = q[0], p_.q_sh = q[1], p_.q_sm = q[2];
    p_.k_sb = k[0], p_.k_sh = k[1], p_.k_sm = k[2];
    p_.v_sb = v[0], p_.v_sh = v[1], p_.v_sm = v[2];
    p_.o_sb = out[0], p_.o_sh = out[1], p_.o_sm = out[2];
    strides_ = {q, k, v, out};
    strides_set_ = true;
  }

  void launch(std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr, std::uintptr_t out_ptr,
              std::uintptr_t lse_ptr, std::uintptr_t stream) {
    // ---- per-launch metadata checks (integers only)
    FA_CHECK_ARG(strides_set_, "attn_fwd: the strides are not set; call params.set_strides(q_strides, k_strides, "
                               "v_strides, out_strides) before the first launch");
    const bool no_rows = p_.B == 0 || p_.Hq == 0 || p_.Lq == 0;
    const bool no_keys = p_.B == 0 || p_.Lk == 0;
    check_pointer("q", q_ptr, no_rows);
    check_pointer("k", k_ptr, no_keys);
    check_pointer("v", v_ptr, no_keys);
    check_pointer("out", out_ptr, no_rows);
    FA_CHECK_ARG((lse_ptr != 0 || no_rows) && lse_ptr % 4 == 0,
                 "attn_fwd: lse_ptr must be a non-null, 4-byte aligned float32 (B, Hq, Lq) buffer");

    // ---- device
    require_device();
    if (no_rows) return;
    DeviceGuard guard(device_);
    if (!pointers_checked_ || debug_checks()) {
      check_device_pointer(q_ptr, "attn_fwd: q", device_);
      if (!no_keys) {  // with no key, k and v are never read (every row gets 0 and lse -inf)
        check_device_pointer(k_ptr, "attn_fwd: k", device_);
        check_device_pointer(v_ptr, "attn_fwd: v", device_);
      }
      check_device_pointer(out_ptr, "attn_fwd: out", device_);
      check_device_pointer(lse_ptr, "attn_fwd: lse", device_);
      if (p_.key_lengths != nullptr)
        check_device_pointer(reinterpret_cast<std::uintptr_t>(p_.key_lengths), "attn_fwd: key_lengths", device_);
      if (p_.key_range != nullptr)
        check_device_pointer(reinterpret_cast<std::uintptr_t>(p_.key_range), "attn_fwd: key_range", device_);
      if (p_.key_mask != nullptr)
        check_device_pointer(reinterpret_cast<std::uintptr_t>(p_.key_mask), "attn_fwd: key_mask", device_);
      pointers_checked_ = true;
    }

    AttnFwdParams p = p_;
    p.q = reinterpret_cast<const void*>(q_ptr);
    p.k = reinterpret_cast<const void*>(k_ptr);
    p.v = reinterpret_cast<const void*>(v_ptr);
    p.out = reinterpret_cast<void*>(out_ptr);
    p.lse = reinterpret_cast<float*>(lse_ptr);
    const cudaStream_t s = as_stream(stream);
    FA_DTYPE_SWITCH(dtype_, kDType, [&] {
      FA_HEADDIM_SWITCH(static_cast<int>(head_dim_), kHeadDim, [&] {
        FA_BOOL_SWITCH(causal_ != static_cast<int>(Causal::kNone), kIsCausal,
                       [&] { run_attn_fwd_sm80<kDType, kHeadDim, kIsCausal>(p, s); });
      });
    });
  }

  // ---- read-only views for Python
  const AttnFwdParams& params() const { return p_; }
  int dtype() const { return dtype_; }
  int64_t head_dim() const { return head_dim_; }
  int causal() const { return causal_; }
  int device() const { return device_; }
  double scale() const { return scale_; }
  py::object strides() const {
    if (!strides_set_) return py::none();
    py::tuple t(4);
    for (int i = 0; i < 4; ++i) t[i] = py::tuple(py::cast(strides_[i]));
    return t;
  }
  std::string repr() const {
    std::ostringstream os;
    os << "AttnFwdParams(dtype=" << dtype_name(dtype_) << ", B=" << p_.B << ", Hq=" << p_.Hq << ", Hkv=" << p_.Hkv
       << ", Lq=" << p_.Lq << ", Lk=" << p_.Lk << ", head_dim=" << head_dim_ << ", scale=" << scale_
       << ", causal=" << causal_ << ", device=" << device_ << ", key_lengths=" << (p_.key_lengths ? "yes" : "no")
       << ", key_mask=" << (p_.key_mask ? "yes" : "no") << ", strides=" << (strides_set_ ? "set" : "unset") << ")";
    return os.str();
  }

 private:
  // A tensor of (b, h, l, d) sizes `sizes`: last-dim stride 1, and the strides of every dim with more
  // than one index >= 0 and a multiple of 8 elements (16 bytes, for cp.async / ldmatrix / 16-byte stores);
  // an output dim of size > 1 must not have stride 0 (rows would overlap).
  void check_strides(const char* name, const std::vector<int64_t>& strides, const int64_t (&sizes)[4],
                     bool writable) const {
    FA_CHECK_ARG(strides.size() == 4, "attn_fwd: " << name << "_strides must have 4 entries (b, h, l, d), got "
                                                   << strides.size());
    FA_CHECK_ARG(strides[3] == 1, "attn_fwd: " << name << "_strides[3] (last dim) must be 1 (contiguous head dim), got "
                                               << strides[3]);
    static const char* dims[3] = {"b", "h", "l"};
    for (int i = 0; i < 3; ++i) {
      if (sizes[i] <= 1) continue;  // a stride that is never multiplied by a non-zero index
      FA_CHECK_ARG(strides[i] >= 0, "attn_fwd: " << name << "_strides[" << i << "] (" << dims[i]
                                                 << ") must be >= 0, got " << strides[i]);
      FA_CHECK_ARG(strides[i] % 8 == 0, "attn_fwd: " << name << "_strides[" << i << "] (" << dims[i] << ") = "
                                                     << strides[i]
                                                     << " must be a multiple of 8 elements (16 bytes) for cp.async");
      if (writable) {
        FA_CHECK_ARG(strides[i] != 0, "attn_fwd: " << name << "_strides[" << i << "] (" << dims[i]
                                                   << ") is 0 on a dim of size " << sizes[i]
                                                   << ": output rows would overlap");
      }
    }
  }

  // Base pointer: non-null and 16-byte aligned, unless the tensor has no element (k/v when Lk == 0: torch
  // gives an empty CUDA tensor a null pointer; it is never dereferenced).
  static void check_pointer(const char* name, std::uintptr_t ptr, bool empty) {
    if (empty && ptr == 0) return;
    FA_CHECK_ARG(ptr != 0, "attn_fwd: " << name << "_ptr is null");
    FA_CHECK_ARG(ptr % 16 == 0, "attn_fwd: " << name << "_ptr must be 16-byte aligned for cp.async/vector access "
                                             << "(address % 16 = " << (ptr % 16) << ")");
  }

  AttnFwdParams p_;
  int dtype_;
  int64_t head_dim_;
  int causal_;
  int device_;
  double scale_ = 0.0;
  bool strides_set_ = false;
  bool pointers_checked_ = false;
  std::array<std::vector<int64_t>, 4> strides_;
};

void attn_fwd(AttnFwdParamsHost& params, std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr,
              std::uintptr_t out_ptr, std::uintptr_t lse_ptr, std::uintptr_t stream) {
  params.launch(q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, stream);
}

std::vector<int> attention_fwd_head_dims() {
  return std::vector<int>(std::begin(kAttnFwdHeadDims), std::end(kAttnFwdHeadDims));
}

py::list attention_fwd_instances() {
  py::list out;
  for (const auto& i : attn_fwd_instances()) {
    py::dict d;
    d["family"] = i.family;
    d["dtype"] = dtype_name(i.dtype);
    d["head_dim"] = i.head_dim;
    d["causal"] = i.is_causal;
    d["threads"] = i.threads;
    d["block_m"] = i.block_m;
    d["block_n"] = i.block_n;
    d["smem_bytes"] = i.smem_bytes;
    out.append(d);
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------ module block
static Registrar reg_attention("attention", [](py::module_& m) {
  py::class_<AttnFwdParamsHost>(
      m, "AttnFwdParams",
      "Parameters of one attention-forward problem, built once (per plan) and launched many times with "
      "attn_fwd(). Shapes: q (B, Hq, Lq, head_dim), k/v (B, Hkv, Lk, head_dim), out like q, lse float32 "
      "contiguous (B, Hq, Lq). dtype 0 float16, 1 bfloat16; scale multiplies q.k (any finite float); causal "
      "0 none, 1 top_left, 2 bottom_right (key j visible from row i iff j <= i + Lk - Lq); device: the CUDA "
      "device index the launches run on. Optional key padding (device pointers as integers, 0 = absent): "
      "key_lengths (B,) int32/int64 with element stride key_lengths_stride; key_range (B, 2) int32 [start, "
      "end) from key_ranges(); key_mask (B, Lk) bool with element strides (needs key_range). The constructor "
      "validates everything it is given (ArgumentError naming the argument); set_strides() validates the "
      "layout; attn_fwd() checks only the pointers.")
      .def(py::init<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, int, int, std::uintptr_t,
                    bool, int64_t, std::uintptr_t, std::uintptr_t, int64_t, int64_t>(),
           py::kw_only(), py::arg("dtype"), py::arg("B"), py::arg("Hq"), py::arg("Hkv"), py::arg("Lq"), py::arg("Lk"),
           py::arg("head_dim"), py::arg("scale"), py::arg("causal"), py::arg("device"), py::arg("key_lengths_ptr") = 0,
           py::arg("key_lengths_int64") = false, py::arg("key_lengths_stride") = 1, py::arg("key_range_ptr") = 0,
           py::arg("key_mask_ptr") = 0, py::arg("key_mask_stride_b") = 0, py::arg("key_mask_stride_k") = 1)
      .def("set_strides", &AttnFwdParamsHost::set_strides, py::arg("q_strides"), py::arg("k_strides"),
           py::arg("v_strides"), py::arg("out_strides"),
           "Element strides (b, h, l, d) of q, k, v and out: last dim 1; the strides of dims with more than "
           "one index >= 0 and multiples of 8 elements (16 bytes); out's non-zero. Call again when the layout "
           "changes.")
      .def_property("scale", &AttnFwdParamsHost::scale, &AttnFwdParamsHost::set_scale,
                    "Softmax scale (multiplies q.k); settable between launches (e.g. per layer).")
      .def_property_readonly("dtype", &AttnFwdParamsHost::dtype)
      .def_property_readonly("B", [](const AttnFwdParamsHost& h) { return h.params().B; })
      .def_property_readonly("Hq", [](const AttnFwdParamsHost& h) { return h.params().Hq; })
      .def_property_readonly("Hkv", [](const AttnFwdParamsHost& h) { return h.params().Hkv; })
      .def_property_readonly("Lq", [](const AttnFwdParamsHost& h) { return h.params().Lq; })
      .def_property_readonly("Lk", [](const AttnFwdParamsHost& h) { return h.params().Lk; })
      .def_property_readonly("head_dim", &AttnFwdParamsHost::head_dim)
      .def_property_readonly("causal", &AttnFwdParamsHost::causal)
      .def_property_readonly("causal_offset", [](const AttnFwdParamsHost& h) { return h.params().causal_offset; })
      .def_property_readonly("device", &AttnFwdParamsHost::device)
      .def_property_readonly("num_m_blocks", [](const AttnFwdParamsHost& h) { return h.params().num_m_blocks; })
      .def_property_readonly("strides", &AttnFwdParamsHost::strides,
                             "((q), (k), (v), (out)) strides as set, or None before set_strides()")
      .def("__repr__", &AttnFwdParamsHost::repr);
  m.def("attn_fwd", &attn_fwd, py::arg("params"), py::arg("q_ptr"), py::arg("k_ptr"), py::arg("v_ptr"),
        py::arg("out_ptr"), py::arg("lse_ptr"), py::arg("stream"),
        "Flash-attention forward (sm_80+ tensor cores) of `params` (an AttnFwdParams with strides set) on "
        "device pointers q, k, v, out, lse (integers), launched on `stream` (a cudaStream_t as an integer) "
        "under params.device; no host synchronisation. out gets softmax(scale q k^T + mask) v; lse the "
        "natural-log logsumexp; a row with no visible key gets out 0 and lse -inf, NaN/Inf propagate as in "
        "SDPA. Pointers: non-null (k/v may be null when Lk == 0) and 16-byte aligned (lse 4). RuntimeError "
        "when no CUDA device is usable.");
  m.def("attention_fwd_head_dims", &attention_fwd_head_dims, "Head dims with a compiled attention forward instance.");
  m.def("attention_fwd_instances", &attention_fwd_instances,
        "Every compiled attention-forward instance: family, dtype, head_dim, causal, threads, block_m, block_n, "
        "smem_bytes (dynamic shared memory per CTA).");
});

static Registrar reg_key_ranges("key_ranges", [](py::module_& m) {
  m.def("key_ranges", &key_ranges, py::arg("mask_ptr"), py::arg("B"), py::arg("Lk"), py::arg("stride_b"),
        py::arg("stride_k"), py::arg("out_ptr"), py::arg("stream"),
        "Per batch row of a (B, Lk) bool key mask: [first visible key, last visible key + 1) into an "
        "int32 (B, 2) buffer; (Lk, 0) for a row with no visible key. Launched on `stream`.");
});

}  // namespace fastattn

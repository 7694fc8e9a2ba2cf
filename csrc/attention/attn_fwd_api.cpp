// Binding layer of the attention forward (plain C++, no pybind11): validates every argument with a
// message naming it (std::invalid_argument -> ValueError) before touching a device, then checks the
// device and the pointers (RuntimeError when there is no device), fills AttnFwdParams and dispatches
// dtype -> head dim -> causal to a compiled instance, launched on the caller's stream.
#include "attention/attn_fwd_api.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "attention/attn_fwd.h"
#include "attention/static_switch.h"
#include "common.h"

namespace fastattn {

namespace {

const char* dtype_name(int code) {
  switch (code) {
    case 0: return "float16";
    case 1: return "bfloat16";
    case 2: return "float32";
    default: return "unknown";
  }
}

std::string head_dims_text() {
  std::ostringstream os;
  bool first = true;
  for (int d : kAttnFwdHeadDims) {
    os << (first ? "" : ", ") << d;
    first = false;
  }
  return os.str();
}

// Validate one (B, H, L, D) tensor's strides and base pointer for cp.async / ldmatrix / 16-byte stores:
// last-dim stride 1, 16-byte aligned base, and strides of every dim with more than one index a
// multiple of 8 elements (16 bytes). `sizes` are (B, H, L, D). A tensor with no element (k/v when
// Lk == 0) is never dereferenced, so its pointer may be null (what torch gives an empty CUDA tensor).
void check_operand(const char* name, std::uintptr_t ptr, const std::vector<int64_t>& strides,
                   const int64_t (&sizes)[4], bool writable) {
  FA_CHECK_ARG(strides.size() == 4, "attention_fwd: " << name << "_strides must have 4 entries (b, h, l, d), got "
                                                      << strides.size());
  FA_CHECK_ARG(strides[3] == 1, "attention_fwd: " << name << "_strides[3] (last dim) must be 1 (contiguous head dim), got "
                                                  << strides[3]);
  const bool empty = sizes[0] == 0 || sizes[1] == 0 || sizes[2] == 0 || sizes[3] == 0;
  if (empty && ptr == 0) return;
  FA_CHECK_ARG(ptr != 0, "attention_fwd: " << name << "_ptr is null");
  FA_CHECK_ARG(ptr % 16 == 0, "attention_fwd: " << name << "_ptr must be 16-byte aligned for cp.async/vector access "
                                                << "(address % 16 = " << (ptr % 16) << ")");
  static const char* dims[3] = {"b", "h", "l"};
  for (int i = 0; i < 3; ++i) {
    if (sizes[i] <= 1) continue;  // a stride that is never multiplied by a non-zero index
    FA_CHECK_ARG(strides[i] >= 0, "attention_fwd: " << name << "_strides[" << i << "] (" << dims[i]
                                                    << ") must be >= 0, got " << strides[i]);
    FA_CHECK_ARG(strides[i] % 8 == 0, "attention_fwd: " << name << "_strides[" << i << "] (" << dims[i] << ") = "
                                                        << strides[i]
                                                        << " must be a multiple of 8 elements (16 bytes) for cp.async");
    if (writable) {
      FA_CHECK_ARG(strides[i] != 0, "attention_fwd: " << name << "_strides[" << i << "] (" << dims[i]
                                                      << ") is 0 on a dim of size " << sizes[i]
                                                      << ": output rows would overlap");
    }
  }
}

// One cudaPointerGetAttributes per pointer: device (or managed) memory, on the current device.
void check_on_current_device(std::uintptr_t ptr, const char* name, int device) {
  cudaPointerAttributes attr;
  cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  if (err != cudaSuccess) {
    cudaGetLastError();  // not a sticky error: clear it
    FA_CHECK_ARG(false, "attention_fwd: " << name << " is not a CUDA device pointer (" << cudaGetErrorString(err)
                                          << ")");
  }
  FA_CHECK_ARG(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged,
               "attention_fwd: " << name << " must point to CUDA device memory (got a host pointer)");
  FA_CHECK_ARG(attr.type == cudaMemoryTypeManaged || attr.device == device,
               "attention_fwd: " << name << " is on CUDA device " << attr.device << " but the current device is "
                                 << device << "; launch under torch.cuda.device(" << attr.device << ")");
}

}  // namespace

std::vector<int> attention_fwd_head_dims() {
  return std::vector<int>(std::begin(kAttnFwdHeadDims), std::end(kAttnFwdHeadDims));
}

void attention_fwd(std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr, std::uintptr_t out_ptr,
                   std::uintptr_t lse_ptr, int dtype, int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk,
                   int64_t head_dim, const std::vector<int64_t>& q_strides, const std::vector<int64_t>& k_strides,
                   const std::vector<int64_t>& v_strides, const std::vector<int64_t>& out_strides, double scale,
                   int causal, std::uintptr_t key_lengths_ptr, bool key_lengths_int64, int64_t key_lengths_stride,
                   std::uintptr_t key_range_ptr, std::uintptr_t key_mask_ptr, int64_t key_mask_stride_b,
                   int64_t key_mask_stride_k, std::uintptr_t stream) {
  // ---------------------------------------------------------------- metadata (no device access)
  FA_CHECK_ARG(dtype == static_cast<int>(DType::kFloat16) || dtype == static_cast<int>(DType::kBFloat16),
               "attention_fwd: dtype code " << dtype << " (" << dtype_name(dtype)
                                            << ") is not supported; the cuda kernel runs float16 (0) and bfloat16 (1)");
  bool hd_ok = false;
  for (int d : kAttnFwdHeadDims) hd_ok = hd_ok || d == head_dim;
  FA_CHECK_ARG(hd_ok, "attention_fwd: head_dim=" << head_dim << " is not supported; supported head dims: "
                                                 << head_dims_text());
  FA_CHECK_ARG(B >= 0 && Hq >= 0 && Lq >= 0 && Lk >= 0,
               "attention_fwd: sizes must be >= 0, got B=" << B << ", Hq=" << Hq << ", Lq=" << Lq << ", Lk=" << Lk);
  FA_CHECK_ARG(Hkv >= 1, "attention_fwd: Hkv must be >= 1, got " << Hkv);
  FA_CHECK_ARG(Hq % Hkv == 0, "attention_fwd: Hq=" << Hq << " must be a multiple of Hkv=" << Hkv
                                                   << " (query head h uses KV head h / (Hq / Hkv))");
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  FA_CHECK_ARG(Lq <= kIntMax - 256 && Lk <= kIntMax - 256,
               "attention_fwd: Lq and Lk must be < 2^31 - 256, got Lq=" << Lq << ", Lk=" << Lk);
  FA_CHECK_ARG(B * Hq <= kIntMax, "attention_fwd: B * Hq must be < 2^31 (grid x), got " << B * Hq);
  const int block_m = attn_fwd_block_m(static_cast<int>(head_dim));
  const int64_t num_m_blocks = (Lq + block_m - 1) / block_m;
  FA_CHECK_ARG(num_m_blocks <= 65535, "attention_fwd: Lq=" << Lq << " needs " << num_m_blocks
                                                           << " query blocks of " << block_m
                                                           << " rows; at most 65535 (grid y) are supported");
  const int64_t q_sizes[4] = {B, Hq, Lq, head_dim};
  const int64_t kv_sizes[4] = {B, Hkv, Lk, head_dim};
  check_operand("q", q_ptr, q_strides, q_sizes, false);
  check_operand("k", k_ptr, k_strides, kv_sizes, false);
  check_operand("v", v_ptr, v_strides, kv_sizes, false);
  check_operand("out", out_ptr, out_strides, q_sizes, true);
  FA_CHECK_ARG(lse_ptr != 0 && lse_ptr % 4 == 0,
               "attention_fwd: lse_ptr must be a non-null, 4-byte aligned float32 (B, Hq, Lq) buffer");
  FA_CHECK_ARG(causal >= 0 && causal <= 2,
               "attention_fwd: causal must be 0 (none), 1 (top_left) or 2 (bottom_right), got " << causal);
  FA_CHECK_ARG(std::isfinite(scale), "attention_fwd: scale must be finite, got " << scale);
  if (key_lengths_ptr != 0) {
    FA_CHECK_ARG(key_lengths_ptr % (key_lengths_int64 ? 8 : 4) == 0,
                 "attention_fwd: key_lengths_ptr is not aligned to its " << (key_lengths_int64 ? "int64" : "int32")
                                                                         << " element size");
  }
  FA_CHECK_ARG(key_range_ptr % 4 == 0, "attention_fwd: key_range_ptr must be 4-byte aligned (int32 (B, 2))");
  FA_CHECK_ARG(key_mask_ptr == 0 || key_range_ptr != 0,
               "attention_fwd: key_mask_ptr needs key_range_ptr (the [start, end) of each row, from key_ranges())");

  // ---------------------------------------------------------------- device
  require_device();
  if (B == 0 || Hq == 0 || Lq == 0) return;
  int device = 0;
  FA_CUDA_CHECK(cudaGetDevice(&device));
  check_on_current_device(q_ptr, "q", device);
  if (Lk > 0) {  // with no key, k and v are never read (every row gets 0 and lse -inf)
    check_on_current_device(k_ptr, "k", device);
    check_on_current_device(v_ptr, "v", device);
  }
  check_on_current_device(out_ptr, "out", device);
  check_on_current_device(lse_ptr, "lse", device);
  if (key_lengths_ptr != 0) check_on_current_device(key_lengths_ptr, "key_lengths", device);
  if (key_range_ptr != 0) check_on_current_device(key_range_ptr, "key_range", device);
  if (key_mask_ptr != 0) check_on_current_device(key_mask_ptr, "key_mask", device);

  AttnFwdParams p{};
  p.q = reinterpret_cast<const void*>(q_ptr);
  p.k = reinterpret_cast<const void*>(k_ptr);
  p.v = reinterpret_cast<const void*>(v_ptr);
  p.out = reinterpret_cast<void*>(out_ptr);
  p.lse = reinterpret_cast<float*>(lse_ptr);
  p.q_sb = q_strides[0], p.q_sh = q_strides[1], p.q_sm = q_strides[2];
  p.k_sb = k_strides[0], p.k_sh = k_strides[1], p.k_sm = k_strides[2];
  p.v_sb = v_strides[0], p.v_sh = v_strides[1], p.v_sm = v_strides[2];
  p.o_sb = out_strides[0], p.o_sh = out_strides[1], p.o_sm = out_strides[2];
  p.B = static_cast<int>(B);
  p.Hq = static_cast<int>(Hq);
  p.Hkv = static_cast<int>(Hkv);
  p.Lq = static_cast<int>(Lq);
  p.Lk = static_cast<int>(Lk);
  p.kv_group = static_cast<int>(Hq / Hkv);
  p.num_m_blocks = static_cast<int>(num_m_blocks);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  p.causal_offset = causal == static_cast<int>(Causal::kBottomRight) ? static_cast<int>(Lk - Lq) : 0;
  p.key_lengths = reinterpret_cast<const void*>(key_lengths_ptr);
  p.key_lengths_int64 = key_lengths_int64 ? 1 : 0;
  p.key_lengths_stride = key_lengths_stride;
  p.key_range = reinterpret_cast<const int32_t*>(key_range_ptr);
  p.key_mask = reinterpret_cast<const uint8_t*>(key_mask_ptr);
  p.key_mask_sb = key_mask_stride_b;
  p.key_mask_sk = key_mask_stride_k;

  const cudaStream_t s = as_stream(stream);
  FA_DTYPE_SWITCH(dtype, kDType, [&] {
    FA_HEADDIM_SWITCH(static_cast<int>(head_dim), kHeadDim, [&] {
      FA_BOOL_SWITCH(causal != static_cast<int>(Causal::kNone), kIsCausal,
                     [&] { run_attn_fwd<kDType, kHeadDim, kIsCausal>(p, s); });
    });
  });
}

}  // namespace fastattn

// Host entry points of the attention forward (see attn_fwd_api.cpp); bound in attn_fwd_bind.cpp.
#pragma once

#include <cstdint>
#include <vector>

namespace fastattn {

// Head dims with a compiled kernel instance.
std::vector<int> attention_fwd_head_dims();

// out (B, Hq, Lq, D) and lse (float32, contiguous (B, Hq, Lq)) from q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D).
// Pointers are device addresses; strides are element strides (b, h, l, d). dtype: 0 float16,
// 1 bfloat16. causal: 0 none, 1 top_left, 2 bottom_right. Key padding (optional, 0 = absent):
// key_lengths (B,) int32/int64, key_range (B, 2) int32 [start, end), key_mask (B, Lk) bool (needs
// key_range). Launched on `stream` (a cudaStream_t as an integer).
void attention_fwd(std::uintptr_t q_ptr, std::uintptr_t k_ptr, std::uintptr_t v_ptr, std::uintptr_t out_ptr,
                   std::uintptr_t lse_ptr, int dtype, int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk,
                   int64_t head_dim, const std::vector<int64_t>& q_strides, const std::vector<int64_t>& k_strides,
                   const std::vector<int64_t>& v_strides, const std::vector<int64_t>& out_strides, double scale,
                   int causal, std::uintptr_t key_lengths_ptr, bool key_lengths_int64, int64_t key_lengths_stride,
                   std::uintptr_t key_range_ptr, std::uintptr_t key_mask_ptr, int64_t key_mask_stride_b,
                   int64_t key_mask_stride_k, std::uintptr_t stream);

}  // namespace fastattn

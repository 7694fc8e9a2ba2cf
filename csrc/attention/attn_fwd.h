// Flash-attention forward (sm_80+ tensor cores): the parameter block shared by the binding layer
// (attn_fwd_api.cpp, plain C++) and the kernel instances (instances/*.cu, nvcc).
//
// Tensors are raw device pointers with element strides; q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D),
// out (B, Hq, Lq, D) (any strides with a contiguous last dim, e.g. (B, Lq, H, D) memory seen as
// (B, H, Lq, D)), lse float32 contiguous (B, Hq, Lq). Query head h reads KV head h / (Hq / Hkv).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace fastattn {

// Head dims with a compiled instance (keep in sync with FA_HEADDIM_SWITCH and instances/).
constexpr int kAttnFwdHeadDims[] = {32, 64, 80, 96, 128, 256};

// Causal codes shared with Python (fastattn.library._CAUSAL_CODES).
enum class Causal : int { kNone = 0, kTopLeft = 1, kBottomRight = 2 };

struct AttnFwdParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // (B, Hq, Lq) contiguous

  // element strides of the batch, head and sequence dims (the last dim is contiguous)
  int64_t q_sb, q_sh, q_sm;
  int64_t k_sb, k_sh, k_sm;
  int64_t v_sb, v_sh, v_sm;
  int64_t o_sb, o_sh, o_sm;

  int B, Hq, Hkv, Lq, Lk;
  int kv_group;          // Hq / Hkv
  int num_m_blocks;      // ceil(Lq / kBlockM)
  float scale_log2;      // softmax scale * log2(e): scores are exponentiated with exp2
  int causal_offset;     // key j is visible from row i iff j <= i + causal_offset (causal instances)

  // Key padding (all optional, combined with AND):
  const void* key_lengths;    // (B,) int32 or int64: keys [0, len) visible (clamped to [0, Lk])
  int key_lengths_int64;      // 1 if key_lengths is int64
  int64_t key_lengths_stride; // element stride of key_lengths
  const int32_t* key_range;   // (B, 2) int32 [start, end) (from key_ranges()): bounds of the key loop
  const uint8_t* key_mask;    // (B, Lk) bool, True = visible, read per key inside [start, end)
  int64_t key_mask_sb, key_mask_sk;
};

// One compiled instance: kDType 0 = float16, 1 = bfloat16. Defined in instances/*.cu.
template <int kDType, int kHeadDim, bool kIsCausal>
void run_attn_fwd(const AttnFwdParams& p, cudaStream_t stream);

// Tile shape of an instance, for the binding layer (grid size) without including device code.
constexpr int attn_fwd_block_m(int /*head_dim*/) { return 64; }

}  // namespace fastattn

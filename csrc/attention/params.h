// The parameter block of the attention forward kernels (FlashAttention's Flash_fwd_params): filled by the
// binding layer (api.cpp, plain C++), passed by value to every kernel family (sm80/ today, sm90/ next),
// read on the device through seqinfo.cuh. Plain C++: no device code and no CUDA header (the host tests
// compile it without a toolkit).
//
// Tensors are raw device pointers with element strides; q (B, Hq, Lq, D), k/v (B, Hkv, Lk, D),
// out (B, Hq, Lq, D) (any strides with a contiguous last dim, e.g. (B, Lq, H, D) memory seen as
// (B, H, Lq, D)), lse float32 contiguous (B, Hq, Lq). Query head h reads KV head h / (Hq / Hkv).
#pragma once

#include <cstdint>
#include <vector>

typedef struct CUstream_st* cudaStream_t;  // as cuda_runtime_api.h declares it

namespace fastattn {

// Causal codes shared with Python (the cuda backend's CAUSAL_CODES).
enum class Causal : int { kNone = 0, kTopLeft = 1, kBottomRight = 2 };

struct AttnFwdParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // (B, Hq, Lq) contiguous, natural log; -inf on rows with no visible key

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

  // ---- sequence info: which keys each batch row may see (read by SeqInfo, seqinfo.cuh). All optional
  // (null = absent), combined with AND:
  const void* key_lengths;    // (B,) int32 or int64: keys [0, len) visible (clamped to [0, Lk])
  int key_lengths_int64;      // 1 if key_lengths is int64
  int64_t key_lengths_stride; // element stride of key_lengths
  const int32_t* key_range;   // (B, 2) int32 [start, end) from key_ranges(): bounds of the key loop; with a
                              // key mask, start must be the first key it shows (seqinfo.cuh)
  const uint8_t* key_mask;    // (B, Lk) bool, True = visible, read per key inside [start, end)
  int64_t key_mask_sb, key_mask_sk;

  // ---- reserved for the next features: documented here so that each lands in its slot; no kernel reads
  // them yet and the binding sets them to null / 0 (passing them costs a few bytes of kernel parameters).
  // Varlen (FlashAttention's packed layout): sequence b owns query rows [cu_seqlens_q[b], cu_seqlens_q[b+1])
  // and keys [cu_seqlens_k[b], cu_seqlens_k[b+1]) of q/out and k/v (batch strides unused then);
  // seqused_k[b] (KV cache): only the first seqused_k[b] keys of sequence b are valid.
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  const int32_t* seqused_k;
  // Split-KV: num_splits > 1 writes each split's partial (out, lse) to the float32 workspace
  // out_accum (num_splits, B, Hq, Lq, D) and lse_accum (num_splits, B, Hq, Lq), combined by a second kernel.
  int num_splits;
  float* out_accum;
  float* lse_accum;
  // Dropout: an element is kept with probability 1 - p_dropout (kept values scaled by 1 / (1 - p_dropout)),
  // decided by a counter-based Philox stream keyed by (philox_seed, philox_offset) (saved for the backward).
  float p_dropout;
  uint64_t philox_seed;
  uint64_t philox_offset;
};

// One compiled instance of the sm80 kernel family: kDType 0 = float16, 1 = bfloat16. Defined in
// instances/*.cu (generate_instances.py).
template <int kDType, int kHeadDim, bool kIsCausal>
void run_attn_fwd_sm80(const AttnFwdParams& p, cudaStream_t stream);

// Facts of one compiled instance (registered by each instances/*.cu at load time; read by
// attention_fwd_instances() and benchmarks/cuda_resource_usage.py).
struct AttnFwdInstanceInfo {
  const char* family;  // kernel family: "sm80"
  int dtype;           // 0 float16, 1 bfloat16
  int head_dim;
  bool is_causal;
  int threads;         // per CTA
  int block_m;         // query rows per CTA
  int block_n;         // keys per K/V tile
  int smem_bytes;      // dynamic shared memory per CTA
};
void register_attn_fwd_instance(const AttnFwdInstanceInfo& info);  // defined in api.cpp
const std::vector<AttnFwdInstanceInfo>& attn_fwd_instances();

// Query rows per CTA of the sm80 family, for the binding layer (grid size) without including device code.
constexpr int attn_fwd_block_m(int /*head_dim*/) { return 64; }

}  // namespace fastattn

// Flash-attention forward kernel for sm_80+ (also the path used on sm_90): mma.sync m16n8k16 tensor
// cores fed by ldmatrix, online softmax in registers (exp2 with the scale folded in), K/V tiles
// double-buffered in shared memory with cp.async, causal and key-padding block skipping.
//
// Work split: one CTA = one (batch, query head, block of kBlockM = 64 query rows), 4 warps; warp w owns
// query rows [16w, 16w + 16) of the block and every key of each K/V tile (no cross-warp reduction).
//
// Shared memory (elements of T; rows padded by 8 elements = 16 bytes):
//   sQ [kBlockM][kHeadDim + 8]          (reused by each warp to stage its own output rows)
//   sK [2][kBlockN][kHeadDim + 8]       (two stages)
//   sV [2][kBlockN][kHeadDim + 8]
// The pitch is (D/2 + 4) words = 4 * odd (mod 32) for every D % 16 == 0, so the 8 row addresses of an
// ldmatrix 8x8 matrix (8 consecutive rows, same 16-byte column chunk) hit 8 distinct 4-bank groups:
// conflict-free ldmatrix and fragment staging without an XOR swizzle.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane / 4 and t = lane % 4:
//   A (16x16, row-major) reg0 = (g, 2t..2t+1), reg1 = (g+8, 2t..), reg2 = (g, 2t+8..), reg3 = (g+8, 2t+8..)
//   B (16x8, k x n)      reg0 = (k 2t..2t+1, n g), reg1 = (k 2t+8..2t+9, n g)
//   C (16x8 f32)         c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// ldmatrix.x4: lanes 8i..8i+7 give the 8 row addresses of matrix i; register i of lane l holds row l/4,
// columns 2(l%4)..+1 of matrix i (with .trans: rows 2(l%4)..+1, column l/4).
//   Q (A operand):  lane row = l % 16, column chunk = l / 16       -> reg i = A reg i
//   K (B operand, K rows are keys = n, contiguous d = k): key = 8 (l / 16) + l % 8, d chunk = (l / 8) % 2
//                   -> regs = {b0, b1} of key n-tile 2j, {b0, b1} of n-tile 2j+1
//   V (B operand via .trans, V rows are keys = k, contiguous d = n): key = 8 ((l / 8) % 2) + l % 8,
//                   d chunk = l / 16 -> regs = {b0, b1} of d-tile 2j, {b0, b1} of d-tile 2j+1
//   P (A operand of P V) is the C fragment of S = Q K^T repacked in registers: key n-tiles 2kk, 2kk+1
//   form the A fragment of key step kk (FlashAttention-2's register reuse).
//
// Masking and empty rows: a masked score is -inf. The running row max m starts at -inf; exponentials
// use m_use = (m == -inf ? 0 : m), so exp2(-inf - m_use) = 0 and no inf - inf is ever formed. A row
// with no visible key keeps l = 0 and gets out = 0 exactly and lse = -inf. K/V rows outside
// [key_start, key_limit) and Q rows >= Lq are zero-filled by cp.async (src-size 0), never read.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>

#include "attention/attn_fwd.h"
#include "common.h"

namespace fastattn {
namespace attn {

template <int kDType>
struct ElemType;
template <>
struct ElemType<0> {
  using type = __half;
};
template <>
struct ElemType<1> {
  using type = __nv_bfloat16;
};

template <int kDType_, int kHeadDim_, bool kIsCausal_>
struct AttnFwdTraits {
  static constexpr int kDType = kDType_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr bool kIsCausal = kIsCausal_;
  static constexpr int kNWarps = 4;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kBlockM = 16 * kNWarps;
  static constexpr int kBlockN = kHeadDim <= 96 ? 64 : 32;
  static constexpr int kPitch = kHeadDim + 8;           // smem row pitch, elements
  static constexpr int kChunksPerRow = kHeadDim / 8;    // 16-byte chunks per row
  static constexpr bool kQInRegs = kHeadDim <= 128;     // else Q fragments are re-read from smem
  // CTAs per SM asked of ptxas (caps registers at 64K / (128 * kMinBlocks)). Measured with nvcc 13.0:
  // 4 for D = 64 caps at 128 registers and spills 12-16 bytes, so every instance uses 1 (no spills;
  // D = 64 gets 130-145 registers = 3 CTAs/SM). See benchmarks/notes/cuda_attention.md.
  static constexpr int kMinBlocks = 1;
  static constexpr int kSmemQ = kBlockM * kPitch;       // elements
  static constexpr int kSmemKV = kBlockN * kPitch;      // elements, one stage of K (or V)
  static constexpr int kSmemBytes = (kSmemQ + 4 * kSmemKV) * 2;
  static_assert(kHeadDim % 16 == 0, "head dim must be a multiple of 16");
  static_assert(kBlockN % 16 == 0, "kBlockN must be a multiple of 16");
  static_assert(kBlockM == attn_fwd_block_m(kHeadDim), "attn_fwd_block_m out of sync");
};

// ------------------------------------------------------------------------------------ PTX wrappers
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy, L2 only; zero-fills the destination when !valid (src not read).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kN>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kN) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                              uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// c += a * b on a 16x8x16 tile, float32 accumulate.
template <int kDType>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kDType == 0) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats -> one 32-bit register of two 16-bit values (lo = lower column), round to nearest.
template <int kDType>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (kDType == 0) {
    __half2 v = __floats2half2_rn(lo, hi);
    r = *reinterpret_cast<uint32_t*>(&v);
  } else {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    r = *reinterpret_cast<uint32_t*>(&v);
  }
  return r;
}

// ------------------------------------------------------------------------------------------ kernel
template <typename Kt>
__global__ void __launch_bounds__(Kt::kNThreads, Kt::kMinBlocks) attn_fwd_kernel(const AttnFwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // ldmatrix / cp.async / bf16 mma need sm_80; the Python layer never launches this there
#else
  using T = typename ElemType<Kt::kDType>::type;
  constexpr int D = Kt::kHeadDim;
  constexpr int BM = Kt::kBlockM;
  constexpr int BN = Kt::kBlockN;
  constexpr int P = Kt::kPitch;
  constexpr int CPR = Kt::kChunksPerRow;
  constexpr int NT = BN / 8;   // key n-tiles of S per warp
  constexpr int DT = D / 8;    // d n-tiles of O per warp
  constexpr int KQ = D / 16;   // k steps of Q K^T
  constexpr int KP = BN / 16;  // k steps of P V
  constexpr float kNegInf = -INFINITY;
  constexpr float kLn2 = 0.6931471805599453f;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + Kt::kSmemQ;
  T* sV = sK + 2 * Kt::kSmemKV;

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;
  const int t4 = lane & 3;
  const int bh = blockIdx.x;
  const int b = bh / p.Hq;
  const int h = bh - b * p.Hq;
  const int hk = h / p.kv_group;
  // causal: the heaviest query blocks (most keys) are scheduled first
  const int m_block = Kt::kIsCausal ? p.num_m_blocks - 1 - static_cast<int>(blockIdx.y) : static_cast<int>(blockIdx.y);
  const int m0 = m_block * BM;
  const int warp_row0 = warp * 16;  // first row of this warp inside the block

  const T* __restrict__ q = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* __restrict__ k = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* __restrict__ v = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;
  T* __restrict__ out = static_cast<T*>(p.out) + b * p.o_sb + h * p.o_sh;

  // ---- key bounds of this block: [key_start, key_limit) holds every key any of its rows may see
  int key_start = 0;
  int key_end = p.Lk;
  if (p.key_lengths != nullptr) {
    const long long len = p.key_lengths_int64
                              ? static_cast<long long>(static_cast<const int64_t*>(p.key_lengths)[b * p.key_lengths_stride])
                              : static_cast<long long>(static_cast<const int32_t*>(p.key_lengths)[b * p.key_lengths_stride]);
    key_end = static_cast<int>(len < 0 ? 0LL : (len > p.Lk ? static_cast<long long>(p.Lk) : len));
  }
  if (p.key_range != nullptr) {
    key_start = max(key_start, p.key_range[2 * b]);
    key_end = min(key_end, p.key_range[2 * b + 1]);
  }
  int key_limit = key_end;
  if constexpr (Kt::kIsCausal) {
    const int last_row = min(m0 + BM, p.Lq) - 1;
    key_limit = min(key_limit, last_row + p.causal_offset + 1);  // may be <= 0: no key for this block
  }
  const int n_first = key_start / BN;
  const int n_end = key_limit > key_start ? (key_limit + BN - 1) / BN : n_first;  // exclusive

  // ---- per-lane ldmatrix offsets (elements)
  const int q_lane_off = (warp_row0 + (lane & 15)) * P + ((lane >> 4) << 3);
  const int k_lane_off = (((lane >> 4) << 3) + (lane & 7)) * P + (((lane >> 3) & 1) << 3);
  const int v_lane_off = ((((lane >> 3) & 1) << 3) + (lane & 7)) * P + ((lane >> 4) << 3);
  const uint32_t sQ_lane = smem_u32(sQ + q_lane_off);

  float acc_o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) acc_o[i][0] = acc_o[i][1] = acc_o[i][2] = acc_o[i][3] = 0.f;
  float row_max[2] = {kNegInf, kNegInf};  // log2-domain running max of rows g and g + 8
  float row_sum[2] = {0.f, 0.f};          // this thread's partial sums (quad-reduced at the end)

  if (n_first < n_end) {
    // Q tile: rows >= Lq zero-filled
#pragma unroll
    for (int i = 0; i < (BM * CPR + Kt::kNThreads - 1) / Kt::kNThreads; ++i) {
      const int c = tid + i * Kt::kNThreads;
      if ((BM * CPR) % Kt::kNThreads != 0 && c >= BM * CPR) break;
      const int r = c / CPR, cc = c - (c / CPR) * CPR;
      const bool ok = m0 + r < p.Lq;
      const T* src = ok ? q + static_cast<int64_t>(m0 + r) * p.q_sm + cc * 8 : q;
      cp_async_16(smem_u32(sQ + r * P + cc * 8), src, ok);
    }
    cp_async_commit();

    auto load_kv = [&](int n, int stage) {
      T* dK = sK + stage * Kt::kSmemKV;
      T* dV = sV + stage * Kt::kSmemKV;
#pragma unroll
      for (int i = 0; i < (BN * CPR + Kt::kNThreads - 1) / Kt::kNThreads; ++i) {
        const int c = tid + i * Kt::kNThreads;
        if ((BN * CPR) % Kt::kNThreads != 0 && c >= BN * CPR) break;
        const int r = c / CPR, cc = c - (c / CPR) * CPR;
        const int key = n * BN + r;
        const bool ok = key >= key_start && key < key_limit;
        const T* srck = ok ? k + static_cast<int64_t>(key) * p.k_sm + cc * 8 : k;
        const T* srcv = ok ? v + static_cast<int64_t>(key) * p.v_sm + cc * 8 : v;
        cp_async_16(smem_u32(dK + r * P + cc * 8), srck, ok);
        cp_async_16(smem_u32(dV + r * P + cc * 8), srcv, ok);
      }
    };
    load_kv(n_first, 0);
    cp_async_commit();

    uint32_t q_frag[Kt::kQInRegs ? KQ : 1][4];
    const int row_a = m0 + warp_row0 + g;  // global rows of this thread: row_a, row_a + 8
    const uint8_t* kmask = p.key_mask != nullptr ? p.key_mask + b * p.key_mask_sb : nullptr;

    for (int n = n_first; n < n_end; ++n) {
      const int stage = (n - n_first) & 1;
      // Prefetch tile n + 1 into the other stage (freed by the trailing barrier of iteration n - 1),
      // then wait until Q and tile n have landed (all groups but the newest).
      if (n + 1 < n_end) {
        load_kv(n + 1, stage ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();

      if constexpr (Kt::kQInRegs) {
        if (n == n_first) {
#pragma unroll
          for (int kk = 0; kk < KQ; ++kk)
            ldsm_x4(sQ_lane + kk * 32, q_frag[kk][0], q_frag[kk][1], q_frag[kk][2], q_frag[kk][3]);
        }
      }

      // ---- S = Q K^T (16 x BN per warp, float32)
      float s[NT][4];
#pragma unroll
      for (int i = 0; i < NT; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
      const uint32_t sK_lane = smem_u32(sK + stage * Kt::kSmemKV + k_lane_off);
#pragma unroll
      for (int kk = 0; kk < KQ; ++kk) {
        uint32_t a[4];
        if constexpr (Kt::kQInRegs) {
          a[0] = q_frag[kk][0]; a[1] = q_frag[kk][1]; a[2] = q_frag[kk][2]; a[3] = q_frag[kk][3];
        } else {
          ldsm_x4(sQ_lane + kk * 32, a[0], a[1], a[2], a[3]);
        }
#pragma unroll
        for (int jp = 0; jp < NT / 2; ++jp) {
          uint32_t b0, b1, b2, b3;
          ldsm_x4(sK_lane + (jp * 16 * P + kk * 16) * 2, b0, b1, b2, b3);
          mma_16816<Kt::kDType>(s[2 * jp], a, b0, b1);
          mma_16816<Kt::kDType>(s[2 * jp + 1], a, b2, b3);
        }
      }

      // ---- scale into the log2 domain, mask (only on tiles that cross a boundary)
      const int n0 = n * BN;
      bool need_mask = n0 < key_start || n0 + BN > key_limit || kmask != nullptr;
      if constexpr (Kt::kIsCausal) need_mask = need_mask || (n0 + BN - 1 > m0 + warp_row0 + p.causal_offset);
      if (need_mask) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = n0 + nt * 8 + 2 * t4 + e;
            bool key_ok = col >= key_start && col < key_limit;
            if (key_ok && kmask != nullptr) key_ok = __ldg(kmask + col * p.key_mask_sk) != 0;
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              bool vis = key_ok;
              if constexpr (Kt::kIsCausal) vis = vis && col <= row_a + 8 * r + p.causal_offset;
              s[nt][2 * r + e] = vis ? s[nt][2 * r + e] * p.scale_log2 : kNegInf;
            }
          }
        }
      } else {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int i = 0; i < 4; ++i) s[nt][i] *= p.scale_log2;
        }
      }

      // ---- online softmax (rows g and g + 8; a row is spread over the 4 lanes of a quad)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = row_max[r];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_use = mx == kNegInf ? 0.f : mx;
        const float alpha = exp2f(row_max[r] - m_use);  // 0 while the row has seen no key
        row_max[r] = mx;
        float tile_sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pe = exp2f(s[nt][2 * r + e] - m_use);
            s[nt][2 * r + e] = pe;
            tile_sum += pe;
          }
        }
        row_sum[r] = row_sum[r] * alpha + tile_sum;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
          acc_o[dt][2 * r] *= alpha;
          acc_o[dt][2 * r + 1] *= alpha;
        }
      }

      // ---- O += P V
      const uint32_t sV_lane = smem_u32(sV + stage * Kt::kSmemKV + v_lane_off);
#pragma unroll
      for (int kk = 0; kk < KP; ++kk) {
        uint32_t a[4];
        a[0] = pack2<Kt::kDType>(s[2 * kk][0], s[2 * kk][1]);
        a[1] = pack2<Kt::kDType>(s[2 * kk][2], s[2 * kk][3]);
        a[2] = pack2<Kt::kDType>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[3] = pack2<Kt::kDType>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int jd = 0; jd < DT / 2; ++jd) {
          uint32_t b0, b1, b2, b3;
          ldsm_x4_trans(sV_lane + (kk * 16 * P + jd * 16) * 2, b0, b1, b2, b3);
          mma_16816<Kt::kDType>(acc_o[2 * jd], a, b0, b1);
          mma_16816<Kt::kDType>(acc_o[2 * jd + 1], a, b2, b3);
        }
      }
      // every warp is done with this stage before the next iteration's prefetch overwrites it
      __syncthreads();
    }
  }

  // ---- epilogue: normalise, stage this warp's 16 rows in its own rows of sQ, 16-byte stores
  // (sQ rows of warp w are only ever read by warp w, and all cp.async groups were waited for.)
  T* sO = sQ;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.f ? 1.f / l : 0.f;  // empty row: exactly 0
    const int srow = warp_row0 + g + 8 * r;
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      *reinterpret_cast<uint32_t*>(sO + srow * P + dt * 8 + 2 * t4) =
          pack2<Kt::kDType>(acc_o[dt][2 * r] * inv, acc_o[dt][2 * r + 1] * inv);
    }
    const int row = m0 + srow;
    if (t4 == 0 && row < p.Lq) {
      p.lse[(static_cast<int64_t>(b) * p.Hq + h) * p.Lq + row] =
          l > 0.f ? row_max[r] * kLn2 + logf(l) : kNegInf;
    }
  }
  __syncwarp();
#pragma unroll
  for (int c = lane; c < 16 * CPR; c += 32) {
    const int r = c / CPR, cc = c - (c / CPR) * CPR;
    const int row = m0 + warp_row0 + r;
    if (row < p.Lq) {
      *reinterpret_cast<uint4*>(out + static_cast<int64_t>(row) * p.o_sm + cc * 8) =
          *reinterpret_cast<const uint4*>(sO + (warp_row0 + r) * P + cc * 8);
    }
  }
#endif
}

}  // namespace attn

// ------------------------------------------------------------------------------------------ launch
template <int kDType, int kHeadDim, bool kIsCausal>
void run_attn_fwd(const AttnFwdParams& p, cudaStream_t stream) {
  using Kt = attn::AttnFwdTraits<kDType, kHeadDim, kIsCausal>;
  auto kernel = attn::attn_fwd_kernel<Kt>;
  constexpr int smem = Kt::kSmemBytes;
  if constexpr (smem > 48 * 1024) {
    // Opt in to > 48 KB of dynamic shared memory, once per device (a per-context attribute).
    static std::atomic<uint64_t> configured{0};
    int dev = 0;
    FA_CUDA_CHECK(cudaGetDevice(&dev));
    const uint64_t bit = dev < 64 ? (uint64_t{1} << dev) : 0;
    if (bit == 0 || !(configured.load(std::memory_order_acquire) & bit)) {
      FA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      configured.fetch_or(bit, std::memory_order_acq_rel);
    }
  }
  const dim3 grid(static_cast<unsigned>(p.B) * static_cast<unsigned>(p.Hq), static_cast<unsigned>(p.num_m_blocks));
  kernel<<<grid, Kt::kNThreads, smem, stream>>>(p);
  FA_CUDA_CHECK(cudaGetLastError());
}

// Instantiate both causal variants of one (dtype, head dim) in one translation unit.
#define FASTATTN_INSTANTIATE_ATTN_FWD(DTYPE, HEADDIM)                                        \
  template void run_attn_fwd<DTYPE, HEADDIM, false>(const AttnFwdParams&, cudaStream_t);   \
  template void run_attn_fwd<DTYPE, HEADDIM, true>(const AttnFwdParams&, cudaStream_t);

}  // namespace fastattn

// GELU variants as device functors, selected by a template parameter (the idea of FlashInfer's
// activation.cuh): the variant is part of the kernel's type, so one can never be substituted for the
// other at run time. All math is fp32.
//
// Note on --use_fast_math (set for the whole extension): nvcc 13 then compiles tanhf to the hardware
// tanh.approx.f32 (relative error ~2^-11, i.e. ~5e-4 -- as large as the erf/tanh GELU difference this code
// must keep apart; checked in the PTX), and expf/division to ex2.approx/div.approx. erff is unaffected
// (only flush-to-zero). So the tanh GELU below is written without tanhf, in the identity
// 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)): expf's ex2.approx is ~2^-22 relative, and an IEEE division
// (__fdiv_rn, independent of the flags) keeps the result within a few fp32 ulps -- and, unlike
// 1 + tanh(u), it has no cancellation for negative x.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "ffn_kernels.h"

namespace fastattn {

template <Activation A>
struct Act;

template <>
struct Act<Activation::kNone> {
  static __device__ __forceinline__ float apply(float v) { return v; }
};

// x/2 (1 + erf(x / sqrt 2)): torch approximate="none", HF "gelu" (BERT).
template <>
struct Act<Activation::kGeluErf> {
  static __device__ __forceinline__ float apply(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }
};

// x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): torch approximate="tanh", HF "gelu_new" (GPT-2),
// evaluated as x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))) (see the note above). Edge cases match
// torch: +inf -> +inf, -inf -> NaN, large negative x -> -0/0, NaN -> NaN.
template <>
struct Act<Activation::kGeluTanh> {
  static __device__ __forceinline__ float apply(float v) {
    const float two_u = 1.5957691216057308f * (v + 0.044715f * v * v * v);  // 2 sqrt(2/pi) (x + 0.044715 x^3)
    return __fdiv_rn(v, 1.0f + expf(-two_u));
  }
};

// fp16 / bf16 / fp32 <-> fp32
template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

}  // namespace fastattn

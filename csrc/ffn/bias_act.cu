// y = act(y + bias) in place on an (M, N) row-major matrix (row stride stride_ym, unit column stride).
// Each thread handles VEC consecutive elements of one row (VEC = 16 bytes when rows and pointers allow
// it, else 1); a flat grid-stride loop with 64-bit indices covers any M.
#include <algorithm>
#include <cstdint>

#include "activation.cuh"
#include "common/device.h"
#include "ffn_kernels.h"

namespace fastattn {

namespace {

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, Activation A, bool HAS_BIAS, int VEC>
__global__ void bias_act_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t M, int64_t N,
                                int64_t stride_ym) {
  const int64_t packs_per_row = N / VEC;
  const int64_t total = M * packs_per_row;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / packs_per_row;
    const int64_t col = (i - row * packs_per_row) * VEC;
    Pack<T, VEC>* p = reinterpret_cast<Pack<T, VEC>*>(y + row * stride_ym + col);
    Pack<T, VEC> v = *p;
    Pack<T, VEC> b;
    if constexpr (HAS_BIAS) b = *reinterpret_cast<const Pack<T, VEC>*>(bias + col);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      float f = to_f32(v.v[j]);
      if constexpr (HAS_BIAS) f += to_f32(b.v[j]);
      v.v[j] = from_f32<T>(Act<A>::apply(f));
    }
    *p = v;
  }
}

template <typename T, Activation A, bool HAS_BIAS>
void launch_bias_act(T* y, const T* bias, int64_t M, int64_t N, int64_t stride_ym, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vec_ok = N % kVec == 0 && stride_ym % kVec == 0 && reinterpret_cast<std::uintptr_t>(y) % 16 == 0 &&
                      (!HAS_BIAS || reinterpret_cast<std::uintptr_t>(bias) % 16 == 0);
  const int threads = 256;
  int dev = 0, sms = 0;
  FA_CUDA_CHECK(cudaGetDevice(&dev));
  FA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int64_t work = M * (vec_ok ? N / kVec : N);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((work + threads - 1) / threads, int64_t(sms) * 32));
  if (vec_ok) {
    bias_act_kernel<T, A, HAS_BIAS, kVec><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(y, bias, M, N, stride_ym);
  } else {
    bias_act_kernel<T, A, HAS_BIAS, 1><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(y, bias, M, N, stride_ym);
  }
  FA_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void dispatch_act(std::uintptr_t y, std::uintptr_t bias, int64_t M, int64_t N, int64_t stride_ym, int activation,
                  cudaStream_t stream) {
  T* yp = reinterpret_cast<T*>(y);
  const T* bp = reinterpret_cast<const T*>(bias);
  // activation -> has_bias: every combination is its own instance
#define FA_BIAS_ACT_CASE(ACT)                                                                   \
  case ACT:                                                                                     \
    if (bp) launch_bias_act<T, ACT, true>(yp, bp, M, N, stride_ym, stream);                     \
    else launch_bias_act<T, ACT, false>(yp, bp, M, N, stride_ym, stream);                       \
    break;
  switch (static_cast<Activation>(activation)) {
    FA_BIAS_ACT_CASE(Activation::kNone)
    FA_BIAS_ACT_CASE(Activation::kGeluErf)
    FA_BIAS_ACT_CASE(Activation::kGeluTanh)
  }
#undef FA_BIAS_ACT_CASE
}

}  // namespace

void bias_act(std::uintptr_t y, std::uintptr_t bias, int64_t M, int64_t N, int64_t stride_ym, int dtype,
              int activation, std::uintptr_t stream) {
  FA_CHECK_ARG(M >= 0 && N >= 0, "bias_act: M and N must be >= 0, got M=" << M << ", N=" << N);
  FA_CHECK_ARG(activation >= 0 && activation <= 2,
               "bias_act: activation must be 0 (none), 1 (gelu erf) or 2 (gelu tanh), got " << activation);
  FA_CHECK_ARG(dtype >= 0 && dtype <= 2, "bias_act: dtype code must be 0 (fp16), 1 (bf16) or 2 (fp32), got " << dtype);
  FA_CHECK_ARG(M <= 1 || stride_ym >= N, "bias_act: stride_ym=" << stride_ym << " must be >= N=" << N);
  require_device();
  if (M == 0 || N == 0) return;
  require_device_pointer(y, "bias_act: y");
  if (bias) require_device_pointer(bias, "bias_act: bias");
  cudaStream_t s = as_stream(stream);
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat16: dispatch_act<__half>(y, bias, M, N, stride_ym, activation, s); break;
    case DType::kBFloat16: dispatch_act<__nv_bfloat16>(y, bias, M, N, stride_ym, activation, s); break;
    case DType::kFloat32: dispatch_act<float>(y, bias, M, N, stride_ym, activation, s); break;
  }
}

}  // namespace fastattn

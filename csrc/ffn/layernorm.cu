// y = LayerNorm(x + residual) * weight + bias over rows of length N (BERT's BertOutput at inference).
// One block per row. h = x + residual is formed in fp32 and kept in registers (kCache values per
// thread, enough for N <= kCache * 1024 = 8192); wider rows re-read the tail from memory (L1/L2-hot).
// Statistics are fp32 and two-pass: mean, then mean((h - mean)^2) — no E[h^2] - mean^2 cancellation.
#include <algorithm>
#include <cstdint>

#include "activation.cuh"
#include "common/device.h"
#include "ffn_kernels.h"

namespace fastattn {

namespace {

constexpr int kCache = 8;

__device__ __forceinline__ float block_sum(float v, float* smem) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nwarps = (blockDim.x + 31) >> 5;
  __syncthreads();  // smem may still be read by a previous reduction
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < nwarps ? smem[lane] : 0.0f;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;  // every thread holds the total
}

template <typename T, bool HAS_RES, bool HAS_W, bool HAS_B>
__global__ void residual_layernorm_kernel(const T* __restrict__ x, const T* __restrict__ r,
                                          const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                                          int N, int64_t stride_xm, int64_t stride_rm, int64_t stride_ym,
                                          float eps) {
  __shared__ float smem[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * stride_xm;
  const T* rr = HAS_RES ? r + row * stride_rm : nullptr;
  T* yr = y + row * stride_ym;
  const int tid = threadIdx.x, nt = blockDim.x;
  auto load_h = [&](int c) {
    float h = to_f32(xr[c]);
    if constexpr (HAS_RES) h += to_f32(rr[c]);
    return h;
  };

  float cache[kCache];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kCache; ++i) {
    const int c = tid + i * nt;
    cache[i] = c < N ? load_h(c) : 0.0f;
    sum += cache[i];
  }
  for (int c = tid + kCache * nt; c < N; c += nt) sum += load_h(c);
  const float mean = block_sum(sum, smem) / static_cast<float>(N);

  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < kCache; ++i) {
    const int c = tid + i * nt;
    const float d = c < N ? cache[i] - mean : 0.0f;
    sq += d * d;
  }
  for (int c = tid + kCache * nt; c < N; c += nt) {
    const float d = load_h(c) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(block_sum(sq, smem) / static_cast<float>(N) + eps);

  auto store = [&](int c, float h) {
    float v = (h - mean) * rstd;
    if constexpr (HAS_W) v *= to_f32(w[c]);
    if constexpr (HAS_B) v += to_f32(b[c]);
    yr[c] = from_f32<T>(v);
  };
#pragma unroll
  for (int i = 0; i < kCache; ++i) {
    const int c = tid + i * nt;
    if (c < N) store(c, cache[i]);
  }
  for (int c = tid + kCache * nt; c < N; c += nt) store(c, load_h(c));
}

template <typename T, bool HAS_RES, bool HAS_W, bool HAS_B>
void launch_ln(std::uintptr_t x, std::uintptr_t r, std::uintptr_t w, std::uintptr_t b, std::uintptr_t y,
               int64_t M, int64_t N, int64_t sxm, int64_t srm, int64_t sym, float eps, cudaStream_t stream) {
  // enough threads that each caches <= kCache values, rounded to whole warps, 32..1024
  int64_t threads = (N + kCache - 1) / kCache;
  threads = std::min<int64_t>(1024, std::max<int64_t>(32, (threads + 31) / 32 * 32));
  residual_layernorm_kernel<T, HAS_RES, HAS_W, HAS_B><<<static_cast<unsigned>(M), static_cast<unsigned>(threads), 0,
                                                        stream>>>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const T*>(r), reinterpret_cast<const T*>(w),
      reinterpret_cast<const T*>(b), reinterpret_cast<T*>(y), static_cast<int>(N), sxm, srm, sym, eps);
  FA_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void dispatch_ln(std::uintptr_t x, std::uintptr_t r, std::uintptr_t w, std::uintptr_t b, std::uintptr_t y,
                 int64_t M, int64_t N, int64_t sxm, int64_t srm, int64_t sym, float eps, cudaStream_t s) {
  // (has residual, has weight, has bias) -> template instance
  const int code = (r ? 4 : 0) | (w ? 2 : 0) | (b ? 1 : 0);
  switch (code) {
    case 0: launch_ln<T, false, false, false>(x, r, w, b, y, M, N, sxm, srm, sym, eps, s); break;
    case 1: launch_ln<T, false, false, true>(x, r, w, b, y, M, N, sxm, srm, sym, eps, s); break;
    case 2: launch_ln<T, false, true, false>(x, r, w, b, y, M, N, sxm, srm, sym, eps, s); break;
    case 3: launch_ln<T, false, true, true>(x, r, w, b, y, M, N, sxm, srm, sym, eps, s); break;
    case 4: launch_ln<T, true, false, false>(x, r, w, b, y, M, N, sxm, srm, sym, eps, s); break;
    case 5: launch_ln<T, true, false, true>(x, r, w, b, y, M, N, sxm, srm, sym, eps, s); break;
    case 6: launch_ln<T, true, true, false>(x, r, w, b, y, M, N, sxm, srm, sym, eps, s); break;
    default: launch_ln<T, true, true, true>(x, r, w, b, y, M, N, sxm, srm, sym, eps, s); break;
  }
}

}  // namespace

void residual_layernorm(std::uintptr_t x, std::uintptr_t residual, std::uintptr_t weight, std::uintptr_t bias,
                        std::uintptr_t y, int64_t M, int64_t N, int64_t stride_xm, int64_t stride_rm,
                        int64_t stride_ym, double eps, int dtype, std::uintptr_t stream) {
  FA_CHECK_ARG(M >= 0 && N >= 0, "residual_layernorm: M and N must be >= 0, got M=" << M << ", N=" << N);
  FA_CHECK_ARG(N < (int64_t(1) << 31), "residual_layernorm: N must be < 2^31, got " << N);
  FA_CHECK_ARG(M < (int64_t(1) << 31), "residual_layernorm: M (rows) must be < 2^31, got " << M);
  FA_CHECK_ARG(dtype >= 0 && dtype <= 2,
               "residual_layernorm: dtype code must be 0 (fp16), 1 (bf16) or 2 (fp32), got " << dtype);
  FA_CHECK_ARG(eps >= 0.0, "residual_layernorm: eps must be >= 0, got " << eps);
  require_device();
  if (M == 0 || N == 0) return;
  require_device_pointer(x, "residual_layernorm: x");
  require_device_pointer(y, "residual_layernorm: y");
  if (residual) require_device_pointer(residual, "residual_layernorm: residual");
  if (weight) require_device_pointer(weight, "residual_layernorm: weight");
  if (bias) require_device_pointer(bias, "residual_layernorm: bias");
  cudaStream_t s = as_stream(stream);
  const float e = static_cast<float>(eps);
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat16: dispatch_ln<__half>(x, residual, weight, bias, y, M, N, stride_xm, stride_rm, stride_ym, e, s); break;
    case DType::kBFloat16: dispatch_ln<__nv_bfloat16>(x, residual, weight, bias, y, M, N, stride_xm, stride_rm, stride_ym, e, s); break;
    case DType::kFloat32: dispatch_ln<float>(x, residual, weight, bias, y, M, N, stride_xm, stride_rm, stride_ym, e, s); break;
  }
}

}  // namespace fastattn

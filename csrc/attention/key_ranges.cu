// key_ranges (see key_ranges.h): one block of 256 threads per batch row, no host sync.
#include "attention/key_ranges.h"

#include <cstdint>
#include <limits>

#include "common/device.h"

namespace fastattn {

namespace {

constexpr int kThreads = 256;

__global__ void key_ranges_kernel(const uint8_t* __restrict__ mask, int64_t stride_b, int64_t stride_k, int64_t Lk,
                                  int32_t* __restrict__ out) {
  const int64_t b = blockIdx.x;
  int64_t lo = Lk, hi = -1;
  scan_key_range(mask + b * stride_b, stride_k, Lk, threadIdx.x, blockDim.x, lo, hi);
  __shared__ int s_lo, s_hi;  // Lk < 2^31 (checked by the binding): every key index fits
  if (threadIdx.x == 0) {
    s_lo = static_cast<int>(Lk);
    s_hi = -1;
  }
  __syncthreads();
  atomicMin(&s_lo, static_cast<int>(lo));
  atomicMax(&s_hi, static_cast<int>(hi));
  __syncthreads();
  if (threadIdx.x == 0) {
    out[2 * b] = s_lo;
    out[2 * b + 1] = s_hi + 1;
  }
}

}  // namespace

void key_ranges(std::uintptr_t mask, int64_t B, int64_t Lk, int64_t stride_b, int64_t stride_k, std::uintptr_t out,
                std::uintptr_t stream) {
  FA_CHECK_ARG(B >= 0 && Lk >= 0, "key_ranges: B and Lk must be >= 0, got B=" << B << ", Lk=" << Lk);
  FA_CHECK_ARG(Lk < (int64_t(1) << 31), "key_ranges: Lk must be < 2^31, got " << Lk);
  FA_CHECK_ARG(B <= std::numeric_limits<int32_t>::max(), "key_ranges: B must be < 2^31 (one block per row), got " << B);
  FA_CHECK_ARG(out % 4 == 0, "key_ranges: out_ptr must be 4-byte aligned (int32 (B, 2))");
  require_device();
  if (B == 0) return;
  FA_CHECK_ARG(Lk == 0 || mask != 0, "key_ranges: mask_ptr is null");
  require_device_pointer(out, "key_ranges: out");
  if (Lk > 0) require_device_pointer(mask, "key_ranges: mask");
  key_ranges_kernel<<<static_cast<unsigned>(B), kThreads, 0, as_stream(stream)>>>(
      reinterpret_cast<const uint8_t*>(mask), stride_b, stride_k, Lk, reinterpret_cast<int32_t*>(out));
  FA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fastattn

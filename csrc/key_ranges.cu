// key_ranges: from a (B, Lk) bool key-padding mask, per batch the first visible key and one past the
// last (start = Lk, end = 0 when no key is visible). Kernels use [start, end) as their key-loop bounds
// so fully padded blocks are never loaded. One block per batch row; no host sync.
#include <cstdint>

#include "common.h"
#include "key_ranges.h"

namespace fastattn {

__global__ void key_ranges_kernel(const uint8_t* __restrict__ mask, int64_t stride_b, int64_t stride_k,
                                  int Lk, int32_t* __restrict__ out) {
  const int b = blockIdx.x;
  const uint8_t* row = mask + static_cast<int64_t>(b) * stride_b;
  int lo = Lk, hi = -1;
  for (int j = threadIdx.x; j < Lk; j += blockDim.x) {
    if (row[static_cast<int64_t>(j) * stride_k]) {
      lo = min(lo, j);
      hi = max(hi, j);
    }
  }
  __shared__ int s_lo, s_hi;
  if (threadIdx.x == 0) {
    s_lo = Lk;
    s_hi = -1;
  }
  __syncthreads();
  atomicMin(&s_lo, lo);
  atomicMax(&s_hi, hi);
  __syncthreads();
  if (threadIdx.x == 0) {
    out[2 * b] = s_lo;
    out[2 * b + 1] = s_hi + 1;
  }
}

void key_ranges(std::uintptr_t mask, int64_t B, int64_t Lk, int64_t stride_b, int64_t stride_k,
                std::uintptr_t out, std::uintptr_t stream) {
  FA_CHECK_ARG(B >= 0 && Lk >= 0, "key_ranges: B and Lk must be >= 0, got B=" << B << ", Lk=" << Lk);
  FA_CHECK_ARG(Lk < (int64_t(1) << 31), "key_ranges: Lk must be < 2^31, got " << Lk);
  require_device();
  if (B == 0) return;
  require_device_pointer(mask, "mask");
  require_device_pointer(out, "out");
  key_ranges_kernel<<<static_cast<unsigned>(B), 256, 0, as_stream(stream)>>>(
      reinterpret_cast<const uint8_t*>(mask), stride_b, stride_k, static_cast<int>(Lk),
      reinterpret_cast<int32_t*>(out));
  FA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fastattn

// key_ranges: from a (B, Lk) bool key-padding mask, per batch row the first visible key and one past the
// last, into an int32 (B, 2) buffer ((Lk, 0) when no key is visible). Kernels use [start, end) as their
// key-loop bounds (AttnFwdParams::key_range, read by SeqInfo), so fully padded tiles are never loaded.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace fastattn {

// One thread's share of a row's scan: keys tid, tid + nthreads, ... < Lk. The index is 64-bit: with a
// 32-bit one, j + nthreads overflows once Lk > 2^31 - nthreads (Lk itself may be up to 2^31 - 1).
// lo / hi: the first and last visible key met, left as they are when none is.
FA_HOST_DEVICE void scan_key_range(const uint8_t* row, int64_t stride_k, int64_t Lk, int64_t tid, int64_t nthreads,
                                   int64_t& lo, int64_t& hi) {
  for (int64_t j = tid; j < Lk; j += nthreads) {
    if (row[j * stride_k]) {
      lo = j < lo ? j : lo;
      hi = j > hi ? j : hi;
    }
  }
}

// mask: (B, Lk) uint8/bool device pointer with element strides; out: (B, 2) int32 device pointer.
// Launched on `stream`; no host synchronisation.
void key_ranges(std::uintptr_t mask, int64_t B, int64_t Lk, int64_t stride_b, int64_t stride_k, std::uintptr_t out,
                std::uintptr_t stream);

}  // namespace fastattn

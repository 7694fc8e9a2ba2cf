// key_ranges: from a (B, Lk) bool key-padding mask, per batch row the first visible key and one past the
// last, into an int32 (B, 2) buffer ((Lk, 0) when no key is visible). Kernels use [start, end) as their
// key-loop bounds (AttnFwdParams::key_range, read by SeqInfo), so fully padded tiles are never loaded.
#pragma once

#include <cstdint>

namespace fastattn {

// mask: (B, Lk) uint8/bool device pointer with element strides; out: (B, 2) int32 device pointer.
// Launched on `stream`; no host synchronisation.
void key_ranges(std::uintptr_t mask, int64_t B, int64_t Lk, int64_t stride_b, int64_t stride_k, std::uintptr_t out,
                std::uintptr_t stream);

}  // namespace fastattn

#pragma once
#include <cstdint>

namespace fastattn {
// mask: (B, Lk) uint8/bool device pointer with element strides; out: (B, 2) int32 device pointer.
void key_ranges(std::uintptr_t mask, int64_t B, int64_t Lk, int64_t stride_b, int64_t stride_k,
                std::uintptr_t out, std::uintptr_t stream);
}  // namespace fastattn

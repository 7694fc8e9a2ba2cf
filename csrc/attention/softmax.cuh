// The end of a query row's online softmax, shared by the kernel families. Host-compilable (tested on CPU by
// tests/test_csrc_host.py).
//
// Contract (DESIGN.md): a row with no visible key gets out = 0 exactly and lse = -inf; every other row is
// softmax(scores) @ V with NaN and Inf propagating as in SDPA. "No visible key" is decided from the mask
// alone (has_key: the row met at least one visible key), never from the values: a row whose scores are
// NaN has row_sum = NaN, and a row whose visible scores are all -inf (Inf inputs) has row_sum = 0, so
// 1 / row_sum = inf and out = 0 * inf = NaN -- what SDPA's softmax gives for both.
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace fastattn {

struct RowFinal {
  float inv_sum;  // multiplies the row's accumulator
  float lse;      // natural-log logsumexp of the scaled scores
};

// row_max: running max in the log2 domain (scores * scale * log2 e; -inf while no finite score was seen);
// row_sum: sum of exp2(score - m_use) over the row (m_use = row_max, or 0 while row_max is -inf).
FA_HOST_DEVICE RowFinal finalize_row(float row_max, float row_sum, bool has_key) {
  constexpr float kLn2 = 0.6931471805599453f;
  if (!has_key) return RowFinal{0.f, -INFINITY};
  return RowFinal{1.f / row_sum, row_max * kLn2 + logf(row_sum)};
}

}  // namespace fastattn

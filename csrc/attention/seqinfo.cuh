// Sequence info on the device: which keys the query rows of one batch row may see. The one place that
// turns AttnFwdParams' key lengths, key range and causal offset into loop bounds -- the twin of the key-range
// prologue of the Triton kernel (kernels/attention.py: kv_start / kv_end / hi), with the same rules:
//
//   key_start = key_range[b][0]                       (0 without a key range)
//   key_end   = min(Lk, clamp(key_lengths[b], 0, Lk), key_range[b][1])
//   causal:   row i sees key j iff j <= i + causal_offset  (0 top-left, Lk - Lq bottom-right)
//   keys of query rows [m0, m_end):  [key_start, key_limit), key_limit = min(key_end, m_end - 1 + causal_offset + 1)
//
// A key mask (per-key bits) further hides keys inside [key_start, key_end); the kernel reads it per tile.
// Its key range must be tight at the start, as key_ranges() computes it: key_range[b][0] is the first key
// the mask shows (or >= key_range[b][1] when it shows none). Then key_start itself is visible to every row
// whose bounds are not empty, and row_has_key() is exact from the bounds alone.
// Host-compilable (tests/test_csrc_host.py builds it with the host compiler), so the bounds are tested on
// CPU against the Python statement of the same rules. Every sum stays below 2^31: the binding checks
// Lq, Lk < 2^31 - 256 and a block's last row is < Lq + 64.
#pragma once

#include <cstdint>

#include "attention/params.h"
#include "common/host_device.h"

namespace fastattn {

FA_HOST_DEVICE int imin(int a, int b) { return a < b ? a : b; }
FA_HOST_DEVICE int imax(int a, int b) { return a > b ? a : b; }

template <bool kIsCausal>
struct SeqInfo {
  int key_start;      // first key any query row of this batch row may see
  int key_end;        // one past the last (before causal)
  int causal_offset;  // row i sees key j iff j <= i + causal_offset (causal instances only)

  FA_HOST_DEVICE SeqInfo(const AttnFwdParams& p, int b) : key_start(0), key_end(p.Lk), causal_offset(p.causal_offset) {
    if (p.key_lengths != nullptr) {
      const int64_t len = p.key_lengths_int64
                              ? static_cast<const int64_t*>(p.key_lengths)[b * p.key_lengths_stride]
                              : static_cast<int64_t>(static_cast<const int32_t*>(p.key_lengths)[b * p.key_lengths_stride]);
      key_end = static_cast<int>(len < 0 ? int64_t{0} : (len > p.Lk ? static_cast<int64_t>(p.Lk) : len));
    }
    if (p.key_range != nullptr) {
      key_start = imax(key_start, p.key_range[2 * b]);
      key_end = imin(key_end, p.key_range[2 * b + 1]);
    }
  }

  // One past the last key that query row `row` may see. May be <= key_start: the row sees no key.
  FA_HOST_DEVICE int row_key_end(int row) const {
    return kIsCausal ? imin(key_end, row + causal_offset + 1) : key_end;
  }

  // Whether query row `row` sees at least one key (exact: the visible keys of a row are the interval
  // [key_start, row_key_end(row)), thinned by a key mask that shows key_start). Decides "empty row -> 0"
  // from the mask alone, never from score values (softmax.cuh).
  FA_HOST_DEVICE bool row_has_key(int row) const { return row_key_end(row) > key_start; }

  // One past the last key any of the query rows [m0, min(m0 + block_m, Lq)) may see (their key loop ends
  // there). May be <= key_start: the block has no key and skips the loop.
  FA_HOST_DEVICE int block_key_limit(int m0, int block_m, int Lq) const {
    return row_key_end(imin(m0 + block_m, Lq) - 1);
  }

  // The causal part of the per-element test (bounds and key mask are tested apart).
  FA_HOST_DEVICE bool causal_visible(int row, int key) const { return !kIsCausal || key <= row + causal_offset; }
};

}  // namespace fastattn

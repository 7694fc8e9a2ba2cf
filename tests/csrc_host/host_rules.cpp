// Host build of the device-side rules (csrc/attention/seqinfo.cuh, softmax.cuh, key_ranges.h), driven by
// tests/test_csrc_host.py: it writes cases to stdin and compares the answers with Python statements of the
// same contract. No CUDA toolkit needed.
//
//   seqinfo   per line "Lq Lk causal block_m m0 has_len key_len len_is_int64 has_range range_start range_end mask"
//             (mask: one 0/1 per key, or "-" for none)
//             -> "key_start key_end block_limit | row:visible keys as lo-hi intervals;row_key_end;row_has_key ..."
//   finalize  per line "has_key row_max row_sum" (floats, inf/nan allowed) -> "inv_sum lse"
//   scan      per line "Lk tid nthreads" over a row whose every key is visible (stride 0) -> "lo hi"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>

#include "attention/key_ranges.h"
#include "attention/params.h"
#include "attention/seqinfo.cuh"
#include "attention/softmax.cuh"

using namespace fastattn;

template <bool kCausal>
void seqinfo_case(const AttnFwdParams& p, int block_m, int m0, const std::string& mask) {
  const SeqInfo<kCausal> seq(p, 0);
  const int limit = seq.block_key_limit(m0, block_m, p.Lq);
  std::cout << seq.key_start << " " << seq.key_end << " " << limit << " |";
  for (int row = m0; row < m0 + block_m && row < p.Lq; ++row) {
    std::cout << " " << row << ":";
    int run = -1;
    for (int col = 0; col <= p.Lk; ++col) {
      // the kernel's per-element test: bounds of the block, the key mask bit, then the causal part
      const bool vis = col < p.Lk && col >= seq.key_start && col < limit && (mask == "-" || mask[col] == '1') &&
                       seq.causal_visible(row, col);
      if (vis && run < 0) run = col;
      if (!vis && run >= 0) {
        std::cout << run << "-" << col << ",";
        run = -1;
      }
    }
    std::cout << ";" << seq.row_key_end(row) << ";" << (seq.row_has_key(row) ? 1 : 0);
  }
  std::cout << "\n";
}

static float parse_float(const std::string& s) {
  if (s == "nan") return NAN;
  if (s == "inf") return INFINITY;
  if (s == "-inf") return -INFINITY;
  return std::stof(s);
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string mode = argv[1];
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    std::istringstream is(line);
    if (mode == "seqinfo") {
      int64_t Lq, Lk, causal, block_m, m0, has_len, key_len, is64, has_range, rs, re;
      std::string mask;
      is >> Lq >> Lk >> causal >> block_m >> m0 >> has_len >> key_len >> is64 >> has_range >> rs >> re >> mask;
      AttnFwdParams p{};
      p.Lq = static_cast<int>(Lq);
      p.Lk = static_cast<int>(Lk);
      p.causal_offset = causal == 2 ? static_cast<int>(Lk - Lq) : 0;
      int32_t len32 = static_cast<int32_t>(key_len);
      int64_t len64 = key_len;
      int32_t range[2] = {static_cast<int32_t>(rs), static_cast<int32_t>(re)};
      if (has_len) {
        p.key_lengths = is64 ? static_cast<const void*>(&len64) : static_cast<const void*>(&len32);
        p.key_lengths_int64 = static_cast<int>(is64);
        p.key_lengths_stride = 1;
      }
      if (has_range) p.key_range = range;
      if (causal) seqinfo_case<true>(p, static_cast<int>(block_m), static_cast<int>(m0), mask);
      else seqinfo_case<false>(p, static_cast<int>(block_m), static_cast<int>(m0), mask);
    } else if (mode == "finalize") {
      std::string h, m, s;
      is >> h >> m >> s;
      const RowFinal f = finalize_row(parse_float(m), parse_float(s), h == "1");
      std::printf("%.9g %.9g\n", f.inv_sum, f.lse);
    } else if (mode == "scan") {
      int64_t Lk, tid, n;
      is >> Lk >> tid >> n;
      const uint8_t one = 1;
      int64_t lo = Lk, hi = -1;
      scan_key_range(&one, 0, Lk, tid, n, lo, hi);
      std::cout << lo << " " << hi << "\n";
    } else {
      return 2;
    }
  }
  return 0;
}

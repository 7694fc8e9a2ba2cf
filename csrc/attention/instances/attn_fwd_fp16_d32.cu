// Kernel instances of the attention forward: fp16, head dim 32 (non-causal and causal).
// One file per (dtype, head dim) so that ninja compiles them in parallel.
#include "attention/attn_fwd_kernel.cuh"

namespace fastattn {
FASTATTN_INSTANTIATE_ATTN_FWD(0, 32)
}  // namespace fastattn

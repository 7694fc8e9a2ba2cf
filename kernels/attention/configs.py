"""Launch configurations of the attention kernels: named config lists, the resource model and the
prune of the autotuned prefill kernel, the autotuned-kernel factory, and the fixed launch rules of the
decode pair (tile, split count, combine warps). Plain Python: nothing here is device code.
"""

from __future__ import annotations

from typing import Optional

import triton

#: The largest ``Lq`` the launcher sends to the decode kernel (more rows per head: the prefill
#: kernel's tiles fill up).
DECODE_MAX_LQ = 16
#: Upper bound of ``num_splits`` (the combine loads all partials of a row at once).
MAX_SPLITS = 32
#: Fewest keys per split the heuristic aims for (below this the combine costs more than it saves).
MIN_KEYS_PER_SPLIT = 256


# ------------------------------------------------------------------------------- configs and prune
def _cfg(bm: int, bn: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


#: Ampere (sm_80/86/89): cp.async pipelining, mma.sync; 2-3 stages fit the 100-164 KB of shared memory,
#: the unpipelined 1-stage tiles are for head dim 256 on the 100 KB parts (sm_86/89).
CONFIGS_SM80 = ([_cfg(bm, bn, w, s) for bm in (64, 128) for bn in (32, 64, 128) for w in (4, 8) for s in (2, 3)]
                + [_cfg(64, 32, 8, 1), _cfg(64, 64, 8, 1)])
#: Hopper (sm_90): wgmma wants 64-row warpgroup tiles; deeper pipelines (228 KB shared memory). The
#: BLOCK_N=32 / 8-warp tiles are the ones that fit head dim 256 without spilling.
CONFIGS_SM90 = ([_cfg(bm, bn, w, s) for bm in (64, 128) for bn in (64, 128) for w in (4, 8) for s in (2, 3, 4)]
                + [_cfg(64, 32, 8, 2), _cfg(64, 32, 8, 3), _cfg(128, 32, 8, 2)])
#: fp32 (IEEE fp32 FMA dots, sm_80 and sm_90): each thread holds whole operand rows of its dot tiles,
#: and ptxas spills erratically in this space (compile-only scans, triton 3.9 and 3.6, sm_80/sm_90,
#: head dims 32-256, causal / key-mask / dense masks): every 4-warp tile and every 32- or 64-row tile
#: spilled somewhere (e.g. 32x64 / 8 warps by 4 bytes at head dim 32 on sm_80, 32x16 / 8 warps with a
#: float mask at head dim 128 on sm_90), where 16-row tiles with 8 warps did not (except 16x32 with 3
#: stages: 8 bytes with a float mask at head dim 128, triton 3.6, sm_90). These are the fp32
#: list; ``kept_configs`` uses it for 4-byte inputs instead of the per-arch list, with the same
#: shared-memory check. ``benchmarks/compile_check.py`` re-checks it.
CONFIGS_FP32 = [_cfg(16, 32, 8, 2), _cfg(16, 64, 8, 2), _cfg(16, 64, 8, 3), _cfg(16, 16, 8, 3)]
#: Dropout at head dim 256 with a dense mask: every tile above spilled (compile-only, sm_90 and sm_80,
#: fp16); this one did not (244 registers on sm_90). Kept only for that case (``kept_configs``).
CONFIG_DROPOUT_FALLBACK = _cfg(64, 16, 8, 2)
#: Measured exceptions on sm_80 (compile-only, ``benchmarks/results/compile_check/triton-3.9.0-sm80.csv``):
#: (BLOCK_M, BLOCK_N, num_warps, num_stages, head dim, element bytes) tiles the model keeps and ptxas
#: spilled (4-16 bytes, 8-16 bytes of stack): fp16 at head dim 64 with a causal mask (64x32/8w/3,
#: 128x32/4w/2, 128x32/8w/3), the fp32 16x64/8w/2 tile at head dim 128 with a float mask, and the
#: unpipelined 64x32/8w/1 at fp16 head dim 128 with varlen + causal + dropout. Dropped
#: for every mask form of that head dim and element size (the others keep enough tiles).
SM80_SPILLS = frozenset({(64, 32, 8, 3, 64, 2), (128, 32, 4, 2, 64, 2), (128, 32, 8, 3, 64, 2),
                         (16, 64, 8, 2, 128, 4),
                         # fp16 head dim 128, varlen + causal + dropout: 16 bytes
                         (64, 32, 8, 1, 128, 2)})
#: The interpreter (TRITON_INTERPRET=1): one small fixed config, no autotuning.
CONFIG_INTERPRET = _cfg(32, 32, 4, 1)


def keep(conf: triton.Config, capability=None, block_d: int = 128) -> bool:
    """Static rule (as the Triton tutorial's ``keep``): on Hopper a wgmma warpgroup (4 warps) owns 64
    query rows, so 8 warps need ``BLOCK_M >= 128``; except at head dim 256, where 4 warps cannot hold
    the accumulator and the second warpgroup splits the columns instead."""
    bm = conf.kwargs["BLOCK_M"]
    if capability is not None and capability[0] == 9 and conf.num_warps == 8 and bm < 128 and block_d < 256:
        return False
    if capability is not None and capability[0] == 8 and bm >= 128 and block_d >= 256:
        return False  # sm_80 (mma.sync, Q in registers): 128-row tiles spill at head dim 256 (compile-only)
    return True


def _smem(conf: triton.Config, block_d: int, block_dv: int, elem_bytes: int, dense_mode: int = 0,
          dense_bytes: int = 0, key_mask: bool = False) -> int:
    """Shared memory of a prefill tile (see :func:`config_fits`)."""
    bm, bn = conf.kwargs["BLOCK_M"], conf.kwargs["BLOCK_N"]
    stages = max(conf.num_stages, 1)
    smem = stages * bn * (block_d + block_dv) * elem_bytes + bm * block_d * elem_bytes
    if dense_mode:
        smem += stages * bm * bn * (dense_bytes or (1 if dense_mode == 1 else 4))
    if key_mask:
        smem += stages * bn
    return smem


def config_fits(conf: triton.Config, block_d: int, block_dv: int, elem_bytes: int, smem_bytes: int,
                dense_mode: int = 0, key_mask: bool = False, dense_bytes: int = 0, dropout: bool = False,
                sm80: bool = False) -> bool:
    """Resource model of the tensor-core (fp16/bf16) tiles, calibrated on ptxas output of compile-only
    builds (``benchmarks/compile_check.py``; first fit: fp16, triton 3.9, sm_90, every config x head
    dim; see ``benchmarks/notes/triton_attention.md``).

    Shared memory: ``stages`` buffers of the K/V tiles plus the Q tile (exact on sm_90), plus
    ``stages`` buffers of the dense mask tile (``BLOCK_M x BLOCK_N x dense_bytes``; 0 = 1 for a bool
    mask, 4 for a float one) and of a key-mask vector: the software pipeline stages them like K/V (a
    fp16 bias at 128x64 with 3 stages measured 213 KB against 164 KB without this term).
    Registers per thread: the fp32 accumulator, the score tile (counted twice: scores and
    probabilities), Q, and the K/V tile addresses (one 32-bit offset per 16-byte vector, live across
    the loop). Above 232 the kernel spilled; at the 224 the model had before this term, 64x128/4-warp
    and 128x128/8-warp tiles at head dim 128 were kept and spilled. Head dim 256 with BLOCK_N >= 64
    spilled with more than 2 stages, or with any mask (64x64/8 warps/2 stages + key mask: 144 bytes);
    not captured by the formula. A dense mask (``dense_mode`` 1/2) or a key mask adds its tile of
    offsets/values/keep flags: two more score-tile terms (calibrated on bool/float/key masks at head
    dims 64/80/128), a float bias one more for its ``-inf`` test (128x64/8 warps at head dim 128
    spilled 0.5 KB with triton 3.9 once removal no longer relied on ``-inf`` arithmetic). fp32 (``elem_bytes == 4``) tiles are not modelled
    here: :data:`CONFIGS_FP32` lists the ones measured not to spill.

    Dropout (``HAS_DROPOUT``: the Philox words of a ``BLOCK_M x BLOCK_N / 4`` tile and the keep flags)
    adds two more score-tile terms (64x64/4w at head dim 128 + causal spilled 20 bytes with one); at head dim 256 only ``BLOCK_M = 64, BLOCK_N <= 32`` tiles without a
    dense mask stay spill-free (with one: :data:`CONFIG_DROPOUT_FALLBACK`); on sm_80 (``sm80``: mma.sync
    keeps more operands in registers) the limit with dropout is 188 instead of 232. Calibrated on
    compile-only fp16 builds (causal / dense-f16 / key-mask + dropout at head dims 64/128/256: e.g. on
    sm_90 128x64/8w at 128 kept with a causal mask (248 registers) and pruned with a float mask (spilled
    764 bytes); on sm_80 64x128/8w at 64 with key mask + causal spilled 220 bytes at model 224, 128x32/8w
    at 128 with a float mask 12 bytes at 196, 64x64/8w at 128 with a float mask 4 bytes at 152, 64x128/8w
    at 64 causal 116 bytes at 160: so on sm_80 dropout also needs ``BLOCK_N <= 64``, and ``<= 32`` with a
    dense mask)."""
    bm, bn = conf.kwargs["BLOCK_M"], conf.kwargs["BLOCK_N"]
    stages = max(conf.num_stages, 1)
    smem = _smem(conf, block_d, block_dv, elem_bytes, dense_mode, dense_bytes, key_mask)
    threads = 32 * conf.num_warps
    regs = ((bm * block_dv + 2 * bm * bn) / threads + bm * block_d * elem_bytes / 4 / threads
            + bn * (block_d + block_dv) * elem_bytes / 16 / threads)
    if dense_mode or key_mask:
        regs += 2 * bm * bn / threads
    if dense_mode == 2:  # the -inf-bias removal flags (NaN-safe masking): 128x64/8 warps at D128 spilled
        regs += bm * bn / threads
    if max(block_d, block_dv) >= 256 and bn >= 64 and (stages > 2 or dense_mode or key_mask):
        return False
    if dropout:
        regs += 2 * bm * bn / threads
        if max(block_d, block_dv) >= 256 and (bn >= 64 or bm >= 128 or dense_mode):
            return False
        if sm80:  # the philox tile grows with BLOCK_N: 64x128/8w spilled at model 160 (head dim 64)
            if bn > 64 or (dense_mode and bn > 32):
                return False
            return smem <= smem_bytes and regs <= 188
    return smem <= smem_bytes and regs <= 232


def kept_configs(configs, capability, smem_bytes: int, block_d: int, block_dv: int, elem_bytes: int,
                 dense_mode: int = 0, dense_bytes: int = 0, key_mask: bool = False, lq_bucket: int = 1 << 30,
                 dropout: bool = False):
    """The configs of ``configs`` the prune keeps for one specialisation (what ``prune_configs`` returns
    inside the autotuner; also what ``benchmarks/compile_check.py`` compiles).

    fp16/bf16: the per-arch tiles ``keep`` and ``config_fits`` accept, then only query blocks not much taller than
    the (bucketed) query length (decode: Lq = 1); if nothing fits, the smallest tile with the most
    warps. fp32 (``elem_bytes == 4``): the entries of :data:`CONFIGS_FP32` among ``configs`` whose
    shared memory fits."""
    fp32 = {_key(c) for c in CONFIGS_FP32}
    if capability is not None and capability[0] == 8:
        configs = [c for c in configs if _key(c) + (block_d, min(elem_bytes, 4)) not in SM80_SPILLS] or configs
    if elem_bytes >= 4:
        ok = [c for c in configs if _key(c) in fp32
              and _smem(c, block_d, block_dv, elem_bytes, dense_mode, dense_bytes, key_mask) <= smem_bytes]
        if not ok:  # no fp32 tile fits the model (which over-counts their pipeline): the smallest
            ok = [min((c for c in configs if _key(c) in fp32), key=lambda c: (c.kwargs["BLOCK_N"], c.num_stages))]
        return ok
    fallback = _key(CONFIG_DROPOUT_FALLBACK)
    ok = [c for c in configs
          if _key(c) not in fp32 and _key(c) != fallback and keep(c, capability, block_d)
          and config_fits(c, block_d, block_dv, elem_bytes, smem_bytes, dense_mode, key_mask, dense_bytes, dropout,
                          capability is not None and capability[0] == 8)]
    short = [c for c in ok if c.kwargs["BLOCK_M"] <= max(lq_bucket, 64)]
    ok = short or ok
    if not ok and dropout:  # dropout at head dim 256 with a dense mask: the measured small tile
        ok = [c for c in configs if _key(c) == fallback]
    if not ok:  # nothing fits the model: take the smallest tile with the most warps
        ok = [min((c for c in configs if _key(c) not in fp32),
                  key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], -c.num_warps, c.num_stages))]
    return ok


def _key(c: triton.Config):
    return c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages


def prune_configs(configs, named_args, **kwargs):
    """``early_config_prune`` for ``triton.autotune``: :func:`kept_configs` for this launch's head dims,
    dtype, mask form, query length and device."""
    from fastattn.runtime import device_info  # the one owner of device facts (smem table included)
    args = {**named_args, **kwargs}
    info = device_info(args["Q"].device)
    dense_mode = args.get("DENSE_MODE", 0)
    return kept_configs(configs, info.capability, info.smem_per_block, args["BLOCK_D"], args["BLOCK_DV"],
                        args["Q"].element_size(), dense_mode,
                        args["Dense"].element_size() if dense_mode else 0,
                        bool(args.get("HAS_KEY_MASK", False)), args["LQ_BUCKET"], bool(args.get("HAS_DROPOUT", False)))


AUTOTUNE_KEY = ["LQ_BUCKET", "LK_BUCKET", "HEAD_DIM", "HEAD_DIM_V", "IS_CAUSAL", "HAS_KEY_LENS",
                "HAS_KEY_MASK", "DENSE_MODE", "FAST_SCALE", "IS_VARLEN", "HAS_DROPOUT"]

_autotuned = {}


def configs_for(capability) -> list:
    """The autotuner's config list for a compute capability: the arch's tensor-core tiles (sm_90 list
    on Hopper and newer) plus :data:`CONFIGS_FP32`; ``kept_configs`` picks by dtype."""
    arch = CONFIGS_SM90 if capability[0] >= 9 else CONFIGS_SM80
    have = {_key(c) for c in arch}
    extra = [c for c in CONFIGS_FP32 if _key(c) not in have]
    return arch + extra + [CONFIG_DROPOUT_FALLBACK]


def autotuned_kernel(capability):
    """``_attn_fwd_kernel`` under ``triton.autotune`` with the config list of ``capability``."""
    from .fwd import _attn_fwd_kernel
    major = 9 if capability[0] >= 9 else 8
    if major not in _autotuned:
        _autotuned[major] = triton.autotune(
            configs=configs_for(capability), key=AUTOTUNE_KEY,
            prune_configs_by={"early_config_prune": prune_configs})(_attn_fwd_kernel)
    return _autotuned[major]


# ------------------------------------------------------------------------------ decode launch policy
def decode_block_m(group: int, Lq: int, elem_bytes: int = 2) -> int:
    """Packed rows per program: ``group * Lq`` rounded up to a power of two, 16..64; fp32
    (``elem_bytes == 4``) always 16: its FMA dots hold whole operand rows per thread and spilled at 32
    and 64 rows from head dim 128 on (compile-only scans, sm_80/sm_90); more row blocks then read K/V
    more than once, which the slow exact fp32 path can afford."""
    if elem_bytes >= 4:
        return 16
    rows = group * Lq
    return min(64, max(16, 1 << (rows - 1).bit_length()))


def decode_config(block_m: int, block_d: int, block_dv: int, elem_bytes: int, capability, smem_bytes: int):
    """``(BLOCK_N, num_warps, num_stages)`` for the decode kernel: a fixed rule, not autotuned (the
    kernel streams K/V; the knobs are bytes in flight per SM and fitting shared memory). Deep
    pipelines on sm_90 / sm_80 (3 stages of ``BLOCK_N x (D + Dv)``), shrunk until the stages plus the
    Q tile fit ``smem_bytes``. Compile-only checks: ``tests/test_triton_decode.py``."""
    if capability is None:  # interpreter
        return 32, 4, 1
    d = max(block_d, block_dv)
    if elem_bytes == 4:
        # fp32 (IEEE FMA dots): ptxas spills erratically in this space with 4 warps (compile-only
        # scans, triton 3.9, sm_80 and sm_90: e.g. D128 4 warps spills at BLOCK_N 32 on one arch and
        # 64 on the other, and a one-instruction change of the kernel moves the cliff); 8 warps halve
        # the per-thread tiles and these are the points that did not spill on either arch
        bn = 64 if d == 128 else 32
        stages = 2 if d == 128 else 3
        warps = 8
    else:
        bn = 64 if d <= 128 else 32
        stages = 4 if capability[0] >= 9 and d <= 64 else 3
        warps = 4 if block_m <= 32 else 8

    def smem(bn_, st_):
        return st_ * bn_ * (block_d + block_dv) * elem_bytes + block_m * block_d * elem_bytes

    while smem(bn, stages) > smem_bytes and stages > 2:
        stages -= 1
    while smem(bn, stages) > smem_bytes and bn > 16:
        bn //= 2
    if smem(bn, stages) > smem_bytes:
        stages = 1  # fp32 at head dim 256 with 64 packed rows on a 100 KB part: unpipelined
    return bn, warps, stages


def combine_warps(block_s: int, block_dv: int) -> int:
    """Warps of the combine kernel: 8 once the ``BLOCK_S x BLOCK_DV`` fp32 partial tile exceeds 32
    values per thread of 4 warps (triton 3.6 spilled 8 bytes at 32 x 256 with 4 warps on sm_90)."""
    return 8 if block_s * block_dv > 4096 else 4


def choose_num_splits(programs: int, n_sm: int, Lk: int) -> int:
    """Split count for a grid of ``programs`` (batch x KV head x row blocks) programs per split: enough
    for about two programs per SM, a power of two (so it changes only when ``Lk`` or the batch crosses
    a power of two), at most ``MAX_SPLITS`` and at most one per ``MIN_KEYS_PER_SPLIT`` keys."""
    if programs >= n_sm or Lk <= MIN_KEYS_PER_SPLIT:
        return 1
    want = -(-2 * n_sm // programs)
    want = 1 << (want - 1).bit_length()
    lk_cap = max(1, (1 << (Lk - 1).bit_length()) // MIN_KEYS_PER_SPLIT)
    return max(1, min(want, lk_cap, MAX_SPLITS))


# --------------------------------------------------------------------------------- backward configs
#: Tiles ``(BLOCK_M, BLOCK_N, num_warps)`` of the backward kernels that compile without spilling, by
#: ``(family, arch major, element bytes, BLOCK_D class, tier)``; BLOCK_D class = max(BLOCK_D, BLOCK_DV)
#: (64 covers 16..64). dK/dV (``bwd._attn_bwd_dkdv_kernel``): ``BLOCK_N`` keys per program hold K, V and
#: the fp32 dK, dV accumulators, ``BLOCK_M`` is the query step; dQ: ``BLOCK_M`` rows hold Q, dO and the
#: fp32 dQ, ``BLOCK_N`` is the key step. Tiers (what the specialisation adds to the registers): 0 no
#: dense mask and no dropout (causal, key lengths, key mask); 1 a dense mask or dropout (not a dense
#: mask together with causal / key masks, which the public API never combines); 2 everything at once.
#: Measured, not modelled (the dK/dV kernel's registers follow no simple tile formula: on Hopper an
#: 8-warp program with a 64-key block computes its transposed score tile per warpgroup): every tile
#: here compiled with 0 spill bytes and 0 stack frame at 2 stages, triton 3.9, ptxas -v, for the tier's
#: representative specialisation: tier 0 ``causal`` and ``causal+key_mask``, tier 1 ``dense_f16+dropout``,
#: tier 2 ``causal+key_mask+dense_f16+dropout``; fp32 (IEEE FMA dots, small tiles) at tier 2
#: (``benchmarks/compile_check.py --family bwd_dkdv|bwd_dq --configs ...``; the points are also in
#: ``tests/test_triton_attention_bwd.py::BWD_SPILLS``). Hopper's wgmma wants 64 rows per warpgroup on
#: the MMA's M side (``BLOCK_N`` for dK/dV, ``BLOCK_M`` for dQ).
_T = {
    # ---- fp16 / bf16, sm_90
    ("dkdv", 9, 2, 64, 0): [(16, 64, 4), (32, 64, 4), (16, 128, 8), (32, 128, 8)],
    ("dkdv", 9, 2, 128, 0): [(16, 64, 4), (32, 64, 8), (16, 128, 8)],
    ("dkdv", 9, 2, 256, 0): [(16, 32, 4), (16, 32, 8)],
    ("dkdv", 9, 2, 64, 1): [(16, 64, 4), (16, 128, 8)],
    ("dkdv", 9, 2, 128, 1): [(16, 64, 8), (16, 32, 4)],
    ("dkdv", 9, 2, 256, 1): [(16, 32, 8)],
    ("dkdv", 9, 2, 64, 2): [(16, 32, 8)],
    ("dkdv", 9, 2, 128, 2): [(16, 32, 8)],
    ("dkdv", 9, 2, 256, 2): [(16, 32, 8)],
    ("dq", 9, 2, 64, 0): [(64, 16, 4), (64, 32, 4), (64, 64, 4), (128, 16, 8), (128, 32, 8), (128, 64, 8)],
    ("dq", 9, 2, 128, 0): [(64, 16, 4), (64, 32, 4), (128, 16, 8), (128, 32, 8)],
    ("dq", 9, 2, 256, 0): [(128, 32, 8), (32, 16, 8)],
    ("dq", 9, 2, 64, 1): [(64, 16, 4), (64, 32, 4), (128, 16, 8), (128, 32, 8)],
    ("dq", 9, 2, 128, 1): [(64, 16, 4), (64, 16, 8), (128, 16, 8)],
    ("dq", 9, 2, 256, 1): [(32, 16, 8), (16, 16, 4)],
    ("dq", 9, 2, 64, 2): [(32, 16, 8)],
    ("dq", 9, 2, 128, 2): [(32, 16, 8)],
    ("dq", 9, 2, 256, 2): [(32, 16, 8), (16, 16, 4)],
    # ---- fp16 / bf16, sm_80 (mma.sync)
    ("dkdv", 8, 2, 64, 0): [(16, 32, 4), (32, 32, 4), (16, 64, 4), (32, 64, 4), (32, 64, 8), (16, 128, 8),
                            (32, 128, 8)],
    ("dkdv", 8, 2, 128, 0): [(16, 32, 4), (16, 32, 8), (16, 64, 8), (32, 64, 8), (16, 128, 8)],
    ("dkdv", 8, 2, 256, 0): [(16, 32, 8)],
    ("dkdv", 8, 2, 64, 1): [(16, 32, 4), (16, 64, 8)],
    ("dkdv", 8, 2, 128, 1): [(16, 32, 8)],
    ("dkdv", 8, 2, 256, 1): [(16, 32, 8)],
    ("dkdv", 8, 2, 64, 2): [(16, 32, 8)],
    ("dkdv", 8, 2, 128, 2): [(16, 32, 8)],
    ("dkdv", 8, 2, 256, 2): [(16, 32, 8)],
    ("dq", 8, 2, 64, 0): [(32, 32, 4), (64, 16, 4), (64, 32, 4), (64, 32, 8), (128, 16, 8), (128, 32, 8),
                          (128, 64, 8)],
    ("dq", 8, 2, 128, 0): [(64, 16, 4), (64, 32, 4), (64, 16, 8), (64, 32, 8), (128, 16, 8)],
    ("dq", 8, 2, 256, 0): [(64, 16, 8)],
    ("dq", 8, 2, 64, 1): [(32, 32, 4), (64, 16, 4), (128, 16, 8)],
    ("dq", 8, 2, 128, 1): [(64, 16, 8), (64, 32, 8)],
    ("dq", 8, 2, 256, 1): [(32, 16, 8)],
    ("dq", 8, 2, 64, 2): [(32, 16, 8)],
    ("dq", 8, 2, 128, 2): [(32, 16, 8)],
    ("dq", 8, 2, 256, 2): [(32, 16, 8)],
    # ---- fp32 (IEEE FMA dots; one list for every tier, measured at tier 2)
    ("dkdv", 9, 4, 64, 2): [(16, 32, 4), (16, 64, 8), (16, 32, 8)],
    ("dkdv", 9, 4, 128, 2): [(16, 32, 8), (16, 16, 4)],
    ("dkdv", 9, 4, 256, 2): [(16, 16, 8)],
    ("dq", 9, 4, 64, 2): [(32, 16, 4), (64, 16, 8), (32, 16, 8)],
    ("dq", 9, 4, 128, 2): [(32, 16, 8), (16, 16, 4)],
    ("dq", 9, 4, 256, 2): [(16, 16, 8)],
    ("dkdv", 8, 4, 64, 2): [(16, 16, 4)],  # 16x32/8w spilled 8 B with a float mask + dropout (triton 3.9)
    ("dkdv", 8, 4, 128, 2): [(16, 32, 8), (16, 16, 4)],
    ("dkdv", 8, 4, 256, 2): [(16, 16, 8)],
    ("dq", 8, 4, 64, 2): [(32, 16, 8), (16, 16, 4)],
    ("dq", 8, 4, 128, 2): [(32, 16, 8)],
    ("dq", 8, 4, 256, 2): [(16, 16, 8)],
}
for (_f, _a, _e, _d, _t), _tiles in list(_T.items()):
    if _e == 4:
        for _tier in (0, 1):
            _T[(_f, _a, _e, _d, _tier)] = _tiles
BWD_TILES = _T
#: pipeline depth of the measured tiles (the measurement was at 2 stages; 1 is the fallback when
#: shared memory does not fit)
BWD_STAGES = 2


def _bwd_list(family: str, major: int) -> list:
    tiles = sorted({t for (f, a, _e, _d, _t), ts in BWD_TILES.items() if f == family and a == major for t in ts})
    return [_cfg(bm, bn, w, BWD_STAGES) for bm, bn, w in tiles]


CONFIGS_BWD_DKDV_SM80 = _bwd_list("dkdv", 8)
CONFIGS_BWD_DKDV_SM90 = _bwd_list("dkdv", 9)
CONFIGS_BWD_DQ_SM80 = _bwd_list("dq", 8)
CONFIGS_BWD_DQ_SM90 = _bwd_list("dq", 9)
#: The interpreter: one small fixed config per backward kernel, no autotuning.
CONFIG_INTERPRET_BWD_DKDV = _cfg(32, 32, 4, 1)
CONFIG_INTERPRET_BWD_DQ = _cfg(32, 32, 4, 1)

BWD_AUTOTUNE_KEY = AUTOTUNE_KEY


def config_kwargs(conf: triton.Config) -> dict:
    """A config as launch kwargs (``BLOCK_M, BLOCK_N, num_warps, num_stages``)."""
    return dict(conf.kwargs, num_warps=conf.num_warps, num_stages=conf.num_stages)


def bwd_preprocess_block_m(block_dv: int) -> int:
    """Rows per program of the ``delta`` preprocess (a ``BLOCK_M x BLOCK_DV`` tile of O and of dO)."""
    return max(16, min(128, 8192 // block_dv))


def bwd_configs_for(family: str, capability) -> list:
    """The named backward config list (``family`` ``"dkdv"`` or ``"dq"``) for a compute capability."""
    hopper = capability is not None and capability[0] >= 9
    if family == "dkdv":
        return CONFIGS_BWD_DKDV_SM90 if hopper else CONFIGS_BWD_DKDV_SM80
    if family == "dq":
        return CONFIGS_BWD_DQ_SM90 if hopper else CONFIGS_BWD_DQ_SM80
    raise ValueError(f"unknown backward kernel family {family!r}")


def bwd_smem_bytes(family: str, conf: triton.Config, block_d: int, block_dv: int, elem_bytes: int) -> int:
    """Shared memory of a backward config (matches ``metadata.shared`` of compile-only builds to ~1%):
    the pipelined tiles of the loop (dK/dV: Q and dO, ``BLOCK_M`` rows; dQ: K and V, ``BLOCK_N`` rows)
    times the stages, plus the program's resident tiles (dK/dV: K and V; dQ: Q and dO)."""
    bm, bn = conf.kwargs["BLOCK_M"], conf.kwargs["BLOCK_N"]
    stages = max(conf.num_stages, 1)
    moving, resident = (bm, bn) if family == "dkdv" else (bn, bm)
    return (stages * moving + resident) * (block_d + block_dv) * elem_bytes


def bwd_tier(dense_mode: int = 0, dropout: bool = False, structural: bool = False) -> int:
    """The register tier of a backward specialisation (see ``BWD_TILES``): 0 no dense mask and no
    dropout, 1 a dense mask or dropout, 2 a dense mask together with causal / key lengths / key mask."""
    if dense_mode and structural:
        return 2
    return 1 if (dense_mode or dropout) else 0


def bwd_candidates(family: str, capability, smem_bytes: int, block_d: int, block_dv: int, elem_bytes: int,
                   dense_mode: int = 0, key_mask: bool = False, dropout: bool = False,
                   structural: Optional[bool] = None) -> list:
    """The configs of ``bwd_configs_for(family, capability)`` the prune keeps: the measured tiles of
    ``BWD_TILES`` for this arch, dtype, head dim and tier whose shared memory fits ``smem_bytes``
    (unpipelined when no pipelined one fits). ``structural``: causal, key lengths or a key mask is
    present (default: ``key_mask``)."""
    major = 9 if capability[0] >= 9 else 8
    dclass = max(64, block_d, block_dv)
    tier = bwd_tier(dense_mode, dropout, key_mask if structural is None else structural)
    tiles = BWD_TILES[(family, major, 4 if elem_bytes >= 4 else 2, dclass, tier)]
    listed = bwd_configs_for(family, capability)
    ok = [c for c in listed if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) in tiles
          and bwd_smem_bytes(family, c, block_d, block_dv, elem_bytes) <= smem_bytes]
    if not ok:  # nothing fits pipelined (a 100 KB part at head dim 256): the smallest tile, unpipelined
        bm, bn, w = min(tiles, key=lambda t: (t[0] * t[1], -t[2]))
        ok = [_cfg(bm, bn, w, 1)]
    return ok


def _bwd_prune(family: str):
    def prune(configs, named_args, **kwargs):
        """``early_config_prune`` of the backward ``family``: :func:`bwd_candidates` for the launch."""
        args = {**named_args, **kwargs}
        from fastattn.runtime import device_info  # the one owner of device facts (smem table included)
        info = device_info(args["Q"].device)
        structural = bool(args.get("IS_CAUSAL") or args.get("HAS_KEY_LENS") or args.get("HAS_KEY_MASK"))
        return bwd_candidates(family, info.capability, info.smem_per_block, args["BLOCK_D"], args["BLOCK_DV"],
                              args["Q"].element_size(), args.get("DENSE_MODE", 0),
                              bool(args.get("HAS_KEY_MASK", False)), bool(args.get("HAS_DROPOUT", False)),
                              structural)
    return prune


prune_bwd_dkdv = _bwd_prune("dkdv")
prune_bwd_dq = _bwd_prune("dq")


_autotuned_bwd = {}


def autotuned_bwd_kernel(family: str, capability):
    """``_attn_bwd_dkdv_kernel`` / ``_attn_bwd_dq_kernel`` under ``triton.autotune`` with the config list
    of ``capability``. Both kernels overwrite their outputs (nothing accumulates into them across
    launches), so the autotuner's repeated benchmark launches leave correct results."""
    from .bwd import _attn_bwd_dkdv_kernel, _attn_bwd_dq_kernel
    major = 9 if capability[0] >= 9 else 8
    key = (family, major)
    if key not in _autotuned_bwd:
        kern = _attn_bwd_dkdv_kernel if family == "dkdv" else _attn_bwd_dq_kernel
        prune = prune_bwd_dkdv if family == "dkdv" else prune_bwd_dq
        _autotuned_bwd[key] = triton.autotune(configs=bwd_configs_for(family, capability), key=BWD_AUTOTUNE_KEY,
                                              prune_configs_by={"early_config_prune": prune})(kern)
    return _autotuned_bwd[key]

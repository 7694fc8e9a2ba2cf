"""Fused attention forward (Flash-style online softmax) in Triton: device code, configs, prune.

One kernel family covers every mask form of :class:`fastattn.masks.NormalizedMask`, selected by
``tl.constexpr`` flags so that each combination compiles to straight-line code:

* ``IS_CAUSAL`` (+ runtime ``causal_off``: 0 top-left, ``Lk - Lq`` bottom-right): row ``i`` sees key
  ``j`` iff ``j <= i + causal_off``;
* ``HAS_KEY_LENS``: per-batch ``key_lengths[b]`` bounds the key loop (padded blocks are never loaded);
* ``HAS_KEY_MASK``: a ``(B, Lk)`` key mask; its per-batch ``[start, end)`` (``KeyRange``, computed on
  device by the launcher) bounds the loop and the mask bytes are applied inside it;
* ``DENSE_MODE`` 0 none, 1 bool (``True`` = visible), 2 additive float: a ``(B, Hq, Lq, Lk)`` view
  read through its own strides (stride 0 on broadcast dims).

The key loop of one ``BLOCK_M`` query block runs in two phases over ``[lo, hi)``:

* off-band ``[lo, n_clean)``: blocks every row of the query block sees completely (below the causal
  diagonal and inside the key bounds): no bound or causal test, no masked loads;
* on-band ``[n_clean, hi)``: the diagonal and the last, partial block: bounds and causal tests.

Blocks past ``hi`` (above the diagonal, past ``key_lengths``/the last visible key) are never loaded.

Softmax: fp32 statistics and accumulator, ``exp2`` with ``scale * log2(e)`` folded into one FMA
(``FAST_SCALE``: scale > 0 and no float bias). With a float bias (or scale <= 0) the scores stay in
natural units, ``s = qk * scale + bias``, so that a ``finfo.min`` bias stays finite (multiplying it by
``log2(e)`` would overflow to ``-inf`` and silently turn a bias into a removal). Rows with no visible
key end with ``l == 0``: the output is exactly 0 and the LSE ``-inf``.

Head dims are padded to the next power of two (at least 16, ``tl.dot``'s minimum) and masked.
All batch/head/row base offsets are 64-bit; tile offsets stay 32-bit.
"""

from __future__ import annotations

import triton
import triton.language as tl


# ------------------------------------------------------------------------------------------ helpers
@triton.jit
def _load_tile(ptrs, row_ok, col_ok, CHECK_ROWS: tl.constexpr, CHECK_COLS: tl.constexpr):
    """Load a 2-D tile, masking rows/cols only where a constexpr says they may be out of bounds."""
    if CHECK_ROWS:
        if CHECK_COLS:
            return tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        else:
            return tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    else:
        if CHECK_COLS:
            return tl.load(ptrs, mask=col_ok[None, :], other=0.0)
        else:
            return tl.load(ptrs)


@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q,
                    k_base, v_base, km_base, dm_base,
                    k_offs, v_offs, dm_offs,
                    stride_kn, stride_vn, stride_kmn, stride_dn,
                    lo, hi, kv_end, causal_off, qk_scale, sm_scale,
                    offs_m, offs_n, offs_d, offs_dv, row_ok,
                    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr,
                    CHECK_BOUNDS: tl.constexpr, CHECK_CAUSAL: tl.constexpr,
                    HAS_KEY_MASK: tl.constexpr, DENSE_MODE: tl.constexpr,
                    FAST_SCALE: tl.constexpr, DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Blocks ``[lo, hi)`` of the key loop. ``CHECK_BOUNDS``/``CHECK_CAUSAL`` are False off-band."""
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        start_n64 = start_n.to(tl.int64)
        cols = start_n + offs_n
        col_ok = cols < kv_end
        # K as (BLOCK_N, BLOCK_D), fed transposed to the MMA.
        k = _load_tile(k_base + start_n64 * stride_kn + k_offs, col_ok, d_ok,
                       CHECK_BOUNDS, BLOCK_D != HEAD_DIM)
        if DOT_UPCAST:
            k = k.to(tl.float32)
        qk = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)

        # ---- which scores survive (structural masks); unused when no mask applies to this phase
        keep = tl.full([BLOCK_N], 1, tl.int1)[None, :]
        if CHECK_BOUNDS:
            keep = keep & col_ok[None, :]
        if CHECK_CAUSAL:
            keep = keep & (cols[None, :] <= offs_m[:, None] + causal_off)
        if HAS_KEY_MASK:
            km_ptrs = km_base + start_n64 * stride_kmn + offs_n * stride_kmn
            if CHECK_BOUNDS:
                km = tl.load(km_ptrs, mask=col_ok, other=0)
            else:
                km = tl.load(km_ptrs)
            keep = keep & (km != 0)[None, :]
        if DENSE_MODE != 0:
            dense = _load_tile(dm_base + start_n64 * stride_dn + dm_offs, row_ok, col_ok, True, CHECK_BOUNDS)
            if DENSE_MODE == 1:
                keep = keep & (dense != 0)

        # ---- scores and online softmax
        if FAST_SCALE:
            # log2 units: s = qk * scale * log2(e); the max is taken on raw qk (scale > 0).
            if CHECK_BOUNDS or CHECK_CAUSAL or HAS_KEY_MASK or DENSE_MODE == 1:
                qk = tl.where(keep, qk, float("-inf"))
            m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            if CHECK_BOUNDS or CHECK_CAUSAL or HAS_KEY_MASK or DENSE_MODE == 1:
                m_use = tl.where(m_ij == float("-inf"), 0.0, m_ij)
            else:
                m_use = m_ij
            p = tl.math.exp2(qk * qk_scale - m_use[:, None])
            alpha = tl.math.exp2(m_i - m_use)
        else:
            # natural units: s = qk * scale (+ bias); exp2((s - m) * log2(e)).
            s = qk * sm_scale
            if DENSE_MODE == 2:
                s = s + dense.to(tl.float32)
            if CHECK_BOUNDS or CHECK_CAUSAL or HAS_KEY_MASK or DENSE_MODE == 1:
                s = tl.where(keep, s, float("-inf"))
            m_ij = tl.maximum(m_i, tl.max(s, 1))
            m_use = tl.where(m_ij == float("-inf"), 0.0, m_ij)
            p = tl.math.exp2((s - m_use[:, None]) * 1.4426950408889634)  # log2(e)
            alpha = tl.math.exp2((m_i - m_use) * 1.4426950408889634)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = _load_tile(v_base + start_n64 * stride_vn + v_offs, col_ok, dv_ok,
                       CHECK_BOUNDS, BLOCK_DV != HEAD_DIM_V)
        if DOT_UPCAST:
            v = v.to(tl.float32)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=INPUT_PRECISION)
        m_i = m_ij
    return acc, l_i, m_i


# ------------------------------------------------------------------------------------------- kernel
#: Integer arguments that change from call to call (sequence lengths, the causal offset, the autotune
#: buckets): never specialised, so that e.g. a KV cache growing by one token per decode step (``Lk``
#: alternating between "== 1", "divisible by 16" and neither) does not compile new binaries.
NO_SPECIALIZE = ["Lq", "Lk", "causal_off", "LQ_BUCKET", "LK_BUCKET"]


@triton.jit(do_not_specialize=NO_SPECIALIZE)
def _attn_fwd_kernel(
        Q, K, V, Out, Lse, KeyLens, KeyMask, KeyRange, Dense,
        stride_qb, stride_qh, stride_qm,
        stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_om,
        stride_klb, stride_kmb, stride_kmn,
        stride_db, stride_dh, stride_dm, stride_dn,
        Hq, group, Lq, Lk, causal_off, qk_scale, sm_scale,
        LQ_BUCKET, LK_BUCKET,  # autotune keys only (next power of two of Lq, Lk)
        HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        IS_CAUSAL: tl.constexpr, HAS_KEY_LENS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
        DENSE_MODE: tl.constexpr, FAST_SCALE: tl.constexpr, DOT_UPCAST: tl.constexpr,
        INPUT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program = one ``BLOCK_M`` block of query rows of one (batch, query head).

    Q ``(B, Hq, Lq, E)``, K ``(B, Hkv, Lk, E)``, V ``(B, Hkv, Lk, Ev)``, Out ``(B, Hq, Lq, Ev)``: any
    strides, last dim contiguous. Lse: contiguous float32 ``(B, Hq, Lq)``, natural log. Query head
    ``h`` reads KV head ``h // group``. Unused pointers (absent masks) are never dereferenced.
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(Lq, BLOCK_M)
    bh = pid // num_m
    pid_m = pid % num_m
    if IS_CAUSAL:
        start_m = num_m - 1 - pid_m  # the longest (bottom) blocks first: a better tail
    else:
        start_m = pid_m
    b = bh // Hq
    h = bh % Hq
    hk = h // group
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    hk64 = hk.to(tl.int64)
    m0 = start_m * BLOCK_M
    m064 = m0.to(tl.int64)

    offs_mb = tl.arange(0, BLOCK_M)
    offs_m = m0 + offs_mb
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < Lq
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V

    q_ptrs = Q + (b64 * stride_qb + h64 * stride_qh + m064 * stride_qm) \
        + offs_mb[:, None] * stride_qm + offs_d[None, :]
    q = _load_tile(q_ptrs, row_ok, d_ok, True, BLOCK_D != HEAD_DIM)
    if DOT_UPCAST:
        q = q.to(tl.float32)

    k_base = K + (b64 * stride_kb + hk64 * stride_kh)
    v_base = V + (b64 * stride_vb + hk64 * stride_vh)
    k_offs = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_offs = offs_n[:, None] * stride_vn + offs_dv[None, :]
    km_base = KeyMask + b64 * stride_kmb
    dm_base = Dense + (b64 * stride_db + h64 * stride_dh + m064 * stride_dm)
    dm_offs = offs_mb[:, None] * stride_dm + offs_n[None, :] * stride_dn

    # ---- key range [lo, hi) of this query block, and the end of its off-band part
    kv_start = 0
    kv_end = Lk
    if HAS_KEY_LENS:
        kl = tl.load(KeyLens + b64 * stride_klb).to(tl.int32)
        kv_end = tl.maximum(tl.minimum(kv_end, kl), 0)
    if HAS_KEY_MASK:
        kv_start = tl.load(KeyRange + 2 * b64)
        kv_end = tl.minimum(kv_end, tl.load(KeyRange + 2 * b64 + 1))
    lo = (kv_start // BLOCK_N) * BLOCK_N
    if IS_CAUSAL:
        m_last = tl.minimum(m0 + BLOCK_M, Lq) - 1
        hi = tl.minimum(kv_end, m_last + causal_off + 1)
        # keys < m0 + causal_off + 1 are causally visible to every row of the block
        clean_end = tl.maximum(tl.minimum(kv_end, m0 + causal_off + 1), 0)
    else:
        hi = kv_end
        clean_end = kv_end
    n_clean = tl.maximum((clean_end // BLOCK_N) * BLOCK_N, lo)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    # off-band: whole blocks, no bound/causal tests
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, km_base, dm_base, k_offs, v_offs, dm_offs,
        stride_kn, stride_vn, stride_kmn, stride_dn,
        lo, n_clean, kv_end, causal_off, qk_scale, sm_scale,
        offs_m, offs_n, offs_d, offs_dv, row_ok,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N,
        False, False, HAS_KEY_MASK, DENSE_MODE,
        FAST_SCALE, DOT_UPCAST, INPUT_PRECISION)
    # on-band: the causal diagonal and the partial last block
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, km_base, dm_base, k_offs, v_offs, dm_offs,
        stride_kn, stride_vn, stride_kmn, stride_dn,
        n_clean, hi, kv_end, causal_off, qk_scale, sm_scale,
        offs_m, offs_n, offs_d, offs_dv, row_ok,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N,
        True, IS_CAUSAL, HAS_KEY_MASK, DENSE_MODE,
        FAST_SCALE, DOT_UPCAST, INPUT_PRECISION)

    # ---- epilogue: exact 0 and -inf on rows with no visible key
    has = l_i > 0.0
    l_safe = tl.where(has, l_i, 1.0)
    out = tl.where(has[:, None], acc / l_safe[:, None], 0.0)
    if FAST_SCALE:  # m in log2 units; ln(2) = 0.693...
        lse = (m_i + tl.math.log2(l_safe)) * 0.6931471805599453
    else:
        lse = m_i + tl.math.log2(l_safe) * 0.6931471805599453
    lse = tl.where(has, lse, float("-inf"))

    o_ptrs = Out + (b64 * stride_ob + h64 * stride_oh + m064 * stride_om) \
        + offs_mb[:, None] * stride_om + offs_dv[None, :]
    if BLOCK_DV != HEAD_DIM_V:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])
    else:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    tl.store(Lse + bh.to(tl.int64) * Lq + offs_m, lse, mask=row_ok)


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


def config_fits(conf: triton.Config, block_d: int, block_dv: int, elem_bytes: int, smem_bytes: int,
                dense_mode: int = 0, key_mask: bool = False) -> bool:
    """Resource model, calibrated on ptxas output of compile-only builds (fp16, triton 3.9, sm_90 every
    config x head dim; see ``benchmarks/notes/triton_attention.md``). Shared memory: the K/V pipeline
    plus the Q tile (exact for stages >= 2). Registers per thread: the fp32 accumulator, the score tile
    (counted twice: scores and probabilities), Q, and the K/V tile addresses (one 32-bit offset per
    16-byte vector, live across the loop). Above 232 the kernel spilled; at the 224 the model had
    before this term, 64x128/4-warp and 128x128/8-warp tiles at head dim 128 were kept and spilled.
    Head dim 256 with BLOCK_N >= 64 spilled with more than 2 stages (not captured by the formula). A
    dense mask (``dense_mode`` 1/2) or a key mask adds its tile of offsets/values/keep flags: two more
    score-tile terms (calibrated on bool/float/key masks at head dims 64/80/128)."""
    bm, bn = conf.kwargs["BLOCK_M"], conf.kwargs["BLOCK_N"]
    stages = max(conf.num_stages, 1)
    smem = stages * bn * (block_d + block_dv) * elem_bytes + bm * block_d * elem_bytes
    threads = 32 * conf.num_warps
    regs = ((bm * block_dv + 2 * bm * bn) / threads + bm * block_d * elem_bytes / 4 / threads
            + bn * (block_d + block_dv) * elem_bytes / 16 / threads)
    if dense_mode or key_mask:
        regs += 2 * bm * bn / threads
    if max(block_d, block_dv) >= 256 and stages > 2 and bn >= 64:
        return False
    return smem <= smem_bytes and regs <= 232


def prune_configs(configs, named_args, **kwargs):
    """``early_config_prune`` for ``triton.autotune``: drop configs whose tiles do not fit this GPU or
    this head dim, and query blocks much taller than the (bucketed) query length (decode: Lq = 1)."""
    args = {**named_args, **kwargs}
    block_d, block_dv = args["BLOCK_D"], args["BLOCK_DV"]
    elem = args["Q"].element_size()
    cap, smem = _device_limits(args["Q"].device)
    lq = args["LQ_BUCKET"]
    dense, km = args.get("DENSE_MODE", 0), bool(args.get("HAS_KEY_MASK", False))
    ok = [c for c in configs
          if keep(c, cap, block_d) and config_fits(c, block_d, block_dv, elem, smem, dense, km)]
    short = [c for c in ok if c.kwargs["BLOCK_M"] <= max(lq, 64)]
    ok = short or ok
    if not ok:  # nothing fits the model: take the smallest tile with the most warps
        ok = [min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], -c.num_warps, c.num_stages))]
    return ok


def _device_limits(device):
    import torch
    cap = torch.cuda.get_device_capability(device)
    smem = None
    try:
        from triton.runtime import driver
        smem = driver.active.utils.get_device_properties(device.index if device.index is not None
                                                         else torch.cuda.current_device())["max_shared_mem"]
    except Exception:  # noqa: BLE001 - fall back to the documented per-arch opt-in limits
        smem = None
    if not smem:
        smem = {(8, 0): 163 * 1024, (9, 0): 227 * 1024}.get(tuple(cap), 99 * 1024)
    return tuple(cap), smem


AUTOTUNE_KEY = ["LQ_BUCKET", "LK_BUCKET", "HEAD_DIM", "HEAD_DIM_V", "IS_CAUSAL", "HAS_KEY_LENS",
                "HAS_KEY_MASK", "DENSE_MODE", "FAST_SCALE"]

_autotuned = {}


def configs_for(capability) -> list:
    """The named config list for a compute capability (sm_90 list on Hopper and newer)."""
    return CONFIGS_SM90 if capability[0] >= 9 else CONFIGS_SM80


def autotuned_kernel(capability):
    """``_attn_fwd_kernel`` under ``triton.autotune`` with the config list of ``capability``."""
    major = 9 if capability[0] >= 9 else 8
    if major not in _autotuned:
        _autotuned[major] = triton.autotune(
            configs=configs_for(capability), key=AUTOTUNE_KEY,
            prune_configs_by={"early_config_prune": prune_configs})(_attn_fwd_kernel)
    return _autotuned[major]

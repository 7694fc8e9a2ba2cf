"""Decode attention (few query rows, long KV cache) in Triton: GQA-packed split-KV kernel + combine.

Used by the ``triton`` backend when ``Lq`` is small (``DECODE_MAX_LQ``) and there is no dense mask;
the prefill kernel (``fwd.py``) serves everything else. Two ideas, as in FlashDecoding / FA2's
split-KV path:

* **GQA packing.** One program owns every query row that reads one KV head: the ``group = Hq / Hkv``
  query heads times the ``Lq`` rows, packed as tile row ``r = g * Lq + i`` (query head
  ``hk * group + g``, query row ``i``), padded to ``BLOCK_M >= 16`` (``tl.dot``'s minimum). K/V of a
  (batch, KV head) are read once per split instead of once per query head; at ``Lq = 1`` the tile
  wastes ``BLOCK_M - group`` rows instead of 63 of 64. When ``group * Lq > BLOCK_M`` a third grid
  factor splits the rows (K/V are then read once per row block).
* **Split-KV.** Grid axis 1 splits the key range ``[lo, hi)`` of a batch row (after key lengths, the
  key mask's ``[first, last]`` range and the causal bound) into ``num_splits`` chunks of whole
  ``BLOCK_N`` blocks. With ``SPLIT`` each program writes its normalised partial output and its
  natural-log LSE in fp32 to a workspace; ``_attn_combine_kernel`` merges them with weights
  ``exp(lse_s - max)``. A split whose chunk is empty (short sample, causal bound) writes LSE ``-inf``
  and output 0, i.e. weight 0: exact. A row with no visible key in any split gives 0 and LSE ``-inf``.
  Without ``SPLIT`` (one split) the kernel writes ``out``/``lse`` directly and no combine runs.

Masks: causal (runtime ``causal_off``: 0 top-left, ``Lk - Lq`` bottom-right; the key bound is
per row ``i``), key lengths, key mask (+ its per-batch range from the launcher); the key range comes
from ``_key_bounds`` (``common.py``), shared with the prefill kernel. No dense mask.
Scores are kept in log2 units (``s = qk * scale * log2(e)``, max taken after scaling, so any sign of
scale works; there is no additive bias that could overflow). Inside a split the blocks that every row
sees completely (below the causal bound of row 0, inside the split) run without bound/causal tests.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import LOG2E, _finalize, _key_bounds, _load_tile, _online_softmax

#: Arguments that change per call (the growing cache length, the causal offset, the split count,
#: the batch size): never specialised, so a decode loop compiles its binaries once.
DECODE_NO_SPECIALIZE = ["B", "Lk", "causal_off", "num_splits", "ws_lse_off"]
COMBINE_NO_SPECIALIZE = ["R", "num_splits", "ws_lse_off"]


@triton.jit
def _decode_inner(acc, l_i, m_i, q, k_base, v_base, km_base, stride_kn, stride_vn, stride_kmn,
                  lo, hi, row_i, causal_off, qk_scale,
                  offs_n, offs_d, offs_dv,
                  HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr,
                  CHECK: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
                  DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Key blocks ``[lo, hi)``; ``CHECK`` adds the bound (``< hi``) and causal tests."""
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    k_offs = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_offs = offs_n[:, None] * stride_vn + offs_dv[None, :]
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        start_n64 = start_n.to(tl.int64)
        cols = start_n + offs_n
        col_ok = cols < hi
        k = _load_tile(k_base + start_n64 * stride_kn + k_offs, col_ok, d_ok, CHECK, BLOCK_D != HEAD_DIM)
        if DOT_UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale
        if CHECK or HAS_KEY_MASK:
            keep = tl.full([BLOCK_N], 1, tl.int1)[None, :]
            if CHECK:
                keep = keep & col_ok[None, :]
                if IS_CAUSAL:
                    keep = keep & (cols[None, :] <= row_i[:, None] + causal_off)
            if HAS_KEY_MASK:
                km_ptrs = km_base + start_n64 * stride_kmn + offs_n * stride_kmn
                if CHECK:
                    km = tl.load(km_ptrs, mask=col_ok, other=0)
                else:
                    km = tl.load(km_ptrs)
                keep = keep & (km != 0)[None, :]
            s = tl.where(keep, s, float("-inf"))
        # s is in log2 units already (any sign of scale): p = exp2((s - m) * 1)
        p, alpha, l_i, m_i = _online_softmax(l_i, m_i, s, 1.0, False, CHECK or HAS_KEY_MASK)
        acc = acc * alpha[:, None]
        v = _load_tile(v_base + start_n64 * stride_vn + v_offs, col_ok, dv_ok, CHECK, BLOCK_DV != HEAD_DIM_V)
        if DOT_UPCAST:
            v = v.to(tl.float32)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=INPUT_PRECISION)
    return acc, l_i, m_i


@triton.jit(do_not_specialize=DECODE_NO_SPECIALIZE)
def _attn_decode_kernel(
        Q, K, V, Out, Lse, Ws, KeyLens, KeyMask, KeyRange,
        stride_qb, stride_qh, stride_qm,
        stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_om,
        stride_klb, stride_kmb, stride_kmn,
        B, Hq, Hkv, group, Lq, Lk, causal_off, qk_scale, num_splits, ws_lse_off,
        HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        IS_CAUSAL: tl.constexpr, HAS_KEY_LENS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
        SPLIT: tl.constexpr, DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid ``(B * Hkv * cdiv(group * Lq, BLOCK_M), num_splits)``.

    Q ``(B, Hq, Lq, E)``, K ``(B, Hkv, Lk, E)``, V ``(B, Hkv, Lk, Ev)``, Out ``(B, Hq, Lq, Ev)``: any
    strides, last dim contiguous. Without ``SPLIT``: writes Out and Lse (contiguous fp32
    ``(B, Hq, Lq)``, natural log). With ``SPLIT``: writes fp32 partials to ``Ws``:
    ``Ws[(split * R + row) * Ev + d]`` and the natural-log LSE at ``Ws[ws_lse_off + split * R + row]``,
    ``R = B * Hq * Lq``, ``row = (b * Hq + h) * Lq + i``.
    """
    pid = tl.program_id(0)
    split = tl.program_id(1)
    rows = group * Lq
    num_m = tl.cdiv(rows, BLOCK_M)
    bhk = pid // num_m
    mblk = pid % num_m
    b = bhk // Hkv
    hk = bhk % Hkv
    b64 = b.to(tl.int64)
    hk64 = hk.to(tl.int64)

    offs_r = mblk * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_r < rows
    g_idx = offs_r // Lq
    row_i = offs_r % Lq
    h64 = (hk * group + g_idx).to(tl.int64)
    i64 = row_i.to(tl.int64)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V

    q_ptrs = Q + b64 * stride_qb + (h64 * stride_qh + i64 * stride_qm)[:, None] + offs_d[None, :]
    q = _load_tile(q_ptrs, row_ok, d_ok, True, BLOCK_D != HEAD_DIM)
    if DOT_UPCAST:
        q = q.to(tl.float32)

    # ---- key range [lo, hi) of this batch row (every packed row: query rows 0..Lq-1), then this
    # split's chunk of whole blocks; off-band: blocks every row sees whole (below row 0's causal bound)
    lo, hi, n_clean = _key_bounds(0, Lq - 1, Lk, causal_off, KeyLens, KeyRange, b64, stride_klb,
                                  BLOCK_N, IS_CAUSAL, HAS_KEY_LENS, HAS_KEY_MASK)
    n_blocks = tl.maximum(tl.cdiv(hi - lo, BLOCK_N), 0)
    per_split = tl.cdiv(n_blocks, num_splits)
    s_lo = lo + split * per_split * BLOCK_N
    s_hi = tl.minimum(s_lo + per_split * BLOCK_N, hi)
    n_clean = tl.minimum(tl.maximum(n_clean, s_lo), s_hi)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    k_base = K + (b64 * stride_kb + hk64 * stride_kh)
    v_base = V + (b64 * stride_vb + hk64 * stride_vh)
    km_base = KeyMask + b64 * stride_kmb
    acc, l_i, m_i = _decode_inner(acc, l_i, m_i, q, k_base, v_base, km_base, stride_kn, stride_vn, stride_kmn,
                                  s_lo, n_clean, row_i, causal_off, qk_scale, offs_n, offs_d, offs_dv,
                                  HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N,
                                  False, IS_CAUSAL, HAS_KEY_MASK, DOT_UPCAST, INPUT_PRECISION)
    acc, l_i, m_i = _decode_inner(acc, l_i, m_i, q, k_base, v_base, km_base, stride_kn, stride_vn, stride_kmn,
                                  n_clean, s_hi, row_i, causal_off, qk_scale, offs_n, offs_d, offs_dv,
                                  HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N,
                                  True, IS_CAUSAL, HAS_KEY_MASK, DOT_UPCAST, INPUT_PRECISION)

    # ---- epilogue: exact 0 / -inf where nothing was visible (in this split)
    out, lse = _finalize(acc, l_i, m_i, True)
    row = (b64 * Hq + h64) * Lq + i64
    if SPLIT:
        R = B.to(tl.int64) * Hq * Lq
        slot = split.to(tl.int64) * R + row
        tl.store(Ws + slot[:, None] * HEAD_DIM_V + offs_dv[None, :], out, mask=row_ok[:, None] & dv_ok[None, :])
        tl.store(Ws + ws_lse_off + slot, lse, mask=row_ok)
    else:
        o_ptrs = Out + b64 * stride_ob + (h64 * stride_oh + i64 * stride_om)[:, None] + offs_dv[None, :]
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])
        tl.store(Lse + row, lse, mask=row_ok)


@triton.jit(do_not_specialize=COMBINE_NO_SPECIALIZE)
def _attn_combine_kernel(Ws, Out, Lse, Hq, Lq, R, num_splits, ws_lse_off,
                         stride_ob, stride_oh, stride_om,
                         HEAD_DIM_V: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_S: tl.constexpr):
    """One program per output row ``row = (b * Hq + h) * Lq + i``: merge the ``num_splits`` partials."""
    row = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    offs_dv = tl.arange(0, BLOCK_DV)
    s_ok = offs_s < num_splits
    dv_ok = offs_dv < HEAD_DIM_V
    slot = offs_s.to(tl.int64) * R + row
    lse_s = tl.load(Ws + ws_lse_off + slot, mask=s_ok, other=float("-inf"))
    m = tl.max(lse_s, 0)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    w = tl.math.exp2((lse_s - m_use) * LOG2E)  # 0 for empty splits
    wsum = tl.sum(w, 0)
    o = tl.load(Ws + slot[:, None] * HEAD_DIM_V + offs_dv[None, :], mask=s_ok[:, None] & dv_ok[None, :], other=0.0)
    acc = tl.sum(w[:, None] * o, 0)
    # empty: every split empty (as _finalize: never decided by a comparison NaN fails; a NaN partial
    # makes wsum NaN and the row NaN)
    empty = (m == float("-inf")) & (wsum == 0.0)
    w_safe = tl.where(empty, 1.0, wsum)
    out = tl.where(empty, 0.0, acc / w_safe)
    lse = tl.where(empty, float("-inf"), m_use + tl.log(w_safe))
    bh = row // Lq
    i = row % Lq
    b = bh // Hq
    h = bh % Hq
    tl.store(Out + b * stride_ob + h * stride_oh + i * stride_om + offs_dv, out.to(Out.dtype.element_ty), mask=dv_ok)
    tl.store(Lse + row, lse)

"""Fused attention forward (Flash-style online softmax) in Triton: the prefill kernel.

One kernel family covers every mask form of :class:`fastattn.masks.NormalizedMask`, selected by
``tl.constexpr`` flags so that each combination compiles to straight-line code:

* ``IS_CAUSAL`` (+ runtime ``causal_off``: 0 top-left, ``Lk - Lq`` bottom-right): row ``i`` sees key
  ``j`` iff ``j <= i + causal_off``;
* ``HAS_KEY_LENS``: per-batch ``key_lengths[b]`` bounds the key loop (padded blocks are never loaded);
* ``HAS_KEY_MASK``: a ``(B, Lk)`` key mask; its per-batch ``[start, end)`` (``KeyRange``, computed on
  device by the launcher) bounds the loop and the mask bytes are applied inside it;
* ``DENSE_MODE`` 0 none, 1 bool (``True`` = visible), 2 additive float: a ``(B, Hq, Lq, Lk)`` view
  read through its own strides (stride 0 on broadcast dims).

The key loop of one ``BLOCK_M`` query block runs in two phases over ``[lo, hi)`` (``_key_bounds`` in
``common.py``, shared with the decode kernel):

* off-band ``[lo, n_clean)``: blocks every row of the query block sees completely (below the causal
  diagonal and inside the key bounds): no bound or causal test, no masked loads;
* on-band ``[n_clean, hi)``: the diagonal and the last, partial block: bounds and causal tests.

Blocks past ``hi`` (above the diagonal, past ``key_lengths``/the last visible key) are never loaded.

Softmax (``_online_softmax``): fp32 statistics and accumulator, ``exp2`` with ``scale * log2(e)``
folded into one FMA (``FAST_SCALE``: scale > 0 and no float bias). With a float bias (or scale <= 0)
the scores stay in natural units, ``s = qk * scale + bias``, so that a ``finfo.min`` bias stays finite
(multiplying it by ``log2(e)`` would overflow to ``-inf`` and silently turn a bias into a removal).
Rows with no visible key get exactly 0 and LSE ``-inf`` (``_finalize``).

Dropout (``HAS_DROPOUT``, runtime ``drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale`` from
``fastattn.dropout.philox_kernel_args(seed, offset, p)``): the probabilities of the ``P @ V`` product
are dropped by the counter-based keep bits of ``common._dropout_keep`` (a pure function of seed,
offset, ``b * Hq + h``, row, key and ``p`` -- varlen: ``h``, the packed row, the sequence-local key --
so the backward regenerates the same bits) and the output is
scaled by ``1 / (1 - p)``; the softmax statistics and the LSE are those of the undropped scores (SDPA
semantics: ``dropout(softmax(s)) @ v``).

Head dims are padded to the next power of two (at least 16, ``tl.dot``'s minimum) and masked.
All batch/head/row base offsets are 64-bit; tile offsets stay 32-bit.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import LOG2E, _dropout_keep, _finalize, _key_bounds, _load_tile, _online_softmax, _seq_range


@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q,
                    k_base, v_base, km_base, dm_base,
                    k_offs, v_offs, dm_offs,
                    stride_kn, stride_vn, stride_kmn, stride_dn,
                    lo, hi, causal_off, qk_scale, sm_scale,
                    offs_m, offs_n, offs_d, offs_dv, row_ok,
                    drop_bh, drop_row0, drop_k0, drop_k1, drop_c3, drop_thresh,
                    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    CHECK_BOUNDS: tl.constexpr, CHECK_CAUSAL: tl.constexpr,
                    HAS_KEY_MASK: tl.constexpr, DENSE_MODE: tl.constexpr,
                    FAST_SCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                    DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Blocks ``[lo, hi)`` of the key loop. ``CHECK_BOUNDS``/``CHECK_CAUSAL`` are False off-band;
    ``hi`` is the key bound of the on-band phase (keys ``>= hi`` are masked). Dropout bits are those of
    head ``drop_bh``, rows ``drop_row0 + offs_m`` (``common._dropout_keep``)."""
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    MASKED: tl.constexpr = CHECK_BOUNDS or CHECK_CAUSAL or HAS_KEY_MASK or DENSE_MODE == 1
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        start_n64 = start_n.to(tl.int64)
        cols = start_n + offs_n
        col_ok = cols < hi
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

        if FAST_SCALE:
            # log2 units: s = qk * scale * log2(e); the max is taken on raw qk (scale > 0)
            if MASKED:
                qk = tl.where(keep, qk, float("-inf"))
            p, alpha, l_i, m_i = _online_softmax(l_i, m_i, qk, qk_scale, True, MASKED)
        else:
            # natural units: s = qk * scale (+ bias); exp2((s - m) * log2(e))
            s = qk * sm_scale
            if DENSE_MODE == 2:
                # a -inf bias removes the key (also when its score is NaN/Inf: never NaN + -inf)
                bias = dense.to(tl.float32)
                s = tl.where(bias == float("-inf"), float("-inf"), s + bias)
            if MASKED:
                s = tl.where(keep, s, float("-inf"))
            # a float bias may be -inf anywhere: always guard the running max
            p, alpha, l_i, m_i = _online_softmax(l_i, m_i, s, LOG2E, False, True)
        acc = acc * alpha[:, None]
        v = _load_tile(v_base + start_n64 * stride_vn + v_offs, col_ok, dv_ok,
                       CHECK_BOUNDS, BLOCK_DV != HEAD_DIM_V)
        if DOT_UPCAST:
            v = v.to(tl.float32)
        if HAS_DROPOUT:
            # l_i (the softmax denominator) counts every probability; only P @ V sees the dropped ones
            z = _dropout_keep(drop_k0, drop_k1, drop_c3, drop_thresh, drop_bh, drop_row0 + offs_m, start_n,
                              BLOCK_M, BLOCK_N)
            p = tl.where(z, p, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=INPUT_PRECISION)
    return acc, l_i, m_i


#: Integer arguments that change from call to call (sequence lengths, the causal offset, the autotune
#: buckets): never specialised, so that e.g. a KV cache growing by one token per decode step (``Lk``
#: alternating between "== 1", "divisible by 16" and neither) does not compile new binaries.
NO_SPECIALIZE = ["Lq", "Lk", "causal_off", "total_q", "total_k", "LQ_BUCKET", "LK_BUCKET",
                 "drop_k0", "drop_k1", "drop_c3", "drop_thresh"]  # dropout words change every call


@triton.jit(do_not_specialize=NO_SPECIALIZE)
def _attn_fwd_kernel(
        Q, K, V, Out, Lse, KeyLens, KeyMask, KeyRange, Dense, CuSeqQ, CuSeqK,
        stride_qb, stride_qh, stride_qm,
        stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn,
        stride_ob, stride_oh, stride_om,
        stride_klb, stride_kmb, stride_kmn,
        stride_db, stride_dh, stride_dm, stride_dn,
        Hq, group, Lq, Lk, causal_off, qk_scale, sm_scale, total_q, total_k,
        drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale,  # dropout (unused without HAS_DROPOUT)
        LQ_BUCKET, LK_BUCKET,  # autotune keys only (next power of two of Lq, Lk)
        HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        IS_CAUSAL: tl.constexpr, HAS_KEY_LENS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
        DENSE_MODE: tl.constexpr, FAST_SCALE: tl.constexpr, DOT_UPCAST: tl.constexpr,
        INPUT_PRECISION: tl.constexpr, IS_VARLEN: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HAS_DROPOUT: tl.constexpr = False):
    """One program = one ``BLOCK_M`` block of query rows of one (batch, query head).

    Padded: Q ``(B, Hq, Lq, E)``, K ``(B, Hkv, Lk, E)``, V ``(B, Hkv, Lk, Ev)``, Out ``(B, Hq, Lq,
    Ev)``: any strides, last dim contiguous. Lse: contiguous float32 ``(B, Hq, Lq)``, natural log.

    Varlen (``IS_VARLEN``): Q ``(total_q, Hq, E)``, K ``(total_k, Hkv, E)``, V ``(total_k, Hkv, Ev)``,
    Out ``(total_q, Hq, Ev)`` packed; the batch strides are 0, ``stride_*m``/``stride_*n`` the token
    strides; sequence ``b``'s rows ``CuSeqQ[b]:CuSeqQ[b+1]`` attend its keys ``CuSeqK[b]:CuSeqK[b+1]``
    (int32 ``(B + 1,)``, clamped to ``[0, total_q/k]``); ``Lq``/``Lk`` are the max sequence lengths
    (grid); ``IS_CAUSAL`` is bottom-right per sequence (``causal_off`` unused). Lse: contiguous float32
    ``(Hq, total_q)``. No key lengths, key mask or dense mask in this mode. Dropout draws the bits of
    (head ``h``, packed row ``cu_q[b] + i``, sequence-local key ``j``): see ``fastattn.dropout``.

    Query head ``h`` reads KV head ``h // group``. Unused pointers (absent masks, the cu_seqlens of
    the padded layout) are never dereferenced.
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

    # ---- where this sequence lives (padded: row 0, Lq x Lk; varlen: cu_seqlens), sequence-local rows
    q_start, q_len, k_start, k_len, causal_off = _seq_range(b, CuSeqQ, CuSeqK, Lq, Lk, causal_off,
                                                            total_q, total_k, IS_VARLEN)
    if IS_VARLEN:
        drop_bh = h
        drop_row0 = q_start  # dropout counts packed rows: (h, q_start + i, j) (fastattn.dropout)
        q_start = q_start.to(tl.int64)
        k_start = k_start.to(tl.int64)
        k_len = tl.where(m0 < q_len, k_len, 0)  # a block past a short sequence's end loads nothing
    else:
        drop_bh = bh
        drop_row0 = 0

    offs_mb = tl.arange(0, BLOCK_M)
    offs_m = m0 + offs_mb
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < q_len
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V

    q_row0 = m064 + q_start  # first query row of the block, in the tensor's sequence dim
    q_ptrs = Q + (b64 * stride_qb + h64 * stride_qh + q_row0 * stride_qm) \
        + offs_mb[:, None] * stride_qm + offs_d[None, :]
    q = _load_tile(q_ptrs, row_ok, d_ok, True, BLOCK_D != HEAD_DIM)
    if DOT_UPCAST:
        q = q.to(tl.float32)

    k_base = K + (b64 * stride_kb + hk64 * stride_kh + k_start * stride_kn)
    v_base = V + (b64 * stride_vb + hk64 * stride_vh + k_start * stride_vn)
    k_offs = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_offs = offs_n[:, None] * stride_vn + offs_dv[None, :]
    km_base = KeyMask + b64 * stride_kmb
    dm_base = Dense + (b64 * stride_db + h64 * stride_dh + m064 * stride_dm)
    dm_offs = offs_mb[:, None] * stride_dm + offs_n[None, :] * stride_dn

    # ---- key range [lo, hi) of this query block, and the end of its off-band part
    lo, hi, n_clean = _key_bounds(m0, tl.minimum(m0 + BLOCK_M, q_len) - 1, k_len, causal_off, KeyLens, KeyRange,
                                  b64, stride_klb, BLOCK_N, IS_CAUSAL, HAS_KEY_LENS, HAS_KEY_MASK)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    # off-band: whole blocks, no bound/causal tests
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, km_base, dm_base, k_offs, v_offs, dm_offs,
        stride_kn, stride_vn, stride_kmn, stride_dn,
        lo, n_clean, causal_off, qk_scale, sm_scale,
        offs_m, offs_n, offs_d, offs_dv, row_ok,
        drop_bh, drop_row0, drop_k0, drop_k1, drop_c3, drop_thresh,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, BLOCK_N,
        False, False, HAS_KEY_MASK, DENSE_MODE,
        FAST_SCALE, HAS_DROPOUT, DOT_UPCAST, INPUT_PRECISION)
    # on-band: the causal diagonal and the partial last block
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, km_base, dm_base, k_offs, v_offs, dm_offs,
        stride_kn, stride_vn, stride_kmn, stride_dn,
        n_clean, hi, causal_off, qk_scale, sm_scale,
        offs_m, offs_n, offs_d, offs_dv, row_ok,
        drop_bh, drop_row0, drop_k0, drop_k1, drop_c3, drop_thresh,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, BLOCK_N,
        True, IS_CAUSAL, HAS_KEY_MASK, DENSE_MODE,
        FAST_SCALE, HAS_DROPOUT, DOT_UPCAST, INPUT_PRECISION)

    if HAS_DROPOUT:
        acc = acc * drop_scale  # 1 / (1 - p) on the kept probabilities
    out, lse = _finalize(acc, l_i, m_i, FAST_SCALE)
    o_ptrs = Out + (b64 * stride_ob + h64 * stride_oh + q_row0 * stride_om) \
        + offs_mb[:, None] * stride_om + offs_dv[None, :]
    if BLOCK_DV != HEAD_DIM_V:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])
    else:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    if IS_VARLEN:
        lse_row0 = h64 * total_q + q_row0  # (Hq, total_q)
    else:
        lse_row0 = bh.to(tl.int64) * Lq + m064  # (B, Hq, Lq)
    tl.store(Lse + lse_row0 + offs_mb, lse, mask=row_ok)

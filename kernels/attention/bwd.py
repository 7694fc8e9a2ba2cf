"""Fused attention backward (FlashAttention-2 style) in Triton: the three kernels.

Given the forward's inputs, its output ``O`` and its natural-log LSE, and the output gradient ``dO``,
three kernels compute ``dQ, dK, dV`` without materialising anything of size ``Lq x Lk``:

* ``_attn_bwd_preprocess_kernel``: ``delta[i] = sum_d dO[i, d] * O[i, d]`` (fp32), one row block per
  program;
* ``_attn_bwd_dkdv_kernel``: one program per ``BLOCK_N`` block of keys of one (batch, KV head); it keeps
  ``K, V`` and the fp32 ``dK, dV`` accumulators on chip and walks the query blocks of every query head
  of its GQA group (``h = hk * group + g``), so the group reduction happens in registers: no repeat
  copies, no atomics;
* ``_attn_bwd_dq_kernel``: one program per ``BLOCK_M`` block of query rows of one (batch, query head),
  walking the key blocks exactly as the forward does. It runs before the dK/dV kernel: it also sums
  the recomputed ``P = exp(S - lse)`` of each row and writes ``RowScale = 1 / rowsum`` (0 on rows
  with no visible key), which both kernels multiply ``P`` by. The rowsum is 1 up to the rounding of
  the fp32 LSE (``|lse| * 2^-24``: 1e-5 relative at ``|lse| ~ 100``), but ``Lk`` on a row whose
  scores a huge additive bias (``finfo.min``) made equal, whose ``log(l)`` the LSE cannot hold; the
  renormalised ``P`` is the forward's in both cases.

No kernel uses atomics and every accumulation runs in a fixed order: the backward is bitwise
deterministic (``torch.use_deterministic_algorithms(True)``). Per tile, with ``P = exp(S - lse)``
recomputed from the saved LSE (``S`` the masked scaled scores, in log2 units when ``FAST_SCALE``)::

    dV  += (Z * P)^T dO                     (* 1/(1-p) once at the end)
    dP   = Z * (dO V^T) / (1 - p)
    dS   = P * (dP - delta)
    dK  += dS^T Q   (* scale at the end)     dQ += dS K   (* scale at the end)

``Z`` is the dropout keep mask (all ones without ``HAS_DROPOUT``), regenerated from the counter-based
contract of :mod:`fastattn.dropout` (``common._dropout_keep``), the same bits as the forward's.

Masks, as in the forward (``fwd.py``): ``IS_CAUSAL`` with runtime
``causal_off`` (0 top-left, ``Lk - Lq`` bottom-right), ``HAS_KEY_LENS``, ``HAS_KEY_MASK`` (bytes +
the per-batch ``[first, last + 1)`` key range from the launcher), ``DENSE_MODE`` 1 bool / 2 additive
float read through its own strides. Block skipping mirrors the forward: the dQ kernel walks
``[lo, hi)`` of the key range in an off-band part (no bound/causal tests) and an on-band part; the
dK/dV kernel walks only the query blocks that can see its key block (causal: rows
``i >= j - causal_off``), the causal diagonal with causal tests and the rows below it without (the
per-key bound / key-mask test stays: one select per score is cheaper than a third loop copy's
pipeline buffers); a key block no row can see (outside the key range, above every row's causal
bound) loads nothing and writes zeros. The query heads of a GQA group and their query blocks form
one flat loop.

Rows with no visible key (LSE ``-inf``) are treated as ``lse = +inf``: ``P = 0``, so their dQ is 0
and they add nothing to dK/dV; keys no row sees get ``dK = dV = 0``; masking never makes a NaN.
NaN/Inf inputs propagate as in autograd through SDPA (a ``-inf`` bias still removes its key).

Head dims are padded to the next power of two (>= 16) and masked; fp32 inputs use IEEE fp32 dots.
Batch/head/row base offsets are 64-bit; tile offsets 32-bit.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import LOG2E, _dropout_keep, _key_bounds, _key_range, _load_tile, _seq_range


# --------------------------------------------------------------------------------------- preprocess
@triton.jit
def _attn_bwd_preprocess_kernel(Out, DO, Delta,
                                stride_ob, stride_oh, stride_om,
                                stride_dob, stride_doh, stride_dom,
                                Hq, Lq,
                                HEAD_DIM_V: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_M: tl.constexpr):
    """``Delta[bh, i] = sum_d Out[b, h, i, d] * DO[b, h, i, d]`` in fp32 (contiguous ``(B*Hq, Lq)``)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(Lq, BLOCK_M)
    bh = pid // num_m
    m0 = (pid % num_m) * BLOCK_M
    b64 = (bh // Hq).to(tl.int64)
    h64 = (bh % Hq).to(tl.int64)
    m064 = m0.to(tl.int64)
    offs_mb = tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = m0 + offs_mb < Lq
    dv_ok = offs_dv < HEAD_DIM_V
    o = _load_tile(Out + (b64 * stride_ob + h64 * stride_oh + m064 * stride_om)
                   + offs_mb[:, None] * stride_om + offs_dv[None, :], row_ok, dv_ok, True, BLOCK_DV != HEAD_DIM_V)
    do = _load_tile(DO + (b64 * stride_dob + h64 * stride_doh + m064 * stride_dom)
                    + offs_mb[:, None] * stride_dom + offs_dv[None, :], row_ok, dv_ok, True, BLOCK_DV != HEAD_DIM_V)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(Delta + bh.to(tl.int64) * Lq + m0 + offs_mb, delta, mask=row_ok)


# ------------------------------------------------------------------------------------------- dK, dV
@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, col_ok, offs_n,
                    q_bbase, do_bbase, lse_bbase, dm_bbase, Delta, RowScale,
                    stride_qh, stride_qm, stride_doh, stride_dom, stride_dh, stride_dm, stride_dn,
                    hk, group, lo, hi, Lq, Lk, causal_off, qk_scale, sm_scale, lse_b0, lse_hs,
                    drop_bh0, drop_row0, drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale, n0,
                    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    CHECK_COLS: tl.constexpr, CHECK_CAUSAL: tl.constexpr, DENSE_MODE: tl.constexpr,
                    FAST_SCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                    DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Query blocks ``[lo, hi)`` of every query head ``hk * group + g`` of the group against the
    program's key block, as ONE flat loop over ``(g, block)``: a loop over heads around a loop over
    blocks cost ~80 more registers per thread (spills at head dim 64; compile-only, sm_90). Tiles are
    transposed, keys x rows, so that dK/dV accumulate without transposing P. ``*_bbase`` pointers
    hold the batch / sequence offset (``dm_bbase`` also the key block's); ``Lq``, ``Lk`` are the
    sequence's lengths. Row ``i`` of head ``h`` is element ``lse_b0 + h * lse_hs + i`` of Lse, Delta,
    RowScale; its dropout bits are those of head ``drop_bh0 + h``, row ``drop_row0 + i``."""
    offs_mb = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    n_in = offs_n < Lk
    q_offs = offs_mb[:, None] * stride_qm + offs_d[None, :]
    do_offs = offs_mb[:, None] * stride_dom + offs_dv[None, :]
    dm_offs = tl.arange(0, BLOCK_N)[:, None] * stride_dn + offs_mb[None, :] * stride_dm
    n_blocks = tl.cdiv(tl.maximum(hi - lo, 0), BLOCK_M)
    for it in range(0, group * n_blocks):
        g = it // n_blocks
        start_m = lo + (it - g * n_blocks) * BLOCK_M
        start_m = tl.multiple_of(start_m, BLOCK_M)
        h = hk * group + g
        h64 = h.to(tl.int64)
        row64 = lse_b0 + h64 * lse_hs + start_m     # first row's index into Lse, Delta, RowScale
        start_m64 = start_m.to(tl.int64)
        rows = start_m + offs_mb
        row_ok = rows < Lq
        q = _load_tile(q_bbase + (h64 * stride_qh + start_m64 * stride_qm) + q_offs, row_ok, d_ok, True,
                       BLOCK_D != HEAD_DIM)
        do = _load_tile(do_bbase + (h64 * stride_doh + start_m64 * stride_dom) + do_offs, row_ok, dv_ok, True,
                        BLOCK_DV != HEAD_DIM_V)
        if DOT_UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        lse = tl.load(lse_bbase + row64 + offs_mb, mask=row_ok, other=float("inf"))
        lse = tl.where(lse == float("-inf"), float("inf"), lse)  # empty row: P = 0
        delta = tl.load(Delta + row64 + offs_mb, mask=row_ok, other=0.0)
        rs = tl.load(RowScale + row64 + offs_mb, mask=row_ok, other=0.0)

        qkT = tl.dot(k, tl.trans(q), input_precision=INPUT_PRECISION)  # (BLOCK_N, BLOCK_M)
        if FAST_SCALE:
            pT = tl.math.exp2(qkT * qk_scale - (lse * LOG2E)[None, :]) * rs[None, :]
        else:
            s = qkT * sm_scale
            if DENSE_MODE == 2:
                bias = tl.load(dm_bbase + (h64 * stride_dh + start_m64 * stride_dm) + dm_offs,
                               mask=n_in[:, None] & row_ok[None, :], other=0.0).to(tl.float32)
                # a -inf bias removes the key (never NaN + -inf), as in the forward
                s = tl.where(bias == float("-inf"), float("-inf"), s + bias)
            pT = tl.math.exp2((s - lse[None, :]) * LOG2E) * rs[None, :]
        if CHECK_COLS or CHECK_CAUSAL or DENSE_MODE == 1:
            keep = tl.full([BLOCK_N], 1, tl.int1)[:, None]
            if CHECK_COLS:
                keep = keep & col_ok[:, None]
            if CHECK_CAUSAL:
                keep = keep & (offs_n[:, None] <= rows[None, :] + causal_off)
            if DENSE_MODE == 1:
                dmask = tl.load(dm_bbase + (h64 * stride_dh + start_m64 * stride_dm) + dm_offs,
                                mask=n_in[:, None] & row_ok[None, :], other=0)
                keep = keep & (dmask != 0)
            pT = tl.where(keep, pT, 0.0)

        dpT = tl.dot(v, tl.trans(do), input_precision=INPUT_PRECISION)  # (BLOCK_N, BLOCK_M)
        if HAS_DROPOUT:
            zT = tl.trans(_dropout_keep(drop_k0, drop_k1, drop_c3, drop_thresh, drop_bh0 + h, drop_row0 + rows, n0,
                                        BLOCK_M, BLOCK_N))
            dv = tl.dot(tl.where(zT, pT, 0.0).to(do.dtype), do, dv, input_precision=INPUT_PRECISION)
            dpT = tl.where(zT, dpT * drop_scale, 0.0)
        else:
            dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=INPUT_PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=INPUT_PRECISION)
    return dk, dv


#: Integer arguments that change from call to call (lengths, offsets, dropout words): never specialised.
BWD_NO_SPECIALIZE = ["Lq", "Lk", "causal_off", "total_q", "total_k", "LQ_BUCKET", "LK_BUCKET",
                     "drop_k0", "drop_k1", "drop_c3", "drop_thresh"]


@triton.jit(do_not_specialize=BWD_NO_SPECIALIZE)
def _attn_bwd_dkdv_kernel(
        Q, K, V, DO, Lse, Delta, RowScale, DK, DV, KeyLens, KeyMask, KeyRange, Dense, CuSeqQ, CuSeqK,
        stride_qb, stride_qh, stride_qm,
        stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn,
        stride_dob, stride_doh, stride_dom,
        stride_dkb, stride_dkh, stride_dkn,
        stride_dvb, stride_dvh, stride_dvn,
        stride_klb, stride_kmb, stride_kmn,
        stride_db, stride_dh, stride_dm, stride_dn,
        Hq, Hkv, group, Lq, Lk, causal_off, qk_scale, sm_scale, total_q, total_k,
        drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale,
        LQ_BUCKET, LK_BUCKET,  # autotune keys only
        HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        IS_CAUSAL: tl.constexpr, HAS_KEY_LENS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
        DENSE_MODE: tl.constexpr, FAST_SCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr,
        DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr, IS_VARLEN: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program = one ``BLOCK_N`` block of keys of one (batch, KV head); writes its rows of
    ``DK (B, Hkv, Lk, E)`` and ``DV (B, Hkv, Lk, Ev)`` (any strides, last dim contiguous).

    Q/DO ``(B, Hq, Lq, E|Ev)`` any strides; Lse (natural log, ``-inf`` = empty row) and Delta:
    contiguous float32 ``(B, Hq, Lq)``. Query head ``hk * group + g`` reads KV head ``hk``.

    Varlen (``IS_VARLEN``, as the forward's): packed ``(total, H, D)`` tensors with batch strides 0,
    sequence ``b`` located by ``common._seq_range`` (``CuSeqQ/K`` clamped into ``[0, total_q/k]``,
    causal bottom-right per sequence); ``Lq``/``Lk`` are the max sequence lengths (grid); Lse, Delta,
    RowScale contiguous ``(Hq, total_q)``. Keys of a sequence no row sees get zeros; a program whose
    block lies past its sequence's keys loads and writes nothing.
    """
    pid = tl.program_id(0)
    num_n = tl.cdiv(Lk, BLOCK_N)
    bhk = pid // num_n
    n0 = (pid % num_n) * BLOCK_N
    b = bhk // Hkv
    hk = bhk % Hkv
    b64 = b.to(tl.int64)
    hk64 = hk.to(tl.int64)
    n064 = n0.to(tl.int64)

    # ---- where this sequence lives (padded: row 0, Lq x Lk; varlen: cu_seqlens), sequence-local rows/keys
    q_start, q_len, k_start, k_len, causal_off = _seq_range(b, CuSeqQ, CuSeqK, Lq, Lk, causal_off,
                                                            total_q, total_k, IS_VARLEN)
    if IS_VARLEN:
        drop_bh0 = 0
        drop_row0 = q_start                          # dropout counts packed rows (fastattn.dropout)
        q_start = q_start.to(tl.int64)
        k_start = k_start.to(tl.int64)
        lse_b0 = q_start                             # (Hq, total_q)
        lse_hs = total_q
    else:
        drop_bh0 = b * Hq
        drop_row0 = 0
        lse_b0 = (b * Hq).to(tl.int64) * Lq          # (B, Hq, Lq)
        lse_hs = Lq

    offs_nb = tl.arange(0, BLOCK_N)
    offs_n = n0 + offs_nb
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V

    # ---- the visible key range of this batch row, and the query rows that can see this key block
    kv_start, kv_end = _key_range(k_len, KeyLens, KeyRange, b64, stride_klb, HAS_KEY_LENS, HAS_KEY_MASK)
    j_first = tl.maximum(n0, kv_start)              # first / last key of the block inside the range
    j_last = tl.minimum(n0 + BLOCK_N, kv_end) - 1
    m_end = tl.where(j_first <= j_last, q_len, 0)   # a block outside the key range: no query block
    if IS_CAUSAL:
        # row i sees key j iff j <= i + causal_off: rows >= j_first - off see some key of the block,
        # rows >= j_last - off see all of them (the off-diagonal part: no causal test)
        m_lo = (tl.maximum(j_first - causal_off, 0) // BLOCK_M) * BLOCK_M
        m_clean = tl.maximum(tl.cdiv(tl.maximum(j_last - causal_off, 0), BLOCK_M) * BLOCK_M, m_lo)
        m_end = tl.where(j_first - causal_off < q_len, m_end, 0)  # above every row's bound
    else:
        m_lo = 0
        m_clean = 0
    m_diag_end = tl.minimum(m_clean, m_end)
    m_clean = tl.maximum(m_clean, m_lo)

    col_ok = (offs_n >= kv_start) & (offs_n < kv_end)
    load_end = tl.where(m_lo < m_end, kv_end, 0)    # nothing is loaded for a block no row sees
    load_ok = (offs_n >= kv_start) & (offs_n < load_end)
    if HAS_KEY_MASK:
        km = tl.load(KeyMask + (b64 * stride_kmb + n064 * stride_kmn) + offs_nb * stride_kmn,
                     mask=load_ok, other=0)
        col_ok = col_ok & (km != 0)

    k = _load_tile(K + (b64 * stride_kb + hk64 * stride_kh + (k_start + n064) * stride_kn)
                   + offs_nb[:, None] * stride_kn + offs_d[None, :], load_ok, d_ok, True, BLOCK_D != HEAD_DIM)
    v = _load_tile(V + (b64 * stride_vb + hk64 * stride_vh + (k_start + n064) * stride_vn)
                   + offs_nb[:, None] * stride_vn + offs_dv[None, :], load_ok, dv_ok, True, BLOCK_DV != HEAD_DIM_V)
    if DOT_UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)

    q_bbase = Q + (b64 * stride_qb + q_start * stride_qm)
    do_bbase = DO + (b64 * stride_dob + q_start * stride_dom)
    dm_bbase = Dense + (b64 * stride_db + n064 * stride_dn)
    if IS_CAUSAL:
        # the causal diagonal: causal and bound / key-mask tests
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, col_ok, offs_n, q_bbase, do_bbase, Lse, dm_bbase, Delta, RowScale,
            stride_qh, stride_qm, stride_doh, stride_dom, stride_dh, stride_dm, stride_dn,
            hk, group, m_lo, m_diag_end, q_len, k_len, causal_off, qk_scale, sm_scale, lse_b0, lse_hs,
            drop_bh0, drop_row0, drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale, n0,
            HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, BLOCK_N,
            True, True, DENSE_MODE, FAST_SCALE, HAS_DROPOUT, DOT_UPCAST, INPUT_PRECISION)
    # the rows that see the whole block: bound / key-mask tests only (a per-key select; a third,
    # test-free copy of the loop for blocks inside the key range cost its own pipeline buffers, +50%
    # shared memory, for one select per score)
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, col_ok, offs_n, q_bbase, do_bbase, Lse, dm_bbase, Delta, RowScale,
        stride_qh, stride_qm, stride_doh, stride_dom, stride_dh, stride_dm, stride_dn,
        hk, group, m_clean, m_end, q_len, k_len, causal_off, qk_scale, sm_scale, lse_b0, lse_hs,
        drop_bh0, drop_row0, drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale, n0,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, BLOCK_N,
        True, False, DENSE_MODE, FAST_SCALE, HAS_DROPOUT, DOT_UPCAST, INPUT_PRECISION)

    dk = dk * sm_scale
    if HAS_DROPOUT:
        dv = dv * drop_scale
    n_ok = offs_n < k_len
    dk_ptrs = DK + (b64 * stride_dkb + hk64 * stride_dkh + (k_start + n064) * stride_dkn) \
        + offs_nb[:, None] * stride_dkn + offs_d[None, :]
    dv_ptrs = DV + (b64 * stride_dvb + hk64 * stride_dvh + (k_start + n064) * stride_dvn) \
        + offs_nb[:, None] * stride_dvn + offs_dv[None, :]
    if BLOCK_D != HEAD_DIM:
        tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=n_ok[:, None] & d_ok[None, :])
    else:
        tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=n_ok[:, None])
    if BLOCK_DV != HEAD_DIM_V:
        tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=n_ok[:, None] & dv_ok[None, :])
    else:
        tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=n_ok[:, None])


# ---------------------------------------------------------------------------------------------- dQ
@triton.jit
def _bwd_dq_inner(dq, l_hat, q, do, lse, delta,
                  k_base, v_base, km_base, dm_base,
                  k_offs, v_offs, dm_offs,
                  stride_kn, stride_vn, stride_kmn, stride_dn,
                  lo, hi, causal_off, qk_scale, sm_scale, drop_bh, drop_row0,
                  drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale,
                  offs_m, offs_n, offs_d, offs_dv, row_ok,
                  HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  CHECK_BOUNDS: tl.constexpr, CHECK_CAUSAL: tl.constexpr,
                  HAS_KEY_MASK: tl.constexpr, DENSE_MODE: tl.constexpr,
                  FAST_SCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                  DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Key blocks ``[lo, hi)`` for one query block (the forward's loop, with the dQ update); dropout bits
    of head ``drop_bh``, rows ``drop_row0 + offs_m``."""
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        start_n64 = start_n.to(tl.int64)
        cols = start_n + offs_n
        col_ok = cols < hi
        k = _load_tile(k_base + start_n64 * stride_kn + k_offs, col_ok, d_ok, CHECK_BOUNDS, BLOCK_D != HEAD_DIM)
        v = _load_tile(v_base + start_n64 * stride_vn + v_offs, col_ok, dv_ok, CHECK_BOUNDS, BLOCK_DV != HEAD_DIM_V)
        if DOT_UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        qk = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)  # (BLOCK_M, BLOCK_N)
        if DENSE_MODE != 0:
            dense = _load_tile(dm_base + start_n64 * stride_dn + dm_offs, row_ok, col_ok, True, CHECK_BOUNDS)
        if FAST_SCALE:
            p = tl.math.exp2(qk * qk_scale - (lse * LOG2E)[:, None])
        else:
            s = qk * sm_scale
            if DENSE_MODE == 2:
                bias = dense.to(tl.float32)
                s = tl.where(bias == float("-inf"), float("-inf"), s + bias)
            p = tl.math.exp2((s - lse[:, None]) * LOG2E)
        if CHECK_BOUNDS or CHECK_CAUSAL or HAS_KEY_MASK or DENSE_MODE == 1:
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
            if DENSE_MODE == 1:
                keep = keep & (dense != 0)
            p = tl.where(keep, p, 0.0)
        l_hat += tl.sum(p, 1)
        dp = tl.dot(do, tl.trans(v), input_precision=INPUT_PRECISION)  # (BLOCK_M, BLOCK_N)
        if HAS_DROPOUT:
            z = _dropout_keep(drop_k0, drop_k1, drop_c3, drop_thresh, drop_bh, drop_row0 + offs_m, start_n,
                              BLOCK_M, BLOCK_N)
            dp = tl.where(z, dp * drop_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=INPUT_PRECISION)
    return dq, l_hat


@triton.jit(do_not_specialize=BWD_NO_SPECIALIZE)
def _attn_bwd_dq_kernel(
        Q, K, V, DO, Lse, Delta, RowScale, DQ, KeyLens, KeyMask, KeyRange, Dense, CuSeqQ, CuSeqK,
        stride_qb, stride_qh, stride_qm,
        stride_kb, stride_kh, stride_kn,
        stride_vb, stride_vh, stride_vn,
        stride_dob, stride_doh, stride_dom,
        stride_dqb, stride_dqh, stride_dqm,
        stride_klb, stride_kmb, stride_kmn,
        stride_db, stride_dh, stride_dm, stride_dn,
        Hq, group, Lq, Lk, causal_off, qk_scale, sm_scale, total_q, total_k,
        drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale,
        LQ_BUCKET, LK_BUCKET,  # autotune keys only
        HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
        IS_CAUSAL: tl.constexpr, HAS_KEY_LENS: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
        DENSE_MODE: tl.constexpr, FAST_SCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr,
        DOT_UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr, IS_VARLEN: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program = one ``BLOCK_M`` block of query rows of one (batch, query head); writes its rows of
    ``DQ (B, Hq, Lq, E)`` (any strides, last dim contiguous) and of RowScale. Key loop bounds as the
    forward's; varlen (``IS_VARLEN``) as the dK/dV kernel's (a block past its sequence's rows does
    nothing)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(Lq, BLOCK_M)
    bh = pid // num_m
    pid_m = pid % num_m
    if IS_CAUSAL:
        start_m = num_m - 1 - pid_m  # the longest (bottom) blocks first
    else:
        start_m = pid_m
    b = bh // Hq
    h = bh % Hq
    hk = h // group
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    hk64 = hk.to(tl.int64)
    m0 = start_m * BLOCK_M

    q_start, q_len, k_start, k_len, causal_off = _seq_range(b, CuSeqQ, CuSeqK, Lq, Lk, causal_off,
                                                            total_q, total_k, IS_VARLEN)
    if IS_VARLEN:
        drop_bh = h
        drop_row0 = q_start                          # dropout counts packed rows (fastattn.dropout)
        q_start = q_start.to(tl.int64)
        k_start = k_start.to(tl.int64)
        k_len = tl.where(m0 < q_len, k_len, 0)       # a block past a short sequence's end loads nothing
        lse_row0 = h64 * total_q + q_start           # (Hq, total_q)
    else:
        drop_bh = bh
        drop_row0 = 0
        lse_row0 = bh.to(tl.int64) * Lq              # (B, Hq, Lq)
    q_row0 = m0.to(tl.int64) + q_start               # first query row of the block in the tensor
    lse_row0 += m0

    offs_mb = tl.arange(0, BLOCK_M)
    offs_m = m0 + offs_mb
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < q_len
    d_ok = offs_d < HEAD_DIM
    dv_ok = offs_dv < HEAD_DIM_V

    q = _load_tile(Q + (b64 * stride_qb + h64 * stride_qh + q_row0 * stride_qm)
                   + offs_mb[:, None] * stride_qm + offs_d[None, :], row_ok, d_ok, True, BLOCK_D != HEAD_DIM)
    do = _load_tile(DO + (b64 * stride_dob + h64 * stride_doh + q_row0 * stride_dom)
                    + offs_mb[:, None] * stride_dom + offs_dv[None, :], row_ok, dv_ok, True, BLOCK_DV != HEAD_DIM_V)
    if DOT_UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(Lse + lse_row0 + offs_mb, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse)  # empty row: P = 0
    delta = tl.load(Delta + lse_row0 + offs_mb, mask=row_ok, other=0.0)

    k_base = K + (b64 * stride_kb + hk64 * stride_kh + k_start * stride_kn)
    v_base = V + (b64 * stride_vb + hk64 * stride_vh + k_start * stride_vn)
    k_offs = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_offs = offs_n[:, None] * stride_vn + offs_dv[None, :]
    km_base = KeyMask + b64 * stride_kmb
    dm_base = Dense + (b64 * stride_db + h64 * stride_dh + m0.to(tl.int64) * stride_dm)
    dm_offs = offs_mb[:, None] * stride_dm + offs_n[None, :] * stride_dn

    # the forward's key loop bounds: [lo, n_clean) off-band, [n_clean, hi) on-band
    lo, hi, n_clean = _key_bounds(m0, tl.minimum(m0 + BLOCK_M, q_len) - 1, k_len, causal_off, KeyLens, KeyRange,
                                  b64, stride_klb, BLOCK_N, IS_CAUSAL, HAS_KEY_LENS, HAS_KEY_MASK)

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    l_hat = tl.zeros([BLOCK_M], tl.float32)
    dq, l_hat = _bwd_dq_inner(
        dq, l_hat, q, do, lse, delta, k_base, v_base, km_base, dm_base, k_offs, v_offs, dm_offs,
        stride_kn, stride_vn, stride_kmn, stride_dn,
        lo, n_clean, causal_off, qk_scale, sm_scale, drop_bh, drop_row0,
        drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale,
        offs_m, offs_n, offs_d, offs_dv, row_ok,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, BLOCK_N,
        False, False, HAS_KEY_MASK, DENSE_MODE, FAST_SCALE, HAS_DROPOUT, DOT_UPCAST, INPUT_PRECISION)
    dq, l_hat = _bwd_dq_inner(
        dq, l_hat, q, do, lse, delta, k_base, v_base, km_base, dm_base, k_offs, v_offs, dm_offs,
        stride_kn, stride_vn, stride_kmn, stride_dn,
        n_clean, hi, causal_off, qk_scale, sm_scale, drop_bh, drop_row0,
        drop_k0, drop_k1, drop_c3, drop_thresh, drop_scale,
        offs_m, offs_n, offs_d, offs_dv, row_ok,
        HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_M, BLOCK_N,
        True, IS_CAUSAL, HAS_KEY_MASK, DENSE_MODE, FAST_SCALE, HAS_DROPOUT, DOT_UPCAST, INPUT_PRECISION)

    # P was exp(S - lse) with the saved fp32 LSE: its row sums l_hat are 1 up to the LSE's rounding
    # (|lse| * 2^-24, 1e-5 relative at |lse| ~ 100) -- or Lk-fold off on a row whose scores a huge
    # additive bias (finfo.min) made equal, whose log(l) the LSE cannot hold. Renormalising by l_hat
    # makes P exactly the forward's; dK/dV reads the same factor.
    # (l_hat == 0: no visible key, rs = 0; a NaN row keeps its NaN, as autograd through SDPA would)
    rs = tl.where(l_hat == 0.0, 0.0, 1.0 / tl.where(l_hat == 0.0, 1.0, l_hat))
    tl.store(RowScale + lse_row0 + offs_mb, rs, mask=row_ok)
    dq = dq * (rs * sm_scale)[:, None]
    dq_ptrs = DQ + (b64 * stride_dqb + h64 * stride_dqh + q_row0 * stride_dqm) \
        + offs_mb[:, None] * stride_dqm + offs_d[None, :]
    if BLOCK_D != HEAD_DIM:
        tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    else:
        tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])

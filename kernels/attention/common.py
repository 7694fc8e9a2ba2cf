"""Device helpers shared by the attention kernels (prefill ``fwd.py``, decode ``decode.py``).

* :func:`_load_tile` — a 2-D load masked only where a constexpr says rows/cols may be out of bounds.
* :func:`_seq_range` — where a batch row / sequence lives and how long it is: padded (row 0, ``Lq``,
  ``Lk``) or varlen (``cu_seqlens_q/k``, clamped; causal bottom-right per sequence).
* :func:`_key_bounds` — the one statement of which keys a set of query rows may see: the key loop
  range ``[lo, hi)`` and the end ``n_clean`` of its off-band part, from the key length, the causal
  offset, per-batch key lengths and a key mask's ``[first, last + 1)`` range. Coordinates are local to
  one sequence (row ``i`` and key ``j`` count from the sequence's first row/key), so a packed varlen
  layout only changes where a sequence starts and how long it is, not this function.
* :func:`_online_softmax` — the statistics of one key block of the online softmax (running max and
  sum, the rescale factor, the probabilities).
* :func:`_finalize` — the epilogue: ``acc / l`` and the natural-log LSE; exact 0 and ``-inf`` on rows
  with no visible key, decided from "no key was visible", never from a comparison NaN can fail, so
  NaN/Inf inputs propagate as in SDPA.
* :func:`_key_range` — a batch row's visible key range ``[kv_start, kv_end)`` (what ``_key_bounds``
  starts from; the backward's dK/dV kernel tests its key block against it).
* :func:`_dropout_keep` — the dropout keep bits of a tile, the counter-based contract of
  :mod:`fastattn.dropout` (forward and backward draw the same bits).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: ln(2) and log2(e), as constexpr globals (Triton reads only constexpr globals inside kernels)
LN2 = tl.constexpr(0.6931471805599453)
LOG2E = tl.constexpr(1.4426950408889634)


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
def _seq_range(b, CuSeqQ, CuSeqK, Lq, Lk, causal_off, total_q, total_k, IS_VARLEN: tl.constexpr):
    """Where batch row / sequence ``b`` lives: ``(q_start, q_len, k_start, k_len, causal_off)``.

    Padded layout: every sequence has ``Lq`` queries and ``Lk`` keys from row 0 (``q_start =
    k_start = 0``; the batch stride places it) and the launcher's ``causal_off``. Varlen
    (``IS_VARLEN``): rows ``cu_q[b]:cu_q[b+1]`` of a packed ``(total_q, H, E)`` tensor attend keys
    ``cu_k[b]:cu_k[b+1]``, causal bottom-right per sequence (``causal_off = k_len - q_len``). Offsets
    are clamped into ``[0, total]`` and lengths to ``>= 0``, so out-of-range or decreasing cu_seqlens
    never address memory outside the tensors (such a sequence is empty or truncated).
    """
    if IS_VARLEN:
        q_start = tl.minimum(tl.maximum(tl.load(CuSeqQ + b), 0), total_q)
        q_end = tl.minimum(tl.maximum(tl.load(CuSeqQ + b + 1), q_start), total_q)
        k_start = tl.minimum(tl.maximum(tl.load(CuSeqK + b), 0), total_k)
        k_end = tl.minimum(tl.maximum(tl.load(CuSeqK + b + 1), k_start), total_k)
        q_len = q_end - q_start
        k_len = k_end - k_start
        return q_start, q_len, k_start, k_len, k_len - q_len
    else:
        return 0, Lq, 0, Lk, causal_off


@triton.jit
def _key_range(k_len, KeyLens, KeyRange, b64, stride_klb, HAS_KEY_LENS: tl.constexpr, HAS_KEY_MASK: tl.constexpr):
    """``(kv_start, kv_end)``: keys outside ``[kv_start, kv_end)`` are invisible to every row of batch
    row ``b`` (``k_len``, ``key_lengths[b]``, the key mask's ``[first, last + 1)``)."""
    kv_start = 0
    kv_end = k_len
    if HAS_KEY_LENS:
        kl = tl.load(KeyLens + b64 * stride_klb).to(tl.int32)
        kv_end = tl.maximum(tl.minimum(kv_end, kl), 0)
    if HAS_KEY_MASK:
        kv_start = tl.load(KeyRange + 2 * b64)
        kv_end = tl.minimum(kv_end, tl.load(KeyRange + 2 * b64 + 1))
    return kv_start, kv_end


@triton.jit
def _key_bounds(row_first, row_last, k_len, causal_off, KeyLens, KeyRange, b64, stride_klb,
                BLOCK_N: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_KEY_LENS: tl.constexpr,
                HAS_KEY_MASK: tl.constexpr):
    """Key loop bounds of query rows ``row_first..row_last`` (inclusive) of batch row ``b``.

    Key ``j`` is visible to row ``i`` iff ``j < k_len``, ``j < key_lengths[b]`` (``HAS_KEY_LENS``),
    ``first <= j < last + 1`` of the key mask's range ``KeyRange[b]`` (``HAS_KEY_MASK``; the mask bytes
    themselves are tested in the loop) and ``j <= i + causal_off`` (``IS_CAUSAL``).

    Returns ``(lo, hi, n_clean)``: ``lo`` the first key block (a multiple of ``BLOCK_N``), ``hi`` one
    past the last key any of the rows may see (keys ``>= hi`` are never loaded), ``n_clean`` the end of
    the off-band part: blocks ``[lo, n_clean)`` are whole (multiples of ``BLOCK_N``, all ``< hi``) and
    visible to every row, so they need no bound or causal test. ``n_clean`` may exceed ``hi`` only when
    the range is empty (``lo >= hi``).
    """
    kv_start, kv_end = _key_range(k_len, KeyLens, KeyRange, b64, stride_klb, HAS_KEY_LENS, HAS_KEY_MASK)
    lo = (kv_start // BLOCK_N) * BLOCK_N
    if IS_CAUSAL:
        # the last row sees keys <= row_last + causal_off; every row sees keys <= row_first + causal_off
        hi = tl.maximum(tl.minimum(kv_end, row_last + causal_off + 1), 0)
        clean_end = tl.maximum(tl.minimum(kv_end, row_first + causal_off + 1), 0)
    else:
        hi = tl.maximum(kv_end, 0)
        clean_end = hi
    n_clean = tl.maximum((clean_end // BLOCK_N) * BLOCK_N, lo)
    return lo, hi, n_clean


@triton.jit
def _online_softmax(l_i, m_i, s, s_scale, MAX_ON_RAW: tl.constexpr, MASKED: tl.constexpr):
    """The statistics of one key block of the online softmax: from scores ``s`` ``(BLOCK_M, BLOCK_N)``
    (``-inf`` where removed) and the running ``(l_i, m_i)``, return ``(p, alpha, l_i, m_i)``: the
    unnormalised probabilities, the factor that rescales the previous accumulator, and the new state.
    The caller finishes the step with ``acc = acc * alpha[:, None]`` then ``acc += p @ v`` (V is
    loaded between the two, as the pipelined loop wants it).

    ``MAX_ON_RAW``: the log2-unit scores are ``s * s_scale`` with ``s_scale > 0``: the running max is
    kept in log2 units, taken on raw ``s`` and scaled once per row, and ``p = exp2(s * s_scale - m)``
    is one FMA per score. Otherwise ``p = exp2((s - m) * s_scale)``: the max is kept in ``s``'s own
    units (natural units with ``s_scale = log2(e)``, so that a ``finfo.min`` bias stays finite; scores
    already in log2 units with ``s_scale = 1``). ``MASKED``: ``s`` may hold ``-inf`` (a row may have
    seen nothing yet), so a ``-inf`` max is replaced by 0 before it is subtracted.
    """
    if MAX_ON_RAW:
        m_ij = tl.maximum(m_i, tl.max(s, 1) * s_scale)
    else:
        m_ij = tl.maximum(m_i, tl.max(s, 1))
    if MASKED:
        m_use = tl.where(m_ij == float("-inf"), 0.0, m_ij)
    else:
        m_use = m_ij
    if MAX_ON_RAW:
        p = tl.math.exp2(s * s_scale - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
    else:
        p = tl.math.exp2((s - m_use[:, None]) * s_scale)
        alpha = tl.math.exp2((m_i - m_use) * s_scale)
    l_i = l_i * alpha + tl.sum(p, 1)
    return p, alpha, l_i, m_ij


@triton.jit
def _finalize(acc, l_i, m_i, M_LOG2: tl.constexpr):
    """``(out, lse)``: ``out = acc / l`` (fp32) and the natural-log LSE ``m + log(l)``; exactly 0 and
    ``-inf`` on rows with no visible key. ``M_LOG2``: ``m_i`` is in log2 units (else natural units).

    A row saw no key iff its running max is still ``-inf`` and nothing was summed (``l == 0``). NaN
    never passes for "empty": a NaN score makes ``l`` NaN (the row max, like ``tl.max``, may skip
    NaN and stay ``-inf`` when the rest of the row is removed), so the row is not empty and its NaN
    reaches ``out`` and the LSE, as in SDPA. A row whose visible scores are all ``-inf`` (reachable
    only with infinite inputs) cannot be told from an empty one and gives 0 where SDPA gives NaN.
    """
    empty = (m_i == float("-inf")) & (l_i == 0.0)
    l_safe = tl.where(empty, 1.0, l_i)
    out = tl.where(empty[:, None], 0.0, acc / l_safe[:, None])
    if M_LOG2:
        lse = (m_i + tl.math.log2(l_safe)) * LN2
    else:
        lse = m_i + tl.math.log2(l_safe) * LN2
    lse = tl.where(empty, float("-inf"), lse)
    return out, lse


@triton.jit
def _dropout_keep(k0, k1, c3, thresh, bh, rows, start_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Dropout keep flags ``(BLOCK_M, BLOCK_N)`` of query rows ``rows`` (int32 ``(BLOCK_M,)``) x keys
    ``start_n + [0, BLOCK_N)`` (``start_n % 4 == 0``) of the flattened head ``bh = b * Hq + h``
    (padded layout) -- packed varlen sequences pass ``bh = h``, ``rows`` the packed rows
    ``cu_q[b] + i`` and sequence-local keys (see :mod:`fastattn.dropout`).

    The contract of :mod:`fastattn.dropout` (uint32 words; ``k0, k1, c3, thresh`` arrive as int32 bit
    patterns from ``fastattn.dropout.philox_kernel_args``)::

        r0..r3 = philox_4x32_10(counter=(j >> 2, i, bh, c3), key=(k0, k1));  r = r[j & 3]
        keep   = r >= thresh

    A pure function of (seed, offset, bh, i, j, p): independent of the tile shape and of which kernel
    asks. One Philox call gives the draws of four consecutive keys, interleaved back in key order
    (``tl.interleave`` twice yields ``[r0, r1, r2, r3][j & 3]``).
    """
    Q4: tl.constexpr = BLOCK_N // 4
    t = (start_n // 4 + tl.arange(0, Q4)).to(tl.uint32)
    c0 = tl.broadcast_to(t[None, :], (BLOCK_M, Q4))
    c1 = tl.broadcast_to(rows.to(tl.uint32)[:, None], (BLOCK_M, Q4))
    zero = tl.zeros((BLOCK_M, Q4), tl.uint32)
    c2 = zero + bh.to(tl.uint32)
    c3v = zero + c3.to(tl.uint32, bitcast=True)
    r0, r1, r2, r3 = tl.philox_impl(c0, c1, c2, c3v, k0.to(tl.uint32, bitcast=True),
                                    k1.to(tl.uint32, bitcast=True))
    r = tl.interleave(tl.interleave(r0, r2), tl.interleave(r1, r3))
    return r >= thresh.to(tl.uint32, bitcast=True)

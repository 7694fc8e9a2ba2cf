"""Triton fused residual-add + LayerNorm: ``y = LayerNorm(x + residual) * weight + bias``.

BERT's ``BertOutput`` ends with ``LayerNorm(dropout(dense(h)) + input_tensor)``; at inference the add and
the normalisation are one pass over memory here. Statistics (mean, variance) are fp32 and two-pass
(``var = mean((h - mean)^2)``, no ``E[h^2] - mean^2`` cancellation); ``h = x + residual`` is formed in fp32
and never rounded; the output is rounded once.

Two shapes of program, chosen by the launcher (``fastattn.ffn.backends.triton``) with :func:`launch_shape`:

* ``BLOCK_N >= N`` (every transformer width up to 16384): ``ROWS`` rows per program, each row held
  in registers once; one read of ``x``/``residual``, one write of ``y``.
* wider rows: one row per program, looping over ``BLOCK_N`` chunks (three passes over the row).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: widest row held in registers by the one-pass program
MAX_FUSED_N = 16384


@triton.jit
def residual_layernorm_kernel(
    x_ptr, r_ptr, w_ptr, b_ptr, y_ptr,
    M, N, eps,
    stride_xm, stride_xn, stride_rm, stride_rn, stride_ym, stride_yn, stride_w, stride_b,
    HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ONE_PASS: tl.constexpr,
):
    pid = tl.program_id(0)
    if ONE_PASS:
        rows = pid * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK_N)
        row_ok = rows < M
        col_ok = cols < N
        mask = row_ok[:, None] & col_ok[None, :]
        r64 = rows.to(tl.int64)
        c64 = cols.to(tl.int64)
        h = tl.load(x_ptr + r64[:, None] * stride_xm + c64[None, :] * stride_xn, mask=mask,
                    other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            h += tl.load(r_ptr + r64[:, None] * stride_rm + c64[None, :] * stride_rn, mask=mask,
                         other=0.0).to(tl.float32)
        mean = tl.sum(h, axis=1) / N
        d = tl.where(mask, h - mean[:, None], 0.0)
        var = tl.sum(d * d, axis=1) / N
        rstd = 1.0 / tl.sqrt(var + eps)
        y = d * rstd[:, None]
        if HAS_WEIGHT:
            y = y * tl.load(w_ptr + c64 * stride_w, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_BIAS:
            y = y + tl.load(b_ptr + c64 * stride_b, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + r64[:, None] * stride_ym + c64[None, :] * stride_yn,
                 y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        row = pid.to(tl.int64)
        xrow = x_ptr + row * stride_xm
        rrow = r_ptr + row * stride_rm
        yrow = y_ptr + row * stride_ym
        cols0 = tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            cols = start + cols0
            ok = cols < N
            h = tl.load(xrow + cols.to(tl.int64) * stride_xn, mask=ok, other=0.0).to(tl.float32)
            if HAS_RESIDUAL:
                h += tl.load(rrow + cols.to(tl.int64) * stride_rn, mask=ok, other=0.0).to(tl.float32)
            acc += h
        mean = tl.sum(acc, axis=0) / N
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            cols = start + cols0
            ok = cols < N
            h = tl.load(xrow + cols.to(tl.int64) * stride_xn, mask=ok, other=0.0).to(tl.float32)
            if HAS_RESIDUAL:
                h += tl.load(rrow + cols.to(tl.int64) * stride_rn, mask=ok, other=0.0).to(tl.float32)
            d = tl.where(ok, h - mean, 0.0)
            acc += d * d
        rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / N + eps)
        for start in range(0, N, BLOCK_N):
            cols = start + cols0
            ok = cols < N
            h = tl.load(xrow + cols.to(tl.int64) * stride_xn, mask=ok, other=0.0).to(tl.float32)
            if HAS_RESIDUAL:
                h += tl.load(rrow + cols.to(tl.int64) * stride_rn, mask=ok, other=0.0).to(tl.float32)
            y = (h - mean) * rstd
            if HAS_WEIGHT:
                y = y * tl.load(w_ptr + cols.to(tl.int64) * stride_w, mask=ok, other=0.0).to(tl.float32)
            if HAS_BIAS:
                y = y + tl.load(b_ptr + cols.to(tl.int64) * stride_b, mask=ok, other=0.0).to(tl.float32)
            tl.store(yrow + cols.to(tl.int64) * stride_yn, y.to(y_ptr.dtype.element_ty), mask=ok)


def launch_shape(N: int):
    """``(ROWS, BLOCK_N, ONE_PASS, num_warps)`` for a row width ``N``."""
    if N <= MAX_FUSED_N:
        block_n = max(16, triton.next_power_of_2(N))
        # ~4K elements per program: several short rows per program, one long row per program
        rows = max(1, min(16, 4096 // block_n))
        warps = 4 if block_n * rows <= 4096 else 8
        if block_n >= 8192:
            warps = 16
        return rows, block_n, True, warps
    return 1, 4096, False, 8

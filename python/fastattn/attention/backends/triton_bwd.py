"""Launcher of the fused Triton attention backward (``fastattn/kernels/attention/bwd.py``).

:func:`attn_bwd_triton` takes plain tensors (what an autograd context saves: q, k, v, out, lse and the
dropout RNG state) plus a :class:`~fastattn.masks.NormalizedMask`, and returns ``(dq, dk, dv)``. Three
launches: the ``delta = rowsum(dO * O)`` preprocess, the dK/dV kernel (GQA group reduced in the
kernel), the dQ kernel. No atomics: bitwise deterministic. :func:`attn_varlen_bwd_triton` is the same
for packed sequences (``attention_varlen``): the kernels' ``IS_VARLEN`` mode, one launch each for the
whole batch.

On CUDA (compute capability >= 8.0) each kernel autotunes over its config list for the arch
(``CONFIGS_BWD_*_SM80`` / ``_SM90`` in ``kernels/attention/configs.py``, pruned by a register and
shared-memory model); under
``TRITON_INTERPRET=1`` CPU tensors run with one fixed small config (bf16 dots on fp32-upcast operands
there, as in the forward: the interpreter's bf16 ``tl.dot`` is wrong).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ...dropout import philox_kernel_args
from ...masks import NormalizedMask
from ...runtime import device_guard, device_info
from .kernel_args import mask_args

__all__ = ["attn_bwd_triton", "attn_varlen_bwd_triton"]

LOG2E = 1.4426950408889634
_MAX_BLOCK = 128


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _check_view(name: str, t: torch.Tensor, shape, dtype, device) -> None:
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != device:
        raise ValueError(f"{name} must be a {dtype} tensor of shape {tuple(shape)} on {device}; got "
                         f"{t.dtype} {tuple(t.shape)} on {t.device}")
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must have a contiguous last dim (stride 1), got strides {t.stride()}")


def _grad_like(t: torch.Tensor) -> torch.Tensor:
    """An uninitialised gradient buffer for ``t``: its strides when they are dense (``(B, L, H, D)``
    views stay that way), else contiguous."""
    return torch.empty_like(t, memory_format=torch.preserve_format)


#: (kernel family, constexpr key) -> constexpr kwargs
_META = {}


def attn_bwd_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                    dout: torch.Tensor, mask: Optional[NormalizedMask], scale: float, *,
                    dropout_p: float = 0.0, seed: int = 0, offset: int = 0,
                    dq: Optional[torch.Tensor] = None, dk: Optional[torch.Tensor] = None,
                    dv: Optional[torch.Tensor] = None, config: Optional[dict] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``out = dropout(softmax(q k^T * scale + mask)) v`` w.r.t. q, k, v.

    * ``q (B, Hq, Lq, E)``, ``k (B, Hkv, Lk, E)``, ``v (B, Hkv, Lk, Ev)``: the forward's inputs, any
      strides with a contiguous last dim (read in place); ``Hq % Hkv == 0`` (query head ``h`` uses KV
      head ``h // (Hq // Hkv)``); fp16, bf16 or fp32.
    * ``out``, ``dout`` ``(B, Hq, Lq, Ev)``: the forward's output and its gradient (any strides;
      ``dout`` with a non-unit last-dim stride, e.g. an expanded scalar gradient, is copied).
    * ``lse`` float32 ``(B, Hq, Lq)``: the forward's natural-log LSE of the (undropped) scores,
      ``-inf`` on rows with no visible key.
    * ``mask``: the forward's :class:`~fastattn.masks.NormalizedMask` (``None`` = no mask); ``scale``
      the forward's softmax scale.
    * ``dropout_p, seed, offset``: the forward's dropout; the keep mask is regenerated from
      ``(seed, offset)`` by the contract of :mod:`fastattn.dropout`. ``dropout_p == 1`` gives zeros.
    * ``dq, dk, dv``: optional output buffers (shapes of q, k, v, same dtype, contiguous last dim, e.g.
      views into one packed ``dqkv``); default: new tensors laid out like q, k, v when those are dense.
    * ``config``: pin tiles instead of autotuning, ``{"dkdv": {"BLOCK_M", "BLOCK_N", "num_warps",
      "num_stages"}, "dq": {...}}`` (either key may be absent).

    Returns ``(dq, dk, dv)`` in the input dtype. Rows with no visible key get ``dq = 0``; keys no row
    sees get ``dk = dv = 0``; never NaN. Bitwise deterministic. A float mask gets no gradient here.
    """
    mask = mask if mask is not None else NormalizedMask()
    B, Hq, Lq, E = q.shape
    Bk, Hkv, Lk, Ek = k.shape
    Ev = v.shape[3]
    dtype, dev = q.dtype, q.device
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-D (B, H, L, D)")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"q has dtype {dtype}; the triton backward supports float16, bfloat16, float32")
    if Bk != B or Ek != E or Hkv == 0 or Hq % Hkv:
        raise ValueError(f"k {tuple(k.shape)} does not match q {tuple(q.shape)} (B, E equal; Hq % Hkv == 0)")
    _check_view("q", q, (B, Hq, Lq, E), dtype, dev)
    _check_view("k", k, (B, Hkv, Lk, E), dtype, dev)
    _check_view("v", v, (B, Hkv, Lk, Ev), dtype, dev)
    _check_view("out", out, (B, Hq, Lq, Ev), dtype, dev)
    if dout.shape != out.shape or dout.dtype != dtype or dout.device != dev:
        raise ValueError(f"dout must be a {dtype} tensor of shape {tuple(out.shape)} on {dev}; got "
                         f"{dout.dtype} {tuple(dout.shape)} on {dout.device}")
    if Ev > 1 and dout.stride(3) != 1:
        dout = dout.contiguous()
    if lse.shape != (B, Hq, Lq) or lse.dtype != torch.float32 or lse.device != dev:
        raise ValueError(f"lse must be a float32 tensor of shape {(B, Hq, Lq)} on {dev}; got "
                         f"{lse.dtype} {tuple(lse.shape)} on {lse.device}")
    lse = lse.contiguous()
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1], got {dropout_p}")
    if dq is None:
        dq = _grad_like(q)
    if dk is None:
        dk = _grad_like(k)
    if dv is None:
        dv = _grad_like(v)
    _check_view("dq", dq, q.shape, dtype, dev)
    _check_view("dk", dk, k.shape, dtype, dev)
    _check_view("dv", dv, v.shape, dtype, dev)

    if B * Hq * Lq == 0 or Lk == 0 or dropout_p >= 1.0:
        # nothing visible (or everything dropped): every gradient is exactly 0
        for t in (dq, dk, dv):
            t.zero_()
        return dq, dk, dv

    # key range: once per mask object (the forward's, when autograd kept it); lse stands in for absent ones
    a = mask_args(mask, lse, Lq, Lk)
    return _launch(q, k, v, out, dout, lse, dq, dk, dv,
                   strides=tuple(t.stride()[:3] for t in (q, k, v, out, dout, dq, dk, dv)),
                   B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, E=E, Ev=Ev,
                   opt=(a.key_lens, a.key_mask, a.key_range, a.dense, lse, lse),
                   opt_strides=(a.stride_klb, a.stride_kmb, a.stride_kmn, *a.dense_strides),
                   kinds=(mask.causal is not None, mask.key_lengths is not None, mask.key_mask is not None,
                          a.dense_mode),
                   causal_off=a.causal_off, totals=(0, 0), scale=scale,
                   dropout=(dropout_p, seed, offset), config=config)


def attn_varlen_bwd_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                           dout: torch.Tensor, cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
                           max_seqlen_q: int, max_seqlen_k: int, *, causal: bool = False,
                           scale: Optional[float] = None, dropout_p: float = 0.0, seed: int = 0, offset: int = 0,
                           dq: Optional[torch.Tensor] = None, dk: Optional[torch.Tensor] = None,
                           dv: Optional[torch.Tensor] = None, config: Optional[dict] = None
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the packed variable-length forward (``triton._attn_varlen_fwd_triton``) w.r.t. q, k, v:
    the same three kernels in their ``IS_VARLEN`` mode.

    * ``q (total_q, Hq, E)``, ``k (total_k, Hkv, E)``, ``v (total_k, Hkv, Ev)``, ``out``/``dout``
      ``(total_q, Hq, Ev)``: any strides with a contiguous last dim (``dout`` otherwise is copied);
      ``Hq % Hkv == 0``, the group reduced in the dK/dV kernel.
    * ``lse`` float32 ``(Hq, total_q)``: the forward's (``-inf`` on rows with no visible key).
    * ``cu_seqlens_q/k`` int32 ``(B + 1,)`` on the tensors' device (clamped in the kernels: bad values
      never address memory outside the tensors); ``max_seqlen_q/k`` >= every length (they size the grids).
    * ``causal``: bottom-right per sequence; ``scale=None``: ``1/sqrt(E)``.
    * ``dropout_p, seed, offset``: the forward's; the keep mask is regenerated from the packed-row contract
      of :mod:`fastattn.dropout` (:func:`~fastattn.dropout.dropout_keep_mask_varlen`). ``p == 1``: zeros.
    * ``dq, dk, dv``: optional output buffers (shapes of q, k, v, same dtype, contiguous last dim);
      ``config``: pinned tiles; both as :func:`attn_bwd_triton`'s.

    Returns ``(dq, dk, dv)``, new ones laid out like ``q, k, v`` when those are dense. Rows with no visible key
    and keys no row sees get 0, never NaN; an empty sequence's keys get 0. Rows / keys outside every
    (clamped) sequence, reachable only with cu_seqlens that break the contract, are not written.
    Bitwise deterministic (no atomics).
    """
    total_q, Hq, E = q.shape
    total_k, Hkv, Ek = k.shape
    Ev = v.shape[2]
    dtype, dev = q.dtype, q.device
    B = cu_seqlens_q.numel() - 1
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"q has dtype {dtype}; the triton backward supports float16, bfloat16, float32")
    if Ek != E or Hkv == 0 or Hq % Hkv:
        raise ValueError(f"k {tuple(k.shape)} does not match q {tuple(q.shape)} (E equal; Hq % Hkv == 0)")
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if t.dtype != torch.int32 or t.dim() != 1 or t.numel() != B + 1 or t.device != dev:
            raise ValueError(f"{name} must be an int32 (B + 1,) tensor on {dev} with B = {B}; got "
                             f"{t.dtype} {tuple(t.shape)} on {t.device}")
    _check_view("q", q, (total_q, Hq, E), dtype, dev)
    _check_view("k", k, (total_k, Hkv, E), dtype, dev)
    _check_view("v", v, (total_k, Hkv, Ev), dtype, dev)
    _check_view("out", out, (total_q, Hq, Ev), dtype, dev)
    if dout.shape != out.shape or dout.dtype != dtype or dout.device != dev:
        raise ValueError(f"dout must be a {dtype} tensor of shape {tuple(out.shape)} on {dev}; got "
                         f"{dout.dtype} {tuple(dout.shape)} on {dout.device}")
    if Ev > 1 and dout.stride(2) != 1:
        dout = dout.contiguous()
    if lse.shape != (Hq, total_q) or lse.dtype != torch.float32 or lse.device != dev:
        raise ValueError(f"lse must be a float32 tensor of shape {(Hq, total_q)} on {dev}; got "
                         f"{lse.dtype} {tuple(lse.shape)} on {lse.device}")
    lse = lse.contiguous()
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1], got {dropout_p}")
    dq = _grad_like(q) if dq is None else dq
    dk = _grad_like(k) if dk is None else dk
    dv = _grad_like(v) if dv is None else dv
    _check_view("dq", dq, q.shape, dtype, dev)
    _check_view("dk", dk, k.shape, dtype, dev)
    _check_view("dv", dv, v.shape, dtype, dev)
    if B <= 0 or total_q == 0 or total_k == 0 or max_seqlen_q <= 0 or max_seqlen_k <= 0 or dropout_p >= 1.0:
        for t in (dq, dk, dv):  # no visible key anywhere (or everything dropped)
            t.zero_()
        return dq, dk, dv

    def packed(t):  # (total, H, D) as the kernels' (batch, head, row) strides
        return (0, t.stride(1), t.stride(0))

    scale = E ** -0.5 if scale is None else scale
    return _launch(q, k, v, out, dout, lse, dq, dk, dv,
                   strides=tuple(packed(t) for t in (q, k, v, out, dout, dq, dk, dv)),
                   B=B, Hq=Hq, Hkv=Hkv, Lq=max_seqlen_q, Lk=max_seqlen_k, E=E, Ev=Ev,
                   opt=(lse, lse, lse, lse, cu_seqlens_q, cu_seqlens_k), opt_strides=(0,) * 7,
                   kinds=(bool(causal), False, False, 0), causal_off=0, totals=(total_q, total_k), scale=scale,
                   dropout=(dropout_p, seed, offset), config=config)


def _launch(q, k, v, out, dout, lse, dq, dk, dv, *, strides, B, Hq, Hkv, Lq, Lk, E, Ev, opt, opt_strides, kinds,
            causal_off, totals, scale, dropout, config):
    """The three launches, shared by the padded and the packed (varlen) layout. ``strides``: the
    ``(batch, head, row)`` strides of q, k, v, out, dout, dq, dk, dv (varlen: batch 0, the token stride
    as the row stride); ``opt``: the kernels' ``KeyLens, KeyMask, KeyRange, Dense, CuSeqQ, CuSeqK``
    pointers; ``kinds``: ``(causal, key lengths, key mask, dense mode)``; ``totals``: ``(total_q,
    total_k)``, nonzero only for varlen (which also sets ``IS_VARLEN``); ``B, Lq, Lk``: the grid's
    sequence count and (max) lengths. Returns ``(dq, dk, dv)``."""
    dtype, dev = q.dtype, q.device
    varlen = totals != (0, 0)
    causal, has_kl, has_km, dense_mode = kinds
    dropout_p, seed, offset = dropout
    scale = float(scale)
    fast_scale = scale > 0.0 and dense_mode != 2
    has_dropout = dropout_p > 0.0
    if has_dropout:
        dk0, dk1, dc3, dthr, dscale = philox_kernel_args(seed, offset, dropout_p)
    else:
        dk0, dk1, dc3, dthr, dscale = 0, 0, 0, 0, 1.0

    info = device_info(dev)
    interpret = info.capability is None
    mkey = (dtype, E, Ev, causal, has_kl, has_km, dense_mode, fast_scale, has_dropout, interpret, varlen)
    meta = _META.get(mkey)
    if meta is None:
        dot_upcast = interpret and dtype == torch.bfloat16
        meta = _META[mkey] = dict(
            HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=max(16, _next_pow2(E)), BLOCK_DV=max(16, _next_pow2(Ev)),
            IS_CAUSAL=causal, HAS_KEY_LENS=has_kl, HAS_KEY_MASK=has_km,
            DENSE_MODE=dense_mode, FAST_SCALE=fast_scale, HAS_DROPOUT=has_dropout, DOT_UPCAST=dot_upcast,
            INPUT_PRECISION="ieee" if (dtype == torch.float32 or dot_upcast) else "tf32", IS_VARLEN=varlen,
            enable_fp_fusion=True)

    from fastattn.kernels import attention as KB
    qs, ks, vs, os_, dos, dqs, dks, dvs = strides
    group = Hq // Hkv
    lq_b, lk_b = _next_pow2(Lq), _next_pow2(Lk)
    # delta and the row renormalisation 1 / rowsum(exp(S - lse)): laid out as lse, (B, Hq, Lq) / (Hq, total_q)
    delta = torch.empty(lse.shape, dtype=torch.float32, device=dev)
    row_scale = torch.empty(lse.shape, dtype=torch.float32, device=dev)
    cfg = dict(config or {})
    if interpret:
        cfg.setdefault("dkdv", KB.config_kwargs(KB.CONFIG_INTERPRET_BWD_DKDV))
        cfg.setdefault("dq", KB.config_kwargs(KB.CONFIG_INTERPRET_BWD_DQ))

    with device_guard(dev):
        # delta is row-wise: packed rows are one (1, Hq, total_q) batch, no sequence structure needed
        pre_b, pre_l = (1, totals[0]) if varlen else (B, Lq)
        bm_pre = KB.bwd_preprocess_block_m(meta["BLOCK_DV"])
        KB._attn_bwd_preprocess_kernel[(_cdiv(pre_l, bm_pre) * pre_b * Hq,)](
            out, dout, delta, os_[0], os_[1], os_[2], dos[0], dos[1], dos[2], Hq, pre_l,
            HEAD_DIM_V=Ev, BLOCK_DV=meta["BLOCK_DV"], BLOCK_M=bm_pre, num_warps=4, num_stages=1)

        ptrs = (lse, delta, row_scale)
        scalars = (causal_off, scale * LOG2E, scale, *totals, dk0, dk1, dc3, dthr, dscale, lq_b, lk_b)
        # dQ first: it also writes the row renormalisation the dK/dV kernel reads
        dq_args = (q, k, v, dout, *ptrs, dq, *opt, *qs, *ks, *vs, *dos, *dqs, *opt_strides, Hq, group, Lq, Lk, *scalars)
        tkey = (info.index, mkey, lq_b, lk_b, tuple(t.dtype for t in opt))
        if "dq" in cfg:
            c = cfg["dq"]
            KB._attn_bwd_dq_kernel[(_cdiv(Lq, c["BLOCK_M"]) * B * Hq,)](*dq_args, **meta, **c)
        else:
            _launch_tuned("dq", KB, dq_args, meta, tkey, Lq, B * Hq, info)

        dkdv_args = (q, k, v, dout, *ptrs, dk, dv, *opt, *qs, *ks, *vs, *dos, *dks, *dvs, *opt_strides,
                     Hq, Hkv, group, Lq, Lk, *scalars)
        if "dkdv" in cfg:
            c = cfg["dkdv"]
            KB._attn_bwd_dkdv_kernel[(_cdiv(Lk, c["BLOCK_N"]) * B * Hkv,)](*dkdv_args, **meta, **c)
        else:
            _launch_tuned("dkdv", KB, dkdv_args, meta, tkey, Lk, B * Hkv, info)
    return dq, dk, dv


#: (family, device index, constexpr key, length buckets, optional-pointer dtypes) -> launch kwargs of the
#: autotune winner: later calls launch the plain kernel with a fixed grid (no autotuner work per call)
_TUNED = {}


def _launch_tuned(family: str, KB, args, meta: dict, tkey: tuple, rows: int, programs_per_block: int, info) -> None:
    """The autotuned launch of the dQ (``family="dq"``, blocks of ``BLOCK_M`` query rows) or dK/dV kernel
    (``"dkdv"``, blocks of ``BLOCK_N`` keys): through ``triton.autotune`` on the first use of ``tkey``,
    then the remembered winner directly. Both kernels overwrite their outputs, so the autotuner's
    benchmark launches leave correct results."""
    block = "BLOCK_M" if family == "dq" else "BLOCK_N"
    kw = _TUNED.get((family,) + tkey)
    if kw is None:
        tuner = KB.autotuned_bwd_kernel(family, info.capability)
        tuner[lambda mt: (_cdiv(rows, mt[block]) * programs_per_block,)](*args, **meta)
        _TUNED[(family,) + tkey] = {**meta, **KB.config_kwargs(tuner.best_config)}
        return
    kern = KB._attn_bwd_dq_kernel if family == "dq" else KB._attn_bwd_dkdv_kernel
    kern[(_cdiv(rows, kw[block]) * programs_per_block,)](*args, **kw)

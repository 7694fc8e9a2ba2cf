"""The ``triton`` backend of ``attention``: a Flash-style fused forward (``fastattn/kernels/attention/``).

What it runs: fp16, bf16, fp32 (fp32 with IEEE-fp32 dots, never TF32); head dims 8..256 (E and Ev may
differ; non-powers of two are padded and masked); GQA/MQA by index arithmetic; every mask form of
:class:`~fastattn.masks.NormalizedMask` (causal top-left/bottom-right, key lengths, a ``(B, Lk)`` key
mask, a dense bool/additive mask read through its broadcast strides) in one kernel family; q/k/v/out
with any strides whose last dim is contiguous, read and written in place. Autograd goes through the
recompute backward of the ``fastattn::attn_fwd`` custom op until the fused backward
(``triton_attention_bwd.attn_bwd_triton``) is wired in. Dropout runs in the prefill kernel when the
caller passes ``dropout_p, seed, offset`` to ``_attn_fwd_triton`` (contract: ``fastattn.dropout``).

On CUDA devices of compute capability >= 8.0 it autotunes per (bucketed Lq, bucketed Lk, head dims,
mask form, dtype). Under ``TRITON_INTERPRET=1`` it runs CPU tensors with one fixed small config; there
bf16 dots are computed on fp32-upcast operands, because the interpreter's bf16 ``tl.dot`` returns
wrong values (results are then more accurate than the GPU's bf16 path, never wrong).
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ...runtime import device_guard, device_info, triton_reason
from .base import AttnBackend
from .kernel_args import mask_args

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_DENSE_DTYPES = (torch.bool, torch.float16, torch.bfloat16, torch.float32)
MIN_HEAD_DIM, MAX_HEAD_DIM = 8, 256
_MAX_BLOCK = 128  # the tallest BLOCK_M / BLOCK_N in the config lists
LOG2E = 1.4426950408889634


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _prefill_meta(q_dtype, E, Ev, causal, has_kl, has_km, dense_mode, fast_scale, interpret, has_dropout=False):
    """The constexpr keyword arguments of ``_attn_fwd_kernel`` (cached per key by the caller)."""
    dot_upcast = interpret and q_dtype == torch.bfloat16
    return dict(HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=max(16, _next_pow2(E)), BLOCK_DV=max(16, _next_pow2(Ev)),
                IS_CAUSAL=causal, HAS_KEY_LENS=has_kl, HAS_KEY_MASK=has_km, DENSE_MODE=dense_mode,
                FAST_SCALE=fast_scale, DOT_UPCAST=dot_upcast, HAS_DROPOUT=has_dropout,
                INPUT_PRECISION="ieee" if (q_dtype == torch.float32 or dot_upcast) else "tf32", IS_VARLEN=False,
                # the exp2 argument is one FMA (qk * qk_scale - m): keep fusion on whatever the Triton
                # default (3.10 turns TRITON_DEFAULT_FP_FUSION off by default); the interpreter ignores it
                enable_fp_fusion=True)


#: per launch-shape key -> constexpr kwargs (+ the chosen tile once known): built once, reused per call
_META = {}
#: prefill autotune results: our key -> launch kwargs incl. the winning tile, so that later calls
#: launch the plain kernel with a fixed grid instead of going through the autotuner's per-call work
_TUNED = {}


def _attn_fwd_triton(inp, out: torch.Tensor, config: Optional[dict] = None, *, path: Optional[str] = None,
                     num_splits: Optional[int] = None, dropout_p: float = 0.0, seed: int = 0,
                     offset: int = 0) -> torch.Tensor:
    """Launch the fused forward: write ``softmax(q k^T * scale + mask) v`` into ``out`` and return the
    float32 natural-log LSE ``(B, Hq, Lq)`` (``-inf`` on rows with no visible key).

    ``inp`` is an :class:`~fastattn.inputs.AttentionInputs` (q ``(B, Hq, Lq, E)``, k ``(B, Hkv, Lk, E)``,
    v ``(B, Hkv, Lk, Ev)``, any strides with a contiguous last dim); ``out`` a ``(B, Hq, Lq, Ev)`` view
    in the input dtype with a contiguous last dim (e.g. ``(B, Lq, Hq, Ev)`` memory).

    Two kernels: ``Lq <= DECODE_MAX_LQ`` without a dense mask runs the decode pair
    (``fastattn/kernels/attention/decode.py``: GQA-packed, split-KV + combine), everything else the
    prefill kernel. ``path="prefill"|"decode"`` forces one (tests). ``config`` pins the tile
    (prefill: ``{"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"}``; decode: ``{"BLOCK_N",
    "num_warps", "num_stages"}``) instead of autotuning / the decode rule; ``num_splits`` forces the
    decode split count.

    ``dropout_p, seed, offset``: dropout in the prefill kernel (the decode pair declines it: with
    ``0 < dropout_p < 1`` short queries run the prefill kernel, and ``path="decode"`` raises). The
    keep mask is the counter-based contract of :mod:`fastattn.dropout`, keyed by ``(seed, offset)``;
    the backward (``triton_attention_bwd.attn_bwd_triton``) regenerates it from the same pair. The
    returned LSE is that of the undropped scores. ``dropout_p == 1`` writes zeros (and the LSE).
    ``inp.dropout_p`` is not read: the caller passes the dropout it drew seed and offset for.
    """
    q, k, v, m = inp.query, inp.key, inp.value, inp.mask
    B, Hq, Lq, E = q.shape
    _, Hkv, Lk, _ = k.shape
    Ev = v.shape[3]
    dtype = q.dtype
    ost = out.stride()
    lse = torch.empty((B, Hq, Lq), dtype=torch.float32, device=q.device)
    if B * Hq * Lq == 0:
        return lse
    if Lk == 0:  # no key at all: every row is empty
        out.zero_()
        lse.fill_(float("-inf"))
        return lse

    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1], got {dropout_p}")
    if dropout_p >= 1.0:  # everything dropped: the output is 0, the LSE that of the scores
        lse = _attn_fwd_triton(inp, out, config, path=path, num_splits=num_splits)
        out.zero_()
        return lse
    has_dropout = dropout_p > 0.0
    dense = m.dense
    if path is None:
        path = "decode" if (Lq <= DECODE_MAX_LQ and dense is None and config is None and not has_dropout) \
            else "prefill"
    elif path == "decode" and dense is not None:
        raise ValueError("the decode kernel has no dense mask; use path='prefill'")
    elif path == "decode" and has_dropout:
        raise ValueError("the decode kernel has no dropout; use path='prefill'")

    kl, km = m.key_lengths, m.key_mask
    a = mask_args(m, q, Lq, Lk)  # q stands in for absent optional tensors
    key_lens, stride_klb, key_mask, key_range, stride_kmb, stride_kmn = a[:6]
    causal, causal_off = m.causal, a.causal_off
    scale = float(inp.scale)
    qs, ks, vs = q.stride(), k.stride(), v.stride()
    dev = q.device
    info = device_info(dev)

    if path == "decode":
        _launch_decode(q, k, v, out, lse, key_lens, key_mask, key_range, qs, ks, vs, ost,
                       stride_klb, stride_kmb, stride_kmn, B, Hq, Hkv, Lq, Lk, E, Ev, causal is not None,
                       kl is not None, km is not None, causal_off, scale, info, config, num_splits)
        return lse

    dense, dense_mode, dstr = a.dense, a.dense_mode, a.dense_strides
    fast_scale = scale > 0.0 and dense_mode != 2
    interpret = info.capability is None
    if has_dropout:
        from ...dropout import philox_kernel_args
        drop = tuple(philox_kernel_args(seed, offset, dropout_p))
    else:
        drop = (0, 0, 0, 0, 1.0)

    args = (q, k, v, out, lse, key_lens, key_mask, key_range, dense, q, q,  # (no cu_seqlens: padded)
            qs[0], qs[1], qs[2], ks[0], ks[1], ks[2], vs[0], vs[1], vs[2], ost[0], ost[1], ost[2],
            stride_klb, stride_kmb, stride_kmn, dstr[0], dstr[1], dstr[2], dstr[3],
            Hq, Hq // Hkv, Lq, Lk, causal_off, scale * LOG2E, scale, 0, 0, *drop,
            _next_pow2(Lq), _next_pow2(Lk))
    mkey = (dtype, E, Ev, causal is not None, kl is not None, km is not None, dense_mode, fast_scale, interpret,
            has_dropout)
    meta = _META.get(mkey)
    if meta is None:
        meta = _META[mkey] = _prefill_meta(*mkey)

    _launch_prefill(args, meta, (info.index, mkey, dense.dtype, key_lens.dtype, args[-2], args[-1]), Lq,
                    B * Hq, info, dev, config, interpret)
    return lse


def _launch_prefill(args, meta: dict, tkey: tuple, rows: int, programs_per_block: int, info, dev,
                    config: Optional[dict], interpret: bool) -> None:
    """Launch ``_attn_fwd_kernel`` (padded or varlen) over ``cdiv(rows, BLOCK_M) * programs_per_block``
    programs. ``config`` pins the tile; the interpreter takes its one fixed tile; otherwise the first use
    of ``tkey`` goes through ``triton.autotune`` and the winner is kept in :data:`_TUNED`, so that later
    calls launch the plain kernel with a fixed grid (no autotuner argument dict or key building per call)."""
    from fastattn.kernels import attention as K
    if config is None and interpret:
        c = K.CONFIG_INTERPRET
        config = dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
    if config is not None:
        kw = {**meta, **config}
    else:
        kw = _TUNED.get(tkey)
        if kw is None:
            tuner = K.autotuned_kernel(info.capability)
            with device_guard(dev):
                tuner[lambda mt: (triton_cdiv(rows, mt["BLOCK_M"]) * programs_per_block,)](*args, **meta)
            best = tuner.best_config
            _TUNED[tkey] = {**meta, **best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}
            return
    with device_guard(dev):  # Triton launches on the current device's stream
        K._attn_fwd_kernel[(triton_cdiv(rows, kw["BLOCK_M"]) * programs_per_block,)](*args, **kw)


def _attn_varlen_fwd_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                            cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int,
                            out: torch.Tensor, *, causal: bool = False, scale: Optional[float] = None,
                            config: Optional[dict] = None, dropout_p: float = 0.0, seed: int = 0,
                            offset: int = 0) -> torch.Tensor:
    """Packed variable-length forward (the prefill kernel with ``IS_VARLEN``): write into ``out`` and
    return the float32 natural-log LSE ``(Hq, total_q)`` (``-inf`` on rows with no visible key).

    ``q (total_q, Hq, E)``, ``k (total_k, Hkv, E)``, ``v (total_k, Hkv, Ev)``, ``out (total_q, Hq, Ev)``
    in q's dtype: any strides with a contiguous last dim; ``cu_seqlens_q/k`` int32 ``(B + 1,)`` on the
    tensors' device (values are clamped into ``[0, total]`` in the kernel, so bad ones cannot address
    memory outside the tensors); ``max_seqlen_q`` >= every query length (it sizes the grid: rows past
    it are not computed), ``max_seqlen_k`` only buckets the autotuner. Sequence ``b``'s rows attend its
    keys only; ``causal`` is bottom-right per sequence. Rows of empty sequences are not written; rows
    with no visible key get 0. ``scale=None``: ``1/sqrt(E)``. ``config`` pins the tile as in
    :func:`_attn_fwd_triton`. ``dropout_p, seed, offset``: dropout by the packed-row keep mask of
    :mod:`fastattn.dropout` (``dropout_keep_mask_varlen``; ``triton_bwd.attn_varlen_bwd_triton``
    regenerates it); the LSE is that of the undropped scores; ``dropout_p == 1`` writes zeros.
    Validation of the user-facing contract is the caller's.
    """
    total_q, Hq, E = q.shape
    total_k, Hkv, _ = k.shape
    Ev = v.shape[2]
    B = cu_seqlens_q.numel() - 1
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if t.dtype != torch.int32 or t.dim() != 1 or t.numel() != B + 1 or t.device != q.device:
            raise ValueError(f"{name} must be an int32 (B + 1,) tensor on {q.device} with B = {B}; got "
                             f"{t.dtype} {tuple(t.shape)} on {t.device}")
    if out.shape != (total_q, Hq, Ev) or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(f"out must be a {q.dtype} tensor of shape {(total_q, Hq, Ev)} on {q.device}; got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    for name, t in (("query", q), ("key", k), ("value", v), ("out", out)):
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(f"{name} must have a contiguous last dim (stride 1), got strides {t.stride()}")
    lse = torch.empty((Hq, total_q), dtype=torch.float32, device=q.device)
    if B <= 0 or total_q == 0 or max_seqlen_q <= 0:
        return lse
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1], got {dropout_p}")
    if dropout_p >= 1.0:  # everything dropped: the output is 0, the LSE that of the scores
        lse = _attn_varlen_fwd_triton(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, out,
                                      causal=causal, scale=scale, config=config)
        out.zero_()
        return lse
    has_dropout = dropout_p > 0.0
    if has_dropout:
        from ...dropout import philox_kernel_args
        drop = tuple(philox_kernel_args(seed, offset, dropout_p))
    else:
        drop = (0, 0, 0, 0, 1.0)
    scale = float(E ** -0.5 if scale is None else scale)
    info = device_info(q.device)
    interpret = info.capability is None
    mkey = (q.dtype, E, Ev, bool(causal), False, False, 0, scale > 0.0, interpret, has_dropout)
    meta = _META.get((mkey, "varlen"))
    if meta is None:
        meta = _META[(mkey, "varlen")] = {**_prefill_meta(*mkey), "IS_VARLEN": True}
    qs, ks, vs, ost = q.stride(), k.stride(), v.stride(), out.stride()
    args = (q, k, v, out, lse, q, q, q, q, cu_seqlens_q, cu_seqlens_k,  # no key lengths/mask/dense mask
            0, qs[1], qs[0], 0, ks[1], ks[0], 0, vs[1], vs[0], 0, ost[1], ost[0],
            0, 0, 0, 0, 0, 0, 0,
            Hq, Hq // Hkv, max_seqlen_q, max(max_seqlen_k, 0), 0, scale * LOG2E, scale, total_q, total_k,
            *drop,
            _next_pow2(max_seqlen_q), _next_pow2(max(max_seqlen_k, 1)))
    _launch_prefill(args, meta, (info.index, mkey, "varlen", args[-2], args[-1]), max_seqlen_q, B * Hq, info,
                    q.device, config, interpret)
    return lse


DECODE_MAX_LQ = 16  # == fastattn.kernels.attention.DECODE_MAX_LQ (checked in the tests)


def _launch_decode(q, k, v, out, lse, key_lens, key_mask, key_range, qs, ks, vs, ost,
                   stride_klb, stride_kmb, stride_kmn, B, Hq, Hkv, Lq, Lk, E, Ev, causal, has_kl, has_km,
                   causal_off, scale, info, config, num_splits):
    """The decode pair: GQA-packed split-KV kernel, then (``num_splits > 1``) the combine kernel."""
    from fastattn.kernels import attention as KD
    group = Hq // Hkv
    dtype = q.dtype
    interpret = info.capability is None
    dkey = (dtype, E, Ev, group, Lq, causal, has_kl, has_km, interpret, info.index)
    st = _META.get(dkey)
    if st is None:
        bm = KD.decode_block_m(group, Lq, q.element_size())
        bd, bdv = max(16, _next_pow2(E)), max(16, _next_pow2(Ev))
        bn, warps, stages = KD.decode_config(bm, bd, bdv, q.element_size(), info.capability, info.smem_per_block)
        dot_upcast = interpret and dtype == torch.bfloat16
        meta = dict(HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=bd, BLOCK_DV=bdv, IS_CAUSAL=causal,
                    HAS_KEY_LENS=has_kl, HAS_KEY_MASK=has_km, DOT_UPCAST=dot_upcast,
                    INPUT_PRECISION="ieee" if (dtype == torch.float32 or dot_upcast) else "tf32",
                    BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages, enable_fp_fusion=True)
        st = _META[dkey] = (meta, triton_cdiv(group * Lq, bm), bdv)
    meta, num_m, bdv = st
    if config is not None:
        meta = {**meta, **config}
    programs = B * Hkv * num_m
    R = B * Hq * Lq
    if num_splits is None:
        num_splits = KD.choose_num_splits(programs, info.n_sm, Lk)
    elif not 1 <= num_splits <= KD.MAX_SPLITS:
        raise ValueError(f"num_splits must be in 1..{KD.MAX_SPLITS}, got {num_splits}")
    split = num_splits > 1
    if split:
        ws = torch.empty(num_splits * R * (Ev + 1), dtype=torch.float32, device=q.device)
        ws_lse_off = num_splits * R * Ev
    else:
        ws, ws_lse_off = lse, 0  # unused
    dev = q.device

    def go():
        KD._attn_decode_kernel[(programs, num_splits)](
            q, k, v, out, lse, ws, key_lens, key_mask, key_range,
            qs[0], qs[1], qs[2], ks[0], ks[1], ks[2], vs[0], vs[1], vs[2], ost[0], ost[1], ost[2],
            stride_klb, stride_kmb, stride_kmn,
            B, Hq, Hkv, group, Lq, Lk, causal_off, scale * LOG2E, num_splits, ws_lse_off,
            SPLIT=split, **meta)
        if split:
            bs = _next_pow2(num_splits)
            KD._attn_combine_kernel[(R,)](
                ws, out, lse, Hq, Lq, R, num_splits, ws_lse_off, ost[0], ost[1], ost[2],
                HEAD_DIM_V=Ev, BLOCK_DV=bdv, BLOCK_S=bs, num_warps=KD.combine_warps(bs, bdv), num_stages=1)
    with device_guard(dev):
        go()


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


class TritonAttention(AttnBackend):
    name = "triton"
    DTYPES = _DTYPES
    DTYPE_HINT = " (float64 runs on the torch backend)"
    DEVICES = ("cuda", "interpret")
    MIN_CAPABILITY = (8, 0)
    HEAD_DIMS = range(MIN_HEAD_DIM, MAX_HEAD_DIM + 1)
    #: fused FlashAttention-2-style backward (kernels/attention/bwd.py): deterministic, no atomics
    SUPPORTS_BACKWARD = True
    #: counter-based dropout in the prefill forward and the backward (fastattn.dropout's contract)
    SUPPORTS_DROPOUT = True

    def probe(self) -> Optional[str]:
        why = triton_reason()  # triton importable; a GPU >= sm_80 or TRITON_INTERPRET=1
        if why is not None:
            return why
        try:
            from fastattn.kernels import attention  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return f"the triton attention kernels failed to import: {type(e).__name__}: {e}"
        return None

    def kernel_reasons(self, inp) -> List[str]:
        q, k, v, dense = inp.query, inp.key, inp.value, inp.mask.dense
        reasons: List[str] = []
        qs, ks, vs = q.stride(), k.stride(), v.stride()
        for name, t, st in (("query", q, qs), ("key", k, ks), ("value", v, vs)):
            if st[3] != 1 and t.shape[3] > 1:
                reasons.append(f"{name} has last-dim stride {st[3]}; the triton kernel reads rows in place "
                               "and needs a contiguous last dim (stride 1); pass .contiguous() or use another backend")
        if dense is not None and dense.dtype not in _DENSE_DTYPES:
            reasons.append(f"attn_mask dtype {dense.dtype} is not supported by the triton kernel "
                           "(bool, float16, bfloat16, float32)")
        kl = inp.mask.key_lengths
        if kl is not None and (kl.is_floating_point() or kl.dtype == torch.bool or kl.is_complex()):
            reasons.append(f"key_lengths dtype {kl.dtype} is not an integer type")
        rows = [("query", qs[2]), ("key", ks[2]), ("value", vs[2])]
        if dense is not None:
            rows += [("attn_mask", abs(dense.stride(2)) + abs(dense.stride(3)))]
        return reasons + tile_offset_reasons(rows) + grid_reasons(q.shape[0], q.shape[1], q.shape[2], "Lq")

    def launch(self, inp, out: torch.Tensor, rng=(0, 0)) -> torch.Tensor:
        if inp.dropout_p > 0:
            return _attn_fwd_triton(inp, out, dropout_p=inp.dropout_p, seed=rng[0], offset=rng[1])
        return _attn_fwd_triton(inp, out)

    def launch_bwd(self, inp, out, lse, dout, rng=(0, 0)):
        from .triton_bwd import attn_bwd_triton
        return attn_bwd_triton(inp.query, inp.key, inp.value, out, lse, dout, inp.mask, inp.scale,
                               dropout_p=inp.dropout_p, seed=rng[0], offset=rng[1])

    def check_launch(self, inp, out: torch.Tensor, rng=(0, 0)) -> torch.Tensor:
        tiles = None if _decode_path(inp) else _check_tiles(inp, "fwd")
        return pinned_or_default(
            tiles, lambda: _attn_fwd_triton(inp, out, tiles, dropout_p=inp.dropout_p, seed=rng[0], offset=rng[1]),
            lambda: type(self).launch(self, inp, out, rng))

    def check_launch_bwd(self, inp, out, lse, dout, rng=(0, 0)):
        from .triton_bwd import attn_bwd_triton
        tiles = _check_tiles(inp, "bwd")
        return pinned_or_default(
            tiles, lambda: attn_bwd_triton(inp.query, inp.key, inp.value, out, lse, dout, inp.mask, inp.scale,
                                           dropout_p=inp.dropout_p, seed=rng[0], offset=rng[1], config=tiles),
            lambda: type(self).launch_bwd(self, inp, out, lse, dout, rng))

    def kernel_variant(self, inp):
        if _decode_path(inp):
            return ("decode", f"q{inp.Lq}")  # the decode kernel's row tile depends on group * Lq
        return ("prefill",) if inp.scale > 0 else ("prefill", "scale<=0")  # FAST_SCALE

    def self_check_lengths(self, inp):
        if _decode_path(inp):
            return ((inp.Lq, 72), (inp.Lq, 300))  # one KV split; split-KV + the combine kernel
        return ((40, 72),)


def tile_offset_reasons(rows) -> List[str]:
    """Tile offsets inside one (sequence, head) are 32-bit: a row stride times a tile height must fit.
    ``rows``: ``(tensor name, sequence stride in elements)``."""
    return [f"{name} has a sequence stride of {st} elements; the triton kernel's 32-bit tile offsets need "
            f"stride * {_MAX_BLOCK} < 2^31" for name, st in rows if abs(st) * _MAX_BLOCK >= 2 ** 31]


def grid_reasons(B: int, Hq: int, Lq: int, lq_name: str) -> List[str]:
    """The prefill grid (``B * Hq * ceil(Lq / 64)`` programs) and the row count must stay below 2^31."""
    programs = triton_cdiv(Lq, 64) * B * Hq
    if programs >= 2 ** 31 or B * Hq * Lq >= 2 ** 31:
        return [f"B*Hq*{lq_name} = {B * Hq * Lq} rows (B*Hq*ceil({lq_name}/64) = {programs} programs) exceeds the "
                "2^31-1 grid limit"]
    return []


def pinned_or_default(tiles: Optional[dict], pinned, default):
    """The self-check's launch (``check_launch*``): on a GPU ``tiles`` pins the smallest fitting tile(s),
    one compile instead of autotuning the check's small shape; if that tile does not build here, the
    real calls' path (``default``) decides."""
    if tiles is not None:
        try:
            return pinned()
        except Exception:  # noqa: BLE001 - the pinned tile does not build here
            pass
    return default()


def _check_tiles(inp, direction: str) -> Optional[dict]:
    """Fixed tiles for the on-device self-check on a GPU: the smallest tile of each kernel's config list
    that the resource model keeps (forward) / the smallest (backward kernels): one compile, which the real
    calls' autotuning shares, instead of autotuning the check's own small shape. ``None`` under the
    interpreter (one fixed tile there anyway)."""
    if direction == "fwd":
        dense = inp.mask.dense
        dense_mode = 0 if dense is None else (1 if dense.dtype == torch.bool else 2)
        return check_tiles_fwd(inp.device, inp.E, inp.Ev, inp.query.element_size(), dense_mode,
                               inp.mask.key_mask is not None)
    cap = device_info(inp.device).capability
    if cap is None:
        return None
    from fastattn.kernels import attention as K
    return {family: K.config_kwargs(min(K.bwd_configs_for(family, cap), key=_tile_size)) for family in ("dkdv", "dq")}


def check_tiles_fwd(device, E: int, Ev: int, element_size: int, dense_mode: int = 0,
                    has_key_mask: bool = False) -> Optional[dict]:
    """The prefill kernel's self-check tile (see :func:`_check_tiles`); also the varlen mode's."""
    cap = device_info(device).capability
    if cap is None:
        return None
    from fastattn.kernels import attention as K
    bd, bdv = max(16, _next_pow2(E)), max(16, _next_pow2(Ev))
    smem = device_info(device).smem_per_block
    confs = K.configs_for(cap)
    fit = [c for c in confs if K.keep(c, cap, bd) and K.config_fits(c, bd, bdv, element_size, smem, dense_mode,
                                                                  has_key_mask)]
    return K.config_kwargs(min(fit or confs, key=_tile_size))


def _tile_size(c):
    return (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)


def _decode_path(inp) -> bool:
    """Whether ``_attn_fwd_triton`` runs ``inp`` on the decode kernels (as its own routing decides)."""
    return inp.Lq <= DECODE_MAX_LQ and inp.mask.dense is None and not inp.dropout_p > 0


__all__ = ["TritonAttention", "_attn_fwd_triton", "_attn_varlen_fwd_triton"]

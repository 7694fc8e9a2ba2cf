"""The ``triton`` backend of ``attention``: a Flash-style fused forward (``fastattn/kernels/attention.py``).

What it runs: fp16, bf16, fp32 (fp32 with IEEE-fp32 dots, never TF32); head dims 8..256 (E and Ev may
differ; non-powers of two are padded and masked); GQA/MQA by index arithmetic; every mask form of
:class:`~fastattn.masks.NormalizedMask` (causal top-left/bottom-right, key lengths, a ``(B, Lk)`` key
mask, a dense bool/additive mask read through its broadcast strides) in one kernel family; q/k/v/out
with any strides whose last dim is contiguous, read and written in place. Forward only: autograd goes
through the recompute backward of the ``fastattn::attn_fwd`` custom op; dropout is not in the kernel.

On CUDA devices of compute capability >= 8.0 it autotunes per (bucketed Lq, bucketed Lk, head dims,
mask form, dtype). Under ``TRITON_INTERPRET=1`` it runs CPU tensors with one fixed small config; there
bf16 dots are computed on fp32-upcast operands, because the interpreter's bf16 ``tl.dot`` returns
wrong values (results are then more accurate than the GPU's bf16 path, never wrong).
"""

from __future__ import annotations

import os
from typing import List, Optional

import torch

from .base import KernelBackend, device_reasons

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_DENSE_DTYPES = (torch.bool, torch.float16, torch.bfloat16, torch.float32)
MIN_HEAD_DIM, MAX_HEAD_DIM = 8, 256
_MAX_BLOCK = 128  # the tallest BLOCK_M / BLOCK_N in the config lists
LOG2E = 1.4426950408889634


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _key_ranges(key_mask_u8: torch.Tensor) -> torch.Tensor:
    """Per batch row of a ``(B, Lk)`` key mask: ``[first visible, last visible + 1)`` as a contiguous
    int32 ``(B, 2)`` tensor (``(Lk, 0)`` for a row with no visible key). On device, no host sync: the
    ``fastattn._C.key_ranges`` kernel on CUDA when built, else two torch reductions."""
    B, Lk = key_mask_u8.shape
    dev = key_mask_u8.device
    if dev.type == "cuda":
        from .._ext import load_ext
        ext, _ = load_ext()
        if ext is not None and hasattr(ext, "key_ranges"):
            out = torch.empty((B, 2), dtype=torch.int32, device=dev)
            ext.key_ranges(key_mask_u8.data_ptr(), B, Lk, key_mask_u8.stride(0), key_mask_u8.stride(1),
                           out.data_ptr(), torch.cuda.current_stream(dev).cuda_stream)
            return out
    visible = key_mask_u8 != 0
    ar = torch.arange(Lk, device=dev, dtype=torch.int32)
    start = torch.where(visible, ar, Lk).amin(dim=1)
    end = torch.where(visible, ar + 1, 0).amax(dim=1)
    return torch.stack((start, end), dim=1).to(torch.int32).contiguous()


def _attn_fwd_triton(inp, out: torch.Tensor, config: Optional[dict] = None) -> torch.Tensor:
    """Launch the fused forward: write ``softmax(q k^T * scale + mask) v`` into ``out`` and return the
    float32 natural-log LSE ``(B, Hq, Lq)`` (``-inf`` on rows with no visible key).

    ``inp`` is an :class:`~fastattn.inputs.AttentionInputs` (q ``(B, Hq, Lq, E)``, k ``(B, Hkv, Lk, E)``,
    v ``(B, Hkv, Lk, Ev)``, any strides with a contiguous last dim); ``out`` a ``(B, Hq, Lq, Ev)`` view
    in the input dtype with a contiguous last dim (e.g. ``(B, Lq, Hq, Ev)`` memory). ``config``
    (``{"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"}``) pins the tile instead of autotuning (tests;
    the interpreter always uses :data:`fastattn.kernels.attention.CONFIG_INTERPRET` unless given one).
    """
    from fastattn.kernels import attention as K

    q, k, v, m = inp.query, inp.key, inp.value, inp.mask
    B, Hq, Lq, E = q.shape
    Hkv, Lk, Ev = k.shape[1], k.shape[2], v.shape[3]
    if tuple(out.shape) != (B, Hq, Lq, Ev) or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(f"out must be a {q.dtype} tensor of shape {(B, Hq, Lq, Ev)} on {q.device}; got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    if Ev > 1 and out.stride(3) != 1:
        raise ValueError(f"out must have a contiguous last dim (stride 1), got strides {out.stride()}")
    lse = torch.empty((B, Hq, Lq), dtype=torch.float32, device=q.device)
    if B * Hq * Lq == 0:
        return lse
    if Lk == 0:  # no key at all: every row is empty
        out.zero_()
        lse.fill_(float("-inf"))
        return lse

    dummy = q  # stands in for absent optional tensors; never dereferenced (constexpr-disabled)
    key_lens, stride_klb = dummy, 0
    key_mask, key_range, stride_kmb, stride_kmn = dummy, dummy, 0, 0
    dense, dstr, dense_mode = dummy, (0, 0, 0, 0), 0
    if m.key_lengths is not None:
        key_lens, stride_klb = m.key_lengths, m.key_lengths.stride(0)
    if m.key_mask is not None:
        key_mask = m.key_mask.view(torch.uint8)
        stride_kmb, stride_kmn = key_mask.stride()
        key_range = _key_ranges(key_mask)
    if m.dense is not None:
        dense = m.dense.view(torch.uint8) if m.dense.dtype == torch.bool else m.dense
        dense_mode = 1 if m.dense.dtype == torch.bool else 2
        dstr = dense.stride()
    causal_off = 0 if m.causal in (None, "top_left") else Lk - Lq

    scale = float(inp.scale)
    fast_scale = scale > 0.0 and dense_mode != 2
    interpret = _interpreting()
    dot_upcast = interpret and q.dtype == torch.bfloat16
    precision = "ieee" if (q.dtype == torch.float32 or dot_upcast) else "tf32"

    args = (q, k, v, out, lse, key_lens, key_mask, key_range, dense,
            q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2),
            out.stride(0), out.stride(1), out.stride(2),
            stride_klb, stride_kmb, stride_kmn,
            dstr[0], dstr[1], dstr[2], dstr[3],
            Hq, Hq // Hkv, Lq, Lk, causal_off, scale * LOG2E, scale,
            _next_pow2(Lq), _next_pow2(Lk))
    meta = dict(HEAD_DIM=E, HEAD_DIM_V=Ev, BLOCK_D=max(16, _next_pow2(E)), BLOCK_DV=max(16, _next_pow2(Ev)),
                IS_CAUSAL=m.causal is not None, HAS_KEY_LENS=m.key_lengths is not None,
                HAS_KEY_MASK=m.key_mask is not None, DENSE_MODE=dense_mode, FAST_SCALE=fast_scale,
                DOT_UPCAST=dot_upcast, INPUT_PRECISION=precision,
                # the exp2 argument is one FMA (qk * qk_scale - m): keep fusion on whatever the Triton
                # default (3.10 turns TRITON_DEFAULT_FP_FUSION off by default); the interpreter ignores it
                enable_fp_fusion=True)

    def grid(meta_):
        return (triton_cdiv(Lq, meta_["BLOCK_M"]) * B * Hq,)

    if config is None and interpret:
        c = K.CONFIG_INTERPRET
        config = dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
    if q.device.type == "cuda":
        kern = K._attn_fwd_kernel if config is not None else K.autotuned_kernel(_capability(q.device))
        config = config or {}
        idx = q.device.index
        if idx is None or idx == torch.cuda.current_device():
            kern[grid](*args, **meta, **config)
        else:  # Triton launches on the current device's stream
            with torch.cuda.device(q.device):
                kern[grid](*args, **meta, **config)
    else:
        K._attn_fwd_kernel[grid](*args, **meta, **config)
    return lse


_CAPS = {}


def _capability(device: torch.device):
    """``torch.cuda.get_device_capability``, cached per device index (it is asked on every launch)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    cap = _CAPS.get(idx)
    if cap is None:
        cap = _CAPS[idx] = torch.cuda.get_device_capability(idx)
    return cap


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


class TritonAttention(KernelBackend):
    name = "triton"
    op = "attention"

    def _probe(self) -> Optional[str]:
        try:
            import triton  # noqa: F401
        except ImportError as e:
            return f"triton is not installed ({e}); pip install triton (Linux)"
        try:
            from fastattn.kernels import attention  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return f"the triton attention kernels failed to import: {type(e).__name__}: {e}"
        if _interpreting():
            return None
        if not torch.cuda.is_available():
            return ("no CUDA device visible (torch.cuda.is_available() is False); set TRITON_INTERPRET=1 "
                    "to run the Triton kernels on CPU tensors")
        caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
        if not any(c >= (8, 0) for c in caps):
            return f"needs a GPU of compute capability >= 8.0 (sm_80); visible: {caps}"
        return None

    def not_supported_reasons(self, inp) -> List[str]:
        reasons = device_reasons(inp.device, interpret_ok=True)
        if inp.device.type == "cuda" and not reasons:
            cap = torch.cuda.get_device_capability(inp.device)
            if cap < (8, 0):
                reasons.append(f"{inp.device} has compute capability {cap[0]}.{cap[1]}; the triton kernel needs >= 8.0")
        if inp.dtype not in _DTYPES:
            reasons.append(f"dtype {str(inp.dtype).replace('torch.', '')} is not supported by the triton kernel "
                           "(float16, bfloat16, float32; float64 runs on the torch backend)")
        for what, d in (("query/key head dim E", inp.E), ("value head dim Ev", inp.Ev)):
            if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
                reasons.append(f"{what}={d} is outside the supported {MIN_HEAD_DIM}..{MAX_HEAD_DIM}")
        for name, t in (("query", inp.query), ("key", inp.key), ("value", inp.value)):
            if t.shape[-1] > 1 and t.stride(-1) != 1:
                reasons.append(f"{name} has last-dim stride {t.stride(-1)}; the triton kernel reads rows in place "
                               "and needs a contiguous last dim (stride 1); pass .contiguous() or use another backend")
        dense = inp.mask.dense
        if dense is not None and dense.dtype not in _DENSE_DTYPES:
            reasons.append(f"attn_mask dtype {dense.dtype} is not supported by the triton kernel "
                           "(bool, float16, bfloat16, float32)")
        kl = inp.mask.key_lengths
        if kl is not None and (kl.is_floating_point() or kl.dtype == torch.bool or kl.is_complex()):
            reasons.append(f"key_lengths dtype {kl.dtype} is not an integer type")
        # tile offsets inside one (batch, head) are 32-bit: a row stride times a tile height must fit
        rows = [("query", inp.query.stride(2)), ("key", inp.key.stride(2)), ("value", inp.value.stride(2))]
        if dense is not None:
            rows += [("attn_mask", abs(dense.stride(2)) + abs(dense.stride(3)))]
        for name, st in rows:
            if abs(st) * _MAX_BLOCK >= 2 ** 31:
                reasons.append(f"{name} has a sequence stride of {st} elements; the triton kernel's 32-bit tile "
                               f"offsets need stride * {_MAX_BLOCK} < 2^31")
        programs = triton_cdiv(inp.Lq, 64) * inp.B * inp.Hq
        if programs >= 2 ** 31:
            reasons.append(f"B*Hq*ceil(Lq/64) = {programs} programs exceeds the 2^31-1 grid limit")
        return reasons

    def launch(self, inp, out: torch.Tensor) -> torch.Tensor:
        return _attn_fwd_triton(inp, out)


__all__ = ["TritonAttention", "_attn_fwd_triton"]

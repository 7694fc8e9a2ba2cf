"""The ``torch`` backend of attention: PyTorch's own ``scaled_dot_product_attention`` with fastattn's
semantics on top. It runs everywhere (CPU, any GPU, float64), supports every mask form, dropout and
autograd, and is what a CPU user gets.

Compact masks (``KeyPadding``, bottom-right causal) are materialised into one SDPA mask here: this is
the portable path, not the fast one. Rows with no visible key are made visible to SDPA (so that no NaN
reaches the forward or the backward) and then zeroed, which is exactly the contract's "empty row -> 0".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...inputs import AttentionInputs
from .base import AttnBackend


_ZERO_EMPTY = {}


def sdpa_zeroes_empty_rows(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether PyTorch's SDPA on this device type and dtype already gives fastattn's empty-row result
    (output exactly 0, gradients 0, never NaN) for a fully masked row, with a bool and with a ``-inf``
    float mask. Probed once per (CPU, dtype) on a tiny problem; CUDA keeps the explicit fix-ups (which
    SDPA kernel runs there depends on the shape, so a tiny probe would prove nothing)."""
    if device.type != "cpu":
        return False
    ok = _ZERO_EMPTY.get(dtype)
    if ok is None:
        ok = True
        try:
            with torch.enable_grad():
                g = torch.Generator().manual_seed(0)
                q, k, v = (torch.randn(1, 2, 3, 8, generator=g).to(dtype).requires_grad_(True) for _ in range(3))
                keep = torch.ones(1, 1, 3, 3, dtype=torch.bool)
                keep[..., 1, :] = False
                bias = torch.zeros(1, 1, 3, 3, dtype=dtype).masked_fill(~keep, float("-inf"))
                for m in (keep, bias):
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
                    dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
                    ok = ok and bool((out[..., 1, :] == 0).all()) and bool((dq[..., 1, :] == 0).all()) \
                        and all(bool(t.isfinite().all()) for t in (out, dq, dk, dv))
        except Exception:  # noqa: BLE001 - any failure: keep the explicit fix-ups
            ok = False
        _ZERO_EMPTY[dtype] = ok
    return ok


def _sdpa_mask(inp: AttentionInputs):
    """Return ``(attn_mask, is_causal, row_has)`` for SDPA; ``row_has`` is ``None`` when no row can be
    empty, else a bool ``(B|1, Hq|1, Lq, 1)`` that the output is multiplied by.

    Cached on the mask object (an HF forward builds one and every layer reuses it) unless the result is
    part of an autograd graph (a float mask that requires grad). On CPU tensors, where reading a value
    costs no device sync, ``row_has`` is dropped when every row has a visible key (the usual padded
    batch): no per-layer multiply and copy for a fix-up that changes nothing."""
    m = inp.mask
    if m.is_none:
        return None, False, None
    key = (inp.B, inp.Lq, inp.Lk, inp.device, inp.dtype, float(inp.scale) > 0, torch.is_inference_mode_enabled())
    cache = m.__dict__.get("_sdpa_mask")
    if cache is not None and cache[0] == key:
        return cache[1]
    res = _build_sdpa_mask(inp)
    attn_mask, is_causal, row_has = res
    if row_has is not None and inp.device.type == "cpu" and bool(row_has.all()):
        res = (attn_mask, is_causal, None)  # keep | ~row_has == keep: the mask is already exact
    if not any(isinstance(t, torch.Tensor) and t.requires_grad for t in res):
        object.__setattr__(m, "_sdpa_mask", (key, res))
    return res


def _build_sdpa_mask(inp: AttentionInputs):
    m = inp.mask
    if m.causal == "top_left" and m.key_lengths is None and m.key_mask is None and m.dense is None \
            and inp.scale > 0:
        # row i always sees key 0: no empty rows. Only for scale > 0: SDPA's is_causal path (torch 2.13
        # CPU) scales its -inf fill too and returns NaN for scale <= 0; the explicit mask below does not.
        return None, True, None
    keep = m.keep(inp.B, inp.Lq, inp.Lk, inp.device)
    bias = m.bias()
    if (bias is None or bias.dtype == inp.dtype) and sdpa_zeroes_empty_rows(inp.device, inp.dtype):
        if bias is None:  # SDPA itself gives 0 on fully masked rows here: pass the mask as is
            return keep, False, None
        return (bias if keep is None else bias.masked_fill(~keep, float("-inf"))), False, None
    if bias is not None:
        neginf = torch.isneginf(bias)
        keep = ~neginf if keep is None else keep & ~neginf
        if bias.dtype != inp.dtype:  # float32 bias on half inputs: keep finite values finite
            fi = torch.finfo(inp.dtype)
            bias = torch.where(neginf, float("-inf"), bias.clamp(fi.min, fi.max)).to(inp.dtype)
    row_has = keep.any(dim=-1, keepdim=True)
    keep = keep | ~row_has  # an empty row attends everywhere (finite), then is zeroed
    if bias is None:
        return keep, False, row_has
    return bias.masked_fill(~keep, float("-inf")).masked_fill(~row_has, 0.0), False, row_has


#: head dim -> SDPA's default scale 1/sqrt(E), as the float fastattn computes it (the same double)
_DEFAULT_SCALE = {E: 1.0 / math.sqrt(E) for E in range(1, 513)}


class TorchAttention(AttnBackend):
    name = "torch"
    DEVICES = ("any",)
    SUPPORTS_BACKWARD = True
    SUPPORTS_DROPOUT = True

    def run(self, inp: AttentionInputs, out_blhd: bool = False, rng=None) -> torch.Tensor:
        m = inp.mask
        if m.is_none:  # the common case in one call
            q, k, v = inp.query, inp.key, inp.value
            E = q.shape[-1]
            if not inp.dropout_p and q.shape[1] == k.shape[1] and inp.scale == _DEFAULT_SCALE.get(E):
                res = F.scaled_dot_product_attention(q, k, v)  # SDPA's defaults: no keyword parsing
            else:
                res = F.scaled_dot_product_attention(q, k, v, dropout_p=inp.dropout_p, scale=inp.scale,
                                                     enable_gqa=inp.Hq != inp.Hkv)
        else:
            attn_mask, is_causal, row_has = _sdpa_mask(inp)
            res = F.scaled_dot_product_attention(inp.query, inp.key, inp.value, attn_mask=attn_mask,
                                                 dropout_p=inp.dropout_p, is_causal=is_causal, scale=inp.scale,
                                                 enable_gqa=inp.Hq != inp.Hkv)
            if row_has is not None:
                res = res * row_has.to(res.dtype)  # exactly 0 on empty rows (their values are finite)
        if out_blhd:
            res = res.transpose(1, 2).contiguous().transpose(1, 2)
        return res

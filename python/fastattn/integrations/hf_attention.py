"""The ``"fastattn"`` attention implementation for Hugging Face transformers (5.17 to 5.x).

Two functions are registered under the name ``"fastattn"``:

* :func:`fastattn_mask` with ``transformers.masking_utils.AttentionMaskInterface``: called once per
  model forward by ``create_causal_mask`` / ``create_bidirectional_mask``. It returns the mask in the
  form the fused kernels skip work with:

  - ``None``: HF gave no padding mask and there is nothing to truncate (plain causal or full
    attention): no mask at all;
  - a *compact* 2-D bool key mask ``(B, Lm)`` (``True`` = visible) over the first ``Lm`` keys, the form
    flash-attention masks take in transformers (models that support FA2 pass it through untouched): HF's
    padding mask handed over as it is, **never inspected** (no device->host sync per forward, nothing
    data-dependent under ``torch.compile``); the kernels take it as ``KeyPadding(mask=)`` and find each
    sequence's visible key range on the device. Keys at ``j >= Lm`` are never visible (keys after the
    last query's causal limit) and are not read at all. A causal mask is applied *analytically*, aligned
    bottom-right over those ``Lm`` keys (exactly the ``kv_idx <= q_idx`` of HF with the cache offset). A
    static cache's decode step (``Lq = 1``, offset given as a device tensor) folds ``kv_idx <= q_offset``
    into the key mask on the device, over the whole cache. The mask function attaches ``_fastattn_spec``
    to the returned tensor (causal or not; all-True, i.e. only a truncation) so the attention function
    knows what it means;
  - a dense ``(B, 1, Lq, Lk)`` bool mask from HF's own ``sdpa_mask`` whenever the compact form cannot
    express the mask: sliding windows, chunked attention, custom ``and_mask``/``or_mask`` functions,
    packed sequences, block-wise overlays, a ``kv_offset`` (sliding caches), a static-cache prefill
    (``Lq > 1`` with a tensor offset: the causal alignment depends on the offset's value).

* :func:`fastattn_attention_forward` with ``transformers.AttentionInterface``:
  ``fn(module, query (B,Hq,Lq,D), key (B,Hkv,Lk,D), value (B,Hkv,Lk,Dv), attention_mask, scaling, dropout,
  **kw) -> (out (B,Lq,Hq,Dv), weights | None)``. q/k/v views are read in place (GQA without repeat),
  ``scaling`` is used exactly as given, dropout is applied when ``module.training``. Features the fused
  path does not cover run through an eager path *for that call*: ``output_attentions=True`` (returns the
  attention weights, which HF's sdpa cannot), ``head_mask``, ``softcap``.

Mask semantics when the mask did not come from :func:`fastattn_mask` (same as HF's sdpa integration):
``None`` is causal (top-left, i.e. SDPA ``is_causal``) for ``Lq > 1`` when the module is causal; a 4-D
bool/float tensor is complete (no causal added); a 2-D ``(B, Lm)`` mask is flash-attention style (keys
``[0, Lm)``, causal bottom-right when the module is causal).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ..inputs import AttentionInputs
from ..masks import NormalizedMask

logger = logging.getLogger("fastattn")

NAME = "fastattn"
_SPEC_ATTR = "_fastattn_spec"


@dataclass(frozen=True)
class _CompactSpec:
    """What :func:`fastattn_mask` knows about the 2-D mask it returns (attached as ``_fastattn_spec``)."""

    causal: bool          # bottom-right causal over the Lm keys
    full: bool = False    # no padding mask was given: the tensor is all True, only the truncation to Lm matters
    #: the normalised mask per (B, Lm) built by the first layer and reused by every later layer of the
    #: forward, so its device-side key range is computed once per forward, not once per layer
    masks: Dict[tuple, object] = field(default_factory=dict, compare=False, hash=False)


# ------------------------------------------------------------------------------------------- mask
def _compact_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask,
                  device, local_size):
    """The compact mask, or ``NotImplemented`` when it cannot express the request exactly.

    Never reads tensor values (no device->host sync, nothing data-dependent under ``torch.compile``): the
    padding mask is handed over as it is and the kernels find each sequence's visible key range on the
    device. The only decisions are made from Python ints and shapes."""
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function

    if mask_function is causal_mask_function:
        causal = True
    elif mask_function is bidirectional_mask_function:
        causal = False
    else:  # sliding window, chunked, packed sequences, custom and/or overlays: HF builds the mask
        return NotImplemented
    if local_size is not None or isinstance(kv_offset, torch.Tensor) or kv_offset != 0:
        return NotImplemented
    if attention_mask is not None and (attention_mask.dim() != 2 or attention_mask.shape[0] != batch_size):
        return NotImplemented
    folded = None
    if causal and isinstance(q_offset, torch.Tensor) and q_length == kv_length:
        q_offset = 0  # the keys hold at least offset + q_length positions, so the offset can only be 0
    if causal and isinstance(q_offset, torch.Tensor):
        # A static cache gives its offset as a 0-dim device tensor (reading it would sync). One query row
        # (decode): its causal limit `kv_idx <= q_offset` is a key mask, folded in on the device (the
        # bottom-right causal still declared removes nothing from one row over all kv_length keys). Several rows
        # (a static-cache prefill): the alignment depends on the offset's value -> HF's dense mask.
        if q_length != 1:
            return NotImplemented
        kv_used = kv_length
        folded = torch.arange(kv_length, device=q_offset.device) <= q_offset
    elif causal:
        kv_used = q_offset + q_length  # keys beyond the last query's causal limit are never visible
        if q_offset < 0 or kv_used > kv_length:
            return NotImplemented
    else:
        kv_used = kv_length
    if attention_mask is None and folded is None:
        if kv_used == kv_length and (not causal or q_length == 1 or q_length == kv_length):
            return None  # plain causal (where top-left == bottom-right) or full attention: no mask at all
        pad = torch.ones((batch_size, kv_used), dtype=torch.bool, device=device)  # only the truncation
        setattr(pad, _SPEC_ATTR, _CompactSpec(causal=causal, full=True))
        return pad
    if attention_mask is None:
        pad = folded.expand(batch_size, kv_used)
    else:
        pad = attention_mask if attention_mask.dtype == torch.bool else attention_mask.bool()
        if pad.shape[1] < kv_used:  # as HF's prepare_padding_mask: positions past the 2-D mask are masked
            pad = F.pad(pad, (0, kv_used - pad.shape[1]), value=False)
        pad = pad[:, :kv_used]  # always a fresh view: the spec below is never attached to the caller's tensor
        if folded is not None:
            pad = pad & folded.to(pad.device)
    setattr(pad, _SPEC_ATTR, _CompactSpec(causal=causal))  # (folded: one row, bottom-right is a no-op)
    return pad


def fastattn_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                  mask_function=None, attention_mask: Optional[torch.Tensor] = None, **kwargs):
    """``AttentionMaskInterface`` function for ``"fastattn"`` (see the module docstring for the forms).

    Receives what HF's mask factories pass to every mask interface: ``batch_size, q_length, kv_length,
    q_offset`` (int, or a 0-dim tensor for a static cache), ``kv_offset``, ``mask_function`` (the
    ``(b, h, q_idx, kv_idx) -> bool`` pattern), ``attention_mask`` (the 2-D bool padding mask, or None),
    and extras (``local_size``, ``allow_is_causal_skip``, ``allow_is_bidirectional_skip``, ``use_vmap``,
    ``device``, ``dtype``, ``config``)."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    if mask_function is None:
        mask_function = causal_mask_function
    device = kwargs.get("device", "cpu")
    compact = _compact_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function,
                            attention_mask, device, kwargs.get("local_size"))
    if compact is not NotImplemented:
        return compact
    # General path: HF's own boolean mask builder, never skipped in favour of `is_causal` (a skipped mask
    # would be ambiguous here: a static-cache prefill needs top-left, a chunked prefill bottom-right).
    kwargs = dict(kwargs)
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask, **kwargs)


# -------------------------------------------------------------------------------------- attention
@dataclass
class _Plan:
    """How one attention call runs: keys ``[0, kv_len)`` with this normalised mask."""

    kv_len: int
    mask: NormalizedMask


def _module_is_causal(module, kwargs) -> bool:
    ic = kwargs.get("is_causal")
    if ic is not None:
        return bool(ic)
    return bool(getattr(module, "is_causal", True))


def _plan(module, query, key, attention_mask, kwargs) -> _Plan:
    B, Hq, Lq, _ = query.shape
    Lk = key.shape[2]
    if attention_mask is None:
        causal = "top_left" if (_module_is_causal(module, kwargs) and Lq > 1) else None
        plan = _Plan(Lk, NormalizedMask(causal=causal))
    elif not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask: the fastattn attention implementation takes None, a 2-D (B, Lk) key mask "
                        f"or a 4-D (B|1, H|1, Lq, Lk) bool/float mask; got {type(attention_mask).__name__} "
                        "(a flex-attention BlockMask? set attn_implementation='fastattn' through "
                        "model.set_attn_implementation so that masks are built for it)")
    elif attention_mask.dim() == 2:
        Lm = attention_mask.shape[1]
        if attention_mask.shape[0] != B or Lm > Lk:
            raise ValueError(f"attention_mask: a 2-D key mask must be (B, Lm) with B={B} and Lm <= Lk={Lk}; "
                             f"got {tuple(attention_mask.shape)}")
        spec = getattr(attention_mask, _SPEC_ATTR, None)
        if spec is None:  # a flash-attention style mask from elsewhere
            causal = _module_is_causal(module, kwargs)
            key_mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask.bool()
        else:
            causal = spec.causal
            key_mask = None if spec.full else attention_mask
        mask = spec.masks.get((B, Lm)) if spec is not None else None
        if mask is None:
            mask = NormalizedMask(causal="bottom_right" if causal else None, key_mask=key_mask)
            if spec is not None:
                spec.masks[(B, Lm)] = mask
        plan = _Plan(Lm, mask)
    elif attention_mask.dim() == 4:
        m = attention_mask
        if m.shape[-1] > Lk:  # some HF paths hand a mask sized for the whole cache
            m = m[..., :Lk]
        if m.shape[-2] != Lq or m.shape[-1] != Lk or m.shape[0] not in (1, B) or m.shape[1] not in (1, Hq):
            raise ValueError(f"attention_mask: a 4-D mask must broadcast to (B, Hq, Lq, Lk) = ({B}, {Hq}, {Lq}, {Lk}); "
                             f"got {tuple(attention_mask.shape)}")
        if m.dtype != torch.bool and m.dtype not in (query.dtype, torch.float32):
            m = m.to(query.dtype)  # e.g. a float16 mask with float32 activations: rare, small
        plan = _Plan(Lk, NormalizedMask(dense=m.expand(B, Hq, Lq, Lk)))
    else:
        raise ValueError(f"attention_mask: expected None, a 2-D (B, Lk) or a 4-D (B, 1, Lq, Lk) mask; got "
                         f"{attention_mask.dim()} dims {tuple(attention_mask.shape)}")

    window = kwargs.get("sliding_window")
    if window is not None and plan.mask.dense is None:
        # Only reachable when the mask did not come from fastattn_mask (which returns a dense mask for
        # sliding layers): materialise causal/padding and AND the window (HF: q_pos - kv_pos < window).
        keep = plan.mask.keep(B, Lq, plan.kv_len, query.device)
        i = torch.arange(Lq, device=query.device).view(Lq, 1) + (plan.kv_len - Lq)
        j = torch.arange(plan.kv_len, device=query.device).view(1, plan.kv_len)
        win = (i - j < int(window)).view(1, 1, Lq, plan.kv_len)
        keep = win if keep is None else keep & win
        plan = _Plan(plan.kv_len, NormalizedMask(dense=keep.expand(B, Hq, Lq, plan.kv_len)))
    return plan


def _eager(module, q, k, v, plan: _Plan, scale: float, dropout_p: float, head_mask, softcap):
    """Attention with explicit weights, as HF's eager path computes it (mask added as ``finfo.min``,
    softmax in float32). Returns ``(out (B, Lq, Hq, Dv), weights (B, Hq, Lq, Lk))`` over all Lk keys
    (zero weight on keys past the compact mask's range)."""
    B, Hq, Lq, _ = q.shape
    Lk, n = k.shape[2], plan.kv_len
    rep = Hq // k.shape[1]
    kx = k[:, :, :n].repeat_interleave(rep, dim=1) if rep > 1 else k[:, :, :n]
    vx = v[:, :, :n].repeat_interleave(rep, dim=1) if rep > 1 else v[:, :, :n]
    s = torch.matmul(q, kx.transpose(-1, -2)) * scale
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    bias = plan.mask.bias()
    if bias is not None:
        s = s + bias.to(s.dtype)
    keep = plan.mask.keep(B, Lq, n, q.device)
    if keep is not None:
        s = s.masked_fill(~keep, torch.finfo(s.dtype).min)  # == HF's "+ finfo.min" for finite scores
    w = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout_p > 0:
        w = F.dropout(w, p=dropout_p, training=True)
    if head_mask is not None:
        w = w * head_mask
    out = torch.matmul(w, vx).transpose(1, 2).contiguous()
    if n < Lk:
        w = F.pad(w, (0, Lk - n))
    return out, w


def _weights_requested(kwargs) -> bool:
    """``output_attentions=True`` for this call. Some models (GPT-2) pop the flag before the attention
    module and rely on transformers' output recorder, whose per-call collector says what is captured."""
    if kwargs.get("output_attentions"):
        return True
    try:
        from transformers.utils.output_capturing import _active_collector
        collected = _active_collector.get()
    except Exception:  # noqa: BLE001 - older/newer layouts: the kwarg above is then the only signal
        return False
    return bool(collected) and ("attentions" in collected or "cross_attentions" in collected)


def fastattn_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attention_mask, scaling: Optional[float] = None, dropout: float = 0.0, **kwargs):
    """``AttentionInterface`` function for ``"fastattn"``.

    ``query (B, Hq, Lq, D)``, ``key (B, Hkv, Lk, D)``, ``value (B, Hkv, Lk, Dv)`` (views, any strides with
    a contiguous last dim; ``Hq % Hkv == 0``); returns ``(attn_output (B, Lq, Hq, Dv), None)``, or the
    ``(B, Hq, Lq, Lk)`` attention weights instead of ``None`` when ``output_attentions=True``.
    Equivalent PyTorch (fastattn semantics: a query row with no visible key gives 0)::

        F.scaled_dot_product_attention(query, key, value, attn_mask=<mask>, dropout_p=dropout if
            module.training else 0, scale=scaling, enable_gqa=True).transpose(1, 2)
    """
    from ..attention.api import attention_normalized

    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("fastattn attention does not implement attention sinks (s_aux); load this model "
                                  "with attn_implementation='eager' or 'sdpa'")
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(f"query/key/value must be 4-D (B, H, L, D); got {tuple(query.shape)}, {tuple(key.shape)}, "
                         f"{tuple(value.shape)}")
    Hq, Hkv = query.shape[1], key.shape[1]
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"query has {Hq} heads and key/value {Hkv}: grouped-query attention needs Hq % Hkv == 0")
    scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    dropout_p = float(dropout) if getattr(module, "training", False) else 0.0
    if kwargs.get("cu_seq_lens_q") is not None and kwargs.get("cu_seq_lens_k") is not None:
        return _varlen(module, query, key, value, scale, dropout_p, kwargs), None
    plan = _plan(module, query, key, attention_mask, kwargs)
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:  # T5-style additive bias: one dense float mask (removed keys -> -inf)
        B, _, Lq, _ = query.shape
        keep = plan.mask.keep(B, Lq, plan.kv_len, query.device)
        pb = position_bias[..., :plan.kv_len].to(query.dtype)
        if plan.mask.bias() is not None:
            pb = pb + plan.mask.bias().to(query.dtype)
        if keep is not None:
            pb = pb.masked_fill(~keep, float("-inf"))
        plan = _Plan(plan.kv_len, NormalizedMask(dense=pb.expand(B, Hq, Lq, plan.kv_len)))

    head_mask = kwargs.get("head_mask")
    softcap = kwargs.get("softcap")
    if _weights_requested(kwargs) or head_mask is not None or softcap is not None:
        return _eager(module, query, key, value, plan, scale, dropout_p, head_mask, softcap)

    k = key if plan.kv_len == key.shape[2] else key[:, :, :plan.kv_len]
    v = value if plan.kv_len == value.shape[2] else value[:, :, :plan.kv_len]
    B, _, Lq, _ = query.shape
    inp = AttentionInputs(query, k, v, plan.mask, dropout_p, scale, (B, Hq, Lq, value.shape[-1]))
    out = attention_normalized(inp, out_blhd=True)
    return out.transpose(1, 2), None


def _varlen(module, query, key, value, scale: float, dropout_p: float, kwargs) -> torch.Tensor:
    """Packed sequences: HF's flash-attention kwargs (``cu_seq_lens_q/k``, ``max_length_q/k``: from
    ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``, or from ``fastattn.optimize``'s unpadded
    encoders) with ``query (1, Hq, total_q, D)``: one :func:`fastattn.attention_varlen` call, causal
    (bottom-right per sequence) when the module is. The padding mask is not used (the sequences have none)."""
    from ..attention.varlen import attention_varlen
    if query.shape[0] != 1:
        raise ValueError(f"cu_seq_lens_q/k: packed sequences need query (1, H, total, D); got {tuple(query.shape)}")
    cq, ck = kwargs["cu_seq_lens_q"], kwargs["cu_seq_lens_k"]
    mq, mk = kwargs.get("max_length_q"), kwargs.get("max_length_k")
    mq = int(mq) if mq is not None else int((cq[1:] - cq[:-1]).max()) if cq.numel() > 1 else 0
    mk = int(mk) if mk is not None else int((ck[1:] - ck[:-1]).max()) if ck.numel() > 1 else 0
    q, k, v = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)  # (total, H, D) views
    out = attention_varlen(q, k, v, cq, ck, mq, mk, dropout_p=dropout_p, is_causal=_module_is_causal(module, kwargs),
                           scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return out.unsqueeze(0)

"""The attention reference semantics, in one place: plain PyTorch math, float64-capable, every mask form
(the FFN's are :mod:`fastattn.ffn.reference`).

Shared by the tests (float64 ground truth and the "naive same dtype" error budget of the numerics
rule), the benchmarks, ``fastattn check`` and the recompute backward of the kernel backends.

Equivalent PyTorch for what :func:`attention` computes (``keep`` = every structural mask ANDed)::

    s = (q @ k.transpose(-2, -1)) * scale + float_mask      # in compute_dtype
    s = s.masked_fill(~keep, -inf)
    p = softmax(s, -1); p[rows with no visible key] = 0      # never NaN
    out = dropout(p) @ v
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .inputs import AttentionInputs, normalize_attention

__all__ = ["attention", "attention_math"]


def expand_kv(t: torch.Tensor, Hq: int) -> torch.Tensor:
    """GQA for the reference: repeat KV heads so head ``h`` uses KV head ``h // (Hq // Hkv)``."""
    Hkv = t.shape[1]
    return t if Hkv == Hq else t.repeat_interleave(Hq // Hkv, dim=1)


def scores_and_keep(inp: AttentionInputs, q: torch.Tensor, k: torch.Tensor
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Masked scaled scores ``(B, Hq, Lq, Lk)`` in q's dtype (-inf where removed) and the
    ``(B|1, Hq|1, Lq, 1)`` bool "row has a visible key" (``None``: every row has one)."""
    s = torch.matmul(q, k.transpose(-2, -1)) * inp.scale
    bias = inp.mask.bias()
    keep = inp.mask.keep(inp.B, inp.Lq, inp.Lk, q.device)
    if bias is not None:
        s = s + bias.to(s.dtype)
        neginf = torch.isneginf(bias)
        keep = ~neginf if keep is None else keep & ~neginf
    if keep is None:
        return s, None
    s = s.masked_fill(~keep, float("-inf"))
    return s, keep.any(dim=-1, keepdim=True)


def attention_math(inp: AttentionInputs, compute_dtype: Optional[torch.dtype] = None,
                   dropout_mask: Optional[torch.Tensor] = None, return_lse: bool = False):
    """Reference on normalised inputs. Returns ``(B, Hq, Lq, Ev)`` in ``compute_dtype`` (default: the
    input dtype, i.e. the "naive same dtype" math), and the natural-log LSE ``(B, Hq, Lq)`` (float32 or
    float64; ``-inf`` on empty rows) when ``return_lse``. ``dropout_mask`` (bool, ``(B, Hq, Lq, Lk)``,
    True = kept) applies dropout exactly, with ``1/(1-p)`` rescaling."""
    cd = compute_dtype or inp.dtype
    q = inp.query.to(cd)
    k = expand_kv(inp.key.to(cd), inp.Hq)
    v = expand_kv(inp.value.to(cd), inp.Hq)
    s, row_has = scores_and_keep(inp, q, k)
    if row_has is not None:
        s = s.masked_fill(~row_has, 0.0)  # an all -inf row would softmax to NaN
    lse = torch.logsumexp(s.to(torch.float64 if cd == torch.float64 else torch.float32), dim=-1)
    p = torch.softmax(s, dim=-1)
    if row_has is not None:
        p = p * row_has
        lse = lse.masked_fill(~row_has.squeeze(-1), float("-inf"))
    if dropout_mask is not None:
        p = p * dropout_mask / (1.0 - inp.dropout_p)
    out = torch.matmul(p, v)
    return (out, lse) if return_lse else out


def attention(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
              scale: Optional[float] = None, enable_gqa: bool = False, *,
              compute_dtype: Optional[torch.dtype] = torch.float64, dropout_mask=None) -> torch.Tensor:
    """SDPA-signature reference: ``fastattn.attention`` semantics computed in ``compute_dtype``
    (float64 by default; ``None`` = the input dtype). Returns the caller's shape ``(..., Lq, Ev)``.
    ``dropout_p > 0`` needs an explicit ``dropout_mask`` so that the result is reproducible."""
    inp = normalize_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if inp.dropout_p > 0 and dropout_mask is None:
        raise ValueError("reference.attention with dropout_p > 0 needs dropout_mask= (bool, True = kept)")
    out = attention_math(inp, compute_dtype, dropout_mask if inp.dropout_p > 0 else None)
    return out.reshape(inp.out_shape)




def attention_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k, *, is_causal: bool = False,
                     scale: Optional[float] = None, compute_dtype: Optional[torch.dtype] = torch.float64,
                     dropout_p: float = 0.0, dropout_mask=None) -> torch.Tensor:
    """Plain math of :func:`fastattn.attention_varlen`, one sequence at a time, in ``compute_dtype``
    (``None``: the input dtype, the "naive same dtype" of the numerics rule). Bottom-right causal per
    sequence; rows with no visible key are 0. Differentiable. ``dropout_p > 0`` needs ``dropout_mask``:
    one bool ``(Hq, lq_b, lk_b)`` per sequence, True = kept (e.g.
    :func:`fastattn.dropout.dropout_keep_mask_varlen`), applied with ``1/(1-p)`` rescaling."""
    if dropout_p > 0 and dropout_mask is None:
        raise ValueError("reference.attention_varlen with dropout_p > 0 needs dropout_mask= (one per sequence)")
    dt = compute_dtype or query.dtype
    q, k, v = query.to(dt), key.to(dt), value.to(dt)
    Hq, Hkv = q.shape[1], k.shape[1]
    s = (1.0 / math.sqrt(q.shape[-1])) if scale is None else scale
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs = []
    for b in range(len(cq) - 1):
        qb = q[cq[b]:cq[b + 1]].transpose(0, 1)                     # (Hq, lq, E)
        kb = expand_kv(k[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0), Hq)[0]
        vb = expand_kv(v[ck[b]:ck[b + 1]].transpose(0, 1).unsqueeze(0), Hq)[0]
        lq, lk = qb.shape[1], kb.shape[1]
        sc = (qb @ kb.transpose(-1, -2)) * s
        keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
        if is_causal:
            keep = keep.tril(lk - lq)
        sc = sc.masked_fill(~keep, float("-inf"))
        has = keep.any(-1, keepdim=True)
        p = torch.softmax(sc.masked_fill(~has, 0.0), dim=-1) * has
        if dropout_p > 0:
            p = p * dropout_mask[b].to(p.device) / (1.0 - dropout_p)
        outs.append((p @ vb).transpose(0, 1))
    if not outs:
        return q.new_zeros((0, Hq, v.shape[-1]))
    return torch.cat(outs, 0)

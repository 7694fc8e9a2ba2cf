"""``fastattn.attention_varlen``: attention over packed variable-length sequences."""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..inputs import normalize_varlen
from .plan import plan_for

__all__ = ["attention_varlen", "explain_varlen"]


def attention_varlen(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, *, dropout_p: float = 0.0,
                     is_causal: bool = False, scale: Optional[float] = None, enable_gqa: bool = False,
                     backend: Optional[str] = None) -> torch.Tensor:
    r"""Attention over packed sequences, the layout of FlashAttention's ``flash_attn_varlen_func``.

    ``query (total_q, Hq, E)``, ``key (total_k, Hkv, E)``, ``value (total_k, Hkv, Ev)``: the rows of B
    sequences, one after the other. ``cu_seqlens_q`` / ``cu_seqlens_k``: int32 (or int64) ``(B+1,)`` on
    the tensors' device, ``cu[0] = 0``, non-decreasing, ``cu[-1] = total``; sequence ``b`` is rows
    ``cu[b]:cu[b+1]``. ``max_seqlen_q`` / ``max_seqlen_k``: Python ints, at least every length (kernel
    grid sizing). Sequence ``b``'s queries attend only to its own keys. Returns a contiguous
    ``(total_q, Hq, Ev)`` tensor.

    ``is_causal=True`` is **bottom-right aligned per sequence**: row ``i`` of a sequence with ``lq``
    queries and ``lk`` keys sees keys ``j <= i + lk - lq`` (the same as top-left when ``lq == lk``, i.e.
    packed training)::

        lq=2, lk=4        lq=4, lk=2         lq=3, lk=3
        1 1 1 0           0 0   (empty: 0)   1 0 0
        1 1 1 1           0 0   (empty: 0)   1 1 0
                          1 0                1 1 1
                          1 1

    Empty sequences and rows with no visible key give 0 (gradient 0, never NaN). ``scale=None`` is
    ``1/sqrt(E)``; ``enable_gqa=True``: query head ``h`` uses KV head ``h // (Hq // Hkv)``. Any strides
    with a contiguous last dim are read in place (e.g. ``qkv[:, 0]`` slices of a packed
    ``(total, 3, H, E)`` projection). Autograd and ``dropout_p`` as :func:`fastattn.attention`.

    Errors name the argument (:class:`~fastattn.errors.InputError` / ``InputTypeError``): cu_seqlens that are
    not 1-D integer tensors on the tensors' device or differ in length, non-3-D inputs, head-dim or head-count
    mismatches, ``max_seqlen`` not an int. The *values* of cu_seqlens (first 0, last = total,
    non-decreasing, max_seqlen large enough) are checked for CPU tensors, and on any device with
    ``FASTATTN_DEBUG=1`` (reading them from a GPU would synchronise every call).

    ``backend``: as in :func:`fastattn.attention`; :func:`explain_varlen` shows the decision. Equivalent
    PyTorch, per sequence ``b`` (``q_b = query[cu_q[b]:cu_q[b+1]].transpose(0, 1)``, same for k, v)::

        F.scaled_dot_product_attention(q_b, k_b, v_b, attn_mask=causal_lower_right(lq, lk) if is_causal
                                       else None, dropout_p=dropout_p, scale=scale, enable_gqa=enable_gqa)
    """
    inp = normalize_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p, is_causal, scale, enable_gqa)
    return plan_for(inp, backend, op="attention_varlen").backend.run(inp)


def explain_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                   enable_gqa: bool = False, backend: Optional[str] = None) -> str:
    """Which backend :func:`attention_varlen` would pick for these arguments and why the others were not."""
    inp = normalize_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p, is_causal, scale, enable_gqa)
    table = dispatch.explain("attention_varlen", inp, backend)
    chosen = next((n for n, r in table.items() if not r), None)
    lines = [f"attention_varlen {inp.describe()} -> {chosen or 'no backend'}"]
    for n, r in table.items():
        lines.append(f"  {n}: " + ("supported" if not r else "; ".join(r)))
    return "\n".join(lines)

"""Public attention functions: :func:`attention` (a drop-in for SDPA), :func:`explain`, and
:func:`attention_normalized` for integrations that already hold normalised inputs.

Each call is ``normalize -> plan (cached per signature) -> plan.run``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import dispatch
from ..inputs import normalize_attention
from .plan import plan_for

__all__ = ["attention", "explain", "attention_normalized"]


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask=None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
              enable_gqa: bool = False, *, backend: Optional[str] = None) -> torch.Tensor:
    r"""Drop-in for :func:`torch.nn.functional.scaled_dot_product_attention`.

    Shapes: ``query (..., Hq, Lq, E)``, ``key (..., Hkv, Lk, E)``, ``value (..., Hkv, Lk, Ev)``
    (3-D ``(N, L, E)`` and 2-D ``(L, E)`` work too); returns a contiguous ``(..., Hq, Lq, Ev)`` tensor.
    dtypes float16, bfloat16, float32 (float32 computed to float32 accuracy, never TF32); float64 on
    the ``torch`` backend. Any strides with a contiguous last dim are read in place.

    ``attn_mask``:

    * bool tensor, ``True`` = may attend; float tensor (query dtype or float32): added to the scaled
      scores; either broadcastable to ``(..., Hq, Lq, Lk)`` (stride-0 broadcast is never copied);
    * ``torch.nn.attention.bias.causal_upper_left(Lq, Lk)`` / ``causal_lower_right(Lq, Lk)``;
    * :class:`fastattn.KeyPadding` (per-sequence lengths or a ``(B, Lk)`` bool key mask, optionally
      causal): the compact form fused kernels skip padded blocks with.

    ``is_causal=True`` is top-left aligned, exactly as SDPA (row ``i`` sees keys ``j <= i``); bottom-right
    (``j <= i + Lk - Lq``, KV-cache decode) is asked for with ``causal_lower_right`` or
    ``KeyPadding(..., causal="bottom_right")``::

        is_causal=True, Lq=2, Lk=4      causal_lower_right(2, 4)
        1 0 0 0                         1 1 1 0
        1 1 0 0                         1 1 1 1

    A query row with no visible key returns exactly 0 (never NaN). ``scale=None`` is ``1/sqrt(E)``.
    ``enable_gqa=True``: query head ``h`` uses KV head ``h // (Hq // Hkv)``.

    ``backend``: ``None``/``"auto"`` picks the first of ``cuda``, ``triton``, ``torch`` that supports the
    inputs (with gradients or dropout: the first with a fused backward / in-kernel dropout); a name
    forces one and raises :class:`~fastattn.errors.BackendError` (a ``ValueError`` and a
    ``RuntimeError``) listing every reason it cannot run them. The
    environment variable ``FASTATTN_BACKEND`` does the same globally; :func:`fastattn.explain` shows the
    decision. Equivalent PyTorch (up to the empty-row rule)::

        F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                       enable_gqa=enable_gqa)
    """
    inp = normalize_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return plan_for(inp, backend).run(inp).reshape(inp.out_shape)


def explain(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
            scale: Optional[float] = None, enable_gqa: bool = False, *, backend: Optional[str] = None) -> str:
    """Which backend ``fastattn.attention`` would pick for these arguments, and why each other one
    was passed over. Runs nothing."""
    inp = normalize_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    table = dispatch.explain("attention", inp, backend)
    chosen = next((n for n, r in table.items() if not r), None)
    lines = [f"attention {inp.describe()} -> {chosen or 'no backend'}"]
    for n, r in table.items():
        lines.append(f"  {n}: " + ("supported" if not r else "; ".join(r)))
    return "\n".join(lines)


def attention_normalized(inp, backend: Optional[str] = None, out_blhd: bool = False) -> torch.Tensor:
    """Internal entry for integrations that already hold :class:`~fastattn.inputs.AttentionInputs`
    (e.g. HF with a compact key mask): returns ``(B, Hq, Lq, Ev)``, laid out ``(B, Lq, Hq, Ev)`` in
    memory when ``out_blhd`` (so ``.transpose(1, 2)`` is HF's output with no copy)."""
    return plan_for(inp, backend).run(inp, out_blhd)

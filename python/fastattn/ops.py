"""Public compute functions: ``fastattn.attention`` and ``fastattn.gelu_ffn``."""

from __future__ import annotations

from typing import Optional

import torch

from . import dispatch
from .ffn.custom_ops import run_gelu_ffn
from .ffn.problem import normalize_gelu_ffn
from .inputs import normalize_attention

__all__ = ["attention", "gelu_ffn", "explain"]


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
    inputs; a name forces one and raises ``ValueError`` listing every reason it cannot run them. The
    environment variable ``FASTATTN_BACKEND`` does the same globally; :func:`fastattn.explain` shows the
    decision. Equivalent PyTorch (up to the empty-row rule)::

        F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                       enable_gqa=enable_gqa)
    """
    inp = normalize_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    impl = dispatch.select("attention", inp, backend)
    return impl.run(inp).reshape(inp.out_shape)


def gelu_ffn(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], w2: torch.Tensor,
             b2: Optional[torch.Tensor], *, approximate: str = "none", backend: Optional[str] = None) -> torch.Tensor:
    """``F.linear(F.gelu(F.linear(x, w1, b1), approximate=approximate), w2, b2)``, fused.

    ``x (..., in)``; ``w1 (hidden, in)``, ``w2 (out, hidden)`` in ``nn.Linear`` layout with any strides
    (GPT-2's ``Conv1D`` weight is ``(in, out)``: pass ``weight.t()``, a view); biases ``(hidden,)``,
    ``(out,)`` or ``None``. ``approximate="none"`` is the exact erf GELU (HF ``"gelu"``, BERT);
    ``"tanh"`` is HF ``"gelu_new"``/``"gelu_pytorch_tanh"`` (GPT-2). Returns ``(..., out)``.

    Two ``linear_act`` launches on one backend (:mod:`fastattn.ffn`): the up projection with the GELU
    fused into its epilogue, then the down projection with its bias; the hidden activation is
    materialised in the input dtype, as eager PyTorch does.
    """
    p = normalize_gelu_ffn(x, w1, b1, w2, b2, approximate)
    return run_gelu_ffn(dispatch.select("gelu_ffn", p, backend), p)


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
    (e.g. HF with a ``KeyPadding`` mask): returns ``(B, Hq, Lq, Ev)``, laid out ``(B, Lq, Hq, Ev)`` in
    memory when ``out_blhd`` (so ``.transpose(1, 2)`` is HF's output with no copy)."""
    impl = dispatch.select("attention", inp, backend)
    return impl.run(inp, out_blhd=out_blhd)

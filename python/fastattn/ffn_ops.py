"""Feed-forward building blocks used by the Hugging Face swap (BERT ``BertIntermediate`` /
``BertOutput``, GPT-2 ``GPT2MLP``). Each computes exactly the PyTorch expression in its docstring.

Torch implementations for now; the ``triton``/``cuda`` fused versions (issue #5) plug in behind the
same names and signatures, selected like every other op (``backend=None`` = auto).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["linear_gelu", "linear_residual", "residual_layernorm"]


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], *,
                approximate: str = "none", backend: Optional[str] = None) -> torch.Tensor:
    """``F.gelu(F.linear(x, weight, bias), approximate=approximate)``; ``weight`` ``(out, in)``, any strides."""
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)


def linear_residual(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    residual: Optional[torch.Tensor] = None, *, backend: Optional[str] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias) + residual`` (``residual`` may be ``None``)."""
    y = F.linear(x, weight, bias)
    return y if residual is None else y + residual


def residual_layernorm(x: torch.Tensor, residual: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                       bias: Optional[torch.Tensor], eps: float = 1e-5, *,
                       backend: Optional[str] = None) -> torch.Tensor:
    """``F.layer_norm(x + residual, (x.shape[-1],), weight, bias, eps)`` (``residual`` may be ``None``)."""
    h = x if residual is None else x + residual
    return F.layer_norm(h, (h.shape[-1],), weight, bias, eps)

"""The feed-forward's semantics in plain PyTorch math, in one place: the float64 ground truth of the tests
and ``fastattn check``, the "naive same dtype" budget of the numerics rule (``compute_dtype=None``), the
torch backend, and the recompute backward of the kernel backends (float32, float64 for float64 inputs).

Equivalent PyTorch::

    linear_act:          act(F.linear(x, weight, bias)) + residual
    residual_layernorm:  F.layer_norm(x + residual, (N,), weight, bias, eps)
    gelu_ffn:            F.linear(F.gelu(F.linear(x, w1, b1), approximate=approximate), w2, b2)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .problem import Activation, normalize_gelu_ffn

__all__ = ["linear_act_math", "layernorm_math", "gelu", "gelu_ffn"]


def _cast(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """``t.to(dtype)`` (``None`` stays ``None``), without the call when the dtype is already right: the torch
    backend runs this per call, and six no-op ``.to`` calls cost ~5 us of host time on CPU."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def linear_act_math(x, weight, bias, residual, activation, compute_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``act(x @ weight.T + bias) + residual`` in ``compute_dtype`` (default: x's dtype)."""
    cd = compute_dtype or x.dtype
    y = Activation.parse(activation).torch(F.linear(_cast(x, cd), _cast(weight, cd), _cast(bias, cd)))
    return y if residual is None else y + _cast(residual, cd)


def layernorm_math(x, residual, weight, bias, eps: float, compute_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    cd = compute_dtype or x.dtype
    h = x.to(cd) if residual is None else x.to(cd) + residual.to(cd)
    return F.layer_norm(h, (h.shape[-1],), _cast(weight, cd), _cast(bias, cd), eps)


def gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    """``"none"``: exact ``x/2 (1 + erf(x/sqrt 2))`` (HF "gelu"); ``"tanh"``: HF "gelu_new"."""
    return Activation.from_approximate(approximate).torch(x)


def gelu_ffn(x, w1, b1, w2, b2, *, approximate: str = "none",
             compute_dtype: Optional[torch.dtype] = torch.float64) -> torch.Tensor:
    """``F.linear(F.gelu(F.linear(x, w1, b1), approximate), w2, b2)`` in ``compute_dtype`` (``None``: the
    inputs' dtype); same argument checks as ``fastattn.gelu_ffn``."""
    p = normalize_gelu_ffn(x, w1, b1, w2, b2, approximate)
    h = linear_act_math(p.up.x, p.up.weight, p.up.bias, None, p.up.activation, compute_dtype)
    return linear_act_math(h, w2, b2, None, Activation.NONE, compute_dtype).reshape(p.out_shape)

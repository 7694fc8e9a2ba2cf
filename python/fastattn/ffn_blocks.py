"""Feed-forward building blocks (what ``fastattn.optimize`` swaps into BERT's ``BertIntermediate`` /
``BertOutput``): each computes exactly the PyTorch expression in its docstring, fused, on the first of the
``cuda`` -> ``triton`` -> ``torch`` backends that supports the inputs (``backend=`` or
``FASTATTN_BACKEND`` forces one; a forced backend that cannot run the inputs raises a ``ValueError``
listing why). ``fastattn.gelu_ffn`` is ``linear_gelu`` followed by ``linear_residual`` on one backend.

Shapes: ``x (..., in)``, ``weight (out, in)`` in ``nn.Linear`` layout with any strides (GPT-2's ``Conv1D``
weight ``(in, out)`` is passed as ``weight.t()``, a view, never copied), ``bias (out,)`` or ``None``;
results are contiguous ``(..., out)``. dtypes float16, bfloat16, float32 (fp32 computed without TF32) on
the kernel backends; float64 on ``torch``. Fused kernels keep the GEMM accumulator, bias, GELU and
residual add in fp32 and round once (eager rounds after each op), which is at least as accurate.

Import path: ``from fastattn.ffn_blocks import linear_gelu, linear_residual, residual_layernorm``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import dispatch
from .ffn.custom_ops import run_linear_act, run_residual_layernorm
from .ffn.problem import Activation, normalize_linear_act, normalize_residual_layernorm

__all__ = ["linear_gelu", "linear_residual", "residual_layernorm"]


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], *,
                approximate: str = "none", backend: Optional[str] = None) -> torch.Tensor:
    """``F.gelu(F.linear(x, weight, bias), approximate=approximate)``; ``weight`` ``(out, in)``, any strides.

    ``approximate="none"`` is the exact erf GELU (HF ``"gelu"``, BERT), ``"tanh"`` the tanh approximation
    (HF ``"gelu_new"`` / ``"gelu_pytorch_tanh"``, GPT-2); one is never substituted for the other.
    """
    p = normalize_linear_act(x, weight, bias, None, Activation.from_approximate(approximate))
    return run_linear_act(dispatch.select("linear_act", p, backend), p)


def linear_residual(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    residual: Optional[torch.Tensor] = None, *, backend: Optional[str] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias) + residual`` (``residual`` may be ``None``; shape ``x.shape[:-1] + (out,)``)."""
    p = normalize_linear_act(x, weight, bias, residual, Activation.NONE)
    return run_linear_act(dispatch.select("linear_act", p, backend), p)


def residual_layernorm(x: torch.Tensor, residual: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                       bias: Optional[torch.Tensor], eps: float = 1e-5, *,
                       backend: Optional[str] = None) -> torch.Tensor:
    """``F.layer_norm(x + residual, (x.shape[-1],), weight, bias, eps)`` (``residual`` may be ``None``).

    Fused: ``x + residual`` is formed in fp32 (never rounded), statistics are fp32, one rounding at the end.
    """
    p = normalize_residual_layernorm(x, residual, weight, bias, eps)
    return run_residual_layernorm(dispatch.select("residual_layernorm", p, backend), p)

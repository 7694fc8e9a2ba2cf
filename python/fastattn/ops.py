"""Public compute functions (``fastattn.attention``, ``fastattn.gelu_ffn``, ``fastattn.explain``); the
attention ones live in :mod:`fastattn.attention.api`."""

from __future__ import annotations

from typing import Optional

import torch

from . import dispatch
from .attention.api import attention, attention_normalized, explain  # noqa: F401
from .ffn.custom_ops import run_gelu_ffn
from .ffn.problem import normalize_gelu_ffn

__all__ = ["attention", "gelu_ffn", "explain"]


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

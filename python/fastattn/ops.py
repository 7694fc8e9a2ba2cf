"""Public compute functions (``fastattn.attention``, ``fastattn.gelu_ffn``, ``fastattn.explain``); the
attention ones live in :mod:`fastattn.attention.api`."""

from __future__ import annotations

from typing import Optional

import torch

from . import dispatch
from .attention.api import attention, attention_normalized, explain  # noqa: F401
from .inputs import normalize_ffn

__all__ = ["attention", "gelu_ffn", "explain"]


def gelu_ffn(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], w2: torch.Tensor,
             b2: Optional[torch.Tensor], *, approximate: str = "none", backend: Optional[str] = None) -> torch.Tensor:
    """``F.linear(F.gelu(F.linear(x, w1, b1), approximate=approximate), w2, b2)``, fused.

    ``x (..., in)``; ``w1 (hidden, in)``, ``w2 (out, hidden)`` in ``nn.Linear`` layout with any strides
    (GPT-2's ``Conv1D`` weight is ``(in, out)``: pass ``weight.t()``, a view); biases ``(hidden,)``,
    ``(out,)`` or ``None``. ``approximate="none"`` is the exact erf GELU (HF ``"gelu"``, BERT);
    ``"tanh"`` is HF ``"gelu_new"``/``"gelu_pytorch_tanh"`` (GPT-2). Returns ``(..., out)``.
    """
    inp = normalize_ffn(x, w1, b1, w2, b2, approximate)
    impl = dispatch.select("gelu_ffn", inp, backend)
    return impl.run(inp).reshape(inp.out_shape)

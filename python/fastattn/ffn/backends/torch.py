"""The ``torch`` backend of the FFN ops: PyTorch's own ``F.linear`` / ``F.gelu`` / ``F.layer_norm``, in the
inputs' dtype (float64 included), with native autograd. It runs everywhere; it is the same math as the
stock modules, so ``fastattn.optimize`` never swaps a module in for it."""

from __future__ import annotations

from typing import Optional

import torch

from ..problem import Activation
from ..reference import layernorm_math, linear_act_math
from .base import LayerNormBackend, LinearActBackend


class TorchLinearAct(LinearActBackend):
    name = "torch"
    KERNEL = False
    DTYPES = None
    DEVICES = ("any",)
    SUPPORTS_BACKWARD = True

    def math(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
             residual: Optional[torch.Tensor], activation: Activation) -> torch.Tensor:
        return linear_act_math(x, weight, bias, residual, activation)


class TorchLayerNorm(LayerNormBackend):
    name = "torch"
    KERNEL = False
    DTYPES = None
    DEVICES = ("any",)
    SUPPORTS_BACKWARD = True

    def math(self, x, residual, weight, bias, eps: float) -> torch.Tensor:
        return layernorm_math(x, residual, weight, bias, eps)

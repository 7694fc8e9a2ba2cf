"""The feed-forward op package: input records (:mod:`.problem`), PyTorch semantics (:mod:`.reference`),
custom ops (:mod:`.custom_ops`) and backends (:mod:`.backends`).

Importing it (``import fastattn`` does) registers the custom ops ``fastattn::linear_act`` and
``fastattn::residual_layernorm`` and, with :mod:`fastattn.dispatch`, the backends of three ops in
priority order ``cuda`` -> ``triton`` -> ``torch``: ``linear_act``, ``residual_layernorm`` and
``gelu_ffn`` (each backend's ``linear_act`` run twice). It imports neither Triton nor an extension.

Public functions: ``fastattn.gelu_ffn`` and the building blocks of ``fastattn.ffn_blocks``
(``linear_gelu``, ``linear_residual``, ``residual_layernorm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .. import dispatch
from ..errors import BackendError
from . import custom_ops  # noqa: F401  (registers the fastattn:: FFN custom ops)
from .backends import (CudaLayerNorm, CudaLinearAct, GeluFFNBackend, TorchLayerNorm, TorchLinearAct,
                       TritonLayerNorm, TritonLinearAct)
from .problem import Activation, GeluFFN, LinearAct, ResidualLayerNorm

for _lin, _ln in ((CudaLinearAct(), CudaLayerNorm()), (TritonLinearAct(), TritonLayerNorm()),
                  (TorchLinearAct(), TorchLayerNorm())):
    dispatch.register(_lin)
    dispatch.register(_ln)
    dispatch.register(GeluFFNBackend(_lin))
del _lin, _ln

OPS = ("linear_act", "residual_layernorm", "gelu_ffn")


@dataclass(frozen=True)
class SwapDecision:
    """What inference would run for an ``nn.Linear`` of a feed-forward, and whether that beats the stock
    module: ``why_not is None`` means at least as fast (``fastattn.optimize`` swaps the module)."""

    backend: Optional[str]
    why_not: Optional[str]
    fused_backward: bool


def swap_decision(weight: torch.Tensor, activation: Activation = Activation.NONE,
                  backend: Optional[str] = None) -> SwapDecision:
    """Which ``linear_act`` backend inference (no autograd) would pick for an ``nn.Linear`` with this
    ``(out, in)`` weight (its device and dtype; ``backend`` / ``FASTATTN_BACKEND`` as everywhere), and
    whether it runs at least as fast as the stock module there (:meth:`FFNBackend.beats_eager`)."""
    p = LinearAct(None, weight.detach(), None, None, activation, (1, weight.shape[0]))
    try:
        chosen = dispatch.select("linear_act", p, backend)
    except BackendError as e:
        return SwapDecision(None, str(e), False)
    return SwapDecision(chosen.name, chosen.beats_eager(weight.device), chosen.SUPPORTS_BACKWARD)


__all__ = ["Activation", "LinearAct", "ResidualLayerNorm", "GeluFFN", "OPS", "SwapDecision", "swap_decision"]

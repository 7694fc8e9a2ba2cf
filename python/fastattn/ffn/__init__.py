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


def fused_beats_eager(weight: torch.Tensor, activation: Activation = Activation.NONE,
                      backend: Optional[str] = None) -> Optional[str]:
    """``None`` when the ``linear_act`` backend that inference would pick for an ``nn.Linear`` with this
    weight (its device and dtype; ``backend``/``FASTATTN_BACKEND`` as everywhere) runs at least as fast
    as the stock module, else why not. ``fastattn.optimize`` swaps a feed-forward module only then."""
    x = torch.empty((1, weight.shape[1]), dtype=weight.dtype, device="meta")
    p = LinearAct(x, weight.detach(), None, None, activation, (1, weight.shape[0]))
    try:
        chosen = dispatch.select("linear_act", p, backend)
    except BackendError as e:
        return str(e)
    return chosen.beats_eager(weight.device)


__all__ = ["Activation", "LinearAct", "ResidualLayerNorm", "GeluFFN", "OPS", "fused_beats_eager"]

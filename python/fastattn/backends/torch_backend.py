"""The ``torch`` backend of ``gelu_ffn``: ``F.linear``/``F.gelu`` (transitional home)."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

from ..inputs import FFNInputs
from .base import Backend


class TorchFFN(Backend):
    name = "torch"
    op = "gelu_ffn"
    SUPPORTS_BACKWARD = True

    def special_reasons(self, inp: FFNInputs) -> List[str]:
        return []

    def run(self, inp: FFNInputs, out_blhd: bool = False) -> torch.Tensor:
        h = F.gelu(F.linear(inp.x, inp.w1, inp.b1), approximate=inp.approximate)
        return F.linear(h, inp.w2, inp.b2)

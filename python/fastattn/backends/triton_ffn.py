"""The ``triton`` backend of ``gelu_ffn`` (placeholder until issue #5 lands its kernel)."""

from __future__ import annotations

from typing import List

from .base import KernelBackend


class TritonFFN(KernelBackend):
    name = "triton"
    op = "gelu_ffn"

    def _probe(self):
        return "no triton gelu_ffn kernel in this build yet"

    def not_supported_reasons(self, inp) -> List[str]:
        return []

"""The ``triton`` backend of ``attention`` (placeholder until issue #3 lands its kernel)."""

from __future__ import annotations

from typing import List

from .base import KernelBackend


class TritonAttention(KernelBackend):
    name = "triton"
    op = "attention"

    def _probe(self):
        return "no triton attention kernel in this build yet"

    def not_supported_reasons(self, inp) -> List[str]:
        return []

"""The ``cuda`` backend of ``attention`` (placeholder until issue #4 lands its kernel)."""

from __future__ import annotations

from typing import List

from .base import KernelBackend


class CudaAttention(KernelBackend):
    name = "cuda"
    op = "attention"

    def _probe(self):
        return "no cuda attention kernel in this build yet"

    def not_supported_reasons(self, inp) -> List[str]:
        return []

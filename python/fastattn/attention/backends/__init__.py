"""Attention backends, registered with :mod:`fastattn.dispatch` in priority order (cuda, triton, torch)."""

from ... import dispatch
from .cuda import CudaAttention
from .torch import TorchAttention
from .triton import TritonAttention

for _b in (CudaAttention(), TritonAttention(), TorchAttention()):
    dispatch.register(_b)

__all__ = ["CudaAttention", "TritonAttention", "TorchAttention"]

from . import varlen as _varlen  # noqa: E402,F401  (registers the attention_varlen backends)

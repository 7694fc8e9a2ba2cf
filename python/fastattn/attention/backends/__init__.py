"""Attention backends, registered with :mod:`fastattn.dispatch` in priority order (cuda, triton, torch)."""

from ... import dispatch
from .cuda import CudaAttention
from .torch import TorchAttention
from .triton import TritonAttention

for _b in (CudaAttention(), TritonAttention(), TorchAttention()):
    dispatch.register(_b)

__all__ = ["CudaAttention", "TritonAttention", "TorchAttention"]

"""Backends of ``attention`` and ``gelu_ffn``, registered with :mod:`fastattn.dispatch` in priority order."""

from .. import dispatch
from ..dispatch import PRIORITY
from .cuda_attention import CudaAttention
from .cuda_ffn import CudaFFN
from .torch_backend import TorchAttention, TorchFFN
from .triton_attention import TritonAttention
from .triton_ffn import TritonFFN

for _b in (CudaAttention(), TritonAttention(), TorchAttention(), CudaFFN(), TritonFFN(), TorchFFN()):
    dispatch.register(_b)
ATTENTION_BACKENDS = dispatch.backends("attention")
FFN_BACKENDS = dispatch.backends("gelu_ffn")

__all__ = ["ATTENTION_BACKENDS", "FFN_BACKENDS", "PRIORITY"]

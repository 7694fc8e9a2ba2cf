"""Backend registry and priority order (first that supports the inputs wins in auto mode)."""

from .cuda_attention import CudaAttention
from .cuda_ffn import CudaFFN
from .torch_backend import TorchAttention, TorchFFN
from .triton_attention import TritonAttention
from .triton_ffn import TritonFFN

ATTENTION_BACKENDS = {b.name: b for b in (CudaAttention(), TritonAttention(), TorchAttention())}
FFN_BACKENDS = {b.name: b for b in (CudaFFN(), TritonFFN(), TorchFFN())}
#: auto-dispatch order: hand-written CUDA, then Triton, then PyTorch
PRIORITY = ("cuda", "triton", "torch")
BACKEND_NAMES = PRIORITY

__all__ = ["ATTENTION_BACKENDS", "FFN_BACKENDS", "PRIORITY", "BACKEND_NAMES"]

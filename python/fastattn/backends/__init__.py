"""Attention backends, registered with :mod:`fastattn.dispatch` in priority order. (The FFN's backends are
in :mod:`fastattn.ffn.backends`.)"""

from .. import dispatch
from ..dispatch import PRIORITY
from .cuda_attention import CudaAttention
from .torch_backend import TorchAttention
from .triton_attention import TritonAttention

for _b in (CudaAttention(), TritonAttention(), TorchAttention()):
    dispatch.register(_b)
ATTENTION_BACKENDS = dispatch.backends("attention")
# Transitional, for cli.py / check.py until they read dispatch.backends("gelu_ffn") (registered by fastattn.ffn)
from .. import ffn as _ffn  # noqa: E402,F401
FFN_BACKENDS = dispatch.backends("gelu_ffn")

__all__ = ["ATTENTION_BACKENDS", "FFN_BACKENDS", "PRIORITY"]

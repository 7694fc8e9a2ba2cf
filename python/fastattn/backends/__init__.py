"""FFN backends of ``gelu_ffn``, registered with :mod:`fastattn.dispatch` (transitional: they move to
``fastattn.ffn``)."""

from .. import dispatch
from .cuda_ffn import CudaFFN
from .torch_backend import TorchFFN
from .triton_ffn import TritonFFN

for _b in (CudaFFN(), TritonFFN(), TorchFFN()):
    dispatch.register(_b)
FFN_BACKENDS = dispatch.backends("gelu_ffn")

__all__ = ["FFN_BACKENDS"]

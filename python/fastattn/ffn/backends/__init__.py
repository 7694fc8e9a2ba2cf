"""FFN backends: ``cuda`` (cuBLASLt + fastattn._C), ``triton`` (kernels/ffn), ``torch`` (PyTorch math).
Importing this package imports neither Triton nor an extension (each backend's probe does, once)."""

from .base import FFNBackend, GeluFFNBackend, LayerNormBackend, LinearActBackend
from .cuda import CudaLayerNorm, CudaLinearAct
from .torch import TorchLayerNorm, TorchLinearAct
from .triton import TritonLayerNorm, TritonLinearAct

__all__ = ["FFNBackend", "LinearActBackend", "LayerNormBackend", "GeluFFNBackend", "CudaLinearAct",
           "CudaLayerNorm", "TritonLinearAct", "TritonLayerNorm", "TorchLinearAct", "TorchLayerNorm"]

"""What an FFN backend declares and implements.

Every FFN backend is an ordinary :class:`fastattn.dispatch.Backend` of one op:

* ``linear_act`` (:class:`LinearActBackend`): ``launch(x, weight, bias, residual, activation, out)``
  writes ``act(x @ weight.T + bias) (+ residual)`` into a preallocated ``out (T, out)``;
* ``residual_layernorm`` (:class:`LayerNormBackend`): ``launch(x, residual, weight, bias, eps, out)``;
* ``gelu_ffn`` (:class:`GeluFFNBackend`): not a third implementation but the ``linear_act`` backend of
  the same name run twice (up projection + GELU, then the down projection); its reasons are the two
  halves' reasons, so the decision is taken once for the whole feed-forward.

A backend declares its capabilities as data (``DTYPES``, ``DEVICES``, ``MIN_CAPABILITY``,
``SUPPORTS_BACKWARD``) and adds only its own reasons in ``special_reasons``. ``KERNEL = False`` marks the
``torch`` backend (PyTorch math: :meth:`math`, autograd native); kernel backends run through the
``fastattn::`` custom ops for autograd and ``torch.compile`` (:mod:`fastattn.ffn.custom_ops`), which
this module does not import.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ... import dispatch
from ..problem import Activation, GeluFFN


class FFNBackend(dispatch.Backend):
    KERNEL = True
    DTYPES = (torch.float16, torch.bfloat16, torch.float32)
    DTYPE_HINT = " (float64 runs on the torch backend)"

    def beats_eager(self, device: torch.device) -> Optional[str]:
        """``None`` when this backend runs the FFN at least as fast as the stock PyTorch modules on
        ``device``, else why not (``fastattn.optimize`` swaps a module only when it is ``None``). Kernel
        backends fuse the bias, activation and residual into the GEMM's epilogue (one pass over the output
        fewer per op) on a GPU; under the Triton interpreter (CPU tensors) they are a test mode."""
        if not self.KERNEL:
            return (f"the {self.name} backend is PyTorch's own math plus fastattn's dispatch: no faster than "
                    "the stock module")
        if device.type != "cuda":
            return f"on {device} the {self.name} kernels run under the Triton interpreter (a test mode)"
        return None


class LinearActBackend(FFNBackend):
    op = "linear_act"

    def launch(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               residual: Optional[torch.Tensor], activation: Activation, out: torch.Tensor) -> None:
        """``out[:] = act(x @ weight.T + bias) + residual``; ``x (T, in)``, ``out (T, out)`` contiguous."""
        raise NotImplementedError


class LayerNormBackend(FFNBackend):
    op = "residual_layernorm"

    def launch(self, x: torch.Tensor, residual: Optional[torch.Tensor], weight: Optional[torch.Tensor],
               bias: Optional[torch.Tensor], eps: float, out: torch.Tensor) -> None:
        """``out[:] = LayerNorm(x + residual) * weight + bias`` over rows; ``out`` contiguous."""
        raise NotImplementedError


_DECLARED = ("KERNEL", "DTYPES", "DTYPE_HINT", "DEVICES", "MIN_CAPABILITY", "SUPPORTS_BACKWARD", "SUPPORTS_DROPOUT")


class GeluFFNBackend(FFNBackend):
    """``gelu_ffn`` as two launches of the ``linear_act`` backend of the same name (declared data copied
    from it). The ``linear_act`` backend is looked up in the registry when it runs."""

    op = "gelu_ffn"

    def __init__(self, linear: LinearActBackend) -> None:
        super().__init__()
        self.name = linear.name
        for attr in _DECLARED:
            setattr(self, attr, getattr(linear, attr))

    @property
    def linear(self) -> LinearActBackend:
        return dispatch.backends("linear_act")[self.name]

    def probe(self) -> Optional[str]:
        return self.linear.unavailable_reason()

    def special_reasons(self, p: GeluFFN) -> List[str]:
        lin = self.linear
        return lin.special_reasons(p.up) + [f"down projection: {r}" for r in lin.special_reasons(p.down)]

    def beats_eager(self, device: torch.device) -> Optional[str]:
        return self.linear.beats_eager(device)


__all__ = ["FFNBackend", "LinearActBackend", "LayerNormBackend", "GeluFFNBackend"]

"""Backends, dispatch and custom ops of the FFN building blocks (``fastattn.ffn_ops``).

Two ops, each with ``cuda`` -> ``triton`` -> ``torch`` backends selected like ``fastattn.attention``
(a forced backend, by argument or ``FASTATTN_BACKEND``, runs or raises one ``ValueError`` listing every
reason; auto takes the first that supports the inputs):

* ``linear_act``: ``act(x @ weight.T + bias) (+ residual)``, ``act`` in ``none | gelu_erf | gelu_tanh``
  — the up projection + GELU of BERT/GPT-2 and the down projection + bias (+ residual);
* ``residual_layernorm``: ``LayerNorm(x + residual)`` (BERT's ``BertOutput``).

The kernel backends run through the custom ops ``fastattn::linear_act`` and
``fastattn::residual_layernorm``: fake implementations let ``torch.compile`` trace them, and autograd
recomputes the op in float32 PyTorch math (exact, not fused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..inputs import RowInputs
from .base import load_optional, recompute_grads, save_optional
from .. import dispatch as _dispatch
from . import cuda_ffn, triton_ffn

ACTIVATIONS = ("none", "gelu_erf", "gelu_tanh")
_GELU_APPROX = {"gelu_erf": "none", "gelu_tanh": "tanh"}


def _dt(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class LinearActInputs(RowInputs):
    """``x (T, in)``, ``weight (out, in)`` any strides, ``bias (out,)``, ``residual (T, out)``."""

    x: Tensor
    weight: Tensor
    bias: Optional[Tensor]
    residual: Optional[Tensor]
    activation: str
    out_shape: Tuple[int, ...]


    def describe(self) -> str:
        res = "-residual" if self.residual is not None else ""
        bias = "" if self.bias is not None else "-nobias"
        return (f"t{self.x.shape[0]}-{self.x.shape[1]}x{self.weight.shape[0]}-{_dt(self.dtype)}-"
                f"{self.activation}{bias}{res}")


@dataclass
class LayerNormInputs(RowInputs):
    """``x``, ``residual`` ``(T, N)``; ``weight``, ``bias`` ``(N,)`` or ``None``."""

    x: Tensor
    residual: Optional[Tensor]
    weight: Optional[Tensor]
    bias: Optional[Tensor]
    eps: float
    out_shape: Tuple[int, ...]


    def describe(self) -> str:
        res = "-residual" if self.residual is not None else ""
        return f"t{self.x.shape[0]}-n{self.x.shape[1]}-{_dt(self.dtype)}{res}"


# ----------------------------------------------------------------------------------------- torch math
def linear_act_math(x, weight, bias, residual, activation, compute_dtype=None) -> Tensor:
    """The reference: ``F.linear`` -> ``F.gelu`` -> ``+ residual`` in ``compute_dtype`` (default: x's)."""
    cd = compute_dtype or x.dtype
    cast = (lambda t: None if t is None else t.to(cd))
    y = F.linear(x.to(cd), weight.to(cd), cast(bias))
    if activation != "none":
        y = F.gelu(y, approximate=_GELU_APPROX[activation])
    return y if residual is None else y + residual.to(cd)


def layernorm_math(x, residual, weight, bias, eps, compute_dtype=None) -> Tensor:
    cd = compute_dtype or x.dtype
    cast = (lambda t: None if t is None else t.to(cd))
    h = x.to(cd) if residual is None else x.to(cd) + residual.to(cd)
    return F.layer_norm(h, (h.shape[-1],), cast(weight), cast(bias), eps)


# ------------------------------------------------------------------------------------------ custom ops
def _launcher(backend: str, op: str):
    mods = {"cuda": cuda_ffn, "triton": triton_ffn}
    if backend not in mods:
        raise ValueError(f"fastattn::{op}: backend must be 'cuda' or 'triton' (the kernel backends), got {backend!r}")
    return getattr(mods[backend], op)


@torch.library.custom_op("fastattn::linear_act", mutates_args=())
def linear_act_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor],
                  activation: str, backend: str) -> Tensor:
    """``act(x @ weight.T + bias) + residual`` on ``x (T, in)``; returns a contiguous ``(T, out)``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"fastattn::linear_act: activation must be one of {ACTIVATIONS}, got {activation!r}")
    out = x.new_empty((x.shape[0], weight.shape[0]))
    _launcher(backend, "linear_act")(x, weight, bias, activation, residual, out)
    return out


@linear_act_op.register_fake
def _linear_act_fake(x, weight, bias, residual, activation, backend):
    return x.new_empty((x.shape[0], weight.shape[0]))


def _linear_act_setup(ctx, inputs, output):
    x, weight, bias, residual, activation, backend = inputs
    ctx.activation = activation
    save_optional(ctx, x, weight, bias, residual)


def _linear_act_backward(ctx, dout):
    return (*recompute_grads(linear_act_math, load_optional(ctx), dout, ctx.activation), None, None)


linear_act_op.register_autograd(_linear_act_backward, setup_context=_linear_act_setup)


@torch.library.custom_op("fastattn::residual_layernorm", mutates_args=())
def residual_layernorm_op(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                          eps: float, backend: str) -> Tensor:
    """``LayerNorm(x + residual) * weight + bias`` on ``(T, N)`` rows; returns a contiguous ``(T, N)``."""
    out = x.new_empty(x.shape)
    _launcher(backend, "residual_layernorm")(x, residual, weight, bias, eps, out)
    return out


@residual_layernorm_op.register_fake
def _residual_layernorm_fake(x, residual, weight, bias, eps, backend):
    return x.new_empty(x.shape)


def _ln_setup(ctx, inputs, output):
    x, residual, weight, bias, eps, backend = inputs
    ctx.eps = eps
    save_optional(ctx, x, residual, weight, bias)


def _ln_backward(ctx, dout):
    return (*recompute_grads(layernorm_math, load_optional(ctx), dout, ctx.eps), None, None)


residual_layernorm_op.register_autograd(_ln_backward, setup_context=_ln_setup)


# -------------------------------------------------------------------------------------------- backends
class _Block(_dispatch.Backend):
    name = "?"
    op = "?"

    def unavailable_reason(self) -> Optional[str]:
        raise NotImplementedError

    def not_supported_reasons(self, inp) -> List[str]:
        raise NotImplementedError

    def run(self, inp) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<fastattn {self.op} backend {self.name!r}>"


class CudaLinearAct(_Block):
    name, op = "cuda", "linear_act"

    def unavailable_reason(self):
        return cuda_ffn.unavailable_reason()

    def not_supported_reasons(self, inp: LinearActInputs) -> List[str]:
        return cuda_ffn.linear_reasons(inp.x, inp.weight, inp.bias, inp.residual, inp.activation)

    def run(self, inp):
        return torch.ops.fastattn.linear_act(inp.x, inp.weight, inp.bias, inp.residual, inp.activation, "cuda")


class TritonLinearAct(_Block):
    name, op = "triton", "linear_act"

    def unavailable_reason(self):
        return triton_ffn._triton_reason()

    def not_supported_reasons(self, inp: LinearActInputs) -> List[str]:
        return triton_ffn.linear_reasons(inp.x, inp.weight, inp.bias, inp.residual)

    def run(self, inp):
        return torch.ops.fastattn.linear_act(inp.x, inp.weight, inp.bias, inp.residual, inp.activation, "triton")


class TorchLinearAct(_Block):
    name, op, SUPPORTS_BACKWARD = "torch", "linear_act", True

    def unavailable_reason(self):
        return None

    def not_supported_reasons(self, inp) -> List[str]:
        return []

    def run(self, inp):
        return linear_act_math(inp.x, inp.weight, inp.bias, inp.residual, inp.activation)


class CudaLayerNorm(_Block):
    name, op = "cuda", "residual_layernorm"

    def unavailable_reason(self):
        return cuda_ffn.layernorm_unavailable_reason()

    def not_supported_reasons(self, inp: LayerNormInputs) -> List[str]:
        return cuda_ffn.layernorm_reasons(inp.x, inp.residual, inp.weight, inp.bias)

    def run(self, inp):
        return torch.ops.fastattn.residual_layernorm(inp.x, inp.residual, inp.weight, inp.bias, inp.eps, "cuda")


class TritonLayerNorm(_Block):
    name, op = "triton", "residual_layernorm"

    def unavailable_reason(self):
        return triton_ffn._triton_reason()

    def not_supported_reasons(self, inp: LayerNormInputs) -> List[str]:
        return triton_ffn.layernorm_reasons(inp.x, inp.weight, inp.bias)

    def run(self, inp):
        return torch.ops.fastattn.residual_layernorm(inp.x, inp.residual, inp.weight, inp.bias, inp.eps, "triton")


class TorchLayerNorm(_Block):
    name, op, SUPPORTS_BACKWARD = "torch", "residual_layernorm", True

    def unavailable_reason(self):
        return None

    def not_supported_reasons(self, inp) -> List[str]:
        return []

    def run(self, inp):
        return layernorm_math(inp.x, inp.residual, inp.weight, inp.bias, inp.eps)


BLOCK_BACKENDS: Dict[str, Dict[str, _Block]] = {
    "linear_act": {b.name: b for b in (CudaLinearAct(), TritonLinearAct(), TorchLinearAct())},
    "residual_layernorm": {b.name: b for b in (CudaLayerNorm(), TritonLayerNorm(), TorchLayerNorm())},
}


# -------------------------------------------------------------------------------------------- dispatch
def _register() -> None:
    for table in BLOCK_BACKENDS.values():
        for b in table.values():
            _dispatch.register(b)


_register()


def explain(op: str, inp, backend: Optional[str] = None) -> Dict[str, List[str]]:
    """``{backend: reasons}`` for a block op (``fastattn.dispatch.explain``)."""
    from .. import dispatch
    return dispatch.explain(op, inp, backend)


def select(op: str, inp, backend: Optional[str] = None) -> _Block:
    """The backend that runs ``op`` on ``inp`` (``fastattn.dispatch.select``: same rules and messages)."""
    from .. import dispatch
    return dispatch.select(op, inp, backend)


def reset() -> None:
    """Forget cached extension state (tests)."""
    cuda_ffn._blas_state = None


__all__ = ["LinearActInputs", "LayerNormInputs", "BLOCK_BACKENDS", "select", "explain", "linear_act_math",
           "layernorm_math"]

"""The FFN's ``torch.library`` custom ops and how a chosen backend runs.

* ``fastattn::linear_act(x, weight, bias, residual, activation, backend)`` — ``act(x @ weight.T + bias)
  (+ residual)`` on ``x (T, in)``, a contiguous ``(T, out)``; ``activation`` is an
  :class:`~fastattn.ffn.problem.Activation` label (``"none"``, ``"gelu_erf"``, ``"gelu_tanh"``);
* ``fastattn::residual_layernorm(x, residual, weight, bias, eps, backend)`` — ``LayerNorm(x + residual)``
  on ``(T, N)`` rows, a contiguous ``(T, N)``.

``backend`` names a kernel backend (``"cuda"`` / ``"triton"``), looked up in :mod:`fastattn.dispatch`.
Each op has a fake implementation (``torch.compile(fullgraph=True)`` traces through it) and a recompute
backward (:mod:`fastattn.recompute`: the op recomputed in float32 PyTorch math, exact, not fused).
``gelu_ffn`` is two ``linear_act`` ops; there is no third op.

:func:`linear_act` / :func:`residual_layernorm` / :func:`gelu_ffn` run a chosen backend: the ``torch``
backend as plain PyTorch math (native autograd); a kernel backend through the op when autograd or
``torch.compile`` needs it, else by launching directly (eager inference: the custom-op layer costs tens
of microseconds a call, more than a decode-sized kernel).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import dispatch
from ..errors import InputError
from ..recompute import load_optional, recompute_grads, save_optional
from .problem import Activation, GeluFFN, LinearAct, ResidualLayerNorm
from .reference import layernorm_math, linear_act_math


def _kernel_backend(op: str, name: str):
    b = dispatch.backends(op).get(name)
    if b is None or not b.KERNEL:
        kernels = [n for n, k in dispatch.backends(op).items() if k.KERNEL]
        raise InputError(f"fastattn::{op}: backend must be {' or '.join(repr(n) for n in kernels)} (the kernel "
                         f"backends), got {name!r}")
    return b


# ------------------------------------------------------------------------------------------ linear_act
@torch.library.custom_op("fastattn::linear_act", mutates_args=())
def linear_act_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor],
                  activation: str, backend: str) -> Tensor:
    act = Activation.parse(activation)
    out = x.new_empty((x.shape[0], weight.shape[0]))
    _kernel_backend("linear_act", backend).launch(x, weight, bias, residual, act, out)
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


# ---------------------------------------------------------------------------------- residual_layernorm
@torch.library.custom_op("fastattn::residual_layernorm", mutates_args=())
def residual_layernorm_op(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                          eps: float, backend: str) -> Tensor:
    out = x.new_empty(x.shape)
    _kernel_backend("residual_layernorm", backend).launch(x, residual, weight, bias, eps, out)
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


# --------------------------------------------------------------------------------------- run a backend
def _through_op(*tensors: Optional[Tensor]) -> bool:
    if torch.compiler.is_compiling():
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def linear_act(backend, x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor],
               activation: Activation) -> Tensor:
    """``act(x @ weight.T + bias) + residual`` on the ``linear_act`` backend ``backend``; ``(T, out)``."""
    if not backend.KERNEL:
        return backend.math(x, weight, bias, residual, activation)
    if _through_op(x, weight, bias, residual):
        return torch.ops.fastattn.linear_act(x, weight, bias, residual, activation.label, backend.name)
    out = x.new_empty((x.shape[0], weight.shape[0]))
    backend.launch(x, weight, bias, residual, activation, out)
    return out


def run_linear_act(backend, p: LinearAct) -> Tensor:
    return linear_act(backend, p.x, p.weight, p.bias, p.residual, p.activation).reshape(p.out_shape)


def run_residual_layernorm(backend, p: ResidualLayerNorm) -> Tensor:
    if not backend.KERNEL:
        out = backend.math(p.x, p.residual, p.weight, p.bias, p.eps)
    elif _through_op(p.x, p.residual, p.weight, p.bias):
        out = torch.ops.fastattn.residual_layernorm(p.x, p.residual, p.weight, p.bias, p.eps, backend.name)
    else:
        out = p.x.new_empty(p.x.shape)
        backend.launch(p.x, p.residual, p.weight, p.bias, p.eps, out)
    return out.reshape(p.out_shape)


def run_gelu_ffn(backend, p: GeluFFN) -> Tensor:
    """``gelu_ffn`` on the ``gelu_ffn`` backend ``backend``: its ``linear_act`` backend run twice, the hidden
    activation materialised in the input dtype (as eager PyTorch does)."""
    lin = backend.linear
    up, down = p.up, p.down
    h = linear_act(lin, up.x, up.weight, up.bias, None, up.activation)
    return linear_act(lin, h, down.weight, down.bias, None, Activation.NONE).reshape(p.out_shape)


__all__ = ["linear_act_op", "residual_layernorm_op", "linear_act", "run_linear_act", "run_residual_layernorm",
           "run_gelu_ffn"]

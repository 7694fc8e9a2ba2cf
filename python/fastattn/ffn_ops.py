"""Feed-forward building blocks used by the Hugging Face swap (BERT ``BertIntermediate`` /
``BertOutput``, GPT-2 ``GPT2MLP``). Each computes exactly the PyTorch expression in its docstring, fused,
on the first of the ``cuda`` -> ``triton`` -> ``torch`` backends that supports the inputs
(``backend=`` or ``FASTATTN_BACKEND`` forces one; a forced backend that cannot run the inputs raises a
``ValueError`` listing why). See ``fastattn.backends.ffn_blocks``.

Shapes: ``x (..., in)``, ``weight (out, in)`` in ``nn.Linear`` layout with any strides (GPT-2's ``Conv1D``
weight ``(in, out)`` is passed as ``weight.t()``, a view, never copied), ``bias (out,)`` or ``None``;
results are contiguous ``(..., out)``. dtypes float16, bfloat16, float32 (fp32 computed without TF32) on
the kernel backends; float64 on ``torch``. Fused kernels keep the GEMM accumulator, bias, GELU and
residual add in fp32 and round once (eager rounds after each op), which is at least as accurate.
"""

from __future__ import annotations

from typing import Optional

import torch

from .backends import ffn_blocks
from .backends.ffn_blocks import LayerNormInputs, LinearActInputs
from .inputs import ATTN_DTYPES, GELU_APPROXIMATIONS

__all__ = ["linear_gelu", "linear_residual", "residual_layernorm"]

_GELU_ACT = {"none": "gelu_erf", "tanh": "gelu_tanh"}


def _check_tensor(name: str, t, min_dim: int = 1) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dim(s), got shape {tuple(t.shape)}")
    if t.dtype not in ATTN_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; supported: float16, bfloat16, float32 (float64 on torch)")
    return t


def _check_same(named: dict) -> None:
    named = {n: t for n, t in named.items() if t is not None}
    dtypes = {t.dtype for t in named.values()}
    if len(dtypes) != 1:
        raise TypeError(", ".join(named) + " must share one dtype; got " +
                        ", ".join(f"{n} {str(t.dtype).replace('torch.', '')}" for n, t in named.items()))
    devices = {t.device for t in named.values()}
    if len(devices) != 1:
        raise ValueError(", ".join(named) + " must be on one device; got " +
                         ", ".join(f"{n} {t.device}" for n, t in named.items()))


def _linear_inputs(x, weight, bias, residual, activation) -> LinearActInputs:
    _check_tensor("x", x)
    _check_tensor("weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D nn.Linear weight (out, in); got shape {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight has shape {tuple(weight.shape)} (out, in) but x has in_features={x.shape[-1]}; "
                         "weight.shape[1] must equal x.shape[-1] (GPT-2 Conv1D weights: pass weight.t())")
    n = weight.shape[0]
    if bias is not None:
        _check_tensor("bias", bias)
        if tuple(bias.shape) != (n,):
            raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
    out_shape = tuple(x.shape[:-1]) + (n,)
    if residual is not None:
        _check_tensor("residual", residual)
        if tuple(residual.shape) != out_shape:
            raise ValueError(f"residual must have the output's shape {out_shape} (x.shape[:-1] + (out,)), "
                             f"got {tuple(residual.shape)}")
    _check_same({"x": x, "weight": weight, "bias": bias, "residual": residual})
    x2 = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x  # a view whenever the strides allow it
    r2 = None if residual is None else (residual.reshape(-1, n) if residual.dim() != 2 else residual)
    return LinearActInputs(x2, weight, bias, r2, activation, out_shape)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], *,
                approximate: str = "none", backend: Optional[str] = None) -> torch.Tensor:
    """``F.gelu(F.linear(x, weight, bias), approximate=approximate)``; ``weight`` ``(out, in)``, any strides.

    ``approximate="none"`` is the exact erf GELU (HF ``"gelu"``, BERT), ``"tanh"`` the tanh approximation
    (HF ``"gelu_new"`` / ``"gelu_pytorch_tanh"``, GPT-2); one is never substituted for the other.
    """
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"approximate must be 'none' (exact erf GELU, HF 'gelu') or 'tanh' (HF 'gelu_new' / "
                         f"'gelu_pytorch_tanh'); got {approximate!r}")
    inp = _linear_inputs(x, weight, bias, None, _GELU_ACT[approximate])
    impl = ffn_blocks.select("linear_act", inp, backend)
    return impl.run(inp).reshape(inp.out_shape)


def linear_residual(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    residual: Optional[torch.Tensor] = None, *, backend: Optional[str] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias) + residual`` (``residual`` may be ``None``; shape ``x.shape[:-1] + (out,)``)."""
    inp = _linear_inputs(x, weight, bias, residual, "none")
    impl = ffn_blocks.select("linear_act", inp, backend)
    return impl.run(inp).reshape(inp.out_shape)


def residual_layernorm(x: torch.Tensor, residual: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                       bias: Optional[torch.Tensor], eps: float = 1e-5, *,
                       backend: Optional[str] = None) -> torch.Tensor:
    """``F.layer_norm(x + residual, (x.shape[-1],), weight, bias, eps)`` (``residual`` may be ``None``).

    Fused: ``x + residual`` is formed in fp32 (never rounded), statistics are fp32, one rounding at the end.
    """
    _check_tensor("x", x)
    n = x.shape[-1]
    if residual is not None:
        _check_tensor("residual", residual)
        if residual.shape != x.shape:
            raise ValueError(f"residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_tensor(name, t)
            if tuple(t.shape) != (n,):
                raise ValueError(f"{name} must have shape ({n},) (normalized over the last dim), got {tuple(t.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a float >= 0, got {eps!r}")
    _check_same({"x": x, "residual": residual, "weight": weight, "bias": bias})
    x2 = x.reshape(-1, n) if x.dim() != 2 else x
    r2 = None if residual is None else (residual.reshape(-1, n) if residual.dim() != 2 else residual)
    inp = LayerNormInputs(x2, r2, weight, bias, float(eps), tuple(x.shape))
    impl = ffn_blocks.select("residual_layernorm", inp, backend)
    return impl.run(inp).reshape(inp.out_shape)

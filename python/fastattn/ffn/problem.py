"""The feed-forward's input records and their validation, in one place.

* :class:`Activation` — the one table of activations: the names users and Hugging Face configs write
  (``"none"``, ``"gelu_erf"``, ``"gelu_tanh"``, ``F.gelu``'s ``approximate=``, HF ``hidden_act`` names)
  mapped to the codes the kernels take (the Triton ``ACTIVATION`` constexpr of
  ``kernels/ffn/activations.py`` and the C++ ``enum class Activation`` of ``csrc/ffn``, pinned to this
  table by a test).
* :class:`LinearAct` — ``act(x @ weight.T + bias) (+ residual)`` on ``(T, in)`` rows;
* :class:`ResidualLayerNorm` — ``LayerNorm(x + residual) * weight + bias`` on ``(T, N)`` rows;
* :class:`GeluFFN` — ``fastattn.gelu_ffn``: two :class:`LinearAct` (up projection + GELU, then the down
  projection of the hidden activation the first one produces).

The ``normalize_*`` functions check every user argument once, with errors that name the argument
(:mod:`fastattn.errors`); backends get the records and never re-validate. No tensor is copied: leading
dims are flattened into *views* (``reshape`` of a tensor whose rows cannot be viewed flat is the one
documented copy, as in ``F.linear``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import InputError, InputTypeError
from ..runtime import dtype_name

#: dtypes the FFN accepts (float64 runs on the torch backend only)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Activation(enum.IntEnum):
    """The activation fused after a GEMM. Values are the kernels' codes."""

    NONE = 0
    GELU_ERF = 1   # x/2 (1 + erf(x / sqrt 2)): F.gelu(approximate="none"), HF "gelu" (BERT)
    GELU_TANH = 2  # x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): approximate="tanh", HF "gelu_new" (GPT-2)

    @property
    def label(self) -> str:
        """``"none"`` / ``"gelu_erf"`` / ``"gelu_tanh"`` (the custom ops' ``activation`` argument)."""
        return self.name.lower()

    @property
    def approximate(self) -> Optional[str]:
        """``F.gelu``'s ``approximate=`` for a GELU, ``None`` for :attr:`NONE`."""
        return _APPROXIMATE_OF.get(self)

    def torch(self, t: torch.Tensor) -> torch.Tensor:
        """The activation in PyTorch math (the reference and the torch backend)."""
        return t if self is Activation.NONE else F.gelu(t, approximate=self.approximate)

    @classmethod
    def parse(cls, value, arg: str = "activation") -> "Activation":
        """From an :class:`Activation` or a label (``"none"``, ``"gelu_erf"``, ``"gelu_tanh"``)."""
        if isinstance(value, Activation):
            return value
        act = _BY_LABEL.get(value) if isinstance(value, str) else None
        if act is None:
            raise InputError(f"{arg} must be one of {list(_BY_LABEL)}, got {value!r}")
        return act

    @classmethod
    def from_approximate(cls, approximate, arg: str = "approximate") -> "Activation":
        """The GELU of ``F.gelu(..., approximate=approximate)``; never substitutes one for the other."""
        act = _BY_APPROXIMATE.get(approximate) if isinstance(approximate, str) else None
        if act is None:
            raise InputError(f"{arg} must be 'none' (exact erf GELU, HF 'gelu') or 'tanh' (HF 'gelu_new' / "
                             f"'gelu_pytorch_tanh'); got {approximate!r}")
        return act

    @classmethod
    def from_hf(cls, name) -> Optional["Activation"]:
        """The GELU a Hugging Face activation name computes (``hidden_act``, ``activation_function``), or
        ``None`` when fastattn has no fused kernel for it (that FFN is left alone)."""
        return HF_ACTIVATIONS.get(name) if isinstance(name, str) else None


_BY_LABEL: Dict[str, Activation] = {a.label: a for a in Activation}
_BY_APPROXIMATE: Dict[str, Activation] = {"none": Activation.GELU_ERF, "tanh": Activation.GELU_TANH}
_APPROXIMATE_OF = {v: k for k, v in _BY_APPROXIMATE.items()}
#: Hugging Face ``ACT2FN`` names -> the GELU they compute (checked in float64 against ``ACT2FN`` by a test)
HF_ACTIVATIONS: Dict[str, Activation] = {
    "gelu": Activation.GELU_ERF,               # nn.functional.gelu, exact erf
    "gelu_python": Activation.GELU_ERF,        # x/2 (1 + erf(x/sqrt 2)), same function
    "gelu_new": Activation.GELU_TANH,          # GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "gelu_pytorch_tanh": Activation.GELU_TANH,  # nn.functional.gelu(approximate="tanh")
    "gelu_python_tanh": Activation.GELU_TANH,
    "gelu_fast": Activation.GELU_TANH,         # the tanh formula written as x*0.7978845608*(1 + 0.044715 x^2)
}


# -------------------------------------------------------------------------------------------- records
class _Rows:
    """Shared by the records: ``dtype``/``device`` of the weights' operand, ``requires_grad`` over every
    tensor field, and no dropout."""

    dropout_p = 0.0

    @property
    def requires_grad(self) -> bool:
        return torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad for t in vars(self).values())


@dataclass
class LinearAct(_Rows):
    """``act(x @ weight.T + bias) (+ residual)``: ``x (T, in)``; ``weight (out, in)`` any strides;
    ``bias (out,)`` any stride or ``None``; ``residual (T, out)`` or ``None``; the result is
    ``out_shape``, ``(T, out)`` rows. ``names`` are the caller's argument names (``x, weight, bias,
    residual``; ``gelu_ffn`` says ``x, w1, b1`` / ``hidden, w2, b2``), used in every reason. ``x is None``
    in :class:`GeluFFN`'s down projection: its input is the hidden activation the up projection will
    write, a fresh contiguous ``(T, hidden)`` buffer of the weights' dtype and device."""

    x: Optional[torch.Tensor]
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    residual: Optional[torch.Tensor]
    activation: Activation
    out_shape: Tuple[int, ...]
    names: Tuple[str, str, str, str] = ("x", "weight", "bias", "residual")

    @property
    def dtype(self) -> torch.dtype: return self.weight.dtype
    @property
    def device(self) -> torch.device: return self.weight.device
    @property
    def tokens(self) -> int: return self.x.shape[0] if self.x is not None else self.out_shape[0]
    @property
    def d_in(self) -> int: return self.weight.shape[1]
    @property
    def d_out(self) -> int: return self.weight.shape[0]

    def describe(self) -> str:
        res = "-residual" if self.residual is not None else ""
        bias = "" if self.bias is not None else "-nobias"
        return f"t{self.tokens}-{self.d_in}x{self.d_out}-{dtype_name(self.dtype)}-{self.activation.label}{bias}{res}"


@dataclass
class ResidualLayerNorm(_Rows):
    """``LayerNorm(x + residual) * weight + bias`` over the last dim: ``x``, ``residual`` ``(T, N)``;
    ``weight``, ``bias`` ``(N,)`` or ``None``."""

    x: torch.Tensor
    residual: Optional[torch.Tensor]
    weight: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    eps: float
    out_shape: Tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype: return self.x.dtype
    @property
    def device(self) -> torch.device: return self.x.device

    def describe(self) -> str:
        res = "-residual" if self.residual is not None else ""
        return f"t{self.x.shape[0]}-n{self.x.shape[1]}-{dtype_name(self.dtype)}{res}"


@dataclass
class GeluFFN(_Rows):
    """``fastattn.gelu_ffn``: ``down(up(x))`` with ``up = GELU(x @ w1.T + b1)``, ``down = h @ w2.T + b2``."""

    up: LinearAct
    down: LinearAct
    out_shape: Tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype: return self.up.dtype
    @property
    def device(self) -> torch.device: return self.up.device
    @property
    def approximate(self) -> str: return self.up.activation.approximate

    @property
    def requires_grad(self) -> bool:
        return self.up.requires_grad or self.down.requires_grad

    def describe(self) -> str:
        up = self.up
        return (f"t{up.tokens}-{up.d_in}x{up.d_out}x{self.down.d_out}-{dtype_name(self.dtype)}-"
                f"{up.activation.label}")


# ----------------------------------------------------------------------------------------- validation
def _tensor(name: str, t, min_dim: int = 1) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < min_dim:
        raise InputError(f"{name} must have at least {min_dim} dim(s), got shape {tuple(t.shape)}")
    if t.dtype not in DTYPES:
        raise InputTypeError(f"{name} has dtype {dtype_name(t.dtype)}; supported: float16, bfloat16, float32 "
                             "(float64 on the torch backend)")
    return t


def _optional(name: str, t, shape: Tuple[int, ...], what: str = "") -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{name} must be None or a torch.Tensor, got {type(t).__name__}")
    _tensor(name, t)
    if tuple(t.shape) != shape:
        raise InputError(f"{name} must have shape {shape}{what}, got {tuple(t.shape)}")


def _same(names: Tuple[str, ...], *tensors: Optional[torch.Tensor]) -> None:
    first = tensors[0]
    dtype, device = first.dtype, first.device
    for t in tensors[1:]:
        if t is not None and (t.dtype != dtype or t.device != device):
            break
    else:
        return
    named = {n: t for n, t in zip(names, tensors) if t is not None}
    if len({t.dtype for t in named.values()}) != 1:
        raise InputTypeError(", ".join(named) + " must share one dtype; got " +
                             ", ".join(f"{n} {dtype_name(t.dtype)}" for n, t in named.items()))
    raise InputError(", ".join(named) + " must be on one device; got " +
                     ", ".join(f"{n} {t.device}" for n, t in named.items()))


def _weight(name: str, w, x: torch.Tensor, x_name: str, what: str) -> None:
    _tensor(name, w)
    if w.dim() != 2:
        raise InputError(f"{name} must be a 2-D nn.Linear weight (out, in); got shape {tuple(w.shape)}")
    if w.shape[1] != x.shape[-1]:
        raise InputError(f"{name} has shape {tuple(w.shape)} {what} but {x_name} has in_features={x.shape[-1]}; "
                         f"{name}.shape[1] must equal {x_name}.shape[-1] (GPT-2 Conv1D weights: pass weight.t())")


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    return t if t.dim() == 2 else t.reshape(-1, n)  # a view whenever the strides allow it


def normalize_linear_act(x, weight, bias, residual, activation) -> LinearAct:
    """``linear_gelu`` / ``linear_residual`` arguments -> :class:`LinearAct`."""
    act = Activation.parse(activation)
    _tensor("x", x)
    _weight("weight", weight, x, "x", "(out, in)")
    n = weight.shape[0]
    _optional("bias", bias, (n,))
    out_shape = tuple(x.shape[:-1]) + (n,)
    _optional("residual", residual, out_shape, " (the output's shape: x.shape[:-1] + (out,))")
    _same(("x", "weight", "bias", "residual"), x, weight, bias, residual)
    r2 = None if residual is None else _rows(residual, n)
    return LinearAct(_rows(x, x.shape[-1]), weight, bias, r2, act, out_shape)


def normalize_residual_layernorm(x, residual, weight, bias, eps) -> ResidualLayerNorm:
    _tensor("x", x)
    n = x.shape[-1]
    _optional("residual", residual, tuple(x.shape), " (x's shape)")
    _optional("weight", weight, (n,), " (normalized over the last dim)")
    _optional("bias", bias, (n,), " (normalized over the last dim)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise InputError(f"eps must be a float >= 0, got {eps!r}")
    _same(("x", "residual", "weight", "bias"), x, residual, weight, bias)
    r2 = None if residual is None else _rows(residual, n)
    return ResidualLayerNorm(_rows(x, n), r2, weight, bias, float(eps), tuple(x.shape))


def normalize_gelu_ffn(x, w1, b1, w2, b2, approximate="none") -> GeluFFN:
    """``fastattn.gelu_ffn`` arguments -> :class:`GeluFFN`."""
    act = Activation.from_approximate(approximate)
    _tensor("x", x)
    _weight("w1", w1, x, "x", "(hidden, in)")
    _tensor("w2", w2)
    if w2.dim() != 2:
        raise InputError(f"w2 must be a 2-D nn.Linear weight (out, hidden); got shape {tuple(w2.shape)}")
    if w2.shape[1] != w1.shape[0]:
        raise InputError(f"w2 has shape {tuple(w2.shape)} (out, hidden) but w1 gives hidden={w1.shape[0]}; "
                         "w2.shape[1] must equal w1.shape[0]")
    _optional("b1", b1, (w1.shape[0],))
    _optional("b2", b2, (w2.shape[0],))
    _same(("x", "w1", "b1", "w2", "b2"), x, w1, b1, w2, b2)
    x2 = _rows(x, x.shape[-1])
    T, hidden = x2.shape[0], w1.shape[0]
    up = LinearAct(x2, w1, b1, None, act, (T, hidden), ("x", "w1", "b1", "residual"))
    down = LinearAct(None, w2, b2, None, Activation.NONE, (T, w2.shape[0]), ("hidden", "w2", "b2", "residual"))
    return GeluFFN(up, down, tuple(x.shape[:-1]) + (w2.shape[0],))


__all__ = ["Activation", "HF_ACTIVATIONS", "LinearAct", "ResidualLayerNorm", "GeluFFN", "normalize_linear_act",
           "normalize_residual_layernorm", "normalize_gelu_ffn", "DTYPES"]

"""What every backend declares (the xformers pattern).

A backend is one way to run one op (``"attention"`` or ``"gelu_ffn"``) on normalised inputs:

* :meth:`Backend.unavailable_reason` — ``None`` if it can run on this machine at all, else why not
  (missing Triton, extension not built, no GPU, ...). Cached; cheap to call.
* :meth:`Backend.not_supported_reasons` — for given inputs, every reason it cannot run them
  (empty list = it can). Only metadata is inspected: no device sync, no data access.
* :meth:`Backend.run` — compute. Attention returns ``(B, Hq, Lq, Ev)``; with ``out_blhd=True`` its
  memory is laid out ``(B, Lq, Hq, Ev)`` (what HF's attention interface returns, so no transpose copy).

Kernel backends implement :meth:`KernelBackend.launch` and get ``run`` through the ``fastattn::``
torch.library custom ops (fake tensors for ``torch.compile``, autograd by recompute).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .. import dispatch as _dispatch


class Backend(_dispatch.Backend):
    """Transitional base of the backends in this package: each still words every reason itself
    (``DEVICES = ("any",)`` keeps the common device wording out), through :meth:`special_reasons`."""

    DEVICES = ("any",)

    def _probe(self) -> Optional[str]:
        return None

    def probe(self) -> Optional[str]:
        return self._probe()

    def run(self, inp, out_blhd: bool = False) -> torch.Tensor:
        raise NotImplementedError


class KernelBackend(Backend):
    """An FFN backend whose compute is a fused kernel launched by :meth:`launch`."""

    def launch(self, inp, out: torch.Tensor) -> None:
        raise NotImplementedError

    def run(self, inp, out_blhd: bool = False) -> torch.Tensor:
        if not inp.requires_grad and not torch.compiler.is_compiling():
            out = inp.x.new_empty((inp.x.shape[0], inp.w2.shape[0]))
            self.launch(inp, out)
            return out
        return torch.ops.fastattn.gelu_ffn_fwd(inp.x, inp.w1, inp.b1, inp.w2, inp.b2, inp.approximate, self.name)


# ------------------------------------------------------------------------------- recompute backward
def save_optional(ctx, *tensors: Optional[Tensor]) -> None:
    """``ctx.save_for_backward`` for arguments that may be ``None`` (restored by :func:`load_optional`)."""
    ctx.present = tuple(t is not None for t in tensors)
    ctx.save_for_backward(*(t for t in tensors if t is not None))


def load_optional(ctx) -> list:
    it = iter(ctx.saved_tensors)
    return [next(it) if p else None for p in ctx.present]


def recompute_grads(math_fn, tensors, dout: Tensor, *args) -> list:
    """Gradients of ``math_fn(*tensors, *args, compute_dtype)`` w.r.t. every non-``None`` tensor, by
    recomputing the op in float32 (float64 for float64 inputs) PyTorch math under autograd: exact,
    not fused. Returns one entry per tensor (``None`` where the tensor is ``None``)."""
    cd = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_(True) for t in tensors]
        ref = math_fn(*leaves, *args, cd)
        grads = iter(torch.autograd.grad(ref, [t for t in leaves if t is not None], dout.to(cd)))
    return [None if t is None else next(grads).to(t.dtype) for t in leaves]


@torch.library.custom_op("fastattn::gelu_ffn_fwd", mutates_args=())
def gelu_ffn_fwd(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                 approximate: str, backend: str) -> Tensor:
    """Fused ``linear -> GELU -> linear`` on ``x`` ``(T, in)``; returns ``(T, out)``."""
    from .. import dispatch
    from ..inputs import FFNInputs
    inp = FFNInputs(x, w1, b1, w2, b2, approximate, (x.shape[0], w2.shape[0]))
    out = x.new_empty((x.shape[0], w2.shape[0]))
    dispatch.backends("gelu_ffn")[backend].launch(inp, out)
    return out


@gelu_ffn_fwd.register_fake
def _gelu_ffn_fake(x, w1, b1, w2, b2, approximate, backend):
    return x.new_empty((x.shape[0], w2.shape[0]))


def _ffn_setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, approximate, backend = inputs
    ctx.approximate = approximate
    save_optional(ctx, x, w1, b1, w2, b2)


def _ffn_math(x, w1, b1, w2, b2, approximate, cd):
    from ..inputs import FFNInputs
    from ..reference import ffn_math
    return ffn_math(FFNInputs(x, w1, b1, w2, b2, approximate, (x.shape[0], w2.shape[0])), cd)


def _ffn_backward(ctx, dout):
    return (*recompute_grads(_ffn_math, load_optional(ctx), dout, ctx.approximate), None, None)


gelu_ffn_fwd.register_autograd(_ffn_backward, setup_context=_ffn_setup_context)


def device_reasons(inp_device: torch.device, *, interpret_ok: bool) -> List[str]:
    """Common device rule for GPU kernels: CUDA tensors, or CPU tensors under TRITON_INTERPRET=1."""
    from ..runtime import interpreting
    interp = interpreting()
    if inp_device.type == "cuda":
        if interp:
            return ["TRITON_INTERPRET=1 is set: the interpreter runs CPU tensors, not CUDA ones"]
        return []
    if inp_device.type == "cpu" and interpret_ok and interp:
        return []
    extra = " (or CPU tensors with TRITON_INTERPRET=1)" if interpret_ok else ""
    return [f"tensors are on {inp_device}; this backend needs CUDA tensors{extra}"]


def triton_runtime_reason() -> Optional[str]:
    from ..runtime import triton_reason
    return triton_reason()

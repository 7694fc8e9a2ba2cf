"""What every backend declares (the xformers pattern).

An attention backend is one way to run ``"attention"`` on normalised inputs (the FFN's backends are
ordinary :class:`fastattn.dispatch.Backend` s in :mod:`fastattn.ffn.backends`):

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
    """A backend whose compute is a fused kernel launched by :meth:`launch`."""

    def launch(self, inp, out: torch.Tensor) -> Optional[torch.Tensor]:
        """Write the result into ``out`` (preallocated, any strides with a contiguous last dim).
        Attention returns the float32 natural-log LSE ``(B, Hq, Lq)`` (``-inf`` on empty rows)."""
        raise NotImplementedError

    def run(self, inp, out_blhd: bool = False) -> torch.Tensor:
        from .. import library
        if not inp.requires_grad and not torch.compiler.is_compiling():
            # eager inference: launch directly (the custom-op layer costs tens of microseconds a call,
            # which is more than a decode-sized kernel); autograd and torch.compile go through the op.
            out = library._empty_out(inp.query, inp.value, out_blhd)
            self.launch(inp, out)
            return out
        return library.attention_via_kernel(self.name, inp, out_blhd)


def device_reasons(inp_device: torch.device, *, interpret_ok: bool) -> List[str]:
    """Common device rule for GPU kernels: CUDA tensors, or CPU tensors under TRITON_INTERPRET=1."""
    import os
    interp = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if inp_device.type == "cuda":
        if interp:
            return ["TRITON_INTERPRET=1 is set: the interpreter runs CPU tensors, not CUDA ones"]
        return []
    if inp_device.type == "cpu" and interpret_ok and interp:
        return []
    extra = " (or CPU tensors with TRITON_INTERPRET=1)" if interpret_ok else ""
    return [f"tensors are on {inp_device}; this backend needs CUDA tensors{extra}"]


def triton_runtime_reason() -> Optional[str]:
    """Why Triton kernels cannot run on this machine, or ``None``: Triton importable, and a CUDA GPU of
    compute capability >= 8.0 visible, or ``TRITON_INTERPRET=1`` (CPU tensors, how CI tests)."""
    import os
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not installed ({e}); pip install triton (Linux)"
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return None
    if not torch.cuda.is_available():
        return ("no CUDA device visible (torch.cuda.is_available() is False); set TRITON_INTERPRET=1 "
                "to run the Triton kernels on CPU tensors")
    caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    if not any(c >= (8, 0) for c in caps):
        return f"needs a GPU of compute capability >= 8.0 (sm_80); visible: {caps}"
    return None

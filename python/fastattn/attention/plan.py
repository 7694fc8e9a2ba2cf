"""``AttnPlan``: how one attention problem runs, decided once and launched many times.

A plan is built from normalised inputs (:class:`~fastattn.inputs.AttentionInputs`, or
:class:`~fastattn.inputs.VarlenInputs` for ``attention_varlen``) and holds the chosen backend and the
dispatch decision. It is cached per *signature* — everything a backend's reasons read:
shapes, strides, dtype, device, the mask's parts and dtypes, whether gradients or dropout are needed,
the requested backend — so a repeated call pays one dict lookup instead of dispatch. The mask's
device-side sequence info (the key range of a ``(B, Lk)`` key mask) lives on the mask object
(:meth:`~fastattn.masks.NormalizedMask.key_range`): computed once per mask, reused by every launch that
gets the same mask (every layer of a Hugging Face forward).

``plan.run(inp)`` launches: no dispatch, no validation beyond what a mismatch would break.

A miss is where a kernel variant may be about to run for the first time: :func:`fastattn.selfcheck.vet`
checks it there on a small problem against the reference (once per variant and process, or never when
the cache file already holds a pass), and re-dispatches when it fails. A hit costs nothing extra.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import torch

from .. import dispatch, selfcheck
from ..runtime import getenv
from ..dispatch import ENV_VAR

_PLANS: Dict[tuple, "AttnPlan"] = {}
_MAX_PLANS = 4096


class AttnPlan:
    __slots__ = ("backend", "description")

    def __init__(self, backend, description: str):
        self.backend = backend
        self.description = description

    def run(self, inp, out_blhd: bool = False) -> torch.Tensor:
        """The forward of ``inp`` (which must have this plan's signature); ``(B, Hq, Lq, Ev)``."""
        rng = None
        if inp.dropout_p > 0 and self.backend.name != "torch":
            rng = draw_rng_state(inp.device)
        return self.backend.run(inp, out_blhd, rng)

    def __repr__(self) -> str:
        return f"AttnPlan({self.description} -> {self.backend.name})"


def draw_rng_state(device: torch.device) -> Tuple[int, int]:
    """``(seed, offset)`` of a kernel's counter-based dropout, from torch's generator for ``device`` (so
    ``torch.manual_seed`` reproduces a run bitwise; never a device sync): :func:`fastattn.dropout.draw_seed_offset`."""
    from ..dropout import draw_seed_offset
    return draw_seed_offset(device)


def signature(inp, backend: Optional[str]) -> tuple:
    q, k, v = inp.query, inp.key, inp.value
    dev = q.device
    align = 0
    if dev.type == "cuda" and not torch.compiler.is_compiling():
        align = (q.data_ptr() | k.data_ptr() | v.data_ptr()) & 15  # the cuda kernel's 16-byte loads
    return (q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), q.dtype, dev, align,
            inp.mask.signature, inp.dropout_p > 0, inp.requires_grad, backend, getenv(ENV_VAR),
            getenv("TRITON_INTERPRET"))


def varlen_signature(inp, backend: Optional[str]) -> tuple:
    """The signature of an ``attention_varlen`` problem (:class:`~fastattn.inputs.VarlenInputs`): what its
    backends' reasons and the self-check's variant key read."""
    q, k, v = inp.query, inp.key, inp.value
    return ("attention_varlen", q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), q.dtype, q.device,
            inp.B, inp.max_seqlen_q, inp.causal, inp.scale > 0, inp.dropout_p > 0, inp.requires_grad, backend,
            getenv(ENV_VAR), getenv("TRITON_INTERPRET"))


def plan_for(inp, backend: Optional[str] = None, op: str = "attention") -> AttnPlan:
    """The cached plan of ``inp``'s signature (dispatching on a miss; raising what dispatch raises).
    ``op="attention_varlen"``: ``inp`` is a :class:`~fastattn.inputs.VarlenInputs`; run it with
    ``plan.backend.run(inp)``."""
    if torch.compiler.is_compiling():  # traced once; the probes are graph constants
        return AttnPlan(dispatch.select(op, inp, backend), "")
    key = signature(inp, backend) if op == "attention" else varlen_signature(inp, backend)
    plan = _PLANS.get(key)
    if plan is None:
        b = dispatch.select(op, inp, backend)
        b, settled = selfcheck.vet(op, inp, b, backend)  # first use of a kernel variant: check it
        plan = AttnPlan(b, inp.describe())
        if settled:  # not while the self-check is deferred (CUDA graph capture): the next eager call checks
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def clear_plans() -> None:
    """Forget every cached plan (tests that flip availability or the environment)."""
    _PLANS.clear()


dispatch.on_reset(clear_plans)

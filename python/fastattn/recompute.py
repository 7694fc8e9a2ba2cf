"""The recompute backward shared by the ``fastattn::`` custom ops that have no fused backward yet: save the
forward's inputs (some of which may be ``None``), then recompute the op in float32 PyTorch math (float64
for float64 inputs) under autograd and return its gradients. Exact, not fused."""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor


def save_optional(ctx, *tensors: Optional[Tensor]) -> None:
    """``ctx.save_for_backward`` for arguments that may be ``None`` (restored by :func:`load_optional`)."""
    ctx.present = tuple(t is not None for t in tensors)
    ctx.save_for_backward(*(t for t in tensors if t is not None))


def load_optional(ctx) -> List[Optional[Tensor]]:
    it = iter(ctx.saved_tensors)
    return [next(it) if p else None for p in ctx.present]


def recompute_grads(math_fn: Callable, tensors, dout: Tensor, *args) -> List[Optional[Tensor]]:
    """Gradients of ``math_fn(*tensors, *args, compute_dtype)`` w.r.t. every non-``None`` tensor, by
    recomputing the op in float32 (float64 for float64 inputs) PyTorch math under autograd. Returns one
    entry per tensor (``None`` where the tensor is ``None``)."""
    cd = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_(True) for t in tensors]
        ref = math_fn(*leaves, *args, cd)
        grads = iter(torch.autograd.grad(ref, [t for t in leaves if t is not None], dout.to(cd)))
    return [None if t is None else next(grads).to(t.dtype) for t in leaves]


__all__ = ["save_optional", "load_optional", "recompute_grads"]

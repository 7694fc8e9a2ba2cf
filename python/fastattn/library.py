"""torch.library custom ops for every fused-kernel entry point.

``fastattn::attn_fwd`` wraps the attention launchers of the ``triton`` and ``cuda`` backends. It has a
fake (meta) implementation so ``torch.compile(fullgraph=True)`` traces through ``fastattn.attention``
without graph breaks, and an autograd formula. (The FFN's ops are in ``fastattn.ffn.custom_ops``.)

Backward (until fused backward kernels land): the forward is recomputed with the reference math
(:mod:`fastattn.reference`, float32 for half inputs) under autograd, and its gradient is returned. It is
exact but materialises the ``(B, Hq, Lq, Lk)`` scores: a documented slow path, never a wrong one.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .inputs import AttentionInputs
from .masks import NormalizedMask

_CAUSAL_CODES = {None: 0, "top_left": 1, "bottom_right": 2}
_CAUSAL_NAMES = {v: k for k, v in _CAUSAL_CODES.items()}


def _kernel_backend(name: str):
    from .backends import ATTENTION_BACKENDS
    return ATTENTION_BACKENDS.get(name)


def _rebuild(q, k, v, key_lengths, key_mask, dense, causal, scale) -> AttentionInputs:
    mask = NormalizedMask(causal=_CAUSAL_NAMES[causal], key_lengths=key_lengths, key_mask=key_mask, dense=dense)
    return AttentionInputs(q, k, v, mask, 0.0, scale, (q.shape[0], q.shape[1], q.shape[2], v.shape[3]))


def _empty_out(q: Tensor, v: Tensor, out_blhd: bool) -> Tensor:
    B, H, L, Ev = q.shape[0], q.shape[1], q.shape[2], v.shape[3]
    if out_blhd:  # (B, Lq, H, Ev) memory, seen as (B, H, Lq, Ev): what HF's attention wants back
        return q.new_empty((B, L, H, Ev)).transpose(1, 2)
    return q.new_empty((B, H, L, Ev))


@torch.library.custom_op("fastattn::attn_fwd", mutates_args=())
def attn_fwd(q: Tensor, k: Tensor, v: Tensor, key_lengths: Optional[Tensor], key_mask: Optional[Tensor],
             dense: Optional[Tensor], causal: int, scale: float, backend: str, out_blhd: bool
             ) -> Tuple[Tensor, Tensor]:
    """Fused attention forward on ``(B, H, L, D)`` views; returns ``(out, lse)``, ``lse`` float32
    ``(B, Hq, Lq)`` natural-log (``-inf`` on rows with no visible key)."""
    attn_backend = _kernel_backend(backend)
    inp = _rebuild(q, k, v, key_lengths, key_mask, dense, causal, scale)
    out = _empty_out(q, v, out_blhd)
    lse = attn_backend.launch(inp, out)
    return out, lse


@attn_fwd.register_fake
def _attn_fwd_fake(q, k, v, key_lengths, key_mask, dense, causal, scale, backend, out_blhd):
    out = _empty_out(q, v, out_blhd)
    lse = q.new_empty((q.shape[0], q.shape[1], q.shape[2]), dtype=torch.float32)
    return out, lse


def _attn_setup_context(ctx, inputs, output):
    q, k, v, key_lengths, key_mask, dense, causal, scale, backend, out_blhd = inputs
    ctx.causal, ctx.scale = causal, scale
    ctx.has = (key_lengths is not None, key_mask is not None, dense is not None)
    ctx.save_for_backward(q, k, v, *(t for t in (key_lengths, key_mask, dense) if t is not None))


def _attn_backward(ctx, dout, dlse):
    from .reference import attention_math
    q, k, v, *rest = ctx.saved_tensors
    it = iter(rest)
    key_lengths, key_mask, dense = (next(it) if h else None for h in ctx.has)
    cd = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        dense_leaf = None
        if dense is not None and dense.is_floating_point() and ctx.needs_input_grad[5]:
            dense_leaf = dense.detach().requires_grad_(True)
        inp = _rebuild(*leaves, key_lengths, key_mask, dense_leaf if dense_leaf is not None else dense,
                       ctx.causal, ctx.scale)
        ref = attention_math(inp, cd)
        wrt = leaves + ([dense_leaf] if dense_leaf is not None else [])
        grads = torch.autograd.grad(ref, wrt, dout.to(cd), allow_unused=True)
    dq, dk, dv = (g.to(t.dtype) if g is not None else None for g, t in zip(grads[:3], (q, k, v)))
    ddense = grads[3].to(dense.dtype) if dense_leaf is not None else None
    return dq, dk, dv, None, None, ddense, None, None, None, None


attn_fwd.register_autograd(_attn_backward, setup_context=_attn_setup_context)


def attention_via_kernel(backend_name: str, inp: AttentionInputs, out_blhd: bool = False) -> Tensor:
    """Run a kernel backend through the custom op; returns ``(B, Hq, Lq, Ev)``."""
    m = inp.mask
    out, _ = torch.ops.fastattn.attn_fwd(inp.query, inp.key, inp.value, m.key_lengths, m.key_mask, m.dense,
                                         _CAUSAL_CODES[m.causal], inp.scale, backend_name, out_blhd)
    return out

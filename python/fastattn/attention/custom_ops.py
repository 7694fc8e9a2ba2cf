"""``torch.library`` custom ops of attention: ``fastattn::attn_fwd`` and ``fastattn::attn_bwd``.

``attn_fwd`` launches a kernel backend's forward and returns ``(out, lse)``; its fake implementation
lets ``torch.compile(fullgraph=True)`` trace ``fastattn.attention`` without graph breaks. The autograd
context keeps q, k, v, out, lse, the mask tensors and the dropout RNG state (two integers) — never a
tensor of size Lq x Lk — and the backward calls ``attn_bwd``, which runs the backend's fused backward
when it has one, else recomputes the reference math under autograd (exact, float32 for half inputs,
but it materialises the ``(B, Hq, Lq, Lk)`` scores: the documented slow path).

A float ``attn_mask`` that itself requires grad is differentiated by the recompute path alone.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..inputs import AttentionInputs
from ..masks import CAUSAL_CODES, CAUSAL_NAMES, NormalizedMask

_FWD_OPS = {}


def _backend(name: str):
    from .. import dispatch
    return dispatch.backends("attention")[name]


def _rebuild(q, k, v, key_lengths, key_mask, dense, causal, scale, dropout_p=0.0) -> AttentionInputs:
    mask = NormalizedMask(causal=CAUSAL_NAMES[causal], key_lengths=key_lengths, key_mask=key_mask, dense=dense)
    return AttentionInputs(q, k, v, mask, dropout_p, scale, (q.shape[0], q.shape[1], q.shape[2], v.shape[3]))


def empty_out(q: Tensor, v: Tensor, out_blhd: bool) -> Tensor:
    """``(B, Hq, Lq, Ev)``; laid out ``(B, Lq, Hq, Ev)`` in memory when ``out_blhd`` (HF's output layout)."""
    B, H, L, Ev = q.shape[0], q.shape[1], q.shape[2], v.shape[3]
    if out_blhd:
        return q.new_empty((B, L, H, Ev)).transpose(1, 2)
    return q.new_empty((B, H, L, Ev))


@torch.library.custom_op("fastattn::attn_fwd", mutates_args=())
def attn_fwd(q: Tensor, k: Tensor, v: Tensor, key_lengths: Optional[Tensor], key_mask: Optional[Tensor],
             dense: Optional[Tensor], causal: int, scale: float, backend: str, out_blhd: bool,
             dropout_p: float = 0.0, seed: int = 0, offset: int = 0) -> Tuple[Tensor, Tensor]:
    """Fused attention forward on ``(B, H, L, D)`` views; returns ``(out, lse)``, ``lse`` float32
    ``(B, Hq, Lq)`` natural-log (``-inf`` on rows with no visible key). ``seed``/``offset``: the
    dropout RNG state (unused when ``dropout_p == 0``)."""
    inp = _rebuild(q, k, v, key_lengths, key_mask, dense, causal, scale, dropout_p)
    out = empty_out(q, v, out_blhd)
    lse = _backend(backend).launch(inp, out, rng=(seed, offset))
    return out, lse


@attn_fwd.register_fake
def _attn_fwd_fake(q, k, v, key_lengths, key_mask, dense, causal, scale, backend, out_blhd,
                   dropout_p=0.0, seed=0, offset=0):
    out = empty_out(q, v, out_blhd)
    lse = q.new_empty((q.shape[0], q.shape[1], q.shape[2]), dtype=torch.float32)
    return out, lse


def recompute_attention_grads(q, k, v, dout, key_lengths, key_mask, dense, causal, scale, dropout_p=0.0,
                              seed=0, offset=0, dense_grad: bool = False) -> List[Optional[Tensor]]:
    """``[dq, dk, dv, ddense]`` by recomputing the reference math under autograd (float32 for half
    inputs). With dropout, the keep mask is regenerated from ``(seed, offset)`` exactly as the kernel
    drew it (:mod:`fastattn.dropout`)."""
    from ..reference import attention_math
    cd = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        dense_leaf = dense.detach().requires_grad_(True) if dense_grad else None
        inp = _rebuild(*leaves, key_lengths, key_mask, dense_leaf if dense_leaf is not None else dense,
                       causal, scale, dropout_p)
        keep = None
        if dropout_p > 0:
            from ..dropout import dropout_keep_mask
            keep = dropout_keep_mask(seed, offset, inp.B, inp.Hq, inp.Lq, inp.Lk, dropout_p, device=q.device)
        ref = attention_math(inp, cd, keep)
        wrt = leaves + ([dense_leaf] if dense_leaf is not None else [])
        grads = torch.autograd.grad(ref, wrt, dout.to(cd), allow_unused=True)
    out = [g.to(t.dtype) if g is not None else torch.zeros_like(t) for g, t in zip(grads[:3], (q, k, v))]
    out.append(grads[3].to(dense.dtype) if dense_leaf is not None else None)
    return out


@torch.library.custom_op("fastattn::attn_bwd", mutates_args=())
def attn_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
             key_lengths: Optional[Tensor], key_mask: Optional[Tensor], dense: Optional[Tensor], causal: int,
             scale: float, backend: str, dropout_p: float = 0.0, seed: int = 0, offset: int = 0
             ) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dq, dk, dv)`` of :func:`attn_fwd`: the backend's fused backward when it has one,
    else the reference recompute."""
    b = _backend(backend)
    if b.SUPPORTS_BACKWARD:
        inp = _rebuild(q, k, v, key_lengths, key_mask, dense, causal, scale, dropout_p)
        return tuple(b.launch_bwd(inp, out, lse, dout, rng=(seed, offset)))
    dq, dk, dv, _ = recompute_attention_grads(q, k, v, dout, key_lengths, key_mask, dense, causal, scale,
                                              dropout_p, seed, offset)
    return dq, dk, dv


@attn_bwd.register_fake
def _attn_bwd_fake(dout, q, k, v, out, lse, key_lengths, key_mask, dense, causal, scale, backend,
                   dropout_p=0.0, seed=0, offset=0):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _attn_setup_context(ctx, inputs, output):
    q, k, v, key_lengths, key_mask, dense, causal, scale, backend, out_blhd, dropout_p, seed, offset = inputs
    out, lse = output
    ctx.causal, ctx.scale, ctx.backend = causal, scale, backend
    ctx.rng = (dropout_p, seed, offset)  # the dropout RNG state: two integers, never a mask
    ctx.has = (key_lengths is not None, key_mask is not None, dense is not None)
    ctx.save_for_backward(q, k, v, out, lse, *(t for t in (key_lengths, key_mask, dense) if t is not None))


def _attn_backward(ctx, dout, dlse):
    q, k, v, out, lse, *rest = ctx.saved_tensors
    it = iter(rest)
    key_lengths, key_mask, dense = (next(it) if h else None for h in ctx.has)
    dropout_p, seed, offset = ctx.rng
    dense_grad = dense is not None and dense.is_floating_point() and ctx.needs_input_grad[5]
    if dense_grad or not _backend(ctx.backend).SUPPORTS_BACKWARD:
        # the mask's own gradient, or a forward-only backend: recompute here, above the custom op
        # (inside an op's implementation autograd does not record, so the recompute cannot run there)
        dq, dk, dv, ddense = recompute_attention_grads(q, k, v, dout, key_lengths, key_mask, dense, ctx.causal,
                                                       ctx.scale, dropout_p, seed, offset, dense_grad=dense_grad)
    else:
        dq, dk, dv = torch.ops.fastattn.attn_bwd(dout.contiguous(), q, k, v, out, lse, key_lengths, key_mask, dense,
                                                 ctx.causal, ctx.scale, ctx.backend, dropout_p, seed, offset)
        ddense = None
    return dq, dk, dv, None, None, ddense, None, None, None, None, None, None, None


attn_fwd.register_autograd(_attn_backward, setup_context=_attn_setup_context)


def attention_via_op(backend_name: str, inp: AttentionInputs, out_blhd: bool = False,
                     rng: Tuple[int, int] = (0, 0)) -> Tensor:
    """Run a kernel backend through the custom op (autograd, ``torch.compile``); ``(B, Hq, Lq, Ev)``."""
    m = inp.mask
    out, _ = torch.ops.fastattn.attn_fwd(inp.query, inp.key, inp.value, m.key_lengths, m.key_mask, m.dense,
                                         CAUSAL_CODES[m.causal], inp.scale, backend_name, out_blhd,
                                         inp.dropout_p, rng[0], rng[1])
    return out

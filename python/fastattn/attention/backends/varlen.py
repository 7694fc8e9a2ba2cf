"""Backends of ``attention_varlen`` (packed sequences, :func:`fastattn.attention_varlen`).

Registered with :mod:`fastattn.dispatch` as the op ``"attention_varlen"``, in the usual priority order.
Each declares what it runs as data: ``VARLEN`` (``None`` if it runs packed sequences, else the one-line
reason it does not), the head shapes (:class:`~.base.HeadShapes`), dtypes, devices, backward and
dropout; its machine-level availability is that of the attention backend of the same name.

* ``cuda``: no varlen kernel yet; declines with its ``VARLEN`` reason.
* ``triton``: the prefill kernel's ``IS_VARLEN`` mode (:func:`~.triton._attn_varlen_fwd_triton`): one
  launch for the whole batch, sequence ``b`` located by ``cu_seqlens`` on the device, the grid sized by
  the caller's ``max_seqlen_q`` (no host read of ``cu_seqlens``; int64 ones are converted on the
  device). fp16, bf16, fp32 (no TF32), head dims 8..256, ``E != Ev``, GQA, causal bottom-right per
  sequence. Fused backward: the backward kernels' ``IS_VARLEN`` mode
  (:func:`~.triton_bwd.attn_varlen_bwd_triton`; GQA reduced in the dK/dV kernel, no atomics), so
  auto-dispatch takes it for training too. Dropout in the forward and the backward kernels, from the
  packed-row counter of :mod:`fastattn.dropout` (seed and offset drawn from torch's generator per call).
  The autograd context keeps q, k, v, out, the LSE ``(Hq, total_q)``, the cu_seqlens and the two RNG
  integers: nothing of size ``Lq x Lk``.
* ``torch``: one PyTorch SDPA call per sequence on views of the packed tensors (no padding, no copy of
  q/k/v, no ``max_len x max_len`` score matrix), concatenated into the packed output; autograd and
  dropout are SDPA's. It reads ``cu_seqlens`` on the host (a device sync on CUDA tensors).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

from ... import dispatch
from ..._post_import import when_imported
from .base import HeadShapes
from .triton import TritonAttention, _attn_varlen_fwd_triton, check_tiles_fwd, grid_reasons, tile_offset_reasons


class VarlenBackend(HeadShapes, dispatch.Backend):
    op = "attention_varlen"
    #: ``None`` if this backend runs packed sequences, else why not (shown by explain / capabilities)
    VARLEN: Optional[str] = None

    def probe(self) -> Optional[str]:
        return dispatch.backends("attention")[self.name].unavailable_reason()

    def special_reasons(self, inp) -> List[str]:
        if self.VARLEN:
            return [self.VARLEN]
        return self.head_shape_reasons(inp) + self.kernel_reasons(inp)

    def kernel_reasons(self, inp) -> List[str]:
        return []

    def capabilities(self):
        caps = super().capabilities()
        caps["varlen"] = self.VARLEN or "supported"
        return caps

    def launch(self, inp, out: torch.Tensor, rng=(0, 0)) -> torch.Tensor:
        """Kernel backends: write the attention of ``inp`` into ``out`` (``(total_q, Hq, Ev)``, contiguous)
        and return the float32 natural-log LSE ``(Hq, total_q)``."""
        raise NotImplementedError

    def check_launch(self, inp, out: torch.Tensor, rng=(0, 0)) -> torch.Tensor:
        """:meth:`launch` as the on-device self-check runs it (:mod:`fastattn.selfcheck`); calls the class's
        :meth:`launch`."""
        return type(self).launch(self, inp, out, rng)

    def run(self, inp) -> torch.Tensor:
        """The forward of one call: ``(total_q, Hq, Ev)`` contiguous."""
        raise NotImplementedError


class CudaVarlen(VarlenBackend):
    name = "cuda"
    DEVICES = ("cuda",)
    VARLEN = "the cuda attention kernel has no packed-sequence (varlen) mode; the triton or torch backend runs them"


def packed_out(inp) -> torch.Tensor:
    """The uninitialised ``(total_q, Hq, Ev)`` output of ``inp`` (a kernel writes every row)."""
    return inp.query.new_empty((inp.query.shape[0], inp.Hq, inp.Ev))


def _int32(cu: torch.Tensor) -> torch.Tensor:
    return cu if cu.dtype == torch.int32 else cu.to(torch.int32)  # on the device: no sync


class TritonVarlen(VarlenBackend):
    name = "triton"
    DTYPES = TritonAttention.DTYPES
    DTYPE_HINT = TritonAttention.DTYPE_HINT
    DEVICES = TritonAttention.DEVICES
    MIN_CAPABILITY = TritonAttention.MIN_CAPABILITY
    HEAD_DIMS = TritonAttention.HEAD_DIMS
    #: the backward kernels' IS_VARLEN mode (kernels/attention/bwd.py): deterministic, no atomics
    SUPPORTS_BACKWARD = True
    #: counter-based dropout on packed rows in the forward and the backward (fastattn.dropout)
    SUPPORTS_DROPOUT = True

    def kernel_reasons(self, inp) -> List[str]:
        q, k, v = inp.query, inp.key, inp.value
        reasons = tile_offset_reasons([("query", q.stride(0)), ("key", k.stride(0)), ("value", v.stride(0))])
        reasons += grid_reasons(inp.B, inp.Hq, inp.max_seqlen_q, "max_seqlen_q")
        if max(q.shape[0], k.shape[0]) >= 2 ** 31:
            reasons.append(f"total_q={q.shape[0]}, total_k={k.shape[0]}: the triton kernel reads int32 cu_seqlens "
                           "(totals below 2^31)")
        return reasons

    def launch(self, inp, out: torch.Tensor, rng=(0, 0), config: Optional[dict] = None) -> torch.Tensor:
        return _attn_varlen_fwd_triton(inp.query, inp.key, inp.value, _int32(inp.cu_seqlens_q),
                                       _int32(inp.cu_seqlens_k), inp.max_seqlen_q, inp.max_seqlen_k, out,
                                       causal=inp.causal, scale=inp.scale, config=config,
                                       dropout_p=inp.dropout_p, seed=rng[0], offset=rng[1])

    def launch_bwd(self, inp, out, lse, dout, rng=(0, 0), config: Optional[dict] = None):
        """``(dq, dk, dv)`` of the forward :meth:`launch` ran with the same ``rng``."""
        from .triton_bwd import attn_varlen_bwd_triton
        return attn_varlen_bwd_triton(inp.query, inp.key, inp.value, out, lse, dout, _int32(inp.cu_seqlens_q),
                                      _int32(inp.cu_seqlens_k), inp.max_seqlen_q, inp.max_seqlen_k,
                                      causal=inp.causal, scale=inp.scale, dropout_p=inp.dropout_p,
                                      seed=rng[0], offset=rng[1], config=config)

    def check_launch(self, inp, out: torch.Tensor, rng=(0, 0)) -> torch.Tensor:
        from .triton import pinned_or_default
        tiles = check_tiles_fwd(inp.device, inp.E, inp.Ev, inp.query.element_size())
        return pinned_or_default(tiles, lambda: type(self).launch(self, inp, out, rng, config=tiles),
                                 lambda: type(self).launch(self, inp, out, rng))

    def check_launch_bwd(self, inp, out, lse, dout, rng=(0, 0)):
        from .triton import _check_tiles, pinned_or_default
        tiles = _check_tiles(inp, "bwd")
        return pinned_or_default(tiles, lambda: type(self).launch_bwd(self, inp, out, lse, dout, rng, config=tiles),
                                 lambda: type(self).launch_bwd(self, inp, out, lse, dout, rng))

    def run(self, inp) -> torch.Tensor:
        rng = (0, 0)
        if inp.dropout_p > 0:  # from torch's generator for the device: torch.manual_seed reproduces a run
            from ...dropout import draw_seed_offset
            rng = draw_seed_offset(inp.device)
        if inp.requires_grad:
            return _TritonVarlenFn.apply(inp.query, inp.key, inp.value, inp, self, rng)
        out = packed_out(inp)
        self.launch(inp, out, rng)
        return out


def _launch_eagerly_under_compile(_module=None) -> None:
    """Under ``torch.compile`` the triton varlen call runs eagerly (a graph break, as the torch backend's
    host read of ``cu_seqlens`` is): it has no ``torch.library`` custom op yet, and dynamo cannot trace the
    launcher. Wrapped once ``torch._dynamo`` is imported (wrapping at import would import dynamo, triton
    and sympy for every user of fastattn)."""
    TritonVarlen.run = torch.compiler.disable(TritonVarlen.run)


when_imported("torch._dynamo", _launch_eagerly_under_compile)


class _TritonVarlenFn(torch.autograd.Function):
    """The triton varlen forward and its fused backward. The context keeps q, k, v, out, the LSE
    ``(Hq, total_q)``, the two cu_seqlens and the dropout ``(seed, offset)`` (host integers): never a
    score or mask matrix."""

    @staticmethod
    def forward(ctx, q, k, v, inp, backend, rng):
        out = packed_out(inp)
        lse = backend.launch(inp, out, rng)
        ctx.save_for_backward(q, k, v, out, lse, inp.cu_seqlens_q, inp.cu_seqlens_k)
        ctx.meta = (inp.max_seqlen_q, inp.max_seqlen_k, inp.causal, inp.dropout_p, inp.scale)
        ctx.rng = rng
        ctx.backend = backend
        return out

    @staticmethod
    def backward(ctx, dout):
        from ...inputs import VarlenInputs
        q, k, v, out, lse, cq, ck = ctx.saved_tensors
        inp = VarlenInputs(q, k, v, cq, ck, *ctx.meta)
        grads = ctx.backend.launch_bwd(inp, out, lse, dout, ctx.rng)
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3])), None, None, None)


_CAUSAL_MASKS = {}


def _bottom_right(lq: int, lk: int, device) -> torch.Tensor:
    """``(lq, lk)`` bool, row ``i`` sees keys ``j <= i + lk - lq`` (only used for ``lq < lk``)."""
    key = (lq, lk, device)
    m = _CAUSAL_MASKS.get(key)
    if m is None:
        m = torch.ones(lq, lk, dtype=torch.bool, device=device).tril(lk - lq)
        if len(_CAUSAL_MASKS) > 256:
            _CAUSAL_MASKS.clear()
        _CAUSAL_MASKS[key] = m
    return m


class TorchVarlen(VarlenBackend):
    name = "torch"
    DEVICES = ("any",)
    SUPPORTS_BACKWARD = True
    SUPPORTS_DROPOUT = True

    def run(self, inp) -> torch.Tensor:
        q, k, v = inp.query, inp.key, inp.value
        Hq, Ev = inp.Hq, inp.Ev
        gqa = inp.Hq != inp.Hkv
        cq = inp.cu_seqlens_q.tolist()
        ck = inp.cu_seqlens_k.tolist()
        pieces = []
        for b in range(len(cq) - 1):
            q0, q1, k0, k1 = cq[b], cq[b + 1], ck[b], ck[b + 1]
            lq, lk = q1 - q0, k1 - k0
            if lq == 0:
                continue
            empty = lq if lk == 0 else (lq - lk if inp.causal and lq > lk else 0)
            if empty:  # rows with no visible key: exactly 0 (bottom-right causal, or no keys at all)
                pieces.append(q.new_zeros((empty, Hq, Ev)))
                q0 += empty
                if q0 == q1:
                    continue
            # (1, H, l, E) views of the packed tensors: 4-D, because PyTorch's CPU SDPA takes its fused
            # (flash) kernel for 4-D inputs only; 3-D ones run the unfused math path
            qb = q[q0:q1].transpose(0, 1).unsqueeze(0)
            kb = k[k0:k1].transpose(0, 1).unsqueeze(0)
            vb = v[k0:k1].transpose(0, 1).unsqueeze(0)
            n = q1 - q0
            mask, causal = None, False
            if inp.causal:
                if n == lk:  # square after dropping the empty rows: top-left == bottom-right
                    causal = inp.scale > 0  # SDPA's is_causal path is NaN for scale <= 0
                    if not causal:
                        mask = _bottom_right(n, lk, q.device)
                else:
                    mask = _bottom_right(n, lk, q.device)
            o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=inp.dropout_p,
                                               is_causal=causal, scale=inp.scale, enable_gqa=gqa)
            pieces.append(o[0].transpose(0, 1))
        if not pieces:
            return q.new_zeros((q.shape[0], Hq, Ev))
        if len(pieces) == 1:
            return pieces[0].contiguous()
        return torch.cat(pieces, 0)


for _b in (CudaVarlen(), TritonVarlen(), TorchVarlen()):
    dispatch.register(_b)

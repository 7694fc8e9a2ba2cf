"""Backends of ``attention_varlen`` (packed sequences, :func:`fastattn.attention_varlen`).

Registered with :mod:`fastattn.dispatch` as the op ``"attention_varlen"``, in the usual priority order.
Each declares what it runs as data (``VARLEN``: ``None`` if it runs packed sequences, else the one-line
reason it does not), and its machine-level availability is that of the attention backend of the same name.

* ``cuda`` and ``triton``: no varlen kernel yet (the Triton prefill kernel's ``IS_VARLEN`` mode is the
  planned one); they decline with their ``VARLEN`` reason, so auto dispatch takes ``torch``.
* ``torch``: one PyTorch SDPA call per sequence on views of the packed tensors (no padding, no copy of
  q/k/v, no ``max_len x max_len`` score matrix), concatenated into the packed output; autograd and
  dropout are SDPA's. It reads ``cu_seqlens`` on the host (a device sync on CUDA tensors).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

from ... import dispatch


class VarlenBackend(dispatch.Backend):
    op = "attention_varlen"
    #: ``None`` if this backend runs packed sequences, else why not (shown by explain / capabilities)
    VARLEN: Optional[str] = None

    def probe(self) -> Optional[str]:
        return dispatch.backends("attention")[self.name].unavailable_reason()

    def special_reasons(self, inp) -> List[str]:
        return [self.VARLEN] if self.VARLEN else []

    def capabilities(self):
        caps = super().capabilities()
        caps["varlen"] = self.VARLEN or "supported"
        return caps

    def run(self, inp) -> torch.Tensor:
        raise NotImplementedError


class CudaVarlen(VarlenBackend):
    name = "cuda"
    DEVICES = ("cuda",)
    VARLEN = "the cuda attention kernel has no packed-sequence (varlen) mode; the torch backend runs them"


class TritonVarlen(VarlenBackend):
    name = "triton"
    DEVICES = ("cuda", "interpret")
    VARLEN = ("the Triton prefill kernel has no IS_VARLEN mode yet (cu_seqlens indexing); the torch backend "
              "runs packed sequences")


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

"""Mask forms and their normalisation.

Every backend sees one normalised description of "which key may query row i attend to":

* ``causal``: ``None``, ``"top_left"`` (SDPA ``is_causal=True``: key ``j`` visible iff ``j <= i``) or
  ``"bottom_right"`` (``CausalBias`` lower-right / KV cache: ``j <= i + Lk - Lq``)::

      top_left, Lq=3, Lk=5        bottom_right, Lq=3, Lk=5
      1 0 0 0 0                   1 1 1 0 0
      1 1 0 0 0                   1 1 1 1 0
      1 1 1 0 0                   1 1 1 1 1

* ``key_lengths``: ``(B,)`` int32, key ``j`` of batch ``b`` visible iff ``j < key_lengths[b]``;
* ``key_mask``: ``(B, Lk)`` bool, ``True`` = visible (padding anywhere: left, right, holes);
* ``dense``: a ``(B, Hq, Lq, Lk)`` *view* (stride 0 on broadcast dims, never materialised) of the
  user's bool mask (``True`` = visible) or float mask (added to the scaled scores).

All present parts combine with AND (the float mask adds its bias on top). A query row with no visible
key returns exactly 0 in every backend. A float mask entry of ``-inf`` removes the key; a finite value
(``finfo.min`` included) is a bias, as in SDPA.

The public typed mask is :class:`KeyPadding`; ``torch.nn.attention.bias.CausalBias`` is understood too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .errors import InputError, InputTypeError

__all__ = ["KeyPadding", "NormalizedMask", "CAUSAL_VARIANTS", "CAUSAL_CODES", "CAUSAL_NAMES"]

CAUSAL_VARIANTS = (None, "top_left", "bottom_right")
#: the integer codes kernels and custom ops take (csrc's causal codes are the same)
CAUSAL_CODES = {None: 0, "top_left": 1, "bottom_right": 2}
CAUSAL_NAMES = {v: k for k, v in CAUSAL_CODES.items()}


class KeyPadding:
    """Compact key-padding mask (optionally with causal), the form the fused kernels are fastest on.

    Give exactly one of:

    * ``lengths``: ``(B,)`` integer tensor, keys ``[0, lengths[b])`` of batch ``b`` are visible
      (right padding); kernels stop their key loop at ``lengths[b]``;
    * ``mask``: ``(B, Lk)`` bool tensor, ``True`` = visible (left/right padding, holes); HF's 2-D
      ``attention_mask`` (1 = token) converts with ``mask.bool()``.

    ``causal``: ``None``, ``"top_left"`` or ``"bottom_right"`` (see :mod:`fastattn.masks`).

    Equivalent dense bool mask (what :meth:`to_dense` returns): ``(B, 1, Lq, Lk)``, keys masked by the
    padding AND the causal pattern.
    """

    def __init__(self, lengths: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                 causal: Optional[str] = None):
        if (lengths is None) == (mask is None):
            raise InputError("KeyPadding: give exactly one of lengths= (B,) or mask= (B, Lk)")
        if causal not in CAUSAL_VARIANTS:
            raise InputError(f"KeyPadding: causal must be one of {CAUSAL_VARIANTS}, got {causal!r}")
        if lengths is not None:
            if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1 or lengths.is_floating_point() \
                    or lengths.dtype == torch.bool:
                raise InputTypeError("KeyPadding: lengths must be a 1-D integer tensor of shape (B,)")
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
                raise InputTypeError("KeyPadding: mask must be a 2-D tensor of shape (B, Lk)")
            if mask.dtype != torch.bool:
                raise InputTypeError(f"KeyPadding: mask must be bool (True = visible), got {mask.dtype}; "
                                "convert an HF 0/1 attention_mask with .bool()")
        self.lengths = lengths
        self.mask = mask
        self.causal = causal

    def __repr__(self) -> str:
        what = f"lengths={tuple(self.lengths.shape)}" if self.lengths is not None else f"mask={tuple(self.mask.shape)}"
        return f"KeyPadding({what}, causal={self.causal!r})"


@dataclass(frozen=True)
class NormalizedMask:
    """The one mask description backends receive (see the module docstring)."""

    causal: Optional[str] = None
    key_lengths: Optional[torch.Tensor] = None
    key_mask: Optional[torch.Tensor] = None
    dense: Optional[torch.Tensor] = None

    def key_range(self) -> Optional[torch.Tensor]:
        """Device-side sequence info of a ``key_mask``: per batch row ``[first visible, last visible + 1)``
        as a contiguous int32 ``(B, 2)`` tensor (``(Lk, 0)`` for a row with no visible key); ``None``
        without a key mask. Computed once per mask object on the mask's device (no host sync) and
        reused by every launch that gets this mask (every layer of an HF forward)."""
        if self.key_mask is None:
            return None
        kr = self.__dict__.get("_key_range")
        if kr is None:
            kr = _key_ranges(self.key_mask)
            object.__setattr__(self, "_key_range", kr)
        return kr

    @property
    def signature(self) -> tuple:
        """What a plan depends on: the parts present, their dtypes and the dense view's strides."""
        d = self.dense
        return (self.causal, None if self.key_lengths is None else self.key_lengths.dtype,
                self.key_mask is not None, None if d is None else (d.dtype, d.stride()))

    @property
    def is_none(self) -> bool:
        return self.causal is None and self.key_lengths is None and self.key_mask is None and self.dense is None

    @property
    def dense_is_bool(self) -> bool:
        return self.dense is not None and self.dense.dtype == torch.bool

    def describe(self) -> str:
        parts = []
        if self.causal:
            parts.append(f"causal_{self.causal}")
        if self.key_lengths is not None:
            parts.append("key_lengths")
        if self.key_mask is not None:
            parts.append("key_mask")
        if self.dense is not None:
            parts.append("dense_bool" if self.dense_is_bool else f"dense_{str(self.dense.dtype).replace('torch.', '')}")
        return "+".join(parts) or "none"

    # ------------------------------------------------------------------ materialisation (reference)
    def keep(self, B: int, Lq: int, Lk: int, device) -> Optional[torch.Tensor]:
        """The structural part (causal, padding, dense bool) as a bool tensor broadcastable to
        ``(B, Hq, Lq, Lk)``; ``None`` when nothing is removed structurally. Used by the reference and
        the torch backend, never by a fused kernel."""
        keep = None
        if self.causal is not None:
            i = torch.arange(Lq, device=device).view(Lq, 1)
            j = torch.arange(Lk, device=device).view(1, Lk)
            off = 0 if self.causal == "top_left" else Lk - Lq
            keep = (j <= i + off).view(1, 1, Lq, Lk)
        if self.key_lengths is not None:
            kl = self.key_lengths if self.key_lengths.device == device else self.key_lengths.to(device)
            kp = (_arange(Lk, device) < kl.view(-1, 1)).view(B, 1, 1, Lk)
            keep = kp if keep is None else keep & kp
        if self.key_mask is not None:
            kp = self.key_mask.to(device=device).view(B, 1, 1, Lk)
            keep = kp if keep is None else keep & kp
        if self.dense is not None and self.dense.dtype == torch.bool:
            keep = self.dense if keep is None else keep & self.dense
        return keep

    def bias(self) -> Optional[torch.Tensor]:
        """The additive float part (a (B, Hq, Lq, Lk) view), or ``None``."""
        if self.dense is not None and self.dense.dtype != torch.bool:
            return self.dense
        return None


_ARANGE = {}


def _arange(n: int, device) -> torch.Tensor:
    """``torch.arange(n)`` on ``device``, cached (read-only use: comparisons that build masks)."""
    key = (n, device)
    t = _ARANGE.get(key)
    if t is None:
        if len(_ARANGE) > 256:
            _ARANGE.clear()
        t = _ARANGE[key] = torch.arange(n, device=device)
    return t


def _key_ranges(key_mask: torch.Tensor) -> torch.Tensor:
    B, Lk = key_mask.shape
    dev = key_mask.device
    if dev.type == "cuda":
        from .runtime import load_ext
        ext, _ = load_ext()
        if ext is not None and hasattr(ext, "key_ranges"):
            km = key_mask.view(torch.uint8)
            out = torch.empty((B, 2), dtype=torch.int32, device=dev)
            from .runtime import device_guard
            with device_guard(dev):
                ext.key_ranges(km.data_ptr(), B, Lk, km.stride(0), km.stride(1), out.data_ptr(),
                               torch.cuda.current_stream(dev).cuda_stream)
            return out
    ar = torch.arange(Lk, device=dev, dtype=torch.int32)
    start = torch.where(key_mask, ar, Lk).amin(dim=1)
    end = torch.where(key_mask, ar + 1, 0).amax(dim=1)
    return torch.stack((start, end), dim=1).to(torch.int32).contiguous()

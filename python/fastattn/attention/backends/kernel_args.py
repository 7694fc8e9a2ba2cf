"""The mask of a :class:`~fastattn.masks.NormalizedMask` as the Triton attention kernels take it (forward,
decode and backward launchers share it)."""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch


class MaskArgs(NamedTuple):
    key_lens: torch.Tensor
    stride_klb: int
    key_mask: torch.Tensor        # uint8 view of the bool (B, Lk) key mask
    key_range: torch.Tensor       # its device-side [first, last + 1) per row (once per mask object)
    stride_kmb: int
    stride_kmn: int
    dense: torch.Tensor           # uint8 view of a bool mask, or the float bias, through its strides
    dense_mode: int               # 0 none, 1 bool, 2 additive
    dense_strides: Tuple[int, int, int, int]
    causal_off: int               # key offset of the causal diagonal: 0 top-left, Lk - Lq bottom-right


def mask_args(mask, placeholder: torch.Tensor, Lq: int, Lk: int) -> MaskArgs:
    """``placeholder`` stands in for absent optional tensors (never dereferenced by the kernels)."""
    kl, km, dense = mask.key_lengths, mask.key_mask, mask.dense
    key_lens, stride_klb = (kl, kl.stride(0)) if kl is not None else (placeholder, 0)
    key_mask, key_range, stride_kmb, stride_kmn = placeholder, placeholder, 0, 0
    if km is not None:
        key_mask = km.view(torch.uint8)
        stride_kmb, stride_kmn = key_mask.stride()
        key_range = mask.key_range()
    dense_mode, dstr = 0, (0, 0, 0, 0)
    if dense is not None:
        if dense.dtype == torch.bool:
            dense, dense_mode = dense.view(torch.uint8), 1
        else:
            dense_mode = 2
        dstr = dense.stride()
    else:
        dense = placeholder
    causal_off = 0 if mask.causal is None or mask.causal == "top_left" else Lk - Lq
    return MaskArgs(key_lens, stride_klb, key_mask, key_range, stride_kmb, stride_kmn, dense, dense_mode, dstr,
                    causal_off)

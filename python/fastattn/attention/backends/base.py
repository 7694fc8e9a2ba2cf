"""What an attention backend declares, and the hooks it implements.

A backend is a :class:`fastattn.dispatch.Backend` with attention-specific data: ``HEAD_DIMS`` (a
``range`` or a tuple), ``GQA``, ``DIFFERENT_VALUE_DIM`` (E != Ev) -- the :class:`HeadShapes` data that
the packed-sequence backends (:mod:`.varlen`) declare too -- and ``MASK_PARTS`` (which of ``causal``,
``key_lengths``, ``key_mask``, ``dense_bool``, ``dense_float`` it takes). The reasons those imply are
worded here once; a backend adds only its own in :meth:`kernel_reasons`.

Hooks: :meth:`launch` (forward into a preallocated ``out``, returns the float32 LSE) and, for a backend
with ``SUPPORTS_BACKWARD``, :meth:`launch_bwd`. :meth:`run` is the whole forward of one call: eager
inference launches directly (the custom-op layer costs more than a decode-sized kernel); autograd and
``torch.compile`` go through ``fastattn::attn_fwd``.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ... import dispatch

ALL_MASK_PARTS = frozenset({"causal", "key_lengths", "key_mask", "dense_bool", "dense_float"})


def mask_parts(mask) -> List[str]:
    parts = []
    if mask.causal is not None:
        parts.append("causal")
    if mask.key_lengths is not None:
        parts.append("key_lengths")
    if mask.key_mask is not None:
        parts.append("key_mask")
    if mask.dense is not None:
        parts.append("dense_bool" if mask.dense.dtype == torch.bool else "dense_float")
    return parts


_PART_WORDS = {"causal": "a causal mask", "key_lengths": "KeyPadding(lengths=)", "key_mask": "a (B, Lk) key mask",
               "dense_bool": "a dense bool attn_mask", "dense_float": "a dense float attn_mask"}


class HeadShapes:
    """Head-shape capabilities as data, for any op whose problem has ``E``, ``Ev``, ``Hq``, ``Hkv``
    (:class:`AttnBackend`, the ``attention_varlen`` backends); mixed in before :class:`dispatch.Backend`."""

    HEAD_DIMS = range(1, 1 << 30)
    GQA = True
    DIFFERENT_VALUE_DIM = True

    def head_dims(self):
        return self.HEAD_DIMS

    def head_shape_reasons(self, inp) -> List[str]:
        reasons = []
        dims = self.head_dims()
        for what, d in (("query/key head dim E", inp.E), ("value head dim Ev", inp.Ev)):
            if d not in dims and not (what[0] == "v" and d == inp.E):  # one reason when E == Ev
                shown = f"{dims.start}..{dims.stop - 1}" if isinstance(dims, range) else ", ".join(map(str, dims))
                reasons.append(f"{what}={d} is not supported by the {self.name} kernel (supported: {shown})")
        if inp.E != inp.Ev and not self.DIFFERENT_VALUE_DIM:
            reasons.append(f"query/key head dim E={inp.E} differs from value head dim Ev={inp.Ev}; the {self.name} "
                           "kernel needs E == Ev")
        if inp.Hq != inp.Hkv and not self.GQA:
            reasons.append(f"grouped-query attention (Hq={inp.Hq}, Hkv={inp.Hkv}) is not supported by the {self.name} kernel")
        return reasons

    def capabilities(self):
        caps = super().capabilities()
        dims = self.head_dims()
        caps.update(head_dims=f"{dims.start}..{dims.stop - 1}" if isinstance(dims, range) else list(dims),
                    gqa=self.GQA, different_value_dim=self.DIFFERENT_VALUE_DIM)
        return caps


class AttnBackend(HeadShapes, dispatch.Backend):
    op = "attention"
    MASK_PARTS = ALL_MASK_PARTS
    #: what to use instead, after a mask-part reason
    MASK_HINT = ""

    def special_reasons(self, inp) -> List[str]:
        reasons = self.head_shape_reasons(inp)
        for part in mask_parts(inp.mask):
            if part not in self.MASK_PARTS:
                reasons.append(f"{_PART_WORDS[part]} is not supported by the {self.name} kernel{self.MASK_HINT}")
        return reasons + self.kernel_reasons(inp)

    def kernel_reasons(self, inp) -> List[str]:
        return []

    def kernel_variant(self, inp) -> Tuple[str, ...]:
        """What selects a different compiled kernel for ``inp`` beyond dtype, head dims, GQA group and mask
        form (part of the on-device self-check's variant key, :mod:`fastattn.selfcheck`)."""
        return ()

    def check_launch(self, inp, out: torch.Tensor, rng: Tuple[int, int] = (0, 0)) -> torch.Tensor:
        """:meth:`launch` as the self-check runs it on its small problem (a backend may pin what real calls
        tune, e.g. Triton's tiles: one compile instead of autotuning the check's own shape). Calls the
        class's :meth:`launch`."""
        return type(self).launch(self, inp, out, rng)

    def check_launch_bwd(self, inp, out, lse, dout, rng: Tuple[int, int] = (0, 0)):
        """:meth:`launch_bwd` as the self-check runs it."""
        return type(self).launch_bwd(self, inp, out, lse, dout, rng)

    def self_check_lengths(self, inp) -> Tuple[Tuple[int, int], ...]:
        """``(Lq, Lk)`` of the small problems the self-check runs for ``inp``'s variant: the kernel path
        ``inp`` takes, with partial tiles."""
        return ((40, 72),)

    def capabilities(self):
        caps = super().capabilities()
        caps.update(mask_parts=sorted(self.MASK_PARTS))
        return caps

    # ---------------------------------------------------------------------------------- hooks
    def launch(self, inp, out: torch.Tensor, rng: Tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Write the attention of ``inp`` into ``out`` (``(B, Hq, Lq, Ev)``, any strides with a contiguous
        last dim) and return the float32 natural-log LSE ``(B, Hq, Lq)`` (``-inf`` on empty rows)."""
        raise NotImplementedError

    def launch_bwd(self, inp, out, lse, dout, rng: Tuple[int, int] = (0, 0)):
        """``(dq, dk, dv)`` of the forward (only with ``SUPPORTS_BACKWARD``)."""
        raise NotImplementedError

    def run(self, inp, out_blhd: bool = False, rng: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """The forward of one call; returns ``(B, Hq, Lq, Ev)`` (``(B, Lq, Hq, Ev)`` memory with ``out_blhd``)."""
        from ..custom_ops import attention_via_op, empty_out
        rng = rng or (0, 0)
        if not inp.requires_grad and not torch.compiler.is_compiling():
            out = empty_out(inp.query, inp.value, out_blhd)
            self.launch(inp, out, rng)
            return out
        return attention_via_op(self.name, inp, out_blhd, rng)

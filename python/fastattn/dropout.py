"""Counter-based attention dropout: the keep-mask contract shared by the fused kernels and the reference.

SDPA semantics: each attention probability ``P[b, h, i, j]`` is dropped with probability ``p`` and the
kept ones are scaled by ``1 / (1 - p)``. The keep decision is a pure function of
``(seed, offset, b*Hq + h, i, j, p)``: independent of tiling, launch config, GPU, or which kernel
(forward, dK/dV, dQ) asks, so the backward regenerates exactly the forward's mask and nothing of size
``Lq x Lk`` is ever stored.

The contract (Philox-4x32-10 as in ``triton.language.philox_impl``; every word an unsigned 32-bit)::

    key     = (k0, k1) = (seed mod 2^32, (seed >> 32) XOR (offset >> 32) XOR DOMAIN)
              # seed, offset: uint64; DOMAIN = 0x46415354 ("FAST")
    counter = (c0, c1, c2, c3) = (j >> 2, i, b*Hq + h, offset mod 2^32)
    r0, r1, r2, r3 = philox_4x32_10(counter, key)
    r      = (r0, r1, r2, r3)[j & 3]                # four consecutive keys share one Philox call
    thresh = min(round(p * 2^32), 2^32 - 1)         # exact integer, computed on the host
    keep   = r >= thresh                            # P(keep) = 1 - p (to 2^-32)

Packed sequences (``attention_varlen``): the same words with the head alone and the *packed* query row
in place of ``b*Hq + h`` and the sequence's row: sequence ``b``'s row ``i`` (packed row ``cu_q[b] + i``)
and its key ``j`` (counted from the sequence's first key, ``0 <= j < lk``) of head ``h`` draw::

    counter = (j >> 2, cu_q[b] + i, h, offset mod 2^32)

Each (head, packed row, key) owns one draw: the packed row names the sequence, so two sequences never
share a bit, and a sequence's keys count from 0 so that the four keys of one Philox call stay in one
tile (tiles start at multiples of 4 inside a sequence). :func:`dropout_keep_mask_varlen` reproduces it.

``i`` (query row), ``j`` (key) and ``b*Hq + h`` each own a counter word, so no word overflows while each
of them is below 2^32 (``j`` below 2^34): ``B*Hq*Lq*Lk`` far beyond 2^40 never wraps. ``p == 0`` draws
nothing; ``p == 1`` drops everything (outputs and gradients are 0) without drawing either.

``offset`` is a per-call stream id: two calls with the same seed and different offsets draw
independent masks. ``DOMAIN`` keeps these streams apart from torch's own Philox users of the same
(seed, offset) (curand's counter is ``(offset / 4, subsequence)`` under the key ``seed``). See :func:`draw_seed_offset` for how a caller takes ``(seed, offset)`` from torch's
generator so that ``torch.manual_seed`` reproduces a run.

:func:`dropout_keep_mask` reproduces the kernels' mask bit for bit in plain torch int64 arithmetic
(tests, the reference path); :func:`philox_kernel_args` turns ``(seed, offset, p)`` into the runtime
arguments the kernels take.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

__all__ = ["DOMAIN", "dropout_keep_mask", "dropout_keep_mask_varlen", "dropout_keep_at", "philox_4x32_10", "philox_kernel_args", "keep_threshold", "draw_seed_offset",
           "PhiloxArgs"]

_M32 = 0xFFFFFFFF
_M16 = 0xFFFF
# Philox-4x32 constants (Salmon et al. 2011; the values in triton.language.random)
_ROUND_A = 0xD2511F53
_ROUND_B = 0xCD9E8D57
_KEY_A = 0x9E3779B9
_KEY_B = 0xBB67AE85
#: XORed into the high key word: domain separation from torch's Philox streams of the same seed
DOMAIN = 0x46415354


def keep_threshold(p: float) -> int:
    """The integer threshold of the contract: a 32-bit draw ``r`` is kept iff ``r >= keep_threshold(p)``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout_p must be in [0, 1], got {p}")
    return min(int(round(p * 2.0 ** 32)), _M32)


def _mul32(a: int, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(hi, lo)`` 32-bit halves of the 64-bit product of the constant ``a`` and the uint32 values in
    the int64 tensor ``x``, without overflowing int64 (16-bit limbs of ``a``)."""
    a_hi, a_lo = a >> 16, a & _M16
    t_lo = x * a_lo                        # < 2^48
    t_hi = x * a_hi + (t_lo >> 16)         # < 2^48 + 2^32
    hi = t_hi >> 16
    lo = ((t_hi & _M16) << 16) | (t_lo & _M16)
    return hi, lo


def philox_4x32_10(c0, c1, c2, c3, k0: int, k1: int, rounds: int = 10):
    """Philox-4x32 on int64 tensors holding uint32 values (broadcast together), exactly as
    ``triton.language.philox_impl``: returns the four output words (int64 tensors in ``[0, 2^32)``)."""
    c0, c1, c2, c3 = torch.broadcast_tensors(*(torch.as_tensor(c, dtype=torch.int64) & _M32
                                               for c in (c0, c1, c2, c3)))
    k0, k1 = k0 & _M32, k1 & _M32
    for _ in range(rounds):
        hi_b, lo_b = _mul32(_ROUND_B, c2)
        hi_a, lo_a = _mul32(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


class PhiloxArgs(tuple):
    """``(k0, k1, c3, thresh, scale)``: the kernels' runtime dropout arguments. The four integers are
    the uint32 words reinterpreted as signed int32 (so Triton always types them ``i32`` and a new seed
    never compiles a new binary); ``scale = 1 / (1 - p)``."""
    __slots__ = ()

    @property
    def k0(self): return self[0]
    @property
    def k1(self): return self[1]
    @property
    def c3(self): return self[2]
    @property
    def thresh(self): return self[3]
    @property
    def scale(self): return self[4]


def _as_i32(x: int) -> int:
    x &= _M32
    return x - (1 << 32) if x >= (1 << 31) else x


def _u64(name: str, x: int) -> int:
    x = int(x)
    if not -(1 << 63) <= x < (1 << 64):
        raise ValueError(f"{name} must fit in 64 bits, got {x}")
    return x & ((1 << 64) - 1)


def philox_kernel_args(seed: int, offset: int, p: float) -> PhiloxArgs:
    """The kernels' runtime dropout arguments for ``(seed, offset, p)`` (``0 < p < 1``)."""
    seed, offset = _u64("seed", seed), _u64("offset", offset)
    k0 = seed & _M32
    k1 = (seed >> 32) ^ (offset >> 32) ^ DOMAIN
    c3 = offset & _M32
    return PhiloxArgs((_as_i32(k0), _as_i32(k1), _as_i32(c3), _as_i32(keep_threshold(p)), 1.0 / (1.0 - p)))


def dropout_keep_at(seed: int, offset: int, bh, i, j, p: float) -> torch.Tensor:
    """Keep bits of the contract at arbitrary indices: ``bh`` (``b * Hq + h``), ``i`` (query row), ``j``
    (key) are integer tensors (or ints) broadcast together; returns a bool tensor of their shape."""
    bh, i, j = (torch.as_tensor(x, dtype=torch.int64) for x in (bh, i, j))
    if p <= 0.0 or p >= 1.0:
        return torch.full(torch.broadcast_shapes(bh.shape, i.shape, j.shape), p <= 0.0, dtype=torch.bool,
                          device=bh.device)
    seed, offset = _u64("seed", seed), _u64("offset", offset)
    r = philox_4x32_10(j >> 2, i, bh, offset & _M32, seed & _M32, (seed >> 32) ^ (offset >> 32) ^ DOMAIN)
    words = torch.stack(torch.broadcast_tensors(*r), dim=-1)
    word = torch.gather(words, -1, torch.broadcast_to(j & 3, words.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return word >= keep_threshold(p)


def dropout_keep_mask(seed: int, offset: int, B: int, Hq: int, Lq: int, Lk: int, p: float,
                      device=None) -> torch.Tensor:
    """The fused kernels' keep mask, bit for bit: bool ``(B, Hq, Lq, Lk)``, ``True`` = kept.

    Pure torch int64 arithmetic (no Triton, any device). Memory is a few int64 copies of the mask:
    meant for tests and the reference path, not for long sequences.
    """
    if p <= 0.0:
        return torch.ones((B, Hq, Lq, Lk), dtype=torch.bool, device=device)
    if p >= 1.0:
        return torch.zeros((B, Hq, Lq, Lk), dtype=torch.bool, device=device)
    seed, offset = _u64("seed", seed), _u64("offset", offset)
    k0, k1 = seed & _M32, (seed >> 32) ^ (offset >> 32) ^ DOMAIN
    T = (Lk + 3) // 4
    c0 = torch.arange(T, dtype=torch.int64, device=device).view(1, 1, T)
    c1 = torch.arange(Lq, dtype=torch.int64, device=device).view(1, Lq, 1)
    c2 = torch.arange(B * Hq, dtype=torch.int64, device=device).view(B * Hq, 1, 1)
    r = philox_4x32_10(c0, c1, c2, offset & _M32, k0, k1)
    words = torch.stack(r, dim=-1).reshape(B * Hq, Lq, 4 * T)[..., :Lk]  # key j = 4 t + w
    return (words >= keep_threshold(p)).view(B, Hq, Lq, Lk)


def dropout_keep_mask_varlen(seed: int, offset: int, cu_seqlens_q, cu_seqlens_k, Hq: int, p: float,
                             device=None) -> List[torch.Tensor]:
    """The varlen kernels' keep mask, bit for bit: one bool ``(Hq, lq_b, lk_b)`` tensor per sequence ``b``
    (``True`` = kept), from the packed-row counter of the contract (module docstring). ``cu_seqlens_q/k``:
    ``(B + 1,)`` integer tensors or lists (read on the host). Tests and the reference path only."""
    cq = cu_seqlens_q.tolist() if isinstance(cu_seqlens_q, torch.Tensor) else list(cu_seqlens_q)
    ck = cu_seqlens_k.tolist() if isinstance(cu_seqlens_k, torch.Tensor) else list(cu_seqlens_k)
    h = torch.arange(Hq, dtype=torch.int64, device=device).view(Hq, 1, 1)
    masks = []
    for b in range(len(cq) - 1):
        lq, lk = cq[b + 1] - cq[b], ck[b + 1] - ck[b]
        i = (cq[b] + torch.arange(lq, dtype=torch.int64, device=device)).view(1, lq, 1)
        j = torch.arange(lk, dtype=torch.int64, device=device).view(1, 1, lk)
        masks.append(dropout_keep_at(seed, offset, h, i, j, p))
    return masks


def draw_seed_offset(device: torch.device, generator: Optional[torch.Generator] = None,
                     increment: int = 4) -> Tuple[int, int]:
    """``(seed, offset)`` for one dropout call, taken from torch's generator for ``device`` so that
    ``torch.manual_seed`` reproduces a run bitwise; never synchronises the device.

    * CUDA: the device's Philox generator (``torch.cuda.default_generators[i]`` or ``generator``):
      ``seed = initial_seed()``, ``offset = get_offset()``, and the generator's offset advances by
      ``increment`` (a multiple of 4, as torch's own Philox users advance it), so the next call draws
      a fresh stream. Both values live on the host: no sync. (Not usable inside CUDA-graph capture.)
    * CPU (the Triton interpreter) and other devices: two 63-bit integers from that device's
      generator (``torch.randint``), which ``torch.manual_seed`` resets as well.
    """
    device = torch.device(device)
    if device.type == "cuda":
        gen = generator
        if gen is None:
            idx = device.index if device.index is not None else torch.cuda.current_device()
            gen = torch.cuda.default_generators[idx]
        seed = gen.initial_seed()
        offset = gen.get_offset()
        gen.set_offset(offset + increment)
        return int(seed), int(offset)
    draw = torch.randint(0, 2 ** 63 - 1, (2,), dtype=torch.int64, generator=generator, device="cpu")
    return int(draw[0]), int(draw[1])

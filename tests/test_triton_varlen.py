"""The prefill kernel's varlen mode (``IS_VARLEN``: packed ``(total, H, E)`` sequences with
``cu_seqlens_q/k``), launched directly through ``_attn_varlen_fwd_triton`` under ``TRITON_INTERPRET=1``
and checked sequence by sequence against the float64 reference with the numerics rule: odd lengths
including 0 and 1, a sequence longer than one tile, GQA, E != Ev, causal bottom-right per sequence,
out-of-range cu_seqlens (clamped: nothing read or written outside the tensors).
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch
from torch.nn.attention.bias import causal_lower_right

from fastattn import dispatch
from fastattn.inputs import normalize_attention
from fastattn.reference import attention_math
from fastattn.testing import assert_close

triton = pytest.importorskip("triton")
ATTENTION_BACKENDS = dispatch.backends("attention")

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRET else ("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = [
    pytest.mark.skipif(ATTENTION_BACKENDS["triton"].unavailable_reason() is not None,
                       reason=f"triton backend unavailable: {ATTENTION_BACKENDS['triton'].unavailable_reason()}"),
    pytest.mark.filterwarnings("ignore:Lower right causal bias will produce NaNs:UserWarning"),
]
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}

#: (query length, key length) per sequence: empty query, empty keys, a single row/key, a sequence over
#: one 32-row tile, more queries than keys (causal: the first rows see nothing)
LENGTHS = [(7, 9), (0, 5), (1, 1), (33, 40), (4, 0), (18, 3), (1, 17)]


def _gen(name):
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def _cu(lengths):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32)


def packed(name, dtype, Hq, Hkv, E, Ev, lengths=LENGTHS, pad=(0, 0)):
    """q/k/v packed along tokens, as views into NaN-filled buffers (``pad`` extra tokens before the
    first and after the last, plus extra heads and head-dim columns): a read outside the sequences'
    rows would put NaN into an output."""
    g = _gen(name)
    dt = DTYPES[dtype]
    tq, tk = sum(a for a, _ in lengths), sum(b for _, b in lengths)

    def view(T, H, D):
        buf = torch.full((T + pad[0] + pad[1], H + 1, D + 8), float("nan"), dtype=dt)
        t = buf[pad[0]:pad[0] + T, 1:, 3:3 + D]
        t.copy_(torch.randn((T, H, D), generator=g).to(dt))
        return t.to(DEVICE) if DEVICE != "cpu" else t

    return view(tq, Hq, E), view(tk, Hkv, E), view(tk, Hkv, Ev)


def run_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal, out_pad=0):
    """Launch; ``out`` is a view into a sentinel-filled buffer (``out_pad`` rows each side) so that a
    write outside the packed output shows. Returns ``(out, lse, sentinel rows intact)``."""
    from fastattn.attention.backends.triton import _attn_varlen_fwd_triton
    tq, Hq, Ev = q.shape[0], q.shape[1], v.shape[2]
    buf = torch.full((tq + 2 * out_pad, Hq, Ev), 7.0, dtype=q.dtype, device=q.device)
    out = buf[out_pad:out_pad + tq]
    out.fill_(-3.0)  # rows the kernel must write are checked; rows of empty sequences keep it
    lse = _attn_varlen_fwd_triton(q, k, v, cu_q.to(q.device), cu_k.to(q.device), max_q, max_k, out, causal=causal)
    intact = bool((buf[:out_pad] == 7.0).all() and (buf[out_pad + tq:] == 7.0).all())
    return out, lse, intact


def reference(q, k, v, lengths, causal, compute_dtype):
    """Per sequence: ``(B=1, H, L, D)`` views through ``fastattn.reference`` (float64 or same dtype),
    packed back: ``(out (total_q, Hq, Ev), lse (Hq, total_q))``; a sequence without keys gives 0/-inf."""
    Hq, Ev = q.shape[1], v.shape[2]
    outs, lses = [], []
    cq = ck = 0
    for lq, lk in lengths:
        qb, kb, vb = (t.transpose(0, 1)[None] for t in (q[cq:cq + lq], k[ck:ck + lk], v[ck:ck + lk]))
        cq, ck = cq + lq, ck + lk
        if lq == 0:
            continue
        if lk == 0:
            outs.append(torch.zeros((lq, Hq, Ev), dtype=compute_dtype or q.dtype))
            lses.append(torch.full((Hq, lq), float("-inf"), dtype=torch.float64))
            continue
        inp = normalize_attention(qb, kb, vb, causal_lower_right(lq, lk) if causal else None,
                                  enable_gqa=Hq != k.shape[1])
        o, lse = attention_math(inp, compute_dtype, return_lse=True)
        outs.append(o[0].transpose(0, 1).cpu())
        lses.append(lse[0].double().cpu())
    return torch.cat(outs), torch.cat(lses, dim=1)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal_br"])
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_varlen_matches_per_sequence_reference(dtype, causal):
    name = f"varlen-{dtype}-{causal}"
    Hq, Hkv, E, Ev = 4, 2, 40, 24
    q, k, v = packed(name, dtype, Hq, Hkv, E, Ev, pad=(3, 5))
    cu_q, cu_k = _cu([a for a, _ in LENGTHS]), _cu([b for _, b in LENGTHS])
    max_q = max(a for a, _ in LENGTHS) + 5  # any bound >= every length
    out, lse, intact = run_varlen(q, k, v, cu_q, cu_k, max_q, max(b for _, b in LENGTHS), causal, out_pad=4)
    assert intact, "the kernel wrote outside out"
    ref, ref_lse = reference(q, k, v, LENGTHS, causal, torch.float64)
    naive, naive_lse = reference(q, k, v, LENGTHS, causal, None)
    out, lse = out.cpu(), lse.cpu()
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert (out != -3.0).any(dim=-1).all(), "a row of a non-empty sequence was not written"
    assert_close(out, ref, naive, DTYPES[dtype], name)
    empty = torch.isneginf(ref_lse)
    assert torch.equal(torch.isneginf(lse), empty), f"{name}: LSE -inf pattern differs from the reference"
    assert (out.transpose(0, 1)[empty] == 0).all(), f"{name}: rows with no visible key are not exactly 0"
    assert_close(lse, ref_lse, naive_lse, DTYPES[dtype], name + " [lse]", valid=~empty)


def test_varlen_out_of_range_cu_seqlens_are_clamped():
    """cu_seqlens past the totals, negative, or decreasing: the kernel clamps offsets into
    ``[0, total]`` and lengths to >= 0, so it reads only real rows (the NaN guard tokens around q/k/v
    never reach an output) and writes only inside ``out``; in-range sequences are still exact."""
    lengths = [(6, 10), (5, 7)]
    q, k, v = packed("varlen-oob", "fp32", 2, 1, 32, 32, lengths, pad=(4, 6))
    tq, tk = q.shape[0], k.shape[0]
    # seq 0 in range; seq 1 runs past both totals; seq 2 starts past them and goes backwards; seq 3 negative
    cu_q = torch.tensor([0, 6, tq + 50, -7, -2], dtype=torch.int32)
    cu_k = torch.tensor([0, 10, tk + 9, 3, -1], dtype=torch.int32)
    out, lse, intact = run_varlen(q, k, v, cu_q, cu_k, 64, 64, True, out_pad=5)
    assert intact, "the kernel wrote outside out"
    out, lse = out.cpu(), lse.cpu()
    assert not torch.isnan(out).any() and not torch.isnan(lse).any(), "a guard token was read"
    ref, ref_lse = reference(q, k, v, lengths, True, torch.float64)
    naive, naive_lse = reference(q, k, v, lengths, True, None)
    # seq 0 is exact; seq 1 is clamped to rows 6..tq and keys 10..tk, i.e. exactly its real extent
    assert_close(out, ref, naive, torch.float32, "varlen-oob")
    assert_close(lse, ref_lse, naive_lse, torch.float32, "varlen-oob [lse]", valid=~torch.isneginf(ref_lse))


def test_varlen_launch_checks():
    from fastattn.attention.backends.triton import _attn_varlen_fwd_triton
    q, k, v = packed("varlen-checks", "fp32", 2, 2, 16, 16, [(3, 3)])
    out = torch.empty((3, 2, 16), device=q.device)
    with pytest.raises(ValueError, match="cu_seqlens_q must be an int32"):
        _attn_varlen_fwd_triton(q, k, v, torch.tensor([0, 3]), torch.tensor([0, 3], dtype=torch.int32),
                                3, 3, out)
    with pytest.raises(ValueError, match="out must be"):
        _attn_varlen_fwd_triton(q, k, v, _cu([3]), _cu([3]), 3, 3, out[:2])
    lse = _attn_varlen_fwd_triton(q, k, v, _cu([]), _cu([]), 0, 0, out)  # B = 0: nothing to do
    assert lse.shape == (2, 3)

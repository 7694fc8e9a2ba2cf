"""The kernels' varlen mode (``IS_VARLEN``: packed ``(total, H, E)`` sequences with ``cu_seqlens_q/k``):
the prefill forward (``_attn_varlen_fwd_triton``) and the fused backward (``attn_varlen_bwd_triton``),
launched directly under ``TRITON_INTERPRET=1`` and checked sequence by sequence against the float64
reference with the numerics rule: odd lengths including 0 and 1, a sequence longer than one tile, lq != lk
both ways, GQA, E != Ev, causal bottom-right per sequence, strided views into NaN-filled buffers,
out-of-range cu_seqlens (clamped: nothing read or written outside the tensors), rows with no visible key
(dq exactly 0) and keys no row sees (dk = dv = 0), determinism; dropout on packed rows: the kernels'
keep mask recovered bit for bit in the forward and the backward against
``fastattn.dropout.dropout_keep_mask_varlen``, its kept fraction, gradients under the rule, same seed ->
bitwise the same, and a directional finite difference through the public API with the seed reset
before each call.
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


# ------------------------------------------------------------------------------------------ backward
def run_bwd(q, k, v, out, lse, dout, cu_q, cu_k, max_q, max_k, causal, grad_pad=0, **kw):
    """The fused varlen backward into views of sentinel-filled buffers (``grad_pad`` rows each side):
    returns ``(dq, dk, dv, sentinel rows intact)``."""
    from fastattn.attention.backends.triton_bwd import attn_varlen_bwd_triton
    bufs, views = [], []
    for t in (q, k, v):
        buf = torch.full((t.shape[0] + 2 * grad_pad, *t.shape[1:]), 7.0, dtype=t.dtype, device=t.device)
        bufs.append(buf)
        views.append(buf[grad_pad:grad_pad + t.shape[0]])
    dq, dk, dv = attn_varlen_bwd_triton(q, k, v, out, lse, dout, cu_q.to(q.device), cu_k.to(q.device), max_q, max_k,
                                        causal=causal, dq=views[0], dk=views[1], dv=views[2], **kw)
    intact = all(bool((b[:grad_pad] == 7.0).all() and (b[b.shape[0] - grad_pad:] == 7.0).all()) for b in bufs)
    return dq, dk, dv, intact


def ref_grads(q, k, v, cu_q, cu_k, causal, dout, compute_dtype, p=0.0, keep=None):
    """Autograd through ``fastattn.reference.attention_varlen`` (per sequence) in ``compute_dtype``."""
    from fastattn.reference import attention_varlen
    leaves = [t.detach().cpu().to(compute_dtype or t.dtype).requires_grad_(True) for t in (q, k, v)]
    o = attention_varlen(*leaves, cu_q, cu_k, is_causal=causal, compute_dtype=compute_dtype, dropout_p=p,
                         dropout_mask=keep)
    return torch.autograd.grad(o, leaves, dout.cpu().to(o.dtype))


def visible(lengths, causal):
    """Per packed query row: has a visible key; per packed key: some row sees it."""
    rows, keys = [], []
    for lq, lk in lengths:
        rows += [lk > 0 and (not causal or i + lk - lq >= 0) for i in range(lq)]
        keys += [lq > 0 and (not causal or j <= lq - 1 + lk - lq) for j in range(lk)]
    return torch.tensor(rows, dtype=torch.bool), torch.tensor(keys, dtype=torch.bool)


def check_grads(name, grads, ref, naive, dtype, lengths, causal):
    rows, keys = visible(lengths, causal)
    for g, r, nv, n in zip(grads, ref, naive, "qkv"):
        g = g.cpu()
        assert not torch.isnan(g).any(), f"{name}: NaN in d{n}"
        assert_close(g, r, nv, dtype, f"{name} [d{n}]")
    assert (grads[0].cpu()[~rows] == 0).all(), f"{name}: dq of rows with no visible key is not exactly 0"
    assert (grads[1].cpu()[~keys] == 0).all() and (grads[2].cpu()[~keys] == 0).all(), \
        f"{name}: keys no row sees have dk/dv != 0"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal_br"])
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_varlen_grads_match_per_sequence_reference(dtype, causal):
    """dq, dk, dv of packed sequences (``LENGTHS``: empty ones, 1x1, over a tile, lq > lk and lq < lk),
    GQA 4/2, E=40 != Ev=24, q/k/v/out/dout strided views into NaN-filled buffers (a read outside the
    sequences' rows would show as NaN), gradient buffers between sentinel rows (a write outside shows)."""
    name = f"varlen-bwd-{dtype}-{causal}"
    Hq, Hkv, E, Ev = 4, 2, 40, 24
    q, k, v = packed(name, dtype, Hq, Hkv, E, Ev, pad=(3, 5))
    cu_q, cu_k = _cu([a for a, _ in LENGTHS]), _cu([b for _, b in LENGTHS])
    max_q, max_k = max(a for a, _ in LENGTHS) + 5, max(b for _, b in LENGTHS)
    out, lse, _ = run_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal)
    tq = q.shape[0]
    out_view, dout = packed(name + "-o", dtype, Hq, Hq, Ev, Ev, lengths=[(tq, tq)], pad=(2, 2))[:2]
    out_view.copy_(out)
    dq, dk, dv, intact = run_bwd(q, k, v, out_view, lse, dout, cu_q, cu_k, max_q, max_k, causal, grad_pad=3)
    assert intact, "the backward wrote outside dq/dk/dv"
    ref = ref_grads(q, k, v, cu_q, cu_k, causal, dout, torch.float64)
    naive = ref_grads(q, k, v, cu_q, cu_k, causal, dout, None)
    check_grads(name, (dq, dk, dv), ref, naive, DTYPES[dtype], LENGTHS, causal)


def test_varlen_bwd_out_of_range_cu_seqlens_are_clamped():
    """The backward clamps cu_seqlens as the forward does: out-of-range, negative and decreasing values
    read no guard token, write nothing outside the gradient buffers, and the in-range sequences' gradients
    are exact."""
    lengths = [(6, 10), (5, 7)]
    q, k, v = packed("varlen-bwd-oob", "fp32", 2, 1, 32, 32, lengths, pad=(4, 6))
    tq, tk = q.shape[0], k.shape[0]
    cu_q = torch.tensor([0, 6, tq + 50, -7, -2], dtype=torch.int32)
    cu_k = torch.tensor([0, 10, tk + 9, 3, -1], dtype=torch.int32)
    out, lse, _ = run_varlen(q, k, v, cu_q, cu_k, 64, 64, True)
    dout = torch.randn(out.shape, generator=_gen("oob-dout")).to(out.device)
    dq, dk, dv, intact = run_bwd(q, k, v, out, lse, dout, cu_q, cu_k, 64, 64, True, grad_pad=4)
    assert intact, "the backward wrote outside dq/dk/dv"
    good_q, good_k = _cu([a for a, _ in lengths]), _cu([b for _, b in lengths])
    ref = ref_grads(q, k, v, good_q, good_k, True, dout, torch.float64)
    naive = ref_grads(q, k, v, good_q, good_k, True, dout, None)
    check_grads("varlen-bwd-oob", (dq, dk, dv), ref, naive, torch.float32, lengths, True)


def test_varlen_bwd_pinned_tiles_and_determinism():
    """BLOCK_M != BLOCK_N in both backward kernels (the causal diagonal split per sequence), with dropout;
    bitwise the same gradients on a second run under ``torch.use_deterministic_algorithms(True)``."""
    from fastattn.dropout import dropout_keep_mask_varlen
    lengths = [(37, 21), (3, 50), (0, 6), (20, 20)]
    q, k, v = packed("varlen-bwd-tiles", "fp32", 2, 1, 16, 16, lengths)
    cu_q, cu_k = _cu([a for a, _ in lengths]), _cu([b for _, b in lengths])
    p, seed, offset = 0.2, 99, 12
    out = torch.empty((q.shape[0], 2, 16), device=q.device)
    from fastattn.attention.backends.triton import _attn_varlen_fwd_triton
    lse = _attn_varlen_fwd_triton(q, k, v, cu_q, cu_k, 37, 50, out, causal=True, dropout_p=p, seed=seed, offset=offset)
    dout = torch.randn(out.shape, generator=_gen("tiles-dout")).to(out.device)
    cfg = {"dkdv": dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, num_stages=1),
           "dq": dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1)}
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [run_bwd(q, k, v, out, lse, dout, cu_q, cu_k, 37, 50, True, dropout_p=p, seed=seed, offset=offset,
                        config=cfg)[:3] for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(prev)
    assert all(torch.equal(a, b) for a, b in zip(*runs)), "not bitwise reproducible"
    keep = dropout_keep_mask_varlen(seed, offset, cu_q, cu_k, 2, p)
    ref = ref_grads(q, k, v, cu_q, cu_k, True, dout, torch.float64, p, keep)
    naive = ref_grads(q, k, v, cu_q, cu_k, True, dout, None, p, keep)
    check_grads("varlen-bwd-tiles-dropout", runs[0], ref, naive, torch.float32, lengths, True)


# ------------------------------------------------------------------------------------------- dropout
def test_varlen_dropout_mask_is_the_contract_in_forward_and_backward():
    """Recover the keep mask each kernel applies, bit for bit, and compare with
    ``dropout_keep_mask_varlen`` (the packed-row counter): with q = 0 every visible probability of
    sequence b is 1/lk, so (j, i counted inside the sequence)

    * forward, v[j] = e_j: out[i, j] = Z[i, j] / (lk (1 - p));
    * dK/dV kernel, dO[i] = e_i: dV[j, i] = Z[i, j] / (lk (1 - p));
    * dQ kernel, k[j] = e_j, v[j] = e_0, dO[i] = e_0: dq[i, j] = (Z[i, j] / (1 - p) - delta_i) / lk (scale 1).

    The kept fraction is 1 - p within 5 standard deviations. lk not a multiple of 4 (Philox's four words
    per call), sequences starting at odd packed rows, an empty one, two heads."""
    from fastattn.attention.backends.triton import _attn_varlen_fwd_triton
    from fastattn.attention.backends.triton_bwd import attn_varlen_bwd_triton
    from fastattn.dropout import dropout_keep_mask_varlen
    lengths = [(21, 30), (0, 4), (13, 7), (25, 25)]
    H, D, p = 2, 32, 0.3
    seed, offset = 0xDEADBEEF12345, (7 << 32) + 99
    cu_q, cu_k = _cu([a for a, _ in lengths]), _cu([b for _, b in lengths])
    tq, tk = int(cu_q[-1]), int(cu_k[-1])
    keep = dropout_keep_mask_varlen(seed, offset, cu_q, cu_k, H, p)  # (H, lq, lk) per sequence
    eye = torch.eye(D)
    row_local = torch.cat([torch.arange(lq) for lq, _ in lengths])
    key_local = torch.cat([torch.arange(lk) for _, lk in lengths])
    lk_row = torch.tensor([float(lk) for lq, lk in lengths for _ in range(lq)])
    lk_key = torch.tensor([float(lk) for _, lk in lengths for _ in range(lk)])
    bounds = [(a, b, c, d) for a, b, c, d in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), cu_k[:-1].tolist(),
                                                  cu_k[1:].tolist())]
    kw = dict(causal=False, dropout_p=p, seed=seed, offset=offset)
    cq, ck = cu_q.to(DEVICE), cu_k.to(DEVICE)

    def dev(t):
        return t.contiguous().to(DEVICE)

    def onehot(idx):  # (n, H, D): row n is e_idx[n] in every head
        return eye[idx].unsqueeze(1).expand(len(idx), H, D)

    def fwd(q, k, v, **extra):
        out = torch.empty((tq, H, D), device=DEVICE)
        return out, _attn_varlen_fwd_triton(dev(q), dev(k), dev(v), cq, ck, 25, 30, out, **kw, **extra)

    def agrees(blocks, what):  # blocks: the recovered (H, lq, lk) per sequence
        for b, (z, ref) in enumerate(zip(blocks, keep)):
            assert torch.allclose(z, ref.float(), atol=1e-4), f"{what}: keep mask of sequence {b} differs"

    q = torch.zeros((tq, H, D))
    k = torch.randn((tk, H, D), generator=_gen("drop-k"))
    # forward: v[j] = e_j
    v = onehot(key_local)
    out, lse = fwd(q, k, v)
    z = (out.cpu() * (lk_row * (1 - p))[:, None, None]).transpose(0, 1)            # (H, tq, D)
    agrees([z[:, a:b, :d - c] for a, b, c, d in bounds], "forward")
    # dK/dV: dO[i] = e_i
    _, _, dv = attn_varlen_bwd_triton(dev(q), dev(k), dev(v), out, lse, dev(onehot(row_local)), cq, ck, 25, 30, **kw)
    z = (dv.cpu() * (lk_key * (1 - p))[:, None, None]).permute(1, 2, 0)            # (H, D, tk): [h, i, j]
    agrees([z[:, :b - a, c:d] for a, b, c, d in bounds], "dK/dV")
    # dQ: k[j] = e_j, v[j] = e_0, dO[i] = e_0
    v0, d0 = onehot(torch.zeros(tk, dtype=torch.long)), onehot(torch.zeros(tq, dtype=torch.long))
    out, lse = fwd(q, v, v0, scale=1.0)
    dq, _, _ = attn_varlen_bwd_triton(dev(q), dev(v), dev(v0), out, lse, dev(d0), cq, ck, 25, 30, scale=1.0, **kw)
    delta = (out.cpu() * d0).sum(-1, keepdim=True)                                   # (tq, H, 1)
    z = ((dq.cpu() * lk_row[:, None, None] + delta) * (1 - p)).transpose(0, 1)       # (H, tq, D)
    agrees([z[:, a:b, :d - c] for a, b, c, d in bounds], "dQ")
    kept = torch.cat([m.flatten() for m in keep]).float()
    sd = (p * (1 - p) / kept.numel()) ** 0.5
    assert abs(float(kept.mean()) - (1 - p)) <= 5 * sd, (float(kept.mean()), 1 - p, sd)

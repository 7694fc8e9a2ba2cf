"""Counter-based attention dropout (``fastattn.dropout``): the Philox reference, the keep-mask contract,
its statistics, and the Triton forward kernel's dropout (CPU tier, ``TRITON_INTERPRET=1``).

* the torch int64 Philox-4x32-10 reproduces the Random123 known-answer vectors;
* the kernels' keep bits (``common._dropout_keep``) equal ``dropout_keep_at`` bit for bit, also at
  indices whose flat position ``bh * Lq * Lk + i * Lk + j`` is far beyond 2^32 (no counter overflow);
* the forward kernel's keep mask, recovered exactly from its output, equals ``dropout_keep_mask``;
  its outputs follow the numerics rule against the reference computed with that mask; same seed gives
  bitwise the same output, other seeds/offsets other masks; the LSE ignores dropout; the mean over many
  draws approaches the no-dropout output within its standard error;
* forward and backward use one mask: a directional finite difference through the forward kernel
  matches the backward kernel's gradients for the same (seed, offset);
* kept fractions, per-word and adjacent-key statistics of the contract are within binomial bounds.
"""

from __future__ import annotations

import math

import pytest
import torch

from fastattn.dropout import (DOMAIN, dropout_keep_at, dropout_keep_mask, draw_seed_offset, keep_threshold,
                              philox_4x32_10, philox_kernel_args)
from fastattn.inputs import normalize_attention
from fastattn.reference import attention_math
from fastattn.testing import assert_close

triton = pytest.importorskip("triton")

import os  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRET else ("cuda" if torch.cuda.is_available() else "cpu")


def _triton_ok() -> bool:
    from fastattn import dispatch
    ATTENTION_BACKENDS = dispatch.backends("attention")
    return ATTENTION_BACKENDS["triton"].unavailable_reason() is None


needs_triton = pytest.mark.skipif(not _triton_ok(), reason="triton backend unavailable here")


# ---------------------------------------------------------------------------------- the reference
def test_philox_known_answers():
    """Random123's kat_vectors for philox4x32-10 (the generator of triton.language.philox)."""
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in kat:
        got = tuple(int(w) for w in philox_4x32_10(*ctr, *key))
        assert got == want, [hex(x) for x in got]


def test_threshold_and_kernel_args():
    assert keep_threshold(0.0) == 0 and keep_threshold(0.5) == 1 << 31
    assert keep_threshold(1.0) == 2 ** 32 - 1 and keep_threshold(0.25) == 1 << 30
    with pytest.raises(ValueError):
        keep_threshold(1.5)
    a = philox_kernel_args((0xDEADBEEF << 32) | 0x12345678, (7 << 32) | 0xFFFFFFFF, 0.5)
    assert a.k0 == 0x12345678 and a.k1 == (0xDEADBEEF ^ 7 ^ DOMAIN) - (1 << 32) and a.c3 == -1
    assert a.thresh == -(1 << 31) and a.scale == 2.0
    for x in a[:4]:  # int32 bit patterns: Triton types every one of them i32 (no recompiles per seed)
        assert -(1 << 31) <= x < (1 << 31)
    assert philox_kernel_args(-1, 0, 0.1).k0 == -1  # negative seeds are their two's complement


def test_mask_matches_pointwise_contract():
    seed, offset, p = 987654321987, (3 << 32) + 17, 0.3
    m = dropout_keep_mask(seed, offset, 2, 3, 9, 23, p)
    bh = torch.arange(6).view(6, 1, 1)
    i = torch.arange(9).view(1, 9, 1)
    j = torch.arange(23).view(1, 1, 23)
    assert torch.equal(m.view(6, 9, 23), dropout_keep_at(seed, offset, bh, i, j, p))
    # the contract by hand for one element: word j & 3 of philox((j >> 2, i, bh, offset_lo), key)
    r = philox_4x32_10(13 >> 2, 4, 5, offset & 0xFFFFFFFF, seed & 0xFFFFFFFF,
                       (seed >> 32) ^ (offset >> 32) ^ DOMAIN)
    assert bool(m[1, 2, 4, 13]) == (int(r[13 & 3]) >= keep_threshold(p))
    assert dropout_keep_mask(1, 2, 1, 1, 3, 5, 0.0).all() and not dropout_keep_mask(1, 2, 1, 1, 3, 5, 1.0).any()


def test_statistics():
    """Binomial bounds (5 sigma) on the kept fraction overall, per Philox word (j & 3), per row and per
    key; adjacent keys and two offsets are independent (joint keep rate (1-p)^2)."""
    p, B, H, L = 0.3, 2, 4, 128
    m = dropout_keep_mask(12345, 0, B, H, L, L, p)
    q = 1 - p

    def within(frac, n, want, what):
        sd = math.sqrt(want * (1 - want) / n)
        assert abs(frac - want) <= 5 * sd, f"{what}: {frac:.5f} vs {want:.5f} (sd {sd:.5f})"

    n = m.numel()
    within(m.float().mean().item(), n, q, "overall")
    for w in range(4):
        within(m[..., w::4].float().mean().item(), n // 4, q, f"word {w}")
    rows = m.float().mean(dim=-1).flatten()   # per (bh, i): L draws each
    cols = m.float().mean(dim=-2).flatten()   # per (bh, j)
    sd = math.sqrt(q * p / L)
    assert (rows - q).abs().max() <= 6 * sd and (cols - q).abs().max() <= 6 * sd
    both = (m[..., 1:] & m[..., :-1]).float().mean().item()
    within(both, m[..., 1:].numel(), q * q, "adjacent keys")
    other = dropout_keep_mask(12345, 4, B, H, L, L, p)
    within((m & other).float().mean().item(), n, q * q, "two offsets")
    other_seed = dropout_keep_mask(12346, 0, B, H, L, L, p)
    within((m & other_seed).float().mean().item(), n, q * q, "two seeds")
    # heads / rows do not repeat each other
    assert not torch.equal(m[0, 0], m[0, 1]) and not torch.equal(m[0, 0, 0], m[0, 0, 1])


def test_draw_seed_offset_cpu_reproducible():
    torch.manual_seed(7)
    a = [draw_seed_offset("cpu") for _ in range(3)]
    torch.manual_seed(7)
    b = [draw_seed_offset("cpu") for _ in range(3)]
    assert a == b and len(set(a)) == 3


# ------------------------------------------------------------------------------- the kernels' bits
import triton.language as tl  # noqa: E402

from fastattn.kernels.attention import _dropout_keep  # noqa: E402


@triton.jit
def _probe_keep(Out, k0, k1, c3, thresh, bh, row0, start_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = row0 + tl.arange(0, BLOCK_M)
    z = _dropout_keep(k0, k1, c3, thresh, bh, rows, start_n, BLOCK_M, BLOCK_N)
    tl.store(Out + tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :], z.to(tl.int8))


@needs_triton
def test_kernel_bits_equal_contract_at_huge_indices():
    """``_dropout_keep`` (what the forward, dK/dV and dQ kernels call) against ``dropout_keep_at`` at
    flat positions ~2^52 (bh ~ 2^20, rows ~ 2^30, keys ~ 2^30), 64-bit seeds and offsets."""
    cases = [(0xFEDCBA9876543210, (5 << 32) | 0xFFFFFFF0, 0.37, 1_000_003, (1 << 30) + 5, (1 << 30) + 64),
             (3, 0, 0.9, 0, 0, 0), (2 ** 64 - 1, 2 ** 63, 0.05, 70_000, 123_456, 4_000_000)]
    for seed, offset, p, bh, row0, start_n in cases:
        a = philox_kernel_args(seed, offset, p)
        out = torch.empty((16, 32), dtype=torch.int8, device=DEVICE)
        _probe_keep[(1,)](out, a.k0, a.k1, a.c3, a.thresh, bh, row0, start_n, BLOCK_M=16, BLOCK_N=32)
        i = torch.arange(row0, row0 + 16).view(16, 1)
        j = torch.arange(start_n, start_n + 32).view(1, 32)
        want = dropout_keep_at(seed, offset, bh, i, j, p)
        assert torch.equal(out.cpu().bool(), want), (seed, offset, p, bh, row0, start_n)


# ------------------------------------------------------------------------------- forward kernel
def _fwd(inp, p, seed, offset, config=None):
    from fastattn.attention.backends.triton import _attn_fwd_triton
    out = torch.empty((inp.B, inp.Hq, inp.Lq, inp.Ev), dtype=inp.dtype, device=inp.device)
    lse = _attn_fwd_triton(inp, out, config, dropout_p=p, seed=seed, offset=offset)
    return out, lse


@needs_triton
def test_forward_keep_mask_recovered_exactly():
    """q = 0 makes every probability 1/Lk and v = e_j (one-hot keys) writes key j's kept bit into
    column j: out[b, h, i, j] = Z[b, h, i, j] / (Lk (1 - p)). GQA, B*Hq = 8 heads, Lk = 45 (not a
    multiple of the tile nor of 4), an Lq = 1 query (would be the decode kernel without dropout)."""
    B, Hq, Hkv, Lk, D, p = 2, 4, 2, 45, 64, 0.4
    seed, offset = 0x1234567890ABC, (9 << 32) + 3
    for Lq in (37, 1):
        q = torch.zeros((B, Hq, Lq, D), device=DEVICE)
        v = torch.eye(D, device=DEVICE)[:Lk].expand(B, Hkv, Lk, D)
        k = torch.randn((B, Hkv, Lk, D), device=DEVICE)
        out, _ = _fwd(normalize_attention(q, k, v, enable_gqa=True), p, seed, offset)
        z = out[..., :Lk] * (Lk * (1 - p))
        keep = dropout_keep_mask(seed, offset, B, Hq, Lq, Lk, p, DEVICE)
        assert torch.allclose(z, keep.float(), atol=1e-4), f"Lq={Lq}: the forward kernel's keep mask differs"


@needs_triton
@pytest.mark.parametrize("mask,dtype,shape", [
    ("causal_br", "fp16", (2, 4, 2, 37, 70, 59)),
    ("key_mask+causal_tl", "fp32", (2, 2, 1, 70, 37, 32)),
    ("dense_float", "fp16", (1, 2, 2, 45, 45, 64)),
    ("key_lengths", "fp32", (2, 3, 3, 1, 50, 40)),
], ids=lambda x: x if isinstance(x, str) else "b{}-h{}/{}-q{}-k{}-d{}".format(*x))
def test_forward_with_dropout_follows_the_rule(mask, dtype, shape):
    """The forward with dropout against the float64 reference with the same keep mask; the LSE is
    bitwise the no-dropout LSE; same seed: bitwise equal; another seed: another output."""
    import importlib.util
    import pathlib
    import sys
    name = "_triton_attention_cases"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).resolve().parent
                                                      / "test_triton_attention.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    cases = sys.modules[name]
    B, Hq, Hkv, Lq, Lk, E = shape
    c = cases.Case(B, Hq, Hkv, Lq, Lk, E, dtype, mask)
    g = cases._gen(c.name + "-dropout")
    q, k, v = cases.make_qkv(c, g)
    attn_mask, is_causal = cases.make_mask(c, g)
    p, seed, offset = 0.25, 4242, 8
    inp = normalize_attention(q, k, v, attn_mask, p, is_causal, None, enable_gqa=Hq != Hkv)
    keep = dropout_keep_mask(seed, offset, B, Hq, Lq, Lk, p, DEVICE)
    out, lse = _fwd(inp, p, seed, offset)
    ref = attention_math(inp, torch.float64, dropout_mask=keep)
    naive = attention_math(inp, dropout_mask=keep)
    assert_close(out, ref, naive, inp.dtype, c.name + "-drop0.25")
    _, lse0 = _fwd(inp, 0.0, 0, 0)
    assert torch.equal(lse, lse0), "dropout changed the LSE"
    again, _ = _fwd(inp, p, seed, offset)
    assert torch.equal(out, again)
    other, _ = _fwd(inp, p, seed + 1, offset)
    assert not torch.equal(out, other)
    zeros, lse1 = _fwd(inp, 1.0, seed, offset)
    assert (zeros == 0).all() and torch.equal(lse1, lse0)


@needs_triton
def test_forward_mean_over_seeds_approaches_no_dropout():
    """E[dropout output] = the no-dropout output: the mean over 16 seeds x 32 heads (512 independent
    masks of one problem: heads are stride-0 copies) is within 5 standard errors of it, the standard
    error from the exact variance sum_j P_ij^2 v_j^2 p / (1 - p)."""
    g = torch.Generator().manual_seed(5)
    Lq, Lk, E, H, p, seeds = 16, 40, 16, 32, 0.3, 16
    q1, k1, v1 = (torch.randn((1, 1, L, E), generator=g) for L in (Lq, Lk, Lk))
    q, k, v = (t.expand(1, H, t.shape[2], E).to(DEVICE) for t in (q1, k1, v1))
    inp = normalize_attention(q, k, v)
    acc = torch.zeros((Lq, E), dtype=torch.float64)
    for s in range(seeds):
        out, _ = _fwd(inp, p, 1000 + s, 4 * s)
        acc += out[0].double().sum(0).cpu()
    mean = acc / (H * seeds)
    inp1 = normalize_attention(q1, k1, v1)
    exact = attention_math(inp1, torch.float64)[0, 0]
    s64 = torch.softmax((q1[0, 0].double() @ k1[0, 0].double().T) * inp1.scale, -1)
    var = (s64 ** 2) @ (v1[0, 0].double() ** 2) * p / (1 - p)
    se = (var / (H * seeds)).sqrt()
    z = ((mean - exact).abs() / se).max().item()
    print(f"max |mean - exact| / standard error = {z:.2f}")
    assert z <= 5.0


@needs_triton
def test_forward_and_backward_use_one_mask():
    """A central finite difference (Richardson-extrapolated) of <dO, attention(q + t dq, k + t dk,
    v + t dv)> through the forward kernel (fp32, one (seed, offset)) matches <(dq, dk, dv), grads> from the backward kernel
    with the same (seed, offset); with another seed in the backward it does not."""
    from fastattn.attention.backends.triton_bwd import attn_bwd_triton
    g = torch.Generator().manual_seed(11)
    B, Hq, Hkv, Lq, Lk, E, p = 1, 2, 1, 29, 37, 16, 0.35
    seed, offset = 99, 12
    q, k, v = (torch.randn(s, generator=g).to(DEVICE) for s in ((B, Hq, Lq, E), (B, Hkv, Lk, E), (B, Hkv, Lk, E)))
    dirs = [torch.randn(t.shape, generator=g).to(DEVICE) for t in (q, k, v)]
    dout = torch.randn((B, Hq, Lq, E), generator=g).to(DEVICE)

    def f(t):
        inp = normalize_attention(*(x + t * d for x, d in zip((q, k, v), dirs)), None, p, True, None, enable_gqa=True)
        out, _ = _fwd(inp, p, seed, offset)
        return float((out.double() * dout.double()).sum())

    def central(h):
        return (f(h) - f(-h)) / (2 * h)

    h = 1e-2  # Richardson: the O(h^2) terms cancel; fp32 rounding of f stays ~1e-4 after / 2h
    fd = (4 * central(h) - central(2 * h)) / 3
    inp = normalize_attention(q, k, v, None, p, True, None, enable_gqa=True)
    out, lse = _fwd(inp, p, seed, offset)

    def directional(s):
        grads = attn_bwd_triton(q, k, v, out, lse, dout, inp.mask, inp.scale, dropout_p=p, seed=s, offset=offset)
        return sum(float((gr.double() * d.double()).sum()) for gr, d in zip(grads, dirs))

    same, other = directional(seed), directional(seed + 1)
    print(f"finite difference {fd:.6f}, backward same seed {same:.6f}, other seed {other:.6f}")
    assert abs(fd - same) <= 2e-3 * max(1.0, abs(fd))
    assert abs(fd - other) > 50 * abs(fd - same)


#: Forward prefill kernel with dropout, compile-only (triton 3.9, ptxas -v, fp16): (arch, head dim, mask,
#: BLOCK_M, BLOCK_N, warps, stages) -> spilled. ``configs.config_fits(..., dropout=True)`` is calibrated on these.
FWD_DROPOUT_SPILLS = {
    (90, 128, "causal", 128, 64, 8, 4): False, (90, 128, "causal", 64, 64, 4, 4): True,
    (90, 128, "dense", 128, 64, 8, 2): True, (90, 128, "dense", 128, 32, 8, 2): False,
    (90, 128, "key_mask", 128, 64, 8, 2): True, (90, 64, "causal", 128, 64, 8, 3): False,
    (90, 256, "causal", 64, 64, 8, 2): True, (90, 256, "causal", 128, 32, 8, 2): True,
    (90, 256, "causal", 64, 32, 8, 2): False, (90, 256, "causal", 64, 32, 8, 3): False,
    (90, 256, "dense", 64, 32, 8, 2): True, (90, 256, "dense", 64, 16, 8, 2): False,
    (80, 64, "causal", 64, 128, 8, 3): True, (80, 64, "dense", 128, 32, 8, 3): False,
    (80, 128, "dense", 128, 32, 8, 3): True, (80, 128, "dense", 64, 64, 8, 3): True,
    (80, 128, "key_mask+causal", 64, 64, 8, 3): False, (80, 64, "key_mask+causal", 64, 128, 8, 3): True,
}


def test_forward_prune_with_dropout_drops_measured_spills():
    from fastattn.kernels import attention as K
    for (arch, E, mask, bm, bn, w, s), spilled in FWD_DROPOUT_SPILLS.items():
        cap = (arch // 10, 0)
        smem = {90: 227 * 1024, 80: 163 * 1024}[arch]
        dense = 2 if mask == "dense" else 0
        kept = K.kept_configs(K.configs_for(cap), cap, smem, E, E, 2, dense, 2 if dense else 0, "key_mask" in mask,
                              4096, True)
        keys = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in kept}
        assert kept, (arch, E, mask)
        if spilled:
            assert (bm, bn, w, s) not in keys, f"sm_{arch} E{E} {mask}+dropout {(bm, bn, w, s)} spills but is kept"

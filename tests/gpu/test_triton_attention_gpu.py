"""The Triton fused attention forward on a real GPU (``pytest -m gpu``): the CPU tier's cases at real
sizes, bf16 through the real bf16 dots, every config the autotuner may pick for a head dim, the
autotuner itself, 64-bit offsets on a > 2^31-element tensor, the CUDA key-range helper, and a
250-repeat determinism run.

Case builders and the checker are shared with ``tests/test_triton_attention.py`` (loaded by path, so
its tests are not collected twice).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys

import pytest
import torch

pytestmark = pytest.mark.gpu

_spec = importlib.util.spec_from_file_location(
    "_triton_attention_cases", pathlib.Path(__file__).resolve().parents[1] / "test_triton_attention.py")
cases = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cases  # dataclasses look their module up
_spec.loader.exec_module(cases)
Case, run_case, run_triton, check = cases.Case, cases.run_case, cases.run_triton, cases.check

from fastattn.inputs import normalize_attention  # noqa: E402
from fastattn.masks import KeyPadding  # noqa: E402

SHAPES = [(113, 203), (203, 113), (1, 239), (239, 1), (127, 513), (513, 127), (1023, 1024), (1024, 1023)]
HEAD_DIMS = [8, 32, 40, 64, 80, 96, 128, 256]
DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


def _candidate_configs(E: int, Ev: int, dtype: str, mask: str = "none"):
    """The configs the autotuner may pick on this GPU for this head dim and mask (its list, after the
    prune)."""
    from fastattn.kernels import attention as K
    cap = torch.cuda.get_device_capability()
    from fastattn.runtime import device_info
    smem = device_info(torch.device("cuda", torch.cuda.current_device())).smem_per_block
    bd, bdv = max(16, triton_next_pow2(E)), max(16, triton_next_pow2(Ev))
    dense = 1 if mask.startswith("dense_bool") else 2 if mask.startswith("dense_") else 0
    dense_bytes = {"dense_bool": 1}.get(mask.split("+")[0], DTYPE_BYTES[dtype]) if dense else 0
    ok = K.kept_configs(K.configs_for(cap), cap, smem, bd, bdv, DTYPE_BYTES[dtype], dense, dense_bytes,
                        "key_mask" in mask)
    return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in ok]


def triton_next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _matrix():
    out, i = [], 0
    for Lq, Lk in SHAPES:
        for mask in cases.MASKS:
            E = HEAD_DIMS[i % len(HEAD_DIMS)]
            Hq, Hkv = cases.HEADS[i % 3]
            dt = ("fp16", "bf16", "fp32")[i % 3]
            B = 3 if mask.startswith(("key_", "dense_bool")) else 2
            out.append(Case(B, Hq, Hkv, Lq, Lk, E, dt, mask))
            i += 1
    return out


@pytest.mark.parametrize("c", _matrix(), ids=lambda c: c.name)
def test_matrix_gpu(c):
    """Each case on one of the configs the autotuner may pick (rotating through the pruned list)."""
    cand = _candidate_configs(c.E, c.Ev or c.E, c.dtype, c.mask)
    pick = cand[cases.zlib.crc32(c.name.encode()) % len(cand)]
    run_case(dataclasses.replace(c, config=pick))


@pytest.mark.parametrize("E", HEAD_DIMS)
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_every_candidate_config(E, dtype):
    """Every config left after the prune compiles and is exact (causal bottom-right + key mask)."""
    for cfg in _candidate_configs(E, E, dtype, "key_mask+causal_br"):
        run_case(Case(2, 4, 2, 300, 517, E, dtype, "key_mask+causal_br", config=cfg))


@pytest.mark.parametrize("c", [
    Case(2, 8, 2, 1023, 1024, 128, "fp16", "causal_tl"),
    Case(2, 8, 8, 1024, 1023, 64, "bf16", "key_lengths"),
    Case(4, 12, 12, 512, 512, 64, "fp16", "dense_keyvec"),
    Case(1, 8, 1, 1, 4000, 128, "bf16", "causal_br"),
], ids=lambda c: c.name)
def test_autotuned(c):
    """The autotuned path (config=None), as users get it. The first call of a key goes through the
    autotuner; later calls launch the remembered winner directly (``_TUNED``): same bits."""
    from fastattn.attention.backends import triton as TA
    inp, out, lse = run_case(c)
    out2, lse2 = run_triton(inp)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)
    if c.Lq > 16:  # prefill path: the winner is remembered
        assert TA._TUNED


def test_fp32_is_fp32_accurate():
    """No silent TF32: fp32 within ~1e-5 relative of float64 at a size where TF32 would be ~1e-3."""
    inp, out, _ = run_case(Case(2, 4, 4, 512, 512, 128, "fp32", "none"))
    from fastattn.reference import attention_math
    ref = attention_math(inp, torch.float64)
    rel = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    print("fp32 max relative error", rel)
    assert rel < 1e-5


def test_64bit_offsets():
    """A key/value tensor of more than 2^31 elements whose second batch starts past element 2^31: the
    batch offset must be computed in 64 bits."""
    Lk, E = 4096, 64
    big = 2 ** 31 + Lk * E
    try:
        buf = torch.empty(big, dtype=torch.float16, device="cuda")
    except torch.cuda.OutOfMemoryError:
        pytest.skip("needs 4 GiB of free GPU memory")
    g = cases._gen("int64")
    kv = buf.as_strided((2, 1, Lk, E), (2 ** 31, Lk * E, E, 1))
    kv[0].copy_(torch.randn((1, Lk, E), generator=g).half())
    kv[1].copy_(torch.randn((1, Lk, E), generator=g).half())
    q = torch.randn((2, 1, 64, E), generator=g).half().cuda()
    inp = normalize_attention(q, kv, kv)
    out, lse = run_triton(inp)
    check(inp, out, lse, "int64-offsets")
    del buf


def test_key_ranges_cuda_matches_torch():
    from fastattn.attention.backends.triton import _key_ranges
    g = cases._gen("ranges")
    km = torch.rand((7, 1000), generator=g) < 0.3
    km[1] = False
    km[2, :500] = False
    km[3, 10:] = False
    km_u8 = km.cuda().view(torch.uint8)
    got = _key_ranges(km_u8)
    ar = torch.arange(1000)
    want_start = torch.where(km, ar, 1000).amin(1)
    want_end = torch.where(km, ar + 1, 0).amax(1)
    assert torch.equal(got.cpu(), torch.stack((want_start, want_end), 1).int())


def test_deterministic_250():
    c = Case(2, 8, 2, 1023, 1024, 128, "fp16", "key_mask+causal_br")
    inp, out, lse = run_case(c)
    for _ in range(250):
        out2, lse2 = run_triton(inp)
        assert torch.equal(out, out2) and torch.equal(lse, lse2)


def test_nan_buffers_real_size():
    """Views into NaN-filled buffers at a real size: bitwise equal to the clean run."""
    g = cases._gen("nan_gpu")
    B, Hq, Hkv, Lq, Lk, E = 2, 8, 2, 1000, 1500, 80

    def padded(shape):
        buf = torch.full((shape[0], shape[1] + 1, shape[2] + 70, shape[3] + 48), float("nan"),
                         dtype=torch.float16, device="cuda")
        view = buf[:, 1:, 3:shape[2] + 3, 5:shape[3] + 5]
        view.copy_(torch.randn(shape, generator=g).half())
        return view
    q, k, v = padded((B, Hq, Lq, E)), padded((B, Hkv, Lk, E)), padded((B, Hkv, Lk, E))
    m = KeyPadding(lengths=torch.tensor([Lk - 333, 17], device="cuda"), causal="bottom_right")
    inp = normalize_attention(q, k, v, m, enable_gqa=True)
    cfg = (64, 64, 4, 2)
    out, lse = run_triton(inp, config=cfg)
    out_c, lse_c = run_triton(normalize_attention(q.contiguous(), k.contiguous(), v.contiguous(), m,
                                                  enable_gqa=True), config=cfg)
    assert torch.equal(out, out_c) and torch.equal(lse, lse_c)
    check(inp, out, lse, "nan-buffers-gpu")


# ------------------------------------------------------------------------------ decode (Lq <= 16)
def _decode_case(B, Hq, Hkv, Lq, Lk, E, dtype, mask, num_splits=None, seed_name=None):
    """A KV-cache decode step: q (B, Hq, Lq, E) against a (B, Hkv, Lk, E) cache; ``mask`` one of
    ``causal_br`` (full cache), ``lengths_br`` (ragged cache lengths, one sample 1 key long),
    ``keymask_br`` (left padding + holes), ``none``. Checked with the numerics rule."""
    from fastattn.attention.backends.triton import _attn_fwd_triton
    from torch.nn.attention.bias import causal_lower_right
    name = seed_name or f"decode-b{B}-h{Hq}/{Hkv}-q{Lq}-k{Lk}-d{E}-{dtype}-{mask}-splits{num_splits}"
    g = cases._gen(name)
    dt = cases.DTYPES[dtype]
    q = torch.randn((B, Lq, Hq, E), generator=g).to(dt).cuda().transpose(1, 2)  # HF (B, L, H, D) views
    k = torch.randn((B, Lk, Hkv, E), generator=g).to(dt).cuda().transpose(1, 2)
    v = torch.randn((B, Lk, Hkv, E), generator=g).to(dt).cuda().transpose(1, 2)
    if mask == "causal_br":
        m = causal_lower_right(Lq, Lk)
    elif mask == "lengths_br":
        lens = torch.randint(Lk // 2, Lk + 1, (B,), generator=g)
        lens[-1] = 1
        m = KeyPadding(lengths=lens.cuda(), causal="bottom_right")
    elif mask == "keymask_br":
        km = torch.rand((B, Lk), generator=g) < 0.9
        km[0, : Lk // 3] = False
        m = KeyPadding(mask=km.cuda(), causal="bottom_right")
    else:
        m = None
    inp = normalize_attention(q, k, v, m, enable_gqa=Hq != Hkv)
    out = torch.empty((B, Lq, Hq, E), dtype=dt, device="cuda").transpose(1, 2)
    lse = _attn_fwd_triton(inp, out, path="decode", num_splits=num_splits)
    check(inp, out, lse, name)
    return inp, out, lse


@pytest.mark.parametrize("B", [1, 4, 16])
@pytest.mark.parametrize("Lk", [1024, 8192, 32768])
@pytest.mark.parametrize("dtype,mask", [("fp16", "causal_br"), ("bf16", "lengths_br"), ("fp16", "keymask_br")])
def test_decode_real_sizes(B, Lk, dtype, mask):
    """Llama-style decode: Hq 32 / Hkv 8, head dim 128, Lq = 1, default split rule."""
    _decode_case(B, 32, 8, 1, Lk, 128, dtype, mask)


@pytest.mark.parametrize("splits", [1, 2, 3, 7, 32])
@pytest.mark.parametrize("Lq", [1, 4, 16])
def test_decode_forced_splits(splits, Lq):
    _decode_case(2, 32, 8, Lq, 4099, 128, "fp16", "lengths_br", num_splits=splits)


@pytest.mark.parametrize("E", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("heads", [(32, 8), (32, 32), (32, 4), (8, 1)])
def test_decode_head_dims_and_groups(E, heads):
    _decode_case(4, heads[0], heads[1], 1, 3000, E, "bf16", "causal_br")


def test_decode_fp32_is_fp32_accurate():
    inp, out, _ = _decode_case(2, 32, 8, 1, 8192, 128, "fp32", "causal_br")
    from fastattn.reference import attention_math
    ref = attention_math(inp, torch.float64)
    rel = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    print("fp32 decode max relative error", rel)
    assert rel < 1e-5


def test_decode_matches_prefill_and_grows_without_recompiling():
    """A cache growing one token per step (Lk 2000..2040) with the default split rule: every step
    exact, and the decode kernel compiles no new binary after the first step (lengths and split
    counts are not specialised)."""
    from fastattn.attention.backends.triton import _attn_fwd_triton
    from fastattn.kernels import attention as KD
    g = cases._gen("grow")
    Lmax = 2048
    kc = torch.randn((2, 8, Lmax, 128), generator=g).half().cuda()
    vc = torch.randn((2, 8, Lmax, 128), generator=g).half().cuda()
    q = torch.randn((2, 32, 1, 128), generator=g).half().cuda()
    from torch.nn.attention.bias import causal_lower_right

    def n_binaries():
        caches = getattr(KD._attn_decode_kernel, "device_caches", None)  # triton >= 3.x attribute
        if caches is None:
            return None
        return sum(len(c[0]) for c in caches.values())
    counts = []
    for Lk in range(2000, 2041):
        inp = normalize_attention(q, kc[:, :, :Lk], vc[:, :, :Lk], causal_lower_right(1, Lk), enable_gqa=True)
        out = torch.empty((2, 32, 1, 128), dtype=torch.float16, device="cuda")
        lse = _attn_fwd_triton(inp, out)
        if Lk in (2000, 2040):
            check(inp, out, lse, f"grow-{Lk}")
            out_p = torch.empty_like(out)
            lse_p = _attn_fwd_triton(inp, out_p, path="prefill")
            torch.testing.assert_close(out.float(), out_p.float(), atol=2e-3, rtol=0)
            torch.testing.assert_close(lse, lse_p, atol=1e-4, rtol=1e-5)
        counts.append(n_binaries())
    if counts[0] is not None:
        assert counts[-1] == counts[0], counts


def test_decode_deterministic_250():
    inp, out, lse = _decode_case(4, 32, 8, 1, 16384, 128, "fp16", "keymask_br")
    from fastattn.attention.backends.triton import _attn_fwd_triton
    for _ in range(250):
        out2 = torch.empty_like(out)
        lse2 = _attn_fwd_triton(inp, out2, path="decode")
        assert torch.equal(out, out2) and torch.equal(lse, lse2)


def test_decode_auto_dispatch_end_to_end():
    """``fastattn.attention`` at decode shapes picks the decode pair (Lq <= 16, no dense mask)."""
    import fastattn
    from torch.nn.attention.bias import causal_lower_right
    g = cases._gen("decode-e2e")
    q = torch.randn((8, 32, 1, 128), generator=g).half().cuda()
    k = torch.randn((8, 8, 5000, 128), generator=g).half().cuda()
    out = fastattn.attention(q, k, k, attn_mask=causal_lower_right(1, 5000), enable_gqa=True, backend="triton")
    inp = normalize_attention(q, k, k, causal_lower_right(1, 5000), enable_gqa=True)
    from fastattn.reference import attention_math
    from fastattn.testing import assert_close
    assert_close(out, attention_math(inp, torch.float64), attention_math(inp), torch.float16, "decode-e2e")

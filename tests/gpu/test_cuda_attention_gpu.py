"""GPU tier of the cuda attention backend (issue #4): numerics rule against the float64 reference over
odd lengths (both ways), every compiled head dim, MHA/GQA/MQA, causal top-left and bottom-right, key
padding with empty samples, strided views, NaN-poisoned neighbour memory, 64-bit offsets, determinism.

Run on a machine with an sm_80+ GPU: ``pytest -m gpu tests/gpu/test_cuda_attention_gpu.py``.
"""

from __future__ import annotations

import zlib

import pytest
import torch

import fastattn
from fastattn import reference
from fastattn import dispatch
ATTENTION_BACKENDS = dispatch.backends("attention")
from fastattn.inputs import normalize_attention
from fastattn.masks import KeyPadding
from fastattn.testing import assert_close, compare

pytestmark = pytest.mark.gpu

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
LENGTHS = [(113, 203), (203, 113), (1, 239), (239, 1), (127, 513), (513, 127), (1023, 1024), (1024, 1023)]
HEAD_DIMS = [32, 64, 80, 96, 128, 256]
HEADS = [(6, 6), (6, 2), (6, 1)]


@pytest.fixture(scope="module")
def backend():
    b = ATTENTION_BACKENDS["cuda"]
    why = b.unavailable_reason()
    if why is not None:
        pytest.skip(f"cuda backend unavailable: {why}")
    return b


def _seed(*parts) -> int:
    """A seed derived from the case name (stable across processes, unlike hash())."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def _qkv(B, Hq, Hkv, Lq, Lk, D, dtype, layout="bhld", seed=0, fill=0.0):
    """q/k/v with values N(0, 1) in the given layout ('bhld' contiguous, 'blhd' = (B, L, H, D) memory
    seen as (B, H, L, D), 'padded' = rows of D + 24 elements inside a larger buffer whose extra memory
    holds `fill`)."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def make(H, L):
        x = torch.randn(B, H, L, D, device="cuda", dtype=torch.float32, generator=g).to(dtype)
        if layout == "bhld":
            return x
        if layout == "blhd":
            return x.transpose(1, 2).contiguous().transpose(1, 2)
        if layout == "padded":
            buf = torch.full((B + 1, H, L + 3, D + 24), fill, device="cuda", dtype=dtype)
            view = buf[1:, :, 2:2 + L, 8:8 + D]
            view.copy_(x)
            return view
        raise ValueError(layout)

    return make(Hq, Lq), make(Hkv, Lk), make(Hkv, Lk)


def _mask(kind, B, Lq, Lk, seed):
    """(attn_mask, is_causal) for a mask kind; padding kinds include an empty sample (no visible key)."""
    from torch.nn.attention.bias import causal_lower_right
    g = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "none":
        return None, False
    if kind == "causal_tl":
        return None, True
    if kind == "causal_br":
        return causal_lower_right(Lq, Lk), False
    base, _, causal = kind.partition("+")
    causal = {"": None, "tl": "top_left", "br": "bottom_right"}[causal]
    if base == "lengths":
        lengths = torch.randint(1, Lk + 1, (B,), generator=g)
        lengths[0] = 0  # an empty sample
        if B > 2:
            lengths[2] = Lk
        return KeyPadding(lengths=lengths.to("cuda"), causal=causal), False
    if base == "keymask":
        m = torch.rand(B, Lk, generator=g) > 0.3  # holes anywhere
        m[0] = False  # an empty sample
        if B > 2:
            m[2, : Lk // 2] = False  # left padding
        return KeyPadding(mask=m.to("cuda"), causal=causal), False
    raise ValueError(kind)


def _check(q, k, v, attn_mask, is_causal, name, scale=None, backend_obj=None, check_lse=True):
    dtype = q.dtype
    gqa = q.shape[1] != k.shape[1]
    out = fastattn.attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=gqa,
                             backend="cuda")
    ref = reference.attention(q, k, v, attn_mask, 0.0, is_causal, scale, gqa, compute_dtype=torch.float64)
    naive = reference.attention(q, k, v, attn_mask, 0.0, is_causal, scale, gqa, compute_dtype=None)
    assert out.shape == ref.shape and out.dtype == dtype and out.is_contiguous()
    assert_close(out, ref, naive, dtype, name)
    inp = normalize_attention(q, k, v, attn_mask, 0.0, is_causal, scale, gqa)
    _, ref_lse = reference.attention_math(inp, torch.float64, return_lse=True)
    empty = torch.isneginf(ref_lse)
    if empty.any():  # rows with no visible key: exactly 0, never NaN
        assert (out[empty] == 0).all(), f"{name}: empty rows are not exactly 0"
    if check_lse and backend_obj is not None:
        o2 = torch.empty_like(out)
        lse = backend_obj.launch(inp, o2)
        assert torch.equal(o2, out), f"{name}: launch() and attention() differ"
        assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape
        assert torch.equal(torch.isneginf(lse), empty), f"{name}: lse -inf pattern differs"
        fin = ~empty
        if fin.any():
            err = (lse[fin].double() - ref_lse[fin]).abs().max().item()
            tol = 1e-4 * (1.0 + ref_lse[fin].abs().max().item())  # fp32 scores + ex2/lg2 approximations
            print(f"{name}: lse max err {err:.3e} (tol {tol:.3e})")
            assert err <= tol, f"{name}: lse error {err} > {tol}"
    return out


@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("mask", ["none", "causal_tl", "causal_br"])
@pytest.mark.parametrize("Lq, Lk", LENGTHS)
def test_odd_lengths(backend, Lq, Lk, mask, dt):
    B, Hq, Hkv, D = 2, 6, 2, 64
    name = f"b{B}-h{Hq}/{Hkv}-q{Lq}-k{Lk}-d{D}-{dt}-{mask}"
    q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, DTYPES[dt], seed=_seed(name))
    attn_mask, is_causal = _mask(mask, B, Lq, Lk, _seed(name))
    _check(q, k, v, attn_mask, is_causal, name, backend_obj=backend)


@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("Hq, Hkv", HEADS)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_head_dims_and_gqa(backend, D, Hq, Hkv, dt):
    for (Lq, Lk), mask in (((113, 203), "causal_br"), ((203, 113), "none")):
        B = 2
        name = f"b{B}-h{Hq}/{Hkv}-q{Lq}-k{Lk}-d{D}-{dt}-{mask}"
        q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, DTYPES[dt], seed=_seed(name))
        attn_mask, is_causal = _mask(mask, B, Lq, Lk, _seed(name))
        _check(q, k, v, attn_mask, is_causal, name, backend_obj=backend)


@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("mask", ["lengths", "lengths+tl", "lengths+br", "keymask", "keymask+tl", "keymask+br"])
@pytest.mark.parametrize("Lq, Lk", [(113, 203), (203, 113), (1, 239), (127, 513)])
def test_key_padding_with_empty_samples(backend, Lq, Lk, mask, dt):
    B, Hq, Hkv, D = 3, 6, 2, 64
    name = f"b{B}-h{Hq}/{Hkv}-q{Lq}-k{Lk}-d{D}-{dt}-{mask}"
    q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, DTYPES[dt], seed=_seed(name))
    attn_mask, is_causal = _mask(mask, B, Lq, Lk, _seed(name))
    out = _check(q, k, v, attn_mask, is_causal, name, backend_obj=backend)
    assert (out[0] == 0).all(), f"{name}: the empty sample is not exactly 0"


def test_key_lengths_int64_and_int16(backend):
    B, H, Lq, Lk, D = 3, 4, 70, 150, 64
    q, k, v = _qkv(B, H, H, Lq, Lk, D, torch.float16, seed=1)
    for dtype in (torch.int32, torch.int64, torch.int16):
        lengths = torch.tensor([0, 77, 150], dtype=dtype, device="cuda")
        _check(q, k, v, KeyPadding(lengths=lengths), False, f"lengths-{dtype}", backend_obj=backend)
    # lengths beyond Lk or negative are clamped
    lengths = torch.tensor([-5, 500, 64], dtype=torch.int64, device="cuda")
    out = fastattn.attention(q, k, v, attn_mask=KeyPadding(lengths=lengths), backend="cuda")
    ref = fastattn.attention(q, k, v, attn_mask=KeyPadding(lengths=lengths.clamp(0, Lk)), backend="cuda")
    assert torch.equal(out, ref)


@pytest.mark.parametrize("layout", ["blhd", "padded"])
@pytest.mark.parametrize("dt", list(DTYPES))
def test_strided_views(backend, layout, dt):
    B, Hq, Hkv, Lq, Lk, D = 2, 6, 2, 113, 203, 80
    name = f"{layout}-{dt}"
    q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, DTYPES[dt], layout=layout, seed=_seed(name))
    assert not q.is_contiguous()
    _check(q, k, v, None, True, name, backend_obj=backend)


def test_out_blhd_layout(backend):
    """The HF path's (B, Lq, H, D) output memory, written through its strides."""
    from fastattn.attention import custom_ops as library
    B, H, Lq, Lk, D = 2, 6, 113, 203, 64
    q, k, v = _qkv(B, H, H, Lq, Lk, D, torch.float16, layout="blhd", seed=3)
    inp = normalize_attention(q, k, v, None, 0.0, True, None, False)
    out = library.attention_via_op("cuda", inp, out_blhd=True)
    assert out.transpose(1, 2).is_contiguous()
    ref = fastattn.attention(q, k, v, is_causal=True, backend="cuda")
    assert torch.equal(out, ref)


@pytest.mark.parametrize("dt", list(DTYPES))
@pytest.mark.parametrize("mask", ["causal_br", "keymask+br", "lengths"])
def test_nan_poisoned_neighbour_memory_is_never_read(backend, dt, mask):
    B, Hq, Hkv, Lq, Lk, D = 3, 6, 2, 127, 203, 96
    name = f"poison-{dt}-{mask}"
    attn_mask, is_causal = _mask(mask, B, Lq, Lk, _seed(name))
    outs = []
    for fill in (0.0, float("nan")):
        q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, DTYPES[dt], layout="padded", seed=_seed(name), fill=fill)
        outs.append(fastattn.attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True,
                                       backend="cuda"))
    assert not torch.isnan(outs[1]).any(), f"{name}: NaN leaked from neighbour memory"
    assert torch.equal(outs[0], outs[1]), f"{name}: result depends on memory outside the views"


def test_padded_keys_are_never_read(backend):
    """Keys outside [start, end) of the key range / beyond key_lengths may hold NaN: never loaded."""
    B, H, Lq, Lk, D = 2, 4, 65, 200, 64
    q, k, v = _qkv(B, H, H, Lq, Lk, D, torch.float16, seed=5)
    lengths = torch.tensor([70, 131], device="cuda")
    clean = fastattn.attention(q, k, v, attn_mask=KeyPadding(lengths=lengths), backend="cuda")
    k2, v2 = k.clone(), v.clone()
    for b, n in enumerate(lengths.tolist()):
        k2[b, :, n:] = float("nan")
        v2[b, :, n:] = float("nan")
    poisoned = fastattn.attention(q, k2, v2, attn_mask=KeyPadding(lengths=lengths), backend="cuda")
    assert torch.equal(clean, poisoned)
    m = torch.zeros(B, Lk, dtype=torch.bool, device="cuda")
    m[0, 40:90] = True
    m[1, 150:] = True
    k3, v3 = k.clone(), v.clone()
    k3[0, :, :40] = k3[0, :, 90:] = k3[1, :, :150] = float("nan")
    v3[0, :, :40] = v3[0, :, 90:] = v3[1, :, :150] = float("nan")
    a = fastattn.attention(q, k, v, attn_mask=KeyPadding(mask=m), backend="cuda")
    b_ = fastattn.attention(q, k3, v3, attn_mask=KeyPadding(mask=m), backend="cuda")
    assert torch.equal(a, b_) and not torch.isnan(a).any()


@pytest.mark.parametrize("scale", [0.0, -0.3, 1.0, 0.02])
def test_any_scale(backend, scale):
    q, k, v = _qkv(2, 4, 4, 77, 130, 64, torch.float16, seed=7)
    _check(q, k, v, None, False, f"scale{scale}", scale=scale, backend_obj=backend)


def test_determinism(backend):
    B, Hq, Hkv, Lq, Lk, D = 2, 6, 2, 513, 1023, 128
    q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, torch.bfloat16, seed=11)
    attn_mask, _ = _mask("keymask+br", B, Lq, Lk, 11)
    first = fastattn.attention(q, k, v, attn_mask=attn_mask, enable_gqa=True, backend="cuda")
    for _ in range(100):
        again = fastattn.attention(q, k, v, attn_mask=attn_mask, enable_gqa=True, backend="cuda")
        assert torch.equal(first, again)


def test_side_stream(backend):
    q, k, v = _qkv(2, 6, 6, 300, 300, 64, torch.float16, seed=13)
    ref = fastattn.attention(q, k, v, is_causal=True, backend="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out = fastattn.attention(q, k, v, is_causal=True, backend="cuda")
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(out, ref)


def test_64bit_offsets(backend):
    """K/V rows past 2^31 elements from the base: every offset is computed in 64 bits."""
    free, _ = torch.cuda.mem_get_info()
    need = (2 ** 31 + 2 ** 22) * 2
    if free < need * 1.5:
        pytest.skip("needs ~7 GB of free GPU memory")
    B, H, Lq, Lk, D = 1, 2, 64, 256, 64
    buf = torch.zeros(2 ** 31 + 2 ** 22, dtype=torch.float16, device="cuda")
    off = 2 ** 31 + 1024  # a multiple of 8 elements
    n = H * Lk * D
    k = buf[off:off + n].view(B, H, Lk, D)
    v = buf[off + n:off + 2 * n].view(B, H, Lk, D)
    g = torch.Generator(device="cuda").manual_seed(17)
    k.copy_(torch.randn(B, H, Lk, D, device="cuda", generator=g))
    v.copy_(torch.randn(B, H, Lk, D, device="cuda", generator=g))
    q = torch.randn(B, H, Lq, D, device="cuda", generator=g).half()
    out = _check(q, k, v, None, False, "64bit-offsets")
    del buf, k, v
    assert torch.isfinite(out).all()


def test_auto_dispatch_prefers_cuda_and_declines_fp32(backend):
    from fastattn import dispatch
    q, k, v = _qkv(1, 2, 2, 16, 16, 64, torch.float16)
    assert dispatch.select("attention", normalize_attention(q, k, v)).name == "cuda"
    q32 = q.float()
    assert dispatch.select("attention", normalize_attention(q32, q32, q32)).name != "cuda"
    dense = torch.ones(16, 16, dtype=torch.bool, device="cuda")
    assert dispatch.select("attention", normalize_attention(q, k, v, dense)).name != "cuda"


def test_large_magnitudes_no_overflow(backend):
    """Large, very peaked scores (std ~ 500 before scaling): the max subtraction keeps exp2 finite."""
    q, k, v = _qkv(1, 2, 2, 100, 100, 64, torch.float16, seed=19)
    q, k = q * 8, k * 8
    out = _check(q, k, v, None, False, "large", backend_obj=backend)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("mask", ["none", "causal_br", "lengths", "keymask+tl"])
def test_no_keys_at_all(backend, mask):
    """Lk == 0 (empty k/v, whose data pointers torch leaves null): every row is 0, lse -inf, no error."""
    B, Hq, Hkv, Lq, D = 2, 4, 2, 37, 64
    q, k, v = _qkv(B, Hq, Hkv, Lq, 0, D, torch.float16, seed=23)
    if mask == "lengths":
        attn_mask, is_causal = KeyPadding(lengths=torch.zeros(B, dtype=torch.int32, device="cuda")), False
    elif mask == "keymask+tl":
        attn_mask, is_causal = KeyPadding(mask=torch.zeros(B, 0, dtype=torch.bool, device="cuda"),
                                          causal="top_left"), False
    else:
        attn_mask, is_causal = _mask(mask, B, Lq, 0, 23)
    inp = normalize_attention(q, k, v, attn_mask, 0.0, is_causal, None, True)
    out = torch.full((B, Hq, Lq, D), float("nan"), dtype=torch.float16, device="cuda")
    lse = backend.launch(inp, out)
    assert (out == 0).all() and torch.isneginf(lse).all()
    out2 = fastattn.attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True, backend="cuda")
    assert (out2 == 0).all()


def test_kernel_with_no_key_via_binding(backend):
    """The kernel itself (not the Python shortcut) on Lk == 0 with null k/v: writes 0 and lse -inf."""
    from fastattn.runtime import load_ext
    ext, _ = load_ext()
    B, H, Lq, D = 2, 3, 70, 128
    q = torch.randn(B, H, Lq, D, device="cuda", dtype=torch.bfloat16)
    out = torch.full_like(q, float("nan"))
    lse = torch.zeros(B, H, Lq, device="cuda")
    for causal in (0, 2):
        params = ext.AttnFwdParams(dtype=1, B=B, Hq=H, Hkv=H, Lq=Lq, Lk=0, head_dim=D, scale=0.1, causal=causal,
                                   device=torch.cuda.current_device())
        params.set_strides(q.stride(), (0, 0, D, 1), (0, 0, D, 1), out.stride())
        ext.attn_fwd(params, q.data_ptr(), 0, 0, out.data_ptr(), lse.data_ptr(),
                     torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        assert (out == 0).all() and torch.isneginf(lse).all()


def test_params_object_relaunched(backend):
    """One AttnFwdParams launched on several tensors of its shape (as a plan is, layer after layer, with a
    per-layer scale): every launch matches the reference; a host pointer is caught on the first launch of a
    params object."""
    from torch.nn.attention.bias import causal_lower_right
    from fastattn.runtime import load_ext
    ext, _ = load_ext()
    B, Hq, Hkv, Lq, Lk, D = 2, 4, 2, 77, 131, 64
    mask = causal_lower_right(Lq, Lk)
    params = ext.AttnFwdParams(dtype=0, B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, head_dim=D, scale=1.0, causal=2,
                               device=torch.cuda.current_device())
    stream = torch.cuda.current_stream().cuda_stream
    for layer in range(3):
        q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, torch.float16, layout="bhld" if layer != 1 else "blhd", seed=100 + layer)
        scale = D ** -0.5 / (layer + 1)  # GPT-2's layer-index scaling changes the scale per layer
        params.scale = scale
        out = torch.empty_like(q)
        lse = torch.empty(B, Hq, Lq, device="cuda")
        params.set_strides(q.stride(), k.stride(), v.stride(), out.stride())
        ext.attn_fwd(params, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(), stream)
        ref = reference.attention(q, k, v, mask, 0.0, False, scale, True, compute_dtype=torch.float64)
        naive = reference.attention(q, k, v, mask, 0.0, False, scale, True, compute_dtype=None)
        assert_close(out, ref, naive, torch.float16, f"relaunch-{layer}")
    host = torch.empty(4096, dtype=torch.uint8).pin_memory()
    assert host.data_ptr() % 16 == 0
    fresh = ext.AttnFwdParams(dtype=0, B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, head_dim=D, scale=0.1, causal=0,
                              device=torch.cuda.current_device())
    fresh.set_strides(q.stride(), k.stride(), v.stride(), out.stride())
    with pytest.raises(ValueError, match="attn_fwd: q must point to CUDA device memory"):
        ext.attn_fwd(fresh, host.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(), stream)


@pytest.mark.parametrize("mask", ["none", "causal_br", "lengths+tl", "keymask"])
def test_nan_propagates_like_sdpa(backend, mask):
    """NaN in a query row makes that row NaN and a NaN key makes every row that sees it NaN (the epilogue
    used to test l > 0 and wrote 0 there); rows with no visible key stay exactly 0 with lse -inf."""
    B, Hq, Hkv, Lq, Lk, D = 3, 2, 2, 70, 90, 64
    q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, torch.float16, seed=_seed("nan", mask))
    attn_mask, is_causal = _mask(mask, B, Lq, Lk, _seed("nan-mask", mask))
    q[1, 0, 5] = float("nan")
    k[2, 1, 3] = float("nan")
    inp = normalize_attention(q, k, v, attn_mask, 0.0, is_causal, None, True)
    out = torch.empty_like(q)
    lse = backend.launch(inp, out)
    ref, ref_lse = reference.attention_math(inp, torch.float64, return_lse=True)
    nan_ref = torch.isnan(ref).any(-1)
    assert nan_ref.any(), "the case must contain NaN rows"
    assert torch.equal(torch.isnan(out).any(-1), nan_ref), mask
    assert torch.equal(torch.isnan(lse), torch.isnan(ref_lse)), mask
    empty = torch.isneginf(ref_lse)
    assert (out[empty] == 0).all() and torch.isneginf(lse[empty]).all(), mask
    fin = ~nan_ref & ~empty
    assert torch.allclose(out[fin].float(), ref[fin].float(), atol=2e-3, rtol=2e-3), mask


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize("mask", ["keymask+br", "lengths"])
def test_inputs_on_a_non_current_device(backend, mask):
    """Inputs on cuda:1 while cuda:0 is current: key_ranges and the kernel both run on cuda:1's stream."""
    B, Hq, Hkv, Lq, Lk, D = 3, 4, 2, 65, 130, 64
    q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, torch.float16, seed=29)
    attn_mask, is_causal = _mask(mask, B, Lq, Lk, 29)
    ref = fastattn.attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=True, backend="cuda")
    dev1 = torch.device("cuda", 1)
    m1 = (KeyPadding(lengths=attn_mask.lengths.to(dev1), causal=attn_mask.causal) if attn_mask.lengths is not None
          else KeyPadding(mask=attn_mask.mask.to(dev1), causal=attn_mask.causal))
    with torch.cuda.device(0):
        out1 = fastattn.attention(q.to(dev1), k.to(dev1), v.to(dev1), attn_mask=m1, is_causal=is_causal,
                                  enable_gqa=True, backend="cuda")
    assert out1.device == dev1
    assert torch.equal(out1.cpu(), ref.cpu())

"""CPU tier of the cuda attention backend: the compiled entry points exist, the binding layer
(``AttnFwdParams`` + ``attn_fwd``) validates every argument (``ArgumentError``: ValueError and
RuntimeError, naming it) before touching a device, a call without a device raises a clear RuntimeError,
and ``not_supported_reasons`` names every case the kernel leaves to other backends. Numerics live in
tests/gpu/test_cuda_attention_gpu.py."""

from __future__ import annotations

import pytest
import torch

import fastattn
from fastattn.runtime import load_ext
from fastattn import dispatch
ATTENTION_BACKENDS = dispatch.backends("attention")
from fastattn.attention.backends.cuda import DEFAULT_HEAD_DIMS, CudaAttention, arch_covered
from fastattn.inputs import normalize_attention
from fastattn.masks import KeyPadding

EXT, EXT_WHY = load_ext()
needs_ext = pytest.mark.skipif(EXT is None, reason=f"fastattn._C not built: {EXT_WHY}")
HAS_CUDA = torch.cuda.is_available()

ADDR = 1 << 20  # a 16-byte aligned fake address: validation must reject bad metadata before using it


_STRIDE_ARGS = ("q_strides", "k_strides", "v_strides", "out_strides")
_LAUNCH_ARGS = ("q_ptr", "k_ptr", "v_ptr", "out_ptr", "lse_ptr", "stream")


def _split(**over):
    """Valid (params, strides, launch) arguments for B=2, Hq=6, Hkv=2, Lq=113, Lk=203, D=64, overridable."""
    B, Hq, Hkv, Lq, Lk, D = 2, 6, 2, 113, 203, 64
    params = dict(dtype=0, B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, head_dim=D, scale=0.125, causal=0, device=0)
    strides = dict(q_strides=(Hq * Lq * D, Lq * D, D, 1), k_strides=(Hkv * Lk * D, Lk * D, D, 1),
                   v_strides=(Hkv * Lk * D, Lk * D, D, 1), out_strides=(Lq * Hq * D, D, Hq * D, 1))
    launch = dict(q_ptr=ADDR, k_ptr=ADDR, v_ptr=ADDR, out_ptr=ADDR, lse_ptr=ADDR, stream=0)
    for k, v in over.items():
        (strides if k in _STRIDE_ARGS else launch if k in _LAUNCH_ARGS else params)[k] = v
    return params, strides, launch


def _call(**over):
    """Build the params, set the strides and launch (each step validates its own arguments)."""
    params, strides, launch = _split(**over)
    p = EXT.AttnFwdParams(**params)
    p.set_strides(**strides)
    return EXT.attn_fwd(p, **launch)


# ------------------------------------------------------------------------------------ extension
@needs_ext
def test_extension_has_attention_entry_points():
    info = EXT.build_info()
    assert "attention" in info["components"], info
    assert callable(EXT.attn_fwd) and callable(EXT.attention_fwd_head_dims)
    assert not hasattr(EXT, "attention_fwd")  # the 26-argument form is gone: one parameter object
    dims = EXT.attention_fwd_head_dims()
    assert {32, 64, 80, 96, 128}.issubset(dims), dims
    assert tuple(dims) == DEFAULT_HEAD_DIMS
    assert "AttnFwdParams" in EXT.attn_fwd.__doc__ or "params" in EXT.attn_fwd.__doc__


@needs_ext
def test_instances_listed_by_the_extension():
    inst = EXT.attention_fwd_instances()
    keys = {(i["dtype"], i["head_dim"], i["causal"]) for i in inst}
    assert keys == {(dt, d, c) for dt in ("float16", "bfloat16") for d in DEFAULT_HEAD_DIMS for c in (False, True)}
    for i in inst:
        assert i["family"] == "sm80" and i["threads"] == 128 and i["block_m"] == 64
        assert i["smem_bytes"] == (64 + 4 * i["block_n"]) * (i["head_dim"] + 8) * 2, i


@needs_ext
def test_argument_error_is_value_and_runtime_error():
    assert issubclass(EXT.ArgumentError, ValueError) and issubclass(EXT.ArgumentError, RuntimeError)
    with pytest.raises(EXT.ArgumentError, match="head_dim=72"):
        _call(head_dim=72)
    with pytest.raises(RuntimeError, match="head_dim=72"):  # what code written for SDPA catches
        _call(head_dim=72)


@needs_ext
def test_params_object_fields():
    params, strides, _ = _split(causal=2, scale=0.5)
    p = EXT.AttnFwdParams(**params)
    assert (p.dtype, p.B, p.Hq, p.Hkv, p.Lq, p.Lk, p.head_dim, p.causal, p.device) == (0, 2, 6, 2, 113, 203, 64, 2, 0)
    assert p.causal_offset == 203 - 113 and p.num_m_blocks == 2 and p.scale == 0.5
    assert p.strides is None and "strides=unset" in repr(p)
    p.set_strides(**strides)
    assert p.strides == tuple(strides[k] for k in _STRIDE_ARGS) and "strides=set" in repr(p)
    p.scale = 0.25  # per layer, between launches
    assert p.scale == 0.25
    with pytest.raises(ValueError, match="scale must be finite"):
        p.scale = float("inf")
    assert p.scale == 0.25
    with pytest.raises(TypeError):  # the constructor is keyword-only
        EXT.AttnFwdParams(0, 2, 6, 2, 113, 203, 64, 0.125, 0, 0)


@needs_ext
def test_launch_needs_strides_first():
    params, _, launch = _split()
    with pytest.raises(ValueError, match=r"strides are not set; call params.set_strides"):
        EXT.attn_fwd(EXT.AttnFwdParams(**params), **launch)


@needs_ext
def test_debug_switch():
    was = EXT.debug()
    try:
        EXT.set_debug(True)
        assert EXT.debug() is True
        EXT.set_debug(False)
        assert EXT.debug() is False
    finally:
        EXT.set_debug(was)


@needs_ext
@pytest.mark.skipif(HAS_CUDA, reason="checks the no-device error")
def test_valid_call_without_device_raises_runtime_error():
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        _call()
    with pytest.raises(RuntimeError, match="no usable CUDA device"):  # empty problems validate too
        _call(B=0)


@needs_ext
@pytest.mark.skipif(not HAS_CUDA, reason="a real device rejects a fake pointer")
def test_fake_pointer_rejected_with_a_device():
    with pytest.raises(ValueError, match="q"):
        _call()


@needs_ext
@pytest.mark.parametrize("over, match", [
    (dict(head_dim=72), r"attn_fwd: head_dim=72 is not supported; supported head dims: 32, 64, 80, 96, 128, 256"),
    (dict(dtype=2), r"dtype code 2 \(float32\) is not supported"),
    (dict(dtype=7), r"dtype code 7"),
    (dict(Hq=6, Hkv=4), r"Hq=6 must be a multiple of Hkv=4"),
    (dict(Hkv=0), r"Hkv must be >= 1"),
    (dict(Lq=-1), r"sizes must be >= 0"),
    (dict(q_strides=(0, 0, 64, 2)), r"q_strides\[3\] \(last dim\) must be 1"),
    (dict(k_strides=(0, 64, 1)), r"k_strides must have 4 entries"),
    (dict(v_strides=(800000, 13806, 64, 1)), r"v_strides\[1\] \(h\) = 13806 must be a multiple of 8"),
    (dict(k_strides=(800000, 80000, 66, 1)), r"k_strides\[2\] \(l\) = 66 must be a multiple of 8"),
    (dict(q_ptr=ADDR + 2), r"q_ptr must be 16-byte aligned .*address % 16 = 2"),
    (dict(out_ptr=ADDR + 8), r"out_ptr must be 16-byte aligned"),
    (dict(v_ptr=0), r"v_ptr is null"),
    (dict(out_strides=(0, 64, 6 * 64, 1)), r"out_strides\[0\] \(b\) is 0"),
    (dict(lse_ptr=ADDR + 2), r"lse_ptr must be a non-null, 4-byte aligned"),
    (dict(causal=3), r"causal must be 0 \(none\), 1 \(top_left\) or 2 \(bottom_right\), got 3"),
    (dict(scale=float("nan")), r"scale must be finite"),
    (dict(key_mask_ptr=ADDR), r"key_mask_ptr needs key_range_ptr"),
    (dict(key_lengths_ptr=ADDR + 4, key_lengths_int64=True), r"key_lengths_ptr is not aligned"),
    (dict(Lq=65535 * 64 + 1, q_strides=(0, 0, 64, 1)), r"at most 65535"),
    (dict(device=-1), r"device must be a CUDA device index >= 0"),
    (dict(lse_ptr=0), r"lse_ptr must be a non-null"),
])
def test_binding_validation_names_the_argument(over, match):
    with pytest.raises(ValueError, match=match):
        _call(**over)


@needs_ext
def test_binding_ignores_strides_of_size_one_dims():
    # B=1, Hq=Hkv=1: b and h strides are never used, so odd values there are fine (fails only on device)
    over = dict(B=1, Hq=1, Hkv=1, q_strides=(3, 5, 64, 1), k_strides=(7, 9, 64, 1), v_strides=(1, 1, 64, 1),
                out_strides=(3, 3, 64, 1))
    exc = RuntimeError if not HAS_CUDA else ValueError  # no device / fake pointer
    with pytest.raises(exc):
        _call(**over)


# ------------------------------------------------------------------------------------ backend
def test_arch_coverage():
    assert arch_covered((8, 0), "sm_80;sm_90a")
    assert arch_covered((8, 6), "sm_80;sm_90a")   # sm_80 SASS runs on 8.x
    assert arch_covered((8, 9), "sm_80;sm_90a")
    assert arch_covered((9, 0), "sm_80;sm_90a")   # sm_90a: exactly 9.0
    assert not arch_covered((10, 0), "sm_80;sm_90a")
    assert not arch_covered((12, 0), "sm_80;sm_90a")
    assert not arch_covered((9, 0), "sm_80")
    assert not arch_covered((7, 5), "sm_80")
    assert arch_covered((10, 0), "sm_100a")


def test_backend_registered_and_probe_explains_itself():
    b = ATTENTION_BACKENDS["cuda"]
    assert isinstance(b, CudaAttention)
    why = b.unavailable_reason()
    if not HAS_CUDA:
        assert why is not None and ("CPU-only" in why or "is_available" in why or "not built" in why), why


def _inp(dtype=torch.float16, B=2, Hq=6, Hkv=2, Lq=17, Lk=33, E=64, Ev=None, mask=None, dropout=0.0,
         is_causal=False, layout=None):
    Ev = E if Ev is None else Ev
    q = torch.zeros(B, Hq, Lq, E, dtype=dtype)
    k = torch.zeros(B, Hkv, Lk, E, dtype=dtype)
    v = torch.zeros(B, Hkv, Lk, Ev, dtype=dtype)
    if layout is not None:
        q, k, v = layout(q, k, v)
    return normalize_attention(q, k, v, mask, dropout, is_causal, None, Hq != Hkv)


def _reasons(inp):
    return CudaAttention().not_supported_reasons(inp)


def _has(reasons, text):
    return any(text in r for r in reasons)


def test_reasons_cpu_tensors():
    r = _reasons(_inp())
    assert r == ["tensors are on cpu; the cuda backend needs CUDA tensors"], r


@pytest.mark.parametrize("dtype, text", [(torch.float32, "dtype float32"), (torch.float64, "dtype float64")])
def test_reasons_dtype(dtype, text):
    assert _has(_reasons(_inp(dtype=dtype)), text)


@pytest.mark.parametrize("E", [16, 72, 112, 160])
def test_reasons_head_dim(E):
    assert _has(_reasons(_inp(E=E)), f"head dim E={E} is not supported by the cuda kernel")


@pytest.mark.parametrize("E", DEFAULT_HEAD_DIMS)
def test_supported_head_dims_have_no_head_dim_reason(E):
    assert not _has(_reasons(_inp(E=E)), "head dim")


def test_reasons_value_head_dim():
    assert _has(_reasons(_inp(E=64, Ev=32)), "needs E == Ev")


def test_reasons_dense_masks():
    bool_mask = torch.ones(17, 33, dtype=torch.bool)
    float_mask = torch.zeros(2, 1, 17, 33, dtype=torch.float16)
    assert _has(_reasons(_inp(mask=bool_mask)), "dense bool attn_mask")
    assert _has(_reasons(_inp(mask=float_mask)), "dense float attn_mask")


def test_reasons_dropout():
    assert _has(_reasons(_inp(dropout=0.1)), "dropout_p=0.1")


def test_no_reason_for_supported_masks_beyond_device():
    from torch.nn.attention.bias import causal_lower_right
    for mask, causal in [(None, True), (causal_lower_right(17, 33), False),
                         (KeyPadding(lengths=torch.tensor([3, 33])), False),
                         (KeyPadding(lengths=torch.tensor([3, 33], dtype=torch.int16), causal="top_left"), False),
                         (KeyPadding(mask=torch.ones(2, 33, dtype=torch.bool), causal="bottom_right"), False)]:
        r = _reasons(_inp(mask=mask, is_causal=causal))
        assert r == ["tensors are on cpu; the cuda backend needs CUDA tensors"], (mask, r)


def test_reasons_alignment_and_strides():
    # query as a view whose rows are 66 elements apart (not a 16-byte multiple)
    r = _reasons(_inp(E=64, layout=lambda q, k, v: (torch.zeros(2, 6, 17, 66, dtype=q.dtype)[..., :64], k, v)))
    assert _has(r, "stride(2)=66") and _has(r, "not a multiple of 8 elements"), r
    # key starting 2 bytes past an aligned address
    r = _reasons(_inp(layout=lambda q, k, v: (q, torch.zeros(2 * 2 * 33 * 64 + 1, dtype=k.dtype)[1:].view(2, 2, 33, 64), v)))
    assert _has(r, "key.data_ptr() is not 16-byte aligned"), r
    # value with a non-contiguous last dim
    r = _reasons(_inp(layout=lambda q, k, v: (q, k, torch.zeros(2, 2, 33, 128, dtype=v.dtype)[..., ::2])))
    assert _has(r, "value has last-dim stride 2"), r
    # (B, L, H, D) memory seen as (B, H, L, D): strided but aligned -> no alignment reason
    r = _reasons(_inp(layout=lambda q, k, v: (q.transpose(1, 2).contiguous().transpose(1, 2), k, v)))
    assert not _has(r, "stride") and not _has(r, "aligned"), r


def test_forced_backend_raises_with_reasons():
    q = torch.randn(1, 2, 8, 64, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend='cuda' cannot run attention"):
        fastattn.attention(q, q, q, backend="cuda")


@needs_ext
def test_binding_accepts_null_kv_when_there_is_no_key():
    # Lk == 0: torch gives empty CUDA tensors a null data pointer; k/v are never read, so the metadata
    # validates and the call reaches the device step (RuntimeError here, a launch on a GPU)
    over = dict(Lk=0, k_ptr=0, v_ptr=0, k_strides=(0, 0, 64, 1), v_strides=(0, 0, 64, 1))
    if HAS_CUDA:
        pytest.skip("a real device rejects the fake q pointer first")
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        _call(**over)
    with pytest.raises(ValueError, match="k_ptr is null"):  # with keys, a null k is still an error
        _call(k_ptr=0)


def test_launch_rejects_value_head_dim_mismatch_before_device():
    if EXT is None:
        pytest.skip(f"fastattn._C not built: {EXT_WHY}")
    inp = _inp(E=64, Ev=32)
    with pytest.raises(ValueError, match="needs E == Ev"):
        CudaAttention().launch(inp, torch.empty(2, 6, 17, 32, dtype=torch.float16))

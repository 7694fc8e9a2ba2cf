"""The fused Triton attention backward on a real GPU (``pytest -m gpu``): the CPU tier's checks at real
sizes, bf16 through the real bf16 dots, every config the prune keeps for the dK/dV and dQ kernels, the
autotuned path, dropout (exact keep-mask recovery at size, forward/backward agreement), a 50-repeat
bitwise determinism run, and 64-bit offsets on tensors of more than 2^31 elements.

Case builders and checkers are shared with ``tests/test_triton_attention.py`` and
``tests/test_triton_attention_bwd.py`` (loaded by path, so their tests are not collected twice).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys

import pytest
import torch

pytestmark = pytest.mark.gpu

_TESTS = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str, file: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _TESTS / file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


cases = _load("_triton_attention_cases", "test_triton_attention.py")
bwd = _load("_triton_attention_bwd_cases", "test_triton_attention_bwd.py")
Case, BwdCase, run_bwd_case, run_bwd, forward = cases.Case, bwd.BwdCase, bwd.run_bwd_case, bwd.run_bwd, bwd.forward

from fastattn.dropout import dropout_keep_mask  # noqa: E402
from fastattn.inputs import normalize_attention  # noqa: E402

SHAPES = [(113, 203), (203, 113), (1023, 1024), (1024, 1023), (1, 513), (513, 1), (2048, 2048)]
HEAD_DIMS = [(32, 32), (59, 59), (64, 64), (80, 80), (96, 96), (128, 128), (256, 256), (64, 128)]
DTYPE_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


def _candidates(family: str, E: int, Ev: int, dtype: str, mask: str = "none", dropout: bool = False):
    """The backward configs the autotuner may pick on this GPU (its list after the prune) as
    ``(BLOCK_M, BLOCK_N, num_warps, num_stages)``."""
    from fastattn.kernels import attention as K
    from fastattn.runtime import device_info
    info = device_info(torch.device("cuda", torch.cuda.current_device()))
    bd, bdv = max(16, 1 << (E - 1).bit_length()), max(16, 1 << (Ev - 1).bit_length())
    dense = 1 if mask.startswith("dense_bool") else 2 if mask.startswith("dense_") else 0
    structural = mask != "none" and not mask.startswith("dense")
    ok = K.bwd_candidates(family, info.capability, info.smem_per_block, bd, bdv, DTYPE_BYTES[dtype], dense,
                          "key_mask" in mask, dropout, structural)
    return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in ok]


def run_pinned(bc: BwdCase, dkdv, dq, **kw):
    """``run_bwd_case`` with both kernels pinned to full configs ``(BLOCK_M, BLOCK_N, warps, stages)``."""
    return run_bwd_case(dataclasses.replace(bc, dkdv=tuple(dkdv), dq=tuple(dq)), **kw)


def _matrix():
    out, i = [], 0
    for Lq, Lk in SHAPES:
        for mask in bwd.MASKS:
            E, Ev = HEAD_DIMS[i % len(HEAD_DIMS)]
            Hq, Hkv = bwd.HEADS[i % 3]
            dt = ("bf16", "fp16", "bf16", "fp32")[i % 4]
            B = 3 if mask.startswith(("key_", "dense_bool", "dense_keyvec")) else 2
            p = 0.17 if i % 5 == 0 else 0.0
            out.append(BwdCase(Case(B, Hq, Hkv, Lq, Lk, E, dt, mask, Ev=Ev), p=p))
            i += 1
    return out


@pytest.mark.parametrize("bc", _matrix(), ids=lambda bc: bc.name)
def test_matrix_gpu(bc):
    """Each case on one config pair the autotuner may pick (rotating through the pruned lists)."""
    c = bc.c
    kv = _candidates("dkdv", c.E, c.Ev, c.dtype, c.mask, bc.p > 0)
    qq = _candidates("dq", c.E, c.Ev, c.dtype, c.mask, bc.p > 0)
    h = cases.zlib.crc32(bc.name.encode())
    run_pinned(bc, kv[h % len(kv)], qq[(h // 7) % len(qq)], seed=h, offset=4 * (h % 1000))


@pytest.mark.parametrize("E,Ev", [(32, 32), (64, 64), (80, 80), (128, 128), (256, 256), (96, 64)])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_every_candidate_config(E, Ev, dtype):
    """Every config left after the prune compiles and is exact (bottom-right causal + key mask, GQA,
    dropout), dK/dV and dQ configs paired up in turn."""
    kv = _candidates("dkdv", E, Ev, dtype, "key_mask+causal_br", True)
    qq = _candidates("dq", E, Ev, dtype, "key_mask+causal_br", True)
    assert kv and qq
    for i in range(max(len(kv), len(qq))):
        bc = BwdCase(Case(2, 4, 2, 300, 517, E, dtype, "key_mask+causal_br", Ev=Ev), p=0.1)
        run_pinned(bc, kv[i % len(kv)], qq[i % len(qq)], seed=i, offset=0)


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_autotuned(dtype):
    """No pinned config: the autotuner's choice for both kernels is exact, and a second call (cached
    choice) is bitwise equal."""
    bc = BwdCase(Case(2, 8, 2, 1000, 1500, 128, dtype, "causal_br"))
    inp, out, lse, dout, grads = run_bwd_case(bc)
    again = run_bwd(inp, out, lse, dout)
    assert all(torch.equal(a, b) for a, b in zip(grads, again))


def test_deterministic_50_repeats():
    """No atomics: 50 backward runs (dropout on, GQA, causal) are bitwise equal."""
    torch.use_deterministic_algorithms(True)
    try:
        bc = BwdCase(Case(2, 8, 2, 1024, 1024, 64, "bf16", "causal_tl"), p=0.1)
        inp, out, lse, dout, grads = run_bwd_case(bc, seed=5, offset=8)
        for _ in range(50):
            again = run_bwd(inp, out, lse, dout, p=0.1, seed=5, offset=8)
            assert all(torch.equal(a, b) for a, b in zip(grads, again))
    finally:
        torch.use_deterministic_algorithms(False)


def test_dropout_keep_mask_at_size():
    """The forward's and the dK/dV kernel's keep masks recovered exactly at Lq = 250, Lk = 1000 over
    32 heads (q = 0: uniform probabilities; forward: v_j = e_(j - j0) for a window of 256 keys, so
    out[i, j - j0] = Z[i, j] / (Lk (1 - p)); backward: dO_i = e_i, so dV[j, i] = Z[i, j] / (Lk (1 - p)))."""
    B, H, Lq, Lk, D, p = 2, 16, 250, 1000, 256, 0.3
    seed, offset = 0xC0FFEE123456789, (11 << 32) + 40
    keep = dropout_keep_mask(seed, offset, B, H, Lq, Lk, p, "cuda")
    q = torch.zeros((B, H, Lq, D), device="cuda", dtype=torch.float16)
    k = torch.randn((B, H, Lk, D), device="cuda", dtype=torch.float16)
    for j0 in range(0, Lk, D):
        width = min(D, Lk - j0)
        v = torch.zeros((B, H, Lk, D), device="cuda", dtype=torch.float16)
        v[:, :, j0:j0 + width, :width] = torch.eye(width, device="cuda", dtype=torch.float16)
        out, _ = forward(normalize_attention(q, k, v), p, seed, offset)
        z = out[..., :width].float() * (Lk * (1 - p))
        assert torch.equal(z.round().bool(), keep[..., j0:j0 + width]), f"forward keys {j0}.."
    inp = normalize_attention(q, k, k)
    out, lse = forward(inp, p, seed, offset)
    dout = torch.eye(D, device="cuda", dtype=torch.float16)[:Lq].expand(B, H, Lq, D)
    _, _, dv = run_bwd(inp, out, lse, dout, p=p, seed=seed, offset=offset)
    z = dv[..., :Lq].float().transpose(-1, -2) * (Lk * (1 - p))
    assert torch.equal(z.round().bool(), keep), "dK/dV keep mask"


def test_64bit_offsets():
    """q/k/v/dq/dk/dv of 2^31 + elements (B = 16385, L = 1024, D = 128, fp16): the last batch rows'
    gradients are bitwise those of the same rows run alone (32-bit offsets would wrap there)."""
    free, _ = torch.cuda.mem_get_info()
    B, H, L, D = 16385, 1, 1024, 128
    need = 9 * B * H * L * D * 2
    if free < need * 1.2:
        pytest.skip(f"needs {need / 2**30:.0f} GiB free")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, dout = (torch.randn((B, H, L, D), device="cuda", dtype=torch.float16, generator=g) for _ in range(4))
    assert q.numel() > 2 ** 31
    inp = normalize_attention(q, k, v, is_causal=True)
    cfg = {"dkdv": dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2),
           "dq": dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)}
    out, lse = forward(inp)
    grads = run_bwd(inp, out, lse, dout, config=cfg)
    tail = slice(B - 2, B)
    inp_t = normalize_attention(inp.query[tail], inp.key[tail], inp.value[tail], is_causal=True)
    grads_t = run_bwd(inp_t, out[tail], lse[tail], dout[tail], config=cfg)
    for a, b, n in zip(grads, grads_t, "qkv"):
        assert torch.equal(a[tail], b), f"d{n} of the last batch rows differs: 64-bit offsets"


def test_dropout_forward_backward_agree_at_size():
    """Forward and backward with one (seed, offset) at Lq = Lk = 1024, bf16: the backward's gradients
    against autograd through the reference computed with ``dropout_keep_mask`` (the rule)."""
    run_bwd_case(BwdCase(Case(2, 4, 2, 1024, 1024, 64, "bf16", "causal_br"), p=0.2), seed=77, offset=16)

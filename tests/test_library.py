"""torch.library custom ops: fake impls let torch.compile(fullgraph=True) trace fastattn calls, and the
recompute backward gives the reference gradients. A reference-math "kernel" stands in for the real
launcher here so the op machinery is tested on its own (the kernels have their own tests)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastattn
from fastattn import dispatch
ATTENTION_BACKENDS = dispatch.backends("attention")
from fastattn.attention.backends.base import AttnBackend
from fastattn.ffn.backends import GeluFFNBackend, LayerNormBackend, LinearActBackend
from fastattn.ffn.reference import layernorm_math, linear_act_math
from fastattn.reference import attention_math


class _RefAttention(AttnBackend):
    name, op = "triton", "attention"
    calls = 0

    def _probe(self):
        return None

    def not_supported_reasons(self, inp):
        return []

    def launch(self, inp, out, rng=(0, 0)):
        type(self).calls += 1
        o, lse = attention_math(inp, torch.float32, return_lse=True)
        out.copy_(o)
        return lse.float()


class _RefLinearAct(LinearActBackend):
    name, DEVICES = "triton", ("any",)
    calls = 0

    def launch(self, x, weight, bias, residual, activation, out):
        type(self).calls += 1
        out.copy_(linear_act_math(x, weight, bias, residual, activation, torch.float32))


class _RefLayerNorm(LayerNormBackend):
    name, DEVICES = "triton", ("any",)

    def launch(self, x, residual, weight, bias, eps, out):
        out.copy_(layernorm_math(x, residual, weight, bias, eps, torch.float32))


@pytest.fixture
def fake_kernels(monkeypatch):
    monkeypatch.setitem(ATTENTION_BACKENDS, "triton", _RefAttention())
    lin = _RefLinearAct()
    monkeypatch.setitem(dispatch.backends("linear_act"), "triton", lin)
    monkeypatch.setitem(dispatch.backends("gelu_ffn"), "triton", GeluFFNBackend(lin))
    monkeypatch.setitem(dispatch.backends("residual_layernorm"), "triton", _RefLayerNorm())


def _qkv(seed=0, L=9):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, L, 16, generator=g) for _ in range(3)]


def test_compile_fullgraph_kernel_backend(fake_kernels):
    q, k, v = _qkv()
    m = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(1)) > 0.4

    def f(q, k, v, m):
        return fastattn.attention(q, k, v, attn_mask=m, backend="triton") * 2 + 1

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    _RefAttention.calls = 0
    got = compiled(q, k, v, m)
    assert _RefAttention.calls == 1, "the custom op must run the backend's launcher"
    torch.testing.assert_close(got, f(q, k, v, m))


def test_compile_fullgraph_auto_and_torch_backend():
    q, k, v = _qkv(3)

    def f(q, k, v):
        return fastattn.attention(q, k, v, is_causal=True)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_compile_fullgraph_gelu_ffn(fake_kernels):
    g = torch.Generator().manual_seed(5)
    x, w1, b1, w2 = torch.randn(7, 16, generator=g), torch.randn(32, 16, generator=g), torch.randn(32, generator=g), \
        torch.randn(16, 32, generator=g)

    def f(x):
        return fastattn.gelu_ffn(x, w1, b1, w2, None, approximate="tanh", backend="triton")

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    _RefLinearAct.calls = 0
    torch.testing.assert_close(compiled(x), F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2))
    assert _RefLinearAct.calls == 2, "gelu_ffn is two fastattn::linear_act ops, each running the backend"


def test_opcheck_attn_fwd(fake_kernels):
    q, k, v = _qkv(7)
    lengths = torch.tensor([9, 4], dtype=torch.int32)
    for args in [(q, k, v, None, None, None, 1, 0.25, "triton", False),
                 (q, k, v, lengths, None, None, 2, 0.25, "triton", True)]:
        torch.library.opcheck(torch.ops.fastattn.attn_fwd.default, args)


def test_recompute_backward_matches_reference(fake_kernels):
    q, k, v = _qkv(11)
    m = torch.randn(1, 4, 9, 9, generator=torch.Generator().manual_seed(2))
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    mleaf = m.clone().requires_grad_(True)
    out = fastattn.attention(*leaves, attn_mask=mleaf, backend="triton")
    gout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out, leaves + [mleaf], gout)
    leaves64 = [t.double().requires_grad_(True) for t in (q, k, v)]
    m64 = m.double().requires_grad_(True)
    ref = fastattn.reference.attention(*leaves64, attn_mask=m64)
    grads64 = torch.autograd.grad(ref, leaves64 + [m64], gout.double())
    for name, a, b in zip(["q", "k", "v", "mask"], grads, grads64):
        err = (a.double() - b).abs().max().item()
        print(f"d{name}: {err:.2e}")
        assert err < 1e-5 * max(1.0, b.abs().max().item()), name


def test_out_blhd_layout(fake_kernels):
    from fastattn.inputs import normalize_attention
    from fastattn.ops import attention_normalized
    q, k, v = _qkv(13)
    out = attention_normalized(normalize_attention(q, k, v), backend="triton", out_blhd=True)
    assert out.shape == (2, 4, 9, 16) and out.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    ref_t = attention_normalized(normalize_attention(q, k, v), backend="torch", out_blhd=True)
    assert ref_t.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(ref_t, out)


def test_first_call_inside_torch_compile_fresh_process():
    """The very first fastattn call of a process may be inside torch.compile(fullgraph=True): the
    backend probes (imports, driver queries) must not break the graph."""
    import subprocess
    import sys
    code = (
        "import os, torch, torch.nn.functional as F\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "import fastattn\n"
        "q = torch.randn(1, 2, 8, 16)\n"
        "w1, w2 = torch.randn(32, 16), torch.randn(16, 32)\n"
        "f = torch.compile(lambda q: fastattn.attention(q, q, q, is_causal=True), fullgraph=True, backend='aot_eager')\n"
        "torch.testing.assert_close(f(q), F.scaled_dot_product_attention(q, q, q, is_causal=True))\n"
        "g = torch.compile(lambda x: fastattn.gelu_ffn(x, w1, None, w2, None), fullgraph=True, backend='aot_eager')\n"
        "torch.testing.assert_close(g(q[0, 0]), F.linear(F.gelu(F.linear(q[0, 0], w1)), w2), atol=2e-5, rtol=1e-5)\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    print(r.stdout[-2000:], r.stderr[-4000:])
    assert r.returncode == 0 and "ok" in r.stdout

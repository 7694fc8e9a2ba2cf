"""CPU tier of the fused feed-forward: the Triton kernels under TRITON_INTERPRET=1 (small and unaligned
shapes), the building blocks of ``fastattn.ffn_blocks``, dispatch reasons, custom ops, and a compile-only
check of the CUDA pieces (``fastattn._C`` FFN kernels, ``fastattn._C_blas``).

Every numeric comparison applies the numerics rule (``fastattn.testing``): against a float64 reference
computed from the same rounded inputs, ``max|ours - ref| <= 2 * max|naive_same_dtype - ref| + floor``.
The interpreter cannot run ``tl.dot`` on bf16, so bf16 is covered by the GPU tier only.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch
import torch.nn.functional as F

import fastattn
from fastattn import dispatch, ffn_blocks
from fastattn.ffn import reference
from fastattn.ffn.backends import cuda as ffn_cuda
from fastattn.ffn.problem import normalize_linear_act
from fastattn.runtime import load_ext
from fastattn.testing import assert_close

INTERP = os.environ.get("TRITON_INTERPRET") == "1"
DEV = "cuda" if torch.cuda.is_available() and not INTERP else "cpu"

try:
    import triton  # noqa: F401
    HAS_TRITON = True
except ImportError:  # pragma: no cover
    HAS_TRITON = False

needs_triton = pytest.mark.skipif(not HAS_TRITON or (DEV == "cpu" and not INTERP),
                                  reason="needs triton (GPU, or CPU with TRITON_INTERPRET=1)")


def _seed(*parts) -> torch.Generator:
    """A generator seeded from the test's parameters, so a failure reproduces."""
    return torch.Generator().manual_seed(zlib.crc32(repr(parts).encode()))


def _ffn_params(T, d_in, d_hidden, dtype, layout, bias, g):
    """x (T, d_in) and nn.Linear-layout weights; ``layout="conv1d"`` gives GPT-2 Conv1D weights
    ``(in, out)`` contiguous, passed as their ``.t()`` views (strides (1, out))."""
    def rnd(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(dtype).to(DEV)
    x = rnd(T, d_in)
    if layout == "conv1d":
        w1 = rnd(d_in, d_hidden, scale=d_in ** -0.5).t()
        w2 = rnd(d_hidden, d_in, scale=d_hidden ** -0.5).t()
    else:
        w1 = rnd(d_hidden, d_in, scale=d_in ** -0.5)
        w2 = rnd(d_in, d_hidden, scale=d_hidden ** -0.5)
    b1 = rnd(d_hidden, scale=0.5) if bias else None
    b2 = rnd(d_in, scale=0.5) if bias else None
    return x, w1, b1, w2, b2


# (tokens, in, hidden): small and unaligned shapes (none a multiple of the 32-wide interpreter tile)
FFN_CASES = [
    (17, 32, 37, torch.float32, "none", "linear", True),
    (17, 32, 37, torch.float16, "tanh", "conv1d", True),
    (33, 40, 100, torch.float16, "none", "linear", False),
    (33, 40, 100, torch.float32, "tanh", "conv1d", False),
    (41, 96, 384, torch.float16, "none", "conv1d", True),
    (41, 96, 384, torch.float32, "tanh", "linear", True),
    (41, 96, 384, torch.float32, "none", "linear", True),
    (33, 40, 100, torch.float16, "tanh", "linear", True),
]


def _case_id(c):
    T, di, dh, dt, ap, layout, bias = c
    return f"t{T}-{di}x{dh}-{str(dt).replace('torch.', '')}-gelu_{ap}-{layout}{'' if bias else '-nobias'}"


@needs_triton
@pytest.mark.parametrize("case", FFN_CASES, ids=[_case_id(c) for c in FFN_CASES])
def test_gelu_ffn_triton_matches_reference(case):
    T, d_in, d_hidden, dtype, approximate, layout, bias = case
    x, w1, b1, w2, b2 = _ffn_params(T, d_in, d_hidden, dtype, layout, bias, _seed(case))
    if layout == "conv1d":
        assert w1.stride() == (1, d_hidden)  # the .t() view, read in place
    out = fastattn.gelu_ffn(x, w1, b1, w2, b2, approximate=approximate, backend="triton")
    assert out.shape == (T, d_in) and out.dtype == dtype and out.is_contiguous()
    ref = reference.gelu_ffn(x, w1, b1, w2, b2, approximate=approximate)
    naive = reference.gelu_ffn(x, w1, b1, w2, b2, approximate=approximate, compute_dtype=None)
    assert_close(out, ref, naive, dtype, _case_id(case))


@needs_triton
def test_gelu_ffn_triton_keeps_leading_dims_and_strided_x():
    g = _seed("lead")
    big = torch.randn(2, 9, 64, generator=g).to(DEV)
    x = big[..., :40]  # rows with stride 64 > in_features: read in place
    _, w1, b1, w2, b2 = _ffn_params(1, 40, 100, torch.float32, "linear", True, g)
    out = fastattn.gelu_ffn(x, w1, b1, w2, b2, backend="triton")
    assert out.shape == (2, 9, 40)
    ref = reference.gelu_ffn(x, w1, b1, w2, b2)
    naive = reference.gelu_ffn(x, w1, b1, w2, b2, compute_dtype=None)
    assert_close(out, ref, naive, torch.float32, "lead-dims-strided-x")


# ------------------------------------------------------------------------------------ building blocks
BLOCK_CASES = [(17, 32, 37, torch.float16), (33, 40, 100, torch.float32), (41, 96, 384, torch.float16)]


@needs_triton
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("case", BLOCK_CASES, ids=lambda c: f"t{c[0]}-{c[1]}x{c[2]}-{str(c[3])[6:]}")
def test_linear_gelu_triton(case, approximate):
    T, d_in, d_out, dtype = case
    g = _seed("lg", case, approximate)
    x, w, b, _, _ = _ffn_params(T, d_in, d_out, dtype, "conv1d" if approximate == "tanh" else "linear", True, g)
    out = ffn_blocks.linear_gelu(x, w, b, approximate=approximate, backend="triton")
    ref = F.gelu(F.linear(x.double(), w.double(), b.double()), approximate=approximate)
    naive = F.gelu(F.linear(x, w, b), approximate=approximate)
    assert_close(out, ref, naive, dtype, f"linear_gelu-{approximate}")


@needs_triton
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("case", BLOCK_CASES, ids=lambda c: f"t{c[0]}-{c[1]}x{c[2]}-{str(c[3])[6:]}")
def test_linear_residual_triton(case, with_bias):
    T, d_in, d_out, dtype = case
    g = _seed("lr", case, with_bias)
    x, w, b, _, _ = _ffn_params(T, d_in, d_out, dtype, "linear", with_bias, g)
    res = torch.randn(T, d_out, generator=g).to(dtype).to(DEV)
    out = ffn_blocks.linear_residual(x, w, b, res, backend="triton")
    ref = F.linear(x.double(), w.double(), None if b is None else b.double()) + res.double()
    naive = F.linear(x, w, b) + res
    assert_close(out, ref, naive, dtype, f"linear_residual-bias{with_bias}")
    # no residual: plain linear + bias
    out = ffn_blocks.linear_residual(x, w, b, None, backend="triton")
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert_close(out, ref, F.linear(x, w, b), dtype, "linear_residual-none")


LN_CASES = [(17, 37, torch.float32, True, True), (33, 100, torch.float16, True, False),
            (41, 384, torch.float16, False, True), (5, 768, torch.float32, True, True)]


@needs_triton
@pytest.mark.parametrize("case", LN_CASES, ids=lambda c: f"t{c[0]}-n{c[1]}-{str(c[2])[6:]}-res{c[3]}-affine{c[4]}")
def test_residual_layernorm_triton(case):
    T, N, dtype, with_res, affine = case
    g = _seed("ln", case)
    x = (torch.randn(T, N, generator=g) * 3 + 1).to(dtype).to(DEV)
    res = torch.randn(T, N, generator=g).to(dtype).to(DEV) if with_res else None
    w = (torch.rand(N, generator=g) + 0.5).to(dtype).to(DEV) if affine else None
    b = torch.randn(N, generator=g).to(dtype).to(DEV) if affine else None
    out = ffn_blocks.residual_layernorm(x, res, w, b, 1e-5, backend="triton")
    h64 = x.double() if res is None else x.double() + res.double()
    ref = F.layer_norm(h64, (N,), None if w is None else w.double(), None if b is None else b.double(), 1e-5)
    hn = x if res is None else x + res
    naive = F.layer_norm(hn, (N,), w, b, 1e-5)
    assert_close(out, ref, naive, dtype, "residual_layernorm")


@needs_triton
def test_residual_layernorm_triton_wide_rows_loop():
    """Rows wider than MAX_FUSED_N take the looped (three-pass) program."""
    from fastattn.kernels.ffn.layernorm import MAX_FUSED_N
    T, N = 3, MAX_FUSED_N + 37
    g = _seed("ln-wide")
    x = (torch.randn(T, N, generator=g) * 2 + 5).to(DEV)  # large mean: catches E[x^2]-mean^2 cancellation
    res = torch.randn(T, N, generator=g).to(DEV)
    w, b = torch.rand(N, generator=g).to(DEV) + 0.5, torch.randn(N, generator=g).to(DEV)
    out = ffn_blocks.residual_layernorm(x, res, w, b, 1e-6, backend="triton")
    ref = F.layer_norm(x.double() + res.double(), (N,), w.double(), b.double(), 1e-6)
    assert_close(out, ref, F.layer_norm(x + res, (N,), w, b, 1e-6), torch.float32, "layernorm-wide")


# -------------------------------------------------------------------------------- GELU variant identity
def _variant_inputs(dtype=torch.float32):
    """Pre-activations near |x| = 2.7, where the erf and tanh GELUs differ by ~4.7e-4."""
    g = _seed("variant")
    n = 32
    x = torch.cat([2.7 + 0.05 * torch.randn(8, n, generator=g), -2.7 + 0.05 * torch.randn(8, n, generator=g)])
    eye = torch.eye(n)
    return x.to(dtype).to(DEV), eye.to(dtype).to(DEV), torch.zeros(n, dtype=dtype, device=DEV)


def _check_variants(run):
    x, eye, zero = _variant_inputs()
    exact = F.gelu(x.double(), approximate="none")
    tanh = F.gelu(x.double(), approximate="tanh")
    gap = float((exact - tanh).abs().max())
    assert gap > 3e-4, gap  # the two variants really are apart on these inputs
    for approximate, want, other in (("none", exact, tanh), ("tanh", tanh, exact)):
        out = run(x, eye, zero, approximate).double()
        err, err_other = float((out - want).abs().max()), float((out - other).abs().max())
        print(f"gelu {approximate}: err vs asked-for variant {err:.2e}, vs the other {err_other:.2e}")
        assert err < 1e-5, (approximate, err)
        assert err_other > 3e-4, (approximate, err_other)


@needs_triton
def test_gelu_variants_are_not_substituted_triton():
    _check_variants(lambda x, eye, zero, ap: ffn_blocks.linear_gelu(x, eye, zero, approximate=ap, backend="triton"))
    # and through the full FFN (identity down projection)
    _check_variants(lambda x, eye, zero, ap: fastattn.gelu_ffn(x, eye, zero, eye, zero, approximate=ap,
                                                               backend="triton"))


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 8)
    w1, b1, w2, b2 = torch.randn(16, 8), torch.randn(16), torch.randn(8, 16), torch.randn(8)
    with pytest.raises(ValueError, match="w1"):
        fastattn.gelu_ffn(x, torch.randn(16, 9), b1, w2, b2)
    with pytest.raises(ValueError, match="w2"):
        fastattn.gelu_ffn(x, w1, b1, torch.randn(8, 15), b2)
    with pytest.raises(ValueError, match="b1"):
        fastattn.gelu_ffn(x, w1, torch.randn(15), w2, b2)
    with pytest.raises(ValueError, match="approximate"):
        fastattn.gelu_ffn(x, w1, b1, w2, b2, approximate="sigmoid")
    with pytest.raises(TypeError, match="w2 float16"):
        fastattn.gelu_ffn(x, w1, b1, w2.half(), b2)
    # building blocks
    with pytest.raises(ValueError, match="approximate"):
        ffn_blocks.linear_gelu(x, w1, b1, approximate="gelu_new")
    with pytest.raises(ValueError, match="weight"):
        ffn_blocks.linear_gelu(x, torch.randn(16, 9), b1)
    with pytest.raises(ValueError, match="bias"):
        ffn_blocks.linear_gelu(x, w1, torch.randn(3))
    with pytest.raises(TypeError, match="bias float16"):
        ffn_blocks.linear_gelu(x, w1, b1.half())
    with pytest.raises(ValueError, match="residual"):
        ffn_blocks.linear_residual(x, w1, b1, torch.randn(4, 15))
    with pytest.raises(ValueError, match="residual"):
        ffn_blocks.residual_layernorm(x, torch.randn(4, 7), None, None)
    with pytest.raises(ValueError, match="weight"):
        ffn_blocks.residual_layernorm(x, None, torch.randn(7), None)
    with pytest.raises(ValueError, match="eps"):
        ffn_blocks.residual_layernorm(x, None, None, None, eps=-1.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ffn_blocks.linear_residual([1.0], w1, b1)
    with pytest.raises(ValueError, match="backend"):
        ffn_blocks.linear_gelu(x, w1, b1, backend="cutlass")
    with pytest.raises(ValueError, match="backend must be 'cuda' or 'triton'"):
        torch.ops.fastattn.linear_act(x, w1, b1, None, "gelu_erf", "torch")
    with pytest.raises(ValueError, match="activation must be one of"):
        torch.ops.fastattn.linear_act(x, w1, b1, None, "relu", "triton")


@needs_triton
def test_unreadable_weight_strides_are_a_reason_not_a_copy():
    g = _seed("strides")
    x = torch.randn(5, 8, generator=g).to(DEV)
    w = torch.randn(16, 16, generator=g).to(DEV)[:, ::2]  # strides (16, 2): no unit stride
    assert w.stride() == (16, 2)
    with pytest.raises(ValueError, match=r"weight has strides \(16, 2\)"):
        ffn_blocks.linear_gelu(x, w, None, backend="triton")
    with pytest.raises(ValueError, match=r"w1 has strides \(16, 2\)"):
        fastattn.gelu_ffn(x, w, None, torch.randn(8, 16).to(DEV), None, backend="triton")
    # auto mode passes over triton (with that reason) and the torch backend computes it exactly
    table = dispatch.explain("linear_act", normalize_linear_act(x, w, None, None, "gelu_erf"))
    assert any("strides (16, 2)" in r for r in table["triton"])
    out = ffn_blocks.linear_gelu(x, w, None)
    torch.testing.assert_close(out, F.gelu(F.linear(x, w)), rtol=0, atol=0)


@needs_triton
def test_float64_is_a_reason_for_kernels_and_runs_on_torch():
    x, w = torch.randn(3, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):
        ffn_blocks.linear_gelu(x, w, None, backend="triton")
    with pytest.raises(ValueError, match="float64"):
        ffn_blocks.residual_layernorm(x, None, None, None, backend="triton")
    out = ffn_blocks.linear_gelu(x, w, None)  # auto -> torch
    torch.testing.assert_close(out, F.gelu(F.linear(x, w)), rtol=0, atol=0)


def test_env_var_forces_backend(monkeypatch):
    x, w = torch.randn(3, 8), torch.randn(4, 8)
    monkeypatch.setenv("FASTATTN_BACKEND", "cuda")
    if torch.cuda.is_available():
        pytest.skip("this checks the message on a machine without the cuda backend")
    with pytest.raises(ValueError, match="FASTATTN_BACKEND='cuda' cannot run linear_act"):
        ffn_blocks.linear_gelu(x, w, None)
    monkeypatch.setenv("FASTATTN_BACKEND", "torch")
    torch.testing.assert_close(ffn_blocks.linear_gelu(x, w, None), F.gelu(F.linear(x, w)), rtol=0, atol=0)


# ------------------------------------------------------------------------------- autograd, custom ops
@needs_triton
def test_autograd_through_the_kernel_ops():
    g = _seed("grad")
    x, w, b, _, _ = _ffn_params(9, 16, 24, torch.float32, "linear", True, g)
    res = torch.randn(9, 24, generator=g).to(DEV)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b, res)]
    out = ffn_blocks.linear_residual(*leaves, backend="triton")  # forced: kernel forward, recompute backward
    out2 = ffn_blocks.residual_layernorm(out, None, None, None, backend="triton")
    out2.square().sum().backward()
    ref_leaves = [t.clone().double().requires_grad_(True) for t in (x, w, b, res)]
    ref = F.layer_norm(F.linear(*ref_leaves[:3]) + ref_leaves[3], (24,))
    ref.square().sum().backward()
    for a, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad.double(), r.grad, rtol=1e-4, atol=1e-5)
    # auto mode with grad picks the torch backend (no fused backward yet)
    table = dispatch.explain("linear_act", normalize_linear_act(leaves[0], leaves[1], leaves[2], None, "none"))
    assert any("require grad" in r for r in table["triton"])


@needs_triton
def test_custom_ops_opcheck():
    g = _seed("opcheck")
    x = torch.randn(5, 8, generator=g).to(DEV)
    w = (torch.randn(6, 8, generator=g) * 0.3).to(DEV)
    b = torch.randn(6, generator=g).to(DEV)
    r = torch.randn(5, 6, generator=g).to(DEV)
    torch.library.opcheck(torch.ops.fastattn.linear_act.default, (x, w, b, None, "gelu_tanh", "triton"),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    torch.library.opcheck(torch.ops.fastattn.linear_act.default, (x, w, None, r, "none", "triton"),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    torch.library.opcheck(torch.ops.fastattn.residual_layernorm.default, (r, r, b, b, 1e-5, "triton"),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@needs_triton
def test_torch_compile_traces_without_graph_breaks():
    g = _seed("compile")
    x, w1, b1, w2, b2 = _ffn_params(7, 16, 24, torch.float32, "conv1d", True, g)
    gamma, beta = torch.ones(16).to(DEV), torch.zeros(16).to(DEV)

    def block(x):
        h = ffn_blocks.linear_gelu(x, w1, b1, approximate="tanh", backend="triton")
        y = ffn_blocks.linear_residual(h, w2, b2, x, backend="triton")
        return ffn_blocks.residual_layernorm(y, None, gamma, beta, backend="triton")

    torch._dynamo.reset()
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------- CUDA pieces, compile-only
def test_cuda_ffn_extension_built_or_clear_reason():
    C, why = load_ext("_C")
    if C is None:
        assert "fastattn._C" in why  # a readable reason, not an exception
        assert dispatch.backends("linear_act")["cuda"].unavailable_reason() is not None
        pytest.skip(f"fastattn._C not built here: {why}")
    assert "ffn" in C.build_info()["components"]
    assert hasattr(C, "bias_act") and hasattr(C, "residual_layernorm")
    if torch.cuda.is_available():
        return
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        C.bias_act(0, 0, 4, 8, 8, 0, 1, 0)
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        C.residual_layernorm(0, 0, 0, 0, 0, 4, 8, 8, 8, 8, 1e-5, 0, 0)
    with pytest.raises(ValueError, match="activation"):
        C.bias_act(0, 0, 4, 8, 8, 0, 7, 0)  # argument checks come before the device check


def test_cublaslt_extension_importable_or_clear_reason():
    blas, why = ffn_cuda._ext("_C_blas")
    if blas is None:
        assert "nvidia-cublas" in why or "fastattn._C_blas" in why, why
        reason = dispatch.backends("linear_act")["cuda"].unavailable_reason()
        assert reason is not None
        pytest.skip(f"fastattn._C_blas not built here: {why}")
    assert "cuBLASLt" in blas.version()
    if torch.cuda.is_available():
        return
    args = dict(M=4, N=8, K=8, dtype=0, x_ptr=0, stride_xm=8, stride_xk=1, w_ptr=0, stride_wn=8, stride_wk=1,
                bias_ptr=0, residual_ptr=0, stride_rm=0, y_ptr=0, stride_ym=8, epilogue=0, workspace_ptr=0,
                workspace_bytes=0, device=0, stream=0)
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        blas.gemm(**args)
    with pytest.raises(ValueError, match="exact-erf"):
        blas.gemm(**{**args, "epilogue": 2})
    with pytest.raises(ValueError, match="weight strides"):
        blas.gemm(**{**args, "stride_wn": 16, "stride_wk": 2})
    # the metadata-only heuristic query behind not_supported_reasons: same argument checks, then the device
    chk = dict(M=4, N=8, K=8, dtype=0, stride_xm=8, stride_xk=1, stride_wn=8, stride_wk=1, has_bias=True,
               has_residual=False, stride_rm=0, stride_ym=8, epilogue=1, workspace_bytes=1 << 20, device=0,
               align_x=16, align_w=16, align_bias=16, align_residual=16, align_y=256)
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        blas.check(**chk)
    with pytest.raises(ValueError, match="alignments must be powers of two"):
        blas.check(**{**chk, "align_x": 3})
    with pytest.raises(ValueError, match="residual cannot follow the GELU"):
        blas.check(**{**chk, "has_residual": True})
    assert ffn_cuda._alignment(0) == 256 and ffn_cuda._alignment(4096 + 2) == 2 and ffn_cuda._alignment(48) == 16


def test_cuda_backend_reports_why_not_here():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    x, w = torch.randn(3, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="cuda: unavailable"):
        ffn_blocks.linear_gelu(x, w, None, backend="cuda")
    with pytest.raises(ValueError, match="cuda: unavailable"):
        ffn_blocks.residual_layernorm(x, None, None, None, backend="cuda")
    with pytest.raises(ValueError, match="cuda: unavailable"):
        fastattn.gelu_ffn(x, w, None, w.t().contiguous(), None, backend="cuda")


@needs_triton
def test_autotune_prune_picks_arch_list_and_fits(monkeypatch):
    """The GPU autotuner's prune function (not exercised by the interpreter): arch list, shared-memory
    fit, small-M tiles, fp32 K depth, never empty."""
    from fastattn.kernels.ffn import linear_act as K
    x16, x32 = torch.empty(1, dtype=torch.float16), torch.empty(1, dtype=torch.float32)
    monkeypatch.setattr(K, "_device_facts", lambda x: (9, 227 * 1024))
    big = K.prune_configs(K.linear_act_kernel_tuned.configs, {"x_ptr": x16}, M=16384, N=3072)
    assert big and all(any(c is d for d in K.CONFIGS_SM90) for c in big)
    small = K.prune_configs(K.linear_act_kernel_tuned.configs, {"x_ptr": x16}, M=3, N=3072)
    assert small and all(c.kwargs["BLOCK_M"] <= 32 for c in small)
    f32 = K.prune_configs(K.linear_act_kernel_tuned.configs, {"x_ptr": x32, "M": 4096, "N": 4096})
    assert f32 and all(c.kwargs["BLOCK_K"] <= 32 for c in f32)
    monkeypatch.setattr(K, "_device_facts", lambda x: (8, 99 * 1024))  # e.g. sm_86: 99 KB
    a = K.prune_configs(K.linear_act_kernel_tuned.configs, {"x_ptr": x16}, M=16384, N=3072)
    assert a and all(any(c is d for d in K.CONFIGS_SM80) for c in a)
    for c in a:
        kw = c.kwargs
        assert c.num_stages * (kw["BLOCK_M"] + kw["BLOCK_N"]) * kw["BLOCK_K"] * 2 <= 99 * 1024
    # register budget (compile-only calibration, kernels/ffn/linear_act.py): 128 accumulator values per
    # thread spilled, so no list holds such a config and the prune drops one it is handed
    assert all(K.acc_per_thread(c) <= K.MAX_ACC_PER_THREAD for c in K.CONFIGS_SM90 + K.CONFIGS_SM80)
    spiller = K._cfg(128, 256, 64, 8, 3)
    monkeypatch.setattr(K, "_device_facts", lambda x: (9, 227 * 1024))
    kept = K.prune_configs([spiller, K._cfg(128, 128, 64, 8, 4)], {"x_ptr": x16}, M=16384, N=3072)
    assert [c.kwargs["BLOCK_N"] for c in kept] == [128]
    monkeypatch.setattr(K, "_device_facts", lambda x: (8, 1024))  # nothing fits: still one config
    assert len(K.prune_configs(K.linear_act_kernel_tuned.configs, {"x_ptr": x16}, M=64, N=64)) == 1


@needs_triton
def test_triton_gemm_reads_conv1d_views_and_strided_x_in_place(monkeypatch):
    """No hidden copies: GPT-2 Conv1D ``.t()`` weights and a strided ``x`` reach the kernel as the caller's
    own storage and strides."""
    from fastattn.kernels.ffn import linear_act as K
    calls = []

    class Spy:
        def __getitem__(self, grid):
            return lambda *args, **kw: calls.append((args, kw))

    monkeypatch.setattr(K, "linear_act_kernel", Spy())
    monkeypatch.setattr(K, "linear_act_kernel_tuned", Spy())
    g = _seed("no-copy")
    x = torch.randn(7, 2, 32, generator=g).to(DEV)[:, 1]              # (7, 32), row stride 64
    w1c, w2c = torch.randn(32, 48, generator=g).to(DEV), torch.randn(48, 32, generator=g).to(DEV)  # Conv1D (in, out)
    with torch.no_grad():
        fastattn.gelu_ffn(x, w1c.t(), None, w2c.t(), None, approximate="tanh", backend="triton")
    (up, up_kw), (down, down_kw) = calls
    assert up[0].data_ptr() == x.data_ptr() and up_kw["stride_xm"] == 64
    assert up[1].data_ptr() == w1c.data_ptr() and (up_kw["stride_wn"], up_kw["stride_wk"]) == (1, 48)
    assert down[1].data_ptr() == w2c.data_ptr() and (down_kw["stride_wn"], down_kw["stride_wk"]) == (1, 32)
    assert up_kw["ACTIVATION"] == 2 and down_kw["ACTIVATION"] == 0  # tanh GELU, then no activation


# ----------------------------------------------------------------------------------- one stack, one table
def test_plain_import_fastattn_registers_the_ffn_ops_and_no_gelu_ffn_op():
    """After ``import fastattn`` alone every ``fastattn::`` FFN op exists (a torch.export artefact naming
    one must load), no kernel module or extension is imported, and ``gelu_ffn`` is no op of its own."""
    import subprocess
    import sys
    code = ("import sys, torch, fastattn\n"
            "ops = {n for n in dir(torch.ops.fastattn) if not n.startswith('_')}\n"
            "assert {'linear_act', 'residual_layernorm'} <= ops, ops\n"
            "assert 'gelu_ffn_fwd' not in ops, ops\n"
            "bad = [m for m in sys.modules if m.startswith(('fastattn._C', 'fastattn.kernels.ffn.'))]\n"
            "assert not bad, bad\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_activation_is_the_one_table():
    """The ``Activation`` enum's codes are the Triton ``ACTIVATION`` constants and the C++ enum; names,
    ``approximate=`` and HF names all map through it."""
    import pathlib
    import re
    from fastattn.ffn.problem import HF_ACTIVATIONS, Activation
    assert [(a.label, int(a)) for a in Activation] == [("none", 0), ("gelu_erf", 1), ("gelu_tanh", 2)]
    assert Activation.parse("gelu_tanh") is Activation.GELU_TANH
    assert Activation.from_approximate("none") is Activation.GELU_ERF
    assert Activation.from_approximate("tanh").approximate == "tanh"
    assert Activation.from_hf("gelu") is Activation.GELU_ERF and Activation.from_hf("gelu_new") is Activation.GELU_TANH
    assert Activation.from_hf("relu") is None and Activation.from_hf(None) is None
    assert set(HF_ACTIVATIONS.values()) == {Activation.GELU_ERF, Activation.GELU_TANH}
    with pytest.raises(ValueError, match="approximate"):
        Activation.from_approximate("gelu_new")
    with pytest.raises(ValueError, match="activation must be one of"):
        Activation.parse("relu")
    if HAS_TRITON:
        from fastattn.kernels.ffn import activations as KA
        assert (KA.NONE, KA.GELU_ERF, KA.GELU_TANH) == tuple(int(a) for a in Activation)
    root = pathlib.Path(__file__).resolve().parents[1] / "csrc"
    headers = [f for f in root.rglob("*") if f.suffix in (".h", ".hpp", ".cuh")]
    enums = [m for f in headers for m in re.findall(r"enum class Activation\b[^{]*\{([^}]*)\}", f.read_text())]
    assert len(enums) == 1, enums
    codes = dict((n.strip(), int(v)) for n, v in re.findall(r"(\w+)\s*=\s*(\d+)", enums[0]))
    assert codes == {"kNone": 0, "kGeluErf": 1, "kGeluTanh": 2} == {
        "kNone": int(Activation.NONE), "kGeluErf": int(Activation.GELU_ERF), "kGeluTanh": int(Activation.GELU_TANH)}


# ------------------------------------------------------------------------------------ strided operands
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_strided_bias_is_read_through_its_stride(dtype):
    """A bias view with stride 2 (``torch.randn(2N)[::2]``): the Triton GEMM epilogue must read it through
    its stride (it read it as contiguous: max error 2.4 for linear_residual, 12.3 for gelu_ffn), forced
    and in auto mode (where a GPU hands it to Triton because the cuda backend refuses it)."""
    g = _seed("strided-bias", dtype)
    T, d_in, d_hidden = 19, 32, 48
    x, w1, _, w2, _ = _ffn_params(T, d_in, d_hidden, dtype, "linear", False, g)
    b1 = torch.randn(2 * d_hidden, generator=g).to(dtype).to(DEV)[::2]
    b2 = torch.randn(2 * d_in, generator=g).to(dtype).to(DEV)[::2]
    res = torch.randn(T, d_hidden, generator=g).to(dtype).to(DEV)
    assert b1.stride() == (2,) and b2.stride() == (2,)
    ref = F.linear(x.double(), w1.double(), b1.double()) + res.double()
    naive = F.linear(x, w1, b1) + res
    for backend in ("triton", None):
        out = ffn_blocks.linear_residual(x, w1, b1, res, backend=backend)
        assert_close(out, ref, naive, dtype, f"linear_residual-strided-bias-{backend}")
        out = fastattn.gelu_ffn(x, w1, b1, w2, b2, backend=backend)
        assert_close(out, reference.gelu_ffn(x, w1, b1, w2, b2),
                     reference.gelu_ffn(x, w1, b1, w2, b2, compute_dtype=None), dtype, f"gelu_ffn-strided-bias-{backend}")
    # the LayerNorm's weight and bias are read through their strides too
    lw = (torch.rand(2 * d_hidden, generator=g) + 0.5).to(dtype).to(DEV)[::2]
    out = ffn_blocks.residual_layernorm(res, None, lw, b1, 1e-5, backend="triton")
    assert_close(out, F.layer_norm(res.double(), (d_hidden,), lw.double(), b1.double(), 1e-5),
                 F.layer_norm(res, (d_hidden,), lw, b1, 1e-5), dtype, "layernorm-strided-params")


# ------------------------------------------------------------------------------ cuda backend: fp32 policy
def test_cuda_fp32_never_uses_the_cublaslt_gelu_epilogue():
    """fp32 must be computed to fp32 accuracy, and cuBLASLt's GELU epilogue's accuracy is undocumented:
    for fp32 the cuda backend runs GEMM + BIAS, then fastattn's own fp32 GELU (``_C.bias_act``). The
    fused tanh epilogue stays for float16/bfloat16; the exact-erf GELU never uses it."""
    E = ffn_cuda
    Act = ffn_cuda.Activation
    epi = ffn_cuda.CudaLinearAct.epilogue
    assert epi(torch.float32, Act.GELU_TANH) == (E.EPI_BIAS, Act.GELU_TANH)
    assert epi(torch.float32, Act.GELU_ERF) == (E.EPI_BIAS, Act.GELU_ERF)
    assert epi(torch.float32, Act.NONE) == (E.EPI_BIAS, Act.NONE)
    for dt in (torch.float16, torch.bfloat16):
        assert epi(dt, Act.GELU_TANH) == (E.EPI_GELU_TANH_BIAS, Act.NONE)
        assert epi(dt, Act.GELU_ERF) == (E.EPI_BIAS, Act.GELU_ERF)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cuda_launcher_calls_follow_the_epilogue_policy(monkeypatch, dtype):
    """What the launcher really asks of the extensions (recorded by stand-ins, so it runs without a GPU):
    fp32 tanh GELU = a BIAS-epilogue GEMM + bias_act(gelu_tanh) in place; fp16 = the fused epilogue alone."""
    calls = []

    class Blas:
        def gemm(self, *a):
            calls.append(("gemm", a))

    class C:
        def bias_act(self, *a):
            calls.append(("bias_act", a))

    monkeypatch.setattr(ffn_cuda, "_ext", lambda name: ((Blas() if name == "_C_blas" else C()), None))
    monkeypatch.setattr(ffn_cuda, "_stream", lambda dev: 7)
    x, w, b = torch.randn(5, 8).to(dtype), torch.randn(6, 8).to(dtype), torch.randn(6).to(dtype)
    out = torch.empty(5, 6, dtype=dtype)
    ffn_cuda.CudaLinearAct().launch(x, w, b, None, ffn_cuda.Activation.GELU_TANH, out)
    (name, gemm), *rest = calls
    assert name == "gemm" and gemm[3] == ffn_cuda.DTYPE_CODES[dtype] and gemm[10] == b.data_ptr()
    if dtype == torch.float32:
        assert gemm[15] == ffn_cuda.EPI_BIAS
        assert rest == [("bias_act", (out.data_ptr(), 0, 5, 6, 6, 2, int(ffn_cuda.Activation.GELU_TANH), 7))]
    else:
        assert gemm[15] == ffn_cuda.EPI_GELU_TANH_BIAS and rest == []


def test_cublaslt_gemms_never_request_tf32():
    """Every cuBLASLt matmul descriptor in csrc is created with compute type CUBLAS_COMPUTE_32F (fp32
    accumulation for every dtype), and no TF32 / reduced-precision compute type appears anywhere."""
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[1] / "csrc"
    strip = (lambda s: re.sub(r"//[^\n]*|/\*.*?\*/", "", s, flags=re.S))  # code, not comments
    sources = {f: strip(f.read_text()) for f in root.rglob("*") if f.suffix in (".cpp", ".cu", ".h", ".cuh")}
    creates = [(f.name, m) for f, s in sources.items()
               for m in re.findall(r"cublasLtMatmulDescCreate\(\s*[^,]+,\s*([A-Za-z0-9_]+)", s)]
    assert creates, "no cublasLtMatmulDescCreate call found under csrc/"
    assert all(m == "CUBLAS_COMPUTE_32F" for _, m in creates), creates
    for f, s in sources.items():
        assert not re.search(r"FAST_TF32|FAST_16F|FAST_16BF|TF32_TENSOR_OP|CUBLAS_COMPUTE_16F", s), f


# ------------------------------------------------------------------------------- torch backend (moved from test_api)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_gelu_ffn_torch(approximate, dtype):
    g = torch.Generator().manual_seed(21)
    x = torch.randn(3, 5, 32, generator=g).to(dtype)
    w1, b1 = torch.randn(37, 32, generator=g).to(dtype) / 6, torch.randn(37, generator=g).to(dtype)
    w2c = torch.randn(37, 24, generator=g).to(dtype) / 6  # Conv1D layout (in, out): pass .t()
    out = fastattn.gelu_ffn(x, w1, b1, w2c.t(), None, approximate=approximate, backend="torch")
    eager = F.linear(F.gelu(F.linear(x, w1, b1), approximate=approximate), w2c.t())
    assert out.shape == (3, 5, 24)
    torch.testing.assert_close(out, eager)
    ref = reference.gelu_ffn(x, w1, b1, w2c.t(), None, approximate=approximate)
    naive = reference.gelu_ffn(x, w1, b1, w2c.t(), None, approximate=approximate, compute_dtype=None)
    assert_close(out, ref, naive, dtype, f"ffn-{approximate}")


def test_gelu_variants_differ():
    x = torch.full((4,), 2.7, dtype=torch.float64)
    d = (reference.gelu(x, "none") - reference.gelu(x, "tanh")).abs().max().item()
    assert 4e-4 < d < 6e-4


def _bad_ffn_cases():
    x = torch.randn(4, 8)
    w1, b1, w2, b2 = torch.randn(16, 8), torch.randn(16), torch.randn(8, 16), torch.randn(8)
    yield "w1_in_mismatch", (x, w1[:, :7], b1, w2, b2), {}, ValueError, "w1"
    yield "w2_hidden_mismatch", (x, w1, b1, w2[:, :15], b2), {}, ValueError, "w2"
    yield "b1_shape", (x, w1, b1[:3], w2, b2), {}, ValueError, "b1"
    yield "b2_shape", (x, w1, b1, w2, b2[:3]), {}, ValueError, "b2"
    yield "approximate", (x, w1, b1, w2, b2), {"approximate": "erf"}, ValueError, "approximate"
    yield "dtype_mix", (x, w1.half(), b1, w2, b2), {}, TypeError, "w1 float16"
    yield "w_not_2d", (x, w1.view(2, 8, 8), b1, w2, b2), {}, ValueError, "2-D"


@pytest.mark.parametrize("case", list(_bad_ffn_cases()), ids=lambda c: c[0])
def test_bad_ffn_input(case):
    name, args, kw, exc, needle = case
    with pytest.raises(exc) as ei:
        fastattn.gelu_ffn(*args, **kw)
    print(f"{name}: {ei.value}")
    assert needle in str(ei.value)
    assert isinstance(ei.value, RuntimeError), "fastattn.errors classes: code written for SDPA catches them too"

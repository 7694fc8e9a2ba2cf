"""fastattn.attention_varlen: packed sequences against a per-sequence float64 reference (numerics rule),
forward and gradients, causal bottom-right, GQA, E != Ev, strided packed views, empty sequences; every
bad input; dispatch (cuda declines with a reason; triton runs the forward, the fused backward and dropout,
and auto mode picks it for training). The triton rows run the Triton kernels on CPU tensors under
``TRITON_INTERPRET=1``, forced with ``FASTATTN_BACKEND=triton`` as CI forces kernels."""

import pytest
import torch

import fastattn
from fastattn import dispatch, reference
from fastattn.errors import BackendError, InputError, InputTypeError
from fastattn.testing import assert_close


def _cu(lens):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)


def _packed(lq, lk, Hq=4, Hkv=4, E=16, Ev=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    Ev = Ev or E
    q = torch.randn(sum(lq), Hq, E, generator=g).to(dtype)
    k = torch.randn(sum(lk), Hkv, E, generator=g).to(dtype)
    v = torch.randn(sum(lk), Hkv, Ev, generator=g).to(dtype)
    return q, k, v, _cu(lq), _cu(lk)


CASES = {
    "equal": ([5, 9, 3], [5, 9, 3], {}),
    "zero-length": ([0, 7, 0, 4, 0], [0, 7, 0, 4, 0], {}),
    "lq0-lk>0-and-lq>0-lk0": ([0, 3, 6], [4, 0, 6], {}),
    "one-long-many-short": ([97] + [1, 2, 3, 1, 2] * 4, [97] + [1, 2, 3, 1, 2] * 4, {}),
    "lq<lk": ([2, 3, 1], [7, 5, 4], {}),
    "lq>lk": ([7, 5, 4], [2, 3, 1], {}),
    "gqa": ([6, 11], [6, 11], dict(Hq=6, Hkv=2, enable_gqa=True)),
    "e!=ev": ([6, 11], [8, 3], dict(E=16, Ev=24)),
    "scale": ([6, 11], [6, 11], dict(scale=0.3)),
}


def _run_case(lq, lk, opts, causal, dtype=torch.float32, grad=True, backend=None):
    opts = dict(opts)
    kw = {n: opts.pop(n) for n in ("enable_gqa", "scale") if n in opts}
    q, k, v, cq, ck = _packed(lq, lk, dtype=dtype, **opts)
    q, k, v = (t.requires_grad_(grad) for t in (q, k, v))
    out = fastattn.attention_varlen(q, k, v, cq, ck, max(lq), max(lk), is_causal=causal, backend=backend, **kw)
    assert out.shape == (q.shape[0], q.shape[1], v.shape[2]) and out.is_contiguous()
    ref = reference.attention_varlen(q, k, v, cq, ck, is_causal=causal, scale=kw.get("scale"))
    naive = reference.attention_varlen(q, k, v, cq, ck, is_causal=causal, scale=kw.get("scale"), compute_dtype=None)
    return (q, k, v), out, ref, naive


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_grads_match_float64(case, causal):
    # the torch backend (per-sequence SDPA); the triton kernels' rows are below and tests/test_triton_varlen.py
    lq, lk, opts = CASES[case]
    ins, out, ref, naive = _run_case(lq, lk, opts, causal, backend="torch")
    name = f"{case}-{'causal' if causal else 'full'}"
    assert torch.isfinite(out).all()
    assert_close(out.detach(), ref.detach(), naive.detach(), torch.float32, name)
    if out.numel() == 0:
        return
    g = torch.Generator().manual_seed(7)
    dout = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad(out, ins, dout, allow_unused=True)
    rgrads = torch.autograd.grad(ref, ins, dout.double(), allow_unused=True)
    ngrads = torch.autograd.grad(naive, ins, dout, allow_unused=True)
    for n, a, r, nv in zip("qkv", grads, rgrads, ngrads):
        a = torch.zeros_like(ins["qkv".index(n)]) if a is None else a
        r = torch.zeros_like(a, dtype=torch.float64) if r is None else r
        nv = torch.zeros_like(a) if nv is None else nv
        assert torch.isfinite(a).all(), f"{name} d{n} not finite"
        assert_close(a, r, nv, torch.float32, f"{name}-d{n}")


def test_empty_rows_and_sequences_are_zero():
    # lq > lk causal: the first lq - lk rows of that sequence see no key; lk = 0: all rows empty
    q, k, v, cq, ck = _packed([5, 3, 0], [2, 0, 4])
    out = fastattn.attention_varlen(q, k, v, cq, ck, 5, 4, is_causal=True)
    assert (out[:3] == 0).all() and (out[5:8] == 0).all()
    assert (out[3:5].abs().sum(-1) > 0).all()


def test_causal_is_bottom_right_per_sequence():
    # lq == lk: top-left (packed training); equals SDPA's is_causal on each sequence alone
    q, k, v, cq, ck = _packed([4, 6], [4, 6])
    out = fastattn.attention_varlen(q, k, v, cq, ck, 6, 6, is_causal=True)
    for a, b in ((0, 4), (4, 10)):
        alone = torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), is_causal=True)
        torch.testing.assert_close(out[a:b], alone.transpose(0, 1))
    # lq = 1 against lk keys (decode): the one row sees every key
    q, k, v, cq, ck = _packed([1, 1], [5, 3])
    torch.testing.assert_close(fastattn.attention_varlen(q, k, v, cq, ck, 1, 5, is_causal=True),
                               fastattn.attention_varlen(q, k, v, cq, ck, 1, 5, is_causal=False))


def test_strided_packed_qkv_views_read_in_place():
    g = torch.Generator().manual_seed(3)
    lens = [5, 0, 12, 7]
    qkv = torch.randn(sum(lens), 3, 4, 16, generator=g)  # one projection, (total, 3, H, E)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    assert not q.is_contiguous()
    cu = _cu(lens)
    out = fastattn.attention_varlen(q, k, v, cu, cu, 12, 12)
    ref = reference.attention_varlen(q, k, v, cu, cu)
    naive = reference.attention_varlen(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, compute_dtype=None)
    assert_close(out, ref, naive, torch.float32, "strided-qkv")
    # int64 cu_seqlens too
    torch.testing.assert_close(fastattn.attention_varlen(q, k, v, cu.long(), cu.long(), 12, 12), out, atol=0, rtol=0)


def test_dropout_rescales_and_reproduces():
    q, k, v, cq, ck = _packed([16, 9], [16, 9])
    torch.manual_seed(0)
    a = fastattn.attention_varlen(q, k, v, cq, ck, 16, 16, dropout_p=0.5, backend="torch")
    torch.manual_seed(0)
    b = fastattn.attention_varlen(q, k, v, cq, ck, 16, 16, dropout_p=0.5, backend="torch")
    full = fastattn.attention_varlen(q, k, v, cq, ck, 16, 16, backend="torch")
    torch.testing.assert_close(a, b, atol=0, rtol=0)  # torch.manual_seed reproduces a run bitwise
    assert not torch.allclose(a, full)
    # the torch backend's dropout on each sequence equals SDPA's with the same generator state (keep mask
    # drawn in order)
    torch.manual_seed(0)
    exp = [torch.nn.functional.scaled_dot_product_attention(q[x:y].transpose(0, 1), k[x:y].transpose(0, 1),
                                                            v[x:y].transpose(0, 1), dropout_p=0.5).transpose(0, 1)
           for x, y in ((0, 16), (16, 25))]
    torch.testing.assert_close(a, torch.cat(exp))


TRITON_WHY = dispatch.backends("attention_varlen")["triton"].unavailable_reason()
needs_triton = pytest.mark.skipif(TRITON_WHY is not None, reason=f"triton backend unavailable: {TRITON_WHY}")

#: the Triton kernel under the interpreter is slow: small problems that still cover odd lengths, an empty
#: query sequence, a sequence without keys, one over a 32-row tile, lq != lk both ways (causal: rows with
#: no visible key), GQA with E != Ev, a non-default scale
TRITON_CASES = {
    "odd-empty": ([5, 0, 33, 1, 4], [7, 3, 40, 1, 0], {}),
    "gqa-e!=ev": ([6, 11], [9, 4], dict(Hq=6, Hkv=2, E=16, Ev=24, enable_gqa=True)),
    "scale": ([3, 8], [8, 3], dict(E=8, scale=-0.3)),
}


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", list(TRITON_CASES))
def test_triton_forward_matches_float64(case, causal, dtype, monkeypatch):
    monkeypatch.setenv("FASTATTN_BACKEND", "triton")
    lq, lk, opts = TRITON_CASES[case]
    name = f"triton-{case}-{'causal' if causal else 'full'}-{dtype}".replace("torch.", "")
    assert "-> triton" in _explain(lq, lk, opts, causal, dtype)
    _, out, ref, naive = _run_case(lq, lk, opts, causal, dtype, grad=False)
    assert torch.isfinite(out).all() and out.dtype == dtype
    assert_close(out, ref, naive, dtype, name)
    # rows with no visible key (lk = 0, or causal with lq > lk) are exactly 0
    assert (out[(ref == 0).all(-1)] == 0).all()


def _explain(lq, lk, opts, causal, dtype=torch.float32, **kw):
    opts = dict(opts)
    kw.update({n: opts.pop(n) for n in ("enable_gqa", "scale") if n in opts})
    q, k, v, cq, ck = _packed(lq, lk, dtype=dtype, **opts)
    return fastattn.explain_varlen(q, k, v, cq, ck, max(lq), max(lk), is_causal=causal, **kw)


@needs_triton
def test_triton_trains_with_the_fused_backward(monkeypatch):
    """Inputs that need grad: auto-dispatch picks triton (explain_varlen says so), one forward launch, the
    fused backward once; forward and gradients under the numerics rule; what autograd saves holds
    nothing of size Lq x Lk."""
    launches = []
    tb = dispatch.backends("attention_varlen")["triton"]
    real, real_bwd = tb.launch, tb.launch_bwd
    monkeypatch.setattr(tb, "launch", lambda *a, **k: launches.append("fwd") or real(*a, **k))
    monkeypatch.setattr(tb, "launch_bwd", lambda *a, **k: launches.append("bwd") or real_bwd(*a, **k))
    lq, lk = [5, 0, 9, 4], [7, 3, 9, 0]
    q, k, v, cq, ck = _packed(lq, lk, Hq=4, Hkv=2)
    text = fastattn.explain_varlen(q.requires_grad_(), k, v, cq, ck, 9, 9, is_causal=True, enable_gqa=True)
    assert "-> triton" in text and "triton: supported" in text, text
    fastattn.attention_varlen(q, k, v, cq, ck, 9, 9, is_causal=True, enable_gqa=True)  # plan (+ self-check)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        fastattn.attention_varlen(q, k, v, cq, ck, 9, 9, is_causal=True, enable_gqa=True)
    # q, k, v, out, the (Hq, total_q) LSE, the two cu_seqlens: nothing of size Lq x Lk
    assert sorted(saved) == sorted([tuple(q.shape), tuple(k.shape), tuple(v.shape), tuple(q.shape), (4, q.shape[0]),
                                    tuple(cq.shape), tuple(ck.shape)]), saved
    launches.clear()
    ins, out, ref, naive = _run_case(lq, lk, dict(Hq=4, Hkv=2, enable_gqa=True), True)
    assert launches == ["fwd"]
    assert_close(out.detach(), ref.detach(), naive.detach(), torch.float32, "triton-grad")
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    for n, a, r, nv in zip("qkv", torch.autograd.grad(out, ins, dout), torch.autograd.grad(ref, ins, dout.double()),
                           torch.autograd.grad(naive, ins, dout)):
        assert torch.isfinite(a).all()
        assert_close(a, r, nv, torch.float32, f"triton-grad-d{n}")
    assert launches == ["fwd", "bwd"]


@needs_triton
def test_triton_dropout_reproduces_and_fd_matches_the_backward():
    """Dropout on the triton varlen kernels through the public API (auto-dispatch picks triton):
    ``torch.manual_seed`` reproduces outputs and gradients bitwise, another seed changes them; a central
    finite difference of ``<dO, attention_varlen(x + t d)>`` with the seed reset before each call (the
    same keep mask each time) matches ``<grads, d>`` from the fused backward, and gradients drawn under
    another seed do not (the forward and the backward use the same mask)."""
    lq, lk, p = [9, 0, 14, 5], [11, 3, 6, 5], 0.3
    q, k, v, cq, ck = _packed(lq, lk, Hq=2, Hkv=1, E=16, seed=5)
    assert "-> triton" in fastattn.explain_varlen(q.requires_grad_(), k, v, cq, ck, 14, 11, dropout_p=p,
                                                  is_causal=True, enable_gqa=True)
    g = torch.Generator().manual_seed(11)
    dirs = [torch.randn(t.shape, generator=g) for t in (q, k, v)]
    dout = torch.randn((q.shape[0], 2, 16), generator=g)

    def run(seed, t=0.0, grad=False):
        x = [(a.detach() + t * d).requires_grad_(grad) for a, d in zip((q, k, v), dirs)]
        torch.manual_seed(seed)
        out = fastattn.attention_varlen(*x, cq, ck, 14, 11, dropout_p=p, is_causal=True, enable_gqa=True)
        if not grad:
            return out.detach()
        return out.detach(), torch.autograd.grad(out, x, dout)

    out, grads = run(3, grad=True)
    out2, grads2 = run(3, grad=True)
    assert torch.equal(out, out2) and all(torch.equal(a, b) for a, b in zip(grads, grads2))
    out3, grads3 = run(4, grad=True)
    assert not torch.equal(out, out3) and not torch.equal(grads[2], grads3[2])
    h = 1e-2
    fd = float(((run(3, h) - run(3, -h)).double() * dout).sum()) / (2 * h)
    analytic = sum(float((a.double() * d).sum()) for a, d in zip(grads, dirs))
    wrong = sum(float((a.double() * d).sum()) for a, d in zip(grads3, dirs))
    print(f"fd {fd:.6f} analytic {analytic:.6f} (another seed's grads {wrong:.6f})")
    assert abs(fd - analytic) <= 1e-3 * max(1.0, abs(fd)), (fd, analytic)
    assert abs(fd - wrong) > 20 * abs(fd - analytic)


def test_dispatch_reasons_and_choices():
    lq = lk = [3, 4]
    text = _explain(lq, lk, {}, False)
    cuda_line = next(line for line in text.splitlines() if line.strip().startswith("cuda: "))
    assert "has no packed-sequence (varlen) mode" in cuda_line or "unavailable" in cuda_line
    if TRITON_WHY is None:  # CPU tensors under the interpreter (or CUDA ones): the kernel runs them
        assert "-> triton" in text and "triton: supported" in text
        # dropout and gradients run on triton too; float64 goes to torch with its reason
        assert "-> triton" in _explain(lq, lk, {}, False, dropout_p=0.1)
        assert "dtype float64" in _explain(lq, lk, {}, False, torch.float64)
        q, k, v, cq, ck = _packed(lq, lk)
        text = fastattn.explain_varlen(q.requires_grad_(), k, v, cq, ck, 4, 4, dropout_p=0.1)
        assert "-> triton" in text and "triton: supported" in text
        q, k, v, cq, ck = _packed(lq, lk, E=4)
        with pytest.raises(BackendError, match=r"head dim E=4 is not supported by the triton kernel \(supported: 8..256"):
            fastattn.attention_varlen(q, k, v, cq, ck, 4, 4, backend="triton")
    else:
        assert "-> torch" in text and f"triton: unavailable: {TRITON_WHY}" in text
    q, k, v, cq, ck = _packed(lq, lk)
    torch.testing.assert_close(fastattn.attention_varlen(q, k, v, cq, ck, 4, 4, backend="torch"),
                               fastattn.attention_varlen(q, k, v, cq, ck, 4, 4))
    caps = dispatch.backends("attention_varlen")["triton"].capabilities()
    assert caps["varlen"] == "supported" and caps["head_dims"] == "8..256" and caps["dropout"] and caps["backward"]
    assert caps["dtypes"] == ["float16", "bfloat16", "float32"] and caps["gqa"] and caps["different_value_dim"]


def _bad_cases():
    q, k, v, cq, ck = _packed([3, 4], [3, 4])
    ok = dict(query=q, key=k, value=v, cu_seqlens_q=cq, cu_seqlens_k=ck, max_seqlen_q=4, max_seqlen_k=4)
    m = torch.device("meta")
    return [
        ("cu-float", dict(cu_seqlens_q=cq.float()), InputTypeError, "cu_seqlens_q"),
        ("cu-list", dict(cu_seqlens_k=[0, 3, 7]), InputTypeError, "cu_seqlens_k"),
        ("cu-2d", dict(cu_seqlens_q=cq.view(1, 3)), InputError, "cu_seqlens_q"),
        ("cu-device", dict(cu_seqlens_k=ck.to(m)), InputError, "cu_seqlens_k"),
        ("cu-lengths-differ", dict(cu_seqlens_k=_cu([3, 4, 0])), InputError, "cu_seqlens_q has 3 entries"),
        ("query-4d", dict(query=q.unsqueeze(0)), InputError, "query must be 3-D"),
        ("key-2d", dict(key=k[:, 0]), InputError, "key must be 3-D"),
        ("head-dim", dict(key=torch.randn(7, 4, 8), value=torch.randn(7, 4, 8)), InputError, "head dim"),
        ("gqa-not-enabled", dict(key=k[:, :2], value=v[:, :2]), InputError, "enable_gqa"),
        ("gqa-indivisible", dict(key=k[:, :3], value=v[:, :3], enable_gqa=True), InputError, "Hq % Hkv"),
        ("max-not-int", dict(max_seqlen_q=4.0), InputTypeError, "max_seqlen_q"),
        ("max-tensor", dict(max_seqlen_k=torch.tensor(4)), InputTypeError, "max_seqlen_k"),
        ("max-too-small", dict(max_seqlen_k=3), InputError, "max_seqlen_k"),
        ("first-not-zero", dict(cu_seqlens_q=torch.tensor([1, 3, 7], dtype=torch.int32)), InputError, r"cu_seqlens_q\[0\]"),
        ("last-not-total", dict(cu_seqlens_k=torch.tensor([0, 3, 6], dtype=torch.int32)), InputError, r"cu_seqlens_k\[-1\]"),
        ("decreasing", dict(cu_seqlens_q=torch.tensor([0, 5, 3, 7], dtype=torch.int32),
                            cu_seqlens_k=_cu([3, 4, 0])), InputError, "non-decreasing"),
        ("dtype-mismatch", dict(value=v.half()), InputTypeError, "same dtype"),
        ("dropout", dict(dropout_p=1.0), InputError, "dropout_p"),
        ("causal-not-bool", dict(is_causal=1), InputTypeError, "is_causal"),
    ], ok


@pytest.mark.parametrize("i", range(len(_bad_cases()[0])), ids=[c[0] for c in _bad_cases()[0]])
def test_bad_input_names_the_argument(i):
    cases, ok = _bad_cases()
    _, over, cls, words = cases[i]
    args = dict(ok, **over)
    with pytest.raises(cls, match=words) as e:
        fastattn.attention_varlen(args.pop("query"), args.pop("key"), args.pop("value"), args.pop("cu_seqlens_q"),
                                  args.pop("cu_seqlens_k"), args.pop("max_seqlen_q"), args.pop("max_seqlen_k"), **args)
    assert isinstance(e.value, RuntimeError)  # SDPA-style handlers catch it too


def test_debug_env_checks_values(monkeypatch):
    # on CPU the values are always checked; FASTATTN_DEBUG=1 keeps them checked (on GPU it turns them on)
    monkeypatch.setenv("FASTATTN_DEBUG", "1")
    q, k, v, cq, ck = _packed([3, 4], [3, 4])
    with pytest.raises(InputError, match="non-decreasing"):
        fastattn.attention_varlen(q, k, v, torch.tensor([0, 8, 7], dtype=torch.int32), ck, 8, 4)


@needs_triton
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_torch_compile_runs_the_triton_call_eagerly(monkeypatch):
    """No custom op for the varlen kernel yet: under torch.compile the triton call is a graph break that
    runs eagerly (dynamo cannot trace the launcher), with the eager result."""
    monkeypatch.setenv("FASTATTN_BACKEND", "triton")
    q, k, v, cq, ck = _packed([5, 0, 9], [5, 0, 9])
    f = torch.compile(lambda q, k, v: fastattn.attention_varlen(q, k, v, cq, ck, 9, 9, is_causal=True) * 2)
    torch.testing.assert_close(f(q, k, v), 2 * fastattn.attention_varlen(q, k, v, cq, ck, 9, 9, is_causal=True),
                               atol=0, rtol=0)
    # training under torch.compile: the eager call's fused backward, the eager gradients
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    got = torch.autograd.grad(f(*leaves).sum(), leaves)
    want = torch.autograd.grad(2 * fastattn.attention_varlen(*leaves, cq, ck, 9, 9, is_causal=True).sum(), leaves)
    assert all(torch.equal(a, b) for a, b in zip(got, want))

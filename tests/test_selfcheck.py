"""The on-device self-check (issue #14): each kernel variant is checked against the float64 reference the
first time it is about to run in a process; a failing variant is taken out of dispatch with its reason;
passes are remembered in a cache file keyed by the environment. On CPU the Triton attention kernels run
under the interpreter, so the check here runs real kernels; a failing kernel is simulated with the
test-only fault injection (``FASTATTN_FAULT_INJECT``), which perturbs the real kernel's output in its
launch path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch.nn.attention.bias import causal_lower_right

import fastattn
from fastattn import dispatch, reference, selfcheck
from fastattn.errors import BackendError
from fastattn.testing import compare

TRITON_REASON = dispatch.backends("attention")["triton"].unavailable_reason()
needs_triton = pytest.mark.skipif(TRITON_REASON is not None, reason=f"triton unusable here: {TRITON_REASON}")
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    """A private cache directory, the default mode, no fault injection, nothing remembered."""
    monkeypatch.setenv("FASTATTN_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("FASTATTN_SELF_CHECK", "FASTATTN_FAULT_INJECT", "FASTATTN_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    dispatch.reset()
    yield
    monkeypatch.delenv("FASTATTN_FAULT_INJECT", raising=False)
    dispatch.reset()
    selfcheck._sync_fault_injection()  # disarm
    dispatch.reset()


@pytest.fixture
def checks(monkeypatch):
    """The variant keys the self-check ran, in order."""
    ran = []
    real = selfcheck.run_check

    def counting(op, b, problem, direction="fwd"):
        ran.append(selfcheck._CHECKERS[op][0](b, problem, direction))
        return real(op, b, problem, direction)

    monkeypatch.setattr(selfcheck, "run_check", counting)
    return ran


def _qkv(B=1, Hq=2, Hkv=2, Lq=20, Lk=24, E=32, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g).to(DEV, dtype)  # noqa: E731
    return mk(B, Hq, Lq, E), mk(B, Hkv, Lk, E), mk(B, Hkv, Lk, E)


def _cache():
    with open(selfcheck.cache_path()) as f:
        return json.load(f)


def _passed_in_file():
    return {k for e in _cache()["environments"].values() for k in e["passed"]}


# --------------------------------------------------------------------------------- first use, pass
VARIANTS = {
    "fp32-none": (dict(dtype=torch.float32), {},
                  "attention:triton:fwd:float32:d32:g1:none:prefill"),
    "fp16-causal_br+lengths": (dict(dtype=torch.float16, Lq=20, Lk=30),
                               {"attn_mask": fastattn.KeyPadding(lengths=torch.tensor([30]), causal="bottom_right")},
                               "attention:triton:fwd:float16:d32:g1:causal_bottom_right+key_lengths_int64:prefill"),
    "bf16-dense_bool-gqa": (dict(dtype=torch.bfloat16, Hq=4, Hkv=2),
                            {"attn_mask": torch.rand(20, 24, generator=torch.Generator().manual_seed(1)) > 0.3,
                             "enable_gqa": True},
                            "attention:triton:fwd:bfloat16:d32:g2:dense_bool:prefill"),
    "fp16-decode-keymask-gqa": (dict(dtype=torch.float16, Hq=4, Hkv=1, Lq=1, Lk=40),
                                {"attn_mask": fastattn.KeyPadding(mask=torch.arange(40).view(1, 40) >= 3),
                                 "enable_gqa": True},
                                "attention:triton:fwd:float16:d32:g4:key_mask:decode:q1"),
}


@needs_triton
@pytest.mark.parametrize("case", list(VARIANTS))
def test_first_use_checks_the_variant_once_and_remembers_it(case, checks):
    shape, kw, key = VARIANTS[case]
    q, k, v = _qkv(**shape)
    kw = {n: (t.to(DEV) if isinstance(t, torch.Tensor) else t) for n, t in kw.items()}
    out = fastattn.attention(q, k, v, backend="triton", **kw)
    assert checks == [key]
    assert selfcheck.status()[f"{selfcheck._dev(DEV)}|{key}"] == {"state": "passed", "source": "checked"}
    assert key in _passed_in_file()
    entry = next(iter(_cache()["environments"].values()))["passed"][key]
    assert 0 <= entry["max_err"] <= entry["bound"]
    # later calls of the variant (other shapes too: a new plan, the same variant) run no check
    fastattn.attention(q, k, v, backend="triton", **kw)
    q2, k2, v2 = _qkv(**{**shape, "B": 2, "seed": 1})
    if "attn_mask" not in kw or not isinstance(kw["attn_mask"], fastattn.KeyPadding):
        fastattn.attention(q2, k2, v2, backend="triton", **kw)
    assert checks == [key]
    # and the result is what the kernel computes, under the numerics rule
    ref = reference.attention(q, k, v, **kw)
    naive = reference.attention(q, k, v, compute_dtype=None, **kw)
    assert compare(out, ref, naive, q.dtype).ok


@needs_triton
def test_auto_dispatch_checks_the_chosen_kernel_and_a_new_variant_is_checked_again(checks):
    q, k, v = _qkv()
    fastattn.attention(q, k, v)  # auto: triton runs CPU tensors under the interpreter
    fastattn.attention(q, k, v, is_causal=True)
    fastattn.attention(q, k, v)
    assert checks == ["attention:triton:fwd:float32:d32:g1:none:prefill",
                      "attention:triton:fwd:float32:d32:g1:causal_top_left:prefill"]


@needs_triton
def test_the_check_changes_no_result_and_no_rng_state(monkeypatch, checks):
    q, k, v = _qkv(dtype=torch.float16)
    monkeypatch.setenv("FASTATTN_SELF_CHECK", "0")
    unchecked = fastattn.attention(q, k, v, is_causal=True, backend="triton")
    assert checks == []
    monkeypatch.setenv("FASTATTN_SELF_CHECK", "1")
    dispatch.reset()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    checked = fastattn.attention(q, k, v, is_causal=True, backend="triton")
    assert len(checks) == 1
    assert torch.equal(torch.get_rng_state(), state)  # a user's seeded run is not shifted by the check
    assert torch.equal(checked, unchecked)


def test_the_torch_backend_is_never_checked(checks):
    q, k, v = _qkv()
    fastattn.attention(q, k, v, backend="torch")
    fastattn.attention(q.double(), k.double(), v.double())
    assert checks == []
    assert selfcheck.variant_keys("attention", dispatch.backends("attention")["torch"], object()) == []


# --------------------------------------------------------------------------- failure: fault injection
def _inject(monkeypatch, value="triton:attention"):
    monkeypatch.setenv("FASTATTN_FAULT_INJECT", value)


@needs_triton
def test_fault_injection_perturbs_the_real_kernel_result(monkeypatch):
    """With the check off, the injected fault reaches the caller: it is the kernel's own output made wrong
    (all but the perturbed first query row are bitwise the kernel's)."""
    q, k, v = _qkv()
    good = fastattn.attention(q, k, v, backend="triton")
    monkeypatch.setenv("FASTATTN_SELF_CHECK", "0")
    _inject(monkeypatch)
    dispatch.reset()
    with pytest.warns(selfcheck.FaultInjectionWarning, match="FAULT INJECTION armed"):
        bad = fastattn.attention(q, k, v, backend="triton")
    assert torch.equal(bad[..., 1:, :], good[..., 1:, :])
    assert torch.equal(bad[..., :1, :], good[..., :1, :] + 1)
    ref, naive = reference.attention(q, k, v), reference.attention(q, k, v, compute_dtype=None)
    assert not compare(bad, ref, naive, q.dtype).ok


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_failing_variant_is_caught_and_auto_dispatch_falls_back(monkeypatch, checks, dtype):
    q, k, v = _qkv(dtype=dtype)
    key = f"attention:triton:fwd:{str(dtype)[6:]}:d32:g1:causal_top_left:prefill"
    _inject(monkeypatch)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fastattn.attention(q, k, v, is_causal=True)
        again = fastattn.attention(q, k, v, is_causal=True)
    failed = [x for x in w if issubclass(x.category, selfcheck.SelfCheckWarning)]
    assert len(failed) == 1, [str(x.message) for x in w]  # one warning, saying what and how to report
    msg = str(failed[0].message)
    assert key in msg and "failed its on-device self-check (max error" in msg and "fastattn info" in msg
    assert checks == [key]  # checked once; the failure is remembered
    torch_out = fastattn.attention(q, k, v, is_causal=True, backend="torch")
    assert torch.equal(out, torch_out) and torch.equal(again, torch_out)  # the next backend's result, exactly
    # the variant is unavailable with its reason: in explain, and a forced backend raises with it
    assert "triton: failed its on-device self-check (max error" in fastattn.explain(q, k, v, is_causal=True)
    with pytest.raises(BackendError, match="failed its on-device self-check"):
        fastattn.attention(q, k, v, is_causal=True, backend="triton")
    st = selfcheck.status()[f"{selfcheck._dev(DEV)}|{key}"]
    assert st["state"] == "failed" and "max error" in st["reason"]
    assert not os.path.exists(selfcheck.cache_path()) or key not in _passed_in_file()  # failures are not cached
    # other variants of the same backend are unaffected by the verdict (each is checked on its own)
    assert dispatch.variant_veto("attention", "triton", fastattn.inputs.normalize_attention(
        q, k, v, None, 0.0, False, None, False)) is None


@needs_triton
@pytest.mark.filterwarnings("ignore::fastattn.selfcheck.FaultInjectionWarning")
def test_a_forced_backend_whose_variant_fails_raises_on_first_use(monkeypatch):
    q, k, v = _qkv()
    _inject(monkeypatch)
    with pytest.warns(selfcheck.SelfCheckWarning):
        with pytest.raises(BackendError, match=r"(?s)backend='triton' cannot run attention.*failed its on-device "
                                               r"self-check \(max error"):
            fastattn.attention(q, k, v, backend="triton")


@needs_triton
def test_fault_injection_is_ignored_outside_a_pytest_test(monkeypatch, checks):
    q, k, v = _qkv()
    _inject(monkeypatch)
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    with pytest.warns(selfcheck.FaultInjectionWarning, match="ignored"):
        out = fastattn.attention(q, k, v, backend="triton")
    assert selfcheck._ARMED == {}
    assert compare(out, reference.attention(q, k, v), reference.attention(q, k, v, compute_dtype=None), q.dtype).ok


@pytest.mark.parametrize("value", ["torch:attention", "triton:nope", "cuda", "triton:attention,x:y"])
def test_fault_injection_rejects_what_it_cannot_do(monkeypatch, value):
    _inject(monkeypatch, value)
    with pytest.raises(ValueError, match="FASTATTN_FAULT_INJECT"):
        selfcheck._sync_fault_injection()


# ------------------------------------------------------------------------------------- backward
class _BwdTriton(type(dispatch.backends("attention")["triton"])):
    """The Triton backend with its fused backward's dq optionally made wrong (``dq_scale``): a real
    kernel result, perturbed, for the bwd variant's check."""

    dq_scale = 1.0

    def launch_bwd(self, inp, out, lse, dout, rng=(0, 0)):
        dq, dk, dv = super().launch_bwd(inp, out, lse, dout, rng)
        return dq * self.dq_scale, dk, dv


@pytest.fixture
def bwd_triton():
    original = dispatch.backends("attention")["triton"]
    b = dispatch.register(_BwdTriton())
    dispatch.reset()
    yield b
    dispatch.register(original)
    dispatch.reset()


@needs_triton
@pytest.mark.parametrize("broken", [False, True])
def test_the_fused_backward_is_checked_as_its_own_variant(bwd_triton, checks, broken):
    bwd_triton.dq_scale = 1.05 if broken else 1.0
    q, k, v = (t.requires_grad_(True) for t in _qkv())
    fwd, bwd = ("attention:triton:fwd:float32:d32:g1:causal_top_left:prefill",
                "attention:triton:bwd:float32:d32:g1:causal_top_left:prefill")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fastattn.attention(q, k, v, is_causal=True)
    assert checks == [fwd, bwd]
    assert [issubclass(x.category, selfcheck.SelfCheckWarning) for x in w] == ([True] if broken else [])
    from fastattn.attention.plan import plan_for
    from fastattn.inputs import normalize_attention
    chosen = plan_for(normalize_attention(q, k, v, None, 0.0, True, None, False)).backend.name
    assert chosen == ("torch" if broken else "triton")
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out, (q, k, v), g)
    leaves64 = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    grads64 = torch.autograd.grad(reference.attention(*leaves64, is_causal=True), leaves64, g.double())
    for a, b in zip(grads, grads64):  # the served backward is right: triton's, or torch's after a failure
        assert (a.double() - b).abs().max() < 1e-5
    # without gradients only the forward variant runs: it passed, so triton still serves it
    with torch.no_grad():
        assert plan_for(normalize_attention(q, k, v, None, 0.0, True, None, False)).backend.name == "triton"
    assert checks == [fwd, bwd]


@needs_triton
def test_a_dropout_variant_is_checked_with_the_kernels_own_keep_mask(checks):
    q, k, v = _qkv(dtype=torch.float16)
    torch.manual_seed(0)
    out = fastattn.attention(q, k, v, dropout_p=0.3, backend="triton")
    assert checks == ["attention:triton:fwd:float16:d32:g1:none:prefill:dropout"]
    assert selfcheck.status()[f"{selfcheck._dev(DEV)}|{checks[0]}"]["state"] == "passed"
    torch.manual_seed(0)
    assert torch.equal(out, fastattn.attention(q, k, v, dropout_p=0.3, backend="triton"))  # RNG stream untouched


# ------------------------------------------------------------------------------------------- cache file
@needs_triton
def test_a_later_process_reads_the_cache_file_and_skips_the_check(checks, tmp_path):
    q, k, v = _qkv()
    fastattn.attention(q, k, v, backend="triton")
    assert len(checks) == 1
    code = ("import os, torch, fastattn\n"
            "from fastattn import selfcheck\n"
            "ran = []\n"
            "real = selfcheck.run_check\n"
            "selfcheck.run_check = lambda *a, **k: ran.append(1) or real(*a, **k)\n"
            f"q = torch.randn(1, 2, 20, 32)\n"
            "fastattn.attention(q, q[:, :, :17], q[:, :, :17], backend='triton')\n"
            "fastattn.attention(q, q, q, backend='triton', is_causal=True)\n"
            "print('checks run:', len(ran), sorted(selfcheck.status().values(), key=str))\n")
    env = dict(os.environ, FASTATTN_CACHE_DIR=os.path.dirname(selfcheck.cache_path()))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    # the first variant comes from the file; the causal one is new and is checked (and recorded)
    assert "checks run: 1" in r.stdout and "'source': 'cache file'" in r.stdout, r.stdout
    assert "attention:triton:fwd:float32:d32:g1:causal_top_left:prefill" in _passed_in_file()


@needs_triton
@pytest.mark.parametrize("what", ["fastattn", "triton", "torch"])
def test_a_version_change_invalidates_the_cached_passes(monkeypatch, checks, what):
    q, k, v = _qkv()
    fastattn.attention(q, k, v, backend="triton")
    dispatch.reset()  # a new process, as far as the self-check knows
    fastattn.attention(q, k, v, backend="triton")
    assert len(checks) == 1  # read from the file
    mod = {"fastattn": fastattn, "torch": torch}.get(what) or __import__(what)
    monkeypatch.setattr(mod, "__version__", "99.0")
    dispatch.reset()
    fastattn.attention(q, k, v, backend="triton")
    assert len(checks) == 2  # checked again under the new version
    envs = _cache()["environments"]
    assert len(envs) == 1 and next(iter(envs.values()))["env"][what] == "99.0"  # the stale entry is dropped


@needs_triton
def test_always_ignores_the_cache_and_off_checks_nothing(monkeypatch, checks):
    q, k, v = _qkv()
    fastattn.attention(q, k, v, backend="triton")
    monkeypatch.setenv("FASTATTN_SELF_CHECK", "always")
    dispatch.reset()
    fastattn.attention(q, k, v, backend="triton")
    fastattn.attention(q, k, v, backend="triton")
    assert len(checks) == 2  # once per process, whatever the file says
    monkeypatch.setenv("FASTATTN_SELF_CHECK", "0")
    dispatch.reset()
    os.remove(selfcheck.cache_path())
    fastattn.attention(q, k, v, backend="triton", is_causal=True)
    assert len(checks) == 2 and not os.path.exists(selfcheck.cache_path())


@needs_triton
def test_a_corrupt_or_unwritable_cache_file_costs_only_a_check(monkeypatch, checks, tmp_path):
    path = selfcheck.cache_path()
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("{not json")
    q, k, v = _qkv()
    fastattn.attention(q, k, v, backend="triton")
    assert len(checks) == 1 and len(_passed_in_file()) == 1  # ignored, then rewritten
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("FASTATTN_CACHE_DIR", str(blocker / "sub"))
    dispatch.reset()
    fastattn.attention(q, k, v, backend="triton")  # cannot write: no error, the pass is kept in the process
    fastattn.attention(q, k, v, backend="triton")
    assert len(checks) == 2


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTATTN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert selfcheck.cache_path() == str(tmp_path / "xdg" / "fastattn" / "selfcheck.json")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert selfcheck.cache_path() == str(tmp_path / "home" / ".cache" / "fastattn" / "selfcheck.json")


def test_mode_values(monkeypatch):
    for raw, want in (("0", "off"), ("1", "on"), ("always", "always"), ("ALWAYS", "always"), ("off", "off")):
        monkeypatch.setenv("FASTATTN_SELF_CHECK", raw)
        assert selfcheck.mode() == want
    monkeypatch.setenv("FASTATTN_SELF_CHECK", "sometimes")
    with pytest.warns(selfcheck.SelfCheckWarning, match="not one of 0, 1, always"):
        assert selfcheck.mode() == "on"


# ----------------------------------------------------------------------------------- deferred contexts
@needs_triton
def test_torch_compile_traces_without_checking_and_the_next_eager_call_checks(checks):
    q, k, v = _qkv()
    torch._dynamo.reset()
    fn = torch.compile(lambda q, k, v: fastattn.attention(q, k, v, backend="triton"), fullgraph=True,
                       backend="aot_eager")
    compiled = fn(q, k, v)
    assert checks == []  # traced (and run) without the check: the variant is still unchecked
    assert selfcheck.status() == {}
    eager = fastattn.attention(q, k, v, backend="triton")
    assert checks == ["attention:triton:fwd:float32:d32:g1:none:prefill"]
    assert torch.equal(compiled, eager)


@needs_triton
@pytest.mark.filterwarnings("ignore::fastattn.selfcheck.FaultInjectionWarning")
def test_torch_compile_honours_a_failed_variant(monkeypatch):
    q, k, v = _qkv()
    _inject(monkeypatch)
    with pytest.warns(selfcheck.SelfCheckWarning):
        fastattn.attention(q, k, v)
    torch._dynamo.reset()
    fn = torch.compile(lambda q, k, v: fastattn.attention(q, k, v), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(fn(q, k, v), fastattn.attention(q, k, v, backend="torch"), rtol=0, atol=0)


@needs_triton
def test_no_check_under_a_dispatch_mode_and_the_plan_is_not_cached(checks):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    q, k, v = _qkv()
    with Passthrough():
        fastattn.attention(q, k, v, backend="triton")
        fastattn.attention(q, k, v, backend="triton")
    assert checks == []
    fastattn.attention(q, k, v, backend="triton")
    assert len(checks) == 1


# ---------------------------------------------------------------------------- attention_varlen
def _packed(lens=(5, 0, 9), Hq=2, Hkv=2, E=32, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    tot = sum(lens)
    cu = torch.tensor([0] + [sum(lens[:i + 1]) for i in range(len(lens))], dtype=torch.int32, device=DEV)
    mk = lambda *s: torch.randn(*s, generator=g).to(DEV, dtype)  # noqa: E731
    return mk(tot, Hq, E), mk(tot, Hkv, E), mk(tot, Hkv, E), cu, max(lens)


@needs_triton
def test_varlen_variant_is_checked_once_on_first_use(checks):
    q, k, v, cu, m = _packed(Hq=4, Hkv=2)
    out = fastattn.attention_varlen(q, k, v, cu, cu, m, m, is_causal=True, enable_gqa=True)  # auto: triton
    key = "attention_varlen:triton:fwd:float32:d32:g2:causal_bottom_right"
    assert checks == [key] and key in _passed_in_file()
    assert selfcheck.status()[f"{selfcheck._dev(DEV)}|{key}"] == {"state": "passed", "source": "checked"}
    q2, k2, v2, cu2, m2 = _packed((3, 8), Hq=4, Hkv=2)  # another shape, the same variant
    fastattn.attention_varlen(q2, k2, v2, cu2, cu2, m2, m2, is_causal=True, enable_gqa=True)
    fastattn.attention_varlen(q, k, v, cu, cu, m, m, is_causal=False, enable_gqa=True)
    assert checks == [key, "attention_varlen:triton:fwd:float32:d32:g2:none"]
    ref = reference.attention_varlen(q, k, v, cu, cu, is_causal=True)
    naive = reference.attention_varlen(q, k, v, cu, cu, is_causal=True, compute_dtype=None)
    assert compare(out, ref, naive, q.dtype).ok


@needs_triton
def test_a_failing_varlen_variant_falls_back_to_torch_and_a_forced_one_raises(monkeypatch, checks):
    q, k, v, cu, m = _packed()
    _inject(monkeypatch, "triton:attention_varlen")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fastattn.attention_varlen(q, k, v, cu, cu, m, m)
    failed = [x for x in w if issubclass(x.category, selfcheck.SelfCheckWarning)]
    assert len(failed) == 1 and "attention_varlen:triton:fwd:float32:d32:g1:none" in str(failed[0].message)
    assert torch.equal(out, fastattn.attention_varlen(q, k, v, cu, cu, m, m, backend="torch"))
    assert "triton: failed its on-device self-check (max error" in fastattn.explain_varlen(q, k, v, cu, cu, m, m)
    with pytest.raises(BackendError, match="failed its on-device self-check"):
        fastattn.attention_varlen(q, k, v, cu, cu, m, m, backend="triton")
    # the padded attention's variants are not touched by the varlen verdict
    assert dispatch.variant_veto("attention", "triton", fastattn.inputs.normalize_attention(
        *_qkv(), None, 0.0, False, None, False)) is None


# --------------------------------------------------------------------------------------- fastattn check
def test_sweep_enumerates_variants_and_records_passes(monkeypatch):
    """The grid of ``fastattn check`` (run_check stubbed: the real checks are the tests above)."""
    ran = []
    monkeypatch.setattr(selfcheck, "run_check", lambda op, b, p, d="fwd": ran.append(
        selfcheck._attention_key(b, p, d)) or selfcheck.Result(True, 0.0, 1.0, 0.0, "stub"))
    lines = []
    failures = selfcheck.sweep(DEV, head_dims=(64,), dtypes=(torch.float16,), out=lines.append)
    assert failures == 0
    if TRITON_REASON is None:
        # 11 prefill + 8 decode mask forms per GQA group (CPU: group 1, forward only; GPU: groups 1, 2,
        # forward and backward, without and with dropout: 11 more prefill forms)
        assert len(ran) == len(set(ran)) == (19 if DEV.type == "cpu" else 2 * 2 * (19 + 11))
        assert "attention:triton:fwd:float16:d64:g1:causal_bottom_right+key_lengths_int32:decode:q1" in ran
        assert "attention:triton:fwd:float16:d64:g1:dense_float32:prefill" in ran
        assert set(ran) <= _passed_in_file()
        assert any("triton" in ln and f"{len(ran)} variants, 0 failed" in ln for ln in lines)
        if DEV.type == "cpu":
            ran.clear()
            selfcheck.sweep(DEV, head_dims=(64,), dtypes=(torch.float16,), backward=True, dropout=True,
                            out=lines.append)
            assert len(ran) == len(set(ran)) == 2 * (19 + 11)
            assert "attention:triton:bwd:float16:d64:g1:key_mask:prefill:dropout" in ran

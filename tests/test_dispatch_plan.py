"""The house the features live in: error classes, the dispatch registry and its capability data, the
plan cache, device-side sequence info built once per mask, decode routing, and no import cycles."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import fastattn
from fastattn import dispatch, reference
from fastattn.attention import api, plan as plan_mod
from fastattn.attention.backends.base import AttnBackend
from fastattn.inputs import normalize_attention


def _qkv(B=1, H=2, Lq=5, Lk=7, E=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, Lq, E, generator=g, dtype=dtype), torch.randn(B, H, Lk, E, generator=g, dtype=dtype),
            torch.randn(B, H, Lk, E, generator=g, dtype=dtype))


# ------------------------------------------------------------------------------------- error classes
@pytest.mark.parametrize("case", ["1d_query", "dtype_mismatch", "mask_and_causal", "bad_backend"])
def test_errors_are_caught_by_sdpa_style_and_fastattn_style_handlers(case):
    q, k, v = _qkv()
    args = {"1d_query": ((torch.randn(8), k, v), {}),
            "dtype_mismatch": ((q, k.double(), v), {}),
            "mask_and_causal": ((q, k, v), {"attn_mask": torch.ones(5, 7, dtype=torch.bool), "is_causal": True}),
            "bad_backend": ((q, k, v), {"backend": "nope"})}[case]
    with pytest.raises(RuntimeError):
        fastattn.attention(*args[0], **args[1])
    expected = TypeError if case == "dtype_mismatch" else ValueError
    with pytest.raises(expected):
        fastattn.attention(*args[0], **args[1])


def test_causal_bias_with_is_causal_uses_pytorch_wording():
    from torch.nn.attention.bias import causal_lower_right
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="CausalBias should not be used with causal=True"):
        fastattn.attention(q, k, v, attn_mask=causal_lower_right(5, 7), is_causal=True)


# ------------------------------------------------------------------------------ registry and capabilities
def test_registry_lists_ops_and_capabilities_are_data():
    assert {"attention", "gelu_ffn"} <= set(dispatch.ops())
    table = dispatch.backends("attention")
    assert list(table) == ["cuda", "triton", "torch"]
    caps = table["cuda"].capabilities()
    assert caps["dtypes"] == ["float16", "bfloat16"] and "dense_bool" not in caps["mask_parts"]
    assert table["torch"].capabilities()["backward"] and table["torch"].capabilities()["dropout"]


def test_dispatch_imports_no_backend():
    """dispatch knows the registry, never a backend: its imports (top-level and lazy) are read from source."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(dispatch))
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in mods if m and ("backend" in m or "kernels" in m or "attention" in m or "ffn" in m)], mods


def _import_graph():
    """Edges module -> module from every import in python/fastattn (top-level and inside functions);
    ``from . import x`` counts as an edge to the submodule ``x`` when it is one."""
    import ast
    import pathlib
    root = pathlib.Path(fastattn.__file__).parent
    mods = {}
    for f in root.rglob("*.py"):
        rel = f.relative_to(root).with_suffix("")
        parts = ["fastattn", *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    graph = {}
    for name, f in mods.items():
        pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    anchor = pkg.split(".")
                    anchor = anchor[:len(anchor) - (n.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for a in n.names:
                    sub = f"{base}.{a.name}"
                    edges.add(sub if sub in mods else base)
            elif isinstance(n, ast.Import):
                edges.update(a.name for a in n.names)
        graph[name] = {e for e in edges if e in mods and e != name}
    return graph


def test_no_import_cycles():
    """No cycle in the import graph, lazy imports included (a function-level import hides a cycle, it
    does not remove it). Package __init__ files that register their submodules are the only parents
    allowed to import their children; a child never imports its parent package's __init__."""
    graph = _import_graph()
    for name in graph:  # a module importing its own (ancestor) package __init__ is an edge we ignore:
        graph[name] = {e for e in graph[name] if not name.startswith(e + ".")}
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_custom_ops_exist_after_plain_import():
    r = subprocess.run([sys.executable, "-c", "import torch, fastattn; torch.ops.fastattn.attn_fwd; "
                        "torch.ops.fastattn.attn_bwd; torch.ops.fastattn.linear_act; torch.ops.fastattn.residual_layernorm; "
                        "from fastattn import dispatch; assert {'attention', 'gelu_ffn', 'linear_act', "
                        "'residual_layernorm'} <= set(dispatch.ops())"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------------------------------------------ plan cache
def test_plan_is_built_once_per_signature(monkeypatch):
    calls = []
    orig = dispatch.select
    monkeypatch.setattr(dispatch, "select", lambda *a, **kw: calls.append(1) or orig(*a, **kw))
    q, k, v = _qkv()
    m = torch.rand(1, 1, 5, 7) > 0.3
    for _ in range(3):
        fastattn.attention(q, k, v, attn_mask=m)
    assert len(calls) == 1
    fastattn.attention(q, k, v[..., :4], attn_mask=m)  # another signature (Ev)
    assert len(calls) == 2


@pytest.fixture
def cpu_user(monkeypatch):
    """A CPU user's process: no Triton interpreter, so only the torch backend runs CPU tensors (the
    direct SDPA path is off under the interpreter, where triton may take CPU tensors)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    dispatch.reset()
    yield
    monkeypatch.undo()
    dispatch.reset()


def test_plan_run_and_direct_path_match_the_general_path(cpu_user):
    q, k, v = _qkv(Lq=6, Lk=6)
    masks = [None, torch.rand(1, 1, 6, 6) > 0.5, torch.randn(1, 2, 6, 6), fastattn.KeyPadding(lengths=torch.tensor([3]))]
    for m in masks:
        for is_causal in (False, True):
            if is_causal and m is not None:
                continue
            first = fastattn.attention(q, k, v, attn_mask=m, is_causal=is_causal)
            again = fastattn.attention(q, k, v, attn_mask=m, is_causal=is_causal)  # may take the direct path
            inp = normalize_attention(q, k, v, m, 0.0, is_causal)
            via_plan = plan_mod.plan_for(inp).run(inp).reshape(inp.out_shape)
            ref = reference.attention(q, k, v, m, is_causal=is_causal)
            for got in (first, again, via_plan):
                torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)
    assert api._DIRECT, "CPU calls served by SDPA as is must be cached for the direct path"


def test_direct_path_still_validates_argument_values(cpu_user):
    q, k, v = _qkv()
    fastattn.attention(q, k, v, dropout_p=0.0, scale=0.5)
    fastattn.attention(q, k, v, dropout_p=0.0, scale=0.5)
    with pytest.raises(ValueError, match="dropout_p"):
        fastattn.attention(q, k, v, dropout_p=1.5, scale=0.5)
    with pytest.raises(ValueError, match="scale"):
        fastattn.attention(q, k, v, dropout_p=0.0, scale=float("inf"))


def test_fully_masked_rows_are_zero_on_the_direct_path(cpu_user):
    q, k, v = _qkv(Lq=4, Lk=4)
    m = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    m[..., 2, :] = False
    for _ in range(2):
        out = fastattn.attention(q, k, v, attn_mask=m)
        assert (out[..., 2, :] == 0).all() and out.isfinite().all()
    assert api._DIRECT


def test_keypadding_direct_path_follows_the_lengths_tensor(cpu_user, monkeypatch):
    """A repeated KeyPadding call is one SDPA call on the mask built for that KeyPadding object; an
    in-place change of its lengths, a new lengths tensor, another KeyPadding with an empty row, or another
    Lq/Lk never reuse a stale mask."""
    B, H, L, D = 3, 2, 5, 8
    q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
    lengths = torch.tensor([5, 3, 1])
    kp = fastattn.KeyPadding(lengths=lengths)

    def check(mask, q=q, k=k, v=v):
        out = fastattn.attention(q, k, v, attn_mask=mask)
        ref = reference.attention(q, k, v, mask)
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
        return out

    check(kp)
    built = []
    orig = plan_mod.plan_for
    monkeypatch.setattr(api, "plan_for", lambda *a, **kw: built.append(1) or orig(*a, **kw))
    check(kp)
    assert built == [], "the repeated KeyPadding call must take the direct SDPA path"
    lengths[1] = 4  # in place: the version counter moves, the mask is rebuilt
    check(kp)
    assert built == [1]
    kp.lengths = torch.tensor([2, 2, 2])  # another tensor object
    check(kp)
    assert len(built) == 2
    empty = fastattn.KeyPadding(lengths=torch.tensor([5, 0, 2]))  # same signature, an empty row
    for _ in range(2):  # (direct only where SDPA itself gives 0 there, else the fix-up runs each time)
        out = check(empty)
        assert (out[1] == 0).all()
    n = len(built)
    q2 = torch.randn(B, H, 3, D)  # another Lq: another signature
    check(kp, q=q2)
    assert len(built) == n + 1


def test_key_range_is_computed_once_per_mask_object(monkeypatch):
    from fastattn import masks
    calls = []
    orig = masks._key_ranges
    monkeypatch.setattr(masks, "_key_ranges", lambda km: calls.append(1) or orig(km))
    km = torch.tensor([[True, True, False, True]])
    mask = masks.NormalizedMask(key_mask=km)
    a, b = mask.key_range(), mask.key_range()
    assert a is b and len(calls) == 1
    assert a.tolist() == [[0, 4]]
    assert masks.NormalizedMask(key_mask=torch.tensor([[False, True, True, False]])).key_range().tolist() == [[1, 3]]


# ------------------------------------------------------------------------------------------ dispatch
class _Fake(AttnBackend):
    DEVICES = ("any",)

    def __init__(self, name, **caps):
        super().__init__()
        self.name = name
        for k_, v_ in caps.items():
            setattr(self, k_, v_)


def test_decode_goes_to_triton_split_kv_not_cuda(monkeypatch):
    from fastattn.attention.backends.cuda import CudaAttention
    cuda = CudaAttention()
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: None)
    monkeypatch.setattr(cuda, "not_supported_reasons", lambda inp: [])
    triton = _Fake("triton")
    table = dispatch.backends("attention")
    monkeypatch.setitem(table, "cuda", cuda)
    monkeypatch.setitem(table, "triton", triton)
    decode = normalize_attention(*_qkv(Lq=1, Lk=64))
    prefill = normalize_attention(*_qkv(Lq=64, Lk=64))
    assert dispatch.select("attention", decode).name == "triton"
    assert any("decode-sized" in r for r in dispatch.explain("attention", decode)["cuda"])
    assert dispatch.select("attention", prefill).name == "cuda"
    assert dispatch.select("attention", decode, "cuda").name == "cuda"  # forcing it still works


def test_common_reasons_are_worded_once_from_the_data():
    b = _Fake("triton", DTYPES=(torch.float16,), HEAD_DIMS=range(16, 129), GQA=False, DIFFERENT_VALUE_DIM=False,
              MASK_PARTS=frozenset({"causal"}))
    q = torch.randn(1, 4, 3, 8)
    k = torch.randn(1, 2, 3, 8)
    v = torch.randn(1, 2, 3, 4)
    r = b.not_supported_reasons(normalize_attention(q, k, v, torch.ones(3, 3, dtype=torch.bool), enable_gqa=True,
                                                    dropout_p=0.1))
    text = "\n".join(r)
    for piece in ("dtype float32", "E=8", "Ev=4", "needs E == Ev", "grouped-query", "dense bool", "dropout_p=0.1"):
        assert piece in text, (piece, r)


def test_explain_names_the_chosen_backend_and_the_reasons():
    q, k, v = _qkv()
    text = fastattn.explain(q, k, v)
    chosen = dispatch.select("attention", normalize_attention(q, k, v)).name
    assert f"-> {chosen}" in text and "cuda:" in text and "unavailable" in text


def test_sdpa_equivalence_of_torch_backend_outputs():
    q, k, v = _qkv(Lq=6, Lk=6)
    torch.testing.assert_close(fastattn.attention(q, k, v, is_causal=True),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))

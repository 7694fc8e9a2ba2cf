"""fastattn.optimize / fastattn.revert on live Hugging Face models (tiny random configs, no hub):
outputs vs eager under the model-level numerics rule, state_dict and tied weights untouched, an exact
revert, save-after-optimize loading into the stock class, per-family FFN swaps and their log lines."""

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fastattn  # noqa: E402
from fastattn.integrations import describe  # noqa: E402
from fastattn.integrations._hf_testing import check_model_rule, float64_copy, padded_batch, tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    """CPU tier: the torch backend for attention and the FFN blocks."""
    monkeypatch.setenv("FASTATTN_BACKEND", "torch")


def _out(model, kind, ids, am, **kw):
    with torch.no_grad():
        o = model(input_ids=ids, attention_mask=am, **kw)
    return o.logits if kind in ("gpt2", "llama", "gpt_neo") else o.last_hidden_state


def _snapshot(model):
    return {k: (v.data_ptr(), tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


FAMILIES = {  # kind -> (patched class names, expected count)
    "bert": {"BertIntermediate": 2, "BertOutput": 2, "BertSelfOutput": 2},
    "roberta": {"RobertaIntermediate": 2, "RobertaOutput": 2, "RobertaSelfOutput": 2},
    "electra": {"ElectraIntermediate": 2, "ElectraOutput": 2, "ElectraSelfOutput": 2},
    "distilbert": {"FFN": 2},
    "gpt2": {"GPT2MLP": 2},
}


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_optimize_matches_eager_and_reverts_exactly(kind):
    model = tiny_model(kind)
    ids, am = padded_batch(3, 9, "left" if kind == "gpt2" else "holes", seed=1)
    before = _out(model, kind, ids, am)
    ref = _out(float64_copy(model), kind, ids, am)
    snap = _snapshot(model)
    impl = model.config._attn_implementation

    assert fastattn.optimize(model, ffn="always") is model
    report = " | ".join(describe(model))
    for cls, n in FAMILIES[kind].items():
        assert f"{cls} x{n}" in report, report
    assert model.config._attn_implementation == "fastattn"
    assert _snapshot(model) == snap, "optimize must not touch parameters or buffers"
    ours = _out(model, kind, ids, am)
    check_model_rule(ours, before, ref, am, f"optimize-{kind}")

    assert fastattn.revert(model) is model
    assert model.config._attn_implementation == impl
    assert not any(m in mod.__dict__ for mod in model.modules() for m in ("forward", "ff_chunk"))
    assert torch.equal(_out(model, kind, ids, am), before), "revert must be bit-exact"
    assert _snapshot(model) == snap
    assert describe(model) == []


def test_tied_weights_and_conv1d_read_in_place():
    model = tiny_model("gpt2")
    fastattn.optimize(model, ffn="always")
    assert model.lm_head.weight is model.transformer.wte.weight
    mlp = model.transformer.h[0].mlp
    assert "forward" in mlp.__dict__ and type(mlp).__name__ == "GPT2MLP"
    assert sum(1 for _ in model.parameters()) == sum(1 for _ in tiny_model("gpt2").parameters())


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_save_after_optimize_loads_into_stock_class(kind, tmp_path):
    model = tiny_model(kind)
    ids, am = padded_batch(2, 7, "right", seed=2)
    before = _out(model, kind, ids, am)
    fastattn.optimize(model, ffn="always")
    model.save_pretrained(tmp_path)
    stock = type(model).from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(stock) is type(model)
    assert stock.state_dict().keys() == model.state_dict().keys()
    for k, v in stock.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert torch.equal(_out(stock, kind, ids, am), before)


def test_from_pretrained_with_fastattn(tmp_path):
    model = tiny_model("bert")
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, attn_implementation="fastattn").eval()
    assert loaded.config._attn_implementation == "fastattn"
    ids, am = padded_batch(2, 7, "right", seed=3)
    check_model_rule(_out(loaded, "bert", ids, am), _out(model, "bert", ids, am),
                     _out(float64_copy(model), "bert", ids, am), am, "from_pretrained-fastattn")


def test_optimize_twice_and_partial_flags():
    model = tiny_model("bert")
    fastattn.optimize(model, attention=False, ffn="always")
    assert model.config._attn_implementation == "eager"
    assert "forward" in model.encoder.layer[0].intermediate.__dict__
    fastattn.optimize(model, ffn=False)  # re-optimising first reverts
    assert model.config._attn_implementation == "fastattn"
    assert "forward" not in model.encoder.layer[0].intermediate.__dict__
    fastattn.revert(model)
    fastattn.revert(model)  # a second revert is a no-op
    assert model.config._attn_implementation == "eager"


def test_unknown_family_attention_only(caplog):
    model = tiny_model("llama")
    ids, am = padded_batch(2, 7, "left", seed=4)
    before = _out(model, "llama", ids, am)
    with caplog.at_level(logging.INFO, logger="fastattn"):
        fastattn.optimize(model)
    assert model.config._attn_implementation == "fastattn"
    msgs = [r.getMessage() for r in caplog.records if "ffn: not swapped" in r.getMessage()]
    assert len(msgs) == 1 and "'llama'" in msgs[0]
    check_model_rule(_out(model, "llama", ids, am), before, _out(float64_copy(model), "llama", ids, am), am,
                     "optimize-llama")
    fastattn.revert(model)
    assert torch.equal(_out(model, "llama", ids, am), before)


def test_unknown_activation_not_swapped(caplog):
    model = tiny_model("bert", hidden_act="relu")
    with caplog.at_level(logging.WARNING, logger="fastattn"):
        fastattn.optimize(model)
    assert "forward" not in model.encoder.layer[0].intermediate.__dict__
    assert any("'relu'" in r.getMessage() for r in caplog.records)


def test_mismatched_live_activation_not_swapped():
    """The config says gelu but the module holds another activation: that module is left alone."""
    model = tiny_model("bert")
    model.encoder.layer[1].intermediate.intermediate_act_fn = torch.nn.ReLU()
    fastattn.optimize(model, ffn="always")
    assert "forward" in model.encoder.layer[0].intermediate.__dict__
    assert "forward" not in model.encoder.layer[1].intermediate.__dict__
    assert any("left as is" in line for line in describe(model))


def test_gelu_new_uses_tanh_and_gelu_uses_erf(monkeypatch):
    import fastattn.ops as ops
    import fastattn.ffn_blocks as ffn_blocks
    seen = []
    orig_ffn, orig_lg = ops.gelu_ffn, ffn_blocks.linear_gelu
    monkeypatch.setattr(ops, "gelu_ffn", lambda *a, **k: seen.append(k["approximate"]) or orig_ffn(*a, **k))
    monkeypatch.setattr(ffn_blocks, "linear_gelu", lambda *a, **k: seen.append(k["approximate"]) or orig_lg(*a, **k))
    ids, am = padded_batch(2, 5, "none")
    for kind, act, expect in (("gpt2", "gelu_new", "tanh"), ("gpt2", "gelu", "none"), ("bert", "gelu", "none"),
                              ("bert", "gelu_pytorch_tanh", "tanh")):
        seen.clear()
        over = {"activation_function": act} if kind == "gpt2" else {"hidden_act": act}
        model = fastattn.optimize(tiny_model(kind, **over), ffn="always")
        _out(model, kind, ids, am)
        assert seen and set(seen) == {expect}, (kind, act, seen)


def test_distilbert_chunked_feed_forward():
    model = tiny_model("distilbert", chunk_size_feed_forward=3)
    ids, am = padded_batch(2, 9, "right", seed=5)
    before = _out(model, "distilbert", ids, am)
    fastattn.optimize(model, ffn="always")
    assert "ff_chunk" in model.transformer.layer[0].ffn.__dict__
    check_model_rule(_out(model, "distilbert", ids, am), before, _out(float64_copy(model), "distilbert", ids, am),
                     am, "distilbert-chunked")


def test_gpt_neo_attention_reported_ffn_swapped(caplog):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM
    torch.manual_seed(0)
    cfg = GPTNeoConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                       attention_types=[[["global", "local"], 1]], window_size=4, max_position_embeddings=64, resid_dropout=0.0, embed_dropout=0.0,
                       attention_dropout=0.0)
    model = GPTNeoForCausalLM(cfg).eval()
    ids, am = padded_batch(2, 7, "left", seed=6)
    before = _out(model, "gpt_neo", ids, am)
    with caplog.at_level(logging.WARNING, logger="fastattn"):
        fastattn.optimize(model, ffn="always")
    assert model.config._attn_implementation != "fastattn"
    assert any("AttentionInterface" in r.getMessage() for r in caplog.records)
    assert "forward" in model.transformer.h[0].mlp.__dict__
    ref = _out(float64_copy(model), "gpt_neo", ids, am)
    check_model_rule(_out(model, "gpt_neo", ids, am), before, ref, am, "gpt-neo-ffn")
    fastattn.revert(model)
    assert torch.equal(_out(model, "gpt_neo", ids, am), before)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_training_dropout_kept_and_gradients(kind):
    """FFN swap in training: HF's dropout stays where HF puts it; gradients match eager."""
    p = 0.3
    over = {"resid_pdrop": p} if kind == "gpt2" else {"hidden_dropout_prob": p}
    model = tiny_model(kind, **over).train()
    opt = tiny_model(kind, **over).train()
    opt.load_state_dict(model.state_dict())
    fastattn.optimize(opt, attention=False, ffn="always")  # same attention code on both sides, same RNG stream
    ids, am = padded_batch(2, 7, "right", seed=7)
    valid = am.bool().unsqueeze(-1)

    def step(m, seed):
        m.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        o = m(input_ids=ids, attention_mask=am)
        h = o.logits if kind == "gpt2" else o.last_hidden_state
        (h * valid).pow(2).sum().backward()
        return h.detach(), {n: q.grad.clone() for n, q in m.named_parameters() if q.grad is not None}

    h_ref, g_ref = step(model, 11)
    h_opt, g_opt = step(opt, 11)
    h_other, _ = step(opt, 12)
    assert not torch.allclose(h_opt, h_other), "dropout must be active in training"
    # same seed, same dropout masks: the fp32 eager-vs-sdpa tolerance class of HF's own tests
    torch.testing.assert_close(h_opt, h_ref, atol=1e-6, rtol=1e-4)
    assert g_opt.keys() == g_ref.keys()
    for n in g_ref:
        torch.testing.assert_close(g_opt[n], g_ref[n], atol=1e-5, rtol=1e-4, msg=lambda m: f"{kind} grad {n}: {m}")


def test_autocast_runs_stock_ffn():
    model = tiny_model("bert")
    ids, am = padded_batch(2, 7, "right", seed=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = _out(model, "bert", ids, am)
        fastattn.optimize(model, attention=False, ffn="always")
        after = _out(model, "bert", ids, am)
    assert torch.equal(before, after)


def test_optimize_rejects_non_hf_model():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        fastattn.optimize(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------ lazy registration (fresh interpreters)
def _fresh_python(code: str, tmp_path=None):
    """Run ``code`` in a new interpreter (the registration depends on import order); returns stderr."""
    import os
    import subprocess
    import sys
    import textwrap
    env = dict(os.environ, FASTATTN_BACKEND="torch", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path) if tmp_path else None, timeout=300)
    assert r.returncode == 0, f"subprocess failed:\n{r.stdout}\n{r.stderr}"
    return r.stderr


def test_import_fastattn_does_not_import_transformers_and_registers_after():
    _fresh_python("""
        import sys
        import fastattn
        assert not any(m == "transformers" or m.startswith("transformers.") for m in sys.modules), \\
            "import fastattn imported transformers"
        import transformers  # the lazy package: nothing registered needs to happen yet
        from transformers.masking_utils import AttentionMaskInterface  # a lazy submodule import
        assert "fastattn" in AttentionMaskInterface._global_mapping
        assert "fastattn" in transformers.AttentionInterface._global_mapping  # via the lazy __getattr__
        import transformers.modeling_utils as mu
        from importlib.machinery import SourceFileLoader
        assert isinstance(mu.__loader__, SourceFileLoader) and mu.__spec__.loader is mu.__loader__
        assert not [f for f in sys.meta_path if type(f).__module__.startswith("fastattn")], sys.meta_path
    """)


def test_fastattn_imported_after_transformers_registers_at_once():
    _fresh_python("""
        import transformers.modeling_utils, transformers.masking_utils
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
        assert "fastattn" not in AttentionInterface._global_mapping
        import fastattn
        assert "fastattn" in AttentionInterface._global_mapping
        assert "fastattn" in AttentionMaskInterface._global_mapping
    """)


def test_from_pretrained_with_fastattn_imported_first(tmp_path):
    tiny_model("gpt2").save_pretrained(tmp_path / "tiny")
    _fresh_python("""
        import fastattn
        import torch
        from transformers import AutoModelForCausalLM
        ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
        am = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
        ours = AutoModelForCausalLM.from_pretrained("tiny", attn_implementation="fastattn")
        assert ours.config._attn_implementation == "fastattn"
        eager = AutoModelForCausalLM.from_pretrained("tiny", attn_implementation="eager")
        with torch.no_grad():
            a, b = ours(input_ids=ids, attention_mask=am).logits, eager(input_ids=ids, attention_mask=am).logits
        valid = am.bool().unsqueeze(-1)
        torch.testing.assert_close(a * valid, b * valid, atol=1e-5, rtol=1e-5)  # left padding honoured
    """, tmp_path)


def test_failing_registration_never_breaks_importing_transformers():
    err = _fresh_python("""
        import fastattn, fastattn.integrations as integ
        def boom():
            raise RuntimeError("registration exploded")
        integ.transformers_support = boom
        from transformers import AutoModel, AttentionInterface  # imports fine
        assert "fastattn" not in AttentionInterface._global_mapping
    """)
    assert "registration exploded" in err and "fastattn: post-import hook" in err


def test_activation_registry_never_substitutes_erf_and_tanh():
    """Every HF activation name the registry swaps computes, in float64, exactly the GELU variant it maps
    to, and measurably not the other one (near |x| = 2.7 they differ by ~4.7e-4)."""
    import torch.nn.functional as F
    from transformers.activations import ACT2FN
    from fastattn.ffn.problem import HF_ACTIVATIONS
    ACTIVATIONS = {name: act.approximate for name, act in HF_ACTIVATIONS.items()}
    assert {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}.items() <= ACTIVATIONS.items()
    x = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
    for name, approximate in ACTIVATIONS.items():
        hf = ACT2FN[name](x)
        same = (hf - F.gelu(x, approximate=approximate)).abs().max().item()
        other = (hf - F.gelu(x, approximate="tanh" if approximate == "none" else "none")).abs().max().item()
        print(f"{name}: |hf - gelu({approximate})| = {same:.2e}, |hf - other| = {other:.2e}")
        assert same < 1e-9 and other > 4e-4, name


# ------------------------------------------------------------------------------------- never slower
@pytest.mark.parametrize("env", ["torch", "auto"])
def test_optimize_keeps_the_stock_ffn_where_it_is_not_faster(env, monkeypatch, caplog):
    """On a CPU the FFN runs on the torch backend (the same math plus fastattn's dispatch) or the Triton
    interpreter (a test mode): optimize() keeps the stock modules, says so, and the model computes exactly
    what it did."""
    monkeypatch.setenv("FASTATTN_BACKEND", env)
    model = tiny_model("bert")
    ids, am = padded_batch(2, 7, "right", seed=9)
    before = _out(model, "bert", ids, am)
    with caplog.at_level(logging.INFO, logger="fastattn"):
        fastattn.optimize(model, attention=False)
    assert not any(m in mod.__dict__ for mod in model.modules() for m in ("forward", "ff_chunk"))
    report = " | ".join(describe(model))
    print(report)
    kept = next(line for line in describe(model) if line.startswith("ffn: kept the stock"))
    assert all(f"{c} x2" in kept for c in ("BertIntermediate", "BertSelfOutput", "BertOutput")), kept
    assert ("PyTorch's own math" in report) if env == "torch" else ("Triton interpreter" in report)
    assert "ffn: swapped" not in report and "not swapped" not in report
    assert torch.equal(_out(model, "bert", ids, am), before)
    assert any("kept the stock" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_ffn_backends_declare_where_they_beat_eager():
    from fastattn import dispatch
    from fastattn.ffn import swap_decision
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    for op in ("linear_act", "gelu_ffn"):
        table = dispatch.backends(op)
        assert table["cuda"].beats_eager(cuda) is None and table["triton"].beats_eager(cuda) is None
        assert table["torch"].beats_eager(cuda) is not None and table["triton"].beats_eager(cpu) is not None
    d = swap_decision(torch.randn(8, 4), backend="torch")
    assert d.backend == "torch" and "PyTorch's own math" in d.why_not
    d = swap_decision(torch.randn(8, 4), backend="cuda")
    assert d.backend is None and "cannot run linear_act" in d.why_not


def test_where_faster_the_swap_runs_fused_in_inference_and_stock_under_autograd(monkeypatch):
    """As on a GPU (a decision that the fused path is faster, simulated): the module is swapped; inference
    runs the fused blocks; when autograd needs the call and the backend has no fused backward, the stock
    forward runs (a recompute backward would be slower than stock): gradients are stock bit for bit."""
    import fastattn.ffn as ffn_pkg
    import fastattn.ffn_blocks as ffn_blocks
    monkeypatch.setattr(ffn_pkg, "swap_decision", lambda w, act, backend=None: ffn_pkg.SwapDecision("triton", None, False))
    calls = []
    orig = ffn_blocks.linear_gelu
    monkeypatch.setattr(ffn_blocks, "linear_gelu", lambda *a, **k: calls.append(1) or orig(*a, **k))
    model = tiny_model("bert").train()
    stock = tiny_model("bert").train()
    fastattn.optimize(model, attention=False)
    swapped = next(line for line in describe(model) if line.startswith("ffn: swapped"))
    assert all(f"{c} x2" in swapped for c in ("BertIntermediate", "BertSelfOutput", "BertOutput")), swapped
    ids, am = padded_batch(2, 7, "right", seed=10)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am)
    assert len(calls) == 2, "inference runs the fused blocks"
    calls.clear()
    grads = []
    for m in (model, stock):
        m(input_ids=ids, attention_mask=am).last_hidden_state.pow(2).sum().backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert not calls, "under autograd (no fused backward) the stock forward runs"
    assert sum(g is not None for g in grads[1].values()) > 10
    for n, g in grads[1].items():
        assert (g is None and grads[0][n] is None) or torch.equal(grads[0][n], g), n


def test_optimize_rejects_an_unknown_ffn_mode():
    with pytest.raises(ValueError, match="ffn must be"):
        fastattn.optimize(tiny_model("bert"), ffn="sometimes")

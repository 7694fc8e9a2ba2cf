"""PEFT LoRA and fastattn.optimize, in both orders (issue #13.3): a swapped feed-forward whose Linear has
become an adapter layer must call it, so the adapter is applied and trained. Gradients of the LoRA weights
and the outputs are compared to a float64 run of the stock PEFT model under the model-level numerics rule
(3x the plain fp32 run's error), on a tiny random BERT (no hub)."""

import pytest
import torch

pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import fastattn  # noqa: E402
from fastattn.integrations import describe  # noqa: E402
from fastattn.integrations._hf_testing import check_model_rule, float64_copy, padded_batch, tiny_model  # noqa: E402

TARGETS = ["query", "value", "dense", "intermediate.dense", "output.dense"]


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("FASTATTN_BACKEND", "torch")


def _lora(model, target: str):
    torch.manual_seed(1)  # same adapter weights in every model of a test
    # init_lora_weights=False: B is random too, so the adapters change the output and every LoRA weight
    # gets a gradient (with PEFT's default B = 0, A's gradient is zero)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=[target], init_lora_weights=False)
    return peft.get_peft_model(model, cfg)


def _step(model, ids, am):
    model.zero_grad(set_to_none=True)
    h = model(input_ids=ids, attention_mask=am).last_hidden_state
    (h * am.unsqueeze(-1)).pow(2).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    return h.detach(), grads


@pytest.mark.parametrize("order", ["optimize_then_peft", "peft_then_optimize"])
@pytest.mark.parametrize("target", TARGETS)
def test_lora_adapters_are_applied_and_trained_in_every_order(target, order):
    ids, am = padded_batch(2, 7, "right", seed=12)
    stock = _lora(tiny_model("bert"), target).train()
    ref = float64_copy(stock).train()
    if order == "optimize_then_peft":
        ours = _lora(fastattn.optimize(tiny_model("bert"), attention=False, ffn="always"), target)
    else:
        ours = fastattn.optimize(_lora(tiny_model("bert"), target), attention=False, ffn="always")
    ours.train()
    report = describe(ours.base_model.model if order == "optimize_then_peft" else ours)
    print(report)
    assert any(line.startswith(("ffn: swapped", "ffn: not swapped")) for line in report)
    if order == "peft_then_optimize" and target in ("dense", "output.dense", "intermediate.dense"):
        # the wrapped modules are left as is with the reason; the first line says what happened
        assert any("left as is" in line and "not a plain Linear" in line for line in report), report
        assert not any("matched" in line for line in report), report
    h_stock, g_stock = _step(stock, ids, am)
    h_ref, g_ref = _step(ref, ids, am)
    h_ours, g_ours = _step(ours, ids, am)
    assert g_stock and g_ours.keys() == g_stock.keys()
    valid = am.bool()
    check_model_rule(h_ours, h_stock, h_ref, valid, f"lora-{target}-{order}-out")
    assert sum(g is not None for g in g_stock.values()) >= 4
    for n, g in g_stock.items():
        if g is None:  # e.g. the pooler's adapter: last_hidden_state does not use it
            assert g_ours[n] is None, n
            continue
        assert g_ours[n] is not None, f"{n}: the adapter got no gradient (the fused path bypassed it)"
        assert float(g.abs().max()) > 0
        check_model_rule(g_ours[n], g, g_ref[n], torch.ones((), dtype=torch.bool), f"lora-{target}-{order}-d{n}")


def test_merged_adapter_runs_fused_again(monkeypatch):
    """After ``merge_and_unload`` the Linear is plain again: the swapped module fuses it (and computes the
    merged model's result)."""
    from fastattn import dispatch
    model = fastattn.optimize(tiny_model("bert"), attention=False, ffn="always")
    wrapped = _lora(model, "intermediate.dense")
    ids, am = padded_batch(2, 7, "right", seed=13)
    calls = []
    orig = dispatch.select
    monkeypatch.setattr(dispatch, "select", lambda op, *a, **k: calls.append(op) or orig(op, *a, **k))
    with torch.no_grad():
        before = wrapped(input_ids=ids, attention_mask=am).last_hidden_state
    assert calls.count("linear_act") == 4, calls  # the two BertOutput/BertSelfOutput per layer; not the wrapped one
    merged = wrapped.merge_and_unload()
    calls.clear()
    with torch.no_grad():
        after = merged(input_ids=ids, attention_mask=am).last_hidden_state
    assert calls.count("linear_act") == 6, calls  # the merged intermediate Linear is fused again
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)

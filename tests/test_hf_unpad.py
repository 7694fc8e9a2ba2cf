"""fastattn.optimize(unpad=True) on BERT-family encoders and DistilBERT: the encoder runs on the valid tokens only
(attention through attention_varlen), valid positions of every output match eager under the model-level
rule, pad positions of returned hidden states are 0, output_attentions goes through the eager path,
gradients flow, revert is bit-exact, unpad=False keeps padded execution; padding-free batches
(HF's cu_seq_lens kwargs) run varlen; forced to triton, every layer runs the Triton varlen kernel.
DistilBERT: task heads, save-after-optimize, a chunked feed-forward, and an unknown layout declining."""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fastattn  # noqa: E402
from fastattn.attention import varlen as varlen_mod  # noqa: E402
from fastattn.integrations import describe  # noqa: E402
from fastattn.integrations._hf_testing import VOCAB, check_model_rule, float64_copy, tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("FASTATTN_BACKEND", "torch")


@pytest.fixture
def varlen_calls(monkeypatch):
    calls = []
    orig = varlen_mod.attention_varlen

    def spy(q, k, v, cq, ck, mq, mk, **kw):
        calls.append((q.shape[0], cq.tolist(), mq))
        return orig(q, k, v, cq, ck, mq, mk, **kw)
    monkeypatch.setattr(varlen_mod, "attention_varlen", spy)
    return calls


def _batch(pattern, B=4, L=10, seed=0, pad_id=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, L), generator=g)
    am = torch.ones(B, L, dtype=torch.long)
    if pattern == "full-and-one":  # one full sequence and one of length 1
        am = torch.ones(2, L, dtype=torch.long)
        am[1, 1:] = 0
        ids = ids[:2]
    else:
        for b in range(B):
            n = (b * 3) % (L - 1)
            if pattern == "right" and n:
                am[b, L - n:] = 0
            elif pattern == "left" and n:
                am[b, :n] = 0
    return ids.masked_fill(am == 0, pad_id), am


def _run(model, ids, am, **kw):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=am, **kw)


@pytest.mark.parametrize("pattern", ["right", "left", "none", "full-and-one"])
@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
def test_unpadded_encoder_matches_eager(kind, pattern, varlen_calls):
    model = tiny_model(kind)
    pad = model.config.pad_token_id
    ids, am = _batch(pattern, pad_id=pad)
    eager = _run(model, ids, am, output_hidden_states=True)
    ref = _run(float64_copy(model), ids, am, output_hidden_states=True)
    opt = fastattn.optimize(copy.deepcopy(model), unpad="always")
    assert any(line.startswith("unpad: ") and "x1 runs on the valid tokens" in line for line in describe(opt))
    ours = _run(opt, ids, am, output_hidden_states=True)
    # every sequence's attention ran packed, once per layer, over the valid tokens only
    n_layers = model.config.num_hidden_layers
    assert len(varlen_calls) == n_layers
    assert varlen_calls[0][0] == int(am.sum()) and varlen_calls[0][1][-1] == int(am.sum())
    valid = am.bool()
    check_model_rule(ours.last_hidden_state, eager.last_hidden_state, ref.last_hidden_state, valid, f"{kind}-{pattern}")
    assert (ours.last_hidden_state[~valid] == 0).all(), "pad positions of returned hidden states are 0"
    assert len(ours.hidden_states) == len(eager.hidden_states) == n_layers + 1
    assert torch.equal(ours.hidden_states[0], eager.hidden_states[0])  # the embedding output itself
    for i, (o, e, r) in enumerate(zip(ours.hidden_states, eager.hidden_states, ref.hidden_states)):
        assert o.shape == e.shape
        check_model_rule(o, e, r, valid, f"{kind}-{pattern}-hidden{i}")
        if i:
            assert (o[~valid] == 0).all()
    if pattern != "left" and getattr(ours, "pooler_output", None) is not None:  # token 0 is valid
        check_model_rule(ours.pooler_output, eager.pooler_output, ref.pooler_output, torch.ones(ids.shape[0], dtype=torch.bool),
                         f"{kind}-{pattern}-pooler")
    fastattn.revert(opt)
    assert torch.equal(_run(opt, ids, am).last_hidden_state, _run(model, ids, am).last_hidden_state), \
        "revert must be bit-exact"
    assert not any("forward" in m.__dict__ for m in opt.modules())


def test_task_head_logits_and_loss(varlen_calls):
    from transformers import BertForSequenceClassification, BertForTokenClassification
    for cls in (BertForSequenceClassification, BertForTokenClassification):
        model = tiny_model("bert", cls=cls, num_labels=3)
        ids, am = _batch("right", seed=3)
        labels = torch.tensor([0, 2, 1, 1]) if cls is BertForSequenceClassification else \
            torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(4)).masked_fill(am == 0, -100)
        eager = _run(model, ids, am, labels=labels)
        ref = _run(float64_copy(model), ids, am, labels=labels)
        opt = fastattn.optimize(copy.deepcopy(model), unpad="always")
        ours = _run(opt, ids, am, labels=labels)
        valid = torch.ones(ids.shape[0], dtype=torch.bool) if cls is BertForSequenceClassification else am.bool()
        check_model_rule(ours.logits, eager.logits, ref.logits, valid, f"{cls.__name__}-logits")
        check_model_rule(ours.loss.view(1), eager.loss.view(1), ref.loss.view(1), torch.ones(1, dtype=torch.bool),
                         f"{cls.__name__}-loss")
    assert len(varlen_calls) == 4


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_output_attentions_goes_through_eager_per_call(kind, varlen_calls):
    model = tiny_model(kind)
    ids, am = _batch("right")
    eager = _run(model, ids, am, output_attentions=True)
    opt = fastattn.optimize(copy.deepcopy(model), unpad="always")
    ours = _run(opt, ids, am, output_attentions=True)
    assert varlen_calls == []
    assert len(ours.attentions) == 2 and ours.attentions[0].shape == eager.attentions[0].shape
    valid = am.bool()
    for a, b in zip(ours.attentions, eager.attentions):
        torch.testing.assert_close(a[valid[:, None, :, None].expand_as(a)], b[valid[:, None, :, None].expand_as(b)])
    torch.testing.assert_close(ours.last_hidden_state[valid], eager.last_hidden_state[valid])
    _run(opt, ids, am)  # the next call is unpadded again
    assert len(varlen_calls) == 2


def test_default_unpad_runs_on_cpu(varlen_calls):
    """optimize() unpads CPU forwards by default (measured faster there, inference and training: the cpu
    bench suite) and says so."""
    model = tiny_model("bert")
    ids, am = _batch("right")
    opt = fastattn.optimize(copy.deepcopy(model))
    assert any("on CPU and for CUDA forwards without grad" in line for line in describe(opt))
    out = _run(opt, ids, am)
    assert len(varlen_calls) == 2  # one per layer
    check_model_rule(out.last_hidden_state, _run(model, ids, am).last_hidden_state,
                     _run(float64_copy(model), ids, am).last_hidden_state, am.bool(), "unpad-default-cpu")


def test_default_unpad_keeps_cuda_training_padded():
    """A CUDA forward that records grad keeps the padded encoder (the fused padded backward) unless
    unpad="always"; CUDA without grad and CPU always unpad. The per-call decision, on stand-in tensors."""
    from types import SimpleNamespace

    from fastattn.integrations.unpad import _device_wants_unpad
    enc = SimpleNamespace()
    cuda = SimpleNamespace(device=torch.device("cuda"), requires_grad=True)
    cpu = SimpleNamespace(device=torch.device("cpu"), requires_grad=True)
    assert _device_wants_unpad(enc, cpu)
    assert not _device_wants_unpad(enc, cuda)
    with torch.no_grad():
        assert _device_wants_unpad(enc, cuda)
    assert _device_wants_unpad(enc, SimpleNamespace(device=torch.device("cuda"), requires_grad=False))
    enc._fastattn_unpad_always = True
    assert _device_wants_unpad(enc, cuda)


def test_unpad_false_keeps_padded_execution(varlen_calls):
    model = tiny_model("bert")
    ids, am = _batch("right")
    opt = fastattn.optimize(copy.deepcopy(model), unpad=False)
    assert not any(line.startswith("unpad") for line in describe(opt))
    assert "forward" not in opt.encoder.__dict__
    out = _run(opt, ids, am)
    assert varlen_calls == []
    check_model_rule(out.last_hidden_state, _run(model, ids, am).last_hidden_state,
                     _run(float64_copy(model), ids, am).last_hidden_state, am.bool(), "unpad-false")
    assert "not applied" in " ".join(describe(fastattn.optimize(copy.deepcopy(model), attention=False)))


@pytest.mark.parametrize("kind,layer0", [("bert", "encoder.layer.0.attention"),
                                         ("distilbert", "transformer.layer.0.attention")])
def test_gradients_flow_and_match_eager(kind, layer0, varlen_calls):
    model = tiny_model(kind).train()  # tiny configs have dropout 0: deterministic training forward
    ids, am = _batch("left", seed=5)
    valid = am.bool().unsqueeze(-1)
    w = torch.randn(ids.shape + (model.config.hidden_size,), generator=torch.Generator().manual_seed(6))

    def grads(m, dtype=torch.float32):
        m.zero_grad(set_to_none=True)
        h = m(input_ids=ids, attention_mask=am).last_hidden_state
        (h * valid * w.to(dtype)).sum().backward()
        return {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}

    eager = grads(model)
    ref = grads(float64_copy(model).train(), torch.float64)
    opt = fastattn.optimize(copy.deepcopy(model), unpad="always")
    ours = grads(opt)
    assert len(varlen_calls) == 2
    # the pooler never reaches the loss; every other parameter gets a gradient on both sides
    assert ours.keys() == eager.keys() and any(layer0 in n for n in ours)
    for n in eager:
        check_model_rule(ours[n], eager[n], ref[n], torch.ones((), dtype=torch.bool), f"grad-{kind}-{n}")


@pytest.mark.parametrize("kind", ["bert", "llama", "qwen2", "gpt2"])
def test_padding_free_batch_runs_varlen(kind, varlen_calls):
    """HF's flash kwargs (DataCollatorWithFlattening(return_flash_attn_kwargs=True)) reach the fastattn
    attention function: each packed sequence attends only to itself (causal per sequence for the decoders);
    per-sequence logits equal each sequence run alone in eager. The families HF forwards the kwargs in:
    benchmarks/NOTES.md, "Padding-free batches"."""
    from transformers import BertForTokenClassification, DataCollatorWithFlattening
    model = tiny_model(kind, **({"cls": BertForTokenClassification, "num_labels": 3} if kind == "bert" else {}))
    g = torch.Generator().manual_seed(9)
    seqs = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (5, 9, 1, 7)]
    batch = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_position_ids=True)(
        [{"input_ids": s} for s in seqs])
    opt = fastattn.optimize(copy.deepcopy(model), unpad="always")
    kw = {k: batch[k] for k in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")}
    with torch.no_grad():
        packed = opt(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **kw).logits[0]
        alone = [model(input_ids=torch.tensor([s])).logits[0] for s in seqs]
        ref = [float64_copy(model)(input_ids=torch.tensor([s])).logits[0] for s in seqs]
    assert len(varlen_calls) == 2 and varlen_calls[0][1] == [0, 5, 14, 15, 22]
    n = torch.ones(packed.shape[0], dtype=torch.bool)
    check_model_rule(packed, torch.cat(alone), torch.cat(ref), n, f"padding-free-{kind}")


@pytest.mark.skipif(fastattn.dispatch.backends("attention_varlen")["triton"].unavailable_reason() is not None,
                    reason="the triton varlen backend is unavailable here")
@pytest.mark.parametrize("pattern", ["left", "full-and-one"])
def test_unpadded_encoder_on_the_triton_varlen_kernel(pattern, varlen_calls, monkeypatch):
    """Forced to triton (FASTATTN_BACKEND=triton, as CI forces kernels; on CPU under TRITON_INTERPRET=1),
    every layer's packed attention is one launch of the Triton varlen kernel; valid positions match eager
    under the model rule, pad positions are 0."""
    monkeypatch.setenv("FASTATTN_BACKEND", "triton")
    tb = fastattn.dispatch.backends("attention_varlen")["triton"]
    launches = []
    real = tb.launch
    monkeypatch.setattr(tb, "launch", lambda inp, out, rng=(0, 0): launches.append(inp.describe()) or real(inp, out))
    model = tiny_model("bert")
    ids, am = _batch(pattern, B=3, L=9, seed=11)
    eager = _run(model, ids, am)
    ref = _run(float64_copy(model), ids, am)
    ours = _run(fastattn.optimize(copy.deepcopy(model), unpad="always"), ids, am)
    n_layers = model.config.num_hidden_layers
    assert len(varlen_calls) == n_layers and len(launches) == n_layers
    valid = am.bool()
    check_model_rule(ours.last_hidden_state, eager.last_hidden_state, ref.last_hidden_state, valid,
                     f"bert-{pattern}-triton")
    assert (ours.last_hidden_state[~valid] == 0).all()


# ------------------------------------------------------------------------------------------- DistilBERT
def _distil_valid_calls(varlen_calls, am, n_layers=2):
    assert len(varlen_calls) == n_layers, varlen_calls
    assert all(c[0] == int(am.sum()) and c[1][-1] == int(am.sum()) for c in varlen_calls)


@pytest.mark.parametrize("pattern", ["right", "left", "none", "full-and-one"])
def test_distilbert_unpadded_transformer_matches_eager(pattern, varlen_calls):
    """DistilBERT's Transformer (blocks take (hidden_states, attention_mask, **kwargs)) unpads by default on
    CPU: last hidden state and every output_hidden_states entry match eager on valid positions, pads are 0."""
    model = tiny_model("distilbert")
    ids, am = _batch(pattern)
    eager = _run(model, ids, am, output_hidden_states=True)
    ref = _run(float64_copy(model), ids, am, output_hidden_states=True)
    opt = fastattn.optimize(copy.deepcopy(model))
    assert any(line.startswith("unpad: Transformer x1 runs on the valid tokens") for line in describe(opt)), describe(opt)
    ours = _run(opt, ids, am, output_hidden_states=True)
    _distil_valid_calls(varlen_calls, am)
    valid = am.bool()
    check_model_rule(ours.last_hidden_state, eager.last_hidden_state, ref.last_hidden_state, valid,
                     f"distilbert-{pattern}")
    assert (ours.last_hidden_state[~valid] == 0).all(), "pad positions of returned hidden states are 0"
    assert len(ours.hidden_states) == len(eager.hidden_states) == 3
    assert torch.equal(ours.hidden_states[0], eager.hidden_states[0])  # the embedding output itself
    for i, (o, e, r) in enumerate(zip(ours.hidden_states, eager.hidden_states, ref.hidden_states)):
        check_model_rule(o, e, r, valid, f"distilbert-{pattern}-hidden{i}")
        if i:
            assert (o[~valid] == 0).all()
    fastattn.revert(opt)
    assert not any(a in opt.transformer.__dict__ for a in ("forward", "_fastattn_config", "_fastattn_unpad_always"))
    assert torch.equal(_run(opt, ids, am).last_hidden_state, _run(model, ids, am).last_hidden_state), \
        "revert must be bit-exact"


@pytest.mark.parametrize("head,pattern", [("seq", "right"), ("seq", "full-and-one"), ("mlm", "left"),
                                          ("mlm", "right")])
def test_distilbert_task_head_logits_and_loss(head, pattern, varlen_calls):
    """Sequence classification reads token 0 (right padding keeps it valid; see the left-padding note in
    unpad.py); masked LM logits per valid token."""
    from transformers import DistilBertForMaskedLM, DistilBertForSequenceClassification
    cls = DistilBertForSequenceClassification if head == "seq" else DistilBertForMaskedLM
    model = tiny_model("distilbert", cls=cls, num_labels=3)
    ids, am = _batch(pattern, seed=3)
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 3, (ids.shape[0],), generator=g) if head == "seq" else \
        torch.randint(0, VOCAB, ids.shape, generator=g).masked_fill(am == 0, -100)
    eager = _run(model, ids, am, labels=labels)
    ref = _run(float64_copy(model), ids, am, labels=labels)
    ours = _run(fastattn.optimize(copy.deepcopy(model)), ids, am, labels=labels)
    _distil_valid_calls(varlen_calls, am)
    valid = torch.ones(ids.shape[0], dtype=torch.bool) if head == "seq" else am.bool()
    check_model_rule(ours.logits, eager.logits, ref.logits, valid, f"distilbert-{head}-{pattern}-logits")
    check_model_rule(ours.loss.view(1), eager.loss.view(1), ref.loss.view(1), torch.ones(1, dtype=torch.bool),
                     f"distilbert-{head}-{pattern}-loss")


def test_distilbert_save_after_optimize_loads_into_stock_class(tmp_path, varlen_calls):
    from transformers import DistilBertForSequenceClassification
    model = tiny_model("distilbert", cls=DistilBertForSequenceClassification, num_labels=2)
    ids, am = _batch("right", seed=7)
    before = _run(model, ids, am).logits
    opt = fastattn.optimize(copy.deepcopy(model))
    _run(opt, ids, am)
    assert len(varlen_calls) == 2
    opt.save_pretrained(tmp_path)
    stock = DistilBertForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert "forward" not in stock.distilbert.transformer.__dict__
    assert stock.state_dict().keys() == model.state_dict().keys()
    assert torch.equal(_run(stock, ids, am).logits, before)


def test_distilbert_chunked_feed_forward_unpads_only_when_the_chunk_divides(varlen_calls):
    """HF's chunked feed-forward needs T % chunk == 0: otherwise that call runs the padded Transformer."""
    model = tiny_model("distilbert", chunk_size_feed_forward=2)
    opt = fastattn.optimize(copy.deepcopy(model))
    for pattern, unpads in (("right", False), ("none", True)):  # 31 and 40 valid tokens
        ids, am = _batch(pattern)
        assert (int(am.sum()) % 2 == 0) == unpads
        n_before = len(varlen_calls)
        ours = _run(opt, ids, am)
        assert len(varlen_calls) - n_before == (2 if unpads else 0), pattern
        check_model_rule(ours.last_hidden_state, _run(model, ids, am).last_hidden_state,
                         _run(float64_copy(model), ids, am).last_hidden_state, am.bool(), f"distilbert-chunk-{pattern}")


def test_distilbert_unknown_layout_declines_with_a_report_line(monkeypatch):
    """Another transformers version's block signature (e.g. 4.x: (x, attn_mask, head_mask, output_attentions))
    keeps the stock Transformer and says why."""
    from transformers.models.distilbert import modeling_distilbert as md
    model = tiny_model("distilbert")

    def old_forward(self, x, attn_mask=None, head_mask=None, output_attentions=False):
        raise AssertionError("not called")
    monkeypatch.setattr(md.TransformerBlock, "forward", old_forward)
    opt = fastattn.optimize(model)
    lines = [line for line in describe(opt) if line.startswith("unpad")]
    assert len(lines) == 1 and "layout this fastattn does not know" in lines[0] and "TransformerBlock" in lines[0], lines
    assert "forward" not in opt.transformer.__dict__

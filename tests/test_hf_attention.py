"""The "fastattn" Hugging Face attention implementation: mask function, attention function, and tiny
random models (built in-process, no hub) compared with HF's eager path under the model-level numerics
rule (DESIGN.md: 3x the plain fp32 error against a float64 eager run, valid positions only)."""

from types import SimpleNamespace

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fastattn  # noqa: E402
from fastattn import reference  # noqa: E402
from fastattn.integrations import hf_attention  # noqa: E402
from fastattn.integrations._hf_testing import (CaptureAttention, check_model_rule, float64_copy,  # noqa: E402
                                               padded_batch, run, tiny_model)
from fastattn.testing import assert_close  # noqa: E402
from transformers.masking_utils import (bidirectional_mask_function, causal_mask_function,  # noqa: E402
                                        sdpa_mask, sliding_window_causal_mask_function)

PATTERNS = ["none", "right", "left", "holes"]


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    """CPU tier: the torch backend (the Triton interpreter is exercised by the marked subset below)."""
    monkeypatch.setenv("FASTATTN_BACKEND", "torch")


# ------------------------------------------------------------------------------------ mask function
def _pad2d(B, L, pattern, seed=0):
    return padded_batch(B, L, pattern, seed)[1].bool()


def _materialise(res, B, Lq, Lk, module_causal=True):
    """Our mask function's result as the (B, 1, Lq, Lk) bool mask it means to the attention function."""
    q, k = torch.zeros(B, 1, Lq, 4), torch.zeros(B, 1, Lk, 4)
    plan = hf_attention._plan(SimpleNamespace(is_causal=module_causal), q, k, res, {})
    keep = plan.mask.keep(B, Lq, plan.kv_len, "cpu")
    keep = torch.ones(1, 1, Lq, plan.kv_len, dtype=torch.bool) if keep is None else keep
    keep = keep.expand(B, 1, Lq, plan.kv_len)
    return torch.nn.functional.pad(keep, (0, Lk - plan.kv_len), value=False)


def _hf_reference(B, Lq, Lk, q_offset, fn, am, **kw):
    m = sdpa_mask(batch_size=B, q_length=Lq, kv_length=Lk, q_offset=q_offset, kv_offset=0, mask_function=fn,
                  attention_mask=am, allow_is_causal_skip=False, allow_is_bidirectional_skip=False, **kw)
    return m.expand(B, 1, Lq, Lk)


# (Lq, Lk, q_offset, length of the 2-D mask): full prefill, dynamic-cache decode, chunked prefill on a
# dynamic cache, static-cache prefill and decode (K longer than what is written)
CAUSAL_CASES = [(6, 6, 0, 6), (1, 9, 8, 9), (3, 9, 6, 9), (6, 12, 0, 6), (1, 12, 7, 8)]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("case", CAUSAL_CASES, ids=lambda c: f"q{c[0]}-k{c[1]}-off{c[2]}")
def test_causal_mask_matches_hf(case, pattern):
    Lq, Lk, q_off, Lm = case
    B = 3
    am = None if pattern == "none" else _pad2d(B, Lm, pattern)
    ref = _hf_reference(B, Lq, Lk, q_off, causal_mask_function, am)
    for off in (q_off, torch.tensor(q_off)):  # a static cache hands a 0-dim tensor offset
        res = hf_attention.fastattn_mask(B, Lq, Lk, off, 0, causal_mask_function, am, device="cpu")
        ours = _materialise(res, B, Lq, Lk)
        assert torch.equal(ours, ref), f"mask differs for {case} {pattern} (offset {type(off).__name__})"
        if isinstance(off, torch.Tensor) and 1 < Lq < Lk:
            # the causal alignment depends on the offset's value, which is never read: HF's dense mask
            assert res.dim() == 4
            continue
        # the compact form is used, never a dense (B, 1, Lq, Lk) tensor
        assert res is None or res.dim() == 2
        if res is None:
            continue
        spec = getattr(res, hf_attention._SPEC_ATTR)
        assert spec.causal
        if isinstance(off, torch.Tensor) and Lq == 1:  # decode on a static cache: kv_idx <= offset folded in, whole cache
            assert res.shape[1] == Lk and not spec.full
        else:
            assert spec.full == (am is None)  # a given padding mask is handed over uninspected
            assert res.shape[1] == q_off + Lq  # keys past the last query's causal limit are cut off
            if am is not None:
                assert torch.equal(res, torch.nn.functional.pad(am, (0, max(0, res.shape[1] - Lm)))[:, :res.shape[1]])
    if pattern == "none" and Lk == Lq + q_off and (Lq == 1 or Lq == Lk):  # plain causal: no mask at all
        assert hf_attention.fastattn_mask(B, Lq, Lk, q_off, 0, causal_mask_function, None, device="cpu") is None


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("Lq,Lk", [(6, 6), (4, 7)], ids=["self", "cross"])
def test_bidirectional_mask_matches_hf(Lq, Lk, pattern):
    B = 3
    am = None if pattern == "none" else _pad2d(B, Lk, pattern)
    res = hf_attention.fastattn_mask(B, Lq, Lk, 0, 0, bidirectional_mask_function, am, device="cpu",
                                     allow_is_bidirectional_skip=True)
    ref = _hf_reference(B, Lq, Lk, 0, bidirectional_mask_function, am)
    assert torch.equal(_materialise(res, B, Lq, Lk, module_causal=False), ref)
    assert (res is None) == (pattern == "none")


def test_mask_user_tensor_untouched():
    am = _pad2d(2, 5, "left")
    res = hf_attention.fastattn_mask(2, 5, 5, 0, 0, causal_mask_function, am, device="cpu")
    assert res is not am and not hasattr(am, hf_attention._SPEC_ATTR)


@pytest.mark.parametrize("pattern", ["none", "left"])
def test_sliding_window_and_custom_masks_fall_back_to_dense(pattern):
    B, Lq, Lk = 2, 7, 7
    am = None if pattern == "none" else _pad2d(B, Lk, pattern)
    fn = sliding_window_causal_mask_function(3)
    res = hf_attention.fastattn_mask(B, Lq, Lk, 0, 0, fn, am, device="cpu", local_size=3)
    assert res.dim() == 4 and torch.equal(res.expand(B, 1, Lq, Lk), _hf_reference(B, Lq, Lk, 0, fn, am))
    # an and_mask overlay (a closure, not HF's plain causal function) is dense too
    custom = transformers.masking_utils.and_masks(causal_mask_function, lambda b, h, q, kv: kv != 2)
    res = hf_attention.fastattn_mask(B, Lq, Lk, 0, 0, custom, am, device="cpu", use_vmap=True)
    assert res.dim() == 4 and torch.equal(res.expand(B, 1, Lq, Lk),
                                          _hf_reference(B, Lq, Lk, 0, custom, am, use_vmap=True))


# ------------------------------------------------------------------------------- attention function
def _qkv(B, Hq, Hkv, Lq, Lk, D, seed):
    """q/k/v as HF hands them over: non-contiguous (B, H, L, D) views of projection outputs."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Lq, Hq * D, generator=g).view(B, Lq, Hq, D).transpose(1, 2)
    kv = torch.randn(B, Lk, 2 * Hkv * D, generator=g)
    k, v = kv.split(Hkv * D, dim=-1)
    return q, k.reshape(B, Lk, Hkv, D).transpose(1, 2), v.reshape(B, Lk, Hkv, D).transpose(1, 2)


@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (4, 2), (6, 1)], ids=["mha", "gqa", "mqa"])
def test_attention_fn_compact_mask_vs_reference(Hq, Hkv, monkeypatch):
    B, Lq, Lk, D, Lm = 3, 5, 11, 16, 9
    q, k, v = _qkv(B, Hq, Hkv, Lq, Lk, D, seed=Hq * 10 + Hkv)
    assert not q.is_contiguous() and not k.is_contiguous()
    am = _pad2d(B, Lm, "holes", seed=1)  # a flash-attention style 2-D mask from outside: causal bottom-right
    cap = CaptureAttention(monkeypatch)
    out, w = hf_attention.fastattn_attention_forward(SimpleNamespace(is_causal=True, training=False), q, k, v, am,
                                                      scaling=0.3)
    assert w is None and out.shape == (B, Lq, Hq, D) and out.is_contiguous()
    assert cap.calls[0][4] == Hkv, "GQA must not repeat K/V"
    assert cap.calls[0][2] == Lm, "keys past the 2-D mask must not be read"
    kp = fastattn.KeyPadding(mask=am, causal="bottom_right")
    args = (q, k[:, :, :Lm], v[:, :, :Lm], kp)
    ref = reference.attention(*args, scale=0.3, enable_gqa=Hq != Hkv)
    naive = reference.attention(*args, scale=0.3, enable_gqa=Hq != Hkv, compute_dtype=None)
    assert_close(out.transpose(1, 2), ref, naive, torch.float32, name=f"hf-fn-h{Hq}/{Hkv}")


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_attention_fn_dense_4d_mask_vs_reference(dtype):
    B, H, Lq, Lk, D = 2, 2, 6, 6, 8
    q, k, v = _qkv(B, H, H, Lq, Lk, D, seed=3)
    g = torch.Generator().manual_seed(4)
    keep = torch.rand(B, 1, Lq, Lk, generator=g) > 0.3
    mask = keep if dtype == torch.bool else torch.randn(B, 1, Lq, Lk, generator=g).masked_fill(~keep, float("-inf"))
    out, _ = hf_attention.fastattn_attention_forward(SimpleNamespace(is_causal=True, training=False), q, k, v, mask)
    ref = reference.attention(q, k, v, mask)
    naive = reference.attention(q, k, v, mask, compute_dtype=None)
    assert_close(out.transpose(1, 2), ref, naive, torch.float32, name=f"hf-fn-dense-{dtype}")


def test_attention_fn_dropout_only_in_training(monkeypatch):
    q, k, v = _qkv(2, 2, 2, 5, 5, 8, seed=5)
    fn = hf_attention.fastattn_attention_forward
    base, _ = fn(SimpleNamespace(is_causal=False, training=False), q, k, v, None)
    cap = CaptureAttention(monkeypatch)
    ev, _ = fn(SimpleNamespace(is_causal=False, training=False), q, k, v, None, dropout=0.5)
    assert torch.equal(ev, base) and cap.calls[-1][5] == 0.0
    torch.manual_seed(0)
    tr1, _ = fn(SimpleNamespace(is_causal=False, training=True), q, k, v, None, dropout=0.5)
    assert cap.calls[-1][5] == 0.5 and not torch.allclose(tr1, base)
    torch.manual_seed(0)
    tr2, _ = fn(SimpleNamespace(is_causal=False, training=True), q, k, v, None, dropout=0.5)
    assert torch.equal(tr1, tr2)


def test_attention_fn_rejects_bad_mask():
    q, k, v = _qkv(2, 2, 2, 4, 4, 8, seed=6)
    mod = SimpleNamespace(is_causal=True, training=False)
    with pytest.raises(ValueError, match="attention_mask"):
        hf_attention.fastattn_attention_forward(mod, q, k, v, torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(TypeError, match="attention_mask"):
        hf_attention.fastattn_attention_forward(mod, q, k, v, object())


# ---------------------------------------------------------------------------------- tiny models
ENCODERS = ["bert", "roberta", "distilbert", "electra"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kind", ENCODERS)
def test_encoder_matches_eager(kind, pattern, monkeypatch):
    model = tiny_model(kind)
    ids, am = padded_batch(3, 9, pattern, seed=len(kind))
    ref = run(float64_copy(model), "sdpa", input_ids=ids, attention_mask=am).last_hidden_state
    naive = run(model, "eager", input_ids=ids, attention_mask=am).last_hidden_state
    cap = CaptureAttention(monkeypatch)
    ours = run(model, "fastattn", input_ids=ids, attention_mask=am).last_hidden_state
    check_model_rule(ours, naive, ref, am, f"{kind}-{pattern}")
    assert cap.masks() == {"key_mask"}, cap.masks()  # HF's 2-D mask (all ones for "none"), never inspected


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_no_padding_mask_means_no_mask(kind, monkeypatch):
    """HF gives no padding mask (attention_mask=None): nothing is built or read, plain (causal) attention."""
    model = tiny_model(kind)
    ids, _ = padded_batch(2, 7, "none", seed=16)
    ref = run(float64_copy(model), "sdpa", input_ids=ids)
    naive = run(model, "eager", input_ids=ids)
    cap = CaptureAttention(monkeypatch)
    ours = run(model, "fastattn", input_ids=ids)
    key = "logits" if kind == "gpt2" else "last_hidden_state"
    check_model_rule(ours[key], naive[key], ref[key], torch.ones(2, 7), f"{kind}-no-mask")
    assert cap.masks() == {"causal_top_left" if kind == "gpt2" else "none"}, cap.masks()


@pytest.mark.parametrize("pattern", ["left", "right", "holes"])
def test_gpt2_logits_match_eager(pattern, monkeypatch):
    model = tiny_model("gpt2")
    ids, am = padded_batch(3, 9, pattern, seed=7)
    ref = run(float64_copy(model), "sdpa", input_ids=ids, attention_mask=am).logits
    naive = run(model, "eager", input_ids=ids, attention_mask=am).logits
    cap = CaptureAttention(monkeypatch)
    ours = run(model, "fastattn", input_ids=ids, attention_mask=am).logits
    check_model_rule(ours, naive, ref, am, f"gpt2-{pattern}")
    assert cap.masks() == {"causal_bottom_right+key_mask"}, cap.masks()


@pytest.mark.filterwarnings("ignore:.*past_key_values.*:FutureWarning")  # renamed `cache` in 5.24, kept for 5.17
def test_gpt2_chunked_prefill_on_dynamic_cache():
    """Lq > 1 new tokens against a cache (bottom-right causal, Lq < Lk)."""
    from transformers import DynamicCache
    model = tiny_model("gpt2")
    ids, am = padded_batch(2, 10, "left", seed=8)

    def two_chunks(m, impl):
        m.set_attn_implementation(impl)
        with torch.no_grad():
            cache = DynamicCache(config=m.config)
            m(input_ids=ids[:, :6], attention_mask=am[:, :6], past_key_values=cache, use_cache=True)
            return m(input_ids=ids[:, 6:], attention_mask=am, past_key_values=cache, use_cache=True).logits

    ref = two_chunks(float64_copy(model), "sdpa")
    naive, ours = two_chunks(model, "eager"), two_chunks(model, "fastattn")
    check_model_rule(ours, naive, ref, am[:, 6:], "gpt2-chunked-prefill")


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_generate_left_padded_matches_eager(kind, cache, monkeypatch):
    model = tiny_model(kind)
    ids, am = padded_batch(3, 7, "left", seed=9)
    kw = dict(attention_mask=am, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    if cache == "static":
        kw["cache_implementation"] = "static"
    model.set_attn_implementation("eager")
    eager = model.generate(ids, **kw)
    cap = CaptureAttention(monkeypatch)
    model.set_attn_implementation("fastattn")
    ours = model.generate(ids, **kw)
    assert torch.equal(ours, eager), f"{kind}/{cache}: tokens differ\n{eager}\n{ours}"
    decode = [c for c in cap.calls if c[1] == 1]
    assert decode, "no Lq=1 decode step reached the fused path"
    assert all("bottom_right" in c[0] for c in decode)
    if kind == "llama":
        assert all(c[3] == 4 and c[4] == 2 for c in cap.calls), "GQA must reach the kernel unrepeated"
    if cache == "static":  # decode: the whole cache with `kv_idx <= offset` folded into the key mask on the
        # device (the offset is never read on the host); the kernels skip the unwritten slots themselves
        assert all(c[2] <= 7 + 6 for c in cap.calls) and len({c[2] for c in decode}) == 1
        assert all("key_mask" in c[0] for c in decode)


def test_llama_gqa_logits_match_eager():
    model = tiny_model("llama")
    ids, am = padded_batch(3, 8, "left", seed=10)
    ref = run(float64_copy(model), "sdpa", input_ids=ids, attention_mask=am).logits
    naive = run(model, "eager", input_ids=ids, attention_mask=am).logits
    ours = run(model, "fastattn", input_ids=ids, attention_mask=am).logits
    check_model_rule(ours, naive, ref, am, "llama-gqa")


def test_sliding_window_model_matches_eager():
    from transformers import MistralConfig, MistralForCausalLM
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=64, sliding_window=3, pad_token_id=0)
    model = MistralForCausalLM(cfg).eval()
    ids, am = padded_batch(2, 8, "left", seed=11)
    ref = run(float64_copy(model), "sdpa", input_ids=ids, attention_mask=am).logits
    naive = run(model, "eager", input_ids=ids, attention_mask=am).logits
    ours = run(model, "fastattn", input_ids=ids, attention_mask=am).logits
    check_model_rule(ours, naive, ref, am, "mistral-sliding-window")


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_output_attentions_returns_eager_weights(kind):
    model = tiny_model(kind)
    ids, am = padded_batch(2, 7, "left" if kind == "gpt2" else "right", seed=12)
    eager = run(model, "eager", input_ids=ids, attention_mask=am, output_attentions=True)
    ours = run(model, "fastattn", input_ids=ids, attention_mask=am, output_attentions=True)
    assert len(ours.attentions) == len(eager.attentions) == 2
    rows = am.bool()[:, None, :, None]  # valid query rows
    for a, e in zip(ours.attentions, eager.attentions):
        assert a.shape == e.shape
        torch.testing.assert_close(a * rows, e * rows, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_training_gradients_match_eager(kind):
    model = tiny_model(kind).train()  # dropout probabilities are 0 in the tiny configs
    ids, am = padded_batch(3, 8, "left" if kind == "gpt2" else "holes", seed=13)
    valid = am.bool().unsqueeze(-1)

    def grads(m, impl):
        m.set_attn_implementation(impl)
        m.zero_grad(set_to_none=True)
        out = m(input_ids=ids, attention_mask=am)
        h = out.logits if kind == "gpt2" else out.last_hidden_state
        (h * valid).pow(2).sum().backward()
        return {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}

    ref = grads(float64_copy(model).train(), "sdpa")
    naive = grads(model, "eager")
    ours = grads(model, "fastattn")
    assert ours.keys() == naive.keys() and len(ours) > 10
    for n in ours:
        assert_close(ours[n], ref[n], naive[n], torch.float32, name=f"{kind}-grad-{n}", factor=3.0)


@pytest.mark.skipif(fastattn.available_backends()["triton"] is not None,
                    reason="the triton backend is not usable here")
@pytest.mark.parametrize("kind,pattern", [("bert", "right"), ("gpt2", "left")])
def test_triton_backend_through_hf(kind, pattern, monkeypatch):
    model = tiny_model(kind)
    ids, am = padded_batch(2, 6, pattern, seed=14)
    ref = run(float64_copy(model), "sdpa", input_ids=ids, attention_mask=am)
    naive = run(model, "eager", input_ids=ids, attention_mask=am)
    monkeypatch.setenv("FASTATTN_BACKEND", "triton")
    ours = run(model, "fastattn", input_ids=ids, attention_mask=am)
    key = "logits" if kind == "gpt2" else "last_hidden_state"
    check_model_rule(ours[key], naive[key], ref[key], am, f"triton-{kind}-{pattern}")


@pytest.mark.skipif(fastattn.available_backends()["triton"] is not None,
                    reason="the triton backend is not usable here")
def test_triton_backend_generate_left_padded(monkeypatch):
    """Lq=1 decode with a key mask through the Triton kernel (interpreter on CPU)."""
    model = tiny_model("gpt2")
    ids, am = padded_batch(2, 5, "left", seed=15)
    kw = dict(attention_mask=am, max_new_tokens=3, do_sample=False, pad_token_id=0, eos_token_id=None)
    eager = model.generate(ids, **kw)
    monkeypatch.setenv("FASTATTN_BACKEND", "triton")
    model.set_attn_implementation("fastattn")
    assert torch.equal(model.generate(ids, **kw), eager)


@pytest.mark.parametrize("over", [{"scale_attn_weights": False}, {"scale_attn_by_inverse_layer_idx": True}],
                         ids=["scale_attn_weights_false", "inverse_layer_idx"])
def test_gpt2_scaling_variants_match_eager(over, monkeypatch):
    """HF's ``scaling`` is used exactly as given (GPT-2 unscaled weights, layer-index scaling)."""
    model = tiny_model("gpt2", **over)
    ids, am = padded_batch(2, 9, "left", seed=11)
    ref = run(float64_copy(model), "eager", input_ids=ids, attention_mask=am).logits
    naive = run(model, "eager", input_ids=ids, attention_mask=am).logits
    ours = run(model, "fastattn", input_ids=ids, attention_mask=am).logits
    check_model_rule(ours, naive, ref, am, f"gpt2-{next(iter(over))}")
    default = run(tiny_model("gpt2"), "fastattn", input_ids=ids, attention_mask=am).logits
    assert not torch.allclose(default, ours), "the scaling variant must change the result"

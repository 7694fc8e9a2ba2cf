"""Helpers for fastattn's Hugging Face tests (``tests/test_hf_*.py``, ``tests/gpu/test_hf_gpu.py``):
tiny random models built in-process (no hub), padded batches, and the model-level numerics rule
(DESIGN.md: 3x the plain same-dtype error against a float64 run of the same model, valid positions only).
Not part of the public API."""

from __future__ import annotations

import copy

import torch

from ..testing import assert_close

VOCAB = 64


def tiny_config(kind: str, **over):
    from transformers import (BertConfig, DistilBertConfig, ElectraConfig, GPT2Config, LlamaConfig,
                              Qwen2Config, RobertaConfig)
    common = dict(vocab_size=VOCAB, pad_token_id=0)
    if kind == "bert":
        cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                         max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         **common)
    elif kind == "roberta":
        cfg = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                            max_position_embeddings=80, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            vocab_size=VOCAB, pad_token_id=1)
    elif kind == "distilbert":
        cfg = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64,
                               dropout=0.0, attention_dropout=0.0, **common)
    elif kind == "electra":
        cfg = ElectraConfig(embedding_size=24, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, **common)
    elif kind == "gpt2":
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, **common)
    elif kind == "llama":  # GQA: 4 query heads share 2 KV heads
        cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                          **common)
    elif kind == "qwen2":  # GQA 4/2 and biased q/k/v projections
        cfg = Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                          **common)
    else:
        raise ValueError(kind)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(kind: str, cls=None, seed: int = 0, **over):
    from transformers import (AutoModel, GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM)
    torch.manual_seed(seed)
    cfg = tiny_config(kind, **over)
    if cls is None:
        cls = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM}.get(kind)
    model = cls(cfg) if cls is not None else AutoModel.from_config(cfg)
    model.set_attn_implementation("eager")
    return model.eval()


def padded_batch(B: int, L: int, pattern: str, seed: int = 0):
    """``(input_ids, attention_mask)``: ``pattern`` ``right``/``left``/``holes``/``none``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, L), generator=g)
    am = torch.ones(B, L, dtype=torch.long)
    for b in range(B):
        n = (b * 3) % (L - 1)  # 0, 3, 6, ... padded positions (always >= 1 valid token)
        if pattern == "right" and n:
            am[b, L - n:] = 0
        elif pattern == "left" and n:
            am[b, :n] = 0
        elif pattern == "holes":
            holes = torch.rand(L, generator=g) < 0.3
            holes[0] = False
            am[b, holes] = 0
    ids = ids.masked_fill(am == 0, 0)
    return ids, am


def run(model, impl: str, **inputs):
    """Forward with the given attention implementation (``"fastattn"`` optimises attention only)."""
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(**inputs)


def check_model_rule(ours: torch.Tensor, naive: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor, name: str,
                     dtype: torch.dtype = torch.float32):
    """DESIGN.md model-level rule: max|ours - ref| <= 3 max|naive - ref| + floor on valid positions."""
    while valid.dim() < ours.dim():
        valid = valid.unsqueeze(-1)
    return assert_close(ours, ref, naive, dtype, name=name, factor=3.0, valid=valid.bool())


def float64_copy(model):
    """The float64 reference model. It runs HF's ``sdpa`` implementation: HF's eager path is unusable in
    float64 with padding (its ``finfo(float64).min`` mask becomes ``-inf`` in a float32 softmax, a padded
    query row turns NaN, and 0 * NaN reaches valid rows through V)."""
    m = copy.deepcopy(model).double()
    m.set_attn_implementation("sdpa")
    return m


class CaptureAttention:
    """Records the normalised inputs of every fused attention call (mask form, key length, heads)."""

    def __init__(self, monkeypatch):
        from ..attention import api
        self.calls = []
        orig = api.attention_normalized

        def spy(inp, *a, **kw):
            self.calls.append((inp.mask.describe(), inp.Lq, inp.Lk, inp.Hq, inp.Hkv, inp.dropout_p,
                               inp.key.data_ptr()))
            return orig(inp, *a, **kw)
        monkeypatch.setattr(api, "attention_normalized", spy)

    def masks(self):
        return {c[0] for c in self.calls}


__all__ = ["tiny_config", "tiny_model", "padded_batch", "run", "check_model_rule", "float64_copy",
           "CaptureAttention", "VOCAB"]

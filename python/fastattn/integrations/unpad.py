"""Whole-encoder unpadding for the BERT family (``fastattn.optimize(model, unpad=True)``).

The encoder instance (``BertEncoder``, ``RobertaEncoder``, ``XLMRobertaEncoder``, ``CamembertEncoder``,
``ElectraEncoder``, and DistilBERT's ``Transformer``, whose blocks take ``(hidden_states, attention_mask,
**kwargs)``: its layout is checked when ``optimize`` runs, and an unknown one keeps the padded encoder
with a report line) gets an instance ``forward`` that:

1. gathers the valid tokens once, right after the embeddings: ``(B, S, hidden) -> (1, T, hidden)`` rows,
   T = number of non-pad tokens, with ``cu_seqlens`` / ``max_seqlen`` computed once per forward (the
   forward's only host reads: the longest length, and the gather's ``nonzero``);
2. runs every layer unchanged on those rows -- the Linear projections, the feed-forward (stock or
   fastattn's swapped modules), dropout and LayerNorm are row-wise; the attention gets HF's packed-
   sequence kwargs (``cu_seq_lens_q/k``, ``max_length_q/k``) and the ``"fastattn"`` attention function
   runs :func:`fastattn.attention_varlen` (each sequence attends to its own tokens only): on CUDA tensors
   one launch of the Triton varlen kernel per layer, with no host sync, where it runs the call (inference
   and training: the varlen backward and dropout are fused too);
3. scatters back once at the encoder's output: **pad positions of the returned hidden states are 0**
   (``last_hidden_state`` and every ``output_hidden_states`` entry after the embeddings; the first entry
   is the embedding output itself). Valid positions match eager within the model-level rule.

A BERT pooler (and DistilBERT's sequence-classification head) reads token 0: with left padding token 0
is a pad, whose hidden state is now 0 (eager gives it a meaningless value computed from a pad query), so
pooled outputs of left-padded sequences differ from eager; right padding (BERT tokenizers' default) is
unaffected.

Per call, the stock (padded) encoder runs instead when unpadding cannot apply exactly: no padding
mask (nothing to remove), ``output_attentions=True`` (the weights are ``(B, H, S, S)``), a dense 4-D mask,
cross-attention / a cache (decoder use), a ``head_mask``, gradient checkpointing in training (where the
encoder itself carries the flag: DistilBERT's ``Transformer``; BERT's layers carry it and checkpoint the
packed rows), a chunked feed-forward (``chunk_size_feed_forward``) whose chunk does not divide the number of
valid tokens, or an attention implementation other than ``"fastattn"`` at call time.
"""

from __future__ import annotations

import inspect
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn


def _collector():
    try:
        from transformers.utils.output_capturing import _active_collector
        return _active_collector.get()
    except Exception:  # noqa: BLE001 - another layout: no capture to fix up
        return None


def _attentions_requested(kwargs) -> bool:
    if kwargs.get("output_attentions"):
        return True
    c = _collector()
    return bool(c) and ("attentions" in c or "cross_attentions" in c)


def _padding_mask(attention_mask, B: int, S: int) -> Optional[torch.Tensor]:
    """The ``(B, S)`` bool key-padding mask the encoder can unpad with, or None (run the stock encoder)."""
    from .hf_attention import _SPEC_ATTR
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
        return None
    spec = getattr(attention_mask, _SPEC_ATTR, None)
    if spec is None or spec.causal or spec.full or tuple(attention_mask.shape) != (B, S):
        return None
    return attention_mask if attention_mask.dtype == torch.bool else attention_mask.bool()


def _device_wants_unpad(encoder, hidden_states) -> bool:
    """CPU tensors always; CUDA ones unless the forward records grad (padded and varlen attention both have
    fused Triton backwards, neither yet timed on a GPU: the padded encoder stays the default for CUDA
    training until a run compares them) -- or always with ``unpad="always"``."""
    if encoder.__dict__.get("_fastattn_unpad_always", False) or hidden_states.device.type != "cuda":
        return True
    return not (torch.is_grad_enabled() and hidden_states.requires_grad)


def _config(encoder):
    """The model config the encoder's layers read (BERT-style encoders hold it; DistilBERT's ``Transformer``
    does not, so ``swap_unpad`` records it on the instance)."""
    cfg = getattr(encoder, "config", None)
    return cfg if cfg is not None else encoder.__dict__.get("_fastattn_config")


def _valid_tokens(encoder, hidden_states: torch.Tensor, attention_mask, kwargs) -> Optional[torch.Tensor]:
    """The ``(B, S)`` bool mask of the tokens to run, or None: this call runs the stock (padded) encoder."""
    if not (_device_wants_unpad(encoder, hidden_states) and kwargs.get("head_mask") is None
            and getattr(_config(encoder), "_attn_implementation", None) == "fastattn"
            and not (encoder.training and getattr(encoder, "gradient_checkpointing", False))
            and not _attentions_requested(kwargs)):
        return None
    B, S, _ = hidden_states.shape
    return _padding_mask(attention_mask, B, S)


def _run_packed(encoder, hidden_states: torch.Tensor, valid: torch.Tensor, kwargs, call_layer) -> Optional[torch.Tensor]:
    """Gather the valid tokens to ``(1, T, hidden)``, run every layer through ``call_layer(layer, x, kw)``
    with HF's packed-sequence kwargs, scatter back: returns ``last_hidden_state (B, S, hidden)`` with 0 at
    pad positions (and fixes up captured ``output_hidden_states``), or None before running anything when
    the packed rows cannot run exactly (a chunked feed-forward whose chunk does not divide T)."""
    B, S, H = hidden_states.shape
    lengths = valid.sum(1, dtype=torch.int32)
    cu = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    idx = valid.reshape(-1).nonzero().squeeze(1)
    chunk = getattr(_config(encoder), "chunk_size_feed_forward", 0) or 0
    if chunk and idx.numel() % chunk:  # HF's apply_chunking_to_forward needs T % chunk == 0
        return None
    max_len = int(lengths.max()) if B else 0
    x0 = hidden_states.reshape(B * S, H).index_select(0, idx).unsqueeze(0)  # (1, T, H)
    kwargs.pop("position_ids", None)  # (B, S): positions are already in the embeddings
    kw = dict(kwargs, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max_len, max_length_k=max_len)

    def scatter(x: torch.Tensor) -> torch.Tensor:
        return hidden_states.new_zeros(B * S, x.shape[-1]).index_copy(0, idx, x[0]).view(B, S, x.shape[-1])

    collected = _collector()
    states: Optional[List] = collected.get("hidden_states") if collected else None
    n0 = len(states) if states is not None else 0
    x = x0
    for layer in encoder.layer:
        x = call_layer(layer, x, kw)
    if states is not None:  # output_hidden_states: the hooks recorded (1, T, H) rows; give (B, S, H) back
        for i in range(n0, len(states)):
            t = states[i]
            if t is x0:
                states[i] = hidden_states  # the initial hidden state: the embedding output itself
            elif isinstance(t, torch.Tensor) and t.dim() == 3 and t.shape[:2] == (1, x0.shape[1]):
                states[i] = scatter(t)
    return scatter(x)


def unpadded_encoder_forward(self, hidden_states: torch.Tensor, attention_mask=None, encoder_hidden_states=None,
                             encoder_attention_mask=None, cache=None, use_cache=None, **kwargs):
    """Instance ``forward`` of BERT-style encoders (``BertEncoder`` and its copies)."""
    from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions
    out = None
    if encoder_hidden_states is None and cache is None and not use_cache:
        valid = _valid_tokens(self, hidden_states, attention_mask, kwargs)
        if valid is not None:
            out = _run_packed(self, hidden_states, valid, kwargs,
                              lambda layer, x, kw: layer(x, None, None, encoder_attention_mask=None, cache=None, **kw))
    if out is None:
        return type(self).forward(self, hidden_states, attention_mask=attention_mask,
                                  encoder_hidden_states=encoder_hidden_states,
                                  encoder_attention_mask=encoder_attention_mask, cache=cache, use_cache=use_cache,
                                  **kwargs)
    return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=out, cache=None)


def unpadded_distilbert_forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs):
    """Instance ``forward`` of DistilBERT's ``Transformer``: its blocks take ``(hidden_states,
    attention_mask, **kwargs)`` and return the hidden states (checked by :func:`_distilbert_layout`)."""
    from transformers.modeling_outputs import BaseModelOutput
    out = None
    valid = _valid_tokens(self, hidden_states, attention_mask, kwargs)
    if valid is not None:
        out = _run_packed(self, hidden_states, valid, kwargs, lambda layer, x, kw: layer(x, None, **kw))
    if out is None:
        return type(self).forward(self, hidden_states, attention_mask=attention_mask, **kwargs)
    return BaseModelOutput(last_hidden_state=out)


def _params(fn) -> Optional[List[str]]:
    """Parameter names after ``self`` (``**kwargs`` as ``"**"``), following ``functools.wraps``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    names = ["**" if p.kind is p.VAR_KEYWORD else p.name for p in sig.parameters.values()]
    return names[1:]


def _distilbert_layout(encoder: nn.Module) -> Optional[str]:
    """None if DistilBERT's ``Transformer`` has the layout :func:`unpadded_distilbert_forward` is written
    for (transformers 5.x: blocks ``(hidden_states, attention_mask, **kwargs) -> hidden_states``, the
    attention through ``AttentionInterface``), else why not."""
    expected = ["hidden_states", "attention_mask", "**"]
    if _params(type(encoder).forward) != expected:
        return f"Transformer.forward takes {_params(type(encoder).forward)}, not {expected}"
    for layer in encoder.layer:
        if _params(type(layer).forward) != expected:
            return f"{type(layer).__name__}.forward takes {_params(type(layer).forward)}, not {expected}"
        attn = getattr(layer, "attention", None)
        if attn is None or _params(type(attn).forward) != expected:
            return f"{type(layer).__name__}.attention does not take (hidden_states, attention_mask, **kwargs)"
    return None


#: model_type -> (encoder class name whose instance forward is replaced, that forward, layout check)
_ENCODER_FORWARDS = {
    "bert": ("BertEncoder", unpadded_encoder_forward, None),
    "roberta": ("RobertaEncoder", unpadded_encoder_forward, None),
    "xlm-roberta": ("XLMRobertaEncoder", unpadded_encoder_forward, None),
    "camembert": ("CamembertEncoder", unpadded_encoder_forward, None),
    "electra": ("ElectraEncoder", unpadded_encoder_forward, None),
    "distilbert": ("Transformer", unpadded_distilbert_forward, _distilbert_layout),
}
#: model_type -> encoder class name whose instance forward is replaced
ENCODERS = {k: v[0] for k, v in _ENCODER_FORWARDS.items()}


def swap_unpad(model: nn.Module, state, always: bool = False) -> None:
    """Give the model's encoder(s) the unpadded forward (instance attribute, recorded in ``state`` for
    ``revert``), or say in ``state.report`` why not. Unless ``always``, a CUDA forward that records grad
    runs the stock padded encoder: its fused backward is the one measured on a GPU (the varlen attention's
    fused backward exists but is not yet timed against it); measured on CPU, unpadding pays
    for inference and training alike (1.4-1.6x, ``benchmarks/results/cpu``), so CPU tensors always unpad."""
    import types
    model_type = getattr(model.config, "model_type", None)
    cls_name, forward, layout = _ENCODER_FORWARDS.get(model_type, (None, None, None))
    if cls_name is None:
        state.report.append(f"unpad: not applied: no unpadded encoder for model_type {model_type!r} "
                            f"(supported: {', '.join(sorted(ENCODERS))})")
        return
    if getattr(model.config, "is_decoder", False):
        state.report.append(f"unpad: not applied: {model_type} is configured as a decoder (is_decoder=True)")
        return
    n = 0
    for m in model.modules():
        if type(m).__name__ == cls_name and isinstance(getattr(m, "layer", None), nn.ModuleList) \
                and "forward" not in m.__dict__:
            why = layout(m) if layout is not None else None
            if why is not None:  # another transformers version's layout: keep the stock (padded) encoder
                state.report.append(f"unpad: not applied: {type(model).__name__}'s {cls_name} has a layout this "
                                    f"fastattn does not know ({why}); it runs padded")
                return
            m.forward = types.MethodType(forward, m)
            m._fastattn_unpad_always = always
            state.patched.append((m, "forward"))
            state.patched.append((m, "_fastattn_unpad_always"))
            if getattr(m, "config", None) is None:
                m._fastattn_config = model.config
                state.patched.append((m, "_fastattn_config"))
            n += 1
    if n:
        where = "on every device" if always else ("on CPU and for CUDA forwards without grad (CUDA training keeps "
                                                  "the padded encoder and its fused backward; unpad='always' "
                                                  "forces it)")
        state.report.append(f"unpad: {cls_name} x{n} runs on the valid tokens only {where} (pad positions of "
                            "returned hidden states are 0)")
    else:
        state.report.append(f"unpad: not applied: no {cls_name} found in {type(model).__name__}")

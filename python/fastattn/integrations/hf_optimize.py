"""``fastattn.optimize(model)`` / ``fastattn.revert(model)`` for Hugging Face models.

``optimize`` works on a live model, in place:

* attention: ``model.set_attn_implementation("fastattn")`` (public API in transformers 5.17+). Models
  whose attention does not go through ``AttentionInterface`` (GPT-Neo's hard-coded attention, ...) keep
  their attention; one log line says so.
* feed-forward: a registry keyed by ``config.model_type`` names, per module class, which method to swap
  and with what. The replacement is an instance attribute (``module.forward`` / ``module.ff_chunk``) that
  reads the module's own Parameters: no module is replaced, no Parameter is created or copied, so
  ``state_dict`` keys/shapes, tied weights and ``save_pretrained`` are exactly those of the stock class.
  The activation comes from the config name through ``fastattn.ffn.problem.HF_ACTIVATIONS`` (``gelu`` ->
  exact erf GELU, ``gelu_new``/``gelu_pytorch_tanh`` -> tanh GELU); an unknown activation or family leaves
  the FFN alone with one log line.
* never slower: ``ffn=True`` swaps a module only where the FFN backend inference would run on its
  weights' device and dtype is at least as fast as the stock module
  (:func:`fastattn.ffn.swap_decision`); on a CPU, where only the ``torch`` backend runs (the same math
  plus fastattn's dispatch), the stock modules stay and the report says why. ``ffn="always"`` swaps every
  supported module anyway (to read the fused path's numerics on any device); ``ffn=False`` none.

``revert`` deletes the instance attributes and restores every config's attention implementation, so
the model computes bit-exactly what it computed before ``optimize``.

Per call, the swapped forwards run the stock code instead when a fused kernel cannot apply exactly:
under ``torch.autocast`` (HF relies on autocast casting each ``Linear``); when activations and weights
have different dtypes or devices; when a submodule is no longer the plain ``nn.Linear`` / ``Conv1D`` /
``nn.LayerNorm`` it was (a PEFT LoRA layer wrapped around it after ``optimize``, a quantised subclass,
forward/backward hooks, an instance ``forward`` such as accelerate's offload hook): the stock forward calls
the submodule, so the adapter is applied and trained; and (``ffn=True``) when autograd needs the call and
the chosen backend has no fused backward (the recompute would be slower than stock).
"""

from __future__ import annotations

import logging
import types
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

logger = logging.getLogger("fastattn")

_STATE_ATTR = "_fastattn_state"


# ----------------------------------------------------------------------------------- swapped forwards
def _plain(m: nn.Module, cls: type) -> bool:
    """``m`` is exactly ``cls``, computes nothing extra around its forward: no hooks, no instance
    ``forward``. Anything else (a PEFT adapter layer, a quantised subclass, accelerate's offload hook) is
    called as a module by the stock forward."""
    return (type(m) is cls and not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
            and not m._backward_pre_hooks and "forward" not in m.__dict__)


def _use_stock(module: nn.Module, x: torch.Tensor, parts: Tuple[Tuple[str, type], ...], grad_stock: bool) -> bool:
    """Run HF's own code for this call (exactly what the unoptimised model computes)."""
    first = getattr(module, parts[0][0])
    w = getattr(first, "weight", None)
    if not isinstance(w, torch.Tensor) or torch.is_autocast_enabled(x.device.type) or x.dtype != w.dtype \
            or x.device != w.device:
        return True
    if not all(_plain(getattr(module, name), cls) for name, cls in parts):
        return True
    return grad_stock and torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def _bert_intermediate(approximate: str, grad_stock: bool) -> Callable:
    """``BertIntermediate``: ``act(dense(x))`` -> ``linear_gelu``."""
    from ..ffn_blocks import linear_gelu
    parts = (("dense", nn.Linear),)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if _use_stock(self, hidden_states, parts, grad_stock):
            return type(self).forward(self, hidden_states)
        return linear_gelu(hidden_states, self.dense.weight, self.dense.bias, approximate=approximate)
    return forward


def _bert_output(approximate: Optional[str], grad_stock: bool) -> Callable:
    """``BertOutput`` / ``BertSelfOutput``: ``LayerNorm(dropout(dense(x)) + input)`` ->
    ``linear_residual`` then ``residual_layernorm``, with HF's dropout between them in training."""
    from ..ffn_blocks import linear_residual, residual_layernorm
    parts = (("dense", nn.Linear), ("LayerNorm", nn.LayerNorm))

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        if _use_stock(self, hidden_states, parts, grad_stock):
            return type(self).forward(self, hidden_states, input_tensor)
        h = linear_residual(hidden_states, self.dense.weight, self.dense.bias, None)
        if self.training and self.dropout.p > 0:
            h = self.dropout(h)
        ln = self.LayerNorm
        return residual_layernorm(h, input_tensor, ln.weight, ln.bias, ln.eps)
    return forward


def _gelu_mlp(fc: str, proj: str, conv1d: bool, method: str) -> Callable[[str, bool], Callable]:
    """A whole ``proj(act(fc(x)))`` then ``dropout`` module -> ``fastattn.gelu_ffn``. ``conv1d``: GPT-2's
    ``Conv1D`` stores ``(in, out)``; its ``.weight.t()`` view is the ``nn.Linear`` layout (no copy)."""

    def make(approximate: str, grad_stock: bool) -> Callable:
        from ..ops import gelu_ffn
        cls = _conv1d_type() if conv1d else nn.Linear
        parts = ((fc, cls), (proj, cls))

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            if _use_stock(self, hidden_states, parts, grad_stock):
                return getattr(type(self), method)(self, hidden_states)
            a, b = getattr(self, fc), getattr(self, proj)
            w1 = a.weight.t() if conv1d else a.weight
            w2 = b.weight.t() if conv1d else b.weight
            y = gelu_ffn(hidden_states, w1, a.bias, w2, b.bias, approximate=approximate)
            return self.dropout(y)  # nn.Dropout: identity in eval, HF's dropout in training
        return forward
    return make


# --------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Patch:
    method: str                                  # the method replaced on the instance
    make: Callable[[str, bool], Callable]        # (approximate, stock when autograd needs it) -> replacement
    check: Callable[[nn.Module], Optional[str]]  # None if this instance has the expected structure
    linear: str                                  # the first projection (its weight decides where to swap)
    conv1d: bool = False                         # that projection is a Conv1D ((in, out) weight)
    act_attr: Optional[str] = None               # the module attribute holding its activation


@dataclass(frozen=True)
class FFNFamily:
    """How to swap one model family's feed-forward: the config field naming the activation and, per
    module class name, the patch."""

    act_config_field: str
    patches: Dict[str, _Patch] = field(default_factory=dict)


def _has(*spec: Tuple[str, type]) -> Callable[[nn.Module], Optional[str]]:
    def check(m: nn.Module) -> Optional[str]:
        for name, cls in spec:
            sub = getattr(m, name, None)
            if cls is nn.Dropout:
                if not isinstance(sub, cls):
                    return f"{type(m).__name__}.{name} is not a {cls.__name__}"
            elif not _plain(sub, cls):
                what = "missing" if sub is None else f"a {type(sub).__module__}.{type(sub).__name__}"
                return (f"{type(m).__name__}.{name} is {what}, not a plain {cls.__name__} (an adapter such as a PEFT "
                        "LoRA layer, a subclass, or hooks): the stock forward runs it")
        ln = getattr(m, "LayerNorm", None)
        if ln is not None and len(ln.normalized_shape) != 1:
            return f"{type(m).__name__}.LayerNorm normalises over {tuple(ln.normalized_shape)}, not the last dim"
        return None
    return check


def _bert_family(prefix: str) -> Dict[str, _Patch]:
    inter = _Patch("forward", _bert_intermediate, _has(("dense", nn.Linear)), "dense", act_attr="intermediate_act_fn")
    out = _Patch("forward", _bert_output,
                 _has(("dense", nn.Linear), ("LayerNorm", nn.LayerNorm), ("dropout", nn.Dropout)), "dense")
    return {f"{prefix}Intermediate": inter, f"{prefix}Output": out, f"{prefix}SelfOutput": out}


def _conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D
        return Conv1D
    except ImportError:  # pragma: no cover
        return nn.Module


def _build_registry() -> Dict[str, FFNFamily]:
    conv1d = _conv1d_type()
    gpt2_mlp = _Patch("forward", _gelu_mlp("c_fc", "c_proj", True, "forward"),
                      _has(("c_fc", conv1d), ("c_proj", conv1d), ("dropout", nn.Dropout)), "c_fc", True, act_attr="act")
    neo_mlp = _Patch("forward", _gelu_mlp("c_fc", "c_proj", False, "forward"),
                     _has(("c_fc", nn.Linear), ("c_proj", nn.Linear), ("dropout", nn.Dropout)), "c_fc", act_attr="act")
    # DistilBERT's FFN module is lin1 -> act -> lin2 -> dropout (the residual + LayerNorm live in its
    # TransformerBlock); its forward only chunks, so the per-chunk method is the one swapped.
    distil_ffn = _Patch("ff_chunk", _gelu_mlp("lin1", "lin2", False, "ff_chunk"),
                        _has(("lin1", nn.Linear), ("lin2", nn.Linear), ("dropout", nn.Dropout)), "lin1",
                        act_attr="activation")
    return {
        "bert": FFNFamily("hidden_act", _bert_family("Bert")),
        "roberta": FFNFamily("hidden_act", _bert_family("Roberta")),
        "xlm-roberta": FFNFamily("hidden_act", _bert_family("XLMRoberta")),
        "camembert": FFNFamily("hidden_act", _bert_family("Camembert")),
        "electra": FFNFamily("hidden_act", _bert_family("Electra")),
        "distilbert": FFNFamily("activation", {"FFN": distil_ffn}),
        "gpt2": FFNFamily("activation_function", {"GPT2MLP": gpt2_mlp}),
        "gpt_neo": FFNFamily("activation_function", {"GPTNeoMLP": neo_mlp}),
    }


_REGISTRY: Optional[Dict[str, FFNFamily]] = None


def ffn_registry() -> Dict[str, FFNFamily]:
    """``model_type -> FFNFamily`` (built on first use; add entries to support more families)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _build_registry()
    return _REGISTRY


def _activation_matches(module: nn.Module, act_attr: Optional[str], name: str) -> Optional[str]:
    """None if the module's live activation is the one the config names, else why not."""
    if act_attr is None:
        return None
    from transformers.activations import ACT2CLS
    expected = ACT2CLS.get(name)
    expected = expected[0] if isinstance(expected, tuple) else expected
    act = getattr(module, act_attr, None)
    if expected is None or type(act) is not expected:
        return (f"{type(module).__name__}.{act_attr} is {type(act).__name__}, not the {name!r} activation "
                f"({getattr(expected, '__name__', '?')}) its config names")
    return None


# --------------------------------------------------------------------------------- optimize / revert
@dataclass
class _State:
    configs: List[Tuple[object, object]] = field(default_factory=list)   # (config, original attn impl)
    patched: List[Tuple[nn.Module, str]] = field(default_factory=list)   # (module, method name)
    report: List[str] = field(default_factory=list)


def _all_configs(model) -> List[object]:
    """Every config reachable from the model (its own, sub-configs, sub-models'), each once."""
    seen, out = set(), []

    def visit(cfg):
        if cfg is None or id(cfg) in seen:
            return
        seen.add(id(cfg))
        out.append(cfg)
        for key in getattr(cfg, "sub_configs", {}) or {}:
            visit(getattr(cfg, key, None))

    visit(getattr(model, "config", None))
    for m in model.modules():
        visit(getattr(m, "config", None) if hasattr(m, "set_attn_implementation") else None)
    return out


def _swap_attention(model, state: _State) -> None:
    from .hf_attention import NAME
    from . import register
    register()
    for cfg in _all_configs(model):
        state.configs.append((cfg, getattr(cfg, "_attn_implementation_internal", None)))
    name = type(model).__name__
    if not hasattr(model, "set_attn_implementation"):
        state.report.append(f"attention: not swapped: {name} has no set_attn_implementation "
                            "(transformers >= 5.17 is needed)")
        return
    model.set_attn_implementation(NAME)
    if model.config._attn_implementation != NAME:
        state.report.append(f"attention: not swapped: {name} does not route its attention through "
                            "transformers' AttentionInterface (hard-coded attention, e.g. GPT-Neo); it keeps "
                            f"{model.config._attn_implementation!r}")
    else:
        state.report.append(f"attention: {name} uses attn_implementation='fastattn'")


def _swap_ffn(model, state: _State, mode) -> None:
    from ..ffn import swap_decision
    from ..ffn.problem import HF_ACTIVATIONS, Activation
    model_type = getattr(model.config, "model_type", None)
    family = ffn_registry().get(model_type)
    if family is None:
        state.report.append(f"ffn: not swapped: no fastattn feed-forward for model_type {model_type!r} "
                            f"(supported: {', '.join(sorted(ffn_registry()))}); attention only")
        return
    act_name = getattr(model.config, family.act_config_field, None)
    act = Activation.from_hf(act_name)
    if act is None:
        state.report.append(f"ffn: not swapped: activation {family.act_config_field}={act_name!r} has no fused "
                            f"GELU (supported: {', '.join(HF_ACTIVATIONS)})")
        return
    approximate = act.approximate
    counts: Dict[str, int] = {}
    kept: Dict[str, int] = {}
    kept_why: List[str] = []
    skipped: List[str] = []
    makes: Dict[Tuple[int, bool], Callable] = {}
    for module in model.modules():
        patch = family.patches.get(type(module).__name__)
        if patch is None:
            continue
        name = type(module).__name__
        why = patch.check(module) or _activation_matches(module, patch.act_attr, act_name)
        if why is not None:
            skipped.append(why)
            continue
        grad_stock = mode != "always"
        if mode != "always":
            w = getattr(module, patch.linear).weight
            decision = swap_decision(w.t() if patch.conv1d else w, act)
            if decision.why_not is not None:
                kept[name] = kept.get(name, 0) + 1
                kept_why.append(decision.why_not)
                continue
            grad_stock = not decision.fused_backward
        key = (id(patch), grad_stock)
        if key not in makes:
            makes[key] = patch.make(approximate, grad_stock)
        setattr(module, patch.method, types.MethodType(makes[key], module))
        state.patched.append((module, patch.method))
        counts[name] = counts.get(name, 0) + 1
    if counts:
        what = ", ".join(f"{n} x{c}" for n, c in counts.items())
        state.report.append(f"ffn: swapped {what} (activation {act_name!r} -> GELU approximate={approximate!r})")
    if kept:
        what = ", ".join(f"{n} x{c}" for n, c in kept.items())
        state.report.append(f"ffn: kept the stock {what}: " + "; ".join(dict.fromkeys(kept_why)) +
                            " (optimize swaps a feed-forward only where it is at least as fast; ffn='always' "
                            "swaps it anyway; after moving the model to a GPU, call optimize again)")
    if not counts and not kept:
        if skipped:
            state.report.append(f"ffn: not swapped: each of the {len(skipped)} {'/'.join(sorted(family.patches))} "
                                "modules was left as is (reasons below)")
        else:
            state.report.append(f"ffn: not swapped: no module of model_type {model_type!r} matched "
                                f"{sorted(family.patches)}")
    for why in dict.fromkeys(skipped):
        state.report.append(f"ffn: left as is: {why}")


def optimize(model, *, attention: bool = True, ffn=True, unpad=True):
    """Swap fastattn into a Hugging Face ``PreTrainedModel`` in place and return it.

    ``unpad`` (BERT family and DistilBERT, with ``attention=True``): the encoder runs on the valid tokens only, gathered
    once after the embeddings and scattered back once at its output; pad positions of returned hidden
    states are 0 (see :mod:`fastattn.integrations.unpad`). It runs on CPU tensors (inference and
    training: measured 1.4-1.6x on a BERT-base batch with 29 % padding) and for CUDA forwards without
    grad; a CUDA forward that records grad keeps the padded encoder (both have fused Triton backwards;
    neither is yet timed on a GPU, and the padded one is the default until a run compares them) unless
    ``unpad="always"``. ``unpad=False`` keeps padded execution.

    ``attention``: ``model.set_attn_implementation("fastattn")``. ``ffn``: swap the feed-forward of the
    supported families (``ffn_registry()``: BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA, DistilBERT, GPT-2,
    GPT-Neo): ``True`` only where the fused path is at least as fast as the stock module on the weights'
    device (never on a CPU), ``"always"`` everywhere, ``False`` nowhere. Calling it again first reverts.
    What was and was not swapped is logged (logger ``"fastattn"``) and returned by :func:`describe`.
    """
    from . import check_transformers_version
    check_transformers_version()
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model must be a Hugging Face PreTrainedModel, got {type(model).__name__}")
    if ffn not in (True, False, "always"):
        raise ValueError(f"ffn must be True (swap where faster), 'always' or False, got {ffn!r}")
    if getattr(model, _STATE_ATTR, None) is not None:
        revert(model)
    state = _State()
    try:
        if attention:
            _swap_attention(model, state)
        if ffn:
            _swap_ffn(model, state, ffn)
        if unpad:
            if attention and model.config._attn_implementation == "fastattn":
                from .unpad import swap_unpad
                swap_unpad(model, state, always=unpad == "always")
            else:
                state.report.append("unpad: not applied: it needs the fastattn attention (attention=True)")
    except Exception:
        _undo(model, state)
        raise
    object.__setattr__(model, _STATE_ATTR, state)
    for line in state.report:
        (logger.info if "not swapped" not in line and "left as is" not in line and "not applied" not in line
         else logger.warning)(
            f"fastattn.optimize: {line}")
    return model


def _undo(model, state: _State) -> None:
    for module, method in reversed(state.patched):
        if method in module.__dict__:
            delattr(module, method)
    if state.configs:
        top = state.configs[0][1]
        if hasattr(model, "set_attn_implementation") and top is not None:
            try:
                model.set_attn_implementation(top)
            except Exception as e:  # noqa: BLE001 - the exact restore below does not depend on it
                logger.debug(f"fastattn.revert: set_attn_implementation({top!r}) failed ({e}); restoring directly")
        for cfg, impl in state.configs:  # exact restore of every config, whatever the setter did
            if getattr(cfg, "_attn_implementation_internal", None) != impl:
                cfg._attn_implementation_internal = impl


def revert(model):
    """Undo :func:`optimize` exactly (original forwards and attention implementations); returns the
    model. A model that was not optimised is returned unchanged."""
    state = getattr(model, _STATE_ATTR, None)
    if state is None:
        return model
    _undo(model, state)
    object.__delattr__(model, _STATE_ATTR)
    return model


def describe(model) -> List[str]:
    """What :func:`optimize` did to this model (empty if it was not optimised)."""
    state = getattr(model, _STATE_ATTR, None)
    return list(state.report) if state is not None else []

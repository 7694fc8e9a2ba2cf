"""End-to-end Hugging Face models with random weights, built from a config in-process (no hub):

* a BERT-base-sized encoder (12 layers, 768 wide, 12 heads, FFN 3072), one forward over a padded
  batch (ragged ``attention_mask``);
* GPT-2-sized (124M) greedy generation from a left-padded batch of prompts, a fixed number of new
  tokens (``min_new_tokens = max_new_tokens``, so every provider does the same work);
* a fine-tuning step (``--preset train``): ``BertForSequenceClassification`` of BERT-base size (12 x 768,
  2 labels), fp32 weights in training mode (dropout 0.1, BERT's default), right-padded lengths evenly
  spread over [S/4, S], one timed call = ``zero_grad``, forward with the loss under
  ``torch.autocast(dtype=float16)``, ``GradScaler``-scaled backward, ``AdamW`` step (fused on CUDA),
  scaler update. The train preset's step is always fp16 autocast (what ``Trainer(fp16=True)`` runs), whatever
  ``--dtype`` says; the smoke sweep uses it too, on CPU.

Providers: HF ``eager`` and ``sdpa`` attention, ``torch.compile`` of the sdpa model,
``fastattn.optimize(model)`` (its default ``unpad=True``: the BERT encoder runs on the valid tokens only)
and ``optimize(model, unpad=False)``. Run with ``fastattn bench --suite e2e``; ``--preset unpad`` (issue
#12) is BERT-base inference at B=32, S=512, lengths evenly spread over [S/4, S], HF sdpa vs both
``optimize`` variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

from . import flops as F
from .harness import (Context, Provider, Unsupported, dtype_of, run_cases, select_providers,
                      without_triton_interpreter)

SUITE = "e2e"

PROVIDERS = [
    Provider("hf-eager", "hf", options={"attn": "eager"}),
    Provider("hf-sdpa", "hf", options={"attn": "sdpa"}),
    Provider("hf-sdpa-compile", "hf", options={"attn": "sdpa", "compile": True}),
    Provider("fastattn-optimize", "fastattn", options={"attn": "sdpa"}),
    Provider("fastattn-optimize-compile", "fastattn", options={"attn": "sdpa", "compile": True}),
    # issue #12: the same optimize() with padded execution (the unpadded encoder's share of the gain)
    Provider("fastattn-optimize-nounpad", "fastattn", options={"attn": "sdpa", "unpad": False}),
]
DEFAULTS = {
    "full": [p.name for p in PROVIDERS],
    "quick": ["hf-eager", "hf-sdpa", "fastattn-optimize"],
    "headline": ["hf-eager", "hf-sdpa", "fastattn-optimize"],
    "smoke": ["hf-eager", "hf-sdpa", "hf-sdpa-compile", "fastattn-optimize"],
    "train": ["hf-sdpa", "fastattn-optimize"],
    "unpad": ["hf-sdpa", "fastattn-optimize", "fastattn-optimize-nounpad"],
}
#: the training step's autocast dtype (issue #11: fp16 mixed precision, as HF Trainer's fp16=True)
TRAIN_DTYPE = "float16"
#: the training step's optimizer learning rate (a typical BERT fine-tuning value)
TRAIN_LR = 2e-5


@dataclass(frozen=True)
class E2ECase:
    model: str            # "bert-base" | "gpt2" | "tiny-bert" | "tiny-gpt2"
    task: str             # "forward" | "generate" | "train"
    batch: int
    seqlen: int           # tokens per sequence (prompt length for generate)
    padding: float        # nominal fraction of padded tokens
    new_tokens: int
    dtype: str            # model dtype; for "train" the autocast dtype (the weights are float32)
    len_lo: float = 0.0   # > 0: lengths evenly spread over [len_lo * S, S] instead of around 1 - padding

    @property
    def name(self) -> str:
        pad = f"-pad{round(self.padding * 100)}" if self.padding else ""
        if self.len_lo:
            pad = f"-len{round(self.len_lo * 100)}to100"
        gen = f"-new{self.new_tokens}" if self.task == "generate" else ""
        return f"{self.model}-{self.task}-b{self.batch}-s{self.seqlen}{gen}{pad}"


def e2e_cases(preset: str, dtypes: Sequence[str]) -> List[E2ECase]:
    out = []
    for dt in dtypes:
        first = dt == dtypes[0]  # the fine-tuning step has one autocast dtype (TRAIN_DTYPE), whatever --dtype lists
        if preset == "smoke":
            out += [E2ECase("tiny-bert", "forward", 2, 16, 0.25, 0, dt),
                    E2ECase("tiny-gpt2", "generate", 2, 8, 0.25, 4, dt)]
            if first:
                out.append(E2ECase("tiny-bert", "train", 2, 16, 0.0, 0, TRAIN_DTYPE, len_lo=0.25))
        elif preset == "train":  # issue #11: BERT-base fine-tuning step, S=128/512 at B=32
            if not first:
                continue
            out += [E2ECase("bert-base", "train", 32, 128, 0.0, 0, TRAIN_DTYPE, len_lo=0.25),
                    E2ECase("bert-base", "train", 32, 512, 0.0, 0, TRAIN_DTYPE, len_lo=0.25)]
        elif preset == "unpad":  # issue #12: BERT-base inference, B=32 S=512, lengths evenly over [S/4, S]
            out.append(E2ECase("bert-base", "forward", 32, 512, 0.0, 0, dt, len_lo=0.25))
        elif preset == "headline":  # issue #6: BERT-base S=128/512 at B=32, GPT-2 generate
            out += [E2ECase("bert-base", "forward", 32, 128, 0.25, 0, dt),
                    E2ECase("bert-base", "forward", 32, 512, 0.25, 0, dt),
                    E2ECase("gpt2", "generate", 8, 128, 0.25, 64, dt)]
        elif preset == "quick":
            out += [E2ECase("bert-base", "forward", 32, 128, 0.25, 0, dt),
                    E2ECase("gpt2", "generate", 8, 128, 0.25, 64, dt)]
        else:
            out += [E2ECase("bert-base", "forward", 32, 128, 0.0, 0, dt),
                    E2ECase("bert-base", "forward", 32, 128, 0.25, 0, dt),
                    E2ECase("bert-base", "forward", 8, 512, 0.25, 0, dt),
                    E2ECase("bert-base", "forward", 1, 512, 0.0, 0, dt),
                    E2ECase("gpt2", "generate", 1, 128, 0.0, 128, dt),
                    E2ECase("gpt2", "generate", 8, 128, 0.25, 128, dt),
                    E2ECase("gpt2", "generate", 32, 512, 0.25, 128, dt)]
    return out


def _config(model: str):
    from transformers import BertConfig, GPT2Config
    if model == "bert-base":
        return BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          max_position_embeddings=512)
    if model == "tiny-bert":
        return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                          vocab_size=1000, max_position_embeddings=128)
    if model == "gpt2":
        return GPT2Config()  # 124M: 12 layers, 768 wide, 12 heads, vocab 50257, 1024 positions
    if model == "tiny-gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128, bos_token_id=999,
                          eos_token_id=999)
    raise ValueError(f"unknown e2e model {model!r}")


def describe(c: E2ECase) -> dict:
    cfg = _config(c.model)
    if c.task in ("forward", "train"):
        heads, width, ffn = cfg.num_attention_heads, cfg.hidden_size, cfg.intermediate_size
        causal, seqlen_k = "none", c.seqlen
    else:
        heads, width, ffn = cfg.n_head, cfg.n_embd, cfg.n_inner or 4 * cfg.n_embd
        causal, seqlen_k = "bottom_right", c.seqlen + c.new_tokens
    lengths = _lengths(c)
    row = dict(case=c.name, dtype=c.dtype, batch=c.batch, heads_q=heads, heads_kv=heads, seqlen_q=c.seqlen,
               seqlen_k=seqlen_k, head_dim=width // heads, causal=causal,
               padding=round(1.0 - sum(lengths) / (c.batch * c.seqlen), 4), d_model=width, d_ffn=ffn)
    if c.task == "train":
        # useful work: the encoder over the valid tokens only (flops.encoder_train_flops)
        row["flops"] = F.encoder_train_flops(lengths, cfg.num_hidden_layers, width, ffn, heads)
    return row


def _lengths(c: E2ECase) -> List[int]:
    from .bench_attention import padded_lengths, spread_lengths
    if c.len_lo:
        return list(spread_lengths(c.batch, c.seqlen, c.len_lo))
    kl = padded_lengths(c.batch, c.seqlen, c.padding)
    return list(kl) if kl is not None else [c.seqlen] * c.batch


def _inputs(c: E2ECase, ctx: Context, vocab: int, n_sets: int):
    """``n_sets`` rotated (input_ids, attention_mask) pairs: right padding for the encoder, left
    padding for generation (what HF expects for decoder-only batches)."""
    import torch
    g = torch.Generator(device="cpu").manual_seed(ctx.seed)
    lengths = _lengths(c)
    sets = []
    for _ in range(n_sets):
        ids = torch.randint(0, vocab - 1, (c.batch, c.seqlen), generator=g)
        am = torch.zeros(c.batch, c.seqlen, dtype=torch.long)
        for b, n in enumerate(lengths):
            if c.task in ("forward", "train"):
                am[b, :n] = 1
            else:
                am[b, c.seqlen - n:] = 1
        labels = torch.randint(0, 2, (c.batch,), generator=g).to(ctx.device) if c.task == "train" else None
        sets.append((ids.to(ctx.device), am.to(ctx.device), labels))
    return sets


def _build(c: E2ECase, prov: Provider, ctx: Context):
    import torch
    try:
        import transformers
    except ImportError as e:
        raise Unsupported(f"transformers is not installed: {e}") from None
    cfg = _config(c.model)
    cls = {"forward": transformers.BertModel, "generate": transformers.GPT2LMHeadModel,
           "train": transformers.BertForSequenceClassification}[c.task]
    torch.manual_seed(ctx.seed)
    if c.task == "train":  # mixed precision: float32 master weights, autocast in the step
        cfg.num_labels = 2
        model = cls._from_config(cfg, attn_implementation=prov.options["attn"], dtype=torch.float32)
        model = model.to(ctx.device).train()  # dropout on, as in fine-tuning
    else:
        model = cls._from_config(cfg, attn_implementation=prov.options["attn"], dtype=dtype_of(c.dtype))
        model = model.to(ctx.device).eval()
    if prov.kind == "fastattn":
        import fastattn
        model = fastattn.optimize(model, unpad=prov.options.get("unpad", True))
    if prov.options.get("compile"):
        if ctx.smoke:
            raise Unsupported("torch.compile is not timed in the smoke sweep (its CPU compile takes tens of seconds)")
        torch._dynamo.reset()
        if c.task in ("forward", "train"):
            model = torch.compile(model)
        else:  # generate() is a Python loop: compile the per-step forward (KV length varies: dynamic)
            model.forward = torch.compile(model.forward, dynamic=True)
    return model, cfg


def _train_step(c: E2ECase, ctx: Context, model, sets):
    """One fine-tuning step per call over the rotated batches; ``call.note`` reports the steps the
    ``GradScaler`` skipped (inf/NaN gradients: no optimizer update in them) during warm-up and timing."""
    import torch
    dev = ctx.device
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, **({"fused": True} if dev == "cuda" else {}))
    amp_dtype = dtype_of(c.dtype)
    scaler = torch.amp.GradScaler(dev, enabled=amp_dtype == torch.float16)
    probe = next(p for p in model.parameters() if p.requires_grad)
    it = [0]

    def call():
        ids, am, labels = sets[it[0] % len(sets)]
        it[0] += 1
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev, dtype=amp_dtype):
            loss = model(input_ids=ids, attention_mask=am, labels=labels).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    def note(t):
        done = int(opt.state[probe]["step"]) if "step" in opt.state.get(probe, {}) else 0
        scale = f"GradScaler skipped {it[0] - done} of {it[0]} steps" if scaler.is_enabled() else "no GradScaler"
        return (f"fine-tuning step: {c.dtype} autocast, AdamW{' (fused)' if dev == 'cuda' else ''}, dropout "
                f"{model.config.hidden_dropout_prob}, train mode; {scale}; "
                f"{sum(_lengths(c)) / (t.median_ms * 1e-3):.4g} valid tokens/s")
    call.note = note
    return call


def _prepare(c: E2ECase, prov: Provider, ctx: Context):
    import torch
    model, cfg = _build(c, prov, ctx)
    sets = _inputs(c, ctx, cfg.vocab_size, 1 if ctx.smoke else 4)
    it = [0]

    if c.task == "train":
        return _train_step(c, ctx, model, sets)
    if c.task == "forward":
        def call():
            ids, am, _ = sets[it[0] % len(sets)]
            it[0] += 1
            return model(input_ids=ids, attention_mask=am).last_hidden_state
        call.note = lambda t: f"{sum(_lengths(c)) / (t.median_ms * 1e-3):.4g} valid tokens/s"
    else:
        def call():
            ids, am, _ = sets[it[0] % len(sets)]
            it[0] += 1
            out = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=c.new_tokens,
                                 min_new_tokens=c.new_tokens, do_sample=False, pad_token_id=cfg.eos_token_id)
            if out.shape[1] != c.seqlen + c.new_tokens:
                raise RuntimeError(f"generate returned {out.shape[1] - c.seqlen} new tokens, expected {c.new_tokens}")
            return None
        call.note = lambda t: (f"greedy, {c.new_tokens} new tokens per sequence: "
                               f"{c.batch * c.new_tokens / (t.median_ms * 1e-3):.4g} generated tokens/s")
    call.bench_context = torch.inference_mode
    return call


def run(ctx: Context, dtypes: Sequence[str] = ("bfloat16",)) -> int:
    if ctx.device == "cpu":  # the smoke sweep under pytest: time the CPU user's path, not the interpreter
        with without_triton_interpreter():
            return _run(ctx, dtypes)
    return _run(ctx, dtypes)


def _run(ctx: Context, dtypes: Sequence[str]) -> int:
    cases = e2e_cases(ctx.preset, dtypes)
    providers = select_providers(PROVIDERS, DEFAULTS.get(ctx.preset, DEFAULTS["full"]), ctx.providers)
    n = 0
    for task in ("forward", "generate", "train"):
        sub = [c for c in cases if c.task == task]
        if not sub:
            continue
        if task == "forward":
            n += run_cases(ctx, SUITE, sub, providers, describe, lambda c, p: _prepare(c, p, ctx),
                           warmup_ms=100 if ctx.device == "cuda" else 0, rep_ms=500 if ctx.device == "cuda" else 0)
        elif task == "train":  # a step is tens of ms: do_bench's default 100 ms would time a handful
            n += run_cases(ctx, SUITE, sub, providers, describe, lambda c, p: _prepare(c, p, ctx),
                           warmup_ms=1000 if ctx.device == "cuda" else 0, rep_ms=2000 if ctx.device == "cuda" else 0)
        else:
            n += run_cases(ctx, SUITE, sub, providers, describe, lambda c, p: _prepare(c, p, ctx),
                           wall_reps=2 if ctx.smoke else 5)
    return n

"""GELU feed-forward (``linear -> GELU -> linear``): eager PyTorch, ``torch.compile`` (max-autotune
in the full preset) and fastattn's backends, at BERT-base (768 -> 3072, exact erf GELU) and
GPT-2-medium (1024 -> 4096, tanh GELU) sizes. Run with ``fastattn bench --suite ffn``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from . import flops as F
from .harness import Context, Provider, Unsupported, dtype_of, generator, randn, rotating, rotation_count, \
    run_cases, select_providers

SUITE = "ffn"
#: model -> (d_model, d_ffn, approximate)
MODELS = {"bert-base": (768, 3072, "none"), "gpt2-medium": (1024, 4096, "tanh")}
#: (batch, seqlen) token layouts
SHAPES = {"full": ((1, 512), (8, 512), (32, 512)), "quick": ((32, 512),), "headline": ((32, 512),),
          "smoke": ((2, 16),)}

PROVIDERS = [
    Provider("fastattn-cuda", "fastattn", options={"backend": "cuda"}),
    Provider("fastattn-triton", "fastattn", options={"backend": "triton"}),
    Provider("fastattn-torch", "fastattn", options={"backend": "torch"}),
    Provider("eager", "eager"),
    Provider("torch-compile-max-autotune", "compile", options={"mode": "max-autotune"}),
    Provider("torch-compile", "compile", options={"mode": "default"}),
]
DEFAULTS = {
    "full": ["fastattn-cuda", "fastattn-triton", "eager", "torch-compile-max-autotune"],
    # max-autotune benchmarks every GEMM config at compile time (minutes): the quick check uses the
    # default mode, under its own provider name
    "quick": ["fastattn-cuda", "fastattn-triton", "eager", "torch-compile"],
    # issue #5: against eager and max-autotune (compiled providers run last, so a time budget cuts them first)
    "headline": ["fastattn-cuda", "fastattn-triton", "eager", "torch-compile-max-autotune"],
    "smoke": ["fastattn-torch", "fastattn-triton", "eager", "torch-compile"],
}


@dataclass(frozen=True)
class FFNCase:
    model: str
    batch: int
    seqlen: int
    d_model: int
    d_ffn: int
    approximate: str
    dtype: str

    @property
    def tokens(self) -> int:
        return self.batch * self.seqlen

    @property
    def name(self) -> str:
        return f"{self.model}-ffn-b{self.batch}-s{self.seqlen}-{self.d_model}x{self.d_ffn}-gelu_{self.approximate}"


def ffn_cases(preset: str, dtypes: Sequence[str], models: Optional[Sequence[str]] = None) -> List[FFNCase]:
    out = []
    for dt in dtypes:
        if preset == "smoke":
            out.append(FFNCase("tiny", 2, 16, 64, 256, "none", dt))
            out.append(FFNCase("tiny", 2, 16, 64, 256, "tanh", dt))
            continue
        for m, (d, h, approx) in MODELS.items():
            if models and m not in models:
                continue
            for b, s in SHAPES[preset]:
                out.append(FFNCase(m, b, s, d, h, approx, dt))
    return out


def describe(c: FFNCase) -> dict:
    esz = {"float16": 2, "bfloat16": 2, "float32": 4}[c.dtype]
    return dict(case=c.name, dtype=c.dtype, batch=c.batch, seqlen_q=c.seqlen, seqlen_k="", d_model=c.d_model,
                d_ffn=c.d_ffn, flops=F.ffn_fwd_flops(c.tokens, c.d_model, c.d_ffn),
                bytes=F.ffn_fwd_bytes(c.tokens, c.d_model, c.d_ffn, elem_bytes=esz))


def _eager(approximate):
    import torch.nn.functional as TF

    def ffn(x, w1, b1, w2, b2):
        return TF.linear(TF.gelu(TF.linear(x, w1, b1), approximate=approximate), w2, b2)
    return ffn


def _data(c: FFNCase, ctx: Context):
    import torch
    dt = dtype_of(c.dtype)
    dev = ctx.device
    g = generator(dev, ctx.seed)
    per_set = (c.tokens * c.d_model + 2 * c.d_model * c.d_ffn) * torch.finfo(dt).bits // 8
    # rotate the weights too: a real model's layers each have their own, so they never sit in L2
    n = 1 if ctx.smoke else rotation_count(per_set, ctx.env.l2_bytes)
    s1, s2 = c.d_model ** -0.5, c.d_ffn ** -0.5   # nn.Linear-like scale: activations stay O(1)
    return [(randn((c.batch, c.seqlen, c.d_model), dt, dev, g), randn((c.d_ffn, c.d_model), dt, dev, g, s1),
             randn((c.d_ffn,), dt, dev, g, s1), randn((c.d_model, c.d_ffn), dt, dev, g, s2),
             randn((c.d_model,), dt, dev, g, s2)) for _ in range(n)]


def _prepare(c: FFNCase, prov: Provider, ctx: Context, sets):
    import torch
    if prov.kind == "fastattn":
        import fastattn
        backend = prov.options["backend"]
        why = fastattn.available_backends().get(backend)
        if why is not None:
            raise Unsupported(f"backend {backend!r} unavailable: {why}")
        if ctx.device != "cuda" and backend != "torch":
            raise Unsupported(f"backend {backend!r} is timed on CUDA only (on CPU it runs in the Triton "
                              "interpreter, a correctness tool)")

        def call(x, w1, b1, w2, b2):
            return fastattn.gelu_ffn(x, w1, b1, w2, b2, approximate=c.approximate, backend=backend)
        try:
            call(*sets[0])
        except ValueError as e:
            raise Unsupported(" ".join(str(e).split())) from None
        return rotating(call, sets)
    if prov.kind == "eager":
        return rotating(_eager(c.approximate), sets)
    if prov.kind == "compile":
        if ctx.smoke:
            raise Unsupported("torch.compile is not timed in the smoke sweep (its CPU compile takes tens of seconds)")
        mode = prov.options["mode"]
        torch._dynamo.reset()  # one compile per case: never the recompile limit's eager fallback
        compiled = torch.compile(_eager(c.approximate), mode=mode, dynamic=False)
        return rotating(compiled, sets)
    raise ValueError(f"unknown provider kind {prov.kind!r}")


def run(ctx: Context, dtypes: Sequence[str] = ("bfloat16",), models=None) -> int:
    cases = ffn_cases(ctx.preset, dtypes, models)
    providers = select_providers(PROVIDERS, DEFAULTS.get(ctx.preset, DEFAULTS["full"]), ctx.providers)
    state = {}

    def prepare(case, prov):
        if state.get("case") is not case:
            state.clear()
            state["case"], state["sets"] = case, _data(case, ctx)
        return _prepare(case, prov, ctx, state["sets"])

    n = 0
    for group in ([p for p in providers if p.kind != "compile"], [p for p in providers if p.kind == "compile"]):
        if group:  # compiled providers last (see bench_attention.run)
            n += run_cases(ctx, SUITE, cases, group, describe, prepare, after_case=lambda c: state.clear())
    return n

"""Attention forward, and forward + backward, of fastattn's backends against PyTorch SDPA (each backend
forced), eager math and FlexAttention, at the shapes of real models.

Cases: BERT-base/large (non-causal), GPT-2 small/medium and Llama-3-8B (GQA 32/8, D=128) causal,
a D=128 non-causal shape; S = 128..16k at B*S = 16k tokens; key padding 0/25/50/75% (per-sequence
lengths for fastattn and FlexAttention, the equivalent bool mask for SDPA and eager); decode
(Lq=1 against Lk = 1k..32k cached keys). Run with ``fastattn bench --suite attention``.

Packed sequences (``--preset unpad``, issue #12; case names ending ``-packed``): the BERT-base batch B=32,
S=512, lengths evenly spread over [S/4, S] as the unpadded encoder runs it: ``attention_varlen`` on the
valid tokens packed ``(T, H, D)`` against SDPA's flash kernel on the dense ``(B, H, S, D)`` shape (no mask:
what a padded batch costs flash), and the padded providers with the key-padding mask. The case's FLOPs
and bytes count the valid tokens only (``query_lengths`` = the lengths), so ``tflops`` is useful work for
every provider; each row's note gives its tokens/s (T for varlen, B*S for the dense shape).

Training (``--preset train``, case names ending ``-fwdbwd``): one timed call is the forward and the
backward, ``torch.autograd.grad(out, (q, k, v), dout)`` (the work of ``out.backward(dout)`` without
accumulating into ``.grad``), on preallocated q, k, v, dout; its FLOPs are ``flops.attention_flops(...,
direction="fwd+bwd")``. A fastattn backend without a fused backward is recorded ``unsupported``.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from . import flops as F
from .harness import (Context, Provider, Unsupported, generator, randn, rotating, rotation_count,
                      run_cases, select_providers, warnings_reason)

SUITE = "attention"
TOKENS = 16384  # B * S of the prefill sweep

#: model -> (heads_q, heads_kv, head_dim, causal)
MODELS = {
    "bert-base": (12, 12, 64, "none"),
    "bert-large": (16, 16, 64, "none"),
    "gpt2": (12, 12, 64, "top_left"),
    "gpt2-medium": (16, 16, 64, "top_left"),
    "llama3-8b": (32, 8, 128, "top_left"),
    "d128": (16, 16, 128, "none"),
    # issue #3's sweep: hidden size H*D = 2048 at D = 64 and D = 128, causal and not
    "h2048-d64": (32, 32, 64, "none"),
    "h2048-d64-causal": (32, 32, 64, "top_left"),
    "h2048-d128": (16, 16, 128, "none"),
    "h2048-d128-causal": (16, 16, 128, "top_left"),
}
#: issue #3's sequence lengths (B*S = 16k) and the BERT key-padding case of issue #4
HEADLINE_SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)
HEADLINE_MODELS = ("h2048-d64", "h2048-d64-causal", "h2048-d128", "h2048-d128-causal")
#: issue #11's training sweep: D=128 first (its goal), then D=64
TRAIN_MODELS = ("h2048-d128", "h2048-d128-causal", "h2048-d64", "h2048-d64-causal")
SEQLENS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PADDINGS = (0.0, 0.25, 0.5, 0.75)
DECODE_MODELS = ("gpt2-medium", "llama3-8b")
DECODE_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
DECODE_BATCH = 8

PROVIDERS = [
    Provider("fastattn-cuda", "fastattn", options={"backend": "cuda"}),
    Provider("fastattn-triton", "fastattn", options={"backend": "triton"}),
    Provider("fastattn-torch", "fastattn", options={"backend": "torch"}),
    Provider("sdpa-flash", "sdpa", options={"backend": "FLASH_ATTENTION"}),
    Provider("sdpa-cudnn", "sdpa", options={"backend": "CUDNN_ATTENTION"}),
    Provider("sdpa-efficient", "sdpa", options={"backend": "EFFICIENT_ATTENTION"}),
    Provider("sdpa-math", "sdpa", options={"backend": "MATH"}),
    Provider("flex", "flex", gpu_only=True),
    Provider("eager", "eager"),
    # issue #12: attention_varlen on the packed valid tokens; SDPA flash on the case's dense (B, S) shape
    Provider("fastattn-varlen-triton", "varlen", options={"backend": "triton"}),
    Provider("fastattn-varlen-torch", "varlen", options={"backend": "torch"}),
    Provider("sdpa-flash-dense", "sdpa_dense", options={"backend": "FLASH_ATTENTION"}),
]
#: providers only the packed-sequence comparison (and the smoke sweep) runs
_PACKED_ONLY = ("fastattn-varlen-triton", "fastattn-varlen-torch", "sdpa-flash-dense")
DEFAULTS = {
    "full": [p.name for p in PROVIDERS if p.name != "fastattn-torch" and p.name not in _PACKED_ONLY],
    "quick": ["fastattn-cuda", "fastattn-triton", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "flex"],
    # the issues' headline comparison: fastattn against every SDPA backend (flex is in quick/full)
    "headline": ["fastattn-cuda", "fastattn-triton", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math"],
    "smoke": ["fastattn-torch", "fastattn-triton", "fastattn-cuda", "sdpa-math", "sdpa-flash", "eager", "flex",
              "fastattn-varlen-torch", "fastattn-varlen-triton", "sdpa-flash-dense"],
    # issue #12: varlen (packed) vs flash on the dense shape per token; the padded kernels beside them
    "unpad": ["fastattn-varlen-triton", "sdpa-flash-dense", "fastattn-triton", "fastattn-cuda", "sdpa-efficient",
              "sdpa-cudnn"],
    # forward + backward (issue #11); fastattn-cuda is forward-only: its row says so
    "train": ["fastattn-triton", "fastattn-cuda", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "flex"],
}


@dataclass(frozen=True)
class AttnCase:
    model: str
    batch: int
    heads_q: int
    heads_kv: int
    seqlen_q: int
    seqlen_k: int
    head_dim: int
    causal: str          # "none" | "top_left" | "bottom_right"
    padding: float       # nominal fraction of padded keys
    dtype: str           # "bfloat16", ...
    decode: bool = False
    len_lo: float = 0.0  # > 0: key lengths evenly spread over [len_lo * Lk, Lk] instead of around 1 - padding
    direction: str = "fwd"  # "fwd" or "fwd+bwd" (flops.DIRECTIONS; the timed call runs the backward too)
    packed: bool = False    # count the valid tokens only (query rows = key lengths): the unpadded encoder's work

    @property
    def train(self) -> bool:
        return self.direction == "fwd+bwd"

    @property
    def key_lengths(self) -> Optional[Tuple[int, ...]]:
        if self.len_lo:
            return spread_lengths(self.batch, self.seqlen_k, self.len_lo)
        return padded_lengths(self.batch, self.seqlen_k, self.padding)

    @property
    def name(self) -> str:
        kind = "decode-" if self.decode else ""
        c = {"none": "", "top_left": "-causal", "bottom_right": "-causal_br"}[self.causal]
        pad = f"-pad{round(self.padding * 100)}" if self.padding else ""
        if self.len_lo:
            pad = f"-len{round(self.len_lo * 100)}to100"
        direction = "-fwdbwd" if self.train else ""
        packed = "-packed" if self.packed else ""
        return (f"{self.model}-{kind}b{self.batch}-h{self.heads_q}/{self.heads_kv}-q{self.seqlen_q}-k{self.seqlen_k}-"
                f"d{self.head_dim}{c}{pad}{direction}{packed}")


def padded_lengths(batch: int, seqlen: int, frac: float) -> Optional[Tuple[int, ...]]:
    """Deterministic ragged key lengths whose mean padding is ``frac``: the lengths spread evenly
    around ``(1 - frac) * seqlen`` (as a real batch would), each in ``[1, seqlen]``."""
    if not frac:
        return None
    if not 0 < frac < 1:
        raise ValueError(f"padding fraction must be in [0, 1), got {frac}")
    valid = 1.0 - frac
    spread = 0.5 * min(valid, 1.0 - valid)
    if batch == 1:
        return (max(1, round(seqlen * valid)),)
    out = []
    for b in range(batch):
        f = valid + spread * (2.0 * b / (batch - 1) - 1.0)
        out.append(max(1, min(seqlen, round(seqlen * f))))
    return tuple(out)


def spread_lengths(batch: int, seqlen: int, lo: float) -> Tuple[int, ...]:
    """Deterministic key lengths evenly spread over ``[lo * seqlen, seqlen]`` (a uniform length
    distribution without sampling noise), each at least 1."""
    if not 0 < lo <= 1:
        raise ValueError(f"len_lo must be in (0, 1], got {lo}")
    if batch == 1:
        return (max(1, round(seqlen * (1 + lo) / 2)),)
    return tuple(max(1, min(seqlen, round(seqlen * (lo + (1 - lo) * b / (batch - 1))))) for b in range(batch))


def attention_cases(preset: str, dtypes: Sequence[str], models: Optional[Sequence[str]] = None,
                    seqlens: Optional[Sequence[int]] = None, paddings: Optional[Sequence[float]] = None,
                    decode: bool = True) -> List[AttnCase]:
    """The case list of a preset (``smoke``, ``quick``, ``headline``, ``full``, ``train``), optionally
    filtered."""
    cases: List[AttnCase] = []
    if preset == "unpad":  # issue #12: the unpadded BERT-base encoder's attention, packed vs dense
        return [AttnCase("bert-base", 32, 12, 12, 512, 512, 64, "none", 0.375, dt, len_lo=0.25, packed=True)
                for dt in dtypes]
    if preset in ("headline", "train"):
        # headline: issue #4's case first, then issue #3's sweep; train (issue #11): the same shapes, forward
        # + backward, D=128 first. Dtypes innermost so that a --time-budget cut leaves every dtype with
        # the shorter sequence lengths; --models/--seqlens/--paddings filter as usual
        direction = "fwd+bwd" if preset == "train" else "fwd"
        if (not models or "bert-base" in models) and (not seqlens or 512 in seqlens) and \
                (paddings is None or 0.375 in paddings):
            cases += [AttnCase("bert-base", 32, 12, 12, 512, 512, 64, "none", 0.375, dt, len_lo=0.25,
                               direction=direction) for dt in dtypes]
        for s in HEADLINE_SEQLENS:
            for m in (TRAIN_MODELS if preset == "train" else HEADLINE_MODELS):
                if (models and m not in models) or (seqlens and s not in seqlens) or \
                        (paddings is not None and 0.0 not in paddings):
                    continue
                hq, hkv, d, causal = MODELS[m]
                cases += [AttnCase(m, max(1, TOKENS // s), hq, hkv, s, s, d, causal, 0.0, dt, direction=direction)
                          for dt in dtypes]
        return cases
    for dt in dtypes:
        if preset == "smoke":
            cases += [AttnCase("tiny", 2, 2, 2, 64, 64, 32, "none", 0.0, dt),
                      AttnCase("tiny", 2, 2, 2, 64, 64, 32, "top_left", 0.25, dt),
                      AttnCase("tiny", 2, 4, 2, 16, 64, 32, "bottom_right", 0.5, dt),
                      AttnCase("tiny", 2, 2, 2, 1, 128, 32, "none", 0.0, dt, decode=True),
                      # forward + backward: the train preset's two mask forms (causal; BERT-style lengths)
                      AttnCase("tiny", 2, 2, 2, 64, 64, 32, "top_left", 0.0, dt, direction="fwd+bwd"),
                      AttnCase("tiny", 2, 4, 2, 64, 64, 32, "none", 0.375, dt, len_lo=0.25, direction="fwd+bwd"),
                      # the unpad preset's packed comparison (varlen vs the dense shape)
                      AttnCase("tiny", 2, 2, 2, 64, 64, 32, "none", 0.375, dt, len_lo=0.25, packed=True)]
            continue
        if preset == "quick":
            spec = [("bert-base", 512, 0.0), ("bert-base", 512, 0.5), ("gpt2-medium", 1024, 0.0),
                    ("llama3-8b", 4096, 0.0), ("llama3-8b", 16384, 0.0), ("d128", 2048, 0.25)]
            dec = [("gpt2-medium", 4096, 0.0), ("llama3-8b", 32768, 0.0)]
        else:
            spec = [(m, s, p) for m in MODELS if m not in HEADLINE_MODELS for s in SEQLENS for p in PADDINGS]
            dec = [(m, k, p) for m in DECODE_MODELS for k in DECODE_LENGTHS for p in (0.0, 0.5)]
        for m, s, p in spec:
            if (models and m not in models) or (seqlens and s not in seqlens) or (paddings is not None and p not in paddings):
                continue
            hq, hkv, d, causal = MODELS[m]
            cases.append(AttnCase(m, max(1, TOKENS // s), hq, hkv, s, s, d, causal, p, dt))
        if not decode:
            continue
        for m, k, p in dec:
            if (models and m not in models) or (seqlens and k not in seqlens) or (paddings is not None and p not in paddings):
                continue
            hq, hkv, d, _ = MODELS[m]
            # Lq=1 against the whole cache: bottom-right causal is no mask at all for one query row
            cases.append(AttnCase(m, DECODE_BATCH, hq, hkv, 1, k, d, "none", p, dt, decode=True))
    return cases


def describe(case: AttnCase) -> dict:
    kl = case.key_lengths
    esz = {"float16": 2, "bfloat16": 2, "float32": 4}[case.dtype]
    actual_pad = 0.0 if kl is None else 1.0 - sum(kl) / (case.batch * case.seqlen_k)
    ql = kl if case.packed else None
    row = dict(case=case.name, dtype=case.dtype, batch=case.batch, heads_q=case.heads_q, heads_kv=case.heads_kv,
               seqlen_q=case.seqlen_q, seqlen_k=case.seqlen_k, head_dim=case.head_dim, causal=case.causal,
               padding=round(actual_pad, 4),
               flops=F.attention_flops(case.batch, case.heads_q, case.seqlen_q, case.seqlen_k, case.head_dim,
                                       causal=case.causal, key_lengths=kl, query_lengths=ql, direction=case.direction),
               bytes=F.attention_bytes(case.batch, case.heads_q, case.heads_kv, case.seqlen_q, case.seqlen_k,
                                       case.head_dim, elem_bytes=esz, key_lengths=kl, query_lengths=ql,
                                       direction=case.direction))
    if case.train:
        row["note"] = "fwd+bwd: forward and the gradients of q, k, v (counted FLOPs 3.5x the forward)"
    if case.packed:
        row["note"] = "packed: FLOPs and bytes of the valid tokens only"
    return row


# ------------------------------------------------------------------------------------------- inputs
class CaseData:
    """Rotated q/k/v sets of one case plus every mask form the providers need (built once). A training
    case's sets are ``(q, k, v, dout)`` with q, k, v requiring grad."""

    def __init__(self, case: AttnCase, ctx: Context):
        import torch
        from .harness import dtype_of
        self.case = case
        dev = ctx.device
        dt = dtype_of(case.dtype)
        g = generator(dev, ctx.seed)
        B, Hq, Hkv, Lq, Lk, D = case.batch, case.heads_q, case.heads_kv, case.seqlen_q, case.seqlen_k, case.head_dim
        per_set = ((2 if case.train else 1) * B * Hq * Lq * D + 2 * B * Hkv * Lk * D) * torch.finfo(dt).bits // 8
        n = 1 if ctx.smoke else rotation_count(per_set, ctx.env.l2_bytes)
        self.sets = []
        for _ in range(n):
            qkv = (randn((B, Hq, Lq, D), dt, dev, g), randn((B, Hkv, Lk, D), dt, dev, g),
                   randn((B, Hkv, Lk, D), dt, dev, g))
            if case.train:
                qkv = tuple(t.requires_grad_(True) for t in qkv) + (randn((B, Hq, Lq, D), dt, dev, g),)
            self.sets.append(qkv)
        kl = case.key_lengths
        self.lengths = None if kl is None else torch.tensor(kl, dtype=torch.int32, device=dev)
        self.gqa = Hq != Hkv
        self._bool = None

    def bool_mask(self):
        """The SDPA/eager form: ``None``, or a bool mask True = attend, ``(B,1,1,Lk)`` for padding
        alone, ``(B|1,1,Lq,Lk)`` when causal is involved."""
        import torch
        c = self.case
        if self._bool is not None:
            return self._bool
        dev = self.sets[0][0].device
        keep = None
        if c.causal != "none":
            i = torch.arange(c.seqlen_q, device=dev).view(-1, 1)
            j = torch.arange(c.seqlen_k, device=dev).view(1, -1)
            off = 0 if c.causal == "top_left" else c.seqlen_k - c.seqlen_q
            keep = (j <= i + off).view(1, 1, c.seqlen_q, c.seqlen_k)
        if self.lengths is not None:
            kp = (torch.arange(c.seqlen_k, device=dev).view(1, -1) < self.lengths.view(-1, 1).long())
            kp = kp.view(c.batch, 1, 1, c.seqlen_k)
            keep = kp if keep is None else keep & kp
        self._bool = keep
        return keep


def _scores_bytes(c: AttnCase) -> int:
    return c.batch * c.heads_q * c.seqlen_q * c.seqlen_k * 4


def _check_materialisable(c: AttnCase, ctx: Context, what: str) -> None:
    """Providers that build the (B, Hq, Lq, Lk) scores: refuse cases that cannot fit (a clear
    'unsupported' row instead of an OOM half-way through a sweep)."""
    if ctx.device != "cuda":
        limit = 2 * 2**30
    else:
        import torch
        free, _ = torch.cuda.mem_get_info()
        limit = free // 2
    need = (5 if c.train else 3) * _scores_bytes(c)  # the backward keeps the probabilities and dS too
    if need > limit:
        raise Unsupported(f"{what} materialises the (B, Hq, Lq, Lk) scores: ~{need / 2**30:.1f} GiB needed, "
                          f"{limit / 2**30:.1f} GiB allowed")


# ---------------------------------------------------------------------------------------- providers
def _step(data: CaseData, call):
    """What one timed call of a provider's ``call(q, k, v)`` is: the forward; for a training case the
    forward and the gradients of q, k and v for ``dout`` (returned with the output, so that the first
    call's NaN check covers them too)."""
    if not data.case.train:
        return call
    import torch

    def fwd_bwd(q, k, v, dout):
        out = call(q, k, v)
        return (out,) + torch.autograd.grad(out, (q, k, v), dout)
    return fwd_bwd


def _timed(data: CaseData, call):
    """``_step`` over the case's rotated input sets, one set per call."""
    return rotating(_step(data, call), data.sets)


def _prep_fastattn(data: CaseData, prov: Provider, ctx: Context):
    import fastattn
    from torch.nn.attention.bias import causal_lower_right
    c = data.case
    backend = prov.options["backend"]
    why = fastattn.available_backends().get(backend)
    if why is not None:
        raise Unsupported(f"backend {backend!r} unavailable: {why}")
    if c.train:
        from fastattn import dispatch
        b = dispatch.backends("attention").get(backend)
        if b is not None and not b.SUPPORTS_BACKWARD:
            raise Unsupported(f"backend {backend!r} is forward-only: its backward is the reference recompute "
                              "(materialises the scores), not a fused training path")
    if ctx.device != "cuda" and backend != "torch":
        raise Unsupported(f"backend {backend!r} is timed on CUDA only (on CPU it runs in the Triton interpreter, "
                          "a correctness tool)")
    kw = {}
    if data.lengths is not None:
        kw["attn_mask"] = fastattn.KeyPadding(lengths=data.lengths, causal=None if c.causal == "none" else c.causal)
    elif c.causal == "top_left":
        kw["is_causal"] = True
    elif c.causal == "bottom_right":
        kw["attn_mask"] = causal_lower_right(c.seqlen_q, c.seqlen_k)

    def call(q, k, v):
        return fastattn.attention(q, k, v, enable_gqa=data.gqa, backend=backend, **kw)

    try:
        _step(data, call)(*data.sets[0])
    except ValueError as e:  # fastattn says why this backend cannot run the case
        raise Unsupported(" ".join(str(e).split())) from None
    return _timed(data, call)


def _prep_sdpa(data: CaseData, prov: Provider, ctx: Context):
    import warnings

    import torch
    import torch.nn.functional as TF
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right
    c = data.case
    be = getattr(SDPBackend, prov.options["backend"], None)
    if be is None:
        raise Unsupported(f"this torch ({torch.__version__}) has no SDPBackend.{prov.options['backend']}")
    if prov.options["backend"] == "MATH":
        _check_materialisable(c, ctx, "SDPA math")
    mask, is_causal = None, False
    if data.lengths is not None:
        mask = data.bool_mask()
    elif c.causal == "top_left":
        is_causal = True
    elif c.causal == "bottom_right":
        mask = causal_lower_right(c.seqlen_q, c.seqlen_k)
    kw = {"enable_gqa": True} if data.gqa else {}

    def call(q, k, v):
        return TF.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, **kw)

    with sdpa_kernel([be]), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _step(data, call)(*data.sets[0])  # a training case: the backward's support too
        except RuntimeError as e:
            why = warnings_reason(caught)
            raise Unsupported((why + "; " if why else "") + " ".join(str(e).split())) from None
    fn = _timed(data, call)
    fn.bench_context = functools.partial(sdpa_kernel, [be])
    return fn


def _prep_eager(data: CaseData, prov: Provider, ctx: Context):
    import torch
    c = data.case
    _check_materialisable(c, ctx, "eager attention")
    mask = data.bool_mask()
    rep = c.heads_q // c.heads_kv
    scale = c.head_dim ** -0.5

    def call(q, k, v):  # what HF's eager attention does: repeat KV heads, fp32 softmax
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = torch.matmul(q, k.transpose(-2, -1)) * scale
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        p = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
        return torch.matmul(p, v)

    return _timed(data, call)


def _compiled_flex():
    """A freshly compiled ``flex_attention`` for one case. Dynamo is reset first: reusing one compiled
    function across the sweep would hit its recompile limit after a few shapes and silently fall
    back to the unfused eager path, which would then be timed under the name ``flex``."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention
    torch._dynamo.reset()
    return torch.compile(flex_attention, dynamic=False)


def flex_block_mask(data: CaseData, device: str):
    """FlexAttention's form of the case's mask: ``None`` or a ``BlockMask`` from a ``mask_mod`` that
    reads the per-sequence lengths (padding) and/or the causal offset."""
    from torch.nn.attention.flex_attention import create_block_mask
    c = data.case
    lengths = data.lengths
    off = 0 if c.causal == "top_left" else c.seqlen_k - c.seqlen_q
    causal = c.causal != "none"
    if lengths is None and not causal:
        return None
    if lengths is not None and causal:
        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx < lengths[b]) & (kv_idx <= q_idx + off)
    elif lengths is not None:
        def mask_mod(b, h, q_idx, kv_idx):
            return kv_idx < lengths[b]
    else:
        def mask_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx + off
    return create_block_mask(mask_mod, c.batch if lengths is not None else None, None, c.seqlen_q, c.seqlen_k,
                             device=device)


def _prep_flex(data: CaseData, prov: Provider, ctx: Context):
    if ctx.device != "cuda":
        raise Unsupported("FlexAttention is benchmarked on CUDA only (its CPU path compiles for minutes)")
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError as e:
        raise Unsupported(f"torch.nn.attention.flex_attention not importable: {e}") from None
    # the block mask is plan-once work (built outside the timed call, as a model would per batch)
    block_mask = flex_block_mask(data, "cuda")
    flex = _compiled_flex()
    kw = {"enable_gqa": True} if data.gqa else {}

    def call(q, k, v):
        return flex(q, k, v, block_mask=block_mask, **kw)

    fn = _timed(data, call)
    fn.note = "block mask built once outside the timed call" if block_mask is not None else None
    return fn


def _packed_only(data: CaseData, what: str) -> None:
    c = data.case
    if not c.packed:
        raise Unsupported(f"{what} runs the packed-sequence cases only (--preset unpad)")
    if c.train:  # pragma: no cover - no packed case is a training case
        raise Unsupported(f"{what} is timed forward-only")


def _tokens_note(n: int, what: str):
    return lambda t: f"{what}: {n / (t.median_ms * 1e-3):.4g} tokens/s"


def _prep_varlen(data: CaseData, prov: Provider, ctx: Context):
    """``fastattn.attention_varlen`` on the case's valid tokens packed ``(T, H, D)`` (packed once, outside
    the timed call, as the unpadded encoder's inputs come from its Linear projections)."""
    import torch

    import fastattn
    from fastattn import dispatch
    c = data.case
    _packed_only(data, "attention_varlen")
    backend = prov.options["backend"]
    why = dispatch.backends("attention_varlen")[backend].unavailable_reason()
    if why is not None:
        raise Unsupported(f"varlen backend {backend!r} unavailable: {why}")
    if ctx.device != "cuda" and backend != "torch":
        raise Unsupported(f"backend {backend!r} is timed on CUDA only (on CPU it runs in the Triton interpreter, "
                          "a correctness tool)")
    dev = data.sets[0][0].device
    lengths = list(c.key_lengths or (c.seqlen_k,) * c.batch)
    valid = torch.arange(c.seqlen_k, device=dev).view(1, -1) < torch.tensor(lengths, device=dev).view(-1, 1)
    idx = valid.reshape(-1).nonzero().squeeze(1)
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)), dtype=torch.int32, device=dev)
    mx = max(lengths)

    def pack(t):  # (B, H, S, D) -> (T, H, D) contiguous
        return t.detach().transpose(1, 2).reshape(-1, t.shape[1], t.shape[3]).index_select(0, idx).contiguous()

    sets = [tuple(pack(t) for t in s[:3]) for s in data.sets]

    def call(q, k, v):
        return fastattn.attention_varlen(q, k, v, cu, cu, mx, mx, enable_gqa=data.gqa, backend=backend)

    try:
        call(*sets[0])
    except ValueError as e:
        raise Unsupported(" ".join(str(e).split())) from None
    fn = rotating(call, sets)
    fn.note = _tokens_note(int(idx.numel()), f"{idx.numel()} packed valid tokens")
    fn.packed = (sets, cu, lengths)  # for the tests: what was timed
    return fn


def _prep_sdpa_dense(data: CaseData, prov: Provider, ctx: Context):
    """SDPA with one backend on the case's dense ``(B, H, S, D)`` shape, no mask: every padded position
    is computed (what a padded batch costs a kernel that takes no mask)."""
    import torch.nn.functional as TF
    from torch.nn.attention import SDPBackend, sdpa_kernel
    c = data.case
    _packed_only(data, "the dense-shape SDPA row")
    be = getattr(SDPBackend, prov.options["backend"])
    kw = {"enable_gqa": True} if data.gqa else {}

    def call(q, k, v):
        return TF.scaled_dot_product_attention(q, k, v, **kw)

    with sdpa_kernel([be]):
        try:
            call(*data.sets[0][:3])
        except RuntimeError as e:
            raise Unsupported(" ".join(str(e).split())) from None
    fn = rotating(call, [s[:3] for s in data.sets])
    fn.bench_context = functools.partial(sdpa_kernel, [be])
    fn.note = _tokens_note(c.batch * c.seqlen_q, f"dense {c.batch}x{c.seqlen_q} tokens, no mask")
    return fn


PREPARE = {"fastattn": _prep_fastattn, "sdpa": _prep_sdpa, "eager": _prep_eager, "flex": _prep_flex,
           "varlen": _prep_varlen, "sdpa_dense": _prep_sdpa_dense}


def run(ctx: Context, dtypes: Sequence[str] = ("bfloat16",), models=None, seqlens=None, paddings=None) -> int:
    cases = attention_cases(ctx.preset, dtypes, models, seqlens, paddings)
    providers = select_providers(PROVIDERS, DEFAULTS[ctx.preset if ctx.preset in DEFAULTS else "full"], ctx.providers)
    state = {}

    def prepare(case, prov):
        if state.get("case") is not case:
            state.clear()
            state["case"], state["data"] = case, CaseData(case, ctx)
        return PREPARE[prov.kind](state["data"], prov, ctx)

    def after_case(case):
        state.clear()

    # compiled providers last: with a --time-budget, their compile time must not starve the others
    first = [p for p in providers if p.kind != "flex"]
    last = [p for p in providers if p.kind == "flex"]
    n = 0
    for group in (first, last):
        if group:
            n += run_cases(ctx, SUITE, cases, group, describe, prepare, after_case=after_case)
    return n


__all__ = ["SUITE", "MODELS", "PROVIDERS", "AttnCase", "attention_cases", "padded_lengths", "spread_lengths",
           "describe", "run"]

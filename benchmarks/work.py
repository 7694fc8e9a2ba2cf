"""Print the per-case work table of ``NOTES.md`` (FLOPs, minimum bytes, FLOP/byte) from ``flops.py``:
``python -m benchmarks.work [--preset quick|full|train]``. Computed counts, not measurements.

``--preset train --predict`` prints the H200 predictions of ``NOTES.md`` for the training rows: the
counts above combined with the efficiency *assumptions* below (every one of them an input to a
prediction, none a measurement)."""

from __future__ import annotations

import argparse
import math
from typing import Dict, List, Optional, Tuple

from . import bench_attention, bench_e2e, bench_ffn
from . import flops as F

# ----------------------------------------------------------------------------------- assumptions
#: H200 figures of issue #11: measured bf16 dense matmul TFLOP/s and copy GB/s (the roofline)
H200_TFLOPS = 790.0
H200_GBPS = 4300.0
Range = Tuple[float, float]
#: Assumed forward efficiency, a fraction of H200_TFLOPS in counted (visible-pair) FLOPs, per provider
#: and shape class ("short": S <= 1024; S = 2048 takes the mean of "short" and its long class; "bert":
#: the padded BERT shape, as a fraction of the *executed* work, see EXECUTES_PADDING). fastattn-triton:
#: the sm_90 ranges of notes/triton_attention.md. The others: recalled from published H100 plots
#: (FlashAttention-2 and -3 papers, which also plot cuDNN), not checked on any GPU here.
FWD_EFF: Dict[str, Dict[str, Range]] = {
    "fastattn-triton": {"d128": (.40, .55), "d128-causal": (.35, .50), "d64": (.30, .45), "d64-causal": (.25, .40),
                        "short": (.15, .35), "bert": (.15, .30)},
    "sdpa-flash": {"d128": (.40, .45), "d128-causal": (.36, .42), "d64": (.33, .38), "d64-causal": (.30, .35),
                   "short": (.25, .35)},
    "sdpa-cudnn": {"d128": (.65, .75), "d128-causal": (.55, .68), "d64": (.48, .56), "d64-causal": (.42, .52),
                   "short": (.30, .45), "bert": (.30, .45)},
    "sdpa-efficient": {"d128": (.25, .32), "d128-causal": (.22, .30), "d64": (.25, .32), "d64-causal": (.22, .30),
                       "short": (.20, .28), "bert": (.20, .28)},
    "flex": {"d128": (.35, .42), "d128-causal": (.30, .38), "d64": (.28, .35), "d64-causal": (.25, .32),
             "short": (.20, .30), "bert": (.15, .25)},
}
#: Assumed backward efficiency / forward efficiency (counted FLOPs). FlashAttention-2-style backward:
#: 0.6-0.7 (issue #11). fastattn-triton and FlexAttention recompute S and dP for dQ (7 products executed
#: for 5 counted): 0.6-0.7 x 5/7. The memory-efficient kernel's backward: 0.5-0.6.
BWD_RATIO: Dict[str, Range] = {"fastattn-triton": (.43, .50), "sdpa-flash": (.60, .70), "sdpa-cudnn": (.60, .70),
                               "sdpa-efficient": (.50, .60), "flex": (.43, .50)}
#: providers that compute the padded keys of a bool mask (no block skipping): their useful efficiency on
#: the padded shape is the executed one times useful/executed pairs
EXECUTES_PADDING = ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient")
#: providers recorded unsupported on a case kind, with the reason the suite will write
UNSUPPORTED = {("sdpa-flash", "bert"): "flash takes no attn_mask"}
TRAIN_PROVIDERS = ("fastattn-triton", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "flex")


def _mid(r: Range) -> float:
    return math.sqrt(r[0] * r[1])


def _shape_class(c) -> List[str]:
    if c.len_lo:
        return ["bert"]
    long = f"d{c.head_dim}" + ("-causal" if c.causal != "none" else "")
    if c.seqlen_q <= 1024:
        return ["short"]
    if c.seqlen_q <= 2048:
        return ["short", long]
    return [long]


def fwd_bwd_time_ms(c, provider: str, fwd_eff: float, ratio: float) -> float:
    """Predicted fwd+bwd time: counted forward FLOPs at ``fwd_eff`` plus 2.5x them at ``fwd_eff * ratio``
    (useful efficiency: executed work above the useful count slows a provider down proportionally)."""
    d = bench_attention.describe(c)
    fwd = F.attention_flops(c.batch, c.heads_q, c.seqlen_q, c.seqlen_k, c.head_dim, causal=c.causal,
                            key_lengths=c.key_lengths)
    if c.len_lo and provider in EXECUTES_PADDING:
        fwd_eff *= fwd / F.attention_flops(c.batch, c.heads_q, c.seqlen_q, c.seqlen_k, c.head_dim, causal=c.causal)
    t = fwd / (fwd_eff * H200_TFLOPS * 1e12) * (1 + 2.5 / ratio)
    t = max(t, d["bytes"] / (H200_GBPS * 1e9))
    return t * 1e3


def predict_attention(c, provider: str) -> Optional[Tuple[float, float, float]]:
    """(fastest, middle, slowest) predicted ms of a training case, or None if recorded unsupported."""
    classes = _shape_class(c)
    if any((provider, k) in UNSUPPORTED for k in classes):
        return None
    effs = [FWD_EFF[provider][k] for k in classes]
    e = (sum(x[0] for x in effs) / len(effs), sum(x[1] for x in effs) / len(effs))
    r = BWD_RATIO[provider]
    return (fwd_bwd_time_ms(c, provider, e[1], r[1]), fwd_bwd_time_ms(c, provider, _mid(e), _mid(r)),
            fwd_bwd_time_ms(c, provider, e[0], r[0]))


def attention_prediction_table() -> str:
    head = ["case", "fwd+bwd FLOPs", "roofline ms"] + list(TRAIN_PROVIDERS) + ["speed-up vs best SDPA; vs flash"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in bench_attention.attention_cases("train", ["bfloat16"]):
        d = bench_attention.describe(c)
        roof = max(d["flops"] / (H200_TFLOPS * 1e12), d["bytes"] / (H200_GBPS * 1e9)) * 1e3
        cells, mids = [], {}
        for p in TRAIN_PROVIDERS:
            pr = predict_attention(c, p)
            if pr is None:
                cells.append("unsupported")
                continue
            mids[p] = pr[1]
            cells.append(f"{pr[1]:.3g} ({pr[0]:.3g}-{pr[2]:.3g})")
        sdpa = {p: t for p, t in mids.items() if p.startswith("sdpa-")}
        best = min(sdpa, key=sdpa.get)
        ratio = f"{sdpa[best] / mids['fastattn-triton']:.2f}x ({best.replace('sdpa-', '')})"
        if "sdpa-flash" in sdpa:
            ratio += f"; {sdpa['sdpa-flash'] / mids['fastattn-triton']:.2f}x"
        lines.append(f"| `{c.name}` | {d['flops']:.3g} | {roof:.3g} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


#: fine-tuning step assumptions: GEMM efficiency under fp16 autocast (M = tokens, N, K = 768..3072),
#: elementwise work (LayerNorm, GELU, dropout, residuals, casts) as a fraction of the GEMM time, and the
#: fused AdamW + GradScaler traffic per parameter (fp32 param, grad, two moments: 28 B read+written,
#: plus the unscale pass over the grads)
STEP_GEMM_EFF: Range = (.55, .65)
STEP_ELEMENTWISE: Range = (.20, .35)
STEP_OPT_BYTES_PER_PARAM = 36
BERT_BASE_PARAMS = 109_483_778  # BertForSequenceClassification, 2 labels


def predict_step(c, provider: str) -> Tuple[float, float, float]:
    """(fastest, middle, slowest) predicted ms of a fine-tuning step (GPU-bound; host time ignored).
    hf-sdpa runs every position (B x S tokens) and SDPA's memory-efficient kernel with dropout over the
    full S x S; fastattn-optimize runs the valid tokens only (unpadded encoder) and the Triton varlen
    kernel with in-kernel dropout over each sequence's own tokens ("bert" efficiency class)."""
    cfg = bench_e2e._config(c.model)
    lengths = bench_e2e._lengths(c)
    L, d, f, h = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    if provider == "hf-sdpa":
        tokens, attn_p = c.batch * c.seqlen, "sdpa-efficient"
        attn_fwd = L * F.attention_flops(c.batch, h, c.seqlen, c.seqlen, d // h)
    else:
        tokens, attn_p = sum(lengths), "fastattn-triton"
        attn_fwd = L * sum(F.attention_flops(1, h, n, n, d // h) for n in lengths)
    gemm = L * 3 * 2 * (4 * d * d + 2 * d * f) * tokens
    t_opt = BERT_BASE_PARAMS * STEP_OPT_BYTES_PER_PARAM / (H200_GBPS * 1e9)
    out = []
    for eff, cost in ((lambda r: r[1], lambda r: r[0]), (_mid, _mid), (lambda r: r[0], lambda r: r[1])):
        t_attn = attn_fwd / (eff(FWD_EFF[attn_p]["bert"]) * H200_TFLOPS * 1e12) * (1 + 2.5 / eff(BWD_RATIO[attn_p]))
        t_gemm = gemm / (eff(STEP_GEMM_EFF) * H200_TFLOPS * 1e12)
        out.append((t_gemm * (1 + cost(STEP_ELEMENTWISE)) + t_attn + t_opt) * 1e3)
    return out[0], out[1], out[2]


def step_prediction_table() -> str:
    lines = ["| case | useful FLOPs | hf-sdpa ms | fastattn-optimize ms | speed-up |", "|---|---|---|---|---|"]
    for c in bench_e2e.e2e_cases("train", ["float16"]):
        d = bench_e2e.describe(c)
        hf, ours = predict_step(c, "hf-sdpa"), predict_step(c, "fastattn-optimize")
        lines.append(f"| `{c.name}` | {d['flops']:.3g} | {hf[1]:.3g} ({hf[0]:.3g}-{hf[2]:.3g}) | "
                     f"{ours[1]:.3g} ({ours[0]:.3g}-{ours[2]:.3g}) | {hf[1] / ours[1]:.2f}x |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- work
def table(preset: str = "quick") -> str:
    lines = ["| case | visible pairs (all b, h) | FLOPs | min bytes | FLOP/byte |", "|---|---|---|---|---|"]
    for c in bench_attention.attention_cases(preset, ["bfloat16"]):
        kl = c.key_lengths or [None] * c.batch
        pairs = c.heads_q * sum(F.visible_pairs(c.seqlen_q, c.seqlen_k, c.causal, n) for n in kl)
        d = bench_attention.describe(c)
        lines.append(f"| `{c.name}` | {pairs:,} | {d['flops']:.3g} | {d['bytes']:.3g} | "
                     f"{d['flops'] / d['bytes']:.0f} |")
    if preset == "train":
        return "\n".join(lines)
    for c in bench_ffn.ffn_cases(preset, ["bfloat16"]):
        d = bench_ffn.describe(c)
        lines.append(f"| `{c.name}` | — | {d['flops']:.3g} | {d['bytes']:.3g} | {d['flops'] / d['bytes']:.0f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.work", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=("quick", "full", "train"), default="quick")
    p.add_argument("--predict", action="store_true", help="with --preset train: the H200 prediction tables")
    a = p.parse_args(argv)
    if a.predict:
        if a.preset != "train":
            p.error("--predict goes with --preset train")
        print(attention_prediction_table())
        print()
        print(step_prediction_table())
        return 0
    print(table(a.preset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

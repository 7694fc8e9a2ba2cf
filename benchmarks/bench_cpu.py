"""The ``cpu`` suite: what a CPU user of fastattn pays or gains, measured in one process.

* ``host``: per-call time of ``fastattn.attention`` (no mask, bool mask, ``KeyPadding``), of a plan's
  ``run`` and of ``fastattn.gelu_ffn`` beside PyTorch's own call on the same tiny tensors (q (1,1,1,64),
  k/v (1,1,16,64); x (4,64)), interleaved, median of >= 2000 calls per provider (``--preset smoke``: 200).
  The ratio to the PyTorch call is in ``note``.
* ``e2e``: a BERT-base-sized ``BertModel`` (random weights, fp32), B=8, S=128 (and S=512 outside
  smoke), right-padded lengths drawn from U[S/4, S] with a fixed seed, forward under ``inference_mode``:
  HF ``sdpa`` (what a user runs without fastattn) against ``fastattn.optimize(model)`` (unpads the
  encoder on CPU) and ``optimize(model, unpad=False)``, interleaved.

The CPU runs the torch backend; no GPU number comes from here.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

SUITE = "cpu"


def _interleaved(calls: Dict[str, Callable[[], object]], n_calls: int, block: int = 50) -> Dict[str, List[float]]:
    """Per-call seconds of each callable: blocks of ``block`` calls, providers interleaved."""
    for f in calls.values():
        for _ in range(20):
            f()
    res = {n: [] for n in calls}
    for _ in range(max(1, n_calls // block)):
        for n, f in calls.items():
            t = time.perf_counter()
            for _ in range(block):
                f()
            res[n].append((time.perf_counter() - t) / block)
    return res


def host_calls():
    import torch
    import torch.nn.functional as F

    import fastattn
    from fastattn.attention.plan import plan_for
    from fastattn.inputs import normalize_attention
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 1, 1, 64, generator=g), torch.randn(1, 1, 16, 64, generator=g), torch.randn(1, 1, 16, 64, generator=g)
    bm = torch.rand(1, 1, 1, 16, generator=g) > 0.3
    bm[..., 0] = True
    kp = fastattn.KeyPadding(lengths=torch.tensor([12]))
    kp_dense = (torch.arange(16) < 12).view(1, 1, 1, 16)
    inp = normalize_attention(q, k, v)
    plan = plan_for(inp)
    x = torch.randn(4, 64, generator=g)
    w1, b1 = torch.randn(256, 64, generator=g) * 0.1, torch.randn(256, generator=g)
    w2, b2 = torch.randn(64, 256, generator=g) * 0.1, torch.randn(64, generator=g)
    pairs = {  # provider: (call, what it is compared with)
        "sdpa": (lambda: F.scaled_dot_product_attention(q, k, v), None),
        "fastattn": (lambda: fastattn.attention(q, k, v), "sdpa"),
        "plan.run": (lambda: plan.run(inp), "sdpa"),
        "sdpa-boolmask": (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bm), None),
        "fastattn-boolmask": (lambda: fastattn.attention(q, k, v, attn_mask=bm), "sdpa-boolmask"),
        "sdpa-keypadding-as-bool": (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=kp_dense), None),
        "fastattn-keypadding": (lambda: fastattn.attention(q, k, v, attn_mask=kp), "sdpa-keypadding-as-bool"),
        "eager-ffn": (lambda: F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2), None),
        "fastattn-gelu_ffn": (lambda: fastattn.gelu_ffn(x, w1, b1, w2, b2), "eager-ffn"),
    }
    return pairs


def run_host(ctx) -> int:
    pairs = host_calls()
    n_calls = 200 if ctx.preset == "smoke" else 2000
    res = _interleaved({n: c for n, (c, _) in pairs.items()}, n_calls)
    med = {n: statistics.median(t) for n, t in res.items()}
    for n, (_, base) in pairs.items():
        ts = sorted(res[n])
        note = f"{len(ts) * 50} calls, interleaved blocks of 50, wall clock"
        if ctx.smoke:
            note = "smoke: CPU harness check, not a measurement; " + note
        if base:
            note += f"; {med[n] / med[base]:.2f}x {base}"
        ctx.writer.write(SUITE, dict(case="host-q1-k16-d64-float32", provider=n, status="ok", metric="per_call",
                                     dtype="float32", batch=1, heads_q=1, heads_kv=1, seqlen_q=1, seqlen_k=16,
                                     head_dim=64, median_ms=med[n] * 1e3, p20_ms=ts[len(ts) // 5] * 1e3,
                                     p80_ms=ts[(4 * len(ts)) // 5] * 1e3, note=note))
    return len(pairs)


def _bert(S: int, layers: int):
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=3072,
                     max_position_embeddings=max(512, S), attn_implementation="sdpa")
    return BertModel(cfg).eval()


def run_e2e(ctx) -> int:
    import copy

    import torch

    import fastattn
    n = 0
    shapes = [(8, 128)] if ctx.preset == "smoke" else [(8, 128), (8, 512)]
    reps = 3 if ctx.preset == "smoke" else 10
    for B, S in shapes:
        g = torch.Generator().manual_seed(1234)
        lengths = torch.randint(S // 4, S + 1, (B,), generator=g)
        ids = torch.randint(1000, 30000, (B, S), generator=g)
        mask = (torch.arange(S).view(1, S) < lengths.view(B, 1)).long()
        layers = 2 if ctx.preset == "smoke" else 12
        stock = _bert(S, layers)
        ours = fastattn.optimize(copy.deepcopy(stock))
        padded = fastattn.optimize(copy.deepcopy(stock), unpad=False)
        calls = {"hf-sdpa": lambda: stock(input_ids=ids, attention_mask=mask),
                 "fastattn.optimize": lambda: ours(input_ids=ids, attention_mask=mask),
                 "fastattn.optimize(unpad=False)": lambda: padded(input_ids=ids, attention_mask=mask)}
        with torch.inference_mode():
            for f in calls.values():
                f()
            times = {k: [] for k in calls}
            for _ in range(reps):
                for k, f in calls.items():
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, ts in times.items():
            ts = sorted(ts)
            note = (f"BertModel {layers}x768 random weights, lengths U[{S // 4},{S}] seed 1234 (mean padding "
                    f"{1 - float(lengths.float().mean()) / S:.1%}), inference_mode, {reps} interleaved runs, "
                    f"torch threads {torch.get_num_threads()}")
            if k != "hf-sdpa":
                note += f"; {med['hf-sdpa'] / med[k]:.2f}x speed-up over hf-sdpa"
            if ctx.smoke:
                note = "smoke: CPU harness check, not a measurement; " + note
            ctx.writer.write(SUITE, dict(case=f"bert-{'base' if layers == 12 else f'{layers}layer'}-b{B}-s{S}-float32", provider=k, status="ok", metric="time",
                                         dtype="float32", batch=B, heads_q=12, heads_kv=12, seqlen_q=S, seqlen_k=S,
                                         head_dim=64, padding=f"U[{S // 4},{S}]", d_model=768, d_ffn=3072,
                                         median_ms=med[k] * 1e3, p20_ms=ts[len(ts) // 5] * 1e3,
                                         p80_ms=ts[(4 * len(ts)) // 5] * 1e3, note=note))
            n += 1
    return n


def run(ctx) -> int:
    """What a CPU user gets: never the Triton interpreter (see ``harness.without_triton_interpreter``)."""
    from .harness import without_triton_interpreter
    with without_triton_interpreter():
        return run_host(ctx) + run_e2e(ctx)

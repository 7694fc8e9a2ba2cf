"""Python-layer overhead of ``fastattn.attention`` / ``fastattn.gelu_ffn``: argument normalisation,
dispatch, the ``fastattn::`` custom op and the launcher, per call, on the CPU.

"Above the kernel" is measured exactly by swapping a *null kernel* backend in for ``triton`` (its
``launch`` only allocates the LSE and returns, the way a real launcher's bookkeeping would, but starts
no kernel): a ``fastattn.attention(..., backend="triton")`` call then costs everything fastattn adds
in Python and the torch dispatcher, and nothing else. Goal: <= 20 us per call. The real launch of a
Triton kernel (its Python launcher) or of the CUDA extension (pybind11) adds on top and can only be
measured on a GPU machine.

The measurements are pytest-benchmark tests (``tests/benchmarks/test_overhead.py``, marker
``benchmark``, excluded from the default run); ``fastattn bench --smoke`` / ``--suite overhead`` runs
them and stores one row per test (``metric = per_call``) in ``overhead.csv``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable, Dict, Iterator, List, Tuple

from .harness import REPO_ROOT, Context, _quantile

SUITE = "overhead"
SHAPE = (1, 2, 16, 32)  # B, H, L, D: tiny, so the torch calls themselves are cheap


@contextlib.contextmanager
def null_kernels() -> Iterator[Dict[str, int]]:
    """Temporarily replace the ``triton`` attention and FFN backends by null kernels (restored on
    exit). Yields a counter of launches, so a test can assert the kernel path really ran."""
    import torch

    from fastattn import dispatch
    from fastattn.attention.backends.base import AttnBackend
    from fastattn.ffn.backends import GeluFFNBackend, LinearActBackend
    counts = {"attention": 0, "gelu_ffn": 0}

    class NullAttention(AttnBackend):
        name, op = "triton", "attention"

        def _probe(self):
            return None

        def not_supported_reasons(self, inp):
            return []

        def launch(self, inp, out, rng=(0, 0)):
            counts["attention"] += 1
            return inp.query.new_empty((inp.B, inp.Hq, inp.Lq), dtype=torch.float32)

    class NullLinearAct(LinearActBackend):  # gelu_ffn runs it twice
        name, DEVICES = "triton", ("any",)

        def launch(self, x, weight, bias, residual, activation, out):
            counts["gelu_ffn"] += 1

    null_linear = NullLinearAct()
    tables = (dispatch.backends("attention"), dispatch.backends("linear_act"), dispatch.backends("gelu_ffn"))
    saved = [t["triton"] for t in tables]
    for t, b in zip(tables, (NullAttention(), null_linear, GeluFFNBackend(null_linear))):
        t["triton"] = b
    # A null kernel writes nothing, so it cannot pass the first-use numeric self-check (fastattn.selfcheck),
    # and what is timed here is the steady state after that one-off check: turn it off while swapped in.
    saved_mode = os.environ.get("FASTATTN_SELF_CHECK")
    os.environ["FASTATTN_SELF_CHECK"] = "0"
    try:
        yield counts
    finally:
        for t, b in zip(tables, saved):
            t["triton"] = b
        if saved_mode is None:
            os.environ.pop("FASTATTN_SELF_CHECK", None)
        else:
            os.environ["FASTATTN_SELF_CHECK"] = saved_mode


def inputs(seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    B, H, L, D = SHAPE
    q, k, v = (torch.randn(B, H, L, D, generator=g) for _ in range(3))
    lengths = torch.tensor([L - 3] * B, dtype=torch.int32)
    boolmask = torch.rand(B, 1, 1, L, generator=g) > 0.2
    boolmask[..., 0] = True
    x = torch.randn(B, L, 64, generator=g)
    w1, b1 = torch.randn(256, 64, generator=g) * 0.1, torch.randn(256, generator=g)
    w2, b2 = torch.randn(64, 256, generator=g) * 0.1, torch.randn(64, generator=g)
    return dict(q=q, k=k, v=v, lengths=lengths, boolmask=boolmask, ffn=(x, w1, b1, w2, b2))


def calls(d) -> Dict[str, Tuple[Callable[[], object], str]]:
    """name -> (zero-argument call, what it measures). Names starting ``null-`` need
    :func:`null_kernels` active."""
    import torch
    import torch.nn.functional as TF

    import fastattn
    from fastattn import dispatch
    from fastattn.inputs import normalize_attention
    q, k, v = d["q"], d["k"], d["v"]
    kp = fastattn.KeyPadding(lengths=d["lengths"])
    kpc = fastattn.KeyPadding(lengths=d["lengths"], causal="top_left")
    inp = normalize_attention(q, k, v)
    x, w1, b1, w2, b2 = d["ffn"]
    return {
        "null-attention": (lambda: fastattn.attention(q, k, v, backend="triton"),
                           "fastattn.attention, no mask, no-op kernel: everything above the kernel"),
        "null-attention-causal": (lambda: fastattn.attention(q, k, v, is_causal=True, backend="triton"),
                                  "as null-attention, is_causal=True"),
        "null-attention-keypadding": (lambda: fastattn.attention(q, k, v, attn_mask=kpc, backend="triton"),
                                      "as null-attention, KeyPadding(lengths, causal)"),
        "null-attention-boolmask": (lambda: fastattn.attention(q, k, v, attn_mask=d["boolmask"], backend="triton"),
                                    "as null-attention, (B,1,1,Lk) bool mask"),
        "null-attention-auto": (lambda: fastattn.attention(q, k, v, attn_mask=kp),
                                "as null-attention with backend=None (auto dispatch walks cuda -> triton)"),
        "null-custom-op": (lambda: torch.ops.fastattn.attn_fwd(q, k, v, None, None, None, 0, 0.125, "triton", False),
                           "torch.ops.fastattn.attn_fwd alone (custom-op dispatch + output allocation)"),
        "null-gelu-ffn": (lambda: fastattn.gelu_ffn(x, w1, b1, w2, b2, backend="triton"),
                          "fastattn.gelu_ffn, no-op kernel: everything above the kernel"),
        "normalize-attention": (lambda: normalize_attention(q, k, v, d["boolmask"]),
                                "fastattn.inputs.normalize_attention (bool mask)"),
        "dispatch-select-auto": (lambda: dispatch.select("attention", inp, None),
                                 "fastattn.dispatch.select, auto"),
        "torch-sdpa": (lambda: TF.scaled_dot_product_attention(q, k, v),
                       "reference point: torch SDPA on the same tiny CPU tensors (includes its CPU math)"),
        "fastattn-torch": (lambda: fastattn.attention(q, k, v, backend="torch"),
                           "fastattn.attention on the torch backend (includes SDPA's CPU math)"),
    }


def run(ctx: Context) -> int:
    """Run the pytest-benchmark tests in a child pytest and store one row per test."""
    with tempfile.TemporaryDirectory(prefix="fastattn-overhead-") as tmp:
        js = os.path.join(tmp, "bench.json")
        cmd = [sys.executable, "-m", "pytest", os.path.join(REPO_ROOT, "tests", "benchmarks"), "-m", "benchmark",
               "-q", "-p", "no:cacheprovider", f"--benchmark-json={js}", "--benchmark-save-data",
               "--benchmark-disable-gc", "--benchmark-warmup=on"]
        if ctx.smoke:
            cmd += ["--benchmark-max-time=0.05", "--benchmark-min-rounds=20"]
        env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        if p.returncode != 0 or not os.path.exists(js):
            tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"overhead benchmarks failed (pytest exit {p.returncode}):\n{tail}")
        with open(js) as f:
            report = json.load(f)
    return write_rows(ctx, report)


def rows_from_report(report: dict) -> List[dict]:
    """pytest-benchmark JSON -> result rows (times in ms; p20/p80 from the raw rounds)."""
    import torch
    descr = {}
    for name, (_, what) in calls(inputs()).items():
        descr[name] = what
    B, H, L, D = SHAPE
    out = []
    for b in report.get("benchmarks", []):
        name = b.get("extra_info", {}).get("call") or b["name"]
        data = b["stats"].get("data") or []
        med = b["stats"]["median"] * 1e3
        p20 = _quantile(data, 0.2) * 1e3 if data else None
        p80 = _quantile(data, 0.8) * 1e3 if data else None
        note = f"{descr.get(name, name)}; {b['stats']['rounds']} rounds, min {b['stats']['min'] * 1e6:.3g} us"
        out.append(dict(case=f"overhead-b{B}-h{H}-q{L}-k{L}-d{D}-float32", provider=name, status="ok", metric="per_call",
                        dtype=str(torch.float32).replace("torch.", ""), batch=B, heads_q=H, heads_kv=H, seqlen_q=L,
                        seqlen_k=L, head_dim=D, causal="top_left" if "causal" in name else "none",
                        median_ms=med, p20_ms=p20, p80_ms=p80, note=note))
    return out


def write_rows(ctx: Context, report: dict) -> int:
    n = 0
    for row in rows_from_report(report):
        ctx.writer.write(SUITE, row)
        n += 1
    return n


def summarize(rows: List[dict]) -> str:
    """One line per measured call, in microseconds."""
    lines = []
    for r in rows:
        lines.append(f"  {r['provider']:28} median {float(r['median_ms']) * 1e3:8.2f} us")
    return "\n".join(lines)


__all__ = ["SUITE", "null_kernels", "inputs", "calls", "run", "rows_from_report", "summarize"]

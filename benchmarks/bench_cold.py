"""Cold start: the wall time from nothing compiled to the first result, per shape bucket.

Each provider runs in its own child process with empty Triton and TorchInductor caches (fresh
``TRITON_CACHE_DIR`` / ``TORCHINDUCTOR_CACHE_DIR``), so the first call of each bucket pays every JIT
compile and autotune it needs (buckets run in order in that process, so a later bucket reuses what an
earlier one compiled, as a real model's first batch would). The row's ``median_ms`` (``metric =
first_call``) is prepare + first call, synchronised: for FlexAttention that includes building the block
mask and compiling; for fastattn it includes autotuning. The note gives the second call's time.
Run with ``fastattn bench --suite cold``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

from .harness import REPO_ROOT, Context, ResultWriter, Unsupported, capture_env, short_error

SUITE = "cold"


def buckets(preset: str, dtype: str):
    """(suite, case) shape buckets of a preset."""
    from .bench_attention import MODELS, AttnCase
    from .bench_ffn import FFNCase

    def attn(model, s, decode=False):
        hq, hkv, d, causal = MODELS[model]
        if decode:
            return ("attention", AttnCase(model, 8, hq, hkv, 1, s, d, "none", 0.0, dtype, decode=True))
        return ("attention", AttnCase(model, max(1, 16384 // s), hq, hkv, s, s, d, causal, 0.0, dtype))

    if preset == "smoke":
        return [("attention", AttnCase("tiny", 2, 2, 2, 64, 64, 32, "none", 0.0, dtype))]
    if preset == "quick":
        return [attn("bert-base", 512), attn("llama3-8b", 4096), attn("llama3-8b", 8192, decode=True)]
    out = [attn(m, s) for m in ("bert-base", "gpt2-medium", "d128", "llama3-8b") for s in (128, 1024, 8192)]
    out += [attn("gpt2-medium", 4096, decode=True), attn("llama3-8b", 32768, decode=True)]
    out += [("ffn", FFNCase("bert-base", 32, 512, 768, 3072, "none", dtype)),
            ("ffn", FFNCase("gpt2-medium", 32, 512, 1024, 4096, "tanh", dtype))]
    return out


#: (suite of the bucket, provider name in that suite) -> provider name of the cold row
PROVIDERS = {
    "smoke": ["fastattn-torch"],
    "quick": ["fastattn-cuda", "fastattn-triton", "flex", "sdpa-flash"],
    "full": ["fastattn-cuda", "fastattn-triton", "flex", "sdpa-flash", "sdpa-cudnn", "torch-compile-max-autotune"],
}


def _child(provider: str, preset: str, dtype: str, device: str) -> int:
    """Runs in the child process: prints one JSON line per bucket."""
    import torch

    import fastattn  # noqa: F401 - imports are not start-up cost of a kernel: done before any clock starts

    from . import bench_attention, bench_ffn
    from .harness import _sync
    env = capture_env(device)
    with tempfile.TemporaryDirectory() as scratch:
        ctx = Context(env=env, writer=ResultWriter(scratch, env, preset), preset=preset, show_progress=False)
        for suite, case in buckets(preset, dtype):
            mod = bench_attention if suite == "attention" else bench_ffn
            provs = [p for p in mod.PROVIDERS if p.name == provider]
            res = {"suite": suite, "case": case.name}
            if not provs:
                res.update(status="unsupported", note=f"{provider} is not a {suite} provider")
                print(json.dumps(res), flush=True)
                continue
            prov = provs[0]
            try:
                t0 = time.perf_counter()
                if suite == "attention":
                    data = bench_attention.CaseData(case, ctx)
                    _sync(device)
                    t0 = time.perf_counter()  # input creation is not start-up cost
                    fn = bench_attention.PREPARE[prov.kind](data, prov, ctx)
                else:
                    sets = bench_ffn._data(case, ctx)
                    _sync(device)
                    t0 = time.perf_counter()
                    fn = bench_ffn._prepare(case, prov, ctx, sets)
                ctxm = fn.bench_context() if getattr(fn, "bench_context", None) else None
                if ctxm is not None:
                    ctxm.__enter__()
                try:
                    fn()
                    _sync(device)
                    first = (time.perf_counter() - t0) * 1e3
                    t1 = time.perf_counter()
                    fn()
                    _sync(device)
                    second = (time.perf_counter() - t1) * 1e3
                finally:
                    if ctxm is not None:
                        ctxm.__exit__(None, None, None)
                res.update(status="ok", first_ms=first, second_ms=second)
            except (Unsupported, NotImplementedError) as e:
                res.update(status="unsupported", note=short_error(e))
            except Exception as e:  # noqa: BLE001
                res.update(status="error", note=short_error(e))
            finally:
                fn = None
                if device == "cuda":
                    torch.cuda.empty_cache()
            print(json.dumps(res), flush=True)
    return 0


def run(ctx: Context, dtypes: Sequence[str] = ("bfloat16",), child_timeout_s: Optional[float] = None) -> int:
    from . import bench_attention, bench_ffn
    names = PROVIDERS.get(ctx.preset, PROVIDERS["full"])
    if ctx.providers:
        import fnmatch
        every = {p.name for p in bench_attention.PROVIDERS} | {p.name for p in bench_ffn.PROVIDERS}
        names = [n for n in sorted(every) if any(fnmatch.fnmatchcase(n, w) for w in ctx.providers)]
    n = 0
    for dtype in dtypes:
        case_rows = {}
        for suite, case in buckets(ctx.preset, dtype):
            d = (bench_attention.describe if suite == "attention" else bench_ffn.describe)(case)
            d.pop("flops", None)
            d.pop("bytes", None)
            case_rows[case.name] = d
        for provider in names:
            rows = _run_child(ctx, provider, dtype, child_timeout_s)
            for bucket_name, base in case_rows.items():
                r = rows.get(bucket_name)
                row = dict(base, provider=provider, metric="first_call")
                if r is None:
                    why = rows.get("_error", "the child process produced no result for this bucket")
                    ctx.writer.write(SUITE, dict(row, status="skipped" if "time budget" in why else "error", note=why))
                elif r["status"] == "ok":
                    note = (f"prepare + first call with empty Triton/Inductor caches; second call "
                            f"{r['second_ms']:.4g} ms (single synchronised call)")
                    if ctx.smoke:
                        note = "smoke: CPU harness check, not a measurement; " + note
                    ctx.writer.write(SUITE, dict(row, status="ok", median_ms=r["first_ms"], note=note))
                    n += 1
                else:
                    ctx.writer.write(SUITE, dict(row, status=r["status"], note=r.get("note", "")))
    return n


def _run_child(ctx: Context, provider: str, dtype: str, timeout_s: Optional[float]) -> dict:
    if ctx.out_of_time():
        return {"_error": "time budget exhausted before this provider"}
    if timeout_s is None:
        timeout_s = {"smoke": 120, "quick": 150}.get(ctx.preset, 600)
    if ctx.deadline is not None:
        timeout_s = max(5.0, min(timeout_s, ctx.deadline - time.monotonic()))
    with tempfile.TemporaryDirectory(prefix="fastattn-cold-") as tmp:
        env = dict(os.environ)
        env["TRITON_CACHE_DIR"] = os.path.join(tmp, "triton")
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tmp, "inductor")
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "benchmarks.bench_cold", "--child", provider, "--preset", ctx.preset,
               "--dtype", dtype, "--device", ctx.device]
        try:
            p = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rows = _parse(out)
            rows["_error"] = f"child process timed out after {timeout_s:.0f} s (time budget)"
            return rows
    rows = _parse(p.stdout)
    if p.returncode != 0:
        tail = " ".join((p.stderr or "").strip().splitlines()[-3:])
        rows["_error"] = f"child process exited with {p.returncode}: {tail[-300:]}"
    return rows


def _parse(text: str) -> dict:
    rows = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[r["case"]] = r
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="cold-start child process (internal)")
    p.add_argument("--child", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--dtype", required=True)
    p.add_argument("--device", required=True)
    a = p.parse_args(argv)
    return _child(a.child, a.preset, a.dtype, a.device)


if __name__ == "__main__":
    raise SystemExit(main())

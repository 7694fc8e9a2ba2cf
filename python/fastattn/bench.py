"""``fastattn bench``: run the benchmark suite of a source checkout (``benchmarks/``), or draw plots
from the rows it stored.

The suite is not part of the installed package: it is found next to the package (an editable
install of a checkout), in the current directory or its parents, or at ``$FASTATTN_REPO``.

Examples::

    fastattn bench --smoke                       # CPU: tiny sweep + overhead, proves the harness
    fastattn bench                               # GPU: the quick preset of every suite
    fastattn bench --preset full --suite attention --models bert-base --time-budget 540 --resume
    fastattn bench --preset train                # GPU: attention fwd+bwd and the BERT fine-tuning step
    fastattn bench --preset unpad --dtype fp16,bf16   # GPU: the unpadded BERT encoder and varlen (issue #12)
    fastattn bench --plot                        # PNGs from stored rows only
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from typing import List, Optional

SUITES = ("attention", "ffn", "e2e", "cold", "overhead", "cpu")
REPO_ENV = "FASTATTN_REPO"
#: the suites a preset has cases for, in the order they run by default. train: the short fine-tuning step
#: first, so that a --time-budget cut falls on the attention sweep's last cases (FlexAttention's compiles)
PRESET_SUITES = {"train": ("e2e", "attention"), "unpad": ("e2e", "attention")}


def find_repo_root() -> Optional[str]:
    """The checkout holding ``benchmarks/harness.py``: ``$FASTATTN_REPO``, the package's checkout
    (``<root>/python/fastattn``), or the current directory or one of its parents."""
    cands = []
    if os.environ.get(REPO_ENV):
        cands.append(os.environ[REPO_ENV])
    here = os.path.dirname(os.path.abspath(__file__))
    cands.append(os.path.dirname(os.path.dirname(here)))
    d = os.getcwd()
    while True:
        cands.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for c in cands:
        if os.path.isfile(os.path.join(c, "benchmarks", "harness.py")) and \
                os.path.isfile(os.path.join(c, "benchmarks", "__init__.py")):
            return os.path.abspath(c)
    return None


def import_suite(root: str):
    """Import ``benchmarks`` from ``root`` (and make sure it is that one)."""
    if root not in sys.path:
        sys.path.insert(0, root)
    mod = sys.modules.get("benchmarks")
    expected = os.path.join(root, "benchmarks")
    if mod is not None and os.path.dirname(os.path.abspath(getattr(mod, "__file__", "") or "")) != expected:
        raise ImportError(f"a different module named 'benchmarks' is already imported ({getattr(mod, '__file__', mod)}); "
                          f"run fastattn bench from a fresh process")
    return importlib.import_module("benchmarks.harness")


def _csv(s: Optional[str]) -> Optional[List[str]]:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastattn bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="CPU-only tiny sweep of every suite with the torch backend plus the overhead benchmark; "
                        "writes to benchmarks/results/smoke/ (ignored by git); rows are marked smoke")
    p.add_argument("--preset", choices=("quick", "full", "headline", "train", "unpad"), default="quick",
                   help="case list: quick (a few cases of each suite, minutes), headline (the issues' "
                        "comparisons: D=64/128 S=512..16k vs every SDPA backend, BERT key padding, FFN vs "
                        "max-autotune, HF BERT/GPT-2; order them by --suite and cut with --time-budget), "
                        "train (forward+backward: attention D=64/128 S=512..16k and padded BERT vs every SDPA "
                        "backend and FlexAttention, and the BERT-base fine-tuning step; suites e2e, attention), "
                        "unpad (BERT-base B=32 S=512 inference, lengths over [S/4, S]: HF sdpa vs optimize() with "
                        "and without unpadding, and attention_varlen on the packed tokens vs SDPA flash on the dense "
                        "shape; suites e2e, attention) or full (every shape, much longer)")
    p.add_argument("--suite", default=None,
                   help=f"comma-separated suites from {','.join(SUITES)} (default: all; the overhead suite only "
                        "with --smoke or when named)")
    p.add_argument("--providers", default=None,
                   help="comma-separated provider names or fnmatch patterns (default: the preset's list); "
                        "e.g. 'fastattn-*,sdpa-flash'")
    p.add_argument("--dtype", default="bf16", help="comma-separated: bf16, fp16, fp32 (default bf16)")
    p.add_argument("--models", default=None, help="attention/ffn: only these models (e.g. bert-base,llama3-8b)")
    p.add_argument("--seqlens", default=None, help="attention: only these sequence lengths (Lk for decode)")
    p.add_argument("--paddings", default=None, help="attention: only these padding fractions (e.g. 0,0.5)")
    p.add_argument("--out", default=None,
                   help="results folder (rows go to <out>/<gpu>/<suite>.csv); default benchmarks/results, "
                        "or benchmarks/results/smoke with --smoke")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: start no new case after this (remaining cases get status=skipped rows)")
    p.add_argument("--resume", action="store_true",
                   help="skip (case, provider, dtype) already stored for this commit and preset")
    p.add_argument("--no-peak", action="store_true", help="skip the peak-measurement step (no peak_fraction)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (a bar on a terminal, else a line per case and stage)")
    p.add_argument("--list", action="store_true", help="print the cases and providers of the selection and exit")
    p.add_argument("--plot", action="store_true", help="draw PNG plots from the stored rows (runs nothing)")
    p.add_argument("--gpu", default=None, help="with --plot: only this results subfolder (e.g. h200)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    root = find_repo_root()
    if root is None:
        print("fastattn bench: the benchmark suite (benchmarks/) is not part of the installed package; run it from "
              f"a fastattn source checkout (its root or a subfolder), or set {REPO_ENV}=/path/to/checkout",
              file=sys.stderr)
        return 2
    try:
        H = import_suite(root)
    except ImportError as e:
        print(f"fastattn bench: cannot import the suite from {root}/benchmarks: {e}", file=sys.stderr)
        return 2
    command = "fastattn bench " + shlex.join(argv)
    out = args.out or (H.SMOKE_DIR if args.smoke else H.RESULTS_DIR)

    if args.plot:
        from benchmarks import plot
        files = plot.plot_all(out, gpu=args.gpu, allow_smoke=args.smoke or os.path.abspath(out) == H.SMOKE_DIR)
        for f in files:
            print(f)
        if not files:
            print(f"fastattn bench --plot: no stored rows to plot under {out}", file=sys.stderr)
            return 1
        return 0

    own = None if args.smoke else PRESET_SUITES.get(args.preset)
    suites = _csv(args.suite) or (list(SUITES) if args.smoke else list(own) if own
                                  else [s for s in SUITES if s != "overhead"])
    bad = [s for s in suites if s not in SUITES]
    if bad:
        print(f"fastattn bench: unknown suite(s) {bad}; choose from {list(SUITES)}", file=sys.stderr)
        return 2
    if own and not set(suites) <= set(own):
        print(f"fastattn bench: --preset {args.preset} has cases for the suites {list(own)} only, not "
              f"{[s for s in suites if s not in own]}", file=sys.stderr)
        return 2
    dtypes = []
    for d in _csv(args.dtype) or ["bf16"]:
        try:
            dtypes.append(H.dtype_name(H.dtype_of(d)))
        except ValueError as e:
            print(f"fastattn bench: {e}", file=sys.stderr)
            return 2

    import torch
    if args.smoke:
        device, preset = "cpu", "smoke"
        # one intra-op thread: on a small shared CI box OpenMP wake-ups would dominate these tiny shapes
        torch.set_num_threads(1)
    elif args.list:
        device, preset = "cpu", args.preset
    elif set(suites) <= {"cpu"}:  # the CPU user's suite: host overhead and CPU end to end
        device, preset = "cpu", args.preset
    else:
        if not torch.cuda.is_available():
            print("fastattn bench: the benchmark presets need a CUDA GPU (torch.cuda.is_available() is False); "
                  "use `fastattn bench --smoke` to check the harness on CPU", file=sys.stderr)
            return 2
        device, preset = "cuda", args.preset
    env = H.capture_env(device, command=command)
    writer = H.ResultWriter(out, env, preset)
    deadline = time.monotonic() + args.time_budget if args.time_budget else None
    ctx = H.Context(env=env, writer=writer, preset=preset, deadline=deadline, providers=_csv(args.providers),
                    resume=args.resume, show_progress=not args.no_progress)
    models = _csv(args.models)
    seqlens = [int(s) for s in _csv(args.seqlens) or []] or None
    paddings = [float(s) for s in _csv(args.paddings) or []] if args.paddings else None

    if args.list:
        return _list(ctx, suites, dtypes, models, seqlens, paddings)

    print(f"fastattn bench: preset={preset} device={env.gpu} torch {env.torch} triton {env.triton} "
          f"cuda {env.cuda} commit {env.commit}\n  rows -> {writer.dir}", file=sys.stderr)
    if not args.no_peak and any(s in suites for s in ("attention", "ffn")):
        if not args.no_progress:
            print("  measuring peaks (matmul TFLOP/s, copy GB/s) ...", file=sys.stderr, flush=True)
        writer.peaks = H.measure_peaks(env, writer, preset=preset, smoke=args.smoke)
        if not args.smoke:
            print(f"  measured peaks: bf16 matmul {writer.peaks.tflops:.1f} TFLOP/s, copy {writer.peaks.gbps:.0f} GB/s",
                  file=sys.stderr)
    failed = []
    for suite in suites:
        t0 = time.monotonic()
        if not args.no_progress:
            print(f"  {suite}: running ...", file=sys.stderr, flush=True)
        try:
            n = _run_suite(suite, ctx, dtypes, models, seqlens, paddings)
        except Exception as e:  # noqa: BLE001 - one broken suite must not hide the others' results
            failed.append(suite)
            print(f"  {suite}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        print(f"  {suite}: {n} timed rows, {writer.written.get(suite, 0)} rows written in "
              f"{time.monotonic() - t0:.0f} s -> {writer.path(suite)}", file=sys.stderr)
    _summary(H, writer, suites)
    return 1 if failed else 0


def _run_suite(suite: str, ctx, dtypes, models, seqlens, paddings) -> int:
    if suite == "attention":
        from benchmarks import bench_attention
        return bench_attention.run(ctx, dtypes, models, seqlens, paddings)
    if suite == "ffn":
        from benchmarks import bench_ffn
        return bench_ffn.run(ctx, dtypes, models)
    if suite == "e2e":
        from benchmarks import bench_e2e
        return bench_e2e.run(ctx, dtypes)
    if suite == "cold":
        from benchmarks import bench_cold
        return bench_cold.run(ctx, dtypes)
    if suite == "overhead":
        from benchmarks import bench_overhead
        return bench_overhead.run(ctx)
    if suite == "cpu":
        from benchmarks import bench_cpu
        return bench_cpu.run(ctx)
    raise ValueError(suite)


def _list(ctx, suites, dtypes, models, seqlens, paddings) -> int:
    from benchmarks import bench_attention, bench_e2e, bench_ffn
    from benchmarks.harness import select_providers
    mods = {"attention": (bench_attention, lambda: bench_attention.attention_cases(ctx.preset, dtypes, models, seqlens,
                                                                                  paddings)),
            "ffn": (bench_ffn, lambda: bench_ffn.ffn_cases(ctx.preset, dtypes, models)),
            "e2e": (bench_e2e, lambda: bench_e2e.e2e_cases(ctx.preset, dtypes))}
    for s in suites:
        if s not in mods:
            print(f"{s}: (see benchmarks/bench_{s}.py)")
            continue
        mod, cases = mods[s]
        provs = select_providers(mod.PROVIDERS, mod.DEFAULTS.get(ctx.preset, mod.DEFAULTS["full"]), ctx.providers)
        cs = cases()
        print(f"{s}: {len(cs)} cases x {len(provs)} providers ({', '.join(p.name for p in provs)})")
        for c in cs:
            print(f"  {c.name} [{c.dtype}]")
    return 0


def _summary(H, writer, suites) -> None:
    for suite in suites:
        rows = [r for r in H.read_rows([writer.path(suite)]) if r["commit"] == writer.env.commit
                and r["date"] >= writer.env.date]
        if not rows:
            continue
        by = {}
        for r in rows:
            by[r["status"]] = by.get(r["status"], 0) + 1
        print(f"  {suite}: " + ", ".join(f"{v} {k}" for k, v in sorted(by.items())), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())

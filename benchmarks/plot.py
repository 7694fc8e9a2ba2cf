"""PNG plots drawn from stored result rows only (``fastattn bench --plot``); never from typed numbers.

One figure per attention model family (TFLOP/s against sequence length, one line per provider), per
decode family (GB/s against cached length), and one bar chart each for the FFN, end-to-end, cold-start
and overhead suites. Figures go to ``<results>/<gpu>/plots/``; every title names the GPU, versions and
commit(s) of the rows drawn.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional

from .harness import read_rows, result_files

PROVIDER_ORDER = ("fastattn-cuda", "fastattn-triton", "fastattn-torch", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient",
                  "flex", "eager", "sdpa-math", "torch-compile-max-autotune", "torch-compile", "hf-eager", "hf-sdpa",
                  "hf-sdpa-compile", "fastattn-optimize", "fastattn-optimize-compile")


def latest(rows: List[Dict[str, str]]) -> List[Dict[str, str]]:
    """The newest row per (suite, case, provider, dtype): rows are appended, so a re-run supersedes."""
    best: Dict[tuple, Dict[str, str]] = OrderedDict()
    for r in rows:
        key = (r["suite"], r["case"], r["provider"], r["dtype"])
        if key not in best or r["date"] >= best[key]["date"]:
            best[key] = r
    return list(best.values())


def usable(rows: List[Dict[str, str]], allow_smoke: bool) -> List[Dict[str, str]]:
    return [r for r in rows if r["status"] == "ok" and (allow_smoke or r["preset"] != "smoke")]


def family(case: str) -> str:
    """Case name without batch and lengths: ``bert-base-b32-h12/12-q512-k512-d64-pad50`` ->
    ``bert-base-h12/12-d64-pad50``."""
    return re.sub(r"-q\d+-k\d+", "", re.sub(r"-b\d+", "", case))


def _provider_key(p: str):
    return (PROVIDER_ORDER.index(p) if p in PROVIDER_ORDER else len(PROVIDER_ORDER), p)


def _stamp(rows: List[Dict[str, str]]) -> str:
    def uniq(col):
        return ", ".join(sorted({r[col] for r in rows}))
    return f"{uniq('gpu')} | torch {uniq('torch')} | triton {uniq('triton')} | commit {uniq('commit')}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def plot_all(results_dir: str, gpu: Optional[str] = None, out_dir: Optional[str] = None,
             allow_smoke: bool = False) -> List[str]:
    """Draw every figure for each ``<results_dir>/<gpu>/``; returns the PNG paths."""
    import matplotlib
    matplotlib.use("Agg")
    written: List[str] = []
    gpus = sorted({os.path.basename(os.path.dirname(p)) for p in result_files(results_dir, gpu)})
    for g in gpus:
        rows = usable(latest(read_rows(result_files(results_dir, g))), allow_smoke)
        if not rows:
            continue
        dest = out_dir or os.path.join(results_dir, g, "plots")
        os.makedirs(dest, exist_ok=True)
        written += _lines(rows, "attention", dest, decode=False)
        written += _lines(rows, "attention", dest, decode=True)
        for suite, col, label in (("ffn", "tflops", "TFLOP/s"), ("e2e", "median_ms", "ms per call"),
                                  ("cold", "median_ms", "first call, ms (log)"),
                                  ("overhead", "median_ms", "us per call")):
            written += _bars(rows, suite, col, label, dest)
    return written


def _lines(rows, suite, dest, decode: bool) -> List[str]:
    import matplotlib.pyplot as plt
    sel = [r for r in rows if r["suite"] == suite and r["metric"] == "time"
           and (("-decode-" in r["case"]) == decode)]
    groups = defaultdict(list)
    for r in sel:
        groups[(family(r["case"]), r["dtype"])].append(r)
    out = []
    col, ylabel = ("gbps", "GB/s (minimum bytes / time)") if decode else ("tflops", "TFLOP/s (visible pairs only)")
    xcol = "seqlen_k" if decode else "seqlen_q"
    for (fam, dtype), rs in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        by = defaultdict(list)
        for r in rs:
            if r[col]:
                by[r["provider"]].append((int(r[xcol]), float(r[col])))
        for prov in sorted(by, key=_provider_key):
            pts = sorted(by[prov])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    linewidth=2.2 if prov.startswith("fastattn") else 1.2, label=prov)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cached keys Lk (Lq = 1)" if decode else "sequence length (B*S = 16k tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{'decode ' if decode else ''}{fam} {dtype}\n{_stamp(rs)}", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(dest, _safe(f"{suite}-{'decode-' if decode else ''}{fam}-{dtype}") + ".png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


def _bars(rows, suite, col, label, dest) -> List[str]:
    import matplotlib.pyplot as plt
    sel = [r for r in rows if r["suite"] == suite and r[col]]
    if not sel:
        return []
    cases = sorted({r["case"] for r in sel})
    provs = sorted({r["provider"] for r in sel}, key=_provider_key)
    val = {(r["case"], r["provider"]): float(r[col]) * (1e3 if suite == "overhead" else 1.0) for r in sel}
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases) + 0.5 * len(provs)), 4.5))
    w = 0.8 / len(provs)
    for i, p in enumerate(provs):
        xs = [j + i * w for j, c in enumerate(cases) if (c, p) in val]
        ys = [val[(c, p)] for c in cases if (c, p) in val]
        ax.bar(xs, ys, width=w, label=p)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(cases))])
    ax.set_xticklabels(cases, rotation=20, ha="right", fontsize=7)
    if suite == "cold":
        ax.set_yscale("log")
    ax.set_ylabel(label)
    ax.set_title(f"{suite}\n{_stamp(sel)}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(dest, f"{suite}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]

"""Regenerate the README's benchmark table from stored rows (never from typed numbers).

The table replaces whatever lies between the markers ``<!-- bench-table:start -->`` and
``<!-- bench-table:end -->`` in the README::

    python -m benchmarks.readme_table                 # newest GPU folder under benchmarks/results
    python -m benchmarks.readme_table --gpu h200 --check   # exit 1 if the README is stale

Cells: attention prefill ``ms (TFLOP/s)``, decode ``ms (GB/s)``, FFN ``ms (TFLOP/s)``, end-to-end
``ms``; ``n/a`` where the provider does not support the case (reason in the CSV), ``error`` where it
failed. Only the newest row per (case, provider, dtype) counts, smoke rows never (unless
``--allow-smoke``, for tests). The line above each table names GPU, versions, commit(s), date(s) and
the command(s) that produced the rows. With no stored rows the markers enclose nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

from .harness import RESULTS_DIR, REPO_ROOT, read_rows, result_files
from .plot import PROVIDER_ORDER, _provider_key, latest

START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"

#: column order per suite (a provider with no row at all is left out)
COLUMNS = {
    "attention": ["fastattn-cuda", "fastattn-triton", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "flex", "eager",
                  "sdpa-math"],
    "ffn": ["fastattn-cuda", "fastattn-triton", "eager", "torch-compile-max-autotune", "torch-compile"],
    "e2e": ["hf-eager", "hf-sdpa", "hf-sdpa-compile", "fastattn-optimize", "fastattn-optimize-compile"],
}
METHOD = {
    "attention": "Median of `triton.testing.do_bench` (L2 flushed, inputs rotated); TFLOP/s count visible "
                 "(unmasked) work only, GB/s the minimum bytes.",
    "ffn": "Median of `triton.testing.do_bench` (L2 flushed, inputs and weights rotated).",
    "attention-train": "One call = forward + the gradients of q, k, v; median of `triton.testing.do_bench` (L2 "
                       "flushed, inputs rotated); TFLOP/s count 3.5x the forward's visible work.",
    "e2e": "Forward and fine-tuning step (fwd + bwd + AdamW): median of `triton.testing.do_bench`; generate: median "
           "wall clock of 5 synchronised calls.",
}
TITLES = {"attention": "Attention forward", "attention-train": "Attention forward + backward",
          "ffn": "GELU feed-forward", "e2e": "End to end (Hugging Face, random weights)"}
#: case names of the attention suite's training rows end with this (bench_attention.AttnCase.name)
TRAIN_SUFFIX = "-fwdbwd"


def _tables_of(suite: str, rs: List[Dict[str, str]]):
    """(table key, rows) of a suite: the attention suite's training rows get a table of their own."""
    if suite != "attention":
        return [(suite, rs)] if rs else []
    groups = (("attention", [r for r in rs if not r["case"].endswith(TRAIN_SUFFIX)]),
              ("attention-train", [r for r in rs if r["case"].endswith(TRAIN_SUFFIX)]))
    return [(k, g) for k, g in groups if g]


def _cell(r: Optional[Dict[str, str]], suite: str) -> str:
    if r is None:
        return ""
    if r["status"] == "unsupported":
        return "n/a"
    if r["status"] == "error":
        return "error"
    if r["status"] == "skipped":
        return ""
    ms = float(r["median_ms"])
    if suite == "e2e":
        return f"{ms:.3g} ms"
    if "-decode-" in r["case"] and r["gbps"]:
        return f"{ms:.3g} ms ({float(r['gbps']):.0f} GB/s)"
    if r["tflops"]:
        return f"{ms:.3g} ms ({float(r['tflops']):.0f} TF/s)"
    return f"{ms:.3g} ms"


def pick_gpu(results_dir: str, allow_smoke: bool = False) -> Optional[str]:
    """The results folder with the newest non-smoke row."""
    best, best_date = None, ""
    for g in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if g == "smoke" and not allow_smoke:
            continue
        rows = [r for r in read_rows(result_files(results_dir, g)) if allow_smoke or r["preset"] != "smoke"]
        d = max((r["date"] for r in rows), default="")
        if d > best_date:
            best, best_date = g, d
    return best


def build_tables(rows: List[Dict[str, str]], suites: Sequence[str] = ("attention", "ffn", "e2e"),
                 allow_smoke: bool = False, cases: Optional[Sequence[str]] = None) -> str:
    rows = [r for r in latest(rows) if allow_smoke or r["preset"] != "smoke"]
    parts: List[str] = []
    tables = []
    for suite in suites:
        rs = [r for r in rows if r["suite"] == suite and r["metric"] == "time" and (not cases or r["case"] in cases)]
        tables += _tables_of(suite, rs)
    for key, rs in tables:
        present = {r["provider"] for r in rs}
        cols = [p for p in COLUMNS.get(key.split("-")[0], []) if p in present]
        cols += sorted((p for p in present if p not in cols), key=_provider_key)
        table: Dict[tuple, Dict[str, Dict[str, str]]] = {}
        for r in rs:
            table.setdefault((r["case"], r["dtype"]), {})[r["provider"]] = r
        used = [r for r in rs if r["status"] in ("ok", "unsupported", "error")]

        def uniq(col):
            return ", ".join(sorted({r[col] for r in used})) or "?"
        parts.append(f"**{TITLES.get(key, key)}** — {uniq('gpu')}; torch {uniq('torch')}, triton {uniq('triton')}, "
                     f"CUDA {uniq('cuda')}; commit {uniq('commit')}; {uniq('date')}; "
                     f"`{'`, `'.join(sorted({r['command'] for r in used}))}`. " + METHOD.get(key, "")
                     + " `n/a` = not supported (reason in the CSV).")
        parts.append("")
        parts.append("| case | dtype | " + " | ".join(cols) + " |")
        parts.append("|---|---|" + "---|" * len(cols))
        for (case, dtype), byp in table.items():
            parts.append(f"| `{case}` | {dtype} | " + " | ".join(_cell(byp.get(p), key) for p in cols) + " |")
        parts.append("")
    return "\n".join(parts)  # empty when there are no rows: the README says so in its own words


def render(readme_text: str, tables: str, source: str) -> str:
    if START not in readme_text or END not in readme_text:
        raise ValueError(f"the README has no benchmark-table markers: add a line {START} and a line {END} "
                         "where the table goes")
    head, rest = readme_text.split(START, 1)
    _, tail = rest.split(END, 1)
    if not tables.strip():
        return head + START + "\n" + END + tail
    body = (f"\n<!-- generated by `python -m benchmarks.readme_table` from {source}; do not edit by hand -->\n"
            f"{tables.rstrip()}\n")
    return head + START + body + END + tail


def update_readme(readme: str, results_dir: str = RESULTS_DIR, gpu: Optional[str] = None, allow_smoke: bool = False,
                  check: bool = False) -> bool:
    """Rewrite the table in ``readme``; returns True if the file changed (with ``check``: would change)."""
    gpu = gpu or pick_gpu(results_dir, allow_smoke)
    rows = read_rows(result_files(results_dir, gpu)) if gpu else []
    source = os.path.relpath(os.path.join(results_dir, gpu or "<gpu>"), os.path.dirname(os.path.abspath(readme)))
    with open(readme) as f:
        old = f.read()
    new = render(old, build_tables(rows, allow_smoke=allow_smoke), source)
    if new == old:
        return False
    if not check:
        with open(readme, "w") as f:
            f.write(new)
    return True


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.readme_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", default=os.path.join(REPO_ROOT, "README.md"))
    p.add_argument("--results", default=RESULTS_DIR)
    p.add_argument("--gpu", default=None, help="results subfolder (default: the one with the newest rows)")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if the README table is stale")
    p.add_argument("--allow-smoke", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        changed = update_readme(a.readme, a.results, a.gpu, a.allow_smoke, a.check)
    except (OSError, ValueError) as e:
        print(f"readme_table: {e}", file=sys.stderr)
        return 2
    if a.check:
        print("README benchmark table is " + ("STALE" if changed else "up to date"))
        return 1 if changed else 0
    print("README benchmark table " + ("updated" if changed else "already up to date"))
    return 0


__all__ = ["START", "END", "build_tables", "render", "update_readme", "pick_gpu", "PROVIDER_ORDER"]

if __name__ == "__main__":
    raise SystemExit(main())

"""Print the per-case work table of ``NOTES.md`` (FLOPs, minimum bytes, FLOP/byte) from ``flops.py``:
``python -m benchmarks.work [--preset quick|full]``. Computed counts, not measurements."""

from __future__ import annotations

import argparse
from typing import List, Optional

from . import bench_attention, bench_ffn
from . import flops as F


def table(preset: str = "quick") -> str:
    lines = ["| case | visible pairs (all b, h) | FLOPs | min bytes | FLOP/byte |", "|---|---|---|---|---|"]
    for c in bench_attention.attention_cases(preset, ["bfloat16"]):
        kl = c.key_lengths or [None] * c.batch
        pairs = c.heads_q * sum(F.visible_pairs(c.seqlen_q, c.seqlen_k, c.causal, n) for n in kl)
        d = bench_attention.describe(c)
        lines.append(f"| `{c.name}` | {pairs:,} | {d['flops']:.3g} | {d['bytes']:.3g} | {d['flops'] / d['bytes']:.0f} |")
    for c in bench_ffn.ffn_cases(preset, ["bfloat16"]):
        d = bench_ffn.describe(c)
        lines.append(f"| `{c.name}` | — | {d['flops']:.3g} | {d['bytes']:.3g} | {d['flops'] / d['bytes']:.0f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.work", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=("quick", "full"), default="quick")
    print(table(p.parse_args(argv).preset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Merge result CSVs produced elsewhere (the GPU machine's ``OUTDIR/results``) into
``benchmarks/results``: ``python -m benchmarks.collect SRC [DST]``.

For every ``SRC/<gpu>/<suite>.csv``: the header must be :data:`benchmarks.harness.SCHEMA`; smoke rows
are dropped; rows already present in ``DST/<gpu>/<suite>.csv`` (identical in every column) are not
appended twice. Prints what was added.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .harness import RESULTS_DIR, SCHEMA, append_rows, read_rows, result_files


def merge(src: str, dst: str = RESULTS_DIR) -> int:
    files = result_files(src)
    if not files:
        raise ValueError(f"no <gpu>/<suite>.csv files under {src}")
    total = 0
    for f in files:
        gpu, suite = os.path.basename(os.path.dirname(f)), os.path.basename(f)
        target = os.path.join(dst, gpu, suite)
        have = {tuple(r[c] for c in SCHEMA) for r in read_rows([target])}
        new = [r for r in read_rows([f]) if r["preset"] != "smoke" and tuple(r[c] for c in SCHEMA) not in have]
        rows = [{c: (r[c] if r[c] != "" else None) for c in SCHEMA} for r in new]
        for r in rows:  # numbers were already formatted once: keep them verbatim
            for c in SCHEMA:
                if r[c] is not None:
                    r[c] = str(r[c])
        append_rows(target, rows)
        print(f"{os.path.relpath(target)}: +{len(rows)} rows")
        total += len(rows)
    return total


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.collect", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a results folder holding <gpu>/<suite>.csv (e.g. OUTDIR/results)")
    p.add_argument("dst", nargs="?", default=RESULTS_DIR)
    a = p.parse_args(argv)
    try:
        n = merge(a.src, a.dst)
    except (OSError, ValueError) as e:
        print(f"collect: {e}", file=sys.stderr)
        return 2
    print(f"collect: {n} rows added")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

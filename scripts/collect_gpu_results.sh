#!/usr/bin/env bash
# After `bash scripts/gpu_check.sh OUTDIR` ran on the GPU machine and OUTDIR came back here
# (the device tool's files_at folder, read-only, or any copy of OUTDIR):
#
#     bash scripts/collect_gpu_results.sh OUTDIR [EVIDENCE_DIR]
#
# 0. unpacks OUTDIR/results.tar.gz and OUTDIR/logs.tar.gz into EVIDENCE_DIR (default
#    /tmp/fastattn-gpu-<time>; never inside OUTDIR, which may be read-only). An OUTDIR that holds
#    plain results/<gpu>/<suite>.csv folders (older runs) is read as is.
# 1. merges <results>/<gpu>/<suite>.csv into benchmarks/results/<gpu>/ (same schema checked, smoke rows
#    dropped, duplicate rows not appended twice) -- e.g. benchmarks/results/h200/;
# 2. redraws the plots (benchmarks/results/<gpu>/plots/, ignored by git) from the stored rows;
# 3. regenerates the README benchmark table between <!-- bench-table:start --> / <!-- bench-table:end -->
#    (skipped with a note while README.md has no markers).
# Then review `git diff benchmarks/results README.md` and commit the CSVs. The logs (EVIDENCE_DIR/logs:
# stage logs, pytest-gpu.xml, sanitizer output, summary.txt) are the evidence for the other stages:
# attach them to the PR, do not commit them.
set -u
OUT="${1:?usage: scripts/collect_gpu_results.sh OUTDIR [EVIDENCE_DIR]}"
OUT="$(cd "$OUT" && pwd)" || exit 2
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}"

SRC=""
if [ -f "$OUT/results.tar.gz" ] || [ -f "$OUT/logs.tar.gz" ]; then
  EV="${2:-/tmp/fastattn-gpu-$(date -u +%Y%m%dT%H%M%SZ)}"
  mkdir -p "$EV" || exit 2
  for b in results logs; do
    if [ -f "$OUT/$b.tar.gz" ]; then
      tar -C "$EV" -xzf "$OUT/$b.tar.gz" || { echo "cannot unpack $OUT/$b.tar.gz" >&2; exit 2; }
    fi
  done
  [ -f "$OUT/summary.txt" ] && cp "$OUT/summary.txt" "$EV/"
  echo "unpacked into $EV (logs: $EV/logs)"
  [ -d "$EV/results" ] && SRC="$EV/results"
elif [ -d "$OUT/results" ]; then
  SRC="$OUT/results"
else
  SRC="$OUT"
fi
if [ -z "$SRC" ] || [ -z "$(find "$SRC" -name '*.csv' -print -quit 2>/dev/null)" ]; then
  echo "no result CSVs in $OUT (the bench stages did not run or wrote nothing); see the logs" >&2
  [ -f "$OUT/summary.txt" ] && cat "$OUT/summary.txt"
  exit 1
fi
"$PY" -m benchmarks.collect "$SRC" benchmarks/results || exit $?
"$PY" -m fastattn bench --plot --out benchmarks/results >/dev/null || echo "note: no plots drawn"
if grep -q 'bench-table:start' README.md 2>/dev/null; then
  "$PY" -m benchmarks.readme_table
else
  echo "note: README.md has no <!-- bench-table:start --> marker yet; table not generated"
fi
[ -f "$OUT/summary.txt" ] && cat "$OUT/summary.txt"
exit 0

#!/usr/bin/env bash
# After `bash scripts/gpu_check.sh OUTDIR` ran on the GPU machine and OUTDIR came back here
# (the device tool's files_at folder, or any copy of OUTDIR):
#
#     bash scripts/collect_gpu_results.sh OUTDIR
#
# 1. merges OUTDIR/results/<gpu>/<suite>.csv into benchmarks/results/<gpu>/ (same schema checked,
#    smoke rows dropped, duplicate rows not appended twice) -- e.g. benchmarks/results/h200/;
# 2. redraws the plots (benchmarks/results/<gpu>/plots/, ignored by git) from the stored rows;
# 3. regenerates the README benchmark table between <!-- bench-table:start --> / <!-- bench-table:end -->
#    (skipped with a note while README.md has no markers).
# Then review `git diff benchmarks/results README.md` and commit the CSVs (OUTDIR/logs and
# OUTDIR/summary.txt are the evidence for the other stages: keep them with the PR, not in the repo).
set -u
OUT="${1:?usage: scripts/collect_gpu_results.sh OUTDIR}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}"
SRC="$OUT/results"
[ -d "$SRC" ] || SRC="$OUT"
"$PY" -m benchmarks.collect "$SRC" benchmarks/results || exit $?
"$PY" -m fastattn bench --plot --out benchmarks/results >/dev/null || echo "note: no plots drawn"
if grep -q 'bench-table:start' README.md 2>/dev/null; then
  "$PY" -m benchmarks.readme_table
else
  echo "note: README.md has no <!-- bench-table:start --> marker yet; table not generated"
fi
[ -f "$OUT/summary.txt" ] && cat "$OUT/summary.txt"
exit 0

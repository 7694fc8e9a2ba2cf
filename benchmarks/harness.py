"""Shared machinery of the benchmark suite: environment capture, timing, peak measurement, the CSV
schema and writer, input rotation, the generic sweep loop and the progress bar.

Every number the suite stores comes from :func:`time_fn` (``triton.testing.do_bench`` on CUDA, median
with p20/p80; CUDA events with an L2 flush when Triton is missing; ``perf_counter`` on CPU, for the
smoke sweep only) and is written as one row of :data:`SCHEMA` by :class:`ResultWriter` to
``<out>/<gpu>/<suite>.csv``, together with the GPU, versions, commit, date and exact command.
A case a provider cannot run gets a row with ``status=unsupported`` and the reason, never a time.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import itertools
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from . import flops as F

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
SMOKE_DIR = os.path.join(RESULTS_DIR, "smoke")  # ignored by git (benchmarks/results/.gitignore)

# --------------------------------------------------------------------------------------------- schema
#: The one definition of a result row. Appending to a CSV whose header differs is an error.
SCHEMA = (
    "suite", "case", "provider", "status", "note", "metric",
    "dtype", "batch", "heads_q", "heads_kv", "seqlen_q", "seqlen_k", "head_dim", "causal", "padding",
    "d_model", "d_ffn",
    "median_ms", "p20_ms", "p80_ms", "flops", "bytes", "tflops", "gbps", "peak_fraction",
    "peak_tflops", "peak_gbps",
    "preset", "gpu", "torch", "triton", "cuda", "commit", "date", "command",
)
#: ``status`` values: a timed run, a case the provider cannot run (reason in ``note``), a failure of a
#: provider that claimed support (error in ``note``), a case not run because the time budget ran out.
STATUSES = ("ok", "unsupported", "error", "skipped")
#: ``metric`` values: what ``median_ms`` measures.
METRICS = ("time",        # steady-state time of one call (do_bench median, p20/p80)
           "first_call",  # cold start: first call incl. compile + autotune, fresh caches
           "per_call",    # Python-layer overhead per call (CPU, pytest-benchmark)
           "peak")        # the peak-measurement step (matmul TFLOP/s, copy GB/s)


class Unsupported(Exception):
    """Raised by a provider for a case it cannot run; the message is the reason stored in ``note``."""


# ------------------------------------------------------------------------------------------ environment
def _git(*args: str) -> Optional[str]:
    try:
        r = subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_commit() -> str:
    """Short commit of the checkout, with ``+dirty`` when tracked files differ from it; ``$FASTATTN_COMMIT``
    when set (the device machine gets a copy of the working tree without ``.git``)."""
    if os.environ.get("FASTATTN_COMMIT", "").strip():
        return os.environ["FASTATTN_COMMIT"].strip()
    sha = _git("rev-parse", "--short=12", "HEAD")
    if not sha:
        return "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return sha + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(name: str) -> str:
    """``"NVIDIA H200"`` -> ``"h200"``; a folder name for a device."""
    s = re.sub(r"^nvidia\s+", "", name.strip().lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s or "unknown"


@dataclass
class Env:
    """Where and how rows were produced; stamped on every row."""

    device: str            # "cuda" or "cpu"
    gpu: str               # device name ("NVIDIA H200"; "none (CPU: ...)" without a GPU)
    gpu_slug: str          # results folder name
    torch: str
    triton: str
    cuda: str
    commit: str
    date: str
    command: str
    l2_bytes: int = 50 * 2**20

    def stamp(self) -> Dict[str, str]:
        return {"gpu": self.gpu, "torch": self.torch, "triton": self.triton, "cuda": self.cuda,
                "commit": self.commit, "date": self.date, "command": self.command}


def capture_env(device: Optional[str] = None, command: Optional[str] = None) -> Env:
    import torch
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        import triton
        triton_v = triton.__version__
    except Exception:  # noqa: BLE001 - a missing/broken triton is a fact to record
        triton_v = "none"
    l2 = 50 * 2**20
    if dev == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        gpu = props.name
        l2 = int(getattr(props, "L2_cache_size", 0) or l2)
        gslug = slug(gpu)
    else:
        gpu = f"none (CPU: {_cpu_model()})"
        gslug = "cpu"
    if command is None:
        command = shlex.join([os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"]
                             + sys.argv[1:])
    return Env(device=dev, gpu=gpu, gpu_slug=gslug, torch=torch.__version__, triton=triton_v,
               cuda=str(torch.version.cuda), commit=git_commit(),
               date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               command=command, l2_bytes=l2)


# -------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


def _sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def _quantile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _cuda_events_bench(fn: Callable[[], object], warmup_ms: float, rep_ms: float) -> List[float]:
    """Fallback when Triton is missing: CUDA events around each call, L2 flushed before each."""
    import torch
    flush = torch.empty(256 * 2**20 // 4, dtype=torch.int32, device="cuda")
    fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(5):
        flush.zero_()
        fn()
    e.record()
    torch.cuda.synchronize()
    est = max(s.elapsed_time(e) / 5, 1e-3)
    for _ in range(max(1, int(warmup_ms / est))):
        fn()
    n = max(1, int(rep_ms / est))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) for a, b in zip(starts, ends)]


def time_fn(fn: Callable[[], object], device: str, warmup_ms: float = 25, rep_ms: float = 100,
            min_reps: int = 3, max_reps: int = 10_000, wall_reps: Optional[int] = None) -> Timing:
    """Median and p20/p80 of ``fn()`` in milliseconds.

    CUDA: ``triton.testing.do_bench(fn, warmup, rep, quantiles=[0.5, 0.2, 0.8])`` (it flushes L2
    before every call); CUDA events (same flush) if Triton cannot be imported. CPU: ``perf_counter``
    around each call (smoke sweep and overhead only: not a GPU measurement). ``wall_reps=n``: one
    warm-up call, then ``n`` calls each timed by wall clock between device synchronisations (for
    long host-driven calls such as ``generate()``, where do_bench's 5-call estimate is wasteful)."""
    if wall_reps is not None:
        fn()
        _sync(device)
        ts = []
        for _ in range(max(1, wall_reps)):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            ts.append((time.perf_counter() - t0) * 1e3)
        return Timing(statistics.median(ts), _quantile(ts, 0.2), _quantile(ts, 0.8))
    if device == "cuda":
        try:
            from triton.testing import do_bench
        except Exception:  # noqa: BLE001 - fall back, as the method says
            ts = _cuda_events_bench(fn, warmup_ms, rep_ms)
            return Timing(statistics.median(ts), _quantile(ts, 0.2), _quantile(ts, 0.8))
        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(float(med), float(p20), float(p80))
    t_end = time.perf_counter() + warmup_ms / 1e3
    fn()
    while time.perf_counter() < t_end:
        fn()
    ts: List[float] = []
    t_end = time.perf_counter() + rep_ms / 1e3
    while (len(ts) < min_reps or time.perf_counter() < t_end) and len(ts) < max_reps:
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return Timing(statistics.median(ts), _quantile(ts, 0.2), _quantile(ts, 0.8))


@contextlib.contextmanager
def without_triton_interpreter():
    """What a CPU user gets: fastattn's dispatch without ``TRITON_INTERPRET=1`` (which the test
    environment sets, and which would make dispatch run the Triton kernels on CPU tensors through the
    interpreter, ~50x slower: a correctness tool, not something to time). Restored on exit."""
    from fastattn import dispatch
    saved = os.environ.pop("TRITON_INTERPRET", None)
    dispatch.reset()
    try:
        yield
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
        dispatch.reset()


# ------------------------------------------------------------------------------------- input rotation
def rotation_count(bytes_per_set: int, l2_bytes: int, max_total_bytes: int = 8 * 2**30, most: int = 8) -> int:
    """How many distinct input sets to cycle through so that together they are at least 3x the L2
    (the data of one call cannot stay cached for the next), bounded by memory."""
    if bytes_per_set <= 0:
        return 1
    n = max(2, math.ceil(3 * l2_bytes / bytes_per_set))
    n = min(n, most, max(1, max_total_bytes // bytes_per_set))
    return max(1, n)


def rotating(fn: Callable, input_sets: Sequence) -> Callable[[], object]:
    """``fn(*set)`` over the input sets in turn, one set per call."""
    it = itertools.cycle(input_sets)
    return lambda: fn(*next(it))


# ------------------------------------------------------------------------------------------- peaks
@dataclass
class Peaks:
    tflops: Optional[float] = None   # bf16 dense matmul, measured on this device
    gbps: Optional[float] = None     # device-to-device copy, measured on this device


def measure_peaks(env: Env, writer: Optional["ResultWriter"] = None, preset: str = "", smoke: bool = False) -> Peaks:
    """Measure this device's bf16 matmul TFLOP/s and copy GB/s (the roofline every row is a fraction
    of), and store them as ``suite=peak`` rows."""
    import torch
    dev = env.device
    if dev == "cuda":
        n, copy_numel, dtype = 8192, 512 * 2**20, torch.bfloat16   # 8192^3 matmul, 1 GiB copy
    else:
        n, copy_numel, dtype = 256, 4 * 2**20, torch.float32       # smoke: proves the code path only
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev, dtype)
    b = torch.randn(n, n, generator=g).to(dev, dtype)
    src = torch.randn(copy_numel // 256, 256, generator=g).to(dev, dtype if dev == "cuda" else torch.float32)
    dst = torch.empty_like(src)
    peaks = Peaks()
    esz = src.element_size()
    cases = [("matmul", f"matmul-{n}x{n}x{n}", lambda: torch.matmul(a, b), F.matmul_flops(n, n, n), None),
             ("copy", f"copy-{src.numel() * esz // 2**20}MiB", lambda: dst.copy_(src), None,
              F.copy_bytes(src.numel(), esz))]
    for kind, case, fn, fl, nb in cases:
        t = time_fn(fn, dev, warmup_ms=50 if dev == "cuda" else 5, rep_ms=300 if dev == "cuda" else 20)
        if kind == "matmul":
            peaks.tflops = fl / (t.median_ms * 1e-3) / 1e12
        else:
            peaks.gbps = nb / (t.median_ms * 1e-3) / 1e9
        if writer is not None:
            writer.write("peak", dict(
                case=case, provider="torch.matmul" if kind == "matmul" else "Tensor.copy_", status="ok",
                metric="peak", dtype=str(a.dtype if kind == "matmul" else src.dtype).replace("torch.", ""),
                median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, flops=fl, bytes=nb,
                tflops=fl / (t.median_ms * 1e-3) / 1e12 if fl else None,
                gbps=nb / (t.median_ms * 1e-3) / 1e9 if nb else None,
                peak_fraction=1.0, preset=preset,
                note="smoke: CPU timing of the harness path, not a peak" if smoke else
                "measured peak: the roofline for peak_fraction of this run's rows"))
    return peaks


# ------------------------------------------------------------------------------------------- writer
def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return ""
        return f"{v:.6g}"
    return str(v)


def check_row(row: Dict[str, object]) -> None:
    unknown = sorted(set(row) - set(SCHEMA))
    if unknown:
        raise ValueError(f"result row has columns not in benchmarks.harness.SCHEMA: {unknown}")
    st = row.get("status")
    if st not in STATUSES:
        raise ValueError(f"result row status={st!r}; must be one of {STATUSES}")
    if st != "ok" and row.get("median_ms") not in (None, ""):
        raise ValueError(f"a row with status={st!r} must not carry a time (case {row.get('case')!r}, "
                         f"provider {row.get('provider')!r})")
    if st == "ok" and row.get("median_ms") in (None, ""):
        raise ValueError(f"a row with status='ok' needs median_ms (case {row.get('case')!r})")
    if row.get("metric", "time") not in METRICS:
        raise ValueError(f"result row metric={row.get('metric')!r}; must be one of {METRICS}")


def read_header(path: str) -> Optional[List[str]]:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path, newline="") as f:
        return next(csv.reader(f), None)


def append_rows(path: str, rows: Iterable[Dict[str, object]]) -> int:
    """Append rows (dicts keyed by :data:`SCHEMA` names) to ``path``, writing the header if the file is
    new; refuse a file whose header is not :data:`SCHEMA`."""
    header = read_header(path)
    if header is not None and tuple(header) != SCHEMA:
        missing = [c for c in SCHEMA if c not in header]
        extra = [c for c in header if c not in SCHEMA]
        raise ValueError(f"{path}: its header is not benchmarks.harness.SCHEMA (missing {missing}, extra {extra}); "
                         "write to a new folder (--out) or move the old file away")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if header is None:
            w.writerow(SCHEMA)
        for row in rows:
            check_row(row)
            w.writerow([_fmt(row.get(c)) for c in SCHEMA])
            n += 1
    return n


def read_rows(paths: Iterable[str]) -> List[Dict[str, str]]:
    rows: List[Dict[str, str]] = []
    for p in paths:
        header = read_header(p)
        if header is None:
            continue
        if tuple(header) != SCHEMA:
            raise ValueError(f"{p}: header is not benchmarks.harness.SCHEMA")
        with open(p, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def result_files(results_dir: str, gpu: Optional[str] = None, suites: Optional[Sequence[str]] = None) -> List[str]:
    """``<results_dir>/<gpu>/<suite>.csv`` files, sorted."""
    out = []
    if not os.path.isdir(results_dir):
        return out
    for g in sorted(os.listdir(results_dir)):
        d = os.path.join(results_dir, g)
        if not os.path.isdir(d) or (gpu is not None and g != gpu):
            continue
        for fn in sorted(os.listdir(d)):
            if fn.endswith(".csv") and (suites is None or fn[:-4] in suites):
                out.append(os.path.join(d, fn))
    return out


class ResultWriter:
    """Appends rows to ``<out_dir>/<gpu>/<suite>.csv``, stamping environment, peaks and derived
    throughput columns; each row is flushed to disk at once (a killed run keeps what it measured)."""

    def __init__(self, out_dir: str, env: Env, preset: str, peaks: Optional[Peaks] = None, gpu_dir: Optional[str] = None):
        self.out_dir = out_dir
        self.env = env
        self.preset = preset
        self.peaks = peaks or Peaks()
        self.dir = os.path.join(out_dir, gpu_dir or env.gpu_slug)
        self.written: Dict[str, int] = {}

    def path(self, suite: str) -> str:
        return os.path.join(self.dir, f"{suite}.csv")

    def done_keys(self, suite: str) -> set:
        """(case, provider, dtype) already stored for this commit with a final status (for --resume)."""
        keys = set()
        for r in read_rows([self.path(suite)]):
            if r["commit"] == self.env.commit and r["status"] in ("ok", "unsupported") and r["preset"] == self.preset:
                keys.add((r["case"], r["provider"], r["dtype"]))
        return keys

    def write(self, suite: str, row: Dict[str, object]) -> Dict[str, object]:
        row = dict(row)
        row.setdefault("metric", "time")
        row["suite"] = suite
        row.setdefault("preset", self.preset)
        ms = row.get("median_ms")
        if row.get("status") == "ok" and ms:
            if row.get("flops") and row.get("tflops") is None:
                row["tflops"] = row["flops"] / (ms * 1e-3) / 1e12
            if row.get("bytes") and row.get("gbps") is None:
                row["gbps"] = row["bytes"] / (ms * 1e-3) / 1e9
            if row.get("peak_fraction") is None and row.get("metric") == "time":
                row["peak_fraction"] = F.roofline_fraction(ms, row.get("flops"), row.get("bytes"),
                                                           self.peaks.tflops, self.peaks.gbps)
        if row.get("metric") == "time":
            row.setdefault("peak_tflops", self.peaks.tflops)
            row.setdefault("peak_gbps", self.peaks.gbps)
        row.update(self.env.stamp())
        append_rows(self.path(suite), [row])
        self.written[suite] = self.written.get(suite, 0) + 1
        return row


# --------------------------------------------------------------------------------------- progress bar
def progress(items: Sequence, desc: str, enable: bool = True):
    """tqdm over ``items`` when stderr is a terminal and tqdm is importable; otherwise (logs, CI, pipes)
    one line per item on stderr, so a long suite is never silent; nothing when ``enable`` is false."""
    if not enable:
        return items
    if sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm
            return tqdm(items, desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        except ImportError:
            pass

    def gen():
        for i, x in enumerate(items):
            print(f"[{desc}] {i + 1}/{len(items)} {getattr(x, 'name', '')}".rstrip(), file=sys.stderr, flush=True)
            yield x
    return gen()


# ---------------------------------------------------------------------------------------------- sweep
@dataclass
class Context:
    """What every suite receives from ``fastattn bench``."""

    env: Env
    writer: ResultWriter
    preset: str                      # "smoke", "quick" or "full"
    deadline: Optional[float] = None  # time.monotonic() after which no new case starts
    providers: Optional[Sequence[str]] = None  # filter (None = the suite's defaults)
    resume: bool = False
    show_progress: bool = True
    warmup_ms: float = 25
    rep_ms: float = 100
    seed: int = 0
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.env.device

    @property
    def smoke(self) -> bool:
        return self.preset == "smoke"

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def short_error(e: BaseException, limit: int = 400) -> str:
    msg = " ".join(str(e).split())
    msg = f"{type(e).__name__}: {msg}" if not isinstance(e, Unsupported) else msg
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def warnings_reason(caught: Sequence[warnings.WarningMessage], limit: int = 3) -> str:
    """The informative part of the warnings a failed call emitted (SDPA explains its kernel choice
    through warnings)."""
    seen: List[str] = []
    for w in caught:
        s = " ".join(str(w.message).split())
        s = re.sub(r"\s*\(Triggered internally at [^)]*\)\.?", "", s)
        if s and s not in seen:
            seen.append(s)
    return "; ".join(seen[:limit])


def output_problem(out) -> Optional[str]:
    """A cheap sanity check of a provider's output (a benchmark of a broken kernel is worthless)."""
    import torch
    ts = out if isinstance(out, (tuple, list)) else [out]
    for t in ts:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            return "output has NaN/inf"
    return None


def run_cases(ctx: Context, suite: str, cases: Sequence, providers: Sequence, describe: Callable[[object], Dict],
              prepare: Callable[[object, object], Callable[[], object]], metric: str = "time",
              rep_ms: Optional[float] = None, warmup_ms: Optional[float] = None, after_case: Optional[Callable] = None,
              wall_reps: Optional[int] = None) -> int:
    """The common sweep: for each case and provider, ``prepare(case, provider)`` returns a
    zero-argument callable (already rotating its inputs) or raises :class:`Unsupported`; the callable
    is run once (compile, autotune, a NaN check), then timed. One row per (case, provider)."""
    import torch
    done = ctx.writer.done_keys(suite) if ctx.resume else set()
    n = 0
    for case in progress(list(cases), f"{suite}", ctx.show_progress):
        base = describe(case)
        for prov in providers:
            row = dict(base, provider=prov.name, metric=metric)
            if (row["case"], prov.name, row.get("dtype", "")) in done:
                continue
            if ctx.out_of_time():
                ctx.writer.write(suite, dict(row, status="skipped", note="time budget exhausted before this case"))
                continue
            fn, extra_note = None, None
            try:
                with contextlib.ExitStack() as stack:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fn = prepare(case, prov)
                        # a provider may need a context around its calls (SDPA's backend choice):
                        # entered once around the first call and the timing, not per call
                        if getattr(fn, "bench_context", None) is not None:
                            stack.enter_context(fn.bench_context())
                        out = fn()
                        _sync(ctx.device)
                    bad = output_problem(out)
                    del out
                    if bad:
                        ctx.writer.write(suite, dict(row, status="error", note=bad))
                        continue
                    t = time_fn(fn, ctx.device, warmup_ms=warmup_ms or ctx.warmup_ms, rep_ms=rep_ms or ctx.rep_ms,
                                wall_reps=wall_reps)
                    # a provider may describe its run: a fixed string, or one derived from the timing
                    extra_note = getattr(fn, "note", None)
                    if callable(extra_note):
                        extra_note = extra_note(t)
            except Unsupported as e:
                ctx.writer.write(suite, dict(row, status="unsupported", note=short_error(e)))
                continue
            except NotImplementedError as e:
                ctx.writer.write(suite, dict(row, status="unsupported", note=short_error(e)))
                continue
            except Exception as e:  # noqa: BLE001 - one failing provider must not end the sweep
                if isinstance(e, torch.cuda.OutOfMemoryError):
                    note = "out of memory: " + short_error(e, 200)
                else:
                    note = short_error(e)
                ctx.writer.write(suite, dict(row, status="error", note=note))
                continue
            finally:
                fn = None
                if ctx.device == "cuda":
                    torch.cuda.empty_cache()
            note = "; ".join(x for x in (row.pop("note", None), extra_note) if x) or None
            if ctx.smoke:
                note = "smoke: CPU harness check, not a measurement" + (f"; {note}" if note else "")
            ctx.writer.write(suite, dict(row, status="ok", median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms,
                                         note=note))
            n += 1
        if after_case is not None:
            after_case(case)
    return n


@dataclass
class Provider:
    """A named way to run a suite's op; ``kind`` groups providers (``fastattn``, ``sdpa``, ...)."""

    name: str
    kind: str = ""
    gpu_only: bool = False
    options: Dict[str, object] = field(default_factory=dict)


def select_providers(all_providers: Sequence[Provider], defaults: Sequence[str], wanted: Optional[Sequence[str]]
                     ) -> List[Provider]:
    """Providers named by ``--providers`` (exact names or fnmatch patterns), else ``defaults``."""
    import fnmatch
    names = [p.name for p in all_providers]
    pick = list(defaults) if not wanted else []
    for w in wanted or ():
        hits = [n for n in names if fnmatch.fnmatchcase(n, w)]
        pick.extend(h for h in hits if h not in pick)
    return [p for p in all_providers if p.name in pick]


def dtype_of(name: str):
    import torch
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if name not in table:
        raise ValueError(f"--dtype {name!r}: choose from bf16, fp16, fp32")
    return table[name]


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def generator(device: str, seed: int):
    import torch
    return torch.Generator(device=device).manual_seed(seed)


def randn(shape, dtype, device, gen, scale: float = 1.0):
    """Random normal data on ``device`` (never zeros: zeros flatter some kernels)."""
    import torch
    t = torch.randn(*shape, generator=gen, dtype=dtype, device=device)
    return t.mul_(scale) if scale != 1.0 else t

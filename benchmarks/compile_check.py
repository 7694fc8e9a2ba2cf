"""Compile-only resource check of the Triton kernels (no GPU needed): registers, spills, shared memory.

Compiles kernel specialisations to cubin for a GPU target (``triton.compile`` with a ``GPUTarget``; ptxas
is bundled with Triton) and reads ptxas's own report (``Used N registers``, ``bytes spill stores``,
``bytes stack frame``) and the kernel's shared memory (``metadata.shared``). What the prune keeps must
compile without spills and within the part's shared memory; this is how that is checked off-GPU.

Runs without torch and without importing ``fastattn``: the kernel package is loaded from
``kernels/attention/`` by path, so any Triton install works (e.g. a venv with only ``triton==3.6.0``
to check the GPU image's version). ``TRITON_INTERPRET`` must be unset (the interpreter never compiles).

Usage::

    python benchmarks/compile_check.py                     # kept configs of every family, sm_90 + sm_80
    python benchmarks/compile_check.py --arch 90 --out -   # CSV to stdout
    python benchmarks/compile_check.py --scan prefill --dtype fp32 --head-dim 128 --arch 90
                                                           # every listed config, kept or not (calibration)

Writes ``benchmarks/results/compile_check/triton-<version>.csv`` by default: one row per compiled
kernel, with the Triton version, date, commit and command in every row.

Families (``FAMILIES``): ``prefill`` (``_attn_fwd_kernel``), ``decode`` (``_attn_decode_kernel``),
``combine`` (``_attn_combine_kernel``), ``bwd_dkdv`` / ``bwd_dq`` (``_attn_bwd_dkdv_kernel`` /
``_attn_bwd_dq_kernel``). A family is a function ``(spec, config) -> compiled kernel`` plus
``kept(spec, arch)``, the configs the launch policy would use for ``spec`` on ``arch``; another kernel
family (e.g. the FFN) adds its pair to ``FAMILIES``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.util
import io
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "compile_check")
#: opt-in shared memory per block (bytes) of the parts each arch stands for (H100/H200, A100)
SMEM = {90: 227 * 1024, 80: 163 * 1024}
COLUMNS = ["family", "arch", "dtype", "E", "Ev", "mask", "BLOCK_M", "BLOCK_N", "num_warps", "num_stages",
           "kept", "regs", "spill_stores", "spill_loads", "stack", "smem", "smem_limit", "ok",
           "triton", "date", "commit", "command"]

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    raise SystemExit("compile_check: unset TRITON_INTERPRET (the interpreter does not compile for a GPU)")
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # ptxas -v report, printed by Triton after each build
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402


def load_attention_kernels():
    """``kernels/attention/`` as a standalone package (no torch, no ``fastattn``)."""
    name = "_fastattn_attention_kernels"
    if name in sys.modules:
        return sys.modules[name]
    d = os.path.join(ROOT, "kernels", "attention")
    spec = importlib.util.spec_from_file_location(name, os.path.join(d, "__init__.py"),
                                                  submodule_search_locations=[d])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


K = load_attention_kernels()


# ------------------------------------------------------------------------------------------ specs
@dataclass(frozen=True)
class Spec:
    """One specialisation. ``mask``: ``+``-joined parts of ``causal``, ``key_lens``, ``key_mask``,
    ``dense_bool``, ``dense_f16`` / ``dense_bf16`` / ``dense_f32`` (additive bias of that dtype),
    ``neg_scale`` (scale <= 0: natural units), ``mha`` (group == 1), ``split`` (decode), ``varlen``
    (prefill and backward on packed sequences), ``dropout`` (prefill, backward), or ``none``.
    ``group`` / ``lq``: decode packing (query heads per KV head, query rows); ``splits``: combine."""
    family: str
    dtype: str
    E: int = 0
    Ev: int = 0
    mask: str = "causal"
    group: int = 4
    lq: int = 1
    splits: int = 16

    @property
    def ev(self) -> int:
        return self.Ev or self.E

    @property
    def parts(self) -> set:
        return set(self.mask.split("+"))

    @property
    def dense_mode(self) -> int:
        p = self.parts
        return 1 if "dense_bool" in p else 2 if p & {"dense_f16", "dense_bf16", "dense_f32"} else 0

    @property
    def dense_dtype(self) -> str:
        for p, t in (("dense_bool", "u8"), ("dense_f16", "fp16"), ("dense_bf16", "bf16"), ("dense_f32", "fp32")):
            if p in self.parts:
                return t
        return "u8"


ELEM = {"fp16": 2, "bf16": 2, "fp32": 4, "u8": 1}


def _bd(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _signature(fn, ptrs: Dict[str, str], floats=(), ints=(), consts=(), nodiv=()) -> Tuple[dict, dict]:
    """Triton signature + divisibility attrs as a launch would see them: pointers and strides 16-byte
    divisible, lengths/offsets not specialised, ``consts`` integer arguments equal to 1 (constexpr)."""
    sig = {}
    for n in fn.arg_names:
        if n in ptrs:
            sig[n] = "*" + ptrs[n]
        elif n in floats:
            sig[n] = "fp32"
        elif n in consts:
            sig[n] = "constexpr"
        elif n in ints:
            sig[n] = "i32"
        elif n.isupper() or n.startswith("BLOCK"):
            sig[n] = "constexpr"
        else:
            sig[n] = "i32"
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if sig[n] not in ("constexpr", "fp32") and n not in nodiv}
    return sig, attrs


def _compile(fn, sig, attrs, consts, arch, warps, stages):
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=warps, num_stages=stages, enable_fp_fusion=True))


# --------------------------------------------------------------------------------------- prefill
def prefill_compile(spec: Spec, cfg: Tuple[int, int, int, int], arch: int):
    bm, bn, warps, stages = cfg
    p = spec.parts
    fn = K._attn_fwd_kernel
    ones = ("group", "Hq", "stride_kmn") if "mha" in p else ()
    zeros = ("stride_qb", "stride_kb", "stride_vb", "stride_ob") if "varlen" in p else ()  # packed (total, H, E)
    sig, attrs = _signature(
        fn, {"Q": spec.dtype, "K": spec.dtype, "V": spec.dtype, "Out": spec.dtype, "Lse": "fp32",
             "KeyLens": "i64", "KeyMask": "u8", "KeyRange": "i32", "Dense": spec.dense_dtype,
             "CuSeqQ": "i32", "CuSeqK": "i32"},
        floats=("qk_scale", "sm_scale", "drop_scale"), ints=("B",), consts=ones + zeros,
        nodiv=set(K.NO_SPECIALIZE) | {"Hq", "group"})
    consts = dict(HEAD_DIM=spec.E, HEAD_DIM_V=spec.ev, BLOCK_D=_bd(spec.E), BLOCK_DV=_bd(spec.ev),
                  IS_CAUSAL="causal" in p, HAS_KEY_LENS="key_lens" in p, HAS_KEY_MASK="key_mask" in p,
                  DENSE_MODE=spec.dense_mode, FAST_SCALE=spec.dense_mode != 2 and "neg_scale" not in p,
                  DOT_UPCAST=False, INPUT_PRECISION="ieee" if spec.dtype == "fp32" else "tf32",
                  IS_VARLEN="varlen" in p, BLOCK_M=bm, BLOCK_N=bn, HAS_DROPOUT="dropout" in p)
    consts.update({n: 1 for n in ones})
    consts.update({n: 0 for n in zeros})
    return _compile(fn, sig, attrs, consts, arch, warps, stages)


def prefill_kept(spec: Spec, arch: int) -> List[Tuple[int, int, int, int]]:
    """What the autotuner's prune keeps for a long query (every list entry that passes)."""
    cap = (arch // 10, arch % 10)
    kept = K.kept_configs(K.configs_for(cap), cap, SMEM[arch], _bd(spec.E), _bd(spec.ev), ELEM[spec.dtype],
                          spec.dense_mode, ELEM[spec.dense_dtype], "key_mask" in spec.parts, 4096,
                          "dropout" in spec.parts)
    return [_tuple(c) for c in kept]


def prefill_listed(spec: Spec, arch: int):
    cap = (arch // 10, arch % 10)
    return [_tuple(c) for c in K.configs_for(cap)]


def _tuple(c) -> Tuple[int, int, int, int]:
    return (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)


# ---------------------------------------------------------------------------------------- decode
def decode_compile(spec: Spec, cfg, arch: int):
    bm, bn, warps, stages = cfg
    p = spec.parts
    fn = K._attn_decode_kernel
    ones = tuple(n for n, val in (("Lq", spec.lq), ("group", spec.group)) if val == 1)
    sig, attrs = _signature(
        fn, {"Q": spec.dtype, "K": spec.dtype, "V": spec.dtype, "Out": spec.dtype, "Lse": "fp32", "Ws": "fp32",
             "KeyLens": "i64", "KeyMask": "u8", "KeyRange": "i32"},
        floats=("qk_scale",), ints=("B",), consts=ones,
        nodiv=set(K.DECODE_NO_SPECIALIZE) | {"Hq", "Hkv", "group", "Lq"})
    consts = dict(HEAD_DIM=spec.E, HEAD_DIM_V=spec.ev, BLOCK_D=_bd(spec.E), BLOCK_DV=_bd(spec.ev),
                  IS_CAUSAL="causal" in p, HAS_KEY_LENS="key_lens" in p, HAS_KEY_MASK="key_mask" in p,
                  SPLIT="split" in p, DOT_UPCAST=False, INPUT_PRECISION="ieee" if spec.dtype == "fp32" else "tf32",
                  BLOCK_M=bm, BLOCK_N=bn)
    consts.update({n: 1 for n in ones})
    return _compile(fn, sig, attrs, consts, arch, warps, stages)


def decode_kept(spec: Spec, arch: int):
    bm = K.decode_block_m(spec.group, spec.lq, ELEM[spec.dtype])
    bn, warps, stages = K.decode_config(bm, _bd(spec.E), _bd(spec.ev), ELEM[spec.dtype],
                                        (arch // 10, arch % 10), SMEM[arch])
    return [(bm, bn, warps, stages)]


# --------------------------------------------------------------------------------------- combine
def combine_compile(spec: Spec, cfg, arch: int):
    _, bs, warps, stages = cfg
    fn = K._attn_combine_kernel
    sig, attrs = _signature(fn, {"Ws": "fp32", "Out": spec.dtype, "Lse": "fp32"}, ints=("R",),
                            nodiv=set(K.COMBINE_NO_SPECIALIZE) | {"Hq", "Lq", "stride_ob", "stride_oh",
                                                                  "stride_om"})
    consts = dict(HEAD_DIM_V=spec.ev, BLOCK_DV=_bd(spec.ev), BLOCK_S=bs)
    return _compile(fn, sig, attrs, consts, arch, warps, stages)


def combine_kept(spec: Spec, arch: int):
    bs = triton.next_power_of_2(spec.splits)
    return [(1, bs, K.combine_warps(bs, _bd(spec.ev)), 1)]


# -------------------------------------------------------------------------------------- backward
def _bwd_compile(fn, spec: Spec, cfg, arch: int):
    bm, bn, warps, stages = cfg
    p = spec.parts
    ones = ("group", "Hq", "Hkv", "stride_kmn") if "mha" in p else ()
    # packed (total, H, D): batch strides 0, as the varlen launcher passes them
    zeros = tuple(n for n in fn.arg_names if n in ("stride_qb", "stride_kb", "stride_vb", "stride_dob", "stride_dqb",
                                                   "stride_dkb", "stride_dvb")) if "varlen" in p else ()
    d = spec.dtype
    sig, attrs = _signature(
        fn, {"Q": d, "K": d, "V": d, "DO": d, "DQ": d, "DK": d, "DV": d, "Lse": "fp32", "Delta": "fp32",
             "RowScale": "fp32", "KeyLens": "i64", "KeyMask": "u8", "KeyRange": "i32", "Dense": spec.dense_dtype,
             "CuSeqQ": "i32", "CuSeqK": "i32"},
        floats=("qk_scale", "sm_scale", "drop_scale"), consts=ones + zeros,
        nodiv=set(K.BWD_NO_SPECIALIZE) | {"Hq", "Hkv", "group"})
    consts = dict(HEAD_DIM=spec.E, HEAD_DIM_V=spec.ev, BLOCK_D=_bd(spec.E), BLOCK_DV=_bd(spec.ev),
                  IS_CAUSAL="causal" in p, HAS_KEY_LENS="key_lens" in p, HAS_KEY_MASK="key_mask" in p,
                  DENSE_MODE=spec.dense_mode, FAST_SCALE=spec.dense_mode != 2 and "neg_scale" not in p,
                  HAS_DROPOUT="dropout" in p, DOT_UPCAST=False,
                  INPUT_PRECISION="ieee" if spec.dtype == "fp32" else "tf32", IS_VARLEN="varlen" in p,
                  BLOCK_M=bm, BLOCK_N=bn)
    consts.update({n: 1 for n in ones})
    consts.update({n: 0 for n in zeros})
    return _compile(fn, sig, attrs, consts, arch, warps, stages)


def bwd_dkdv_compile(spec: Spec, cfg, arch: int):
    return _bwd_compile(K._attn_bwd_dkdv_kernel, spec, cfg, arch)


def bwd_dq_compile(spec: Spec, cfg, arch: int):
    return _bwd_compile(K._attn_bwd_dq_kernel, spec, cfg, arch)


def _bwd_kept(family: str):
    def kept(spec: Spec, arch: int):
        cap = (arch // 10, arch % 10)
        return [_tuple(c) for c in K.bwd_candidates(family, cap, SMEM[arch], _bd(spec.E), _bd(spec.ev),
                                                    ELEM[spec.dtype], spec.dense_mode, "key_mask" in spec.parts,
                                                    "dropout" in spec.parts,
                                                    bool(spec.parts & {"causal", "key_lens", "key_mask"}))]
    return kept


def _bwd_listed(family: str):
    def listed(spec: Spec, arch: int):
        return [_tuple(c) for c in K.bwd_configs_for(family, (arch // 10, arch % 10))]
    return listed


@dataclass(frozen=True)
class Family:
    compile: Callable
    kept: Callable
    listed: Optional[Callable] = None


FAMILIES: Dict[str, Family] = {
    "prefill": Family(prefill_compile, prefill_kept, prefill_listed),
    "decode": Family(decode_compile, decode_kept),
    "combine": Family(combine_compile, combine_kept),
    "bwd_dkdv": Family(bwd_dkdv_compile, _bwd_kept("dkdv"), _bwd_listed("dkdv")),
    "bwd_dq": Family(bwd_dq_compile, _bwd_kept("dq"), _bwd_listed("dq")),
}


def cannot_compile_reason() -> Optional[str]:
    """Why this Triton cannot compile for an NVIDIA target here (no NVIDIA backend, no ptxas), else None."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        path = get_ptxas(90).path
        subprocess.run([path, "--version"], capture_output=True, check=True, timeout=60)
    except Exception as e:  # noqa: BLE001 - any failure means: no GPU code generation here
        return f"triton {triton.__version__} cannot compile for sm_90 here: {type(e).__name__}: {e}"
    return None


def heaviest(cfgs):
    """The kept config most likely to spill: the largest tile per warp, then the largest, then the
    deepest pipeline (a CI check compiles one config per family)."""
    return max(cfgs, key=lambda c: (c[0] * c[1] / c[2], c[0] * c[1], c[3]))


# -------------------------------------------------------------------------------------- measuring
_PTXAS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def measure(family: str, spec: Spec, cfg, arch: int) -> dict:
    """Compile one kernel; ``{regs, spill_stores, spill_loads, stack, smem}`` from ptxas's report (a
    fresh Triton cache per build, so that ptxas always runs and reports)."""
    buf = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="fastattn-compile-check-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        with contextlib.redirect_stdout(buf):
            k = FAMILIES[family].compile(spec, cfg, arch)
    log = buf.getvalue()
    m, r = _PTXAS.search(log), _REGS.search(log)
    if m is None or r is None:
        raise RuntimeError(f"no ptxas report for {family} {spec} {cfg} sm_{arch} (cached build?):\n{log[-2000:]}")
    return dict(regs=int(r.group(1)), stack=int(m.group(1)), spill_stores=int(m.group(2)),
                spill_loads=int(m.group(3)), smem=int(k.metadata.shared))


# --------------------------------------------------------------------------------------- the table
#: the specialisations checked by default: per family, representative dtypes, head dims and mask forms
#: (every config the prune keeps for each); ``--specs`` takes any other list
DEFAULT_SPECS: List[Spec] = [
    Spec("prefill", "fp16", 64, 0, "causal"),
    Spec("prefill", "fp16", 128, 0, "dense_f16"),
    Spec("prefill", "fp16", 256, 0, "key_mask+causal"),
    Spec("prefill", "fp32", 64, 0, "causal"),
    Spec("prefill", "fp32", 128, 0, "dense_f32"),
    Spec("decode", "fp16", 128, 0, "causal+key_lens+split", 4, 1),
    Spec("decode", "bf16", 64, 0, "causal+key_mask+split", 16, 4),
    Spec("decode", "fp32", 128, 0, "causal+key_lens+split", 4, 1),
    Spec("combine", "fp16", 0, 128, "none", splits=32),
    Spec("prefill", "fp16", 128, 0, "causal+dropout"),
    Spec("bwd_dkdv", "fp16", 64, 0, "causal"),
    Spec("bwd_dkdv", "fp16", 128, 0, "causal+dropout"),
    Spec("bwd_dkdv", "bf16", 256, 0, "key_mask+causal"),
    Spec("bwd_dkdv", "fp32", 64, 0, "dense_f32+dropout"),
    Spec("bwd_dq", "fp16", 64, 0, "causal"),
    Spec("bwd_dq", "fp16", 128, 0, "causal+dropout"),
    Spec("bwd_dq", "bf16", 256, 0, "key_mask+causal"),
    Spec("bwd_dq", "fp32", 64, 0, "dense_f32+dropout"),
    Spec("prefill", "fp16", 128, 0, "causal+varlen+dropout"),
    Spec("bwd_dkdv", "fp16", 128, 0, "causal+varlen"),
    Spec("bwd_dkdv", "fp16", 128, 0, "causal+varlen+dropout"),
    Spec("bwd_dq", "fp16", 128, 0, "causal+varlen"),
    Spec("bwd_dq", "fp16", 128, 0, "causal+varlen+dropout"),
]


def git_commit() -> str:
    def git(*a):
        try:
            r = subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True, timeout=10)
            return r.stdout.strip() if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None
    sha = git("rev-parse", "--short=12", "HEAD")
    if not sha:
        return os.environ.get("FASTATTN_COMMIT", "unknown")
    return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _task(args):
    family, spec, cfg, arch = args
    return measure(family, spec, cfg, arch)


def run(specs: List[Spec], archs: List[int], scan: bool = False, configs=None, jobs: int = 1,
        log=sys.stderr, sink: Optional[Callable] = None) -> List[dict]:
    """Compile and measure; each row goes to ``sink`` as soon as it is known (a long run that is
    stopped keeps what it measured)."""
    meta = dict(triton=triton.__version__, date=datetime.date.today().isoformat(), commit=git_commit(),
                command="python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]))
    tasks = []
    for arch in archs:
        for spec in specs:
            fam = FAMILIES[spec.family]
            kept = fam.kept(spec, arch)
            cfgs = configs if configs else fam.listed(spec, arch) if scan and fam.listed else kept
            tasks += [(spec, cfg, arch, cfg in kept) for cfg in cfgs]
    work = [(s.family, s, c, a) for s, c, a, _ in tasks]
    with contextlib.ExitStack() as stack:
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor
            results = stack.enter_context(ProcessPoolExecutor(jobs)).map(_task, work)
        else:
            results = map(_task, work)
        rows = []
        for t, r in zip(tasks, results):
            rows.append(_row(t, r, meta, log))
            if sink is not None:
                sink(rows[-1])
    return rows


def _row(task, r, meta, log) -> dict:
    spec, cfg, arch, kept = task
    row = dict(family=spec.family, arch=arch, dtype=spec.dtype, E=spec.E, Ev=spec.ev, mask=spec.mask,
               BLOCK_M=cfg[0], BLOCK_N=cfg[1], num_warps=cfg[2], num_stages=cfg[3], kept=kept,
               smem_limit=SMEM[arch],
               ok=r["spill_stores"] == 0 and r["stack"] == 0 and r["smem"] <= SMEM[arch], **r, **meta)
    print(f"sm_{arch} {spec.family:8s} {spec.dtype} E{spec.E}/{spec.ev} {spec.mask:24s} "
          f"g{spec.group}q{spec.lq} cfg {cfg} kept={kept} regs={r['regs']} "
          f"spill={r['spill_stores']} stack={r['stack']} smem={r['smem']}"
          + ("" if row["ok"] or not kept else "  <-- KEPT BUT NOT OK"), file=log, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, action="append", choices=sorted(SMEM), help="default: 90 and 80")
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES))
    ap.add_argument("--dtype", action="append")
    ap.add_argument("--head-dim", type=int, action="append")
    ap.add_argument("--mask", action="append")
    ap.add_argument("--scan", action="store_true", help="every listed config, not only the kept ones")
    ap.add_argument("--jobs", type=int, default=1, help="parallel compiles")
    ap.add_argument("--specs", help="JSON list of Spec fields instead of the default table")
    ap.add_argument("--configs", help="JSON list of [BLOCK_M, BLOCK_N, num_warps, num_stages] to compile "
                                      "instead of the kept/listed ones (calibration)")
    ap.add_argument("--out", help="CSV path ('-' = stdout); default benchmarks/results/compile_check/"
                                  "triton-<version>.csv")
    a = ap.parse_args(argv)
    specs = [Spec(**s) for s in json.loads(a.specs)] if a.specs else DEFAULT_SPECS
    specs = [s for s in specs if (not a.family or s.family in a.family) and (not a.dtype or s.dtype in a.dtype)
             and (not a.head_dim or max(s.E, s.ev) in a.head_dim) and (not a.mask or s.mask in a.mask)]
    cfgs = [tuple(c) for c in json.loads(a.configs)] if a.configs else None
    out = a.out or os.path.join(RESULTS, f"triton-{triton.__version__}.csv")
    if out == "-":
        f = sys.stdout
    else:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        f = open(out, "w", newline="")
    w = csv.DictWriter(f, COLUMNS)
    w.writeheader()

    def sink(row):
        w.writerow(row)
        f.flush()
    rows = run(specs, a.arch or [90, 80], a.scan, cfgs, a.jobs, sink=sink)
    if f is not sys.stdout:
        f.close()
        print(f"wrote {len(rows)} rows to {os.path.relpath(out, ROOT)}", file=sys.stderr)
    bad = [r for r in rows if r["kept"] and not r["ok"]]
    print(f"{len(rows)} kernels, {sum(r['kept'] for r in rows)} kept, {len(bad)} kept but spilling or over smem",
          file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU tier of the CUDA C++ sources that needs no GPU and no CUDA toolkit: the device-side rules that are
written host-compilable (``csrc/attention/seqinfo.cuh``, ``softmax.cuh``, ``key_ranges.h``) are built with
the host C++ compiler (``tests/csrc_host/host_rules.cpp``) and checked against Python statements of the
contract; the generated instance files are checked to be in sync with their one list."""

from __future__ import annotations

import math
import os
import random
import runpy
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
GEN = runpy.run_path(os.path.join(CSRC, "attention", "generate_instances.py"))
CXX = next((c for c in (os.environ.get("CXX"), "c++", "g++", "clang++") if c and shutil.which(c)), None)


# ------------------------------------------------------------------------------------ generated files
def test_generated_instances_in_sync():
    problems = GEN["out_of_sync"]()
    assert problems == [], f"csrc/attention/instances is out of sync with generate_instances.py: {problems}"


def test_head_dims_come_from_one_list():
    from fastattn.attention.backends.cuda import DEFAULT_HEAD_DIMS
    assert tuple(GEN["HEAD_DIMS"]) == tuple(DEFAULT_HEAD_DIMS)
    with open(os.path.join(CSRC, "attention", "instances", "list.h")) as f:
        text = f.read()
    assert "kAttnFwdHeadDims[] = {" + ", ".join(map(str, GEN["HEAD_DIMS"])) + "}" in text
    for d in GEN["HEAD_DIMS"]:
        assert f"case {d}: {{" in text
        for tag in GEN["DTYPES"].values():
            assert os.path.exists(os.path.join(CSRC, "attention", "instances", f"attn_fwd_sm80_{tag}_d{d}.cu"))


# ------------------------------------------------------------------------------------ host build
@pytest.fixture(scope="module")
def host_rules(tmp_path_factory):
    if CXX is None:
        pytest.skip("no host C++ compiler (c++ / g++ / clang++)")
    exe = str(tmp_path_factory.mktemp("host_rules") / "host_rules")
    cmd = [CXX, "-std=c++17", "-O1", "-Wall", "-I", CSRC, os.path.join(ROOT, "tests", "csrc_host", "host_rules.cpp"),
           "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    def run(mode: str, lines, timeout: float = 60) -> list:
        r = subprocess.run([exe, mode], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()
    return run


def _visible(row, Lq, Lk, causal, key_len, rng, mask=None):
    """The contract (DESIGN.md + KeyPadding): the keys query row `row` sees, by brute force."""
    off = Lk - Lq if causal == 2 else 0
    keys = set()
    for j in range(Lk):
        if key_len is not None and j >= key_len:
            continue
        if rng is not None and not (rng[0] <= j < rng[1]):
            continue
        if mask is not None and not mask[j]:
            continue
        if causal and j > row + off:
            continue
        keys.add(j)
    return keys


def _triton_bounds(Lq, Lk, causal, key_len, rng, m0, block_m):
    """kernels/attention.py's key-range prologue (kv_start, kv_end, hi), transcribed."""
    kv_start, kv_end = 0, Lk
    if key_len is not None:
        kv_end = max(min(kv_end, key_len), 0)
    if rng is not None:
        kv_start = rng[0]
        kv_end = min(kv_end, rng[1])
    off = Lk - Lq if causal == 2 else 0
    hi = min(kv_end, min(m0 + block_m, Lq) - 1 + off + 1) if causal else kv_end
    return kv_start, kv_end, hi


def _intervals(keys):
    out, run = [], None
    for j in range(max(keys, default=-1) + 2):
        if j in keys and run is None:
            run = j
        if j not in keys and run is not None:
            out.append((run, j))
            run = None
    return out


def _tight_range(mask):
    """What key_ranges() computes: [first shown key, last + 1), or (Lk, 0) when the mask shows none."""
    shown = [j for j, bit in enumerate(mask) if bit]
    return (shown[0], shown[-1] + 1) if shown else (len(mask), 0)


def test_seqinfo_bounds_match_the_contract(host_rules):
    """SeqInfo's key_start / key_end / block limit equal the Triton kernel's prologue; the kernel's
    per-element test (bounds, mask bit, causal) shows exactly the keys the contract makes visible; and
    row_has_key (which decides "no visible key -> 0, lse -inf") is exact, also with a key mask."""
    rnd = random.Random(0)
    cases = []
    for _ in range(600):
        Lq, Lk = rnd.randint(1, 150), rnd.choice([0, 1, 7, rnd.randint(1, 150)])
        causal = rnd.choice([0, 1, 2])
        block_m = 64
        m0 = block_m * rnd.randrange((Lq + block_m - 1) // block_m)
        key_len = rnd.choice([None, rnd.randint(-3, Lk + 3), 0, Lk])
        mask = None
        if rnd.random() < 0.4:  # a key mask (with its tight range, as the binding requires)
            density = rnd.choice([0.0, 0.05, 0.5, 1.0])
            mask = [int(rnd.random() < density) for _ in range(Lk)]
            rng = _tight_range(mask)
        else:
            rng = rnd.choice([None, (Lk, 0), tuple(sorted((rnd.randint(0, Lk), rnd.randint(0, Lk))))])
        cases.append((Lq, Lk, causal, block_m, m0, key_len, rnd.random() < 0.5, rng, mask))
    lines = [f"{Lq} {Lk} {c} {bm} {m0} {int(kl is not None)} {kl or 0} {int(i64)} "
             f"{int(r is not None)} {(r or (0, 0))[0]} {(r or (0, 0))[1]} "
             f"{'-' if mk is None else (''.join(map(str, mk)) or '-')}"
             for Lq, Lk, c, bm, m0, kl, i64, r, mk in cases]
    out = host_rules("seqinfo", lines)
    assert len(out) == len(cases)
    for case, got in zip(cases, out):
        Lq, Lk, causal, block_m, m0, key_len, _, rng, mask = case
        head, rows = got.split("|")
        key_start, key_end, limit = map(int, head.split())
        assert (key_start, key_end, limit) == _triton_bounds(Lq, Lk, causal, key_len, rng, m0, block_m), case
        row_ends = []
        for item in rows.split():
            row_s, rest = item.split(":")
            ivals, row_end, has_key = rest.split(";")
            row = int(row_s)
            got_ivals = [tuple(map(int, iv.split("-"))) for iv in ivals.split(",") if iv]
            vis = _visible(row, Lq, Lk, causal, key_len, rng, mask)
            assert got_ivals == _intervals(vis), (case, row)
            assert has_key == str(int(bool(vis))), (case, row)
            row_end = int(row_end)
            if vis:
                assert key_start == min(vis) and row_end >= max(vis) + 1, (case, row)
            row_ends.append(row_end)
        assert limit == max(row_ends), case


def _f(s: str) -> float:
    return float(s.replace("-nan", "nan"))


@pytest.mark.parametrize("has_key, row_max, row_sum, inv, lse", [
    (0, "-inf", "0", 0.0, -math.inf),         # no visible key: exactly 0, lse -inf
    (0, "-inf", "nan", 0.0, -math.inf),       # decided from the mask, not from the values
    (1, "3", "2", 0.5, (3 + 1) * math.log(2)),
    (1, "-inf", "0", math.inf, -math.inf),    # visible keys, all scores -inf (Inf inputs): 0 * inf = NaN out, as SDPA
    (1, "1.5", "nan", math.nan, math.nan),    # a NaN score: NaN out, as SDPA (was 0: `l > 0 ? 1 / l : 0`)
    (1, "-inf", "nan", math.nan, math.nan),   # every score NaN (fmaxf drops NaN, so the max stays -inf)
    (1, "inf", "nan", math.nan, math.nan),    # a +inf score: inf - inf
])
def test_finalize_row_contract(host_rules, has_key, row_max, row_sum, inv, lse):
    got_inv, got_lse = map(_f, host_rules("finalize", [f"{has_key} {row_max} {row_sum}"])[0].split())
    for got, want in ((got_inv, inv), (got_lse, lse)):
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(want, rel=1e-6), (got, want)
    if has_key and row_sum in ("0", "nan"):
        assert math.isnan(0.0 * got_inv)  # what the epilogue writes: acc (0) * inv_sum


def test_key_range_scan_has_64_bit_index(host_rules):
    """key_ranges at Lk = 2^31 - 1 with 256 threads: thread t < 255 ends its loop at j = 2^31 - 256 + t, where
    a 32-bit j + 256 overflows (undefined behaviour; in practice it wraps negative and the loop never ends
    -- the timeout turns that hang into a failure)."""
    n = 256
    Lk = 2 ** 31 - 1
    out = host_rules("scan", [f"{Lk} 0 {n}", f"{Lk} 254 {n}", f"{Lk} 255 {n}", "5 3 256", "0 0 256"], timeout=120)
    assert out == [f"0 {2 ** 31 - 256}", f"254 {2 ** 31 - 2}", f"255 {2 ** 31 - 257}", "3 3", "0 -1"]
    with open(os.path.join(CSRC, "attention", "key_ranges.cu")) as f:
        src = f.read()
    assert "scan_key_range(" in src  # the kernel runs the tested helper, not its own loop


# ------------------------------------------------------------------------------------ resource report
def test_resource_report_parsing_and_occupancy():
    """benchmarks/cuda_resource_usage.py: cuobjdump / ptxas parsing and the CTAs-per-SM arithmetic (the
    note's hand-typed table claimed 168 registers and 3 CTAs/SM at D=128; 192 registers give 2)."""
    import sys
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from benchmarks import cuda_resource_usage as R
    name = "_ZN8fastattn4sm8015attn_fwd_kernelINS0_13AttnFwdTraitsILi1ELi128ELb1EEEEEvNS_13AttnFwdParamsE"
    dump = (f"arch = sm_90a\n Function {name}:\n  REG:197 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:760 TEXTURE:0\n"
            " Function _ZN8fastattn17key_ranges_kernelEPKhlliPi:\n  REG:16 STACK:0 SHARED:8 LOCAL:0\n")
    assert R.parse_resource_usage(dump) == {("sm_90a", 1, 128, True): dict(reg=197, stack=0, shared=1024, local=0)}
    log = (f"ptxas info    : Compiling entry function '{name}' for 'sm_80'\n"
           "ptxas info    : Function properties for x\n    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 656 bytes cmem[0]\n")
    assert R.parse_ptxas_log(log) == {("sm_80", 1, 128, True): dict(stack=0, spill_st=8, spill_ld=4, reg=255)}
    assert R.ctas_per_sm("sm_80", 192, 52224, 128)[:2] == (2, 2)
    assert R.ctas_per_sm("sm_80", 168, 52224, 128)[:2] == (3, 3)
    assert R.ctas_per_sm("sm_80", 240, 101376, 128) == (1, 2, 1, 16)   # D=256: shared memory bound on A100
    assert R.ctas_per_sm("sm_90a", 243, 101376 + 1024, 128) == (2, 2, 2, 16)

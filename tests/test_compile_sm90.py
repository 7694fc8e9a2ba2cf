"""Compile-only check (CPU tier, no GPU): one representative specialisation per Triton kernel family,
compiled for sm_90 with the config its launch policy keeps (the heaviest one the prune keeps, for the
autotuned prefill), must not spill registers (ptxas report) and must fit the 227 KB of shared memory.

The interpreter never runs Triton's GPU compiler, so this is the CPU suite's only guard against tiles
that compile to spills or do not fit. The full table (every kept config, sm_90 and sm_80, per Triton
version) is ``benchmarks/compile_check.py``'s, stored under ``benchmarks/results/compile_check/``.

Adding a family: register its compile and kept-config functions in ``benchmarks.compile_check.FAMILIES``
and add a row to ``CASES`` below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (test id, ``benchmarks.compile_check.Spec`` fields)
CASES = [
    ("prefill-fp16-d64-causal", dict(family="prefill", dtype="fp16", E=64, mask="causal")),
    ("prefill-fp32-d64", dict(family="prefill", dtype="fp32", E=64, mask="none")),
    ("prefill-fp16-d64-dense-float", dict(family="prefill", dtype="fp16", E=64, mask="dense_f16")),
    ("decode-fp16-d128-gqa4-split", dict(family="decode", dtype="fp16", E=128, mask="causal+key_lens+split",
                                         group=4, lq=1)),
    ("combine-fp16-d128-16splits", dict(family="combine", dtype="fp16", Ev=128, mask="none", splits=16)),
    ("prefill-fp16-d128-causal-dropout", dict(family="prefill", dtype="fp16", E=128, mask="causal+dropout")),
    ("bwd_dkdv-fp16-d128-causal-dropout", dict(family="bwd_dkdv", dtype="fp16", E=128, mask="causal+dropout")),
    ("bwd_dq-fp16-d128-causal-dropout", dict(family="bwd_dq", dtype="fp16", E=128, mask="causal+dropout")),
    ("prefill-fp16-d128-causal-varlen-dropout", dict(family="prefill", dtype="fp16", E=128,
                                                     mask="causal+varlen+dropout")),
    ("bwd_dkdv-fp16-d128-causal-varlen-dropout", dict(family="bwd_dkdv", dtype="fp16", E=128,
                                                      mask="causal+varlen+dropout")),
    ("bwd_dq-fp16-d128-causal-varlen-dropout", dict(family="bwd_dq", dtype="fp16", E=128,
                                                    mask="causal+varlen+dropout")),
]
ARCH = 90

_SCRIPT = r"""
import json, sys
from benchmarks import compile_check as cc
why = cc.cannot_compile_reason()
if why:
    print(json.dumps({"skip": why}))
    sys.exit(0)
for name, fields in json.loads(sys.argv[1]):
    spec = cc.Spec(**fields)
    cfg = cc.heaviest(cc.FAMILIES[spec.family].kept(spec, ARCH))
    print(json.dumps({"name": name, "cfg": cfg, **cc.measure(spec.family, spec, cfg, ARCH)}), flush=True)
""".replace("ARCH", str(ARCH))


@pytest.fixture(scope="module")
def results():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(CASES)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if rows and "skip" in rows[0]:
        pytest.skip(rows[0]["skip"])
    return {row["name"]: row for row in rows}


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_kept_config_compiles_without_spills(results, name):
    from_ptxas = results[name]
    print(name, from_ptxas)
    assert from_ptxas["spill_stores"] == 0 and from_ptxas["stack"] == 0, \
        f"{name}: config {from_ptxas['cfg']} spills on sm_{ARCH}: {from_ptxas}"
    assert from_ptxas["smem"] <= 227 * 1024, f"{name}: {from_ptxas['smem']} bytes of shared memory > 227 KB"

"""CPU tier of the CUDA C++ sources that needs no GPU and no CUDA toolkit: the generated instance files are
checked to be in sync with their one list."""

from __future__ import annotations

import os
import runpy

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
GEN = runpy.run_path(os.path.join(CSRC, "attention", "generate_instances.py"))


# ------------------------------------------------------------------------------------ generated files
def test_generated_instances_in_sync():
    problems = GEN["out_of_sync"]()
    assert problems == [], f"csrc/attention/instances is out of sync with generate_instances.py: {problems}"


def test_head_dims_come_from_one_list():
    from fastattn.backends.cuda_attention import DEFAULT_HEAD_DIMS
    assert tuple(GEN["HEAD_DIMS"]) == tuple(DEFAULT_HEAD_DIMS)
    with open(os.path.join(CSRC, "attention", "instances", "list.h")) as f:
        text = f.read()
    assert "kAttnFwdHeadDims[] = {" + ", ".join(map(str, GEN["HEAD_DIMS"])) + "}" in text
    for d in GEN["HEAD_DIMS"]:
        assert f"case {d}: {{" in text
        for tag in GEN["DTYPES"].values():
            assert os.path.exists(os.path.join(CSRC, "attention", "instances", f"attn_fwd_sm80_{tag}_d{d}.cu"))

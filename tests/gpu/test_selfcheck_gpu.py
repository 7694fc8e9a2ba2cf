"""The on-device self-check on a real GPU (``pytest -m gpu``): the variants of a grid pass on this device
for every usable kernel backend (the forward and the fused backward, with and without dropout), the
Triton check runs pinned tiles (it does not autotune its own small shape), a deliberately broken kernel
is caught on the device, and nothing runs while a CUDA graph is being captured (the next eager call
checks)."""

from __future__ import annotations

import pytest
import torch

import fastattn
from fastattn import dispatch, selfcheck
from fastattn.attention.backends import triton as TA

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTATTN_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("FASTATTN_SELF_CHECK", "FASTATTN_FAULT_INJECT", "FASTATTN_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    dispatch.reset()
    yield
    monkeypatch.delenv("FASTATTN_FAULT_INJECT", raising=False)
    dispatch.reset()
    selfcheck._sync_fault_injection()
    dispatch.reset()


def test_a_grid_of_variants_passes_on_this_gpu():
    lines = []
    failures = selfcheck.sweep("cuda", head_dims=(64, 128), dtypes=(torch.float16, torch.bfloat16),
                               out=lines.append, verbose=True)
    print("\n".join(lines))
    assert failures == 0
    assert any("triton" in ln and "variants, 0 failed" in ln for ln in lines)


def test_the_triton_check_does_not_autotune_its_own_shape():
    q = torch.randn(1, 4, 256, 64, device="cuda", dtype=torch.float16)
    before = dict(TA._TUNED)
    fastattn.attention(q, q, q, is_causal=True, backend="triton")
    tuned_now = set(TA._TUNED) - set(before)
    # the real call autotuned its own bucket (Lq = Lk = 256): one entry; the check's 40 x 72 problem none
    assert [k[-2:] for k in tuned_now] == [(256, 256)]
    assert all(v["state"] == "passed" for v in selfcheck.status().values())


def test_a_broken_kernel_is_caught_on_the_gpu(monkeypatch):
    monkeypatch.setenv("FASTATTN_FAULT_INJECT", "triton:attention")
    q = torch.randn(1, 4, 128, 64, device="cuda", dtype=torch.float16)
    with pytest.warns(selfcheck.SelfCheckWarning, match="failed its on-device self-check"):
        out = fastattn.attention(q, q, q, attn_mask=torch.ones(128, 128, dtype=torch.bool, device="cuda"))
    torch.testing.assert_close(out, fastattn.attention(q, q, q, backend="torch"), rtol=0, atol=0)


def test_no_check_during_cuda_graph_capture_and_the_next_eager_call_checks(monkeypatch):
    q = torch.randn(1, 4, 128, 64, device="cuda", dtype=torch.float16)
    monkeypatch.setenv("FASTATTN_SELF_CHECK", "0")
    fastattn.attention(q, q, q, backend="triton")  # compile and autotune outside the capture
    torch.cuda.synchronize()
    monkeypatch.setenv("FASTATTN_SELF_CHECK", "1")
    dispatch.reset()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g):
            captured = fastattn.attention(q, q, q, backend="triton")
    assert selfcheck.status() == {}
    g.replay()
    eager = fastattn.attention(q, q, q, backend="triton")
    assert [v["state"] for v in selfcheck.status().values()] == ["passed"]
    torch.testing.assert_close(captured, eager, rtol=0, atol=0)

"""The benchmark harness's CUDA path (GPU tier: ``pytest -m gpu``): do_bench timing and its CUDA-event
fallback, the peak step, and one padded attention case through every kind of provider, so that
``scripts/gpu_check.sh`` proves the harness before its bench stage relies on it."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import harness as H  # noqa: E402

pytestmark = pytest.mark.gpu


def test_timing_paths_agree_on_a_matmul():
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
    fn = lambda: a @ a  # noqa: E731
    t = H.time_fn(fn, "cuda", warmup_ms=10, rep_ms=50)
    assert 0 < t.p20_ms <= t.median_ms <= t.p80_ms
    ts = H._cuda_events_bench(fn, 10, 50)
    med = sorted(ts)[len(ts) // 2]
    print(f"do_bench median {t.median_ms:.4f} ms, CUDA-event fallback median {med:.4f} ms")
    assert 0.25 < med / t.median_ms < 4, "the two timers disagree by more than 4x"


def test_peaks_and_a_padded_attention_case(tmp_path):
    from fastattn import bench
    rc = bench.main(["--preset", "quick", "--suite", "attention", "--models", "bert-base", "--seqlens", "512",
                     "--paddings", "0.5", "--providers", "fastattn-cuda,fastattn-triton,sdpa-flash,sdpa-efficient,flex",
                     "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    gpu = H.slug(torch.cuda.get_device_name())
    peak = {r["provider"]: r for r in H.read_rows([str(tmp_path / gpu / "peak.csv")])}
    assert float(peak["torch.matmul"]["tflops"]) > 0 and float(peak["Tensor.copy_"]["gbps"]) > 0
    rows = {r["provider"]: r for r in H.read_rows([str(tmp_path / gpu / "attention.csv")])}
    for name, r in rows.items():
        print(name, r["status"], r["median_ms"], r["tflops"], r["note"][:160])
    assert set(rows) == {"fastattn-cuda", "fastattn-triton", "sdpa-flash", "sdpa-efficient", "flex"}
    assert rows["sdpa-flash"]["status"] == "unsupported" and rows["sdpa-flash"]["note"]  # flash takes no mask
    for name in ("sdpa-efficient", "flex"):
        r = rows[name]
        assert r["status"] == "ok", r
        assert 0 < float(r["p20_ms"]) <= float(r["median_ms"]) <= float(r["p80_ms"])
        assert float(r["tflops"]) > 0 and 0 < float(r["peak_fraction"]) < 1.5
        assert r["gpu"] == torch.cuda.get_device_name() and r["commit"] and r["preset"] == "quick"
    for name in ("fastattn-cuda", "fastattn-triton"):  # our kernels run it or say why not, never fail
        assert rows[name]["status"] in ("ok", "unsupported"), rows[name]


def test_train_preset_padded_bert_forward_backward(tmp_path):
    """``--preset train``'s padded BERT case: the Triton backend's fused backward is timed, the forward-only
    CUDA backend and SDPA's flash backend (no mask) are recorded unsupported with their reasons."""
    from fastattn import bench
    rc = bench.main(["--preset", "train", "--suite", "attention", "--models", "bert-base", "--no-peak",
                     "--providers", "fastattn-cuda,fastattn-triton,sdpa-flash,sdpa-efficient",
                     "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    gpu = H.slug(torch.cuda.get_device_name())
    rows = {r["provider"]: r for r in H.read_rows([str(tmp_path / gpu / "attention.csv")])}
    for name, r in rows.items():
        print(name, r["case"], r["status"], r["median_ms"], r["tflops"], r["note"][:160])
    assert {r["case"] for r in rows.values()} == {"bert-base-b32-h12/12-q512-k512-d64-len25to100-fwdbwd"}
    for name in ("fastattn-triton", "sdpa-efficient"):
        r = rows[name]
        assert r["status"] == "ok" and "fwd+bwd" in r["note"], r
        assert 0 < float(r["p20_ms"]) <= float(r["median_ms"]) <= float(r["p80_ms"]) and float(r["tflops"]) > 0
    assert rows["sdpa-flash"]["status"] == "unsupported" and rows["sdpa-flash"]["note"]
    cuda = rows["fastattn-cuda"]
    assert cuda["status"] == "unsupported" and ("forward-only" in cuda["note"] or "unavailable" in cuda["note"])

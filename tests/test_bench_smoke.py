"""The benchmark harness on CPU: ``fastattn bench --smoke`` writes rows with the full schema, the FLOP
formulas match hand counts and fastattn's own mask semantics, plots and the README table are built from
stored rows only. (No performance number is asserted: smoke rows are harness checks.)"""

import csv
import itertools
import os
import random
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import bench_attention, bench_e2e, plot, readme_table  # noqa: E402
from benchmarks import flops as F  # noqa: E402
from benchmarks import harness as H  # noqa: E402
from fastattn import bench  # noqa: E402
from fastattn.masks import NormalizedMask  # noqa: E402

SUITES = {"peak", "attention", "ffn", "e2e", "cold", "overhead", "cpu"}


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-smoke")
    rc = bench.main(["--smoke", "--out", str(out), "--no-progress"])
    assert rc == 0
    return str(out)


def _rows(smoke_dir, suite):
    return H.read_rows([os.path.join(smoke_dir, "cpu", f"{suite}.csv")])


# ----------------------------------------------------------------------------------------- the sweep
def test_smoke_writes_every_suite_with_the_full_schema(smoke_dir):
    files = H.result_files(smoke_dir)
    assert {os.path.basename(f)[:-4] for f in files} == SUITES
    required = ("suite", "case", "provider", "dtype", "batch", "heads_q", "heads_kv", "seqlen_q", "seqlen_k",
                "head_dim", "causal", "padding", "median_ms", "p20_ms", "p80_ms", "tflops", "gbps", "peak_fraction",
                "gpu", "torch", "triton", "cuda", "commit", "date", "command", "status", "note")
    assert set(required) <= set(H.SCHEMA)
    for f in files:
        with open(f, newline="") as fh:
            assert tuple(next(csv.reader(fh))) == H.SCHEMA, f
        rows = H.read_rows([f])
        assert rows, f
        for r in rows:
            assert r["suite"] == os.path.basename(f)[:-4]
            assert r["preset"] == "smoke" and r["status"] in H.STATUSES and r["metric"] in H.METRICS
            for col in ("case", "provider", "gpu", "torch", "triton", "cuda", "commit", "date"):
                assert r[col], (f, col, r)
            assert r["command"].startswith("fastattn bench --smoke")
            if r["status"] == "ok":
                med, p20, p80 = float(r["median_ms"]), r["p20_ms"], r["p80_ms"]
                assert med > 0
                if p20 and p80:
                    assert float(p20) <= med <= float(p80)
                if r["suite"] != "overhead":
                    assert "smoke" in r["note"], "a smoke row must say it is not a measurement"
            else:
                assert r["median_ms"] == "" and r["tflops"] == "" and r["note"], r


def test_smoke_attention_rows(smoke_dir):
    rows = _rows(smoke_dir, "attention")
    keys = [(r["case"], r["provider"], r["dtype"]) for r in rows]
    assert len(keys) == len(set(keys)), "one row per (case, provider, dtype)"
    cases = bench_attention.attention_cases("smoke", ["bfloat16"])
    assert {r["case"] for r in rows} == {c.name for c in cases}
    by = {(r["case"], r["provider"]): r for r in rows}
    for c in cases:
        assert by[(c.name, "fastattn-torch")]["status"] == "ok"
        assert by[(c.name, "eager")]["status"] == "ok"
        r = by[(c.name, "fastattn-torch")]
        # the row's FLOPs are the formula on the row's own shape and direction (masked work excluded)
        # (a packed case counts the valid query rows only)
        assert int(r["flops"]) == F.attention_flops(c.batch, c.heads_q, c.seqlen_q, c.seqlen_k, c.head_dim,
                                                    causal=c.causal, key_lengths=c.key_lengths, direction=c.direction,
                                                    query_lengths=c.key_lengths if c.packed else None)
        assert c.name.endswith("-fwdbwd") == c.train == ("fwd+bwd" in r["note"])
        assert float(r["tflops"]) == pytest.approx(int(r["flops"]) / (float(r["median_ms"]) * 1e-3) / 1e12, rel=1e-4)
        assert float(r["gbps"]) == pytest.approx(int(r["bytes"]) / (float(r["median_ms"]) * 1e-3) / 1e9, rel=1e-4)
        assert float(r["peak_fraction"]) > 0 and r["peak_tflops"] and r["peak_gbps"]
        # on CPU the GPU-only providers are recorded as unsupported, with the reason
        for prov in ("fastattn-cuda", "fastattn-triton", "flex"):
            u = by[(c.name, prov)]
            assert u["status"] == "unsupported" and len(u["note"]) > 10
    assert any(float(r["padding"]) > 0 for r in rows) and any(r["causal"] == "bottom_right" for r in rows)
    # the training direction runs in the smoke sweep: causal, and BERT-style key lengths with GQA
    train = [c for c in cases if c.train]
    assert {c.causal for c in train} == {"none", "top_left"} and any(c.len_lo for c in train)
    for c in train:
        for prov in ("fastattn-torch", "sdpa-math", "eager"):
            assert by[(c.name, prov)]["status"] == "ok"
    # the unpad preset's packed comparison: varlen on the valid tokens, flash on the dense shape (CPU flash)
    for c in cases:
        for prov in ("fastattn-varlen-torch", "sdpa-flash-dense"):
            assert (by[(c.name, prov)]["status"] == "ok") == c.packed, (c.name, prov, by[(c.name, prov)]["note"])
        if c.packed:
            assert "tokens/s" in by[(c.name, "fastattn-varlen-torch")]["note"]


def test_smoke_other_suites(smoke_dir):
    ffn = _rows(smoke_dir, "ffn")
    assert {r["provider"] for r in ffn if r["status"] == "ok"} >= {"eager", "fastattn-torch"}
    assert all(int(r["flops"]) == F.ffn_fwd_flops(int(r["batch"]) * int(r["seqlen_q"]), int(r["d_model"]),
                                                  int(r["d_ffn"])) for r in ffn)
    e2e = _rows(smoke_dir, "e2e")
    assert {(r["case"].split("-")[1], r["provider"]) for r in e2e if r["status"] == "ok"} >= {
        ("bert", "hf-eager"), ("bert", "hf-sdpa"), ("gpt2", "hf-eager"), ("gpt2", "hf-sdpa")}
    opt = [r for r in e2e if r["provider"] == "fastattn-optimize"]
    assert len(opt) == 3 and all(r["status"] in ("ok", "unsupported") for r in opt)
    # the fine-tuning step: fwd + bwd + AdamW under fp16 autocast, useful FLOPs of the valid tokens
    (tc,) = [c for c in bench_e2e.e2e_cases("smoke", ["bfloat16"]) if c.task == "train"]
    train = {r["provider"]: r for r in e2e if r["case"] == tc.name}
    assert tc.dtype == "float16" and tc.name == "tiny-bert-train-b2-s16-len25to100"
    cfg = bench_e2e._config(tc.model)
    for prov in ("hf-sdpa", "fastattn-optimize"):
        r = train[prov]
        assert r["status"] == "ok" and "fine-tuning step" in r["note"] and "GradScaler skipped" in r["note"], r
        assert int(r["flops"]) == F.encoder_train_flops(bench_e2e._lengths(tc), cfg.num_hidden_layers,
                                                        cfg.hidden_size, cfg.intermediate_size,
                                                        cfg.num_attention_heads)
    assert train["hf-sdpa-compile"]["status"] == "unsupported"
    cold = _rows(smoke_dir, "cold")
    assert [r["metric"] for r in cold] == ["first_call"] and cold[0]["status"] == "ok"
    peak = _rows(smoke_dir, "peak")
    assert {r["provider"] for r in peak} == {"torch.matmul", "Tensor.copy_"}
    over = {r["provider"]: r for r in _rows(smoke_dir, "overhead")}
    for name in ("null-attention", "null-attention-keypadding", "null-custom-op", "null-gelu-ffn"):
        assert over[name]["status"] == "ok" and over[name]["metric"] == "per_call"
        assert 0 < float(over[name]["median_ms"]) < 10, "a no-op kernel call taking >10 ms means something is wrong"


# ------------------------------------------------------------------------------------------- formulas
def test_flop_formulas_against_hand_counts():
    vp = F.visible_pairs
    assert vp(4, 4, None) == 16
    assert vp(4, 4, "top_left") == 1 + 2 + 3 + 4
    assert vp(2, 4, "top_left") == 1 + 2                 # SDPA is_causal with Lq < Lk
    assert vp(2, 4, "bottom_right") == 3 + 4             # KV-cache alignment
    assert vp(4, 2, "top_left") == 1 + 2 + 2 + 2
    assert vp(4, 2, "bottom_right") == 0 + 0 + 1 + 2     # first Lq-Lk rows see nothing
    assert vp(1, 7, "bottom_right") == 7                 # decode sees the whole cache
    assert vp(4, 4, None, key_length=3) == 12
    assert vp(4, 4, "top_left", key_length=3) == 1 + 2 + 3 + 3
    assert vp(2, 4, "bottom_right", key_length=3) == 3 + 3
    assert vp(4, 4, "top_left", key_length=0) == 0
    assert vp(4, 4, None, query_length=2) == 8
    # batch of lengths [3, 1], causal, B=2, Hq=3, E=8, Ev=4: 2 * (8 + 4) * 3 * (9 + 4)
    assert F.attention_fwd_flops(2, 3, 4, 4, 8, 4, causal="top_left", key_lengths=[3, 1]) == 2 * 12 * 3 * 13
    assert F.attention_fwd_flops(1, 1, 128, 128, 64) == 4 * 128 * 128 * 64   # the usual 4*L^2*D
    # bytes: Q and O for every row, K and V for valid keys only, per KV head
    assert F.attention_fwd_bytes(2, 4, 2, 3, 5, 8, elem_bytes=2, key_lengths=[5, 2]) == \
        2 * (2 * 4 * 3 * 16 + 2 * (5 + 2) * 16)
    # backward: S recomputed (E), dV (Ev), dP (Ev), dQ (E), dK (E) over the same visible pairs
    fwd = F.attention_flops(2, 3, 4, 4, 8, 4, causal="top_left", key_lengths=[3, 1])
    assert fwd == F.attention_fwd_flops(2, 3, 4, 4, 8, 4, causal="top_left", key_lengths=[3, 1])
    assert F.attention_flops(2, 3, 4, 4, 8, 4, causal="top_left", key_lengths=[3, 1], direction="bwd") == \
        2 * (8 + 4 + 4 + 8 + 8) * 3 * 13
    assert F.attention_flops(2, 3, 4, 4, 8, 4, causal="top_left", key_lengths=[3, 1], direction="fwd+bwd") == \
        2 * (12 + 32) * 3 * 13
    # E == Ev: the backward is 2.5x the forward, a training step 3.5x (FlashAttention's convention)
    assert F.attention_flops(1, 1, 128, 128, 64, direction="bwd") == 10 * 128 * 128 * 64
    assert F.attention_flops(1, 1, 128, 128, 64, direction="fwd+bwd") == 14 * 128 * 128 * 64
    assert F.attention_flops(2, 2, 8, 8, 16, causal="top_left", direction="fwd+bwd") * 2 == \
        7 * F.attention_fwd_flops(2, 2, 8, 8, 16, causal="top_left")
    # backward bytes: Q, O, dO read and dQ written per row; K, V read and dK, dV written per valid key
    assert F.attention_bytes(2, 4, 2, 3, 5, 8, elem_bytes=2, key_lengths=[5, 2], direction="bwd") == \
        2 * (2 * 4 * 3 * 32 + 2 * (5 + 2) * 32)
    assert F.attention_bytes(2, 4, 2, 3, 5, 8, key_lengths=[5, 2], direction="fwd+bwd") == \
        3 * F.attention_fwd_bytes(2, 4, 2, 3, 5, 8, key_lengths=[5, 2])
    with pytest.raises(ValueError, match="direction"):
        F.attention_flops(1, 1, 4, 4, 8, direction="backward")
    # encoder training step, lengths [3, 1], 2 layers, d=4, f=8, 2 heads of 2: per valid token and layer
    # 3 * 2 * (4*16 + 2*32) = 768 linear FLOPs; attention 14 * 2 (per pair, D=2) * 2 heads * (9 + 1) pairs
    assert F.encoder_train_flops([3, 1], 2, 4, 8, 2) == 2 * (768 * 4 + 14 * 2 * 2 * 10)
    assert F.ffn_fwd_flops(10, 4, 16) == 2 * 10 * 4 * 16 * 2
    assert F.ffn_fwd_bytes(10, 4, 16, elem_bytes=2) == 2 * (40 + 64 + 64 + 40 + 16 + 4)
    assert F.matmul_flops(2, 3, 4) == 48 and F.copy_bytes(10, 2) == 40
    # roofline: 1 TFLOP in 1 s on a 2 TFLOP/s device is half of peak; the binding resource wins
    assert F.roofline_fraction(1000.0, 10**12, 10**9, 2.0, 1000.0) == pytest.approx(0.5)
    assert F.roofline_fraction(1000.0, 10**9, 10**12, 2.0, 1000.0) == pytest.approx(1.0)
    assert F.roofline_fraction(1.0, None, None, 1.0, 1.0) is None
    with pytest.raises(ValueError, match="causal"):
        vp(2, 2, "lower_right")
    with pytest.raises(ValueError, match="key_lengths"):
        F.attention_fwd_flops(2, 1, 4, 4, 8, key_lengths=[1])


def test_notes_predictions_are_what_benchmarks_work_computes():
    """NOTES.md's H200 predictions for the training rows come from benchmarks.work's stated assumptions:
    a change of an assumption shows here until the table is regenerated."""
    from benchmarks import work
    notes = open(os.path.join(ROOT, "benchmarks", "NOTES.md"), encoding="utf-8").read()
    for table in (work.attention_prediction_table(), work.step_prediction_table()):
        assert table in notes
    assert work.main(["--preset", "train"]) == 0


def test_visible_pairs_equal_fastattn_mask_semantics():
    """The formula counts exactly the pairs fastattn.masks.NormalizedMask keeps (the kernels' view)."""
    rnd = random.Random(0)
    for lq, lk, causal in itertools.product((1, 3, 8, 13), (1, 5, 8, 17), (None, "top_left", "bottom_right")):
        B = 3
        lengths = [rnd.randint(0, lk) for _ in range(B)]
        m = NormalizedMask(causal=causal, key_lengths=torch.tensor(lengths, dtype=torch.int32))
        keep = m.keep(B, lq, lk, "cpu").expand(B, 1, lq, lk)
        expect = int(keep.sum())
        got = sum(F.visible_pairs(lq, lk, causal, key_length=n) for n in lengths)
        assert got == expect, (lq, lk, causal, lengths)


def test_case_lists():
    for preset in ("quick", "full"):
        cases = bench_attention.attention_cases(preset, ["bfloat16"])
        names = [c.name for c in cases]
        assert len(names) == len(set(names))
        for c in cases:
            if c.decode:
                assert c.seqlen_q == 1 and 1024 <= c.seqlen_k <= 32768
            else:
                assert c.batch * c.seqlen_q == 16384 and 128 <= c.seqlen_q <= 16384
            kl = c.key_lengths
            if c.padding:
                assert all(1 <= n <= c.seqlen_k for n in kl)
                assert 1 - sum(kl) / (c.batch * c.seqlen_k) == pytest.approx(c.padding, abs=0.02)
            else:
                assert kl is None
    full = bench_attention.attention_cases("full", ["bfloat16"])
    assert {c.padding for c in full} == {0.0, 0.25, 0.5, 0.75}
    assert {c.head_dim for c in full} == {64, 128} and {c.causal for c in full} == {"none", "top_left"}
    assert not any(c.train for c in full + bench_attention.attention_cases("headline", ["bfloat16"]))
    # issue #11's training sweep: the padded BERT shape, then D=64/128, causal and not, S=512..16k, bf16
    train = bench_attention.attention_cases("train", ["bfloat16"])
    assert all(c.train and c.name.endswith("-fwdbwd") and c.dtype == "bfloat16" for c in train)
    bert = train[0]
    assert (bert.batch, bert.heads_q, bert.head_dim, bert.seqlen_q, bert.causal) == (32, 12, 64, 512, "none")
    assert bert.key_lengths[0] == 128 and bert.key_lengths[-1] == 512
    rest = train[1:]
    assert {(c.head_dim, c.causal, c.seqlen_q) for c in rest} == {
        (d, causal, s) for d in (64, 128) for causal in ("none", "top_left") for s in bench_attention.HEADLINE_SEQLENS}
    assert len(rest) == 24 and all(c.batch * c.seqlen_q == 16384 and c.key_lengths is None for c in rest)
    steps = bench_e2e.e2e_cases("train", ["bfloat16", "float16"])
    assert [(c.model, c.task, c.batch, c.seqlen, c.dtype) for c in steps] == [
        ("bert-base", "train", 32, 128, "float16"), ("bert-base", "train", 32, 512, "float16")]
    assert bench_e2e._lengths(steps[1])[0] == 128 and bench_e2e._lengths(steps[1])[-1] == 512


# ------------------------------------------------------------------------------------------- schema
def test_schema_is_enforced(tmp_path):
    p = str(tmp_path / "x.csv")
    ok = dict(suite="s", case="c", provider="p", status="ok", median_ms=1.0)
    assert H.append_rows(p, [ok]) == 1
    with pytest.raises(ValueError, match="must not carry a time"):
        H.append_rows(p, [dict(ok, status="unsupported")])
    with pytest.raises(ValueError, match="needs median_ms"):
        H.append_rows(p, [dict(ok, median_ms=None)])
    with pytest.raises(ValueError, match="not in benchmarks.harness.SCHEMA"):
        H.append_rows(p, [dict(ok, speedup=2.0)])
    bad = str(tmp_path / "old.csv")
    with open(bad, "w") as f:
        f.write("suite,case,ms\n")
    with pytest.raises(ValueError, match="header is not"):
        H.append_rows(bad, [ok])


# ------------------------------------------------------------------------------- plots and README
def test_plots_and_readme_table_from_stored_rows(smoke_dir, tmp_path):
    pngs = plot.plot_all(smoke_dir, allow_smoke=True, out_dir=str(tmp_path / "plots"))
    assert any("attention" in os.path.basename(p) for p in pngs) and any(p.endswith("ffn.png") for p in pngs)
    for p in pngs:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # smoke rows are never plotted unless asked for
    assert plot.plot_all(smoke_dir, out_dir=str(tmp_path / "none")) == []

    readme = tmp_path / "README.md"
    readme.write_text(f"# fastattn\n\n## Benchmarks\n{readme_table.START}\nstale\n{readme_table.END}\n\n## Credits\n")
    assert readme_table.update_readme(str(readme), smoke_dir, gpu="cpu", allow_smoke=True)
    text = readme.read_text()
    table = text.split(readme_table.START)[1].split(readme_table.END)[0]
    assert "stale" not in table and text.endswith("## Credits\n")
    for c in bench_attention.attention_cases("smoke", ["bfloat16"]):
        assert f"`{c.name}`" in table
    # training rows get their own table, after the forward one
    assert table.index("**Attention forward**") < table.index("**Attention forward + backward**")
    fwd_table = table.split("**Attention forward + backward**")[0]
    assert "-fwdbwd`" not in fwd_table and "fine-tuning step" in table
    row = next(line for line in table.splitlines() if line.startswith("| `tiny-b2-h2/2-q64-k64-d32`"))
    header = next(line for line in table.splitlines() if line.startswith("| case |"))
    cells = dict(zip([h.strip() for h in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["fastattn-cuda"] == "n/a" and cells["fastattn-torch"].endswith("TF/s)")
    assert "commit" in table and "`fastattn bench --smoke" in table
    assert not readme_table.update_readme(str(readme), smoke_dir, gpu="cpu", allow_smoke=True), "idempotent"
    # without (non-smoke) rows the markers enclose nothing: never a number from nowhere
    readme_table.update_readme(str(readme), smoke_dir, gpu="cpu")
    assert f"{readme_table.START}\n{readme_table.END}" in readme.read_text()
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        readme_table.update_readme(str(readme), smoke_dir, gpu="cpu", allow_smoke=True)


def test_cli_finds_the_suite_and_rejects_bad_arguments(capsys):
    assert bench.find_repo_root() == ROOT
    assert bench.main(["--smoke", "--suite", "nope"]) == 2
    assert "unknown suite" in capsys.readouterr().err
    assert bench.main(["--smoke", "--dtype", "int8"]) == 2
    if not torch.cuda.is_available():
        assert bench.main(["--suite", "attention"]) == 2
        assert "need a CUDA GPU" in capsys.readouterr().err
    assert bench.main(["--smoke", "--list", "--suite", "attention,ffn"]) == 0
    assert "tiny-b2-h2/2-q64-k64-d32" in capsys.readouterr().out
    # the train preset: attention fwd+bwd and the fine-tuning step, nothing else
    assert bench.main(["--preset", "train", "--suite", "ffn"]) == 2
    assert "--preset train has cases for the suites" in capsys.readouterr().err
    assert bench.main(["--list", "--preset", "train"]) == 0
    out = capsys.readouterr().out
    assert "attention: 25 cases" in out and "sdpa-cudnn" in out and "flex" in out
    assert "bert-base-b32-h12/12-q512-k512-d64-len25to100-fwdbwd" in out
    assert "e2e: 2 cases x 2 providers (hf-sdpa, fastattn-optimize)" in out
    assert "bert-base-train-b32-s512-len25to100 [float16]" in out
    # the unpad preset (issue #12): BERT-base inference with and without unpadding, varlen vs flash dense
    assert bench.main(["--list", "--preset", "unpad", "--dtype", "fp16,bf16"]) == 0
    out = capsys.readouterr().out
    assert "e2e: 2 cases x 3 providers (hf-sdpa, fastattn-optimize, fastattn-optimize-nounpad)" in out
    assert "bert-base-forward-b32-s512-len25to100 [float16]" in out
    assert "bert-base-b32-h12/12-q512-k512-d64-len25to100-packed [bfloat16]" in out
    assert "fastattn-varlen-triton" in out and "sdpa-flash-dense" in out


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_providers_compute_the_same_attention(tmp_path):
    """Every CPU-runnable provider of the attention suite, fed the mask form it is benchmarked with
    (lengths for fastattn and FlexAttention, the equivalent bool mask for SDPA and eager), computes the
    same thing as the float64 reference: the sweep compares like with like."""
    from torch.nn.attention.bias import causal_lower_right
    from torch.nn.attention.flex_attention import flex_attention

    import fastattn
    from fastattn import reference
    env = H.capture_env("cpu", command="test")
    ctx = H.Context(env=env, writer=H.ResultWriter(str(tmp_path), env, "smoke"), preset="smoke")
    provs = {p.name: p for p in bench_attention.PROVIDERS}
    for case in bench_attention.attention_cases("smoke", ["float32"]):
        data = bench_attention.CaseData(case, ctx)
        q, k, v = data.sets[0][:3]
        if data.lengths is not None:
            mask = fastattn.KeyPadding(lengths=data.lengths, causal=None if case.causal == "none" else case.causal)
            kw = {"attn_mask": mask}
        elif case.causal == "top_left":
            kw = {"is_causal": True}
        elif case.causal == "bottom_right":
            kw = {"attn_mask": causal_lower_right(case.seqlen_q, case.seqlen_k)}
        else:
            kw = {}
        with torch.enable_grad():
            ref = reference.attention(q, k, v, enable_gqa=data.gqa, **kw)
            if case.train:  # a training call returns the output and the gradients of q, k, v
                ref = (ref.float(),) + torch.autograd.grad(ref, (q, k, v), data.sets[0][3].to(ref.dtype))
            else:
                ref = ref.float()
        for name in ("fastattn-torch", "sdpa-math", "eager"):
            fn = bench_attention.PREPARE[provs[name].kind](data, provs[name], ctx)
            ctxm = fn.bench_context() if getattr(fn, "bench_context", None) else None
            if ctxm is not None:
                with ctxm:
                    out = fn()
            else:
                out = fn()
            torch.testing.assert_close(out, ref, msg=lambda m, n=name, c=case.name: f"{n} on {c}: {m}")
        if case.packed:  # varlen: the valid rows of each sequence, packed; flash-dense: the unmasked shape
            fn = bench_attention.PREPARE["varlen"](data, provs["fastattn-varlen-torch"], ctx)
            out, (_, cu, lengths) = fn(), fn.packed
            for b, n in enumerate(lengths):
                torch.testing.assert_close(out[cu[b]:cu[b + 1]].transpose(0, 1), ref[b, :, :n],
                                           msg=lambda m, b=b: f"varlen on {case.name}, sequence {b}: {m}")
            fn = bench_attention.PREPARE["sdpa_dense"](data, provs["sdpa-flash-dense"], ctx)
            with fn.bench_context():
                dense = fn()
            torch.testing.assert_close(dense.float(), reference.attention(q, k, v, enable_gqa=data.gqa).float())
        # FlexAttention (eager, CPU) with the suite's block mask
        bm = bench_attention.flex_block_mask(data, "cpu")
        out = flex_attention(q.detach(), k.detach(), v.detach(), block_mask=bm, enable_gqa=data.gqa)  # CPU: no bwd
        torch.testing.assert_close(out, ref[0] if case.train else ref, msg=lambda m, c=case.name: f"flex on {c}: {m}")

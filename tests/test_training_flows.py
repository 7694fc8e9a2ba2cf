"""The fine-tuning flows our users run (issue #11 item 6), on the Triton kernels (``TRITON_INTERPRET=1``,
``FASTATTN_BACKEND=triton``), each against the same flow in eager with the same seeds:

* ``Trainer`` fine-tuning ``BertForSequenceClassification`` (``padding="max_length"``,
  ``DataCollatorWithPadding``, accuracy in ``compute_metrics``): losses step by step under the model-level
  rule with dropout off; with dropout on (BERT's 0.1, in-kernel) it learns the synthetic sentiment set
  like eager does;
* a plain loop through ``accelerate`` (``prepare``, ``accelerator.backward``), in one process and under
  ``accelerate launch`` with two processes (DDP over gloo on CPU): the same losses as one process with the
  same global batch;
* PEFT LoRA on query/value: adapter gradients under the rule; the merged, saved model loads into the stock
  class in a process that never imports fastattn;
* the fill-mask pipeline on a BERT and a RoBERTa MLM, ``attn_implementation="fastattn"`` and
  ``optimize()``: identical top-k;
* memory: what autograd saves for fastattn attention holds nothing of size Lq x Lk.

The model-level rule (DESIGN.md): ``max|ours - ref64| <= 3 max|eager_fp32 - ref64| + floor``, ref64 the
same flow in float64 (HF ``sdpa``). Each flow also checks the fused kernels really ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("triton")

import fastattn  # noqa: E402
from fastattn import dispatch  # noqa: E402
from fastattn.testing import assert_close  # noqa: E402

import _flows  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TRITON = dispatch.backends("attention")["triton"]
TRITON_VARLEN = dispatch.backends("attention_varlen")["triton"]  # optimize() unpads BERT encoders

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="the Triton kernels need a GPU or TRITON_INTERPRET=1")


@pytest.fixture
def on_triton(monkeypatch):
    """Force the Triton kernels and count their forward and fused-backward launches."""
    monkeypatch.setenv("FASTATTN_BACKEND", "triton")
    dispatch.reset()
    counts = {"fwd": 0, "bwd": 0}
    fwd, bwd = TRITON.launch, TRITON.launch_bwd

    def launch(*a, **k):
        counts["fwd"] += 1
        return fwd(*a, **k)

    def launch_bwd(*a, **k):
        counts["bwd"] += 1
        return bwd(*a, **k)

    vfwd = TRITON_VARLEN.launch

    def varlen_launch(*a, **k):
        counts["fwd"] += 1
        return vfwd(*a, **k)

    monkeypatch.setattr(TRITON, "launch", launch)
    monkeypatch.setattr(TRITON, "launch_bwd", launch_bwd)
    monkeypatch.setattr(TRITON_VARLEN, "launch", varlen_launch)
    yield counts
    dispatch.reset()


def _rule(ours, naive, ref, name):
    ours, naive, ref = (torch.tensor(x, dtype=torch.float64) for x in (ours, naive, ref))
    return assert_close(ours, ref, naive, torch.float32, name=name, factor=3.0)


# ------------------------------------------------------------------------------------------------ Trainer
class _RecordingTrainer(transformers.Trainer):
    """Records every step's loss at full precision (``log_history`` rounds it to 4 digits)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.step_losses = []

    def compute_loss(self, model, inputs, return_outputs=False, **kw):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)
        loss = out[0] if return_outputs else out
        if model.training:
            self.step_losses.append(float(loss.detach()))
        return out


def _accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def _trainer(tmp_path, impl, dtype=torch.float32, dropout=0.0, steps=20, lr=3e-3, n_eval=0):
    from transformers import DataCollatorWithPadding, TrainingArguments
    tok = _flows.tokenizer(str(tmp_path / "tok"))
    train = _flows.encoded(tok, 64, seed=1)
    evals = _flows.encoded(tok, n_eval, seed=2) if n_eval else None
    model = _flows.classifier(impl, dtype, dropout=dropout, seed=0)
    args = TrainingArguments(output_dir=str(tmp_path / f"out-{impl}-{dtype}"), per_device_train_batch_size=8,
                             per_device_eval_batch_size=16, max_steps=steps, learning_rate=lr, warmup_steps=0,
                             weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[], seed=0,
                             data_seed=0, use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    return _RecordingTrainer(model=model, args=args, train_dataset=train, eval_dataset=evals,
                             data_collator=DataCollatorWithPadding(tok), compute_metrics=_accuracy)


def test_trainer_losses_step_by_step_match_eager(tmp_path, on_triton):
    runs = {}
    for impl, dtype in (("fastattn", torch.float32), ("eager", torch.float32), ("sdpa", torch.float64)):
        t = _trainer(tmp_path, impl, dtype, steps=20, lr=1e-2)
        t.train()
        runs[impl] = t.step_losses
    assert len(runs["fastattn"]) == 20
    assert on_triton["fwd"] >= 40 and on_triton["bwd"] >= 40, on_triton  # 2 layers x 20 steps, fused backward
    _rule(runs["fastattn"], runs["eager"], runs["sdpa"], "Trainer losses, 20 steps")
    assert sum(runs["fastattn"][-5:]) < sum(runs["fastattn"][:5])  # it trains


def test_trainer_with_dropout_learns_like_eager(tmp_path, on_triton):
    """BERT's dropout 0.1 on attention probabilities (in the Triton kernels, forward and backward) and on
    hidden states: training learns the synthetic set to the same accuracy as eager (different random
    streams, so not step by step)."""
    acc = {}
    for impl in ("fastattn", "eager"):
        t = _trainer(tmp_path, impl, dropout=0.1, steps=40, lr=5e-3, n_eval=64)
        t.train()
        acc[impl] = t.evaluate()["eval_accuracy"]
    assert on_triton["bwd"] >= 80, on_triton
    assert acc["eager"] >= 0.9, acc  # the set is learnable in this budget
    assert acc["fastattn"] >= acc["eager"] - 0.1, acc


# --------------------------------------------------------------------------------------------- accelerate
def test_accelerate_loop_matches_eager(on_triton):
    pytest.importorskip("accelerate")
    ours = _flows.accelerate_losses("fastattn")
    assert on_triton["bwd"] >= 2 * len(ours), on_triton
    _rule(ours, _flows.accelerate_losses("eager"), _flows.accelerate_losses("sdpa", torch.float64),
          "accelerate loop losses")


def test_accelerate_launch_two_processes_same_losses(tmp_path, on_triton):
    """``accelerate launch --multi_gpu --num_processes 2`` on a CPU machine: DDP over gloo
    (``DistributedType.MULTI_CPU``), each process half of every global batch."""
    pytest.importorskip("accelerate")
    exe = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if exe is None:
        pytest.skip("the accelerate command is not installed")
    out = tmp_path / "losses.json"
    env = dict(os.environ, TRITON_INTERPRET="1", FASTATTN_BACKEND="triton", OMP_NUM_THREADS="1",
               TMPDIR=str(tmp_path), PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([exe, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
                        os.path.join(HERE, "_flows.py"), "--impl", "fastattn", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["num_processes"] == 2 and two["distributed_type"] == "DistributedType.MULTI_CPU", two
    one = _flows.accelerate_losses("fastattn")
    assert len(two["losses"]) == len(one)
    # the two runs differ only in the order of the gradient sum (DDP's all-reduce): the model rule
    # against the float64 flow holds for both
    ref = _flows.accelerate_losses("sdpa", torch.float64)
    naive = _flows.accelerate_losses("eager")
    _rule(two["losses"], naive, ref, "2-process accelerate losses")
    _rule(one, naive, ref, "1-process accelerate losses")


# ------------------------------------------------------------------------------------------------- PEFT
def test_peft_lora_gradients_and_merged_model_in_stock_class(tmp_path, on_triton):
    peft = pytest.importorskip("peft")
    tok = _flows.tokenizer(str(tmp_path / "tok"))
    batch = transformers.DataCollatorWithPadding(tok)(_flows.encoded(tok, 8, seed=3))

    def lora(impl, dtype):
        model = _flows.classifier(impl, dtype)
        torch.manual_seed(1)
        cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], lora_dropout=0.0,
                              init_lora_weights=False)  # random B too: every adapter weight gets a gradient
        model = peft.get_peft_model(model, cfg)
        model.train()
        model(**batch).loss.backward()
        return model, {n: p.grad for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}

    ours, g_ours = lora("fastattn", torch.float32)
    _, g_eager = lora("eager", torch.float32)
    _, g_ref = lora("sdpa", torch.float64)
    assert on_triton["bwd"] >= 2 and len(g_ours) == 8, (on_triton, list(g_ours))
    for n in g_ours:
        assert_close(g_ours[n], g_ref[n], g_eager[n], torch.float32, name=n, factor=3.0)

    merged = ours.merge_and_unload().eval()
    merged.save_pretrained(tmp_path / "merged")
    tok.save_pretrained(tmp_path / "merged")
    assert "fastattn" not in (tmp_path / "merged" / "config.json").read_text()
    with torch.no_grad():
        expected = merged(**batch).logits
    torch.save(dict(batch), tmp_path / "batch.pt")
    torch.save(expected, tmp_path / "expected.pt")
    # a user's process that never imports fastattn loads it into the stock class
    code = ("import sys, torch\nfrom transformers import BertForSequenceClassification\n"
            "m = BertForSequenceClassification.from_pretrained(sys.argv[1]).eval()\n"
            "b = torch.load(sys.argv[2]); e = torch.load(sys.argv[3])\n"
            "with torch.no_grad(): o = m(**b).logits\n"
            "assert 'fastattn' not in sys.modules\n"
            "print(float((o - e).abs().max()), float(e.abs().max()))\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "merged"), str(tmp_path / "batch.pt"),
                        str(tmp_path / "expected.pt")], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    diff, scale = map(float, r.stdout.split())
    # stock sdpa attention against our kernel on the same weights: fp32 rounding only
    assert diff <= 1e-5 * max(scale, 1.0), (diff, scale)


# --------------------------------------------------------------------------------------------- fill-mask
@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("how", ["attn_implementation", "optimize"])
def test_fill_mask_pipeline_identical_top_k(tmp_path, on_triton, kind, how):
    from transformers import (BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM, pipeline)
    tok = _flows.tokenizer(str(tmp_path / "tok"))
    common = dict(vocab_size=len(_flows.WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=48, pad_token_id=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(4)
    if kind == "bert":
        model = BertForMaskedLM(BertConfig(max_position_embeddings=_flows.MAX_LEN, **common))
    else:  # RoBERTa: positions start after padding_idx (1)
        model = RobertaForMaskedLM(RobertaConfig(max_position_embeddings=_flows.MAX_LEN + 2, **common))
    model.eval().set_attn_implementation("eager")
    texts = ["the movie was [MASK] .", "a dog went [MASK] home", "[MASK] plot"]
    pipe = pipeline("fill-mask", model=model, tokenizer=tok, device="cpu")
    eager = pipe(texts, top_k=5)
    if how == "optimize":
        fastattn.optimize(model)
    else:
        model.set_attn_implementation("fastattn")
    ours = pipe(texts, top_k=5)
    assert on_triton["fwd"] >= 2 * len(texts), on_triton
    for e, o in zip(eager, ours):
        assert [x["token"] for x in e] == [x["token"] for x in o], (e, o)
        for x, y in zip(e, o):
            assert abs(x["score"] - y["score"]) <= 1e-5, (x, y)


# ------------------------------------------------------------------------------------------------ memory
@pytest.mark.parametrize("mask", ["none", "causal", "key_padding", "dense_bool"])
def test_fused_autograd_saves_nothing_of_size_lq_lk(monkeypatch, mask):
    """What autograd keeps for the fused backward is q, k, v, out, lse and the RNG state (two integers),
    plus the user's own mask tensors by reference: nothing of size Lq x Lk is created for it. (The torch
    backend is SDPA with SDPA's own autograd: its CPU math path saves the probabilities, as plain SDPA does.)"""
    monkeypatch.setenv("FASTATTN_BACKEND", "triton")
    dispatch.reset()
    B, H, Lq, Lk, D = 1, 1, 64, 96, 8  # Lq*Lk = 6144 > every other tensor (q: 512, k: 768)
    q, k, v = (torch.randn(B, H, L, D, requires_grad=True) for L in (Lq, Lk, Lk))
    kw, user = {}, [q, k, v]
    if mask == "causal":
        kw["is_causal"] = True
    elif mask == "key_padding":
        lengths = torch.tensor([70])
        kw["attn_mask"], user = fastattn.KeyPadding(lengths=lengths), user + [lengths]
    elif mask == "dense_bool":
        kw["attn_mask"] = torch.rand(B, 1, Lq, Lk) > 0.3
        user.append(kw["attn_mask"])
    saved = []

    def pack(t):
        saved.append(t)
        return t

    # warm-up: the first call of a kernel variant runs its one-off self-check (fastattn.selfcheck), whose
    # float64 reference gradients go through autograd and would be seen by the hooks
    fastattn.attention(q, k, v, dropout_p=0.25, **kw).sum().backward()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fastattn.attention(q, k, v, dropout_p=0.25, **kw)
    ptrs = {x.untyped_storage().data_ptr() for x in user}
    created = [t for t in saved if t.untyped_storage().data_ptr() not in ptrs]
    big = [tuple(t.shape) for t in created if t.numel() >= Lq * Lk]
    assert not big, f"autograd saved Lq x Lk-sized tensors: {big}"
    # the rest is out and the float32 LSE
    assert sum(t.numel() * t.element_size() for t in created) <= out.numel() * out.element_size() + B * H * Lq * 4, \
        [(tuple(t.shape), t.dtype) for t in created]
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()

"""The fine-tuning flows of tests/test_training_flows.py: a word-level tokenizer, a synthetic sentiment set
and a tiny BERT classifier (no hub), a plain training loop through Hugging Face Accelerate, and the same
loop as a script for ``accelerate launch --num_processes 2`` (run by the multi-process test).

Run as a script it trains ``--steps`` steps and writes the per-step global-batch losses as JSON to ``--out``
(main process only)::

    TRITON_INTERPRET=1 FASTATTN_BACKEND=triton accelerate launch --cpu --num_processes 2 tests/_flows.py \\
        --impl fastattn --out losses.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
from typing import Dict, List

import torch

SPECIAL = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] at 1: RoBERTa's padding_idx
POSITIVE = ["good", "great", "fine", "happy", "love", "nice"]
NEGATIVE = ["bad", "awful", "sad", "hate", "poor", "dull"]
FILLER = ["the", "movie", "was", "a", "it", "film", "and", "plot", "really", "very", "man", "went", "to",
          "store", "dog", "home", "."]
WORDS = SPECIAL + POSITIVE + NEGATIVE + FILLER
MAX_LEN = 16
GLOBAL_BATCH = 8


def tokenizer(folder: str):
    """A ``BertTokenizer`` over :data:`WORDS` written to ``folder``."""
    from transformers import BertTokenizer
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(WORDS) + "\n")
    return BertTokenizer(path)


def sentences(n: int, seed: int) -> List[tuple]:
    """``n`` (text, label) pairs: 2-9 filler words and one or two words of one sentiment, label 1 = positive."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randrange(2)
        words = [rng.choice(FILLER) for _ in range(rng.randrange(2, 10))]
        for _ in range(rng.randrange(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        out.append((" ".join(words), label))
    return out


def encoded(tok, n: int, seed: int) -> List[Dict[str, list]]:
    """Tokenised as users do for ``Trainer``: ``padding="max_length"``, a list of feature dicts."""
    texts = sentences(n, seed)
    enc = tok([t for t, _ in texts], padding="max_length", max_length=MAX_LEN, truncation=True)
    return [{**{k: enc[k][i] for k in enc}, "labels": texts[i][1]} for i in range(n)]


def classifier(impl: str, dtype=torch.float32, dropout: float = 0.0, seed: int = 0):
    """A tiny random ``BertForSequenceClassification`` (2 layers, 2 heads of 16) with ``impl`` attention."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=MAX_LEN, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, pad_token_id=1, num_labels=2)
    model = BertForSequenceClassification(cfg).to(dtype)
    model.set_attn_implementation(impl)
    return model


def accelerate_losses(impl: str, dtype=torch.float32, steps: int = 6, lr: float = 3e-3, seed: int = 0,
                      split_batches: bool = True) -> List[float]:
    """The user's plain loop: ``Accelerator().prepare(model, optimizer, loader)``, ``accelerator.backward``.
    Sequential batches of :data:`GLOBAL_BATCH`; with several processes each gets its share of every batch
    (``split_batches``), so the global batch and the losses are those of one process."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from transformers import DataCollatorWithPadding
    import fastattn  # noqa: F401  (registers attn_implementation="fastattn")

    acc = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(split_batches=split_batches))
    tok = tokenizer(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fastattn-flows-tok-{os.getpid()}"))
    data = encoded(tok, GLOBAL_BATCH * steps, seed=seed + 1)
    loader = torch.utils.data.DataLoader(data, batch_size=GLOBAL_BATCH, shuffle=False,
                                         collate_fn=DataCollatorWithPadding(tok))
    model = classifier(impl, dtype, seed=seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model, opt, loader = acc.prepare(model, opt, loader)
    losses = []
    for batch in loader:
        opt.zero_grad()
        loss = model(**batch).loss
        acc.backward(loss)
        opt.step()
        losses.append(float(acc.gather(loss.detach().reshape(1)).double().mean()))
    return losses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", default="fastattn")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    losses = accelerate_losses(a.impl, steps=a.steps)
    from accelerate import PartialState
    state = PartialState()
    if state.is_main_process:
        with open(a.out, "w") as f:
            json.dump({"losses": losses, "num_processes": state.num_processes,
                       "distributed_type": str(state.distributed_type)}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

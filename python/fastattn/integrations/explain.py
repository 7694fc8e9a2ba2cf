"""Which fastattn backend runs inside a Hugging Face model, and why the others were passed over.

    report = fastattn.integrations.explain.explain_model(model, **tokenizer(texts, return_tensors="pt",
                                                                           padding=True))
    print(report)            # a table: op, problem, backend, why the backends before it were passed over
    report.records           # the same as fastattn.log.Dispatch records

The model runs once, under ``torch.inference_mode()``, with the dispatch decisions captured through
:func:`fastattn.log.capture` (whether or not ``FASTATTN_LOG`` is set). The model must already use fastattn
(``attn_implementation="fastattn"`` or :func:`fastattn.optimize`); if no fastattn op ran, the report says
what the model's attention implementation is instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from .. import log


@dataclass
class ModelExplanation:
    records: List[log.Dispatch] = field(default_factory=list)
    attn_implementation: Optional[str] = None
    output: object = None  # what the model returned

    def backends(self) -> dict:
        """``{op: sorted backend names that ran it}``."""
        out: dict = {}
        for r in self.records:
            out.setdefault(r.op, set()).add(r.chosen)
        return {op: sorted(v) for op, v in out.items()}

    def __str__(self) -> str:
        text = log.format_table(self.records)
        if not any(r.op == "attention" for r in self.records) and self.attn_implementation != "fastattn":
            text += (f"\nnote: the model's attention implementation is {self.attn_implementation!r}, so fastattn's "
                     "attention did not run: load it with attn_implementation=\"fastattn\" or call "
                     "fastattn.optimize(model)")
        return text


def explain_model(model, *args, **inputs) -> ModelExplanation:
    """Run ``model(*args, **inputs)`` once and return which backend ran each distinct fastattn call and why
    the backends before it were passed over (see the module docstring)."""
    import torch

    cfg = getattr(model, "config", None)
    impl = getattr(cfg, "_attn_implementation", None) if cfg is not None else None
    with log.capture() as records, torch.inference_mode():
        out = model(*args, **inputs)
    return ModelExplanation(list(records), impl, out)


__all__ = ["explain_model", "ModelExplanation"]

"""Backend selection that explains itself.

``select(op, inputs, backend)``: a forced backend (argument, else ``FASTATTN_BACKEND``) runs or raises
one ``ValueError`` with every reason it cannot; auto (``None``/``"auto"``) walks :data:`PRIORITY` and
takes the first backend with no reason against the inputs; if none fits, the error lists every
backend's reasons. :func:`explain` returns the same table without running anything.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch

from .backends import ATTENTION_BACKENDS, FFN_BACKENDS, PRIORITY

ENV_VAR = "FASTATTN_BACKEND"
_REGISTRY = {"attention": ATTENTION_BACKENDS, "gelu_ffn": FFN_BACKENDS}


def register_op(op: str, backends: Dict[str, object]) -> None:
    """Make ``op`` dispatchable: ``backends`` maps each name of :data:`PRIORITY` to a backend
    (``unavailable_reason``, ``not_supported_reasons``, ``supports_backward``)."""
    missing = [n for n in PRIORITY if n not in backends]
    if missing:
        raise ValueError(f"register_op({op!r}): no backend for {missing}")
    _REGISTRY[op] = backends


def requested_backend(backend: Optional[str]) -> Optional[str]:
    """The backend name asked for by the argument or the environment (``None`` = auto)."""
    if backend is not None:
        if not isinstance(backend, str) or (backend not in PRIORITY and backend != "auto"):
            raise ValueError(f"backend={backend!r} is not a fastattn backend; choose one of "
                             f"{list(PRIORITY)} or None/'auto'")
        return None if backend == "auto" else backend
    env = os.environ.get(ENV_VAR)
    if env is None or env == "" or env == "auto":
        return None
    if env not in PRIORITY:
        raise ValueError(f"{ENV_VAR}={env!r} is not a fastattn backend; set it to one of {list(PRIORITY)} "
                         "or 'auto', or unset it")
    return env


@torch.compiler.assume_constant_result
def _unavailable(op: str, name: str) -> Optional[str]:
    """The backend's machine-level probe. Under ``torch.compile`` it runs eagerly at trace time and is
    a constant of the graph (a probe imports modules and queries the driver: nothing to trace)."""
    return _REGISTRY[op][name].unavailable_reason()


def reasons_against(op: str, name: str, inp, *, auto: bool) -> List[str]:
    b = _REGISTRY[op][name]
    why = _unavailable(op, name)
    if why is not None:
        return [f"unavailable: {why}"]
    reasons = list(b.not_supported_reasons(inp))
    if auto and inp.requires_grad and not b.supports_backward:
        reasons.append("inputs require grad and this backend has no fused backward yet (forcing it works: "
                       "its backward recomputes in PyTorch math)")
    dropout = getattr(inp, "dropout_p", 0.0)
    if dropout > 0 and not b.supports_dropout and not any("dropout" in r for r in reasons):
        reasons.append(f"dropout_p={dropout} > 0 is not implemented in this kernel")
    return reasons


def explain(op: str, inp, backend: Optional[str] = None) -> Dict[str, List[str]]:
    """``{backend name: reasons it cannot run these inputs}`` in priority order (``[]`` = it can)."""
    forced = requested_backend(backend)
    names = [forced] if forced else list(PRIORITY)
    return {n: reasons_against(op, n, inp, auto=forced is None) for n in names}


def _fmt(table: Dict[str, List[str]]) -> str:
    return "\n".join(f"  {n}: " + "; ".join(r) for n, r in table.items())


def select(op: str, inp, backend: Optional[str] = None):
    forced = requested_backend(backend)
    if forced is not None:
        reasons = reasons_against(op, forced, inp, auto=False)
        if reasons:
            src = "backend=" if backend is not None else f"{ENV_VAR}="
            raise ValueError(f"{src}{forced!r} cannot run {op} on {inp.describe()}:\n" + _fmt({forced: reasons}))
        return _REGISTRY[op][forced]
    table = {}
    for name in PRIORITY:
        reasons = reasons_against(op, name, inp, auto=True)
        if not reasons:
            return _REGISTRY[op][name]
        table[name] = reasons
    raise ValueError(f"no fastattn backend can run {op} on {inp.describe()}:\n" + _fmt(table))


def available_backends() -> Dict[str, Optional[str]]:
    """``{name: None if usable on this machine else why not}`` (attention and FFN reasons merged)."""
    res = {}
    for name in PRIORITY:
        why = [w for w in (ATTENTION_BACKENDS[name].unavailable_reason(), FFN_BACKENDS[name].unavailable_reason())
               if w is not None]
        if len(why) == 2 and why[0] != why[1]:
            res[name] = f"attention: {why[0]}; gelu_ffn: {why[1]}"
        elif len(why) == 2:
            res[name] = why[0]
        elif why:
            op = "attention" if ATTENTION_BACKENDS[name].unavailable_reason() else "gelu_ffn"
            res[name] = f"{op} unavailable: {why[0]} (the other op is usable)"
        else:
            res[name] = None
    return res

"""Backend selection that explains itself: a registry of ops and their backends. Imports no backend.

Each op package (``fastattn.attention``, ``fastattn.ffn``) registers its backends at import with
:func:`register`, in priority order. :func:`select` with a forced backend (argument, else
``FASTATTN_BACKEND``) returns it or raises one :class:`~fastattn.errors.BackendError` listing every
reason it cannot run the inputs; auto (``None``/``"auto"``) walks the priority order and takes the
first backend with no reason against the inputs; if none fits, the error lists every backend's
reasons. :func:`explain` returns the same table without running anything.

A backend declares what it runs as data (:class:`Backend`'s upper-case attributes); the common reasons
(device, capability, dtype, backward, dropout) are worded once here, and a backend adds only its own
through :meth:`Backend.special_reasons`. A *problem* (the normalised inputs of one call) has
``device``, ``dtype``, ``requires_grad``, ``dropout_p`` and ``describe()``.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import torch

from . import log
from ._post_import import when_imported
from .errors import BackendError
from .runtime import device_info, dtype_name, getenv, interpreting

ENV_VAR = "FASTATTN_BACKEND"
#: every backend name, in auto-dispatch order: hand-written CUDA, then Triton, then PyTorch
PRIORITY = ("cuda", "triton", "torch")


class Backend:
    """One way to run one op. Capabilities are class attributes; subclasses set them and implement
    :meth:`probe` (machine level) and :meth:`special_reasons` (input level, beyond the declared data)."""

    name: str = "?"
    op: str = "?"
    #: dtypes it computes (``None`` = any)
    DTYPES: Optional[Tuple[torch.dtype, ...]] = None
    #: "cuda": CUDA tensors; "interpret": CPU tensors under TRITON_INTERPRET=1; "any": every device
    DEVICES: Tuple[str, ...] = ("cuda",)
    MIN_CAPABILITY: Optional[Tuple[int, int]] = None
    SUPPORTS_BACKWARD = False
    SUPPORTS_DROPOUT = False
    #: what a user reads next to a dtype reason (where the other dtypes run)
    DTYPE_HINT = ""
    #: what a user reads next to a dropout reason (why, and what runs it)
    DROPOUT_HINT = ""

    def __init__(self) -> None:
        self._unavailable: Optional[str] = None
        self._checked = False
        self._probed_with: Optional[str] = None

    # ---------------------------------------------------------------------- machine level
    def probe(self) -> Optional[str]:
        """``None`` if usable on this machine at all, else why not. Called once (see :meth:`reset`)."""
        return None

    def unavailable_reason(self) -> Optional[str]:
        """Cached while ``TRITON_INTERPRET`` keeps the value it was probed with (a script that sets it
        after a first call is probed again, not told to set what it has set)."""
        interp = getenv("TRITON_INTERPRET")
        if not self._checked or interp != self._probed_with:
            try:
                self._unavailable = self.probe()
            except Exception as e:  # noqa: BLE001 - a broken install must not break fastattn
                self._unavailable = f"probe failed: {type(e).__name__}: {e}"
            self._checked = True
            self._probed_with = interp
        return self._unavailable

    def reset(self) -> None:
        """Forget the cached availability (tests flip TRITON_INTERPRET)."""
        self._checked = False
        self._unavailable = None

    # ------------------------------------------------------------------------ input level
    def device_reasons(self, device: torch.device) -> List[str]:
        if "any" in self.DEVICES:
            return []
        interp = interpreting()
        if device.type == "cuda":
            if "cuda" not in self.DEVICES:
                return [f"tensors are on {device}; the {self.name} backend runs CPU tensors only"]
            if interp:
                return ["TRITON_INTERPRET=1 is set: the interpreter runs CPU tensors, not CUDA ones"]
            if self.MIN_CAPABILITY is not None:
                cap = device_info(device).capability
                if cap < self.MIN_CAPABILITY:
                    need = ".".join(map(str, self.MIN_CAPABILITY))
                    return [f"{device} has compute capability {cap[0]}.{cap[1]}; the {self.name} kernel needs >= {need}"]
            return []
        if device.type == "cpu" and "interpret" in self.DEVICES and interp:
            return []
        extra = " (or CPU tensors with TRITON_INTERPRET=1)" if "interpret" in self.DEVICES else ""
        return [f"tensors are on {device}; the {self.name} backend needs CUDA tensors{extra}"]

    def not_supported_reasons(self, problem) -> List[str]:
        """Every reason this backend cannot run ``problem`` (``[]``: it can). Metadata only: no device
        sync, no data access."""
        reasons = self.device_reasons(problem.device)
        if self.DTYPES is not None and problem.dtype not in self.DTYPES:
            reasons.append(f"dtype {dtype_name(problem.dtype)}: the {self.name} backend runs "
                           f"{', '.join(dtype_name(d) for d in self.DTYPES)}{self.DTYPE_HINT}")
        if problem.dropout_p > 0 and not self.SUPPORTS_DROPOUT:
            reasons.append(f"dropout_p={problem.dropout_p} > 0 is not implemented in the {self.name} kernel"
                           f"{self.DROPOUT_HINT}")
        reasons += self.special_reasons(problem)
        return reasons

    def special_reasons(self, problem) -> List[str]:
        return []

    def auto_reasons(self, problem) -> List[str]:
        """Reasons that count in auto mode only (forcing the backend still works)."""
        if problem.requires_grad and not self.SUPPORTS_BACKWARD:
            return ["inputs require grad and this backend has no fused backward (forcing it works: its backward "
                    "recomputes in PyTorch math)"]
        return []

    def capabilities(self) -> Dict[str, object]:
        """The declared data, for ``fastattn info`` and docs."""
        return {"dtypes": None if self.DTYPES is None else [dtype_name(d) for d in self.DTYPES],
                "devices": list(self.DEVICES), "min_capability": self.MIN_CAPABILITY,
                "backward": self.SUPPORTS_BACKWARD, "dropout": self.SUPPORTS_DROPOUT}

    def __repr__(self) -> str:
        return f"<fastattn {self.op} backend {self.name!r}>"


_REGISTRY: Dict[str, Dict[str, Backend]] = {}


def register(backend: Backend) -> Backend:
    """Register ``backend`` for ``backend.op`` (its name must be one of :data:`PRIORITY`)."""
    if backend.name not in PRIORITY:
        raise ValueError(f"backend name {backend.name!r} is not one of {PRIORITY}")
    table = _REGISTRY.setdefault(backend.op, {})
    table[backend.name] = backend
    ordered = [(n, table.pop(n)) for n in PRIORITY if n in table]  # in place: callers may hold the dict
    table.update(ordered)
    return backend


def ops() -> List[str]:
    return list(_REGISTRY)


def backends(op: str) -> Dict[str, Backend]:
    try:
        return _REGISTRY[op]
    except KeyError:
        raise ValueError(f"unknown fastattn op {op!r}; registered: {ops()}") from None


_RESET_HOOKS = []


def on_reset(fn) -> None:
    """Call ``fn()`` on :func:`reset` (the plan caches register here)."""
    _RESET_HOOKS.append(fn)


def reset() -> None:
    """Forget every cached availability probe and dispatch decision (tests flip TRITON_INTERPRET or
    replace backends)."""
    for table in _REGISTRY.values():
        for b in table.values():
            b.reset()
    for fn in _RESET_HOOKS:
        fn()


log.on_capture(reset)


def requested_backend(backend: Optional[str]) -> Optional[str]:
    """The backend name asked for by the argument or the environment (``None`` = auto)."""
    if backend is not None:
        if not isinstance(backend, str) or (backend not in PRIORITY and backend != "auto"):
            raise BackendError(f"backend={backend!r} is not a fastattn backend; choose one of "
                               f"{list(PRIORITY)} or None/'auto'")
        return None if backend == "auto" else backend
    env = getenv(ENV_VAR)
    if not env or env == "auto":
        return None
    if env not in PRIORITY:
        raise BackendError(f"{ENV_VAR}={env!r} is not a fastattn backend; set it to one of {list(PRIORITY)} "
                           "or 'auto', or unset it")
    return env


def _probe(op: str, name: str) -> Optional[str]:
    return _REGISTRY[op][name].unavailable_reason()


#: the backend's machine-level probe. Under ``torch.compile`` it must run eagerly at trace time and be a
#: constant of the graph (a probe imports modules and queries the driver: nothing to trace), so once
#: ``torch._dynamo`` is imported (``torch.compile`` imports it before tracing) it is wrapped in
#: ``torch.compiler.assume_constant_result``. Wrapping it at import would import dynamo (and through it
#: triton and sympy: about a second) for every user of fastattn.
_unavailable = _probe


def _make_probe_constant(_module=None) -> None:
    global _unavailable
    _unavailable = torch.compiler.assume_constant_result(_probe)


when_imported("torch._dynamo", _make_probe_constant)


#: set by :mod:`fastattn.selfcheck` once a kernel variant has failed its on-device self-check:
#: ``(op, name, problem) -> reason or None`` (``None`` while nothing failed: no cost)
variant_veto = None


def reasons_against(op: str, name: str, problem, *, auto: bool) -> List[str]:
    b = backends(op)[name]
    why = _unavailable(op, name)
    if why is not None:
        return [f"unavailable: {why}"]
    reasons = b.not_supported_reasons(problem)
    if auto:
        reasons += b.auto_reasons(problem)
    if not reasons and variant_veto is not None:
        why = variant_veto(op, name, problem)
        if why is not None:
            reasons.append(why)
    return reasons


def explain(op: str, problem, backend: Optional[str] = None) -> Dict[str, List[str]]:
    """``{backend name: reasons it cannot run these inputs}`` in priority order (``[]`` = it can)."""
    forced = requested_backend(backend)
    names = [forced] if forced else list(backends(op))
    return {n: reasons_against(op, n, problem, auto=forced is None) for n in names}


def _fmt(table: Dict[str, List[str]]) -> str:
    return "\n".join(f"  {n}: " + "; ".join(r) for n, r in table.items())


def select(op: str, problem, backend: Optional[str] = None) -> Backend:
    forced = requested_backend(backend)
    if forced is not None:
        reasons = reasons_against(op, forced, problem, auto=False)
        if reasons:
            src = "backend=" if backend is not None else f"{ENV_VAR}="
            raise BackendError(f"{src}{forced!r} cannot run {op} on {problem.describe()}:\n" + _fmt({forced: reasons}))
        _log(op, problem, forced, {forced: []})
        return backends(op)[forced]
    table = {}
    for name in backends(op):
        reasons = reasons_against(op, name, problem, auto=True)
        table[name] = reasons
        if not reasons:
            _log(op, problem, name, table)
            return backends(op)[name]
    raise BackendError(f"no fastattn backend can run {op} on {problem.describe()}:\n" + _fmt(table))


def _log(op: str, problem, chosen: str, table: Dict[str, List[str]]) -> None:
    """``FASTATTN_LOG``: which backend ran and why the earlier ones did not (the log drops repeated
    signatures itself; one check when it is off)."""
    if torch.compiler.is_compiling():
        return
    if log.enabled():
        log.dispatched(op, problem.describe(), chosen, table)


def available_backends() -> Dict[str, Optional[str]]:
    """``{name: None if usable on this machine for every op, else why not}``; where a backend is usable
    for some ops only, the reason names the others."""
    res = {}
    for name in PRIORITY:
        why = {op: t[name].unavailable_reason() for op, t in _REGISTRY.items() if name in t}
        bad = {op: w for op, w in why.items() if w is not None}
        if not bad:
            res[name] = None
        elif len(set(bad.values())) == 1 and len(bad) == len(why):
            res[name] = next(iter(bad.values()))
        else:
            ok = [op for op in why if op not in bad]
            res[name] = "; ".join(f"{op}: {w}" for op, w in bad.items()) + (
                f" (usable for {', '.join(ok)})" if ok else "")
    return res

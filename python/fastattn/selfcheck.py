"""On-device self-check: never serve an unverified kernel variant.

The first time a kernel *variant* is about to run on a device in a process (the plan cache's miss path,
:func:`fastattn.attention.plan.plan_for`, calls :func:`vet`), the variant runs once on a small random
problem of the same variant and is compared with the float64 reference under the numerics rule
(:func:`fastattn.testing.compare`: ``max|ours - ref| <= 2 max|naive - ref| + floor``; rows with no
visible key must be exactly 0).

* **Pass**: remembered for the process, and in a small JSON cache file keyed by the environment (device
  name and capability, driver, CUDA, torch, Triton and fastattn versions, a digest of the kernel sources
  and the built extension), so that later processes skip the check.
* **Fail**: the variant becomes unavailable with the reason ``"failed its on-device self-check (max
  error ...)"`` (:mod:`fastattn.dispatch` asks :func:`_veto`), one :class:`SelfCheckWarning` says what
  happened and how to report it, and the plan is dispatched again: auto-dispatch takes the next backend,
  a forced backend (``backend="cuda"``) raises a ``BackendError`` with that reason.
* **Deferred**: under ``torch.compile`` tracing, CUDA graph capture or an active
  ``TorchDispatchMode`` (``FakeTensorMode``, ``FlopCounterMode``, ...) nothing runs: the variant is
  served unchecked there and checked at the next eager call (the plan is not cached meanwhile).

A *variant* is what selects a different compiled kernel: ``op:backend:direction:dtype:head dims:GQA
group:mask form[:kernel path][:dropout]``, e.g. ``attention:triton:fwd:float16:d64:g1:causal_top_left:
prefill`` (the kernel path comes from the backend's :meth:`kernel_variant`; for Triton attention it is
``prefill`` or the decode kernel at the query length). ``attention_varlen`` variants are
``attention_varlen:backend:fwd|bwd:dtype:head dims:GQA group:causal_bottom_right|none[:scale<=0][:dropout]``,
checked on a few packed sequences (:data:`VARLEN_CHECK_LENGTHS`) against
:func:`fastattn.reference.attention_varlen` (gradients too for ``bwd``), from the same plan-cache miss path. The torch backend is
the reference's own math: never checked. :func:`sweep` (``fastattn check``) enumerates padded
attention variants only.

Control: ``FASTATTN_SELF_CHECK=0`` turns it off (benchmark runs that pre-warm), ``1`` (default) as above,
``always`` checks each variant once per process whatever the cache file says. The cache file is
``$FASTATTN_CACHE_DIR/selfcheck.json``, else ``$XDG_CACHE_HOME/fastattn/selfcheck.json``, else
``~/.cache/fastattn/selfcheck.json``. ``fastattn check`` runs :func:`sweep` (every variant of a grid
per usable kernel backend, cache ignored) and writes the same file.

Test-only fault injection: ``FASTATTN_FAULT_INJECT=<backend>:<op>`` (e.g. ``triton:attention``) makes
that backend's launches add 1 to the first query row of their real kernel output. It is honoured only
inside a pytest test (``PYTEST_CURRENT_TEST`` set by pytest), announces itself with a
:class:`FaultInjectionWarning`, and is ignored (with a warning) anywhere else.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import re
import tempfile
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ._post_import import when_imported

from . import dispatch
from .runtime import device_info, dtype_name, getenv, interpreting

ENV_MODE = "FASTATTN_SELF_CHECK"
ENV_CACHE_DIR = "FASTATTN_CACHE_DIR"
ENV_FAULT = "FASTATTN_FAULT_INJECT"
CACHE_FILE = "selfcheck.json"
FORMAT = 1
#: backends that are the reference's own math (PyTorch): never checked
NEVER_CHECKED = frozenset({"torch"})
#: the error budget of the numerics rule (ops: 2x the naive same-dtype error)
FACTOR = 2.0
REPORT = ("Please report it to the fastattn maintainers (issue tracker) with the output of `fastattn info` "
          "and `fastattn check` on this machine.")

__all__ = ["SelfCheckWarning", "FaultInjectionWarning", "Result", "mode", "vet", "variant_keys", "run_check",
           "cache_path", "environment", "sweep", "status", "reset", "forget_failures"]


class SelfCheckWarning(RuntimeWarning):
    """A kernel variant failed its on-device self-check and is not used in this process."""


class FaultInjectionWarning(RuntimeWarning):
    """``FASTATTN_FAULT_INJECT`` is armed (results of a backend are deliberately wrong) or was ignored."""


@dataclass(frozen=True)
class Result:
    """One self-check of one variant. ``max_err``/``bound`` are the worst output's (``nan`` max error:
    NaN in the output); ``problem`` names the small problem(s) run; ``error`` is set when the launch
    raised or an exactness condition failed."""

    passed: bool
    max_err: float
    bound: float
    seconds: float
    problem: str
    error: str = ""

    def reason(self) -> str:
        """The dispatch reason of a failed variant."""
        why = self.error or f"max error {self.max_err:.3g} > bound {self.bound:.3g}"
        if self.error and not math.isnan(self.max_err) and self.bound:
            why += f"; max error {self.max_err:.3g}, bound {self.bound:.3g}"
        return f"failed its on-device self-check ({why}; small problem {self.problem})"


# ------------------------------------------------------------------------------------------------ mode
_MODES = {"0": "off", "off": "off", "false": "off", "no": "off",
          "1": "on", "on": "on", "true": "on", "yes": "on", "": "on",
          "always": "always"}
_WARNED_MODE: set = set()


def mode() -> str:
    """``"off"``, ``"on"`` (default) or ``"always"`` from ``FASTATTN_SELF_CHECK`` (read at every plan
    miss, so tests and benchmark scripts may change it at run time)."""
    raw = getenv(ENV_MODE)
    if raw is None:
        return "on"
    m = _MODES.get(raw.strip().lower())
    if m is None:
        if raw not in _WARNED_MODE:
            _WARNED_MODE.add(raw)
            warnings.warn(f"{ENV_MODE}={raw!r} is not one of 0, 1, always; using 1 (check each kernel variant "
                          "once, remember passes in the cache file)", SelfCheckWarning, stacklevel=3)
        return "on"
    return m


# ------------------------------------------------------------------------------------ process state
_LOCK = threading.RLock()
#: (device, variant key) that passed in this process (checked here or found in the cache file)
_PASSED: set = set()
#: (device, variant key) -> dispatch reason, for variants that failed in this process
_FAILED: Dict[Tuple[str, str], str] = {}
#: (device, variant key) -> Result of the checks run in this process (for `status()` and the benchmark)
_RESULTS: Dict[Tuple[str, str], Result] = {}


def _dev(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return device.type


def status() -> Dict[str, Dict[str, object]]:
    """What this process knows: ``{"device|variant": {"state": "passed" | "failed", ...}}``."""
    with _LOCK:
        out = {}
        for dev, key in sorted(_PASSED):
            r = _RESULTS.get((dev, key))
            out[f"{dev}|{key}"] = {"state": "passed", "source": "checked" if r else "cache file"}
        for (dev, key), why in sorted(_FAILED.items()):
            out[f"{dev}|{key}"] = {"state": "failed", "reason": why}
        return out


def reset() -> None:
    """Forget every verdict of this process and the loaded cache file (``dispatch.reset()`` calls it)."""
    with _LOCK:
        _PASSED.clear()
        _FAILED.clear()
        _RESULTS.clear()
        _FILE.clear()
        _FILE_PATH[0] = None
        _ENV.clear()
    dispatch.variant_veto = None


def forget_failures() -> None:
    """Forget the failed verdicts only (tests that break a kernel on purpose clean up with it)."""
    with _LOCK:
        _FAILED.clear()
        for k in [k for k, r in _RESULTS.items() if not r.passed]:
            del _RESULTS[k]
    dispatch.variant_veto = None


dispatch.on_reset(reset)


# ------------------------------------------------------------------------------------ variant keys
def _mask_form(m) -> str:
    parts = []
    if m.causal is not None:
        parts.append(f"causal_{m.causal}")
    if m.key_lengths is not None:
        parts.append(f"key_lengths_{dtype_name(m.key_lengths.dtype)}")
    if m.key_mask is not None:
        parts.append("key_mask")
    if m.dense is not None:
        parts.append("dense_" + dtype_name(m.dense.dtype))
    return "+".join(parts) or "none"


def _shape_fields(inp) -> List[str]:
    """dtype, head dims, GQA group: the variant fields both attention ops share."""
    E, Ev = int(inp.E), int(inp.Ev)
    return [dtype_name(inp.dtype), f"d{E}" if E == Ev else f"d{E}v{Ev}", f"g{int(inp.Hq) // max(int(inp.Hkv), 1)}"]


def _attention_key(b, inp, direction: str) -> str:
    fields = ["attention", b.name, direction, *_shape_fields(inp), _mask_form(inp.mask), *b.kernel_variant(inp)]
    if inp.dropout_p > 0:
        fields.append("dropout")
    return ":".join(fields)


def _varlen_key(b, inp, direction: str) -> str:
    fields = ["attention_varlen", b.name, direction, *_shape_fields(inp),
              "causal_bottom_right" if inp.causal else "none"]
    if inp.scale <= 0:
        fields.append("scale<=0")  # the kernel's FAST_SCALE
    if inp.dropout_p > 0:
        fields.append("dropout")
    return ":".join(fields)


def _directions(b, problem) -> List[str]:
    """``fwd``, and ``bwd`` when this call's backward runs the backend's fused backward."""
    return ["fwd", "bwd"] if (b.SUPPORTS_BACKWARD and problem.requires_grad) else ["fwd"]


def variant_keys(op: str, b, problem) -> List[str]:
    """The variant keys ``problem`` runs on backend ``b`` (``[]``: nothing to check)."""
    if b.name in NEVER_CHECKED or op not in _CHECKERS:
        return []
    return [_CHECKERS[op][0](b, problem, d) for d in _directions(b, problem)]


def _failed_lookup(dev: str, key: str) -> Optional[str]:
    return _FAILED.get((dev, key))


#: a graph constant under ``torch.compile`` once ``torch._dynamo`` is imported (wrapping it at import
#: would import dynamo, triton and sympy for every user: see fastattn.dispatch)
_failed_reason = _failed_lookup


def _make_constant(_module=None) -> None:
    global _failed_reason
    _failed_reason = torch.compiler.assume_constant_result(_failed_lookup)


when_imported("torch._dynamo", _make_constant)


def _veto(op: str, name: str, problem) -> Optional[str]:
    """:data:`fastattn.dispatch.variant_veto` while some variant has failed: the reason ``name`` must
    not run ``problem``, or ``None``."""
    if name in NEVER_CHECKED or op not in _CHECKERS:
        return None
    b = dispatch.backends(op)[name]
    dev = _dev(problem.device)
    for key in variant_keys(op, b, problem):
        why = _failed_reason(dev, key)
        if why is not None:
            return why
    return None


# --------------------------------------------------------------------------------------- the hook
def deferred_reason(problem) -> Optional[str]:
    """Why nothing may run now (the variant stays unchecked until the next eager call), or ``None``."""
    if torch.compiler.is_compiling():
        return "torch.compile tracing"
    if torch._C._len_torch_dispatch_stack() > 0:
        return "a TorchDispatchMode is active"
    dev = problem.device
    if dev.type == "cuda":
        from .runtime import device_guard
        with device_guard(dev):
            if torch.cuda.is_current_stream_capturing():
                return "CUDA graph capture"
    return None


def vet(op: str, problem, chosen, requested: Optional[str] = None):
    """The plan-cache miss hook: make sure every variant ``chosen`` runs for ``problem`` passed its
    self-check on this device (running the check if needed). Returns ``(backend, settled)``: the
    backend to plan with (a failed variant re-dispatches: the next backend in auto mode; a forced
    backend raises :class:`~fastattn.errors.BackendError` with the reason) and whether the decision may
    be cached (``False`` while the check is deferred)."""
    _sync_fault_injection()
    m = mode()
    if m == "off":
        return chosen, True
    while True:
        keys = variant_keys(op, chosen, problem)
        if not keys:
            return chosen, True
        dev = _dev(problem.device)
        todo = [(d, k) for d, k in zip(_directions(chosen, problem), keys) if (dev, k) not in _PASSED]
        if not todo:
            return chosen, True
        if deferred_reason(problem) is not None:
            return chosen, False
        ok = True
        for direction, key in todo:
            if not _ensure(op, chosen, problem, direction, key, dev, m):
                ok = False
                break
        if ok:
            return chosen, True
        chosen = dispatch.select(op, problem, requested)  # vetoed now: next backend, or raises if forced


def _ensure(op, b, problem, direction, key, dev, m) -> bool:
    with _LOCK:
        if (dev, key) in _FAILED:
            return False
        if (dev, key) in _PASSED:
            return True
    if m != "always" and _cached_pass(problem.device, key):
        with _LOCK:
            _PASSED.add((dev, key))
        return True
    res = run_check(op, b, problem, direction)
    _record(problem.device, dev, key, res)
    if not res.passed:
        _warn_failed(b, problem.device, key, res)
    return res.passed


def _record(device, dev: str, key: str, res: Result) -> None:
    with _LOCK:
        _RESULTS[(dev, key)] = res
        if res.passed:
            _PASSED.add((dev, key))
            _FAILED.pop((dev, key), None)
        else:
            _FAILED[(dev, key)] = res.reason()
            _PASSED.discard((dev, key))
            dispatch.variant_veto = _veto
    if res.passed:
        _write_pass(device, key, res)


def _warn_failed(b, device, key: str, res: Result) -> None:
    env = environment(device)
    where = f"{env['device']} (driver {env['driver']}, CUDA {env['cuda']}, Triton {env['triton']}, " \
            f"fastattn {env['fastattn']})"
    warnings.warn(
        f"fastattn: the {b.name} {b.op} kernel variant {key} {res.reason()} on {where}. fastattn will not use "
        f"this variant in this process: automatic dispatch takes the next backend that supports the inputs, "
        f"and backend={b.name!r} raises. {REPORT}", SelfCheckWarning, stacklevel=5)


# --------------------------------------------------------------------------------- the check itself
def run_check(op: str, b, problem, direction: str = "fwd") -> Result:
    """Run ``b``'s kernel on small random problems of ``problem``'s variant and compare with the
    float64 reference under the numerics rule. Never consults or writes any cache; never touches the
    caller's RNG, autocast or grad mode."""
    return _CHECKERS[op][1](b, problem, direction)


def _generator(seed_text: str) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(zlib.crc32(seed_text.encode()))


@contextlib.contextmanager
def _isolated(device: torch.device):
    """No autocast, no inference tensors, no grad by default, the caller's RNG untouched."""
    with contextlib.ExitStack() as st:
        st.enter_context(torch.inference_mode(False))
        st.enter_context(torch.no_grad())
        st.enter_context(torch.autocast(device_type=device.type, enabled=False))
        yield


def _small_attention(inp, Lq: int, Lk: int, g: torch.Generator):
    """A small problem of ``inp``'s variant: same dtype, head dims, GQA group, mask form (causal
    alignment, key-length dtype, dense dtype), scale sign and dropout; ``B = 2``, up to 2 KV heads, the
    given lengths. Dense masks are ``(B, 1, Lq, Lk)`` views broadcast over heads with one row that has
    no visible key."""
    from .inputs import AttentionInputs
    from .masks import NormalizedMask
    dev, dtype = inp.device, inp.dtype
    B, E, Ev = 2, int(inp.E), int(inp.Ev)
    group = int(inp.Hq) // int(inp.Hkv)
    Hkv = min(int(inp.Hkv), 2)
    Hq = Hkv * group

    def rnd(*shape, dt=dtype):
        return torch.randn(*shape, generator=g, device="cpu").to(device=dev, dtype=dt)

    q, k, v = rnd(B, Hq, Lq, E), rnd(B, Hkv, Lk, E), rnd(B, Hkv, Lk, Ev)
    m = inp.mask
    kl = km = dense = None
    if m.key_lengths is not None:
        kl = torch.tensor([Lk - 5, min(17, Lk)], dtype=m.key_lengths.dtype).to(dev)
    if m.key_mask is not None:
        keep = torch.rand(B, Lk, generator=g) < 0.7
        keep[1, :10] = False  # left padding
        km = keep.to(dev)
    if m.dense is not None:
        if m.dense.dtype == torch.bool:
            d = torch.rand(B, 1, Lq, Lk, generator=g) < 0.8
            d[0, 0, min(3, Lq - 1)] = False
        else:
            d = torch.randn(B, 1, Lq, Lk, generator=g)
            d = d.masked_fill(torch.rand(B, 1, Lq, Lk, generator=g) < 0.1, float("-inf"))
            d[0, 0, min(3, Lq - 1)] = float("-inf")
        dense = d.to(device=dev, dtype=m.dense.dtype).expand(B, Hq, Lq, Lk)
    mask = NormalizedMask(causal=m.causal, key_lengths=kl, key_mask=km, dense=dense)
    scale = (1.0 if inp.scale > 0 else -1.0) / math.sqrt(E)
    p = 0.25 if inp.dropout_p > 0 else 0.0
    return AttentionInputs(q, k, v, mask, p, scale, (B, Hq, Lq, Ev))


def _worst(items) -> Tuple[float, float]:
    """``(max_err, bound)`` of the comparison with the largest error relative to its bound."""
    worst = None
    for c in items:
        r = math.inf if math.isnan(c.max_err) else (c.max_err / c.bound if c.bound > 0 else
                                                    (0.0 if c.max_err == 0 else math.inf))
        if worst is None or r > worst[0]:
            worst = (r, c)
    return (worst[1].max_err, worst[1].bound) if worst else (0.0, 0.0)


def _check_attention(b, inp, direction: str) -> Result:
    from .attention.custom_ops import empty_out
    from .reference import attention_math
    from .testing import compare
    key = _attention_key(b, inp, direction)
    t0 = time.perf_counter()
    comps, names, error = [], [], ""
    dev = inp.device
    with _isolated(dev):
        for Lq, Lk in b.self_check_lengths(inp):
            g = _generator(key + f"|{Lq}x{Lk}")
            small = _small_attention(inp, Lq, Lk, g)
            names.append(small.describe())
            rng = (int(torch.randint(0, 2 ** 62, (1,), generator=g)), int(torch.randint(0, 2 ** 62, (1,), generator=g)))
            keep = None
            if small.dropout_p > 0:
                from .dropout import dropout_keep_mask
                keep = dropout_keep_mask(rng[0], rng[1], small.B, small.Hq, small.Lq, small.Lk, small.dropout_p,
                                         device=dev)
            try:
                out = empty_out(small.query, small.value, False)
                lse = b.check_launch(small, out, rng)
                grads = None
                if direction == "bwd":
                    dout = torch.randn(out.shape, generator=g).to(device=dev, dtype=out.dtype)
                    grads = tuple(b.check_launch_bwd(small, out, lse, dout, rng=rng))
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
            except Exception as e:  # noqa: BLE001 - a kernel that raises on this device failed its check
                error = f"the kernel raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                break
            ref, ref_lse = attention_math(small, torch.float64, keep, return_lse=True)
            naive = attention_math(small, None, keep)
            comps.append(compare(out, ref, naive, small.dtype, FACTOR))
            empty = torch.isneginf(ref_lse)
            if bool(empty.any()) and not bool((out[empty] == 0).all()):
                error = "rows with no visible key are not exactly 0"
            if grads is not None:
                ref_g = _attention_grads(small, torch.float64, keep, dout)
                naive_g = _attention_grads(small, None, keep, dout)
                for ours, r, n in zip(grads, ref_g, naive_g):
                    comps.append(compare(ours, r, n, small.dtype, FACTOR))
    max_err, bound = _worst(comps)
    passed = not error and bool(comps) and all(c.ok for c in comps)
    return Result(passed, max_err, bound, time.perf_counter() - t0, ", ".join(names), error)


def _attention_grads(small, cd, keep, dout):
    """``(dq, dk, dv)`` of the reference math in ``cd`` (``None``: the input dtype)."""
    from .inputs import AttentionInputs
    from .reference import attention_math
    with torch.enable_grad():
        leaves = [t.detach().to(cd or t.dtype).requires_grad_(True) for t in (small.query, small.key, small.value)]
        inp = AttentionInputs(*leaves, small.mask, small.dropout_p, small.scale, small.out_shape)
        out = attention_math(inp, cd, keep)
        return torch.autograd.grad(out, leaves, dout.to(out.dtype))


#: (query length, key length) of the packed sequences a varlen check runs: a sequence over one 32-row
#: tile with partial tiles, an empty one, more queries than keys (causal: rows with no visible key), one
#: without keys
VARLEN_CHECK_LENGTHS = ((40, 72), (0, 5), (12, 5), (3, 0))


def _check_varlen(b, inp, direction: str) -> Result:
    """The packed-sequence forward of ``inp``'s variant (dtype, head dims, GQA group, causal, scale sign,
    dropout) on :data:`VARLEN_CHECK_LENGTHS` against :func:`fastattn.reference.attention_varlen` (with
    dropout: the keep mask of :func:`fastattn.dropout.dropout_keep_mask_varlen`); ``direction="bwd"``
    also the fused backward's dq, dk, dv against autograd through that reference."""
    from .attention.backends.varlen import packed_out
    from .dropout import dropout_keep_mask_varlen
    from .inputs import VarlenInputs
    from .reference import attention_varlen
    from .testing import compare
    key = _varlen_key(b, inp, direction)
    t0 = time.perf_counter()
    dev, dtype = inp.device, inp.dtype
    g = _generator(key)
    E, Ev, group = int(inp.E), int(inp.Ev), int(inp.Hq) // int(inp.Hkv)
    Hkv = min(int(inp.Hkv), 2)
    lq, lk = [a for a, _ in VARLEN_CHECK_LENGTHS], [c for _, c in VARLEN_CHECK_LENGTHS]

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=dev, dtype=dtype)

    def cu(lens):
        return torch.tensor([0] + [sum(lens[:i + 1]) for i in range(len(lens))], dtype=torch.int32, device=dev)

    scale = (1.0 if inp.scale > 0 else -1.0) / math.sqrt(E)
    p = 0.25 if inp.dropout_p > 0 else 0.0
    small = VarlenInputs(rnd(sum(lq), Hkv * group, E), rnd(sum(lk), Hkv, E), rnd(sum(lk), Hkv, Ev), cu(lq), cu(lk),
                         max(lq), max(lk), inp.causal, p, scale)
    rng = (int(torch.randint(0, 2 ** 62, (1,), generator=g)), int(torch.randint(0, 2 ** 62, (1,), generator=g)))
    keep = dropout_keep_mask_varlen(rng[0], rng[1], small.cu_seqlens_q, small.cu_seqlens_k, small.Hq, p,
                                    device=dev) if p > 0 else None
    empty = torch.tensor([c == 0 or (inp.causal and i < a - c) for a, c in VARLEN_CHECK_LENGTHS for i in range(a)],
                         device=dev)
    comps, error = [], ""
    with _isolated(dev):
        try:
            out = packed_out(small)
            lse = b.check_launch(small, out, rng)
            grads = None
            if direction == "bwd":
                dout = torch.randn(out.shape, generator=g).to(device=dev, dtype=dtype)
                grads = tuple(b.check_launch_bwd(small, out, lse, dout, rng=rng))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        except Exception as e:  # noqa: BLE001 - a kernel that raises on this device failed its check
            error = f"the kernel raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            cus = (small.cu_seqlens_q, small.cu_seqlens_k)
            with torch.enable_grad():
                outs = []
                for cd in (torch.float64, None):
                    leaves = [t.detach().to(cd or dtype).requires_grad_(grads is not None)
                              for t in (small.query, small.key, small.value)]
                    o = attention_varlen(*leaves, *cus, is_causal=inp.causal, scale=scale, compute_dtype=cd,
                                         dropout_p=p, dropout_mask=keep)
                    gr = torch.autograd.grad(o, leaves, dout.to(o.dtype)) if grads is not None else ()
                    outs.append((o.detach(), gr))
            (ref, ref_g), (naive, naive_g) = outs
            comps.append(compare(out, ref, naive, dtype, FACTOR))
            for ours, r, n in zip(grads or (), ref_g, naive_g):
                comps.append(compare(ours, r, n, dtype, FACTOR))
            if not bool((out[empty] == 0).all()):
                error = "rows with no visible key are not exactly 0"
            elif grads is not None and not bool((grads[0][empty] == 0).all()):
                error = "dq of rows with no visible key is not exactly 0"
    max_err, bound = _worst(comps)
    passed = not error and bool(comps) and all(c.ok for c in comps)
    return Result(passed, max_err, bound, time.perf_counter() - t0, small.describe(), error)


#: op -> (variant key function, check function)
_CHECKERS: Dict[str, Tuple[Callable, Callable]] = {"attention": (_attention_key, _check_attention),
                                                   "attention_varlen": (_varlen_key, _check_varlen)}


# --------------------------------------------------------------------------------------- environment
_ENV: Dict[str, dict] = {}


def _driver_version() -> str:
    try:
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module\s+([\d.]+)", f.read())
            if m:
                return m.group(1)
    except OSError:
        pass
    try:
        import ctypes
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
            return f"cuda-driver-api {v.value // 1000}.{v.value % 1000 // 10}"
    except Exception:  # noqa: BLE001
        pass
    return "unknown"


def _code_digest() -> str:
    """A digest of what a variant's result depends on besides the versions: the Triton kernel sources,
    the attention/FFN launchers and the built extensions, by name, size and modification time (an edited
    source tree or a rebuilt extension invalidates the cached passes; stat only, no file read)."""
    import fastattn
    h = hashlib.sha1()
    pkg = os.path.dirname(fastattn.__file__)
    roots = [os.path.join(pkg, "attention", "backends"), os.path.join(pkg, "ffn")]
    try:  # located, not imported
        import importlib.util
        spec = importlib.util.find_spec("fastattn.kernels")
        roots += list(spec.submodule_search_locations or []) if spec else []
    except Exception:  # noqa: BLE001
        pass
    for root in roots:
        for dirpath, dirnames, files in sorted(os.walk(root)):
            dirnames.sort()
            for f in sorted(files):
                if f.endswith(".py"):
                    st = os.stat(os.path.join(dirpath, f))
                    h.update(f"{os.path.relpath(os.path.join(dirpath, f), root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    for f in sorted(os.listdir(pkg)):
        if f.startswith("_C") and f.endswith((".so", ".pyd")):
            st = os.stat(os.path.join(pkg, f))
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def environment(device) -> dict:
    """The facts a cached verdict is valid for (on ``device``)."""
    device = device if isinstance(device, torch.device) else torch.device(device)
    dev = _dev(device)
    env = _ENV.get(dev)
    if env is not None:
        return env
    import fastattn
    try:
        import triton
        triton_v = triton.__version__
    except Exception:  # noqa: BLE001
        triton_v = "none"
    if device.type == "cuda":
        info = device_info(device)
        name = f"{info.name} sm_{info.capability[0]}{info.capability[1]}"
        driver, cuda = _driver_version(), str(torch.version.cuda)
    else:
        name = f"{device.type} (Triton interpreter)" if interpreting() else device.type
        driver, cuda = "-", "-"
    env = {"device": name, "driver": driver, "cuda": cuda, "torch": torch.__version__, "triton": triton_v,
           "fastattn": fastattn.__version__, "code": _code_digest()}
    _ENV[dev] = env
    return env


def _env_key(env: dict) -> str:
    return " | ".join(f"{k}={env[k]}" for k in ("device", "driver", "cuda", "torch", "triton", "fastattn", "code"))


# ---------------------------------------------------------------------------------------- cache file
_FILE: Dict[str, dict] = {}  # env key -> {"env": ..., "passed": {...}} as loaded (lazily) from _FILE_PATH[0]
_FILE_PATH: List[Optional[str]] = [None]


def cache_path() -> str:
    """``$FASTATTN_CACHE_DIR/selfcheck.json``, else ``$XDG_CACHE_HOME/fastattn/...``, else
    ``~/.cache/fastattn/...``."""
    d = getenv(ENV_CACHE_DIR)
    if not d:
        base = getenv("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "fastattn")
    return os.path.join(d, CACHE_FILE)


def _read_file(path: str) -> Dict[str, dict]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("environments"), dict):
        return {}
    return {k: v for k, v in data["environments"].items()
            if isinstance(v, dict) and isinstance(v.get("passed"), dict) and isinstance(v.get("env"), dict)}


def _cached_pass(device, key: str) -> bool:
    ek = _env_key(environment(device))
    path = cache_path()
    with _LOCK:
        if _FILE_PATH[0] != path:
            _FILE.clear()
            _FILE.update(_read_file(path))
            _FILE_PATH[0] = path
        entry = _FILE.get(ek)
        return bool(entry) and key in entry["passed"]


def _write_pass(device, key: str, res: Result) -> None:
    """Add ``key`` to the current environment's passes: read, merge, write to a temporary file and
    rename (atomic; a concurrent writer may lose an entry, which is then checked again). Entries of the
    same device under other versions are dropped (a version change invalidates them). An unwritable
    cache directory only costs the check in the next process."""
    env = environment(device)
    ek = _env_key(env)
    path = cache_path()
    with _LOCK:
        envs = _read_file(path)
        envs = {k: v for k, v in envs.items() if k == ek or v["env"].get("device") != env["device"]}
        entry = envs.setdefault(ek, {"env": env, "passed": {}})
        entry["passed"][key] = {"max_err": res.max_err, "bound": res.bound, "seconds": round(res.seconds, 6),
                                "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        data = {"format": FORMAT,
                "about": "fastattn on-device self-check: kernel variants that passed the numerics rule on this "
                         "machine, per environment. Delete this file to check again; FASTATTN_SELF_CHECK=always "
                         "ignores it.",
                "environments": envs}
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".selfcheck-", dir=os.path.dirname(path))
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError:
            return
        _FILE.clear()
        _FILE.update(envs)
        _FILE_PATH[0] = path


# ----------------------------------------------------------------------------- fault injection (tests)
_ARMED: Dict[Tuple[str, str], object] = {}  # (backend, op) -> the backend object armed
_FAULT_SEEN: List[Optional[str]] = [None]


def _sync_fault_injection() -> None:
    """Arm or disarm ``FASTATTN_FAULT_INJECT`` to match the environment (called at every plan miss)."""
    raw = getenv(ENV_FAULT) or ""
    active = bool(raw) and bool(os.environ.get("PYTEST_CURRENT_TEST"))
    want = set()
    if raw and not active:
        if _FAULT_SEEN[0] != raw:
            warnings.warn(f"{ENV_FAULT}={raw!r} is ignored: fault injection only works inside a pytest test",
                          FaultInjectionWarning, stacklevel=4)
    elif active:
        for item in raw.split(","):
            name, _, op = item.strip().partition(":")
            if op not in _CHECKERS or name not in dispatch.backends(op) or name in NEVER_CHECKED:
                raise ValueError(f"{ENV_FAULT}={raw!r}: {item.strip()!r} is not <kernel backend>:<op> with a "
                                 f"self-check (ops: {sorted(_CHECKERS)}; backends: cuda, triton)")
            want.add((name, op))
    _FAULT_SEEN[0] = raw
    for name, op in list(_ARMED):
        if (name, op) not in want:
            b = _ARMED.pop((name, op))
            b.__dict__.pop("launch", None)
            b.__dict__.pop("check_launch", None)
    for name, op in want - set(_ARMED):
        b = dispatch.backends(op)[name]
        for attr in ("launch", "check_launch"):  # real calls, and the self-check's own launches
            def perturbed(inp, out, rng=(0, 0), _real=getattr(type(b), attr).__get__(b)):
                lse = _real(inp, out, rng)
                if out.dim() == 4 and out.shape[2] > 0:
                    out[:, :, :1, :] += 1.0  # the real kernel result, made wrong
                elif out.dim() == 3 and out.shape[0] > 0:  # packed (total_q, Hq, Ev)
                    out[:1] += 1.0
                return lse
            setattr(b, attr, perturbed)
        _ARMED[(name, op)] = b
        warnings.warn(f"fastattn: FAULT INJECTION armed ({ENV_FAULT}={raw}): the {name} {op} kernel's results "
                      "are deliberately wrong", FaultInjectionWarning, stacklevel=4)


# ------------------------------------------------------------------------------------ fastattn check
SWEEP_HEAD_DIMS = (32, 64, 80, 96, 128, 256)


def _sweep_masks(dev, dtype, Hq: int, Lq: int, Lk: int):
    from .masks import NormalizedMask
    B = 2
    yield NormalizedMask()
    yield NormalizedMask(causal="top_left")
    yield NormalizedMask(causal="bottom_right")
    for kdt in (torch.int32, torch.int64):
        yield NormalizedMask(key_lengths=torch.full((B,), Lk, dtype=kdt, device=dev))
    yield NormalizedMask(causal="bottom_right", key_lengths=torch.full((B,), Lk, dtype=torch.int32, device=dev))
    yield NormalizedMask(key_mask=torch.ones(B, Lk, dtype=torch.bool, device=dev))
    yield NormalizedMask(causal="top_left", key_mask=torch.ones(B, Lk, dtype=torch.bool, device=dev))
    for ddt in dict.fromkeys((torch.bool, dtype, torch.float32)):
        yield NormalizedMask(dense=torch.zeros(B, 1, Lq, Lk, dtype=ddt, device=dev).expand(B, Hq, Lq, Lk))


def sweep(device, *, op: str = "attention", head_dims: Optional[Tuple[int, ...]] = None,
          dtypes: Optional[Tuple[torch.dtype, ...]] = None, backward: Optional[bool] = None,
          dropout: Optional[bool] = None, out: Callable[[str], None] = print, verbose: bool = False) -> int:
    """``fastattn check``'s explicit form: self-check every variant of a grid — each usable kernel
    backend x dtype x head dim (the backend's compiled ones, else :data:`SWEEP_HEAD_DIMS`) x GQA group
    {1, 2} x mask form (none, causal both ways, key lengths int32/int64, +causal, key mask, +causal,
    dense bool/float) x kernel path (prefill, decode) x without/with dropout (backends with in-kernel
    dropout) x fwd/bwd (backends with a fused backward) — whatever the cache file says, and record
    passes in it. On CPU tensors (the Triton interpreter, a test mode, about a second a check) the
    default grid is float32, head dim 64, no GQA, forward only, no dropout. Returns the number of
    failed variants."""
    from .inputs import AttentionInputs
    device = device if isinstance(device, torch.device) else torch.device(device)
    dev = _dev(device)
    groups = (1, 2)
    if device.type != "cuda":
        head_dims, dtypes, groups = head_dims or (64,), dtypes or (torch.float32,), (1,)
        backward = False if backward is None else backward
        dropout = False if dropout is None else dropout
    failures = 0
    for name, b in dispatch.backends(op).items():
        if name in NEVER_CHECKED:
            continue
        if b.unavailable_reason() is not None:
            continue
        dims = b.head_dims()
        hds = head_dims or (tuple(dims) if not isinstance(dims, range) else
                            tuple(d for d in SWEEP_HEAD_DIMS if d in dims))
        dts = dtypes or b.DTYPES or (torch.float32,)
        directions = ["fwd", "bwd"] if (b.SUPPORTS_BACKWARD and backward is not False) else ["fwd"]
        ps = (0.0, 0.25) if (b.SUPPORTS_DROPOUT and dropout is not False) else (0.0,)
        seen, ran, failed = set(), 0, []
        t0 = time.perf_counter()
        for dtype in dts:
            for E in hds:
                for group in groups:
                    for Lq in (40, 1):
                        Lk = 72
                        for mask in _sweep_masks(device, dtype, 2 * group, Lq, Lk):
                            q = torch.zeros(2, 2 * group, Lq, E, dtype=dtype, device=device)
                            kv = torch.zeros(2, 2, Lk, E, dtype=dtype, device=device)
                            for p in ps:
                                rep = AttentionInputs(q, kv, kv, mask, p, 1.0 / math.sqrt(E), tuple(q.shape))
                                if dispatch.reasons_against(op, name, rep, auto=False):
                                    continue
                                for direction in directions:
                                    key = _attention_key(b, rep, direction)
                                    if key in seen:
                                        continue
                                    seen.add(key)
                                    res = run_check(op, b, rep, direction)
                                    _record(device, dev, key, res)
                                    ran += 1
                                    if not res.passed:
                                        failed.append(key)
                                        out(f"  {name:7} self-check FAIL {key}: {res.reason()}")
                                    elif verbose:
                                        out(f"  {name:7} self-check ok {key} (max err {res.max_err:.3g} <= "
                                            f"{res.bound:.3g}, {res.seconds * 1e3:.1f} ms)")
        failures += len(failed)
        out(f"  {name:7} {op} self-check: {ran} variants, {len(failed)} failed "
            f"({time.perf_counter() - t0:.1f} s; passes recorded in {cache_path()})")
    return failures

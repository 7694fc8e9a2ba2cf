"""Which backend ran: one log line per new call signature (``FASTATTN_LOG=1``).

Lines go to the :mod:`logging` logger ``"fastattn"`` at level INFO, e.g.::

    fastattn: attention b6-h12/12-q11-k11-d32-float32-key_mask -> torch (cuda: unavailable: the CUDA
    extension fastattn._C is not built ...; triton: unavailable: no CUDA device visible ...)

Turning it on: ``FASTATTN_LOG=1`` in the environment (read when fastattn is imported), or
:func:`enable` at run time. When it is on and neither the ``"fastattn"`` logger nor any of its ancestors
has a handler when the first line is written, a stderr handler is added (so a script needs no logging
setup); a configured handler (``logging.basicConfig``, a framework's) gets the lines instead.
:func:`capture` collects the records of a block of code (what
:func:`fastattn.integrations.explain.explain_model` uses), whether or not logging is on.

**Interface for the core** (the dispatcher calls it; nothing else needs to)::

    from .. import log
    ...
    if log.ENABLED:                # or log.enabled(); the only cost when logging is off
        log.dispatched(op, problem.describe(), chosen_name, table)

called once per new call signature (where a dispatch decision is made and cached, e.g. a plan-cache
miss). ``table`` maps backend names, in the order tried, to the reasons each cannot run the call --
``dispatch.explain(op, problem, backend)`` as it is; only the entries *before* ``chosen_name`` are
reported (they were passed over). A table holding only ``chosen_name`` means it was forced (by
``backend=`` or ``FASTATTN_BACKEND``, named in the line); ``forced_by=`` can say so explicitly. An op that
runs outside the dispatcher (the HF eager path for ``output_attentions=True``, stock code under
autocast) may report it with ``chosen="eager"`` / ``"stock"`` and ``forced_by=`` the reason.
:func:`capture` forgets cached dispatch decisions on entry (``dispatch.reset()``), so every signature in
the block is reported again.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

ENV_VAR = "FASTATTN_LOG"
LOGGER_NAME = "fastattn"
#: distinct signatures logged per process (a decode loop with a growing cache makes a new one per token);
#: one line says when the limit is reached. ``FASTATTN_LOG=all`` lifts it.
MAX_LINES = 200

logger = logging.getLogger(LOGGER_NAME)


def _env_on(value: Optional[str]) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Dispatch:
    """One dispatch decision: which backend ran an op on which problem, and why earlier ones did not."""

    op: str
    problem: str
    chosen: str
    passed_over: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    forced_by: Optional[str] = None

    def line(self) -> str:
        s = f"{self.op} {self.problem} -> {self.chosen}"
        if self.forced_by:
            s += f" (forced by {self.forced_by})"
        if self.passed_over:
            s += " (" + "; ".join(f"{n}: {', '.join(r) if r else 'passed over'}" for n, r in self.passed_over) + ")"
        return s


@dataclass
class _Capture:
    records: List[Dispatch] = field(default_factory=list)
    seen: set = field(default_factory=set)


#: True while lines are logged or a :func:`capture` is active. The core reads it before building anything.
ENABLED: bool = False
_logging_on = False
_limit: Optional[int] = MAX_LINES
_seen: set = set()
_captures: List[_Capture] = []
_lock = threading.Lock()
_handler: Optional[logging.Handler] = None


def _refresh() -> None:
    global ENABLED
    ENABLED = _logging_on or bool(_captures)


def enable(on: bool = True, *, limit: Optional[int] = MAX_LINES) -> None:
    """Turn the per-signature lines on or off at run time (``FASTATTN_LOG=1`` does it at import).
    ``limit``: how many distinct signatures to log (``None``: all). Turning it on again starts afresh."""
    global _logging_on, _limit
    with _lock:
        _logging_on = bool(on)
        _limit = limit
        _seen.clear()
        if on and logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        _refresh()


def _ensure_handler() -> None:
    global _handler
    if _handler is None and not logger.hasHandlers():
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(_handler)


def enabled() -> bool:
    """Whether :func:`dispatched` records anything: ``FASTATTN_LOG``/:func:`enable`, an active
    :func:`capture`, or the ``"fastattn"`` logger enabled for DEBUG by the application's logging setup."""
    return ENABLED or logger.isEnabledFor(logging.DEBUG)


def _passed_over(table: Mapping[str, Sequence[str]], chosen: str) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    out = []
    for n, r in table.items():
        if n == chosen:
            break
        out.append((n, tuple(r)))
    return tuple(out)


def dispatched(op: str, problem: str, chosen: str, table: Optional[Mapping[str, Sequence[str]]] = None,
               *, forced_by: Optional[str] = None) -> None:
    """Record that ``chosen`` ran ``op`` on ``problem`` (a one-line description such as
    ``AttentionInputs.describe()``); ``table``: backend -> reasons it cannot run the call, in the order
    tried (only the backends before ``chosen`` are reported). Logs one line the first time a signature is
    seen, and adds a record to every active :func:`capture`. Never raises; a no-op unless :func:`enabled`."""
    if not ENABLED and not logger.isEnabledFor(logging.DEBUG):
        return
    try:
        table = dict(table or {})
        if forced_by is None and list(table) == [chosen]:
            forced_by = ("FASTATTN_BACKEND=" if os.environ.get("FASTATTN_BACKEND", "").strip() == chosen
                         else "backend=")
        rec = Dispatch(op, problem, chosen, _passed_over(table, chosen), forced_by)
        key = (op, problem, chosen, forced_by)
        with _lock:
            for c in _captures:
                if key not in c.seen:
                    c.seen.add(key)
                    c.records.append(rec)
            emit = (_logging_on or logger.isEnabledFor(logging.DEBUG)) and key not in _seen and \
                (_limit is None or len(_seen) <= _limit)
            if emit:
                _seen.add(key)
                at_limit = _limit is not None and len(_seen) > _limit
        if emit:
            _ensure_handler()
            if at_limit:
                logger.info(f"{_limit} distinct call signatures logged; further ones are not "
                            f"({ENV_VAR}=all logs every one)")
            else:
                logger.info(rec.line())
    except Exception:  # noqa: BLE001 - logging must never break a model's forward
        pass


#: called when a capture starts (fastattn.dispatch registers its reset here, so this module imports
#: nothing of fastattn's and the dispatcher can import it)
_ON_CAPTURE: List = []


def on_capture(fn) -> None:
    _ON_CAPTURE.append(fn)


class capture:
    """``with fastattn.log.capture() as records:`` -- every distinct dispatch inside the block is
    appended to ``records`` (a list of :class:`Dispatch`), whether or not ``FASTATTN_LOG`` is set.
    Nothing is printed by the capture itself."""

    def __enter__(self) -> List[Dispatch]:
        self._c = _Capture()
        with _lock:
            _captures.append(self._c)
            _refresh()
        try:  # decisions cached before the block (plan caches) would not be reported again
            for fn in _ON_CAPTURE:
                fn()
        except Exception:  # noqa: BLE001 - a capture must never break the code it wraps
            pass
        return self._c.records

    def __exit__(self, *exc) -> None:
        with _lock:
            _captures.remove(self._c)
            _refresh()


def format_table(records: Sequence[Dispatch]) -> str:
    """The records as an aligned text table: op, problem, backend, why the ones before it were passed over."""
    if not records:
        return "(no fastattn op ran)"
    rows = [(r.op, r.problem, r.chosen + (f" (forced by {r.forced_by})" if r.forced_by else ""),
             "; ".join(f"{n}: {', '.join(why)}" for n, why in r.passed_over) or "-") for r in records]
    head = ("op", "problem", "backend", "passed over")
    w = [max(len(x[i]) for x in rows + [head]) for i in range(3)]
    out = [f"{head[0]:{w[0]}}  {head[1]:{w[1]}}  {head[2]:{w[2]}}  {head[3]}"]
    out += [f"{a:{w[0]}}  {b:{w[1]}}  {c:{w[2]}}  {d}" for a, b, c, d in rows]
    return "\n".join(out)


def _init_from_env() -> None:
    v = os.environ.get(ENV_VAR)
    if _env_on(v):
        enable(True, limit=None if v.strip().lower() == "all" else MAX_LINES)


_init_from_env()

__all__ = ["ENABLED", "Dispatch", "capture", "dispatched", "enable", "enabled", "format_table", "ENV_VAR"]

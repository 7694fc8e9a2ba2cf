"""Test helper: a stand-in for the dispatcher's call of ``fastattn.log.dispatched`` until the core makes it
(``tests/test_log.py::test_core_calls_the_hook`` is a strict xfail until then)."""

from __future__ import annotations

import pytest
import torch

import fastattn
from fastattn import dispatch, log


def _core_emits() -> bool:
    """Whether the dispatcher itself calls ``fastattn.log.dispatched`` (the hook the core is asked to add)."""
    q = torch.randn(1, 1, 2, 8)
    with log.capture() as recs:
        fastattn.attention(q, q, q, backend="torch")
    return bool(recs)


@pytest.fixture
def core_hook(monkeypatch):
    """Until the core calls the hook, stand in for it exactly as documented in fastattn.log: after select
    picks a backend, report the backends tried before it with their reasons."""
    if _core_emits():
        yield
        return
    orig = dispatch.select

    def select(op, problem, backend=None):
        chosen = orig(op, problem, backend)
        if log.ENABLED:
            forced = dispatch.requested_backend(backend)
            table = dispatch.explain(op, problem, backend)
            passed = {}
            for n, r in table.items():
                if n == chosen.name:
                    break
                passed[n] = r
            by = None if forced is None else ("backend=" if backend is not None else "FASTATTN_BACKEND=")
            log.dispatched(op, problem.describe(), chosen.name, passed, forced_by=by)
        return chosen

    monkeypatch.setattr(dispatch, "select", select)
    yield



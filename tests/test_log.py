"""Which backend ran (issue #13 item 10): ``FASTATTN_LOG=1`` logs one line per new call signature through the
logger "fastattn" (a stderr handler when none is configured); ``fastattn.log.capture`` and
``fastattn.integrations.explain.explain_model`` give the same decisions as data."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

import fastattn
from fastattn import dispatch, log

from _log_hook import _core_emits, core_hook  # noqa: F401  (fixture)


@pytest.fixture
def logging_on():
    log.enable(True)
    yield
    log.enable(False)


def test_disabled_by_default_records_nothing(caplog):
    assert not log.ENABLED and not log.enabled()
    with caplog.at_level(logging.INFO, logger="fastattn"):
        log.dispatched("attention", "p", "torch", {"cuda": ["x"]})
    assert not caplog.records


def test_logger_at_debug_opts_in(caplog):
    """An application that sets the "fastattn" logger to DEBUG gets the lines without FASTATTN_LOG."""
    with caplog.at_level(logging.DEBUG, logger="fastattn"):
        assert log.enabled()
        log.dispatched("attention", "p-debug", "torch", {"cuda": ["x"], "torch": [], "later": ["y"]})
    assert [r.getMessage() for r in caplog.records] == ["attention p-debug -> torch (cuda: x)"]


def test_a_table_of_only_the_chosen_backend_means_forced(caplog, logging_on, monkeypatch):
    monkeypatch.setenv("FASTATTN_BACKEND", "triton")
    with caplog.at_level(logging.INFO, logger="fastattn"):
        log.dispatched("attention", "p-forced", "triton", {"triton": []})
        log.dispatched("attention", "p-arg", "torch", {"torch": []})
    assert [r.getMessage() for r in caplog.records] == [
        "attention p-forced -> triton (forced by FASTATTN_BACKEND=)", "attention p-arg -> torch (forced by backend=)"]


def test_one_line_per_new_signature(caplog, logging_on):
    with caplog.at_level(logging.INFO, logger="fastattn"):
        for _ in range(3):
            log.dispatched("attention", "b1-q8", "torch", {"cuda": ["unavailable: not built"],
                                                           "triton": ["no GPU", "dtype float64"]})
        log.dispatched("attention", "b2-q8", "torch", {})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["attention b1-q8 -> torch (cuda: unavailable: not built; triton: no GPU, dtype float64)",
                     "attention b2-q8 -> torch"]


def test_forced_backend_is_named(caplog, logging_on):
    with caplog.at_level(logging.INFO, logger="fastattn"):
        log.dispatched("gelu_ffn", "x33x40", "triton", {}, forced_by="FASTATTN_BACKEND=")
    assert caplog.records[0].getMessage() == "gelu_ffn x33x40 -> triton (forced by FASTATTN_BACKEND=)"


def test_line_limit(caplog):
    log.enable(True, limit=3)
    try:
        with caplog.at_level(logging.INFO, logger="fastattn"):
            for i in range(10):
                log.dispatched("attention", f"q{i}", "torch")
    finally:
        log.enable(False)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[:3] == ["attention q0 -> torch", "attention q1 -> torch", "attention q2 -> torch"]
    assert len(msgs) == 4 and "3 distinct call signatures logged" in msgs[3] and "FASTATTN_LOG=all" in msgs[3]


def test_capture_works_without_the_env_var(caplog):
    assert not log.ENABLED
    with caplog.at_level(logging.INFO, logger="fastattn"):
        with log.capture() as recs:
            assert log.ENABLED
            log.dispatched("attention", "p", "torch", {"cuda": ["x"]})
            log.dispatched("attention", "p", "torch", {"cuda": ["x"]})
    assert not log.ENABLED
    assert recs == [log.Dispatch("attention", "p", "torch", (("cuda", ("x",)),))]
    assert not caplog.records  # a capture prints nothing


def _run(code: str, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("FASTATTN_LOG", "FASTATTN_BACKEND")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)


def test_env_var_prints_to_stderr_without_logging_setup():
    code = ("from fastattn import log\n"
            "log.dispatched('attention', 'b1-q8', 'torch', {'cuda': ['unavailable: not built']})\n"
            "log.dispatched('attention', 'b1-q8', 'torch', {'cuda': ['unavailable: not built']})\n")
    r = _run(code, FASTATTN_LOG="1")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == ["fastattn: attention b1-q8 -> torch (cuda: unavailable: not built)"]
    assert _run(code).stderr.strip() == ""  # off without the variable


def test_env_var_uses_a_configured_handler_once():
    code = ("import logging, sys\n"
            "logging.basicConfig(stream=sys.stdout, format='CONFIGURED %(name)s %(message)s')\n"
            "from fastattn import log\n"
            "log.dispatched('attention', 'b1-q8', 'torch', {})\n")
    r = _run(code, FASTATTN_LOG="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "CONFIGURED fastattn attention b1-q8 -> torch" and r.stderr.strip() == ""


def test_attention_call_is_logged(caplog, core_hook, logging_on, monkeypatch):
    monkeypatch.delenv("FASTATTN_BACKEND", raising=False)
    q = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    with caplog.at_level(logging.INFO, logger="fastattn"):
        fastattn.attention(q, q, q)
        fastattn.attention(q, q, q)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith("attention ") and "-> torch" in msgs[0]
    # the backends before torch were passed over, each with its reason
    assert "cuda:" in msgs[0] and "triton:" in msgs[0]


def test_core_calls_the_hook():
    assert _core_emits()


def test_explain_model_tiny_bert(core_hook, monkeypatch):
    pytest.importorskip("transformers")
    from fastattn.integrations._hf_testing import tiny_model
    from fastattn.integrations.explain import explain_model
    monkeypatch.delenv("FASTATTN_BACKEND", raising=False)
    model = tiny_model("bert")
    ids = torch.randint(3, 60, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    plain = explain_model(model, input_ids=ids, attention_mask=mask)
    assert plain.records == [] and "'eager'" in str(plain) and "fastattn.optimize" in str(plain)
    fastattn.optimize(model)
    try:
        rep = explain_model(model, input_ids=ids, attention_mask=mask)
    finally:
        fastattn.revert(model)
    # on this CPU machine: triton under TRITON_INTERPRET=1 (conftest), else torch; never cuda. The default
    # optimize() unpads the encoder on CPU, so the attention runs packed (attention_varlen)
    assert rep.backends()["attention_varlen"] in (["triton"], ["torch"])
    att = next(r for r in rep.records if r.op == "attention_varlen")
    assert att.passed_over[0][0] == "cuda" and att.passed_over[0][1]
    text = str(rep)
    assert text.splitlines()[0].split() == ["op", "problem", "backend", "passed", "over"]
    assert "cuda:" in text and "note:" not in text
    assert rep.output.last_hidden_state.shape == (2, 7, 32)

"""Issue #13 item 12: ``TRITON_INTERPRET=1`` set inside a script after Triton was imported cannot take effect
(Triton fixes interpreter vs compiled when ``@triton.jit`` runs, at import). fastattn must say so plainly
instead of Triton's "Cannot call @triton.jit'd outside of the scope of a kernel" or a reason telling the user
to set what is already set. Every case runs in a fresh subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")


def _run(code: str, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTATTN_BACKEND")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300)


LATE = ("import os, triton, torch, fastattn\n"
        "from fastattn.triton_mode import interpreter_mismatch, defined_mode\n"
        "assert defined_mode() is False, defined_mode()\n"
        "assert interpreter_mismatch() is None\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n")


def test_set_after_import_is_named():
    r = _run(LATE + "print(interpreter_mismatch())\n")
    assert r.returncode == 0, r.stderr[-2000:]
    msg = r.stdout.strip()
    assert msg.startswith("TRITON_INTERPRET=1 was set after Triton was imported")
    assert "before importing torch, triton or fastattn" in msg and "TRITON_INTERPRET=1 python script.py" in msg


def test_set_before_import_is_fine():
    r = _run("import triton, fastattn\nfrom fastattn.triton_mode import interpreter_mismatch, defined_mode\n"
             "print(defined_mode(), interpreter_mismatch())\n", TRITON_INTERPRET="1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "True None"


def test_unset_after_import_is_named():
    r = _run("import os, triton, fastattn\nfrom fastattn.triton_mode import interpreter_mismatch\n"
             "del os.environ['TRITON_INTERPRET']\nprint(interpreter_mismatch())\n", TRITON_INTERPRET="1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith("TRITON_INTERPRET was unset after Triton was imported")


def test_forced_triton_call_says_why():
    r = _run(LATE + "q = torch.randn(1, 2, 16, 32)\n"
                    "try:\n    fastattn.attention(q, q, q, backend='triton')\n"
                    "except ValueError as e:\n    print('ERR', e)\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ERR" in r.stdout and "was set after Triton was imported" in r.stdout


def test_set_after_import_fastattn_but_before_first_call_works():
    r = _run("import os, torch, fastattn\n"
             "os.environ['TRITON_INTERPRET'] = '1'\n"
             "q = torch.randn(1, 2, 16, 32)\n"
             "ref = torch.nn.functional.scaled_dot_product_attention(q, q, q)\n"
             "out = fastattn.attention(q, q, q, backend='triton')\n"
             "print('MAXDIFF', (out - ref).abs().max().item())\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.split("MAXDIFF")[1]) < 1e-5

"""Issue #13 item 16: what ``import fastattn`` and ``fastattn --help`` import. The measurement itself is
``benchmarks/import_time.py`` (rows in ``benchmarks/results/import_time.csv``); here, what can be asserted
without timing: the parser of ``-X importtime`` output, and which heavy modules are (not) imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import import_time  # noqa: E402

SAMPLE = """import time: self [us] | cumulative | imported package
import time:       100 |        100 |   sympy.core
import time:       200 |        300 | sympy
import time:        50 |         50 |       torch._dynamo.utils
import time:      1000 |       1050 |     torch._dynamo
import time:        10 |         10 |     fastattn.errors
import time:        20 |       1080 |   fastattn.dispatch
import time:         5 |          5 |   fastattn.masks
import time:        30 |       1115 | fastattn
"""


def test_parse_importtime_and_culprits():
    roots = import_time.parse_importtime(SAMPLE)
    assert [r.name for r in roots] == ["sympy", "fastattn"]
    fa = roots[1]
    assert [c.name for c in fa.children] == ["fastattn.dispatch", "fastattn.masks"]
    assert [c.name for c in fa.children[0].children] == ["torch._dynamo", "fastattn.errors"]
    assert import_time.culprits(roots) == [("fastattn.dispatch", "torch._dynamo", 1050e-6)]


def _imported_after(code: str, mods):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTATTN_LOG")}
    probe = code + f"\nimport sys\nprint('LOADED', sorted(m for m in {list(mods)!r} if m in sys.modules))\n"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return eval(r.stdout.split("LOADED", 1)[1].strip())


def test_cli_help_imports_no_command_module():
    code = "import contextlib, io\nfrom fastattn.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n" \
           "    assert main(['--help']) == 0\n"
    assert _imported_after(code, ["transformers", "benchmarks", "fastattn.integrations.demo", "fastattn.check",
                                  "fastattn.bench", "matplotlib"]) == []


def test_demo_help_imports_no_transformers():
    code = ("import contextlib, io\nfrom fastattn.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['demo', '--help'])\n    except SystemExit as e:\n        assert e.code == 0\n")
    assert _imported_after(code, ["transformers"]) == []


def test_import_fastattn_does_not_import_dynamo_or_triton():
    assert _imported_after("import fastattn", ["torch._dynamo", "triton", "sympy", "transformers"]) == []

"""Issue #13 items 13 and 14: the command line's first contact. A mistake the user can fix is one line on
stderr naming the fix (exit 2), never a traceback; long commands say what they are doing on stderr (a line
per stage, in place on a terminal) unless ``--no-progress``. Subprocesses, as a user runs them."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

from fastattn import cli
from fastattn._progress import Progress

NO_GPU = not torch.cuda.is_available()


def _fastattn(*args, env=None):
    e = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTATTN_BACKEND", "FASTATTN_LOG")}
    e["HF_HUB_OFFLINE"] = "1"
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastattn", *args], capture_output=True, text=True, env=e,
                          timeout=300)


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only path")
@pytest.mark.parametrize("cmd", ["demo", "check"])
def test_device_cuda_without_cuda(cmd):
    line = _one_line_error(_fastattn(cmd, "--device", "cuda"), f"fastattn {cmd}: --device cuda:", "--device cpu")
    assert ("CPU-only build" in line and "install a CUDA build of torch" in line) or "is_available() is False" in line


def test_device_not_a_device():
    _one_line_error(_fastattn("check", "--device", "cuda:x"), "--device 'cuda:x' is not a torch device")


@pytest.mark.skipif(not NO_GPU, reason="checks the no-GPU path")
def test_forced_triton_without_gpu_is_one_line_before_any_work():
    line = _one_line_error(_fastattn("demo", env={"FASTATTN_BACKEND": "triton"}),
                           "fastattn demo: FASTATTN_BACKEND=triton forces the triton backend, which cannot run",
                           "unset FASTATTN_BACKEND")
    assert "TRITON_INTERPRET=1" in line  # the fix for running it on CPU


def test_misspelt_backend_env_is_rejected_by_check():
    _one_line_error(_fastattn("check", "--device", "cpu", env={"FASTATTN_BACKEND": "tritn"}),
                    "FASTATTN_BACKEND='tritn' is not a fastattn backend", "did you mean 'triton'?")


def test_check_honours_a_forced_backend():
    r = _fastattn("check", "--device", "cpu", "--no-progress", env={"FASTATTN_BACKEND": "torch"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checking the torch backend only" in r.stdout
    assert "cuda    skipped" not in r.stdout and "torch   12 cases run" in r.stdout


def test_unknown_option_is_named():
    _one_line_error(_fastattn("--bogus"), "unknown option '--bogus'", "fastattn COMMAND --help")


def test_unknown_command_suggests():
    _one_line_error(_fastattn("chek"), "unknown command 'chek'", "did you mean 'check'?")


def test_no_command():
    r = _fastattn()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "fastattn: name a command: info, check, bench, demo"


def test_help_and_version():
    r = _fastattn("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in cli.COMMANDS) and "FASTATTN_LOG=1" in r.stdout
    r = _fastattn("--version")
    assert r.returncode == 0 and r.stdout.startswith("fastattn ")


def test_backend_names_match_the_dispatcher():
    from fastattn import dispatch
    assert tuple(cli.BACKEND_NAMES) == tuple(dispatch.PRIORITY)


def test_insufficient_driver_is_explained(monkeypatch):
    st = "no device: cudaErrorInsufficientDriver (CUDA driver version is insufficient for CUDA runtime version)"
    monkeypatch.setattr(cli, "_nvidia_driver_present", lambda: False)
    assert cli.runtime_status_text(st, "13.0").startswith("no NVIDIA driver on this machine")
    monkeypatch.setattr(cli, "_nvidia_driver_present", lambda: True)
    assert "older than the CUDA 13.0" in cli.runtime_status_text(st, "13.0")
    assert cli.runtime_status_text("1 device(s), driver CUDA 13.0", "13.0") == "1 device(s), driver CUDA 13.0"


def test_info_does_not_report_a_driver_error():
    r = _fastattn("info")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cudaErrorInsufficientDriver" not in r.stdout or "NVIDIA driver" in r.stdout
    assert "insufficient for CUDA runtime" not in r.stdout


# ------------------------------------------------------------------------------------------ progress
def test_progress_lines_off_a_terminal():
    s = io.StringIO()
    p = Progress("fastattn demo", stream=s)
    p.start("loading model")
    p.start("fastattn: warm-up + 6 timed calls", total=7)
    for i in range(7):
        p.step(i + 1)
    p.end()
    lines = s.getvalue().splitlines()
    assert lines[0] == "fastattn demo: loading model ..."
    assert lines[1].startswith("fastattn demo: loading model: done in ")
    assert lines[2] == "fastattn demo: fastattn: warm-up + 6 timed calls ..."
    assert lines[3].startswith("fastattn demo: fastattn: warm-up + 6 timed calls: done in ") and len(lines) == 4


def test_progress_in_place_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    s = Tty()
    p = Progress("fastattn check", stream=s)
    p.start("triton attention", total=3)
    p.step(1)
    p.end()
    out = s.getvalue()
    assert out.startswith("fastattn check: triton attention 0/3 ...") and "\r" in out and "1/3" in out
    assert out.endswith("\n") and out.count("\n") == 1


def test_progress_disabled_prints_nothing():
    s = io.StringIO()
    p = Progress("x", enabled=False, stream=s)
    p.start("a", total=2)
    p.step(1)
    p.end()
    assert s.getvalue() == ""


def test_check_shows_progress_unless_asked_not_to():
    r = _fastattn("check", "--device", "cpu", env={"FASTATTN_BACKEND": "torch"})
    assert r.returncode == 0
    assert "fastattn check: torch attention ..." in r.stderr and "fastattn check: torch attention: done in" in r.stderr
    r = _fastattn("check", "--device", "cpu", "--no-progress", env={"FASTATTN_BACKEND": "torch"})
    assert r.returncode == 0 and r.stderr.strip() == ""


def test_bench_progress_is_lines_off_a_terminal(capsys):
    import os as _os
    root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import harness

    class Case:
        def __init__(self, name):
            self.name = name
    items = list(harness.progress([Case("a"), Case("b")], "attention"))
    assert [c.name for c in items] == ["a", "b"]
    assert capsys.readouterr().err.splitlines() == ["[attention] 1/2 a", "[attention] 2/2 b"]
    assert harness.progress([1], "x", enable=False) == [1]

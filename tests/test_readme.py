"""The README's claims that a CPU can check: its quickstart code blocks run as written (fresh process,
no TRITON_INTERPRET, no FASTATTN_BACKEND), and the commands it names exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart_blocks():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_quickstart_blocks_run_as_written_on_cpu():
    pytest.importorskip("transformers")
    blocks = _quickstart_blocks()
    assert len(blocks) >= 2, "the quickstart has a function-level and a model-level block"
    code = "\n".join(blocks) + ("\nprint('QUICKSTART-OK', tuple(out.shape), tuple(y.shape), type(model).__name__)\n"
                                "print('PIPELINE', len(features), len(features[0][0]), "
                                "extract.model.config._attn_implementation)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTATTN_BACKEND")}
    env["HF_HUB_OFFLINE"] = "1"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "QUICKSTART-OK (2, 4, 128, 64) (8, 64) BertModel" in r.stdout
    assert "-> " in r.stdout  # fastattn.explain printed its decision
    assert "PIPELINE 1 384 fastattn" in r.stdout  # the pipeline form, model_kwargs={"attn_implementation": ...}


def test_readme_commands_exist():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    make = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    for target in re.findall(r"`make ([a-z-]+)`", text):
        assert re.search(rf"^{re.escape(target)}:", make, flags=re.M), f"README names `make {target}`"
    from fastattn.cli import main
    for sub in ("info", "check", "bench", "demo"):
        assert f"fastattn {sub}" in text
    assert main(["no-such-command"]) == 2


def test_extras_require_the_transformers_the_integration_supports():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    from fastattn.integrations import SUPPORTED_TRANSFORMERS
    meta = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    want = "transformers" + ",".join(SUPPORTED_TRANSFORMERS)
    extras = meta["project"]["optional-dependencies"]
    for extra in ("hf", "test"):
        specs = [d.replace(" ", "") for d in extras[extra] if d.startswith("transformers")]
        assert specs == [want], (extra, specs, want)


def test_readme_install_names_the_torch_build_choice():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    make = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    assert "(CPU wheel)" not in text  # not true everywhere: PyPI's Linux x86_64 wheel is the CUDA build
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text and "TORCH_INDEX" in make
    assert "--index-url $(TORCH_INDEX)" in make
    assert "FASTATTN_LOG=1" in text and "explain_model" in text

"""Issue #13 item 11: running from the folder that *contains* a checkout named ``fastattn``
(``git clone .../fastattn; make -C fastattn test; python quickstart.py``) must still import the installed
package, not the checkout folder as an empty namespace package; with nothing installed, the error names
the cause. The checkout is linked into a temporary folder under the name ``fastattn``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "python", "fastattn", "__init__.py")


@pytest.fixture
def parent(tmp_path):
    link = tmp_path / "fastattn"
    try:
        os.symlink(ROOT, link, target_is_directory=True)
    except (OSError, NotImplementedError) as e:
        pytest.skip(f"cannot create a symlink here: {e}")
    return tmp_path


def _py(args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_quickstart_from_the_folder_containing_the_clone(parent):
    code = ("import fastattn, torch\n"
            "q = torch.randn(1, 2, 4, 8)\n"
            "out = fastattn.attention(q, q, q, backend='torch')\n"
            "print('FILE', fastattn.__file__)\n"
            "print('OK', tuple(out.shape))\n")
    r = _py(["-c", code], parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK (1, 2, 4, 8)" in r.stdout
    assert os.path.samefile(r.stdout.split("FILE ", 1)[1].split()[0], PKG)


def test_python_m_fastattn_from_the_folder_containing_the_clone(parent):
    r = _py(["-m", "fastattn", "--version"], parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("fastattn ")


def test_not_installed_names_the_cause(parent):
    # -S: no site-packages, so no installed fastattn; the checkout folder is all Python can find
    r = _py(["-S", "-c", "import fastattn"], parent)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: 'import fastattn' found the source checkout")
    assert "no installed fastattn" in last and "make -C" in last

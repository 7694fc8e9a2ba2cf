"""The compiled extension (built wherever nvcc exists, e.g. CI) and the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from fastattn import runtime as _ext

NVCC = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")


def test_extension_built_where_nvcc_exists():
    mod, why = _ext.load_ext()
    if not NVCC:
        pytest.skip("no nvcc on this machine: the extension is not expected")
    assert mod is not None, why
    info = mod.build_info()
    print(info)
    archs = os.environ.get("FASTATTN_CUDA_ARCHS", "80;90a")
    for a in archs.split(";"):
        assert f"sm_{a}" in info["archs"]
    assert "key_ranges" in info["components"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-device path")
def test_extension_call_without_device_raises_clearly():
    mod, why = _ext.load_ext()
    if mod is None:
        pytest.skip(why)
    assert mod.runtime_status().startswith("no device")
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        mod.key_ranges(1 << 20, 2, 8, 8, 1, 1 << 20, 0)


def test_extension_validates_arguments_first():
    mod, why = _ext.load_ext()
    if mod is None:
        pytest.skip(why)
    with pytest.raises(ValueError, match="B and Lk"):
        mod.key_ranges(1, -1, 8, 8, 1, 1, 0)
    with pytest.raises(ValueError, match="out_ptr must be 4-byte aligned"):
        mod.key_ranges(1 << 20, 2, 8, 8, 1, (1 << 20) + 2, 0)


def test_both_extensions_raise_their_own_argument_error():
    """A bad argument is <module>.ArgumentError, a ValueError and a RuntimeError; the exception translators
    are module-local, so neither extension raises the other's class."""
    C, why = _ext.load_ext("_C")
    if C is None:
        pytest.skip(why)
    assert issubclass(C.ArgumentError, ValueError) and issubclass(C.ArgumentError, RuntimeError)
    with pytest.raises(C.ArgumentError, match="B and Lk"):
        C.key_ranges(1, -1, 8, 8, 1, 1, 0)
    blas, why = _ext.load_ext("_C_blas")
    if blas is None:
        pytest.skip(why)
    assert blas.ArgumentError is not C.ArgumentError
    assert issubclass(blas.ArgumentError, ValueError) and issubclass(blas.ArgumentError, RuntimeError)
    with pytest.raises(blas.ArgumentError, match="alignments must be powers of two"):
        blas.check(4, 8, 8, 0, 8, 1, 8, 1, False, False, 0, 8, 0, 0, 0, 3, 16, 16, 16, 16)
    stats = blas.cache_stats()
    assert set(stats) == {"entries", "hits", "misses", "max_entries"} and stats["max_entries"] > 0


@pytest.mark.gpu
def test_key_ranges_on_gpu():
    mod, why = _ext.load_ext()
    assert mod is not None, why
    mask = torch.zeros(4, 37, dtype=torch.bool, device="cuda")
    mask[0, 5:9] = True
    mask[1, :] = True
    mask[3, 36] = True
    out = torch.empty(4, 2, dtype=torch.int32, device="cuda")
    mod.key_ranges(mask.data_ptr(), 4, 37, mask.stride(0), mask.stride(1), out.data_ptr(),
                   torch.cuda.current_stream().cuda_stream)
    assert out.tolist() == [[5, 9], [0, 37], [37, 0], [36, 37]]


def test_cuda_backend_reports_why_unavailable_without_gpu():
    import fastattn
    if torch.cuda.is_available():
        pytest.skip("GPU present")
    why = fastattn.available_backends()["cuda"]
    assert isinstance(why, str) and why


def _run(*args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "fastattn", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_info():
    r = _run("info")
    print(r.stdout, r.stderr)
    assert r.returncode == 0
    for needle in ("torch", "triton", "transformers", "extension fastattn._C", "backend", "attention", "gelu_ffn"):
        assert needle in r.stdout
    assert "torch    attention  usable" in r.stdout


def test_cli_check_cpu():
    r = _run("check", "--device", "cpu")
    print(r.stdout, r.stderr)
    assert r.returncode == 0 and "check: all passed" in r.stdout


def test_console_script_installed():
    exe = shutil.which("fastattn", path=os.path.dirname(sys.executable))
    assert exe is not None, "the `fastattn` console script is not installed next to this python"
    r = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("missing", ["triton", "transformers"])
def test_imports_without_optional_packages(missing):
    """fastattn installs and imports without Triton (e.g. macOS) or transformers: the backend says why."""
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            "import fastattn, torch\n"
            "ab = fastattn.available_backends()\n"
            "print(ab)\n"
            "assert ab['torch'] is None\n"
            "if " + repr(missing) + " == 'triton': assert ab['triton'] and 'triton' in ab['triton'].lower()\n"
            "q = torch.randn(1, 2, 3, 8)\n"
            "assert fastattn.attention(q, q, q).shape == q.shape\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr

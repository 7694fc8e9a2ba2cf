"""Test configuration shared by every test module.

On a machine without a CUDA device the Triton kernels run under the interpreter on CPU tensors: set
TRITON_INTERPRET=1 before anything imports triton (this file is imported first by pytest).
"""

import atexit
import os
import shutil
import tempfile


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


HAS_CUDA = _has_cuda()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# the kernel self-check's cache file (fastattn.selfcheck) goes to a directory of this run, never ~/.cache
if "FASTATTN_CACHE_DIR" not in os.environ:
    os.environ["FASTATTN_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastattn-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FASTATTN_CACHE_DIR"], True)

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device():
    import torch
    return torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture(autouse=True)
def _fresh_dispatch_decisions():
    """Tests replace backends and flip the environment: no cached dispatch decision survives a test."""
    yield
    from fastattn.attention.plan import clear_plans
    from fastattn import selfcheck
    clear_plans()
    selfcheck.forget_failures()  # a kernel variant a test broke on purpose is not vetoed in the next test

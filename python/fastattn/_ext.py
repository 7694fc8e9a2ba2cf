"""Loading the compiled CUDA extension ``fastattn._C`` without ever failing the import of fastattn."""

from __future__ import annotations

import importlib
from typing import Optional, Tuple

_state: Optional[Tuple[object, Optional[str]]] = None


def load_ext(name: str = "_C") -> Tuple[object, Optional[str]]:
    """Return ``(module, None)`` or ``(None, reason)``."""
    global _state
    if name == "_C" and _state is not None:
        return _state
    try:
        mod = importlib.import_module(f"fastattn.{name}")
        res = (mod, None)
    except ImportError as e:
        msg = str(e)
        if "No module named" in msg:
            msg = (f"the CUDA extension fastattn.{name} is not built (no nvcc at install time, or "
                   "FASTATTN_BUILD_CUDA=0); reinstall with nvcc on PATH or FASTATTN_BUILD_CUDA=1")
        res = (None, f"fastattn.{name} failed to import: {msg}" if "not built" not in msg else msg)
    if name == "_C":
        _state = res
    return res


def cuda_device_reason() -> Optional[str]:
    """``None`` if torch sees a CUDA device, else why not."""
    import torch
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return f"this torch ({torch.__version__}) is a CPU-only build"
        return "torch.cuda.is_available() is False (no GPU or driver)"
    return None

"""The one owner of machine facts and launch idioms.

* :func:`device_info` — per device, looked up once: compute capability, SM count, opt-in shared memory
  per block (one fallback table, :data:`SMEM_OPTIN_FALLBACK`), index. CPU tensors (the Triton
  interpreter) get ``capability=None`` and a notional SM count.
* :func:`interpreting` — whether Triton kernels run under ``TRITON_INTERPRET=1``.
* :func:`device_guard` — run launches under a tensor's device (Triton and our extension launch on the
  current device's current stream).
* :func:`dtype_name` — ``torch.float16`` -> ``"float16"``.
* :func:`load_ext` — the compiled extensions ``fastattn._C`` / ``fastattn._C_blas``, cached, never
  failing the import of fastattn; :func:`cuda_device_reason`, :func:`triton_reason` — machine probes.

Nothing here imports a backend, a kernel module or transformers.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

#: documented opt-in shared memory per block (bytes) by compute capability, when the driver cannot be asked
SMEM_OPTIN_FALLBACK = {(8, 0): 163 * 1024, (8, 6): 99 * 1024, (8, 7): 163 * 1024, (8, 9): 99 * 1024,
                       (9, 0): 227 * 1024}
SMEM_OPTIN_DEFAULT = 99 * 1024
#: under the interpreter there is no SM count; a notional one makes split heuristics split in CPU tests
INTERPRET_SMS = 8


_ENV_DATA = getattr(os.environ, "_data", None)  # CPython's encoded view of os.environ, kept in sync by it


def getenv(name: str) -> Optional[str]:
    """``os.environ.get(name)`` at a tenth of its cost (it is read on every call on hot paths, and
    tests and users change these variables at run time, so it cannot be cached)."""
    if _ENV_DATA is None or os.name != "posix":
        return os.environ.get(name)
    v = _ENV_DATA.get(name.encode())
    return None if v is None else v.decode()


def interpreting() -> bool:
    """``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors (how CI tests them)."""
    return getenv("TRITON_INTERPRET") == "1"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class DeviceInfo:
    """Facts of one device. ``capability is None`` for CPU tensors (the Triton interpreter)."""

    index: Optional[int]
    capability: Optional[Tuple[int, int]]
    n_sm: int
    smem_per_block: int
    name: str


_DEVICES: Dict[torch.device, DeviceInfo] = {}


def _query(device: torch.device) -> DeviceInfo:
    if device.type != "cuda":
        return DeviceInfo(None, None, INTERPRET_SMS, 0, str(device))
    idx = device.index if device.index is not None else torch.cuda.current_device()
    cap = tuple(torch.cuda.get_device_capability(idx))
    props = torch.cuda.get_device_properties(idx)
    smem = int(getattr(props, "shared_memory_per_block_optin", 0) or 0)
    if not smem:
        try:
            from triton.runtime import driver
            smem = int(driver.active.utils.get_device_properties(idx)["max_shared_mem"])
        except Exception:  # noqa: BLE001 - fall back to the documented per-arch limits
            smem = 0
    smem = smem or SMEM_OPTIN_FALLBACK.get(cap, SMEM_OPTIN_DEFAULT)
    return DeviceInfo(idx, cap, int(props.multi_processor_count), smem, props.name)


def device_info(device) -> DeviceInfo:
    """Cached :class:`DeviceInfo` of ``device`` (a ``torch.device`` or anything it accepts)."""
    info = _DEVICES.get(device)
    if info is None:
        dev = device if isinstance(device, torch.device) else torch.device(device)
        info = _DEVICES[device] = _query(dev)
    return info


_NULL = contextlib.nullcontext()


def device_guard(device: torch.device):
    """A context under which launches go to ``device``: a no-op for CPU tensors and for the current
    device (the common case costs one comparison), else ``torch.cuda.device(device)``."""
    if device.type != "cuda" or device.index is None or device.index == torch.cuda.current_device():
        return _NULL
    return torch.cuda.device(device)


# ------------------------------------------------------------------------------------------- probes
def cuda_device_reason() -> Optional[str]:
    """``None`` if torch sees a CUDA device, else why not (one line, with the fix)."""
    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch to use "
                "the GPU backends")
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False (no GPU visible, or no driver)"
    return None


def triton_reason() -> Optional[str]:
    """Why Triton kernels cannot run on this machine, or ``None``: Triton installed, its kernels defined in
    the mode ``TRITON_INTERPRET`` asks for now, and a CUDA GPU of compute capability >= 8.0 visible, or
    ``TRITON_INTERPRET=1`` (CPU tensors, how CI tests). Triton is not imported to answer (about a second)
    unless it already is."""
    import importlib.util
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is None:
        return "triton is not installed; pip install triton (Linux)"
    from .triton_mode import interpreter_mismatch
    why = interpreter_mismatch()
    if why is not None:
        return why
    if interpreting():
        return None
    why = cuda_device_reason()
    if why is not None:
        return why + "; or set TRITON_INTERPRET=1 (before importing triton) to run the Triton kernels on CPU tensors"
    caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    if not any(c >= (8, 0) for c in caps):
        return f"needs a GPU of compute capability >= 8.0 (sm_80); visible: {caps}"
    return None


# ---------------------------------------------------------------------------------------- extensions
@dataclass(frozen=True)
class ExtState:
    module: object
    reason: Optional[str]
    built: bool  # False: the extension was never built (as opposed to built but failing to load)


_EXTS: Dict[str, ExtState] = {}


def ext_state(name: str = "_C") -> ExtState:
    """The compiled extension ``fastattn.<name>`` (``_C`` or ``_C_blas``), loaded once."""
    st = _EXTS.get(name)
    if st is not None:
        return st
    try:
        st = ExtState(importlib.import_module(f"fastattn.{name}"), None, True)
    except ModuleNotFoundError as e:
        if e.name != f"fastattn.{name}":
            st = ExtState(None, f"fastattn.{name} failed to import: {e}", True)
        else:
            st = ExtState(None, f"the CUDA extension fastattn.{name} is not built (no nvcc at install time, or "
                                "FASTATTN_BUILD_CUDA=0); reinstall with nvcc on PATH or FASTATTN_BUILD_CUDA=1", False)
    except ImportError as e:
        st = ExtState(None, f"fastattn.{name} failed to import: {e}", True)
    _EXTS[name] = st
    return st


def load_ext(name: str = "_C") -> Tuple[object, Optional[str]]:
    """``(module, None)`` or ``(None, reason)``."""
    st = ext_state(name)
    return st.module, st.reason

"""Is ``TRITON_INTERPRET`` the same now as when Triton's kernels were defined?

Triton decides interpreter vs compiled once per kernel, when ``@triton.jit`` runs, i.e. when the module
defining the kernel is imported: Triton's own ``triton.language.standard`` helpers (``tl.sum``,
``tl.cdiv``, ...) when ``triton`` is first imported, fastattn's kernels when ``fastattn.kernels.*`` is
first imported (at the first Triton call, or by a backend probe). Setting ``TRITON_INTERPRET=1`` in a script
*after* that point cannot take effect: the interpreter then meets compiled helpers and fails with
``Cannot call @triton.jit'd outside of the scope of a kernel``.

**Interface for the core**: the Triton backends' machine probe calls :func:`interpreter_mismatch` right
after finding Triton importable and returns its message as the reason the backend is unavailable::

    why = triton_mode.interpreter_mismatch()
    if why is not None:
        return why

and a cached probe result is only reused while ``TRITON_INTERPRET`` keeps the value it was probed
with (otherwise a script that sets it after a first call is told to set what it has already set).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

#: modules whose ``@triton.jit`` functions fix the mode when imported
_KERNEL_MODULES = ("triton.language.standard", "fastattn.kernels.attention", "fastattn.kernels.attention_decode",
                   "fastattn.kernels.ffn", "fastattn.kernels.layernorm")


def env_interpreting() -> bool:
    """What the environment asks for now (Triton's own reading of ``TRITON_INTERPRET``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def defined_mode() -> Optional[bool]:
    """``True``/``False``: the already-defined Triton kernels are interpreted / compiled; ``None``: none is
    defined yet (Triton not imported), so setting ``TRITON_INTERPRET`` now still takes effect."""
    names = list(_KERNEL_MODULES) + [n for n in list(sys.modules) if n.startswith("fastattn.kernels.")]
    for name in names:
        mod = sys.modules.get(name)
        if mod is None:
            continue
        for v in vars(mod).values():
            kind = type(v).__name__
            if kind == "InterpretedFunction":
                return True
            if kind == "JITFunction":
                return False
    return None


def interpreter_mismatch() -> Optional[str]:
    """``None`` if Triton kernels will run in the mode ``TRITON_INTERPRET`` asks for now, else one line
    saying that the variable changed after Triton was imported, and the fix."""
    defined = defined_mode()
    now = env_interpreting()
    if defined is None or defined == now:
        return None
    if now:
        return ("TRITON_INTERPRET=1 was set after Triton was imported (Triton fixes interpreter vs compiled "
                "when a kernel is defined, at import): set it before importing torch, triton or fastattn -- "
                "first thing in the script (os.environ before any import) or in the shell: "
                "TRITON_INTERPRET=1 python script.py")
    return ("TRITON_INTERPRET was unset after Triton was imported with TRITON_INTERPRET=1 (the kernels are "
            "interpreter kernels, for CPU tensors): set or unset it before importing torch, triton or fastattn")


__all__ = ["interpreter_mismatch", "defined_mode", "env_interpreting"]

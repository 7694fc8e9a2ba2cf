"""Checks shared by the CLI commands and the demo: the device a command was asked for, a forced
backend, one-line error text. Imports nothing heavy."""

from __future__ import annotations

import difflib
import os
import sys
from typing import Iterable, Optional

BACKEND_ENV = "FASTATTN_BACKEND"
#: backend names (fastattn.dispatch.PRIORITY), here so that validating the environment imports nothing
BACKEND_NAMES = ("cuda", "triton", "torch")


class UsageError(Exception):
    """A problem with the command line or environment the user can fix: printed as one line, exit 2."""


def fail(prog: str, msg: str) -> int:
    print(f"{prog}: {msg}", file=sys.stderr)
    return 2


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------------------------ shared checks
def device_problem(device: str) -> Optional[str]:
    """``None`` if torch can use ``device`` here, else one line saying why and what to do."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return f"--device {device!r} is not a torch device (cpu, cuda, cuda:N)"
    if dev.type == "cuda":
        if torch.version.cuda is None:
            return (f"--device {device}: this torch ({torch.__version__}) is a CPU-only build; install a CUDA "
                    "build of torch (https://pytorch.org/get-started/locally/) or use --device cpu")
        if not torch.cuda.is_available():
            return (f"--device {device}: torch.cuda.is_available() is False (no GPU visible or no NVIDIA "
                    "driver); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return (f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible "
                    f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return None
    if dev.type == "cpu":
        return None
    try:
        torch.empty(1, device=dev)
    except Exception as e:  # noqa: BLE001 - any failure means unusable
        return f"--device {device}: torch cannot allocate there ({type(e).__name__}: {str(e).splitlines()[0]})"
    return None


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def forced_backend() -> Optional[str]:
    """The backend ``FASTATTN_BACKEND`` forces (``None``: unset or ``auto``); :class:`UsageError` if it
    names no backend."""
    env = os.environ.get(BACKEND_ENV, "").strip()
    if env in ("", "auto"):
        return None
    if env not in BACKEND_NAMES:
        raise UsageError(f"{BACKEND_ENV}={env!r} is not a fastattn backend{_did_you_mean(env, BACKEND_NAMES)}; "
                         f"set it to one of {', '.join(BACKEND_NAMES)} or auto, or unset it")
    return env


def forced_backend_problem() -> Optional[str]:
    """One line if ``FASTATTN_BACKEND`` is misspelt or forces a backend that cannot run on this machine."""
    try:
        name = forced_backend()
    except UsageError as e:
        return str(e)
    if name is None:
        return None
    import fastattn
    why = fastattn.available_backends().get(name)
    if why is None:
        return None
    return (f"{BACKEND_ENV}={name} forces the {name} backend, which cannot run on this machine: {why}; "
            f"or unset {BACKEND_ENV} to let fastattn pick")


def one_line(e: BaseException) -> str:
    """An error's message on one line (a dispatch error lists its reasons on the following lines)."""
    return " ".join(s.strip() for s in str(e).splitlines() if s.strip())


# -------------------------------------------------------------------------------------------- info

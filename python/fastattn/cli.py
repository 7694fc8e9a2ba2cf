"""The ``fastattn`` console command (also ``python -m fastattn``).

``info``  versions, device, extension build, and the backend table with reasons;
``check`` parity of every usable backend against the float64 reference on this machine;
``bench`` the benchmark suite (``benchmarks/``); ``demo`` a real model, HF's default attention vs fastattn.

A mistake the user can fix (a device this torch cannot use, a misspelt ``FASTATTN_BACKEND``, an unknown
option) is one line on stderr naming the fix, exit status 2 -- never a traceback. This module imports
nothing heavy at module level: ``fastattn --help`` and ``fastattn demo --help`` stay fast.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import platform
import sys
from typing import Iterable, List, Optional

COMMANDS = {
    "info": "versions, device, extension, backend table",
    "check": "parity of every usable backend against the float64 reference",
    "bench": "benchmark suite (see benchmarks/)",
    "demo": "a real model: HF's default attention (sdpa) vs fastattn, outputs and timings",
}
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
def _version(mod: str) -> str:
    try:
        m = importlib.import_module(mod)
        return getattr(m, "__version__", "?")
    except Exception as e:  # noqa: BLE001 - report, never fail
        return f"not installed ({type(e).__name__})"


def _nvidia_driver_present() -> bool:
    if os.path.exists("/proc/driver/nvidia/version"):
        return True
    import ctypes
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


def runtime_status_text(status: str, built_cuda: str) -> str:
    """The extension's ``runtime_status()`` in words. ``cudaGetDeviceCount`` answers
    ``cudaErrorInsufficientDriver`` both for an old driver and for no driver at all; say which."""
    if "cudaErrorInsufficientDriver" in status:
        if not _nvidia_driver_present():
            return "no NVIDIA driver on this machine (no GPU use possible here; the CPU backends still run)"
        return (f"the NVIDIA driver is older than the CUDA {built_cuda} this extension was built with; update "
                "the driver, or rebuild with an older CUDA toolkit")
    if "cudaErrorNoDevice" in status:
        return "no CUDA GPU visible (check CUDA_VISIBLE_DEVICES / nvidia-smi)"
    return status


def info_text() -> str:
    import torch

    import fastattn
    from fastattn import dispatch, runtime

    lines = [f"fastattn {fastattn.__version__}  (python {platform.python_version()}, {platform.machine()})",
             f"torch {torch.__version__} (CUDA {torch.version.cuda})   triton {_version('triton')}   "
             f"transformers {_version('transformers')}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"device {i}: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                         f"{p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append(f"device: none ({runtime.cuda_device_reason()})")
    mod, why = runtime.load_ext("_C")
    if mod is None:
        lines.append(f"extension fastattn._C: {why}")
    else:
        bi = mod.build_info()
        lines.append(f"extension fastattn._C: built with CUDA {bi['cuda_version']} for {bi['archs']}; "
                     f"runtime: {runtime_status_text(mod.runtime_status(), bi['cuda_version'])}")
    blas, why_blas = runtime.load_ext("_C_blas")
    if blas is None:
        lines.append(f"extension fastattn._C_blas (cuBLASLt): {why_blas}")
    else:
        lines.append("extension fastattn._C_blas (cuBLASLt): built")
    lines.append("")
    lines.append(f"{'backend':8} {'op':10} status")
    for name in dispatch.PRIORITY:
        for op in dispatch.ops():
            table = dispatch.backends(op)
            if name not in table:
                continue
            why = table[name].unavailable_reason()
            lines.append(f"{name:8} {op:10} {'usable' if why is None else 'unavailable: ' + why}")
    try:
        env = forced_backend()
        if env is not None:
            lines.append(f"\n{BACKEND_ENV}={env}: every call is forced to the {env} backend")
    except UsageError as e:
        lines.append(f"\nwarning: {e}")
    return "\n".join(lines)


def cmd_info(argv: List[str]) -> int:
    argparse.ArgumentParser(prog="fastattn info", description=COMMANDS["info"]).parse_args(argv)
    print(info_text())
    return 0


# ------------------------------------------------------------------------------------------- check
def check_parser() -> argparse.ArgumentParser:
    c = argparse.ArgumentParser(prog="fastattn check", description=COMMANDS["check"] + " on this machine")
    c.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    c.add_argument("-v", "--verbose", action="store_true")
    c.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return c


def cmd_check(argv: List[str]) -> int:
    args = check_parser().parse_args(argv)
    if args.device is not None:
        why = device_problem(args.device)
        if why is not None:
            return fail("fastattn check", why)
    why = forced_backend_problem()
    if why is not None:
        return fail("fastattn check", why)
    only = forced_backend()
    from fastattn.check import run_check
    return run_check(device=args.device, verbose=args.verbose, only=only, progress=not args.no_progress)


# ------------------------------------------------------------------------------------- bench, demo
def cmd_bench(argv: List[str]) -> int:
    try:
        from fastattn.bench import main as bench_main
    except ImportError as e:
        return fail("fastattn bench", f"not available in this build: {e}")
    return bench_main(argv)


def cmd_demo(argv: List[str]) -> int:
    try:
        from fastattn.integrations.demo import main as demo_main
    except ImportError as e:
        print(f"fastattn demo needs the Hugging Face integration: {e}; running `fastattn check` instead",
              file=sys.stderr)
        return cmd_check([])
    return demo_main(argv)


RUNNERS = {"info": cmd_info, "check": cmd_check, "bench": cmd_bench, "demo": cmd_demo}


def _version_string() -> str:
    try:
        from importlib.metadata import version
        return version("fastattn")
    except Exception:  # noqa: BLE001 - an uninstalled checkout
        return "unknown"


def usage() -> str:
    lines = ["usage: fastattn [-h] [--version] COMMAND [options]", "",
             "fused attention and GELU FFN kernels", "", "commands:"]
    lines += [f"  {name:6} {hlp}" for name, hlp in COMMANDS.items()]
    lines += ["", "`fastattn COMMAND --help` lists a command's options. Environment: FASTATTN_BACKEND=cuda|triton|torch "
              "forces a backend; FASTATTN_LOG=1 logs which backend ran each new call signature; "
              "TRITON_INTERPRET=1 runs the Triton kernels on CPU tensors."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return fail("fastattn", "name a command: " + ", ".join(COMMANDS))
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help", "help"):
        print(usage())
        return 0
    if first in ("-V", "--version"):
        print(f"fastattn {_version_string()}")
        return 0
    if first.startswith("-"):
        return fail("fastattn", f"unknown option {first!r}{_did_you_mean(first, ['--help', '--version'])}; "
                                f"options go after the command (fastattn COMMAND --help); commands: "
                                + ", ".join(COMMANDS))
    if first not in RUNNERS:
        return fail("fastattn", f"unknown command {first!r}{_did_you_mean(first, COMMANDS)}; commands: "
                                + ", ".join(COMMANDS))
    try:
        return RUNNERS[first](rest)
    except UsageError as e:
        return fail(f"fastattn {first}", str(e))
    except KeyboardInterrupt:
        print(f"fastattn {first}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastattn info | head`: the reader left; say nothing more
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
import importlib
import os
import platform
import sys
from typing import List, Optional

COMMANDS = {
    "info": "versions, device, extension, backend table",
    "check": "parity of every usable backend against the float64 reference",
    "bench": "benchmark suite (see benchmarks/)",
    "demo": "a real model: HF's default attention (sdpa) vs fastattn, outputs and timings",
}

from ._cli_checks import (BACKEND_ENV, BACKEND_NAMES, UsageError, _did_you_mean, default_device,  # noqa: F401
                          device_problem, fail, forced_backend, forced_backend_problem, one_line)


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

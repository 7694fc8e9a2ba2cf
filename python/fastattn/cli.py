"""The ``fastattn`` console command (also ``python -m fastattn``).

``info``  versions, device, extension build, and the backend table with reasons;
``check`` parity of every usable backend against the float64 reference on this machine;
``bench`` the benchmark suite (``benchmarks/``); ``demo`` a real model, eager vs fastattn.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from typing import List, Optional


def _version(mod: str) -> str:
    try:
        m = importlib.import_module(mod)
        return getattr(m, "__version__", "?")
    except Exception as e:  # noqa: BLE001 - report, never fail
        return f"not installed ({type(e).__name__})"


def info_text() -> str:
    import torch

    import fastattn
    from fastattn import runtime as _ext
    from fastattn import dispatch
    from fastattn.dispatch import PRIORITY
    ATTENTION_BACKENDS, FFN_BACKENDS = dispatch.backends("attention"), dispatch.backends("gelu_ffn")

    lines = [f"fastattn {fastattn.__version__}  (python {platform.python_version()}, {platform.machine()})",
             f"torch {torch.__version__} (CUDA {torch.version.cuda})   triton {_version('triton')}   "
             f"transformers {_version('transformers')}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"device {i}: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                         f"{p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append(f"device: none ({_ext.cuda_device_reason()})")
    mod, why = _ext.load_ext()
    if mod is None:
        lines.append(f"extension fastattn._C: {why}")
    else:
        bi = mod.build_info()
        lines.append(f"extension fastattn._C: built with CUDA {bi['cuda_version']} for {bi['archs']}; "
                     f"runtime: {mod.runtime_status()}")
    blas, why_blas = _ext.load_ext("_C_blas")
    if blas is None:
        lines.append(f"extension fastattn._C_blas (cuBLASLt): {why_blas}")
    else:
        lines.append("extension fastattn._C_blas (cuBLASLt): built")
    lines.append("")
    lines.append(f"{'backend':8} {'op':10} status")
    for name in PRIORITY:
        for table, op in ((ATTENTION_BACKENDS, "attention"), (FFN_BACKENDS, "gelu_ffn")):
            why = table[name].unavailable_reason()
            lines.append(f"{name:8} {op:10} {'usable' if why is None else 'unavailable: ' + why}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    print(info_text())
    return 0


def cmd_check(args) -> int:
    from fastattn.check import run_check
    return run_check(device=args.device, verbose=args.verbose)


def cmd_bench(args) -> int:
    try:
        from fastattn.bench import main as bench_main
    except ImportError as e:
        print(f"fastattn bench is not available in this build: {e}", file=sys.stderr)
        return 2
    return bench_main(args.rest)


def cmd_demo(args) -> int:
    try:
        from fastattn.integrations.demo import main as demo_main
    except ImportError as e:
        print(f"fastattn demo needs the Hugging Face integration: {e}; running `fastattn check` instead",
              file=sys.stderr)
        from fastattn.check import run_check
        return run_check(device=None, verbose=False)
    return demo_main(args.rest)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("bench", "demo"):
        # their own parsers take every remaining argument, leading options included (`demo --model X`),
        # which argparse.REMAINDER does not pass through
        return (cmd_bench if argv[0] == "bench" else cmd_demo)(argparse.Namespace(rest=argv[1:]))
    p = argparse.ArgumentParser(prog="fastattn", description="fused attention and GELU FFN kernels")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="versions, device, extension, backend table").set_defaults(fn=cmd_info)
    c = sub.add_parser("check", help="parity of every usable backend against the float64 reference")
    c.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    c.add_argument("-v", "--verbose", action="store_true")
    c.set_defaults(fn=cmd_check)
    for name, fn, hlp in (("bench", cmd_bench, "benchmark suite (see benchmarks/)"),
                          ("demo", cmd_demo, "a real model, eager vs fastattn")):
        s = sub.add_parser(name, help=hlp, add_help=False)
        s.add_argument("rest", nargs=argparse.REMAINDER)
        s.set_defaults(fn=fn)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())

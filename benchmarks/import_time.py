"""Import time of fastattn against torch's own, measured in fresh interpreters (issue #13 item 16).

    python benchmarks/import_time.py              # 9 rounds; appends a row to results/import_time.csv
    python benchmarks/import_time.py --runs 15 --no-store

Each round starts one fresh ``python`` per command, in a rotating order (interleaved, so a machine whose
load drifts affects every command alike): ``python -c pass`` (interpreter start), ``import torch``,
``import fastattn`` and ``fastattn --help`` (the console script). Reported: the median wall time of each
over the rounds, wall clock and CPU time (user + system; on a shared machine the wall time is mostly
waiting for a core), and ``added`` = median(import fastattn) - median(import torch), the target <= 0.3 s.

Then one ``python -X importtime -c "import torch; import fastattn"`` run attributes what fastattn adds on
top of torch: for each fastattn module, the non-fastattn modules it imports first (with their cumulative
import time), heaviest first -- the culprits. They are printed and written with the row's provenance to
``results/import_time_culprits.txt``; the row goes to ``results/import_time.csv`` (date, commit, machine,
versions, command, load average, medians, top culprits).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
CSV_PATH = os.path.join(RESULTS, "import_time.csv")
CULPRITS_PATH = os.path.join(RESULTS, "import_time_culprits.txt")
TARGET_ADDED_S = 0.3
FIELDS = ("date", "commit", "machine", "cpus", "loadavg_1m", "python", "torch", "triton", "transformers", "runs",
          "python_start_s", "import_torch_s", "import_fastattn_s", "added_s", "cli_help_s",
          "python_start_cpu_s", "import_torch_cpu_s", "import_fastattn_cpu_s", "added_cpu_s", "cli_help_cpu_s",
          "target_added_s", "top_culprits", "command")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    if os.environ.get("FASTATTN_COMMIT", "").strip():
        return os.environ["FASTATTN_COMMIT"].strip()
    sha = _git("rev-parse", "--short=12", "HEAD")
    if not sha:
        return "unknown"
    return sha + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _env() -> Dict[str, str]:
    # what a user's shell has: no interpreter mode, no forced backend, no logging
    return {k: v for k, v in os.environ.items()
            if k not in ("TRITON_INTERPRET", "FASTATTN_BACKEND", "FASTATTN_LOG", "PYTHONPROFILEIMPORTTIME")}


#: ``--what-if``: ``import fastattn`` with ``torch.compiler.assume_constant_result`` replaced by what
#: ``torch._dynamo.assume_constant_result`` does (set ``fn._dynamo_marked_constant``) without importing
#: ``torch._dynamo`` -- the saving the core gets by not importing dynamo at import time
WHAT_IF = ("import torch, torch.compiler\n"
           "def _mark(fn):\n    fn._dynamo_marked_constant = True\n    return fn\n"
           "torch.compiler.assume_constant_result = _mark\n"
           "import fastattn, sys\n"
           "assert 'torch._dynamo' not in sys.modules\n")


def commands(python: str, what_if: bool = False) -> Dict[str, List[str]]:
    script = shutil.which("fastattn", path=os.path.dirname(python))
    cli = [script, "--help"] if script else [python, "-m", "fastattn", "--help"]
    cmds = {"python_start": [python, "-c", "pass"],
            "import_torch": [python, "-c", "import torch"],
            "import_fastattn": [python, "-c", "import fastattn"],
            "cli_help": cli}
    if what_if:
        cmds["import_fastattn_no_dynamo"] = [python, "-c", WHAT_IF]
    return cmds


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def time_once(cmd: List[str]) -> Tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of one fresh process. On a shared, loaded machine the wall time is
    mostly waiting for a core; the CPU time (user + system, from ``getrusage``) is the work itself."""
    c0, t0 = _children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), timeout=300)
    dt, dc = time.perf_counter() - t0, _children_cpu() - c0
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed: {r.stderr.decode(errors='replace')[-2000:]}")
    return dt, dc


def measure(python: str, runs: int, progress: bool = True,
            what_if: bool = False) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
    """Wall and CPU seconds of each command over ``runs`` interleaved rounds."""
    cmds = commands(python, what_if)
    names = list(cmds)
    for n in names:  # one untimed run each: page cache, .pyc files
        time_once(cmds[n])
    wall: Dict[str, List[float]] = {n: [] for n in names}
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(runs):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            w, c = time_once(cmds[n])
            wall[n].append(w)
            cpu[n].append(c)
        if progress:
            print(f"  round {r + 1}/{runs}: " + ", ".join(f"{n} {wall[n][-1]:.2f} s ({cpu[n][-1]:.2f} cpu)"
                                                          for n in names), file=sys.stderr, flush=True)
    return wall, cpu


# ------------------------------------------------------------------------------------ -X importtime
@dataclass
class Node:
    name: str
    self_us: int
    cum_us: int
    level: int
    children: List["Node"] = field(default_factory=list)


def parse_importtime(text: str) -> List[Node]:
    """The import tree of ``-X importtime`` output (children are printed before their parent, one
    indentation level deeper); returns the roots in import order."""
    pending: List[Node] = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line or line.count("|") < 2:
            continue
        head, cum_s, raw = line.split("|", 2)
        self_us, cum = int(head.split(":", 1)[1]), int(cum_s)
        name = raw.strip()
        level = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        node = Node(name, self_us, cum, level)
        while pending and pending[-1].level > level:
            node.children.insert(0, pending.pop())
        pending.append(node)
    return pending


def culprits(roots: List[Node], top: int = 12) -> List[Tuple[str, str, float]]:
    """``(fastattn module, module it pulls in, cumulative seconds)`` for every non-fastattn module that a
    fastattn module imports directly, heaviest first."""
    out = []

    def walk(n: Node) -> None:
        if n.name == "fastattn" or n.name.startswith("fastattn."):
            for c in n.children:
                if c.name == "fastattn" or c.name.startswith("fastattn."):
                    walk(c)
                else:
                    out.append((n.name, c.name, c.cum_us / 1e6))
    for r in roots:
        walk(r)
    out.sort(key=lambda x: -x[2])
    return out[:top]


def importtime_report(python: str) -> Tuple[float, List[Tuple[str, str, float]]]:
    """fastattn's cumulative import time on top of an imported torch, and its culprits."""
    r = subprocess.run([python, "-X", "importtime", "-c", "import torch; import fastattn"], capture_output=True,
                       text=True, env=_env(), timeout=300)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    roots = parse_importtime(r.stderr)
    fa = [n for n in roots if n.name == "fastattn"]
    total = fa[0].cum_us / 1e6 if fa else float("nan")
    return total, culprits(roots)


def _version(python: str, mod: str) -> str:
    r = subprocess.run([python, "-c", f"import {mod}; print({mod}.__version__)"], capture_output=True, text=True,
                       env=_env(), timeout=300)
    return r.stdout.strip() or "none"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=9, help="rounds (fresh interpreters per command per round)")
    p.add_argument("--python", default=sys.executable, help="the interpreter to measure (default: this one)")
    p.add_argument("--no-store", action="store_true", help="print only; write no row")
    p.add_argument("--out", default=CSV_PATH)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--what-if", action="store_true",
                   help="also time `import fastattn` without torch._dynamo (see WHAT_IF); reported, not stored")
    args = p.parse_args(argv)

    command = shlex.join(["python", "benchmarks/import_time.py", *(sys.argv[1:] if argv is None else argv)])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times, cpu = measure(args.python, args.runs, progress=not args.no_progress, what_if=args.what_if)
    med = {n: statistics.median(v) for n, v in times.items()}
    mcpu = {n: statistics.median(v) for n, v in cpu.items()}
    added = med["import_fastattn"] - med["import_torch"]
    added_cpu = mcpu["import_fastattn"] - mcpu["import_torch"]
    fa_cum, cul = importtime_report(args.python)
    row = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": git_commit(),
           "machine": f"{cpu_model()} ({platform.system()} {platform.machine()})", "cpus": os.cpu_count(),
           "loadavg_1m": f"{load:.2f}", "python": platform.python_version(),
           "torch": _version(args.python, "torch"), "triton": _version(args.python, "triton"),
           "transformers": _version(args.python, "transformers"), "runs": args.runs,
           "python_start_s": f"{med['python_start']:.3f}", "import_torch_s": f"{med['import_torch']:.3f}",
           "import_fastattn_s": f"{med['import_fastattn']:.3f}", "added_s": f"{added:.3f}",
           "cli_help_s": f"{med['cli_help']:.3f}",
           "python_start_cpu_s": f"{mcpu['python_start']:.3f}", "import_torch_cpu_s": f"{mcpu['import_torch']:.3f}",
           "import_fastattn_cpu_s": f"{mcpu['import_fastattn']:.3f}", "added_cpu_s": f"{added_cpu:.3f}",
           "cli_help_cpu_s": f"{mcpu['cli_help']:.3f}", "target_added_s": TARGET_ADDED_S,
           "top_culprits": "; ".join(f"{a}->{b} {s:.3f}s" for a, b, s in cul[:5]), "command": command}

    lines = [f"import time, median of {args.runs} fresh interpreters per command (interleaved), "
             f"{row['date']}, commit {row['commit']}",
             f"machine: {row['machine']}, {row['cpus']} CPUs, load average {row['loadavg_1m']}; python {row['python']}, "
             f"torch {row['torch']}, triton {row['triton']}, transformers {row['transformers']}",
             f"command: {command}", "",
             f"{'':24} {'wall':>8} {'CPU':>8}   (median s; CPU = user + system of the process)",
             f"  python -c pass         {med['python_start']:8.2f} {mcpu['python_start']:8.2f}",
             f"  import torch           {med['import_torch']:8.2f} {mcpu['import_torch']:8.2f}",
             f"  import fastattn        {med['import_fastattn']:8.2f} {mcpu['import_fastattn']:8.2f}   adds "
             f"{added:+.2f} s wall, {added_cpu:+.2f} s CPU to torch; target <= {TARGET_ADDED_S} s: "
             f"{'met' if max(added, added_cpu) <= TARGET_ADDED_S else 'NOT met'}",
             f"  fastattn --help        {med['cli_help']:8.2f} {mcpu['cli_help']:8.2f}"]
    if args.what_if:
        w, c = med["import_fastattn_no_dynamo"], mcpu["import_fastattn_no_dynamo"]
        lines.append(f"  what if no dynamo      {w:8.2f} {c:8.2f}   adds {w - med['import_torch']:+.2f} s wall, "
                     f"{c - mcpu['import_torch']:+.2f} s CPU (import fastattn with the WHAT_IF patch)")
    lines += ["",
             f"python -X importtime -c 'import torch; import fastattn': fastattn's own tree {fa_cum:.2f} s "
             "(torch already imported); what it pulls in, heaviest first:"]
    lines += [f"  {s:6.3f} s  {b:40} imported by {a}" for a, b, s in cul] or ["  (nothing beyond torch)"]
    lines.append(f"  {fa_cum - sum(s for _, _, s in cul):6.3f} s  fastattn's own modules (the rest of its tree)")
    report = "\n".join(lines)
    print(report)
    if not args.no_store:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        new = not os.path.exists(args.out)
        with open(args.out, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)
        with open(CULPRITS_PATH if args.out == CSV_PATH else args.out[:-4] + "_culprits.txt", "w") as f:
            f.write(report + "\n")
        print(f"\nrow -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Progress of the long CLI commands (``demo``, ``check``), on stderr so stdout stays the result.

On a terminal a stage is one line updated in place (``name: stage 3/6 ... 2.1 s``); elsewhere (logs, CI,
pipes) a line when a stage starts and one when it ends, so a slow stage (the Triton interpreter takes
minutes) is never silent. ``enabled=False`` (``--no-progress``) prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    def __init__(self, prog: str, enabled: bool = True, stream: Optional[TextIO] = None):
        self.prog = prog
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._msg: Optional[str] = None
        self._t0 = 0.0
        self._total: Optional[int] = None

    def _write(self, s: str, end: str = "\n") -> None:
        self.stream.write(s + end)
        self.stream.flush()

    def start(self, msg: str, total: Optional[int] = None) -> "Progress":
        """Begin a stage (ends the previous one)."""
        self.end()
        self._msg, self._t0, self._total = msg, time.perf_counter(), total
        if self.enabled:
            suffix = f" 0/{total}" if total and self.tty else ""
            self._write(f"{self.prog}: {msg}{suffix} ...", end="" if self.tty else "\n")
        return self

    def step(self, i: int) -> None:
        """``i`` of the stage's ``total`` items are done (a terminal shows it in place)."""
        if not self.enabled or self._msg is None:
            return
        if self.tty:
            self._write(f"\r\033[K{self.prog}: {self._msg} {i}/{self._total} ... "
                        f"{time.perf_counter() - self._t0:.1f} s", end="")

    def end(self, note: str = "") -> Optional[float]:
        """End the current stage; returns its duration in seconds."""
        if self._msg is None:
            return None
        dt = time.perf_counter() - self._t0
        if self.enabled:
            tail = f" done in {dt:.1f} s" + (f" ({note})" if note else "")
            if self.tty:
                self._write(f"\r\033[K{self.prog}: {self._msg}{tail}")
            else:
                self._write(f"{self.prog}: {self._msg}:{tail}")
        self._msg = None
        return dt

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.end()

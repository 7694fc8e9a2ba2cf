"""``FASTATTN_LOG=1``: one line per new call signature saying which backend ran and why the others did
not (logger ``"fastattn"``; a stderr handler is added when the variable is set and none is configured)."""

from __future__ import annotations

import logging
import os
from typing import Dict, List

logger = logging.getLogger("fastattn")
_ready = False


def enabled() -> bool:
    return os.environ.get("FASTATTN_LOG", "0") not in ("", "0") or logger.isEnabledFor(logging.DEBUG)


def dispatched(op: str, case: str, chosen: str, table: Dict[str, List[str]]) -> None:
    """Log one dispatch decision (called once per new signature)."""
    global _ready
    if not _ready and not logger.handlers and not logging.getLogger().handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        _ready = True
    others = "; ".join(f"{n}: {'; '.join(r)}" for n, r in table.items() if r and n != chosen)
    logger.info(f"{op} {case} -> {chosen}" + (f" (passed over: {others})" if others else ""))

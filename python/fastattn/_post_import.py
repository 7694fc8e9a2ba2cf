"""Run a callback right after a module is imported, without importing it (``import fastattn`` must not pay
for transformers).

:func:`when_imported` calls ``callback(module)`` at once when the module is already in ``sys.modules``;
otherwise a finder at the front of ``sys.meta_path`` hands the import to the other finders, wraps the
loader it gets back, and calls the callback after the module body has run, however the import was
triggered (``import x``, ``from x import y``, ``importlib.import_module``, a lazy module's
``__getattr__``). The wrapper is taken out again before the callback: ``module.__loader__`` and
``module.__spec__.loader`` are the original loader. A callback that raises is logged, never propagated:
the import itself always succeeds (or fails) exactly as it would without the hook.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Callable, Dict, List

logger = logging.getLogger("fastattn")

_lock = threading.Lock()
_pending: Dict[str, List[Callable]] = {}


def _run(name: str, callbacks, module) -> None:
    for cb in callbacks:
        try:
            cb(module)
        except Exception as e:  # noqa: BLE001 - never break the user's import
            logger.warning(f"fastattn: post-import hook for {name} failed: {type(e).__name__}: {e}")


class _Loader:
    """Delegates to the real loader; runs the callbacks after ``exec_module`` succeeded."""

    def __init__(self, name: str, loader, callbacks):
        self._name, self._loader, self._callbacks = name, loader, callbacks

    def __getattr__(self, attr):  # get_source, is_package, get_resource_reader, ...
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            self._loader.exec_module(module)
        finally:  # put the real loader back, whatever happened
            try:
                module.__loader__ = self._loader
                if getattr(module, "__spec__", None) is not None and module.__spec__.loader is self:
                    module.__spec__.loader = self._loader
            except Exception:  # noqa: BLE001 - read-only module objects: leave them
                pass
        # the module may have replaced itself in sys.modules (transformers' _LazyModule does)
        _run(self._name, self._callbacks, sys.modules.get(self._name, module))


class _Finder:
    """A ``sys.meta_path`` finder that only reacts to the names in ``_pending``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _pending:
            return None
        with _lock:
            callbacks = _pending.pop(fullname, None)
            if not _pending:
                _uninstall()
        if callbacks is None:
            return None
        spec = None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            try:
                spec = finder.find_spec(fullname, path, target)
            except Exception:  # noqa: BLE001 - let the normal machinery raise it
                spec = None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            with _lock:  # not found (or no exec_module): leave the import alone, keep waiting for it
                _pending.setdefault(fullname, []).extend(callbacks)
                _install()
            return None
        spec.loader = _Loader(fullname, spec.loader, callbacks)
        return spec


_finder = _Finder()


def _install() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def _uninstall() -> None:
    try:
        sys.meta_path.remove(_finder)
    except ValueError:
        pass


def when_imported(name: str, callback: Callable) -> None:
    """``callback(module)`` now if ``name`` is imported, else right after it is (once)."""
    module = sys.modules.get(name)
    if module is not None:
        _run(name, [callback], module)
        return
    with _lock:
        _pending.setdefault(name, []).append(callback)
        _install()

"""Not the fastattn package: the root of a fastattn source checkout (the package is ``python/fastattn``).

Why this file exists: when the checkout folder is named ``fastattn`` and Python runs from the folder that
contains it (``git clone .../fastattn; make -C fastattn install; python quickstart.py``), ``import fastattn``
finds this folder first, through the current directory on ``sys.path``. Without this file it would become
an empty namespace package (``module 'fastattn' has no attribute 'attention'``), hiding an editable
install. With it, the import is handed over to the installed fastattn (the same code for an editable
install of this checkout), or fails with an error that names the cause.
"""

import os as _os
import sys as _sys

if __name__ == "fastattn":
    def _hand_over():
        import importlib

        here = _os.path.dirname(_os.path.abspath(__file__))
        parent = _os.path.dirname(here)

        def hides(entry):  # a sys.path entry that finds this folder as "fastattn"
            try:
                return _os.path.samefile(entry or _os.curdir, parent)
            except OSError:
                return False

        shim = _sys.modules.pop(__name__)
        saved = list(_sys.path)
        _sys.path[:] = [p for p in _sys.path if not hides(p)]
        try:
            real = importlib.import_module("fastattn")
        except ModuleNotFoundError as e:
            if e.name != "fastattn":
                raise
            real = None
        finally:
            _sys.path[:] = saved + [p for p in _sys.path if p not in saved]
        if real is None or getattr(real, "__file__", None) is None or \
                _os.path.abspath(getattr(real, "__file__", "")) == _os.path.abspath(__file__):
            _sys.modules[__name__] = shim
            raise ImportError(
                f"'import fastattn' found the source checkout {here} (Python looks in the current folder "
                f"{parent} first), and no installed fastattn for this Python ({_sys.executable}). Install it: "
                f"`make -C {here} install` and use {_os.path.join(here, '.venv', 'bin', 'python')}, or "
                f"`pip install -e {here}`; or run from another folder.", name="fastattn")
        _sys.modules[__name__] = real  # the import statement returns sys.modules["fastattn"]

    _hand_over()
    del _hand_over

"""Error classes. Each derives from the class fastattn documents (``ValueError``, ``TypeError``) **and**
from ``RuntimeError``, the class PyTorch's SDPA raises, so code written for either catches it."""

from __future__ import annotations


class InputError(ValueError, RuntimeError):
    """A bad argument (shape, device, value): the message names the argument and what is supported."""


class InputTypeError(TypeError, RuntimeError):
    """An argument of the wrong type or dtype."""


class BackendError(ValueError, RuntimeError):
    """No backend (or not the forced one) can run these inputs; the message lists every reason."""


__all__ = ["InputError", "InputTypeError", "BackendError"]

"""Transitional alias of :mod:`fastattn.runtime`'s extension loading (the FFN backends still import it)."""

from .runtime import cuda_device_reason, load_ext  # noqa: F401

"""Triton device code of fastattn (importable as ``fastattn.kernels``).

Only ``@triton.jit`` kernels, their helpers, named config lists and prune/heuristic functions live
here; torch allocation and launches live in ``fastattn.backends``. Importing a kernel module needs
Triton; importing this package does not.
"""

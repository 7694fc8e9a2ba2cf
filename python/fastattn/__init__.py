"""fastattn: fused Triton and CUDA C++ kernels for masked attention and the GELU feed-forward.

Public API (see ``shared/DESIGN.md``): :func:`attention` (a drop-in for
``torch.nn.functional.scaled_dot_product_attention``), :func:`gelu_ffn`, :func:`available_backends`,
:func:`explain`, :class:`KeyPadding`, and for Hugging Face models :func:`optimize` / :func:`revert`.
Importing fastattn registers the HF attention implementation ``"fastattn"`` when transformers is
installed.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import library as _library  # noqa: F401  (registers the fastattn:: custom ops)
from .dispatch import available_backends
from .masks import KeyPadding
from .ops import attention, explain, gelu_ffn

__all__ = ["attention", "gelu_ffn", "available_backends", "explain", "KeyPadding", "optimize", "revert",
           "__version__"]


def optimize(model, *, attention: bool = True, ffn: bool = True):
    """Swap fastattn into a Hugging Face model in place and return it (see fastattn.integrations)."""
    from .integrations import optimize as _optimize
    return _optimize(model, attention=attention, ffn=ffn)


def revert(model):
    """Undo :func:`optimize` exactly and return the model."""
    from .integrations import revert as _revert
    return _revert(model)


def _register_hf() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return
    try:
        from .integrations import register
    except ImportError:
        return
    register()


_register_hf()

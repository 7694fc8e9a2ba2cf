"""fastattn: fused Triton and CUDA C++ kernels for masked attention and the GELU feed-forward.

Public API (see ``shared/DESIGN.md``): :func:`attention` (a drop-in for
``torch.nn.functional.scaled_dot_product_attention``), :func:`attention_varlen` (packed sequences), :func:`gelu_ffn`, :func:`available_backends`,
:func:`explain`, :class:`KeyPadding`, and for Hugging Face models :func:`optimize` / :func:`revert`.
Importing fastattn registers the HF attention implementation ``"fastattn"`` when transformers is
installed (lazily: right after transformers is imported, without importing it; see
``fastattn.integrations.register_when_imported``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import attention as _attention_pkg  # noqa: F401  (attention ops and backends)
from . import ffn as _ffn_pkg  # noqa: F401  (fastattn:: FFN ops and backends, registered with fastattn.dispatch)
from .dispatch import available_backends
from .errors import BackendError, InputError, InputTypeError
from .masks import KeyPadding
from .attention.api import attention, explain  # (rebinds the name `attention` from the subpackage)
from .attention.varlen import attention_varlen, explain_varlen
from .ops import gelu_ffn

__all__ = ["attention", "attention_varlen", "explain_varlen", "gelu_ffn", "available_backends", "explain", "KeyPadding", "optimize", "revert",
           "InputError", "InputTypeError", "BackendError", "__version__"]


def optimize(model, *, attention: bool = True, ffn=True, unpad=True):
    """Swap fastattn into a Hugging Face model in place and return it (see fastattn.integrations).
    ``ffn=True`` swaps a feed-forward only where the fused path is at least as fast as the stock module on
    its device (so never on a CPU); ``ffn="always"`` swaps every supported one; ``describe`` says which.
    ``unpad=True``: BERT-family encoders run on the valid tokens only (pad positions of returned hidden
    states are 0) on CPU and for CUDA forwards without grad; ``unpad="always"`` also for CUDA training."""
    from .integrations import optimize as _optimize
    return _optimize(model, attention=attention, ffn=ffn, unpad=unpad)


def revert(model):
    """Undo :func:`optimize` exactly and return the model."""
    from .integrations import revert as _revert
    return _revert(model)


def _register_hf() -> None:
    # Lazy: registers "fastattn" with transformers right after transformers' modeling/masking modules are
    # imported (at once if they already are), so `import fastattn` does not pay for importing transformers.
    try:
        from .integrations import register_when_imported
        register_when_imported()
    except Exception as e:  # noqa: BLE001 - the HF integration must never break `import fastattn`
        import logging
        logging.getLogger("fastattn").warning(f"fastattn: HF attention registration not set up: {e}")


_register_hf()

"""Hugging Face transformers integration (the only place in fastattn that imports transformers).

Supported: transformers >= 5.17, < 6 (the ``AttentionInterface`` + ``AttentionMaskInterface`` API with
``q_offset``/``kv_offset`` mask factories, and ``PreTrainedModel.set_attn_implementation``).

* :func:`register` registers the attention implementation ``"fastattn"`` (attention function *and* mask
  function, see :mod:`fastattn.integrations.hf_attention`); ``import fastattn`` calls it, so
  ``from_pretrained(..., attn_implementation="fastattn")`` works.
* :func:`optimize` / :func:`revert` swap fastattn into a live model and back, exactly (see
  :mod:`fastattn.integrations.hf_optimize`).
* ``fastattn demo`` runs :mod:`fastattn.integrations.demo`.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("fastattn")

#: the transformers versions this integration is written and tested for
SUPPORTED_TRANSFORMERS = (">=5.17", "<6")
_MIN, _MAX_MAJOR = (5, 17), 6
_registered = False


def _version_tuple(v: str):
    parts = []
    for p in v.split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (2 - len(parts)))


def transformers_support() -> "str | None":
    """``None`` if the installed transformers is supported, else why not."""
    try:
        import transformers
    except ImportError:
        return "transformers is not installed"
    v = _version_tuple(transformers.__version__)
    if v < _MIN or v[0] >= _MAX_MAJOR:
        return (f"transformers {transformers.__version__} is not supported by fastattn's integration "
                f"(supported: {', '.join(SUPPORTED_TRANSFORMERS)})")
    return None


def check_transformers_version() -> None:
    why = transformers_support()
    if why is not None:
        raise RuntimeError(why)


def register() -> None:
    """Register ``"fastattn"`` with ``transformers.AttentionInterface`` and ``AttentionMaskInterface``.
    Idempotent. On an unsupported transformers version it logs why and registers nothing."""
    global _registered
    if _registered:
        return
    why = transformers_support()
    if why is not None:
        logger.debug(f"fastattn: HF attention not registered: {why}")
        return
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except Exception as e:  # noqa: BLE001 - a broken transformers install must not break `import fastattn`
        logger.warning(f"fastattn: HF attention not registered: importing transformers failed: {e}")
        return
    from .hf_attention import NAME, fastattn_attention_forward, fastattn_mask
    AttentionInterface.register(NAME, fastattn_attention_forward)
    AttentionMaskInterface.register(NAME, fastattn_mask)
    _registered = True


def optimize(model, *, attention: bool = True, ffn: bool = True):
    """Swap fastattn attention and feed-forward into a Hugging Face model in place; returns it."""
    from .hf_optimize import optimize as _optimize
    return _optimize(model, attention=attention, ffn=ffn)


def revert(model):
    """Undo :func:`optimize` exactly; returns the model."""
    from .hf_optimize import revert as _revert
    return _revert(model)


def describe(model):
    """Lines saying what :func:`optimize` swapped in this model and what it left alone."""
    from .hf_optimize import describe as _describe
    return _describe(model)


__all__ = ["register", "optimize", "revert", "describe", "SUPPORTED_TRANSFORMERS", "transformers_support"]

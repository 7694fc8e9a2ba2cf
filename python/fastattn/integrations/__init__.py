"""Hugging Face transformers integration (the only place in fastattn that imports transformers).

Supported: transformers >= 5.17, < 6 (the ``AttentionInterface`` + ``AttentionMaskInterface`` API with
``q_offset``/``kv_offset`` mask factories, and ``PreTrainedModel.set_attn_implementation``).

* :func:`register` registers the attention implementation ``"fastattn"`` (attention function *and* mask
  function, see :mod:`fastattn.integrations.hf_attention`). ``import fastattn`` calls
  :func:`register_when_imported`, which does the same lazily (right after transformers' ``modeling_utils``
  / ``masking_utils`` are imported, or at once if they are), so ``from_pretrained(...,
  attn_implementation="fastattn")`` works and ``import fastattn`` does not import transformers.
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
_registered_attention = False
_registered_mask = False


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


def _can_register(what: str) -> bool:
    why = transformers_support()
    if why is not None:
        logger.debug(f"fastattn: HF {what} not registered: {why}")
        return False
    return True


def _register_attention(_module=None) -> None:
    """``"fastattn"`` -> ``AttentionInterface`` (lives in ``transformers.modeling_utils``)."""
    global _registered_attention
    if _registered_attention or not _can_register("attention function"):
        return
    from transformers.modeling_utils import AttentionInterface

    from .hf_attention import NAME, fastattn_attention_forward
    AttentionInterface.register(NAME, fastattn_attention_forward)
    _registered_attention = True


def _register_mask(_module=None) -> None:
    """``"fastattn"`` -> ``AttentionMaskInterface`` (lives in ``transformers.masking_utils``)."""
    global _registered_mask
    if _registered_mask or not _can_register("mask function"):
        return
    from transformers.masking_utils import AttentionMaskInterface

    from .hf_attention import NAME, fastattn_mask
    AttentionMaskInterface.register(NAME, fastattn_mask)
    _registered_mask = True


def register() -> None:
    """Register ``"fastattn"`` with ``transformers.AttentionInterface`` and ``AttentionMaskInterface`` now
    (imports transformers' modeling code). Idempotent. On an unsupported transformers version it logs why
    and registers nothing."""
    if transformers_support() is not None:
        _can_register("attention")
        return
    try:
        _register_mask()
        _register_attention()
    except Exception as e:  # noqa: BLE001 - a broken transformers install must not break `import fastattn`
        logger.warning(f"fastattn: HF attention not registered: importing transformers failed: {e}")


def register_when_imported() -> None:
    """What ``import fastattn`` does: register each half of ``"fastattn"`` as soon as the transformers module
    holding its registry is imported -- at once if it already is, else right after its import (a post-import
    hook, see :mod:`fastattn._post_import`), so ``import fastattn`` never imports transformers.
    Both registries are filled before any model can use them: the mask registry is read by
    ``masking_utils`` itself and the attention registry by ``modeling_utils`` (``from_pretrained``,
    ``set_attn_implementation``). A registration that fails is logged; the import always proceeds."""
    from .._post_import import when_imported
    when_imported("transformers.masking_utils", _register_mask)
    when_imported("transformers.modeling_utils", _register_attention)


def optimize(model, *, attention: bool = True, ffn=True, unpad: bool = True):
    """Swap fastattn attention and feed-forward into a Hugging Face model in place (and unpad BERT-family
    encoders); returns it."""
    from .hf_optimize import optimize as _optimize
    return _optimize(model, attention=attention, ffn=ffn, unpad=unpad)


def revert(model):
    """Undo :func:`optimize` exactly; returns the model."""
    from .hf_optimize import revert as _revert
    return _revert(model)


def describe(model):
    """Lines saying what :func:`optimize` swapped in this model and what it left alone."""
    from .hf_optimize import describe as _describe
    return _describe(model)


__all__ = ["register", "register_when_imported", "optimize", "revert", "describe", "SUPPORTED_TRANSFORMERS", "transformers_support"]

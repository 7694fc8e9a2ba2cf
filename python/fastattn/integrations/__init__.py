"""Hugging Face transformers integration (the only place that imports transformers).

Placeholder until issue #6 lands: :func:`register` does nothing yet and :func:`optimize` raises.
"""


def register() -> None:
    return None


def optimize(model, *, attention: bool = True, ffn: bool = True):
    raise NotImplementedError("fastattn.optimize lands with the Hugging Face integration (issue #6)")


def revert(model):
    raise NotImplementedError("fastattn.revert lands with the Hugging Face integration (issue #6)")

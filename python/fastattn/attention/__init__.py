"""The attention op: public functions (:mod:`.api`), the plan (:mod:`.plan`), the ``fastattn::attn_fwd`` /
``fastattn::attn_bwd`` custom ops (:mod:`.custom_ops`) and the backends (:mod:`.backends`: cuda, triton,
torch). Importing this package registers the ops and the backends."""

from . import custom_ops  # noqa: F401  (registers fastattn::attn_fwd / attn_bwd)
from . import backends  # noqa: F401  (registers the backends with fastattn.dispatch)

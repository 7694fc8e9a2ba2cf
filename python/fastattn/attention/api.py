"""Public attention functions: :func:`attention` (a drop-in for SDPA), :func:`explain`, and
:func:`attention_normalized` for integrations that already hold normalised inputs.

Each call is ``normalize -> plan (cached per signature) -> plan.run``. A call whose signature (every
metadata the validation and the dispatch read: shapes, strides, dtypes, devices, the mask's metadata,
argument types, the grad state, the requested backend) was seen before and was served by PyTorch's
SDPA with identical semantics skips both: it checks the two argument *values* that validation reads
(``dropout_p``, ``scale``) and calls SDPA. That keeps ``fastattn.attention`` within a few microseconds of
SDPA on CPU, where the torch backend runs.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .. import dispatch
from ..runtime import getenv, interpreting
from ..dispatch import ENV_VAR
from ..inputs import normalize_attention
from ..masks import KeyPadding
from .backends.torch import _sdpa_mask, sdpa_zeroes_empty_rows
from .plan import plan_for

#: call signatures that SDPA serves as is (see the module docstring)
_DIRECT: Dict[tuple, bool] = {}
_MAX_DIRECT = 4096
#: the subset of :data:`_DIRECT` with SDPA's default arguments, under a shorter key
_PLAIN: Dict[tuple, bool] = {}
_grad_enabled = torch.is_grad_enabled
_is_compiling = torch.compiler.is_compiling
_Tensor = torch.Tensor
_sdpa = F.scaled_dot_product_attention


def _call_signature(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa, backend):
    """The key of :data:`_DIRECT`, or ``()`` for calls that never take the direct path. Strides are
    left out: on the direct path (CPU tensors, no Triton interpreter) only the torch backend can run,
    and neither the validation nor SDPA depends on them."""
    if type(q) is not _Tensor or type(k) is not _Tensor or type(v) is not _Tensor:
        return ()  # never in _DIRECT
    if attn_mask is None:
        mm = None
    elif type(attn_mask) is _Tensor:
        mm = (attn_mask.shape, attn_mask.dtype, attn_mask.device, attn_mask.requires_grad)
    elif type(attn_mask) is KeyPadding and q.dim() == 4:
        t = attn_mask.mask if attn_mask.lengths is None else attn_mask.lengths
        mm = (KeyPadding, attn_mask.lengths is None, t.shape, t.dtype, t.device, attn_mask.causal)
    else:
        return ()
    if type(dropout_p) is not float and type(dropout_p) is not int:
        return ()
    if scale is not None and type(scale) is not float and type(scale) is not int:
        return ()
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return (q.shape, k.shape, v.shape, q.dtype, k.dtype, v.dtype, q.device, k.device, v.device, mm,
            type(dropout_p), dropout_p > 0, type(is_causal), is_causal, type(scale), scale is None or scale > 0,
            enable_gqa, grad, backend, getenv(ENV_VAR), getenv("TRITON_INTERPRET"))


def _served_by_sdpa_as_is(inp, plan, attn_mask, is_causal, scale) -> bool:
    if plan.backend.name != "torch" or interpreting() or not sdpa_zeroes_empty_rows(inp.device, inp.dtype):
        return False
    if attn_mask is not None and attn_mask.dtype not in (torch.bool, inp.dtype):
        return False  # a float32 bias on half inputs is clamped and cast by the torch backend
    if is_causal and scale is not None and scale <= 0:
        return False  # SDPA's is_causal shortcut is NaN for scale <= 0
    return True

__all__ = ["attention", "explain", "attention_normalized"]


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask=None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
              enable_gqa: bool = False, *, backend: Optional[str] = None) -> torch.Tensor:
    r"""Drop-in for :func:`torch.nn.functional.scaled_dot_product_attention`.

    Shapes: ``query (..., Hq, Lq, E)``, ``key (..., Hkv, Lk, E)``, ``value (..., Hkv, Lk, Ev)``
    (3-D ``(N, L, E)`` and 2-D ``(L, E)`` work too); returns a contiguous ``(..., Hq, Lq, Ev)`` tensor.
    dtypes float16, bfloat16, float32 (float32 computed to float32 accuracy, never TF32); float64 on
    the ``torch`` backend. Any strides with a contiguous last dim are read in place.

    ``attn_mask``:

    * bool tensor, ``True`` = may attend; float tensor (query dtype or float32): added to the scaled
      scores; either broadcastable to ``(..., Hq, Lq, Lk)`` (stride-0 broadcast is never copied);
    * ``torch.nn.attention.bias.causal_upper_left(Lq, Lk)`` / ``causal_lower_right(Lq, Lk)``;
    * :class:`fastattn.KeyPadding` (per-sequence lengths or a ``(B, Lk)`` bool key mask, optionally
      causal): the compact form fused kernels skip padded blocks with.

    ``is_causal=True`` is top-left aligned, exactly as SDPA (row ``i`` sees keys ``j <= i``); bottom-right
    (``j <= i + Lk - Lq``, KV-cache decode) is asked for with ``causal_lower_right`` or
    ``KeyPadding(..., causal="bottom_right")``::

        is_causal=True, Lq=2, Lk=4      causal_lower_right(2, 4)
        1 0 0 0                         1 1 1 0
        1 1 0 0                         1 1 1 1

    A query row with no visible key returns exactly 0 (never NaN). ``scale=None`` is ``1/sqrt(E)``.
    ``enable_gqa=True``: query head ``h`` uses KV head ``h // (Hq // Hkv)``.

    ``backend``: ``None``/``"auto"`` picks the first of ``cuda``, ``triton``, ``torch`` that supports the
    inputs (with gradients or dropout: the first with a fused backward / in-kernel dropout); a name
    forces one and raises :class:`~fastattn.errors.BackendError` (a ``ValueError`` and a
    ``RuntimeError``) listing every reason it cannot run them. The
    environment variable ``FASTATTN_BACKEND`` does the same globally; :func:`fastattn.explain` shows the
    decision. Equivalent PyTorch (up to the empty-row rule)::

        F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                       enable_gqa=enable_gqa)
    """
    if attn_mask is None and dropout_p == 0.0 and scale is None and is_causal is False and enable_gqa is False \
            and backend is None and type(query) is _Tensor and type(key) is _Tensor and type(value) is _Tensor \
            and not _is_compiling():
        # the plainest call, SDPA's defaults: a shorter key, no argument checks to repeat
        plain = (query.shape, key.shape, value.shape, query.dtype, key.dtype, value.dtype, query.device,
                 key.device, value.device,
                 _grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad),
                 getenv(ENV_VAR), getenv("TRITON_INTERPRET"))
        if plain in _PLAIN:
            return _sdpa(query, key, value)
    else:
        plain = None
    sig = None
    if not torch.compiler.is_compiling():
        sig = _call_signature(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, backend)
        if sig in _DIRECT and 0.0 <= dropout_p < 1.0 and (scale is None or math.isfinite(scale)):
            if attn_mask is None and not dropout_p and not is_causal and scale is None and not enable_gqa:
                return _sdpa(query, key, value)  # the most common call, without argument parsing
            if type(attn_mask) is not KeyPadding:
                return _sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
            c = attn_mask.__dict__.get("_fastattn_sdpa")
            t = attn_mask.mask if attn_mask.lengths is None else attn_mask.lengths
            if c is not None and c[0] is t and c[1] == (t._version, query.shape[2], key.shape[2],
                                                         torch.is_inference_mode_enabled()):
                return _sdpa(query, key, value, c[2], dropout_p, c[3], scale=scale, enable_gqa=enable_gqa)
    inp = normalize_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    plan = plan_for(inp, backend)
    out = plan.run(inp).reshape(inp.out_shape)
    if sig:
        if type(attn_mask) is KeyPadding:
            direct = _keypadding_as_sdpa(inp, plan, attn_mask)
        else:
            direct = _served_by_sdpa_as_is(inp, plan, attn_mask, is_causal, scale)
        if direct:
            if len(_DIRECT) >= _MAX_DIRECT:
                _DIRECT.clear()
                _PLAIN.clear()
            _DIRECT[sig] = True
            if plain is not None:
                _PLAIN[plain] = True
    return out


def _keypadding_as_sdpa(inp, plan, kp) -> bool:
    """A ``KeyPadding`` call the torch backend served with one SDPA call on a mask it built (no empty-row
    fix-up needed): remember that mask on the user's ``KeyPadding`` object, keyed by the tensor object,
    its in-place version counter, (Lq, Lk) and inference mode, so that a repeat of the call is one SDPA call."""
    if plan.backend.name != "torch" or interpreting():
        return False
    attn_mask, is_causal, row_has = _sdpa_mask(inp)
    if row_has is not None or (is_causal and inp.scale <= 0):
        return False
    t = kp.mask if kp.lengths is None else kp.lengths
    kp.__dict__["_fastattn_sdpa"] = (t, (t._version, inp.Lq, inp.Lk, torch.is_inference_mode_enabled()),
                                     attn_mask, is_causal)  # (an inference-mode mask never meets autograd)
    return True


def explain(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
            scale: Optional[float] = None, enable_gqa: bool = False, *, backend: Optional[str] = None) -> str:
    """Which backend ``fastattn.attention`` would pick for these arguments, and why each other one
    was passed over. Runs nothing."""
    inp = normalize_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    table = dispatch.explain("attention", inp, backend)
    chosen = next((n for n, r in table.items() if not r), None)
    lines = [f"attention {inp.describe()} -> {chosen or 'no backend'}"]
    for n, r in table.items():
        lines.append(f"  {n}: " + ("supported" if not r else "; ".join(r)))
    return "\n".join(lines)


def clear_direct() -> None:
    _DIRECT.clear()
    _PLAIN.clear()


dispatch.on_reset(clear_direct)


def attention_normalized(inp, backend: Optional[str] = None, out_blhd: bool = False) -> torch.Tensor:
    """Internal entry for integrations that already hold :class:`~fastattn.inputs.AttentionInputs`
    (e.g. HF with a compact key mask): returns ``(B, Hq, Lq, Ev)``, laid out ``(B, Lq, Hq, Ev)`` in
    memory when ``out_blhd`` (so ``.transpose(1, 2)`` is HF's output with no copy)."""
    return plan_for(inp, backend).run(inp, out_blhd)

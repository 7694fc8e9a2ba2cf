"""Validation and normalisation of ``fastattn.attention`` arguments (the FFN's are in
:mod:`fastattn.ffn.problem`).

Everything the public function accepts is checked here once, with errors that name the argument;
backends receive :class:`AttentionInputs` and never re-validate user input.
No tensor data is copied here: q/k/v become 4-D *views* and masks become broadcast *views*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from .errors import InputError, InputTypeError

from .masks import KeyPadding, NormalizedMask

_CAUSAL_BIAS = None  # (CausalBias, CausalVariant), imported on first use: the module pulls in dynamo (~1 s)


def _causal_bias_types():
    global _CAUSAL_BIAS
    if _CAUSAL_BIAS is None:
        from torch.nn.attention.bias import CausalBias, CausalVariant
        _CAUSAL_BIAS = (CausalBias, CausalVariant)
    return _CAUSAL_BIAS

ATTN_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class AttentionInputs:
    """Normalised attention call. ``query`` is ``(B, Hq, Lq, E)``, ``key`` ``(B, Hkv, Lk, E)``,
    ``value`` ``(B, Hkv, Lk, Ev)``: views of the caller's tensors (leading dims flattened into B,
    3-D inputs get B=1), strides untouched. ``out_shape`` is the shape the caller gets back."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: NormalizedMask
    dropout_p: float
    scale: float
    out_shape: Tuple[int, ...]
    lead_shape: Tuple[int, ...] = field(default=())

    @property
    def B(self) -> int: return self.query.shape[0]
    @property
    def Hq(self) -> int: return self.query.shape[1]
    @property
    def Hkv(self) -> int: return self.key.shape[1]
    @property
    def Lq(self) -> int: return self.query.shape[2]
    @property
    def Lk(self) -> int: return self.key.shape[2]
    @property
    def E(self) -> int: return self.query.shape[3]
    @property
    def Ev(self) -> int: return self.value.shape[3]
    @property
    def dtype(self) -> torch.dtype: return self.query.dtype
    @property
    def device(self) -> torch.device: return self.query.device

    @property
    def requires_grad(self) -> bool:
        return torch.is_grad_enabled() and (
            self.query.requires_grad or self.key.requires_grad or self.value.requires_grad
            or (self.mask.dense is not None and self.mask.dense.requires_grad))

    def describe(self) -> str:
        """Readable case name, e.g. ``b2-h6/2-q113-k203-d80-float16-causal_bottom_right``."""
        d = f"d{self.E}" if self.E == self.Ev else f"d{self.E}v{self.Ev}"
        return (f"b{self.B}-h{self.Hq}/{self.Hkv}-q{self.Lq}-k{self.Lk}-{d}-"
                f"{str(self.dtype).replace('torch.', '')}-{self.mask.describe()}")


def _check_tensor(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < 2:
        raise InputError(f"{name} must have at least 2 dims (..., L, E); got a {t.dim()}-dim tensor "
                         f"of shape {tuple(t.shape)}")
    if t.dtype not in ATTN_DTYPES:
        raise InputTypeError(f"{name} has dtype {t.dtype}; supported: float16, bfloat16, float32 "
                        "(float64 on the torch backend)")
    return t


def _to_4d(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4:
        return t
    if t.dim() == 3:
        return t.unsqueeze(0)
    if t.dim() == 2:
        return t.unsqueeze(0).unsqueeze(0)
    # (B1, B2, ..., H, L, E): flatten the batch dims; a view whenever the strides allow it (the one
    # documented copy: batch dims whose strides cannot merge, e.g. a permuted 5-D tensor).
    return t.flatten(0, t.dim() - 4)


def normalize_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                        scale: Optional[float] = None, enable_gqa: bool = False) -> AttentionInputs:
    q = _check_tensor("query", query)
    k = _check_tensor("key", key)
    v = _check_tensor("value", value)
    if not (q.dim() == k.dim() == v.dim()):
        raise InputError(f"query, key and value must have the same number of dims; got {q.dim()}, {k.dim()}, {v.dim()}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InputTypeError(f"query, key and value must have the same dtype; got query {q.dtype}, key {k.dtype}, "
                        f"value {v.dtype}")
    if not (q.device == k.device == v.device):
        raise InputError(f"query, key and value must be on the same device; got query {q.device}, key {k.device}, "
                         f"value {v.device}")
    if q.shape[-1] != k.shape[-1]:
        raise InputError(f"head dim mismatch: query has E={q.shape[-1]} but key has E={k.shape[-1]}; "
                         "query and key must share the last dim")
    if k.shape[-2] != v.shape[-2]:
        raise InputError(f"key has Lk={k.shape[-2]} positions but value has {v.shape[-2]}; they must match")
    if q.dim() >= 3:
        if k.shape[-3] != v.shape[-3]:
            raise InputError(f"key has {k.shape[-3]} heads but value has {v.shape[-3]}; they must match")
        if q.shape[:-3] != k.shape[:-3] or k.shape[:-3] != v.shape[:-3]:
            raise InputError(f"batch dims differ: query {tuple(q.shape[:-3])}, key {tuple(k.shape[:-3])}, "
                             f"value {tuple(v.shape[:-3])}")
        hq, hkv = q.shape[-3], k.shape[-3]
        if hq != hkv:
            if not enable_gqa:
                raise InputError(f"query has {hq} heads but key/value have {hkv}; pass enable_gqa=True for "
                                 "grouped-query attention, or give all three the same head count")
            if hkv == 0 or hq % hkv != 0:
                raise InputError(f"enable_gqa=True needs query heads divisible by key/value heads; "
                                 f"got Hq={hq}, Hkv={hkv} (Hq % Hkv = {hq % hkv if hkv else 'undefined'})")
    if not isinstance(dropout_p, (int, float)) or not (0.0 <= float(dropout_p) < 1.0):
        raise InputError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if scale is None:
        scale_f = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] > 0 else 1.0
    else:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise InputTypeError(f"scale must be None or a float, got {type(scale).__name__}")
        scale_f = float(scale)
        if not math.isfinite(scale_f):
            raise InputError(f"scale must be finite, got {scale!r}")
    if not isinstance(is_causal, bool):
        raise InputTypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    if is_causal and attn_mask is not None:
        if isinstance(attn_mask, _causal_bias_types()[0]):  # PyTorch's own words (its tests match them)
            raise InputError("CausalBias should not be used with causal=True: the CausalBias already is the causal "
                             "mask (pass is_causal=False)")
        raise InputError("is_causal=True cannot be combined with attn_mask (as in SDPA); for bottom-right "
                         "causal pass attn_mask=causal_lower_right(Lq, Lk), or KeyPadding(..., causal=...)")

    lead = tuple(q.shape[:-3]) if q.dim() >= 3 else ()
    q4, k4, v4 = _to_4d(q), _to_4d(k), _to_4d(v)
    B, Hq, Lq, _ = q4.shape
    Lk = k4.shape[2]
    out_shape = tuple(q.shape[:-1]) + (v.shape[-1],)
    mask = _normalize_mask(attn_mask, q, q4, Lq, Lk, is_causal)
    return AttentionInputs(q4, k4, v4, mask, float(dropout_p), scale_f, out_shape, lead)


def _normalize_mask(attn_mask, q, q4, Lq, Lk, is_causal) -> NormalizedMask:
    B, Hq = q4.shape[0], q4.shape[1]
    if attn_mask is None:
        return NormalizedMask(causal="top_left" if is_causal else None)
    # CausalBias is a tensor subclass: test for it before the plain-tensor branch
    if isinstance(attn_mask, torch.Tensor) and type(attn_mask) is not torch.Tensor \
            and isinstance(attn_mask, _causal_bias_types()[0]):
        CausalVariant = _causal_bias_types()[1]
        if attn_mask.seq_len_q != Lq or attn_mask.seq_len_kv != Lk:
            raise InputError(f"attn_mask is a CausalBias for Lq={attn_mask.seq_len_q}, Lk={attn_mask.seq_len_kv} "
                             f"but the inputs have Lq={Lq}, Lk={Lk}")
        variant = "top_left" if attn_mask.variant == CausalVariant.UPPER_LEFT else "bottom_right"
        return NormalizedMask(causal=variant)
    if isinstance(attn_mask, KeyPadding):
        dev = q.device
        if attn_mask.lengths is not None:
            if attn_mask.lengths.shape != (B,):
                raise InputError(f"attn_mask KeyPadding.lengths must have shape (B,) = ({B},), "
                                 f"got {tuple(attn_mask.lengths.shape)}")
            if attn_mask.lengths.device != dev:
                raise InputError(f"attn_mask KeyPadding.lengths is on {attn_mask.lengths.device}, inputs on {dev}")
            return NormalizedMask(causal=attn_mask.causal, key_lengths=attn_mask.lengths)
        if attn_mask.mask.shape != (B, Lk):
            raise InputError(f"attn_mask KeyPadding.mask must have shape (B, Lk) = ({B}, {Lk}), "
                             f"got {tuple(attn_mask.mask.shape)}")
        if attn_mask.mask.device != dev:
            raise InputError(f"attn_mask KeyPadding.mask is on {attn_mask.mask.device}, inputs on {dev}")
        return NormalizedMask(causal=attn_mask.causal, key_mask=attn_mask.mask)
    if not isinstance(attn_mask, torch.Tensor):
        raise InputTypeError(f"attn_mask must be None, a bool/float tensor, a CausalBias or a fastattn.KeyPadding; "
                        f"got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool and not (attn_mask.dtype == q.dtype or attn_mask.dtype == torch.float32):
        raise InputTypeError(f"attn_mask has dtype {attn_mask.dtype}; supported: bool (True = attend) or a float "
                        f"mask in the query dtype ({q.dtype}) or float32, added to the scores")
    if attn_mask.device != q.device:
        raise InputError(f"attn_mask is on {attn_mask.device} but query is on {q.device}")
    if attn_mask.dim() == 0:
        raise InputError("attn_mask must have at least 1 dim and broadcast to (..., Hq, Lq, Lk)")
    full = tuple(q.shape[:-1]) + (Lk,)  # (*lead, Hq, Lq, Lk) in the caller's dims
    ms = tuple(attn_mask.shape)
    # right-aligned broadcast check (torch.broadcast_shapes costs ~10 us a call)
    if len(ms) > len(full) or any(m != 1 and m != f for m, f in zip(reversed(ms), reversed(full))):
        raise InputError(f"attn_mask of shape {ms} does not broadcast to (batch..., Hq, Lq, Lk) = {full}")
    dense = attn_mask.expand(full)
    if dense.dim() != 4:
        try:
            dense = dense.view(B, Hq, Lq, Lk)
        except RuntimeError:
            # extra batch dims whose strides cannot merge (a mask broadcast over some of them only):
            # materialise the batch dims alone; the head/Lq/Lk broadcasts stay stride 0
            m = attn_mask.reshape((1,) * (len(full) - len(ms)) + ms)
            tail = tuple(m.shape[-3:])
            dense = m.expand(full[:-3] + tail).reshape((B,) + tail).expand(B, Hq, Lq, Lk)
    return NormalizedMask(dense=dense)


# ------------------------------------------------------------------------------------------- varlen
_CU_DTYPES = (torch.int32, torch.int64)


@dataclass
class VarlenInputs:
    """Normalised ``attention_varlen`` call: ``query (total_q, Hq, E)``, ``key (total_k, Hkv, E)``,
    ``value (total_k, Hkv, Ev)`` (the caller's tensors, strides untouched), ``cu_seqlens_q/k`` ``(B+1,)``
    integer tensors on their device, ``max_seqlen_q/k`` Python ints."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int
    causal: bool
    dropout_p: float
    scale: float

    @property
    def B(self) -> int: return self.cu_seqlens_q.shape[0] - 1
    @property
    def Hq(self) -> int: return self.query.shape[1]
    @property
    def Hkv(self) -> int: return self.key.shape[1]
    @property
    def E(self) -> int: return self.query.shape[2]
    @property
    def Ev(self) -> int: return self.value.shape[2]
    @property
    def dtype(self) -> torch.dtype: return self.query.dtype
    @property
    def device(self) -> torch.device: return self.query.device

    @property
    def requires_grad(self) -> bool:
        return torch.is_grad_enabled() and (
            self.query.requires_grad or self.key.requires_grad or self.value.requires_grad)

    def describe(self) -> str:
        d = f"d{self.E}" if self.E == self.Ev else f"d{self.E}v{self.Ev}"
        return (f"varlen-b{self.B}-h{self.Hq}/{self.Hkv}-tq{self.query.shape[0]}-tk{self.key.shape[0]}-"
                f"maxq{self.max_seqlen_q}-maxk{self.max_seqlen_k}-{d}-{str(self.dtype).replace('torch.', '')}"
                f"{'-causal_bottom_right' if self.causal else ''}")


def _check_cu(name: str, cu, device: torch.device) -> torch.Tensor:
    if not isinstance(cu, torch.Tensor):
        raise InputTypeError(f"{name} must be an int32 tensor of shape (B+1,), got {type(cu).__name__}")
    if cu.dtype not in _CU_DTYPES:
        raise InputTypeError(f"{name} has dtype {cu.dtype}; it must be an integer tensor (int32, as "
                             "FlashAttention's cu_seqlens, or int64)")
    if cu.dim() != 1 or cu.shape[0] < 1:
        raise InputError(f"{name} must be 1-D of shape (B+1,) (cumulative sequence lengths starting at 0); "
                         f"got shape {tuple(cu.shape)}")
    if cu.device != device:
        raise InputError(f"{name} is on {cu.device} but query is on {device}; cu_seqlens live on the tensors' device")
    return cu


def _check_cu_values(name: str, cu: torch.Tensor, total: int, max_seqlen: int, max_name: str) -> None:
    """Value checks (CPU tensors always; any device with ``FASTATTN_DEBUG=1``: they read the values)."""
    vals = cu.tolist()
    if vals[0] != 0:
        raise InputError(f"{name}[0] must be 0, got {vals[0]}")
    if vals[-1] != total:
        raise InputError(f"{name}[-1] must equal the number of packed rows ({total}), got {vals[-1]}")
    lens = [b - a for a, b in zip(vals[:-1], vals[1:])]
    bad = next((i for i, n in enumerate(lens) if n < 0), None)
    if bad is not None:
        raise InputError(f"{name} must be non-decreasing; {name}[{bad + 1}]={vals[bad + 1]} < "
                         f"{name}[{bad}]={vals[bad]}")
    if lens and max(lens) > max_seqlen:
        raise InputError(f"{max_name}={max_seqlen} is smaller than the longest sequence in {name} ({max(lens)})")


def normalize_varlen(query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                     dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                     enable_gqa: bool = False) -> VarlenInputs:
    from .runtime import getenv
    q = _check_tensor("query", query)
    k = _check_tensor("key", key)
    v = _check_tensor("value", value)
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.dim() != 3:
            raise InputError(f"{name} must be 3-D packed (total, H, E) as in flash_attn_varlen_func; got shape "
                             f"{tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise InputTypeError(f"query, key and value must have the same dtype; got query {q.dtype}, key {k.dtype}, "
                             f"value {v.dtype}")
    if not (q.device == k.device == v.device):
        raise InputError(f"query, key and value must be on the same device; got query {q.device}, key {k.device}, "
                         f"value {v.device}")
    if q.shape[2] != k.shape[2]:
        raise InputError(f"head dim mismatch: query has E={q.shape[2]} but key has E={k.shape[2]}; "
                         "query and key must share the last dim")
    if k.shape[0] != v.shape[0]:
        raise InputError(f"key has total_k={k.shape[0]} rows but value has {v.shape[0]}; they must match")
    if k.shape[1] != v.shape[1]:
        raise InputError(f"key has {k.shape[1]} heads but value has {v.shape[1]}; they must match")
    hq, hkv = q.shape[1], k.shape[1]
    if hq != hkv:
        if not enable_gqa:
            raise InputError(f"query has {hq} heads but key/value have {hkv}; pass enable_gqa=True for "
                             "grouped-query attention, or give all three the same head count")
        if hkv == 0 or hq % hkv != 0:
            raise InputError(f"enable_gqa=True needs query heads divisible by key/value heads; "
                             f"got Hq={hq}, Hkv={hkv} (Hq % Hkv = {hq % hkv if hkv else 'undefined'})")
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise InputError(f"{name} must have a contiguous last dim (stride 1); got strides {tuple(t.stride())}")
    cq = _check_cu("cu_seqlens_q", cu_seqlens_q, q.device)
    ck = _check_cu("cu_seqlens_k", cu_seqlens_k, q.device)
    if cq.shape[0] != ck.shape[0]:
        raise InputError(f"cu_seqlens_q has {cq.shape[0]} entries but cu_seqlens_k has {ck.shape[0]}; both are "
                         "(B+1,) for the same B sequences")
    for name, m in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(m, bool) or not isinstance(m, int):
            raise InputTypeError(f"{name} must be a Python int (an upper bound of the sequence lengths, used for "
                                 f"grid sizing), got {type(m).__name__}")
        if m < 0:
            raise InputError(f"{name} must be >= 0, got {m}")
    if not isinstance(dropout_p, (int, float)) or isinstance(dropout_p, bool) or not (0.0 <= float(dropout_p) < 1.0):
        raise InputError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if not isinstance(is_causal, bool):
        raise InputTypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    if scale is None:
        scale_f = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] > 0 else 1.0
    else:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise InputTypeError(f"scale must be None or a float, got {type(scale).__name__}")
        scale_f = float(scale)
        if not math.isfinite(scale_f):
            raise InputError(f"scale must be finite, got {scale!r}")
    if q.device.type == "cpu" or getenv("FASTATTN_DEBUG") == "1":
        _check_cu_values("cu_seqlens_q", cq, q.shape[0], max_seqlen_q, "max_seqlen_q")
        _check_cu_values("cu_seqlens_k", ck, k.shape[0], max_seqlen_k, "max_seqlen_k")
    return VarlenInputs(q, k, v, cq, ck, int(max_seqlen_q), int(max_seqlen_k), is_causal, float(dropout_p), scale_f)

"""The ``cuda`` backend of ``attention``: the hand-written CUDA C++ flash-attention forward
(``csrc/attention/``, entry points ``fastattn._C.AttnFwdParams`` and ``fastattn._C.attn_fwd``).

What it runs: fp16 and bf16 on GPUs of compute capability >= 8.0 (``mma.sync`` m16n8k16 tensor cores,
``ldmatrix``, ``cp.async`` double-buffered K/V tiles, online softmax in registers); head dims 32, 64,
80, 96, 128, 256 with ``E == Ev``; GQA/MQA by index (query head ``h`` reads KV head
``h // (Hq // Hkv)``); no mask, causal top-left and bottom-right (key ``j`` visible from row ``i`` iff
``j <= i + Lk - Lq``), key padding as per-batch lengths or a ``(B, Lk)`` bool key mask (its
``[first, last + 1)`` range bounds the key loop, the bits mask inside), combined with causal. q/k/v and
``out`` are read/written in place through their strides (last dim contiguous, base pointers and the
strides of non-trivial dims 16-byte aligned). Rows with no visible key give exactly 0 and LSE ``-inf``.

What it leaves to other backends (reasons from :meth:`CudaAttention.not_supported_reasons`): float32 /
float64, dense bool or float masks, dropout, ``E != Ev``, other head dims, unaligned inputs, CPU tensors.
Forward only: autograd goes through the recompute backward of the ``fastattn::attn_fwd`` custom op.

Equivalent PyTorch (``keep`` = causal AND key padding; empty rows -> 0)::

    s = (q @ k.transpose(-2, -1)) * scale          # k, v expanded to Hq heads
    p = softmax(s.masked_fill(~keep, -inf), -1)
    out = p @ v
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from ...masks import CAUSAL_CODES
from ...runtime import cuda_device_reason, device_guard, device_info, load_ext
from .base import AttnBackend
from .triton import DECODE_MAX_LQ  # the Triton decode path (GQA-packed, split-KV) serves these

_DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1}
#: head dims compiled into ``fastattn._C`` (the built extension's own list wins when it loads)
DEFAULT_HEAD_DIMS = (32, 64, 80, 96, 128, 256)
BLOCK_M = 64          # query rows per CTA (csrc/attention/params.h: attn_fwd_block_m)
MAX_GRID_Y = 65535    # query blocks per (batch, head)
INT32_MAX = 2 ** 31 - 1
ALIGN_BYTES = 16      # cp.async / ldmatrix / 16-byte vector stores


def arch_covered(capability: Tuple[int, int], archs: str) -> bool:
    """Whether a build for ``archs`` (e.g. ``"sm_80;sm_90a"``, SASS only, no PTX) has code that runs on
    a GPU of ``capability``: ``sm_XY`` runs on major ``X`` with minor ``>= Y``; ``sm_XYa`` only on
    exactly ``X.Y``."""
    major, minor = capability
    for a in archs.replace(",", ";").split(";"):
        a = a.strip()
        if a.startswith("sm_"):
            a = a[3:]
        exact = a.endswith("a")
        digits = a.rstrip("af")
        if not digits.isdigit():
            continue
        amaj, amin = divmod(int(digits), 10)
        if exact and (amaj, amin) == (major, minor):
            return True
        if not exact and amaj == major and amin <= minor:
            return True
    return False


def _alignment_reasons(name: str, t: torch.Tensor) -> List[str]:
    """cp.async/ldmatrix need a contiguous last dim, a 16-byte aligned base and 16-byte multiples as
    strides of every dim that has more than one index."""
    reasons = []
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        reasons.append(f"{name} has last-dim stride {t.stride(-1)}; the cuda kernel needs a contiguous last dim")
    if torch.compiler.is_compiling():
        # data_ptr() cannot be traced; caching-allocator blocks are 512-byte aligned, so the storage
        # offset decides (the binding re-checks the real address at run time and raises ValueError)
        mis = (t.storage_offset() * t.element_size()) % ALIGN_BYTES
    else:
        mis = t.data_ptr() % ALIGN_BYTES
    if mis != 0:
        reasons.append(f"{name}.data_ptr() is not {ALIGN_BYTES}-byte aligned (address % 16 = {mis}); the cuda "
                       "kernel loads 16-byte chunks with cp.async")
    per_chunk = ALIGN_BYTES // t.element_size()
    bad = [f"stride({d})={t.stride(d)}" for d in range(3) if t.shape[d] > 1 and t.stride(d) % per_chunk != 0]
    if bad:
        reasons.append(f"{name} has {', '.join(bad)} not a multiple of {per_chunk} elements (16 bytes), which "
                       "the cuda kernel's 16-byte cp.async loads need")
    return reasons


class CudaAttention(AttnBackend):
    name = "cuda"
    DTYPES = tuple(_DTYPE_CODES)
    DTYPE_HINT = " (float32/float64 need full-precision math: the triton or torch backend)"
    DEVICES = ("cuda",)
    MIN_CAPABILITY = (8, 0)
    MASK_PARTS = frozenset({"causal", "key_lengths", "key_mask"})
    MASK_HINT = " (it takes causal and key padding: pass fastattn.KeyPadding / CausalBias instead)"
    DIFFERENT_VALUE_DIM = False

    def __init__(self) -> None:
        super().__init__()
        self._facts: Optional[Tuple[str, Tuple[int, ...]]] = None

    # ------------------------------------------------------------------------------ availability
    def probe(self) -> Optional[str]:
        ext, why = load_ext()
        if ext is None:
            return why
        info = ext.build_info()
        if "attention" not in info.get("components", ()) or not hasattr(ext, "attn_fwd"):
            return ("fastattn._C was built without the attention component (csrc/attention); rebuild with "
                    "`python setup.py build_ext --inplace`")
        why = cuda_device_reason()
        if why is not None:
            return why
        cap = torch.cuda.get_device_capability()
        if cap < (8, 0):
            return (f"GPU {torch.cuda.get_device_name()} has compute capability {cap[0]}.{cap[1]}; the cuda "
                    "attention kernel needs >= 8.0 (mma.sync bf16, ldmatrix, cp.async)")
        archs = info.get("archs", "")
        if not arch_covered(cap, archs):
            return (f"fastattn._C was built for {archs}, which has no code for this GPU (sm_{cap[0]}{cap[1]}); "
                    f"rebuild with FASTATTN_CUDA_ARCHS including {cap[0]}{cap[1]}")
        return None

    def _ext_facts(self) -> Tuple[str, Tuple[int, ...]]:
        """``(built archs, compiled head dims)`` of the extension (defaults when it is not built)."""
        if self._facts is None:
            ext, _ = load_ext()
            if ext is not None and hasattr(ext, "attention_fwd_head_dims"):
                self._facts = (ext.build_info().get("archs", ""), tuple(ext.attention_fwd_head_dims()))
            else:
                self._facts = ("", DEFAULT_HEAD_DIMS)
        return self._facts

    def head_dims(self) -> Tuple[int, ...]:
        return self._ext_facts()[1]

    # ------------------------------------------------------------------------------ support
    def kernel_reasons(self, inp) -> List[str]:
        reasons: List[str] = []
        dev = inp.device
        if dev.type == "cuda":
            cap = device_info(dev).capability
            archs = self._ext_facts()[0]
            if cap >= (8, 0) and archs and not arch_covered(cap, archs):
                reasons.append(f"fastattn._C has no code for {dev} (sm_{cap[0]}{cap[1]}; built for {archs})")
        m = inp.mask
        if m.key_lengths is not None and (m.key_lengths.is_floating_point() or m.key_lengths.dtype == torch.bool):
            reasons.append(f"key_lengths has dtype {m.key_lengths.dtype}; an integer tensor is needed")
        if inp.Hkv == 0 or inp.Hq % inp.Hkv != 0:
            reasons.append(f"Hq={inp.Hq} is not a multiple of Hkv={inp.Hkv}")
        if inp.Lq > BLOCK_M * MAX_GRID_Y or max(inp.Lq, inp.Lk) > INT32_MAX - 256:
            reasons.append(f"Lq={inp.Lq}, Lk={inp.Lk} exceed the cuda kernel's grid limits "
                           f"(Lq <= {BLOCK_M * MAX_GRID_Y}, Lk < 2^31 - 256)")
        if inp.B * inp.Hq > INT32_MAX:
            reasons.append(f"B*Hq={inp.B * inp.Hq} exceeds 2^31 - 1 (the cuda kernel's grid x)")
        if inp.dtype in _DTYPE_CODES:
            for name, t in (("query", inp.query), ("key", inp.key), ("value", inp.value)):
                reasons += _alignment_reasons(name, t)
        return reasons

    def auto_reasons(self, inp) -> List[str]:
        reasons = super().auto_reasons(inp)
        if inp.Lq <= DECODE_MAX_LQ and inp.mask.dense is None:
            from ... import dispatch
            triton = dispatch.backends("attention").get("triton")
            if triton is not None and not dispatch.reasons_against("attention", "triton", inp, auto=True):
                reasons.append(f"decode-sized query (Lq={inp.Lq} <= {DECODE_MAX_LQ}): the triton split-KV decode "
                               "kernel serves it (this kernel runs whole 64-row query tiles and has no split-KV)")
        return reasons

    # ------------------------------------------------------------------------------ launch
    def launch(self, inp, out: torch.Tensor, rng=(0, 0)) -> torch.Tensor:
        """Write the attention of ``inp`` into ``out`` (``(B, Hq, Lq, E)``, any 16-byte aligned strides
        with a contiguous last dim, e.g. ``(B, Lq, Hq, E)`` memory) and return the float32 natural-log
        LSE ``(B, Hq, Lq)`` (``-inf`` on rows with no visible key). Launched on the current stream of
        the inputs' device; no host synchronisation. Dispatch has checked the inputs."""
        ext, why = load_ext()
        if ext is None:
            raise RuntimeError(f"the cuda attention backend is unavailable: {why}")
        if inp.Ev != inp.E:  # the binding has one head dim: a mismatch would write out of bounds
            raise ValueError(f"the cuda attention kernel needs E == Ev; got query/key head dim {inp.E}, value "
                             f"head dim {inp.Ev}")
        with device_guard(inp.query.device):  # the key_ranges launch included
            return self._launch(ext, inp, out)

    def _launch(self, ext, inp, out: torch.Tensor) -> torch.Tensor:
        q, k, v = inp.query, inp.key, inp.value
        B, Hq, Lq, E = q.shape
        Lk = k.shape[2]
        lse = torch.empty((B, Hq, Lq), dtype=torch.float32, device=q.device)
        if out.numel() == 0:
            return lse
        if Lk == 0:  # no key at all: every row is empty (k/v/key_mask may have null data pointers)
            out.zero_()
            lse.fill_(float("-inf"))
            return lse
        stream = torch.cuda.current_stream(q.device).cuda_stream
        # per plan: shapes, mask and its device-side key range (built once per mask object: once per HF
        # forward, reused by every layer)
        params, _keep = attn_fwd_params(ext, inp, stream)
        # per launch (a plan re-sets the strides only when the layout changes)
        params.set_strides(q.stride(), k.stride(), v.stride(), out.stride())
        ext.attn_fwd(params, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(), stream)
        return lse


def attn_fwd_params(ext, inp, stream: int):
    """The per-plan half of a launch: ``(fastattn._C.AttnFwdParams, tensors it points to)`` for the
    normalised inputs ``inp`` (shapes, dtype, scale, causal alignment, device, key padding). A key mask gets
    its ``[first, last + 1)`` range computed on the device (``key_ranges``, on ``stream``, no host sync); the
    returned tensors (converted key lengths, the range) must stay alive while the params are launched."""
    q, k, m = inp.query, inp.key, inp.mask
    B, Hq, Lq, E = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    key = (B, Hq, Hkv, Lq, Lk, E, q.dtype, q.device)
    cached = m.__dict__.get("_cuda_params")
    if cached is not None and cached[0] == key:
        cached[1].scale = float(inp.scale)
        return cached[1], cached[2]
    keep = []
    kl_ptr, kl_64, kl_stride = 0, False, 1
    kl = m.key_lengths
    if kl is not None:
        if kl.dtype not in (torch.int32, torch.int64):
            kl = kl.to(torch.int32)  # (B,) integers of another width: a B-element conversion
        kl_ptr, kl_64, kl_stride = kl.data_ptr(), kl.dtype == torch.int64, kl.stride(0)
        keep.append(kl)
    kr_ptr = km_ptr = 0
    km_sb, km_sk = 0, 1
    km = m.key_mask
    if km is not None:
        ranges = m.key_range()  # computed once per mask object, on the device
        kr_ptr, km_ptr, km_sb, km_sk = ranges.data_ptr(), km.data_ptr(), km.stride(0), km.stride(1)
        keep.append(ranges)
    device = q.device.index if q.device.index is not None else torch.cuda.current_device()
    params = ext.AttnFwdParams(
        dtype=_DTYPE_CODES[q.dtype], B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, head_dim=E, scale=float(inp.scale),
        causal=CAUSAL_CODES[m.causal], device=device, key_lengths_ptr=kl_ptr, key_lengths_int64=kl_64,
        key_lengths_stride=kl_stride, key_range_ptr=kr_ptr, key_mask_ptr=km_ptr, key_mask_stride_b=km_sb,
        key_mask_stride_k=km_sk)
    object.__setattr__(m, "_cuda_params", (key, params, keep))
    return params, keep

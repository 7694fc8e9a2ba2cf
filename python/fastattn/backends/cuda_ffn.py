"""The ``cuda`` backend of ``gelu_ffn`` and of the FFN building blocks: cuBLASLt GEMMs with fused
epilogues (``fastattn._C_blas``, ``csrc/blas/``) plus fastattn's own CUDA kernels (``fastattn._C``,
``csrc/ffn/``). No hand-written GEMM.

* up projection, ``approximate="tanh"``: one cuBLASLt GEMM with ``CUBLASLT_EPILOGUE_GELU_BIAS`` (that
  epilogue *is* the tanh GELU; see the comment at the top of ``csrc/blas/cublaslt_gemm.cpp``);
* up projection, ``approximate="none"`` (exact erf): cuBLASLt GEMM with ``CUBLASLT_EPILOGUE_BIAS``, then
  ``_C.bias_act`` applies the erf GELU in place (fp32 math). Never the tanh epilogue;
* down projection: GEMM + ``BIAS`` epilogue; a residual is fused as ``C`` with ``beta = 1``;
* residual + LayerNorm: ``_C.residual_layernorm``.

Everything runs on the caller's current CUDA stream. cuBLASLt's workspace is a torch allocation cached
per (device, stream).

Whether cuBLASLt has an algorithm for a problem (sizes, leading dims, operand alignments, epilogue) is
asked in ``not_supported_reasons`` (``_C_blas.check``, metadata only, cached), so an unsupported layout is
a dispatch reason (auto picks the next backend) rather than a launch-time error. Under ``torch.compile``
tracing (no data pointers) that check is skipped; a launch then raises the same reason as RuntimeError.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .._ext import cuda_device_reason, load_ext
from .base import KernelBackend

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
#: csrc/ffn/ffn_kernels.h Activation
ACT_CODES = {"none": 0, "gelu_erf": 1, "gelu_tanh": 2}
#: csrc/blas/cublaslt_gemm.cpp epilogue codes
EPI_BIAS, EPI_GELU_TANH_BIAS = 0, 1
GELU_ACTIVATION = {"none": "gelu_erf", "tanh": "gelu_tanh"}

_blas_state: Optional[Tuple[object, Optional[str]]] = None
_workspaces: Dict[Tuple[int, int], torch.Tensor] = {}


def _blas():
    global _blas_state
    if _blas_state is None:
        mod, why = load_ext("_C_blas")
        if mod is None and why and "not built" in why:
            why = ("fastattn._C_blas (cuBLASLt GEMMs) is not built: cublasLt.h/libcublasLt were not found at "
                   "build time; pip install nvidia-cublas, then rebuild (python setup.py build_ext --inplace)")
        _blas_state = (mod, why)
    return _blas_state


def _dtype_name(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def unavailable_reason() -> Optional[str]:
    """``None`` when both extensions load, include the FFN kernels, and a CUDA device exists."""
    C, why = load_ext("_C")
    if C is None:
        return why
    if not hasattr(C, "bias_act") or not hasattr(C, "residual_layernorm"):
        return "fastattn._C was built without the FFN kernels (csrc/ffn); rebuild the extension"
    blas, why = _blas()
    if blas is None:
        return why
    return cuda_device_reason()


def layernorm_unavailable_reason() -> Optional[str]:
    """The LayerNorm kernel needs only ``fastattn._C`` (not cuBLASLt)."""
    C, why = load_ext("_C")
    if C is None:
        return why
    if not hasattr(C, "residual_layernorm"):
        return "fastattn._C was built without the FFN kernels (csrc/ffn); rebuild the extension"
    return cuda_device_reason()


def _device_reason(t: torch.Tensor) -> List[str]:
    return [] if t.device.type == "cuda" else [f"tensors are on {t.device}; this backend needs CUDA tensors"]


def _unit_stride_reason(name: str, t: torch.Tensor, what: str) -> Optional[str]:
    """A 2-D operand cuBLASLt can read in place: a unit stride on one dim and distinct elements."""
    r, c = t.shape
    sr, sc = t.stride()
    if r <= 1 or c <= 1:
        return None
    if (sc == 1 and sr >= c) or (sr == 1 and sc >= r):
        return None
    return (f"{name} has strides {(sr, sc)} for shape {(r, c)}: cuBLASLt reads {what} with a unit stride on one "
            f"dim and non-overlapping rows/columns; pass {name}.contiguous() once at load time")


def _workspace_bytes(idx: int) -> int:
    major, _ = torch.cuda.get_device_capability(idx)
    return (32 if major >= 9 else 4) * 1024 * 1024  # NVIDIA's guidance for Hopper / earlier


def _alignment(ptr: int) -> int:
    """Byte alignment of a pointer, capped at 256 (as ``alignment()`` in csrc/blas/cublaslt_gemm.cpp)."""
    a = 1
    while a < 256 and ptr % (2 * a) == 0:
        a *= 2
    return a


def _tracing() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - torch without torch.compiler
        return False


def gemm_reason(x: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
                residual: Optional[torch.Tensor], activation: str,
                x_meta: Optional[Tuple[int, int, int, int]] = None) -> Optional[str]:
    """Ask cuBLASLt's heuristic whether it can run this GEMM (``None``: yes, or not checkable here).

    Only for real CUDA tensors that already passed the metadata checks. ``x_meta = (M, stride_m, stride_k,
    alignment)`` stands in for an ``x`` that ``launch`` allocates itself. The output is a fresh
    allocation (256-byte aligned, contiguous).
    """
    if _tracing():
        return None
    blas, _ = _blas()
    if blas is None or not hasattr(blas, "check"):
        return None
    try:
        ptrs = [None if t is None else t.data_ptr() for t in (x, weight, bias, residual)]
    except (RuntimeError, NotImplementedError):  # fake / meta tensors: nothing to ask about
        return None
    if x_meta is None:
        x_meta = (x.shape[0], x.stride(0), x.stride(1), _alignment(ptrs[0]))
    M, sxm, sxk, x_align = x_meta
    N, K = weight.shape
    if M == 0 or N == 0:
        return None
    dev = weight.device
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    al = [256 if p is None else _alignment(p) for p in ptrs[1:]]
    epi = EPI_GELU_TANH_BIAS if activation == "gelu_tanh" else EPI_BIAS
    why = blas.check(M, N, K, DTYPE_CODES[weight.dtype], sxm, sxk, weight.stride(0), weight.stride(1),
                     bias is not None, residual is not None, residual.stride(0) if residual is not None else 0,
                     N, epi, _workspace_bytes(idx), idx, x_align, al[0], al[1], al[2], 256)
    return why or None


def linear_reasons(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   residual: Optional[torch.Tensor], activation: str,
                   names=("x", "weight", "bias", "residual"), check_heuristic: bool = True) -> List[str]:
    """Why the cuBLASLt path cannot run ``act(x @ weight.T + bias) + residual`` (metadata only)."""
    reasons = _device_reason(x)
    if x.dtype not in KERNEL_DTYPES:
        reasons.append(f"{names[0]} has dtype {_dtype_name(x.dtype)}; this backend supports float16, bfloat16, "
                       "float32")
    if x.shape[1] == 0:
        reasons.append(f"{names[1]} has in_features=0; cuBLASLt needs K > 0")
    for name, t, what in ((names[0], x, "x (tokens, in)"), (names[1], weight, "an (out, in) weight")):
        why = _unit_stride_reason(name, t, what)
        if why:
            reasons.append(why)
    if bias is not None and bias.numel() > 1 and bias.stride(0) != 1:
        reasons.append(f"{names[2]} has stride {bias.stride(0)}; cuBLASLt's bias epilogue reads a contiguous vector")
    if residual is not None:
        if activation != "none":
            reasons.append("a residual after a GELU is not a cuBLASLt epilogue")
        if residual.shape[1] > 1 and residual.stride(1) != 1:
            reasons.append(f"{names[3]} has strides {tuple(residual.stride())}; cuBLASLt reads it as C with a unit "
                           "column stride")
        if residual.shape[0] > 1 and residual.stride(0) < residual.shape[1]:
            reasons.append(f"{names[3]} rows overlap (row stride {residual.stride(0)} < {residual.shape[1]})")
    if not reasons and check_heuristic:
        why = gemm_reason(x, weight, bias, residual, activation)
        if why:
            reasons.append(why)
    return reasons


def layernorm_reasons(x: torch.Tensor, residual: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                      bias: Optional[torch.Tensor]) -> List[str]:
    reasons = _device_reason(x)
    if x.dtype not in KERNEL_DTYPES:
        reasons.append(f"x has dtype {_dtype_name(x.dtype)}; this kernel supports float16, bfloat16, float32")
    for name, t in (("x", x), ("residual", residual)):
        if t is not None and t.shape[1] > 1 and t.stride(1) != 1:
            reasons.append(f"{name} has strides {tuple(t.stride())}; the CUDA LayerNorm reads rows with a unit "
                           "column stride")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.numel() > 1 and t.stride(0) != 1:
            reasons.append(f"{name} has stride {t.stride(0)}; the CUDA LayerNorm reads a contiguous (N,) {name}")
    return reasons


# ------------------------------------------------------------------------------------------ launchers
def _workspace(device: torch.device, stream: int) -> torch.Tensor:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    key = (idx, stream)
    ws = _workspaces.get(key)
    if ws is None:
        ws = torch.empty(_workspace_bytes(idx), dtype=torch.uint8, device=device)
        _workspaces[key] = ws
    return ws


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str,
               residual: Optional[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """``out[:] = act(x @ weight.T + bias) + residual`` with cuBLASLt (+ ``_C.bias_act`` for erf GELU);
    ``x (M, K)``, ``weight (N, K)``, ``out (M, N)`` with a unit column stride."""
    blas, why = _blas()
    if blas is None:
        raise RuntimeError(why)
    if residual is not None and activation != "none":  # the GELU would be applied after the residual add
        raise ValueError(f"linear_act: a residual cannot follow activation {activation!r} on the cuda backend")
    C, why = load_ext("_C")
    M, K = x.shape
    N = weight.shape[0]
    if M == 0 or N == 0:
        return out
    dev = x.device
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev).cuda_stream
        ws = _workspace(dev, stream)
        dt = DTYPE_CODES[x.dtype]
        epi = EPI_GELU_TANH_BIAS if activation == "gelu_tanh" else EPI_BIAS
        blas.gemm(M, N, K, dt, x.data_ptr(), x.stride(0), x.stride(1), weight.data_ptr(), weight.stride(0),
                  weight.stride(1), bias.data_ptr() if bias is not None else 0,
                  residual.data_ptr() if residual is not None else 0, residual.stride(0) if residual is not None else 0,
                  out.data_ptr(), out.stride(0), epi, ws.data_ptr(), ws.numel(), dev.index, stream)
        if activation == "gelu_erf":  # cuBLASLt has no exact-erf GELU epilogue: our kernel, in place
            C.bias_act(out.data_ptr(), 0, M, N, out.stride(0), dt, ACT_CODES["gelu_erf"], stream)
    return out


def residual_layernorm(x: torch.Tensor, residual: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                       bias: Optional[torch.Tensor], eps: float, out: torch.Tensor) -> torch.Tensor:
    C, why = load_ext("_C")
    if C is None:
        raise RuntimeError(why)
    M, N = x.shape
    if M == 0 or N == 0:
        return out
    dev = x.device
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev).cuda_stream
        C.residual_layernorm(x.data_ptr(), residual.data_ptr() if residual is not None else 0,
                             weight.data_ptr() if weight is not None else 0, bias.data_ptr() if bias is not None else 0,
                             out.data_ptr(), M, N, x.stride(0), residual.stride(0) if residual is not None else 0,
                             out.stride(0), float(eps), DTYPE_CODES[x.dtype], stream)
    return out


# -------------------------------------------------------------------------------------------- backend
class CudaFFN(KernelBackend):
    """``gelu_ffn`` as two cuBLASLt GEMMs with fused epilogues (+ the erf GELU kernel when asked for)."""

    name = "cuda"
    op = "gelu_ffn"

    def _probe(self) -> Optional[str]:
        return unavailable_reason()

    def not_supported_reasons(self, inp) -> List[str]:
        act = GELU_ACTIVATION[inp.approximate]
        reasons = linear_reasons(inp.x, inp.w1, inp.b1, None, act, names=("x", "w1", "b1", "residual"))
        # the down projection reads the hidden activation, which launch() allocates contiguous
        if inp.d_hidden == 0:
            reasons.append("w2 has in_features=0 (hidden size 0); cuBLASLt needs K > 0")
        why = _unit_stride_reason("w2", inp.w2, "an (out, in) weight")
        if why:
            reasons.append(why)
        if inp.b2 is not None and inp.b2.numel() > 1 and inp.b2.stride(0) != 1:
            reasons.append(f"b2 has stride {inp.b2.stride(0)}; cuBLASLt's bias epilogue reads a contiguous vector")
        if not reasons:
            # the down projection reads h = launch()'s fresh contiguous (T, hidden) buffer (256-byte aligned)
            why = gemm_reason(None, inp.w2, inp.b2, None, "none", x_meta=(inp.tokens, inp.d_hidden, 1, 256))
            if why:
                reasons.append(f"down projection: {why}")
        return reasons

    def launch(self, inp, out: torch.Tensor) -> None:
        act = GELU_ACTIVATION[inp.approximate]
        h = inp.x.new_empty((inp.tokens, inp.d_hidden))
        linear_act(inp.x, inp.w1, inp.b1, act, None, h)
        linear_act(h, inp.w2, inp.b2, "none", None, out)

"""The ``cuda`` backend of the FFN ops: cuBLASLt GEMMs with fused epilogues (``fastattn._C_blas``,
``csrc/blas/``) plus fastattn's own CUDA kernels (``fastattn._C``, ``csrc/ffn/``). No hand-written GEMM.

How ``act(x @ w.T + b) (+ residual)`` runs (:meth:`CudaLinearAct.epilogue`, the one place deciding it):

* no activation: GEMM + ``BIAS`` epilogue; a residual is fused as ``C`` with ``beta = 1``;
* exact-erf GELU (``approximate="none"``): GEMM + ``BIAS`` epilogue, then ``_C.bias_act`` applies the erf
  GELU in place (fp32 math). cuBLASLt has no erf GELU; its ``GELU`` epilogue is the tanh form, never
  substituted for the exact one;
* tanh GELU, float16/bfloat16: one GEMM with ``CUBLASLT_EPILOGUE_GELU_BIAS``;
* tanh GELU, float32: GEMM + ``BIAS``, then ``_C.bias_act``'s tanh GELU. How accurate cuBLASLt's GELU
  epilogue is is not documented, and fp32 inputs must be computed to fp32 accuracy (DESIGN.md), so fp32
  takes the path whose every step is known: an fp32-compute GEMM and our own fp32 activation.

Every GEMM is computed with ``CUBLAS_COMPUTE_32F`` (fp32 accumulation; never ``..._FAST_TF32``), split-K
reductions in fp32 (``csrc/blas/cublaslt_gemm.cpp``). Residual + LayerNorm is ``_C.residual_layernorm``.
Everything runs on the caller's current CUDA stream; cuBLASLt's workspace is a torch allocation cached
per (device, stream).

Whether cuBLASLt has an algorithm for a problem (sizes, leading dims, operand alignments, epilogue) is
asked in ``special_reasons`` (``_C_blas.check``, metadata only, cached), so an unsupported layout is a
dispatch reason (auto picks the next backend) rather than a launch-time error. Under ``torch.compile``
tracing (no data pointers) that check is skipped; a launch then raises the same reason as RuntimeError.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from ...runtime import cuda_device_reason, device_guard, device_info, ext_state
from ..problem import Activation, LinearAct, ResidualLayerNorm
from .base import LayerNormBackend, LinearActBackend

#: dtype codes of both extensions (csrc: 0 fp16, 1 bf16, 2 fp32)
DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
#: epilogue codes of ``_C_blas.gemm`` / ``check``: BIAS (or none without a bias), tanh GELU after the bias
EPI_BIAS, EPI_GELU_TANH_BIAS = 0, 1

_workspaces: Dict[Tuple[int, int], torch.Tensor] = {}


def _ext(name: str):
    """``(module, None)`` or ``(None, reason)`` for ``fastattn._C`` / ``fastattn._C_blas``."""
    st = ext_state(name)
    if st.module is None and not st.built and name == "_C_blas":
        return None, ("fastattn._C_blas (cuBLASLt GEMMs) is not built: cublasLt.h/libcublasLt were not found at "
                      "build time; pip install nvidia-cublas, then rebuild (python setup.py build_ext --inplace)")
    return st.module, st.reason


def _ffn_kernels_reason(C) -> Optional[str]:
    if not hasattr(C, "bias_act") or not hasattr(C, "residual_layernorm"):
        return "fastattn._C was built without the FFN kernels (csrc/ffn); rebuild the extension"
    return None


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


def _workspace_bytes(device: torch.device) -> int:
    cap = device_info(device).capability
    return (32 if cap is not None and cap[0] >= 9 else 4) * 1024 * 1024  # NVIDIA's guidance: Hopper / earlier


def _alignment(ptr: int) -> int:
    """Byte alignment of a pointer, capped at 256 (as ``alignment()`` in csrc/blas/cublaslt_gemm.cpp)."""
    a = 1
    while a < 256 and ptr % (2 * a) == 0:
        a *= 2
    return a


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _workspace(device: torch.device, stream: int) -> torch.Tensor:
    key = (device_info(device).index, stream)
    ws = _workspaces.get(key)
    if ws is None:
        ws = _workspaces[key] = torch.empty(_workspace_bytes(device), dtype=torch.uint8, device=device)
    return ws


class CudaLinearAct(LinearActBackend):
    name = "cuda"
    DEVICES = ("cuda",)

    def probe(self) -> Optional[str]:
        C, why = _ext("_C")
        if C is None:
            return why
        why = _ffn_kernels_reason(C)
        if why is not None:
            return why
        blas, why = _ext("_C_blas")
        if blas is None:
            return why
        return cuda_device_reason()

    @staticmethod
    def epilogue(dtype: torch.dtype, activation: Activation) -> Tuple[int, Activation]:
        """``(cuBLASLt epilogue code, activation _C.bias_act applies afterwards in place)``: the tanh GELU
        epilogue only for float16/bfloat16 (see the module docstring); ``Activation.NONE`` = no pass."""
        if activation is Activation.GELU_TANH and dtype != torch.float32:
            return EPI_GELU_TANH_BIAS, Activation.NONE
        return EPI_BIAS, activation

    def special_reasons(self, p: LinearAct) -> List[str]:
        xn, wn, bn, rn = p.names
        reasons = []
        if p.d_in == 0:
            reasons.append(f"{wn} has in_features=0; cuBLASLt needs K > 0")
        for name, t, what in ((xn, p.x, "x (tokens, in)"), (wn, p.weight, "an (out, in) weight")):
            why = None if t is None else _unit_stride_reason(name, t, what)
            if why:
                reasons.append(why)
        b, r = p.bias, p.residual
        if b is not None and b.numel() > 1 and b.stride(0) != 1:
            reasons.append(f"{bn} has stride {b.stride(0)}; cuBLASLt's bias epilogue reads a contiguous vector")
        if r is not None:
            if p.activation is not Activation.NONE:
                reasons.append("a residual after a GELU is not a cuBLASLt epilogue")
            if r.shape[1] > 1 and r.stride(1) != 1:
                reasons.append(f"{rn} has strides {tuple(r.stride())}; cuBLASLt reads it as C with a unit "
                               "column stride")
            if r.shape[0] > 1 and r.stride(0) < r.shape[1]:
                reasons.append(f"{rn} rows overlap (row stride {r.stride(0)} < {r.shape[1]})")
        if not reasons:
            why = self.gemm_reason(p)
            if why:
                reasons.append(why)
        return reasons

    def gemm_reason(self, p: LinearAct) -> Optional[str]:
        """Ask cuBLASLt's heuristic whether it can run this GEMM (``None``: yes, or not checkable here:
        tracing, fake tensors). ``x is None`` (``gelu_ffn``'s hidden activation) and the output are fresh
        contiguous allocations: 256-byte aligned."""
        if torch.compiler.is_compiling() or p.device.type != "cuda":
            return None
        blas, _ = _ext("_C_blas")
        if blas is None or not hasattr(blas, "check"):
            return None
        try:
            ptrs = [None if t is None else t.data_ptr() for t in (p.x, p.weight, p.bias, p.residual)]
        except (RuntimeError, NotImplementedError):  # fake tensors: nothing to ask about
            return None
        N, K = p.weight.shape
        M = p.tokens
        sxm, sxk = p.x.stride() if p.x is not None else (K, 1)
        if M == 0 or N == 0:
            return None
        al = [256 if q is None else _alignment(q) for q in ptrs]
        epi, _ = self.epilogue(p.dtype, p.activation)
        r = p.residual
        why = blas.check(M, N, K, DTYPE_CODES[p.dtype], sxm, sxk, p.weight.stride(0),
                         p.weight.stride(1), p.bias is not None, r is not None, r.stride(0) if r is not None else 0,
                         N, epi, _workspace_bytes(p.device), device_info(p.device).index, al[0], al[1], al[2],
                         al[3], 256)
        return why or None

    def launch(self, x, weight, bias, residual, activation: Activation, out) -> None:
        blas, why = _ext("_C_blas")
        if blas is None:
            raise RuntimeError(why)
        if residual is not None and activation is not Activation.NONE:  # the GELU would follow the residual add
            raise ValueError(f"linear_act: a residual cannot follow activation {activation.label!r} on the cuda backend")
        M, K = x.shape
        N = weight.shape[0]
        if M == 0 or N == 0:
            return
        dev = x.device
        dt = DTYPE_CODES[x.dtype]
        epi, post = self.epilogue(x.dtype, activation)
        with device_guard(dev):
            stream = _stream(dev)
            ws = _workspace(dev, stream)
            blas.gemm(M, N, K, dt, x.data_ptr(), x.stride(0), x.stride(1), weight.data_ptr(), weight.stride(0),
                      weight.stride(1), bias.data_ptr() if bias is not None else 0,
                      residual.data_ptr() if residual is not None else 0,
                      residual.stride(0) if residual is not None else 0,
                      out.data_ptr(), out.stride(0), epi, ws.data_ptr(), ws.numel(), device_info(dev).index, stream)
            if post is not Activation.NONE:  # our exact fp32 activation, in place on the GEMM's output
                C, why = _ext("_C")
                C.bias_act(out.data_ptr(), 0, M, N, out.stride(0), dt, int(post), stream)


class CudaLayerNorm(LayerNormBackend):
    name = "cuda"
    DEVICES = ("cuda",)

    def probe(self) -> Optional[str]:
        """The LayerNorm kernel needs only ``fastattn._C`` (not cuBLASLt)."""
        C, why = _ext("_C")
        if C is None:
            return why
        return _ffn_kernels_reason(C) or cuda_device_reason()

    def special_reasons(self, p: ResidualLayerNorm) -> List[str]:
        reasons = []
        for name, t in (("x", p.x), ("residual", p.residual)):
            if t is not None and t.shape[1] > 1 and t.stride(1) != 1:
                reasons.append(f"{name} has strides {tuple(t.stride())}; the CUDA LayerNorm reads rows with a unit "
                               "column stride")
        for name, t in (("weight", p.weight), ("bias", p.bias)):
            if t is not None and t.numel() > 1 and t.stride(0) != 1:
                reasons.append(f"{name} has stride {t.stride(0)}; the CUDA LayerNorm reads a contiguous (N,) {name}")
        return reasons

    def launch(self, x, residual, weight, bias, eps: float, out) -> None:
        C, why = _ext("_C")
        if C is None:
            raise RuntimeError(why)
        M, N = x.shape
        if M == 0 or N == 0:
            return
        dev = x.device
        with device_guard(dev):
            C.residual_layernorm(x.data_ptr(), residual.data_ptr() if residual is not None else 0,
                                 weight.data_ptr() if weight is not None else 0,
                                 bias.data_ptr() if bias is not None else 0, out.data_ptr(), M, N, x.stride(0),
                                 residual.stride(0) if residual is not None else 0, out.stride(0), float(eps),
                                 DTYPE_CODES[x.dtype], _stream(dev))

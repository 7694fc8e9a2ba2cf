"""The ``triton`` backend of the FFN ops: launchers of ``kernels/ffn`` (torch allocation and grids only).

* ``linear_act``: one launch of the GEMM with a fused epilogue, ``act(x @ w.T + b) (+ residual)``;
* ``residual_layernorm``: one launch of the fused residual add + LayerNorm.

Limits (reasons, never silent workarounds): CUDA tensors of compute capability >= 8.0, or CPU tensors
under ``TRITON_INTERPRET=1``; float16, bfloat16, float32 (fp32 computed with ``input_precision="ieee"``,
never TF32); a weight with a unit stride on one of its two dims (``nn.Linear``'s ``(out, in)`` or a
``Conv1D`` ``.t()`` view). Every other stride (``x``, bias, residual, LayerNorm parameters) is read as is.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ...runtime import device_guard, interpreting, triton_reason
from ..problem import Activation, LinearAct, ResidualLayerNorm
from .base import LayerNormBackend, LinearActBackend

_DEVICES = ("cuda", "interpret")


def _probe() -> Optional[str]:
    why = triton_reason()
    if why is not None:
        return why
    try:
        from fastattn.kernels.ffn import layernorm, linear_act  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken kernel module must become a reason
        return f"fastattn.kernels.ffn failed to import: {type(e).__name__}: {e}"
    return None


def weight_stride_reason(name: str, w: torch.Tensor) -> Optional[str]:
    """The weight strides the GEMM reads in place: a unit stride on dim 1 (``nn.Linear``) or dim 0
    (``Conv1D.weight.t()``)."""
    if w.stride(1) == 1 or w.stride(0) == 1 or w.numel() <= 1:
        return None
    return (f"{name} has strides {tuple(w.stride())} for shape {tuple(w.shape)}: the kernel reads an "
            f"(out, in) weight with a unit stride on one dim (nn.Linear layout, or a Conv1D weight "
            f"passed as .t()); pass {name}.contiguous() once at load time")


class TritonLinearAct(LinearActBackend):
    name = "triton"
    DEVICES = _DEVICES
    MIN_CAPABILITY = (8, 0)

    def probe(self) -> Optional[str]:
        return _probe()

    def special_reasons(self, p: LinearAct) -> List[str]:
        why = weight_stride_reason(p.names[1], p.weight)
        return [why] if why else []

    def launch(self, x, weight, bias, residual, activation: Activation, out) -> None:
        import triton

        from fastattn.kernels.ffn import linear_act as K

        M, Kdim = x.shape
        N = weight.shape[0]
        if M == 0 or N == 0:
            return
        if Kdim == 0:  # empty reduction: act(bias) (+ residual), no kernel needed
            z = torch.zeros((M, N), dtype=torch.float32, device=x.device)
            if bias is not None:
                z += bias.float()
            z = activation.torch(z)
            if residual is not None:
                z += residual.float()
            out.copy_(z)
            return
        has_bias, has_res = bias is not None, residual is not None
        args = dict(
            M=M, N=N, K=Kdim, M_BUCKET=triton.next_power_of_2(M),
            stride_xm=x.stride(0), stride_xk=x.stride(1),
            stride_wn=weight.stride(0), stride_wk=weight.stride(1),
            stride_bn=bias.stride(0) if has_bias else 0,
            stride_rm=residual.stride(0) if has_res else 0, stride_rn=residual.stride(1) if has_res else 0,
            stride_ym=out.stride(0), stride_yn=out.stride(1),
            HAS_BIAS=has_bias, HAS_RESIDUAL=has_res, ACTIVATION=int(activation),
            IEEE_FP32=x.dtype == torch.float32,
            # Conv1D .t() weights are N-contiguous: the kernel masks instead of wrapping so loads vectorise
            W_CONTIG_N=weight.stride(0) == 1 and weight.stride(1) != 1,
        )
        ptrs = (x, weight, bias if has_bias else x, residual if has_res else x, out)
        if interpreting():
            cfg = K.CONFIG_INTERPRET
            grid = (triton.cdiv(M, cfg.kwargs["BLOCK_M"]) * triton.cdiv(N, cfg.kwargs["BLOCK_N"]),)
            K.linear_act_kernel[grid](*ptrs, **args, **cfg.kwargs, num_warps=cfg.num_warps,
                                      num_stages=cfg.num_stages)
            return

        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
        with device_guard(x.device):
            K.linear_act_kernel_tuned[grid](*ptrs, **args)


class TritonLayerNorm(LayerNormBackend):
    name = "triton"
    DEVICES = _DEVICES
    MIN_CAPABILITY = (8, 0)

    def probe(self) -> Optional[str]:
        return _probe()

    def special_reasons(self, p: ResidualLayerNorm) -> List[str]:
        return []

    def launch(self, x, residual, weight, bias, eps: float, out) -> None:
        import triton

        from fastattn.kernels.ffn import layernorm as K

        M, N = x.shape
        if M == 0 or N == 0:
            return
        rows, block_n, one_pass, warps = K.launch_shape(N)
        has_res = residual is not None
        grid = (triton.cdiv(M, rows) if one_pass else M,)
        kw = dict(HAS_RESIDUAL=has_res, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
                  ROWS=rows, BLOCK_N=block_n, ONE_PASS=one_pass)
        args = (x, residual if has_res else x, weight if weight is not None else x, bias if bias is not None else x,
                out, M, N, float(eps), x.stride(0), x.stride(1),
                residual.stride(0) if has_res else 0, residual.stride(1) if has_res else 0,
                out.stride(0), out.stride(1),
                weight.stride(0) if weight is not None else 0, bias.stride(0) if bias is not None else 0)
        if interpreting():
            K.residual_layernorm_kernel[grid](*args, **kw)
            return
        with device_guard(x.device):
            K.residual_layernorm_kernel[grid](*args, **kw, num_warps=warps)

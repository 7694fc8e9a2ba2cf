"""The ``triton`` backend of ``gelu_ffn`` and of the FFN building blocks.

Launchers (torch allocation + grid; device code in ``kernels/ffn.py`` and ``kernels/layernorm.py``):

* :func:`linear_act` — ``out = act(x @ w.T + b) (+ residual)``, one launch;
* :func:`residual_layernorm` — ``out = LayerNorm(x + residual)``, one launch.

``gelu_ffn`` is two ``linear_act`` launches (up projection + GELU, down projection + bias); the hidden
activation is materialised in the input dtype, exactly like eager PyTorch.

Backend limits (reported by :func:`linear_reasons` / :func:`layernorm_reasons`, never silently worked
around): CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``); float16, bfloat16, float32; each
weight must have a unit stride on one of its two dims (``nn.Linear``'s row-major ``(out, in)`` or a
``Conv1D`` ``.t()`` view); every other stride is read as is.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from .base import triton_runtime_reason, KernelBackend, device_reasons

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: activation name -> the kernel's ACTIVATION constexpr (kernels/ffn.py ACT_*)
ACTIVATIONS = {"none": 0, "gelu_erf": 1, "gelu_tanh": 2}
#: ``approximate`` of F.gelu -> activation name
GELU_ACTIVATION = {"none": "gelu_erf", "tanh": "gelu_tanh"}


def _triton_reason() -> Optional[str]:
    why = triton_runtime_reason()
    if why is not None:
        return why
    try:
        from fastattn.kernels import ffn, layernorm  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken kernel module must become a reason
        return f"fastattn.kernels.ffn failed to import: {type(e).__name__}: {e}"
    return None


def _dtype_name(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def weight_stride_reason(name: str, w: torch.Tensor) -> Optional[str]:
    """The weight strides the GEMM reads in place: a unit stride on dim 1 (``nn.Linear``) or dim 0
    (``Conv1D.weight.t()``)."""
    if w.stride(1) == 1 or w.stride(0) == 1 or w.numel() <= 1:
        return None
    return (f"{name} has strides {tuple(w.stride())} for shape {tuple(w.shape)}: the kernel reads an "
            f"(out, in) weight with a unit stride on one dim (nn.Linear layout, or a Conv1D weight "
            f"passed as .t()); pass {name}.contiguous() once at load time")


def linear_reasons(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   residual: Optional[torch.Tensor], names=("x", "weight", "bias", "residual")) -> List[str]:
    """Why the Triton GEMM cannot run ``act(x @ weight.T + bias) + residual`` (metadata only)."""
    reasons = device_reasons(x.device, interpret_ok=True)
    if x.dtype not in KERNEL_DTYPES:
        reasons.append(f"{names[0]} has dtype {_dtype_name(x.dtype)}; this kernel supports float16, "
                       "bfloat16, float32")
    why = weight_stride_reason(names[1], weight)
    if why:
        reasons.append(why)
    return reasons


def layernorm_reasons(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                      interpret_ok: bool = True) -> List[str]:
    reasons = device_reasons(x.device, interpret_ok=interpret_ok)
    if x.dtype not in KERNEL_DTYPES:
        reasons.append(f"x has dtype {_dtype_name(x.dtype)}; this kernel supports float16, bfloat16, float32")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.numel() > 1 and t.stride(0) != 1:
            reasons.append(f"{name} has stride {t.stride(0)}; the LayerNorm kernel reads a contiguous "
                           f"(N,) {name}")
    return reasons


# ------------------------------------------------------------------------------------------ launchers
def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str,
               residual: Optional[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """``out[:] = act(x @ weight.T + bias) + residual``; ``x (M, K)``, ``weight (N, K)``, ``bias (N,)``,
    ``residual``/``out`` ``(M, N)``, any strides. One launch on the current stream."""
    import triton

    from fastattn.kernels import ffn as K

    M, Kdim = x.shape
    N = weight.shape[0]
    if M == 0 or N == 0:
        return out
    if Kdim == 0:  # empty reduction: act(bias) (+ residual), no kernel needed
        z = torch.zeros((M, N), dtype=torch.float32, device=x.device)
        if bias is not None:
            z += bias.float()
        from ..reference import gelu
        if activation != "none":
            z = gelu(z, "none" if activation == "gelu_erf" else "tanh")
        if residual is not None:
            z += residual.float()
        return out.copy_(z)
    has_bias = bias is not None
    has_res = residual is not None
    args = dict(
        M=M, N=N, K=Kdim, M_BUCKET=triton.next_power_of_2(M),
        stride_xm=x.stride(0), stride_xk=x.stride(1),
        stride_wn=weight.stride(0), stride_wk=weight.stride(1),
        stride_rm=residual.stride(0) if has_res else 0, stride_rn=residual.stride(1) if has_res else 0,
        stride_ym=out.stride(0), stride_yn=out.stride(1),
        HAS_BIAS=has_bias, HAS_RESIDUAL=has_res, ACTIVATION=ACTIVATIONS[activation],
        IEEE_FP32=x.dtype == torch.float32,
        # Conv1D .t() weights are N-contiguous: the kernel masks instead of wrapping so loads vectorise
        W_CONTIG_N=weight.stride(0) == 1 and weight.stride(1) != 1,
    )
    ptrs = (x, weight, bias if has_bias else x, residual if has_res else x, out)
    if K.interpreting():
        cfg = K.CONFIG_INTERPRET
        grid = (triton.cdiv(M, cfg.kwargs["BLOCK_M"]) * triton.cdiv(N, cfg.kwargs["BLOCK_N"]),)
        K.linear_act_kernel[grid](*ptrs, **args, **cfg.kwargs, num_warps=cfg.num_warps,
                                  num_stages=cfg.num_stages)
    else:
        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
        with torch.cuda.device(x.device):
            K.linear_act_kernel_tuned[grid](*ptrs, **args)
    return out


def residual_layernorm(x: torch.Tensor, residual: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                       bias: Optional[torch.Tensor], eps: float, out: torch.Tensor) -> torch.Tensor:
    """``out[:] = LayerNorm(x + residual) * weight + bias`` over the last dim; ``x``/``residual``/``out``
    ``(M, N)`` any strides, ``weight``/``bias`` ``(N,)`` contiguous or ``None``."""
    import triton

    from fastattn.kernels import ffn as Kffn
    from fastattn.kernels import layernorm as K

    M, N = x.shape
    if M == 0 or N == 0:
        return out
    rows, block_n, one_pass, warps = K.launch_shape(N)
    has_res = residual is not None
    grid = (triton.cdiv(M, rows) if one_pass else M,)
    kw = dict(HAS_RESIDUAL=has_res, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
              ROWS=rows, BLOCK_N=block_n, ONE_PASS=one_pass)
    args = (x, residual if has_res else x, weight if weight is not None else x, bias if bias is not None else x,
            out, M, N, float(eps), x.stride(0), x.stride(1),
            residual.stride(0) if has_res else 0, residual.stride(1) if has_res else 0,
            out.stride(0), out.stride(1))
    if Kffn.interpreting():
        K.residual_layernorm_kernel[grid](*args, **kw)
    else:
        with torch.cuda.device(x.device):
            K.residual_layernorm_kernel[grid](*args, **kw, num_warps=warps)
    return out


# -------------------------------------------------------------------------------------------- backend
class TritonFFN(KernelBackend):
    """``gelu_ffn`` as two Triton GEMMs with fused epilogues (bias + GELU, then bias)."""

    name = "triton"
    op = "gelu_ffn"

    def _probe(self) -> Optional[str]:
        return _triton_reason()

    def not_supported_reasons(self, inp) -> List[str]:
        reasons = device_reasons(inp.device, interpret_ok=True)
        if inp.dtype not in KERNEL_DTYPES:
            reasons.append(f"x has dtype {_dtype_name(inp.dtype)}; this kernel supports float16, bfloat16, "
                           "float32")
        for name, w in (("w1", inp.w1), ("w2", inp.w2)):
            why = weight_stride_reason(name, w)
            if why:
                reasons.append(why)
        return reasons

    def launch(self, inp, out: torch.Tensor) -> None:
        act = GELU_ACTIVATION[inp.approximate]
        h = inp.x.new_empty((inp.tokens, inp.d_hidden))
        linear_act(inp.x, inp.w1, inp.b1, act, None, h)
        linear_act(h, inp.w2, inp.b2, "none", None, out)

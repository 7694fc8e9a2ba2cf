"""Activation device functions of the FFN kernels, selected by the ``ACTIVATION`` constexpr.

The codes are :class:`fastattn.ffn.problem.Activation`'s values (the one table of names and codes; a test
pins these constants, this module and the C++ ``enum class Activation`` to it). All math is fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl

NONE = 0
GELU_ERF = 1   # x/2 * (1 + erf(x / sqrt 2))                          torch approximate="none", HF "gelu"
GELU_TANH = 2  # x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))      approximate="tanh", HF "gelu_new"


@triton.jit
def _tanh_f32(u):
    # tanh(u) = sign(u) * (1 - e) / (1 + e), e = exp(-2|u|) <= 1: no overflow for any u. The absolute
    # error is a few fp32 ulps of 1, which GELU multiplies by x/2: well below fp32 output noise.
    e = tl.exp2(-2.8853900817779268 * tl.abs(u))  # 2 / ln 2
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u < 0, -t, t)


@triton.jit
def apply_activation(v, ACTIVATION: tl.constexpr):
    """``v`` fp32 -> fp32; ``ACTIVATION`` is one of the codes above."""
    if ACTIVATION == 1:
        v = 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
    elif ACTIVATION == 2:
        inner = 0.7978845608028654 * (v + 0.044715 * v * v * v)
        v = 0.5 * v * (1.0 + _tanh_f32(inner))
    return v

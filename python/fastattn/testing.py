"""The numerics rule (DESIGN.md), shared by tests, ``fastattn check`` and the benchmarks.

For an output compared against a float64 reference computed from the same (already rounded) inputs::

    max|ours - ref| <= factor * max|naive_same_dtype - ref| + floor

``naive_same_dtype`` is the plain PyTorch math in the input dtype, ``floor`` the dtype's rounding noise
at the output's magnitude, ``factor`` 2 for ops and 3 for model-level comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

#: relative rounding noise per dtype (a few ulps of the output magnitude)
NOISE = {torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7, torch.float32: 1e-6, torch.float64: 1e-12}


@dataclass
class Comparison:
    max_err: float
    mean_err: float
    naive_err: float
    bound: float

    @property
    def ok(self) -> bool:
        return self.max_err <= self.bound

    def __str__(self) -> str:
        return (f"max err {self.max_err:.3e} (mean {self.mean_err:.3e}) vs bound {self.bound:.3e} "
                f"[naive same-dtype err {self.naive_err:.3e}]")


def compare(ours: torch.Tensor, ref: torch.Tensor, naive: torch.Tensor, dtype: torch.dtype,
            factor: float = 2.0, valid: Optional[torch.Tensor] = None) -> Comparison:
    """Apply the rule. ``valid`` (bool, broadcastable) restricts the comparison to valid positions."""
    ref = ref.to(torch.float64)
    d = (ours.to(torch.float64) - ref).abs()
    dn = (naive.to(torch.float64) - ref).abs()
    if valid is not None:
        valid = valid.expand_as(d)
        d, dn, ref = d[valid], dn[valid], ref[valid]
    if d.numel() == 0:
        return Comparison(0.0, 0.0, 0.0, 0.0)
    if torch.isnan(d).any():
        return Comparison(float("nan"), float("nan"), float(dn.max()), 0.0)
    floor = NOISE[dtype] * max(float(ref.abs().max()), 1e-30)
    return Comparison(float(d.max()), float(d.mean()), float(dn.max()), factor * float(dn.max()) + floor)


def assert_close(ours, ref, naive, dtype, name: str = "", factor: float = 2.0, valid=None) -> Comparison:
    c = compare(ours, ref, naive, dtype, factor, valid)
    print(f"{name}: {c}")
    assert c.ok, f"{name}: numerics rule violated: {c}"
    return c

"""``fastattn check``: every usable backend against the float64 reference, on this machine."""

from __future__ import annotations

import os
from typing import Optional

import torch


def _cases(device):
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*s, dtype):
        return torch.randn(*s, generator=g).to(device=device, dtype=dtype)

    from fastattn import KeyPadding
    from torch.nn.attention.bias import causal_lower_right
    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if device.type == "cuda" else [torch.float16])
    for dtype in dtypes:
        B, H, Lq, Lk, D = 2, 4, 37, 53, 64
        q, k, v = rnd(B, H, Lq, D, dtype=dtype), rnd(B, H, Lk, D, dtype=dtype), rnd(B, H, Lk, D, dtype=dtype)
        lengths = torch.tensor([Lk, 17], device=device)
        yield f"{dtype}-none", (q, k, v), {}
        yield f"{dtype}-causal", (q, k, v), {"is_causal": True}
        yield f"{dtype}-causal_br", (q, k, v), {"attn_mask": causal_lower_right(Lq, Lk)}
        yield f"{dtype}-keypad", (q, k, v), {"attn_mask": KeyPadding(lengths=lengths)}
        yield f"{dtype}-bool", (q, k, v), {"attn_mask": rnd(B, 1, Lq, Lk, dtype=torch.float32) > 0}
        yield f"{dtype}-gqa", (q, k[:, :2], v[:, :2]), {"enable_gqa": True}


def run_check(device: Optional[str] = None, verbose: bool = False) -> int:
    import fastattn
    from fastattn import reference
    from fastattn import dispatch
    from fastattn.dispatch import PRIORITY
    ATTENTION_BACKENDS = dispatch.backends("attention")
    from fastattn.testing import compare

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("note: on CPU the triton backend needs TRITON_INTERPRET=1")
    failures = 0
    print(f"fastattn check on {dev}")
    # the on-device self-check of every kernel variant of a grid (cache ignored; passes written to it)
    from fastattn import selfcheck
    failures += selfcheck.sweep(dev, verbose=verbose)
    for name in PRIORITY:
        why = ATTENTION_BACKENDS[name].unavailable_reason()
        if why is not None:
            print(f"  {name:7} skipped: {why}")
            continue
        ran = 0
        for case, (q, k, v), kw in _cases(dev):
            try:
                out = fastattn.attention(q, k, v, backend=name, **kw)
            except ValueError as e:
                if verbose:
                    print(f"  {name:7} {case}: not supported ({str(e).splitlines()[-1].strip()})")
                continue
            ref = reference.attention(q, k, v, **kw)
            naive = reference.attention(q, k, v, compute_dtype=None, **kw)
            c = compare(out, ref, naive, q.dtype)
            ran += 1
            if not c.ok or verbose:
                print(f"  {name:7} {case}: {'ok' if c.ok else 'FAIL'} {c}")
            failures += not c.ok
        print(f"  {name:7} {ran} cases run")
    failures += _check_ffn(dev, verbose)
    print("check: " + ("all passed" if failures == 0 else f"{failures} FAILED"))
    return 1 if failures else 0


def _check_ffn(dev, verbose: bool) -> int:
    import fastattn
    from fastattn import reference
    from fastattn import dispatch
    from fastattn.dispatch import PRIORITY
    FFN_BACKENDS = dispatch.backends("gelu_ffn")
    from fastattn.testing import compare

    g = torch.Generator(device="cpu").manual_seed(1)
    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if dev.type == "cuda" else [torch.float16])
    failures = 0
    for name in PRIORITY:
        why = FFN_BACKENDS[name].unavailable_reason()
        if why is not None:
            print(f"  {name:7} gelu_ffn skipped: {why}")
            continue
        ran = 0
        for dtype in dtypes:
            for approximate in ("none", "tanh"):
                x = torch.randn(33, 40, generator=g).to(dev, dtype)
                w1 = (torch.randn(100, 40, generator=g) / 6).to(dev, dtype)
                b1 = torch.randn(100, generator=g).to(dev, dtype)
                w2t = (torch.randn(100, 40, generator=g) / 10).to(dev, dtype)  # Conv1D layout: pass .t()
                b2 = torch.randn(40, generator=g).to(dev, dtype)
                args = (x, w1, b1, w2t.t(), b2)
                try:
                    out = fastattn.gelu_ffn(*args, approximate=approximate, backend=name)
                except ValueError as e:
                    if verbose:
                        print(f"  {name:7} gelu_ffn {dtype} {approximate}: not supported ({e})")
                    continue
                ref = reference.gelu_ffn(*args, approximate=approximate)
                naive = reference.gelu_ffn(*args, approximate=approximate, compute_dtype=None)
                c = compare(out, ref, naive, dtype)
                ran += 1
                if not c.ok or verbose:
                    print(f"  {name:7} gelu_ffn {dtype} {approximate}: {'ok' if c.ok else 'FAIL'} {c}")
                failures += not c.ok
        print(f"  {name:7} gelu_ffn: {ran} cases run")
    return failures

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


def run_check(device: Optional[str] = None, verbose: bool = False, only: Optional[str] = None,
              progress: bool = True) -> int:
    """Run every usable backend (``only``: just that one, e.g. from ``FASTATTN_BACKEND``) against the
    float64 reference; print one summary line per backend and op; return 0 if all passed."""
    import fastattn
    from fastattn import dispatch, reference
    from fastattn._progress import Progress
    from fastattn.testing import compare

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = [only] if only else list(dispatch.PRIORITY)
    if dev.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1" and "triton" in names:
        print("note: on CPU the triton backend needs TRITON_INTERPRET=1")
    if only:
        print(f"note: FASTATTN_BACKEND={only}: checking the {only} backend only")
    prog = Progress("fastattn check", enabled=progress)
    failures = 0
    print(f"fastattn check on {dev}", flush=True)
    # the on-device self-check of every kernel variant of a grid (cache ignored; passes written to it)
    from fastattn import selfcheck
    failures += selfcheck.sweep(dev, verbose=verbose)
    cases = list(_cases(dev))
    for name in names:
        why = dispatch.backends("attention")[name].unavailable_reason()
        if why is not None:
            print(f"  {name:7} skipped: {why}")
            failures += name == only  # a forced backend that cannot run is a failed check
            continue
        ran = 0
        prog.start(f"{name} attention", total=len(cases))
        lines = []
        for i, (case, (q, k, v), kw) in enumerate(cases):
            try:
                out = fastattn.attention(q, k, v, backend=name, **kw)
            except ValueError as e:
                if verbose:
                    lines.append(f"  {name:7} {case}: not supported ({str(e).splitlines()[-1].strip()})")
                prog.step(i + 1)
                continue
            ref = reference.attention(q, k, v, **kw)
            naive = reference.attention(q, k, v, compute_dtype=None, **kw)
            c = compare(out, ref, naive, q.dtype)
            ran += 1
            if not c.ok or verbose:
                lines.append(f"  {name:7} {case}: {'ok' if c.ok else 'FAIL'} {c}")
            failures += not c.ok
            prog.step(i + 1)
        prog.end()
        print("\n".join(lines + [f"  {name:7} {ran} cases run"]), flush=True)
    failures += _check_ffn(dev, verbose, names, only, prog)
    print("check: " + ("all passed" if failures == 0 else f"{failures} FAILED"))
    return 1 if failures else 0


def _check_ffn(dev, verbose: bool, names, only, prog) -> int:
    import fastattn
    from fastattn import dispatch
    from fastattn.ffn import reference
    from fastattn.testing import compare

    g = torch.Generator(device="cpu").manual_seed(1)
    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if dev.type == "cuda" else [torch.float16])
    failures = 0
    for name in names:
        why = dispatch.backends("gelu_ffn")[name].unavailable_reason()
        if why is not None:
            print(f"  {name:7} gelu_ffn skipped: {why}")
            failures += name == only
            continue
        ran = 0
        prog.start(f"{name} gelu_ffn", total=2 * len(dtypes))
        lines = []
        done = 0
        for dtype in dtypes:
            for approximate in ("none", "tanh"):
                done += 1
                x = torch.randn(33, 40, generator=g).to(dev, dtype)
                w1 = (torch.randn(100, 40, generator=g) / 6).to(dev, dtype)
                b1 = torch.randn(100, generator=g).to(dev, dtype)
                w2t = (torch.randn(100, 40, generator=g) / 10).to(dev, dtype)  # Conv1D layout: pass .t()
                b2 = torch.randn(40, generator=g).to(dev, dtype)
                args = (x, w1, b1, w2t.t(), b2)
                prog.step(done)
                try:
                    out = fastattn.gelu_ffn(*args, approximate=approximate, backend=name)
                except ValueError as e:
                    if verbose:
                        lines.append(f"  {name:7} gelu_ffn {dtype} {approximate}: not supported ({e})")
                    continue
                ref = reference.gelu_ffn(*args, approximate=approximate)
                naive = reference.gelu_ffn(*args, approximate=approximate, compute_dtype=None)
                c = compare(out, ref, naive, dtype)
                ran += 1
                if not c.ok or verbose:
                    lines.append(f"  {name:7} gelu_ffn {dtype} {approximate}: {'ok' if c.ok else 'FAIL'} {c}")
                failures += not c.ok
        prog.end()
        print("\n".join(lines + [f"  {name:7} gelu_ffn: {ran} cases run"]), flush=True)
    return failures

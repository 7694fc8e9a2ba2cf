"""Small driver for the cuda attention kernel under compute-sanitizer.

    compute-sanitizer --tool memcheck  python scripts/sanitize_cuda_attention.py
    compute-sanitizer --tool racecheck python scripts/sanitize_cuda_attention.py
    compute-sanitizer --tool synccheck python scripts/sanitize_cuda_attention.py

Runs a handful of small launches that reach every code path (odd lengths both ways, every compiled
head dim, fp16/bf16, MHA/GQA/MQA, causal top-left/bottom-right, key lengths with an empty sample, a
key mask with holes and an all-false row, strided views, empty query blocks), checks each against
the float64 reference with the numerics rule, and exits non-zero on any mismatch. The default set is
compact (a few dozen launches, so racecheck fits in about a minute); ``--full`` crosses every head dim,
dtype, shape, head ratio and causal mode.
"""

from __future__ import annotations

import argparse
import sys

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="every head dim x dtype x shape x heads x causal mode")
    args = ap.parse_args()

    import fastattn
    from fastattn import reference
    from fastattn import dispatch
    ATTENTION_BACKENDS = dispatch.backends("attention")
    from fastattn.masks import KeyPadding
    from fastattn.testing import compare
    from torch.nn.attention.bias import causal_lower_right

    why = ATTENTION_BACKENDS["cuda"].unavailable_reason()
    if why is not None:
        print(f"cuda attention backend unavailable: {why}", file=sys.stderr)
        return 2

    g = torch.Generator(device="cuda").manual_seed(0)
    dev = "cuda"
    dtypes = [torch.float16, torch.bfloat16]
    head_dims = [32, 64, 80, 96, 128, 256]
    failures = 0

    def run(name, q, k, v, attn_mask=None, is_causal=False):
        nonlocal failures
        gqa = q.shape[1] != k.shape[1]
        out = fastattn.attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=gqa, backend="cuda")
        torch.cuda.synchronize()
        ref = reference.attention(q, k, v, attn_mask, 0.0, is_causal, None, gqa, compute_dtype=torch.float64)
        naive = reference.attention(q, k, v, attn_mask, 0.0, is_causal, None, gqa, compute_dtype=None)
        c = compare(out, ref, naive, q.dtype)
        print(f"{'ok  ' if c.ok else 'FAIL'} {name}: {c}")
        failures += not c.ok

    def rand(*shape, dtype):
        return torch.randn(*shape, device=dev, generator=g).to(dtype)

    for dtype in dtypes:
        dn = str(dtype).replace("torch.", "")
        for D in head_dims:
            # compact default: bf16 only at D = 64, and per head dim two shapes/modes that reach every path
            if not args.full and dtype == torch.bfloat16 and D != 64:
                continue
            shapes = ((37, 95), (95, 37), (1, 70), (70, 1)) if args.full else ((37, 95), (95, 37))
            heads = ((4, 4), (4, 2), (4, 1)) if args.full else ((4, 2),)
            for Lq, Lk in shapes:
                for Hq, Hkv in heads:
                    q, k, v = rand(2, Hq, Lq, D, dtype=dtype), rand(2, Hkv, Lk, D, dtype=dtype), rand(2, Hkv, Lk, D, dtype=dtype)
                    tag = f"{dn}-d{D}-q{Lq}-k{Lk}-h{Hq}/{Hkv}"
                    if args.full or Lq > Lk:
                        run(f"{tag}-none", q, k, v)
                        run(f"{tag}-causal_tl", q, k, v, is_causal=True)
                    run(f"{tag}-causal_br", q, k, v, attn_mask=causal_lower_right(Lq, Lk))
            if not args.full and D not in (64, 256):
                continue
            # key padding with an empty sample, plus causal
            B, H, Lq, Lk = 3, 2, 70, 150
            q, k, v = rand(B, H, Lq, D, dtype=dtype), rand(B, H, Lk, D, dtype=dtype), rand(B, H, Lk, D, dtype=dtype)
            lengths = torch.tensor([0, 77, 150], device=dev)
            mask = torch.rand(B, Lk, device=dev, generator=g) > 0.4
            mask[0] = False
            mask[2, :60] = False
            for causal in (None, "top_left", "bottom_right"):
                run(f"{dn}-d{D}-lengths-{causal}", q, k, v, attn_mask=KeyPadding(lengths=lengths, causal=causal))
                run(f"{dn}-d{D}-keymask-{causal}", q, k, v, attn_mask=KeyPadding(mask=mask, causal=causal))
            # strided views: (B, L, H, D) memory and rows inside a wider buffer
            qb = rand(2, 130, 4, D, dtype=dtype).transpose(1, 2)
            buf = rand(2, 2, 90, D + 16, dtype=dtype)
            kb, vb = buf[..., :D], buf[..., 8:8 + D]
            run(f"{dn}-d{D}-strided", qb, kb, vb, attn_mask=causal_lower_right(130, 90))
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Compile-only checks of the FFN Triton kernels for sm_90 (no GPU needed: Triton's compiler and ptxas
run on the CPU). The interpreter never runs the GPU compiler, so this is where register spills show:
the config the linear_act prune keeps for a large fp16 GEMM with a GELU epilogue must compile without
spilling, one the register budget drops must spill (the calibration still holds), and the LayerNorm
kernel at BERT's width must not spill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip("triton")

SCRIPT = textwrap.dedent('''
    import os, re, subprocess, tempfile
    import torch, triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from fastattn.kernels.ffn import layernorm as LN, linear_act as K

    CUOBJ = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    TARGET = GPUTarget("cuda", 90, 32)

    def stack_bytes(k):
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(k.asm["cubin"])
        try:
            out = subprocess.run([CUOBJ, "-res-usage", f.name], capture_output=True, text=True).stdout
        finally:
            os.unlink(f.name)
        return int(re.search(r"REG:(\\d+) STACK:(\\d+)", out).group(2))

    def signature(fn, dtype, ones):
        sig = {}
        for i, n in enumerate(fn.arg_names):
            if fn.params[i].is_constexpr or n in ones:
                sig[n] = "constexpr"
            elif n.endswith("_ptr"):
                sig[n] = "*" + dtype
            elif n == "eps":
                sig[n] = "fp32"
            else:
                sig[n] = "i32"
        return sig

    def compile_linear_act(cfg, act):
        fn = K.linear_act_kernel.fn  # under @triton.heuristics (EVEN_K)
        ones = ("stride_xk", "stride_wk", "stride_bn", "stride_yn")  # nn.Linear layout: unit strides specialise
        sig = signature(fn, "fp16", ones)
        consts = dict({n: 1 for n in ones}, HAS_BIAS=True, HAS_RESIDUAL=False, ACTIVATION=act, IEEE_FP32=False,
                      W_CONTIG_N=False, EVEN_K=True, **cfg.kwargs)
        div = ("x_ptr", "w_ptr", "b_ptr", "y_ptr", "N", "K", "stride_xm", "stride_wn", "stride_ym")
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if n in div}
        src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
        return triton.compile(src, target=TARGET, options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))

    # the prune as it runs on an H100 (sm_90, 227 KB) for BERT-base's up projection (fp16, 4096 tokens)
    K._device_facts = lambda x: (9, 227 * 1024)
    x = torch.empty(1, dtype=torch.float16)
    kept = K.prune_configs(K.linear_act_kernel_tuned.configs, {"x_ptr": x}, M=4096, N=3072)
    assert kept and all(K.acc_per_thread(c) <= K.MAX_ACC_PER_THREAD for c in kept)
    big = max(kept, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])
    k = compile_linear_act(big, 1)  # erf GELU epilogue (BERT)
    assert "warp_group_dot" in k.asm["ttgir"], "fp16 on sm_90 must use wgmma"
    assert stack_bytes(k) == 0, (big, stack_bytes(k))
    print("kept", big, "stack", stack_bytes(k))
    # 128x128x64 with 4 warps (128 accumulator values per thread) spilled with a GELU: the budget drops it
    dropped = K._cfg(128, 128, 64, 4, 4)
    assert K.acc_per_thread(dropped) > K.MAX_ACC_PER_THREAD
    assert dropped not in K.prune_configs([dropped] + kept, {"x_ptr": x}, M=4096, N=3072)
    spill = stack_bytes(compile_linear_act(dropped, 1))
    assert spill > 0, "the calibration no longer holds: 128x128x64/4 warps with a GELU compiles without spilling"
    print("dropped", dropped, "stack", spill)

    # LayerNorm at BERT-base's width, fp16, the launcher's shape
    fn = LN.residual_layernorm_kernel
    rows, block_n, one_pass, warps = LN.launch_shape(768)
    ones = ("stride_xn", "stride_rn", "stride_yn", "stride_w", "stride_b")
    consts = dict({n: 1 for n in ones}, HAS_RESIDUAL=True, HAS_WEIGHT=True, HAS_BIAS=True, ROWS=rows,
                  BLOCK_N=block_n, ONE_PASS=one_pass)
    src = ASTSource(fn=fn, signature=signature(fn, "fp16", ones), constexprs=consts)
    k = triton.compile(src, target=TARGET, options=dict(num_warps=warps))
    assert stack_bytes(k) == 0, stack_bytes(k)
    print("layernorm ok")
''')


def test_ffn_kernels_compile_for_sm90_without_spills(tmp_path):
    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")):
        pytest.skip("this triton ships no NVIDIA toolchain (cuobjdump)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the real compiler, not the interpreter
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a fresh cache: really compile
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    print(r.stdout, r.stderr[-3000:])
    assert r.returncode == 0 and "layernorm ok" in r.stdout

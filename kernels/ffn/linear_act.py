"""Triton GEMM with a fused epilogue: ``y = act(x @ w.T + b) (+ residual)``.

One kernel serves both halves of the feed-forward:

* up projection: ``ACTIVATION = GELU_ERF | GELU_TANH``, bias, no residual;
* down projection: ``ACTIVATION = NONE``, bias, optional residual (GPT-2/BERT residual stream).

``x`` is ``(M, K)``, ``w`` is ``(N, K)`` in ``nn.Linear`` layout read through its strides, so both the
row-major ``nn.Linear`` weight (strides ``(K, 1)``) and GPT-2's ``Conv1D`` weight passed as ``.t()``
(strides ``(1, N)``) are read in place; the bias ``(N,)`` is read through its stride too. The accumulator,
the bias add and the activation are fp32; the result is rounded once to the output dtype. fp32 operands
use ``input_precision="ieee"`` (never TF32).

Contents, in order: named config lists and the prune function, the kernel, the autotuned wrapper.
Launch code lives in ``fastattn.ffn.backends.triton``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .activations import apply_activation


# ------------------------------------------------------------------------------- configs and pruning
def _cfg(bm, bn, bk, warps, stages, group_m=8):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m},
                         num_warps=warps, num_stages=stages)


#: Register budget: the fp32 accumulator tile per thread, ``BLOCK_M * BLOCK_N / (32 * num_warps)``, at most
#: this many values. Calibrated on compile-only builds (triton 3.9 + ptxas, sm_80 and sm_90; fp16 and fp32;
#: erf/tanh GELU, residual, nn.Linear and Conv1D .t() weights): every config holding 128 values spilled
#: in some epilogue (sm_90 fp16: 128x256x64/8 warps 100-224 B, 256x128x64/8 warps 48-328 B, 128x128x64/
#: 4 warps with a GELU 204-280 B; sm_80 fp32: 1.3-1.9 KB in every epilogue), none holding 64 or fewer did
#: (``tests/test_compile_ffn_sm90.py`` keeps checking the kept configs).
MAX_ACC_PER_THREAD = 64

#: Hopper (sm_90, 228 KB shared memory per SM): deep pipelines, 64 accumulator values per thread at most.
CONFIGS_SM90 = [
    _cfg(128, 128, 64, 8, 4),
    _cfg(128, 64, 64, 4, 4),
    _cfg(64, 128, 64, 4, 4),
    _cfg(64, 64, 64, 4, 4),
    _cfg(64, 32, 64, 4, 4),     # small token counts (decode, short batches)
    _cfg(32, 64, 64, 4, 4),
    _cfg(128, 128, 32, 8, 3),   # fp32 operands (4 B/elem): half the K depth
    _cfg(64, 128, 32, 4, 3),
]
#: Ampere (sm_80/86/89, 100-164 KB shared memory): same shapes, shallower pipelines.
CONFIGS_SM80 = [
    _cfg(128, 128, 64, 8, 3),
    _cfg(128, 64, 32, 4, 4),
    _cfg(64, 128, 32, 4, 4),
    _cfg(64, 64, 32, 4, 4),
    _cfg(64, 32, 32, 4, 4),
    _cfg(32, 64, 32, 4, 4),
    _cfg(64, 64, 32, 4, 3),     # fp32 operands
]
#: The one config the CPU interpreter runs (TRITON_INTERPRET=1): small, so tests stay fast.
CONFIG_INTERPRET = _cfg(32, 32, 32, 4, 1, group_m=4)

_ALL_CONFIGS = CONFIGS_SM90 + CONFIGS_SM80
_SM90_IDS = {id(c) for c in CONFIGS_SM90}
_SM80_IDS = {id(c) for c in CONFIGS_SM80}


def _device_facts(x):
    """(major compute capability, opt-in shared memory per block in bytes) of ``x``'s device."""
    try:
        from fastattn.runtime import device_info  # the one owner of device facts (smem table included)
        info = device_info(x.device)
        return (info.capability or (8, 0))[0], info.smem_per_block or 99 * 1024
    except Exception:  # noqa: BLE001 - prune must never fail the launch
        return 8, 99 * 1024


def _elem_bytes(t) -> int:
    try:
        return t.element_size()
    except Exception:  # noqa: BLE001
        return 2


def acc_per_thread(c) -> float:
    """fp32 accumulator values each thread holds for config ``c``."""
    return c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] / (32 * c.num_warps)


def prune_configs(configs, named_args, **kwargs):
    """Keep the configs of this device's list that fit its shared memory and the problem.

    * arch: sm_90+ gets :data:`CONFIGS_SM90`, everything else :data:`CONFIGS_SM80`;
    * registers: at most :data:`MAX_ACC_PER_THREAD` accumulator values per thread (more spilled);
    * shared memory: ``stages * (BLOCK_M + BLOCK_N) * BLOCK_K * elem_bytes`` must fit;
    * problem size: tiles much larger than ``M`` (few tokens) or ``N`` waste the machine, so a config
      whose ``BLOCK_M`` exceeds ``max(32, next_pow2(M))`` is dropped (likewise ``BLOCK_N``); fp32
      operands keep only ``BLOCK_K <= 32``.
    Always returns at least one config (the smallest surviving one of the arch list).
    """
    args = {**named_args, **kwargs}  # the autotuner passes positional args in named_args, the rest as kwargs
    major, smem = _device_facts(args["x_ptr"])
    ids = _SM90_IDS if major >= 9 else _SM80_IDS
    arch = [c for c in configs if id(c) in ids] or list(configs)
    M, N = int(args["M"]), int(args["N"])
    eb = _elem_bytes(args["x_ptr"])
    m_cap = max(32, triton.next_power_of_2(max(M, 1)))
    n_cap = max(32, triton.next_power_of_2(max(N, 1)))
    keep = []
    for c in arch:
        kw = c.kwargs
        need = c.num_stages * (kw["BLOCK_M"] + kw["BLOCK_N"]) * kw["BLOCK_K"] * eb
        if need > smem or acc_per_thread(c) > MAX_ACC_PER_THREAD:
            continue
        if kw["BLOCK_M"] > m_cap or kw["BLOCK_N"] > n_cap:
            continue
        if eb == 4 and kw["BLOCK_K"] > 32:
            continue
        keep.append(c)
    if not keep:
        keep = [min(arch, key=lambda c: (acc_per_thread(c) > MAX_ACC_PER_THREAD, c.num_stages
                                         * (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"]) * c.kwargs["BLOCK_K"]))]
    return keep


# ---------------------------------------------------------------------------------------------- kernel
@triton.heuristics({"EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0})
@triton.jit
def linear_act_kernel(
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
    M, N, K, M_BUCKET,
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_bn,
    stride_rm, stride_rn,
    stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
    IEEE_FP32: tl.constexpr, W_CONTIG_N: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    """``y[m, n] = act(sum_k x[m, k] w[n, k] + b[n]) + r[m, n]`` for one ``BLOCK_M x BLOCK_N`` tile.

    Tiles are visited in groups of ``GROUP_M`` row-blocks (column-major inside a group) so that the
    weight panel a group shares stays in L2. ``M_BUCKET`` is only an autotune key (next_pow2(M)).
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    # Rows past the edge wrap onto valid ones for the loads (never stored): no M load mask. Columns
    # wrap too when the weight is K-contiguous (nn.Linear); when it is N-contiguous (Conv1D .t()) a
    # wrapped index would hide the contiguity the vectorised loads need, so those loads are masked.
    rm = (offs_m % M).to(tl.int64)
    if W_CONTIG_N:
        rn = offs_n.to(tl.int64)
    else:
        rn = (offs_n % N).to(tl.int64)
    x_ptrs = x_ptr + rm[:, None] * stride_xm + offs_k[None, :].to(tl.int64) * stride_xk
    w_ptrs = w_ptr + offs_k[:, None].to(tl.int64) * stride_wk + rn[None, :] * stride_wn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(x_ptrs)
            if W_CONTIG_N:
                b = tl.load(w_ptrs, mask=n_ok[None, :], other=0.0)
            else:
                b = tl.load(w_ptrs)
        else:
            k_left = K - k0 * BLOCK_K
            a = tl.load(x_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            if W_CONTIG_N:
                b = tl.load(w_ptrs, mask=(offs_k[:, None] < k_left) & n_ok[None, :], other=0.0)
            else:
                b = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if IEEE_FP32:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    # epilogue, fp32: bias -> activation -> residual -> one rounding
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n.to(tl.int64) * stride_bn, mask=n_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
    acc = apply_activation(acc, ACTIVATION)
    om = offs_m.to(tl.int64)
    on = offs_n.to(tl.int64)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + om[:, None] * stride_rm + on[None, :] * stride_rn,
                    mask=m_ok[:, None] & n_ok[None, :], other=0.0)
        acc += r.to(tl.float32)
    y_ptrs = y_ptr + om[:, None] * stride_ym + on[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


#: the autotuned entry (GPU); the interpreter launches :func:`linear_act_kernel` with CONFIG_INTERPRET
linear_act_kernel_tuned = triton.autotune(
    configs=_ALL_CONFIGS,
    key=["M_BUCKET", "N", "K", "HAS_BIAS", "HAS_RESIDUAL", "ACTIVATION", "IEEE_FP32", "W_CONTIG_N"],
    prune_configs_by={"early_config_prune": prune_configs},
)(linear_act_kernel)

"""Triton attention kernels: prefill (``fwd``), split-KV decode + combine (``decode``), the backward
(``bwd``: delta preprocess, dK/dV, dQ), their shared device helpers (``common``) and launch
configurations (``configs``).

The names below are what launchers and tests use; they are re-exported here so that callers import
this package only (``from fastattn.kernels import attention as K; K._attn_fwd_kernel[grid](...)``).
"""

from .bwd import (BWD_NO_SPECIALIZE, _attn_bwd_dkdv_kernel, _attn_bwd_dq_kernel,
                  _attn_bwd_preprocess_kernel)
from .common import _dropout_keep, _finalize, _key_bounds, _key_range, _load_tile, _online_softmax
from .configs import (AUTOTUNE_KEY, BWD_AUTOTUNE_KEY, BWD_TILES, CONFIG_INTERPRET, CONFIG_INTERPRET_BWD_DKDV,
                      CONFIG_INTERPRET_BWD_DQ, CONFIGS_BWD_DKDV_SM80, CONFIGS_BWD_DKDV_SM90, CONFIGS_BWD_DQ_SM80,
                      CONFIGS_BWD_DQ_SM90, CONFIGS_FP32, CONFIGS_SM80, CONFIGS_SM90, DECODE_MAX_LQ, MAX_SPLITS,
                      CONFIG_DROPOUT_FALLBACK, MIN_KEYS_PER_SPLIT, SM80_SPILLS, _cfg, autotuned_bwd_kernel, autotuned_kernel, bwd_candidates,
                      bwd_configs_for, bwd_preprocess_block_m, bwd_smem_bytes, bwd_tier, choose_num_splits,
                      combine_warps, config_fits, config_kwargs, configs_for, decode_block_m, decode_config, keep,
                      kept_configs, prune_bwd_dkdv, prune_bwd_dq, prune_configs)
from .decode import COMBINE_NO_SPECIALIZE, DECODE_NO_SPECIALIZE, _attn_combine_kernel, _attn_decode_kernel
from .fwd import NO_SPECIALIZE, _attn_fwd_kernel

__all__ = [
    # kernels and their specialisation lists
    "_attn_fwd_kernel", "_attn_decode_kernel", "_attn_combine_kernel",
    "_attn_bwd_preprocess_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel",
    "NO_SPECIALIZE", "DECODE_NO_SPECIALIZE", "COMBINE_NO_SPECIALIZE", "BWD_NO_SPECIALIZE",
    # device helpers
    "_load_tile", "_key_range", "_key_bounds", "_online_softmax", "_finalize", "_dropout_keep",
    # prefill configs and prune
    "CONFIGS_SM80", "CONFIGS_SM90", "CONFIGS_FP32", "SM80_SPILLS", "CONFIG_DROPOUT_FALLBACK", "CONFIG_INTERPRET", "AUTOTUNE_KEY", "_cfg", "keep", "config_fits",
    "kept_configs", "prune_configs", "configs_for", "autotuned_kernel",
    # decode launch policy
    "DECODE_MAX_LQ", "MAX_SPLITS", "MIN_KEYS_PER_SPLIT", "decode_block_m", "decode_config", "combine_warps",
    "choose_num_splits",
    # backward configs and prune
    "CONFIGS_BWD_DKDV_SM80", "CONFIGS_BWD_DKDV_SM90", "CONFIGS_BWD_DQ_SM80", "CONFIGS_BWD_DQ_SM90",
    "CONFIG_INTERPRET_BWD_DKDV", "CONFIG_INTERPRET_BWD_DQ", "BWD_AUTOTUNE_KEY", "config_kwargs",
    "bwd_preprocess_block_m", "bwd_configs_for", "bwd_candidates", "bwd_smem_bytes", "bwd_tier", "BWD_TILES", "prune_bwd_dkdv", "prune_bwd_dq", "autotuned_bwd_kernel",
]

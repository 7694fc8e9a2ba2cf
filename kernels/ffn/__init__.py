"""Triton device code of the feed-forward (importable as ``fastattn.kernels.ffn``).

* :mod:`.activations` — the activation codes (``ACTIVATION`` constexpr) and their fp32 device functions;
* :mod:`.linear_act` — the GEMM with a fused epilogue ``act(x @ w.T + b) (+ residual)``, its named config
  lists and prune;
* :mod:`.layernorm` — the fused residual add + LayerNorm.

Launch code lives in ``fastattn.ffn.backends.triton``. Importing this package does not import Triton.
"""

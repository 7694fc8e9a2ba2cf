"""FLOP and byte counts of every benchmarked op: the one place these formulas live.

Conventions (used by every suite, the plots, the README table and ``NOTES.md``):

* A multiply-add is 2 FLOPs. Softmax, scaling, masking and GELU are not counted (they are O(Lq*Lk)
  or O(tokens*hidden) elementwise work next to O(Lq*Lk*D) / O(tokens*d*hidden) matmul work).
* Masked work is excluded. Attention counts only the (query, key) pairs a query row may attend to,
  exactly as the mask semantics of :mod:`fastattn.masks` define them:

  - causal ``"top_left"``: key ``j`` visible from row ``i`` iff ``j <= i``;
  - causal ``"bottom_right"``: iff ``j <= i + Lk - Lq`` (``Lq != Lk`` included; rows with no
    visible key count 0);
  - key padding: iff ``j < key_lengths[b]`` (ANDed with causal). Query rows are *not* removed by a
    key-padding mask: the kernels compute every query row (a padded query row still attends to the
    valid keys), so all ``Lq`` rows count unless ``query_lengths`` is given (varlen-style inputs).

  Forward attention FLOPs = ``2 * pairs * (E + Ev)`` per (batch, query head): ``Q K^T`` and ``P V``.
  (FlashAttention's papers count ``4 * Lq * Lk * D`` and halve it for causal; our causal count is
  the exact triangle, ``L (L + 1) / 2`` pairs for ``Lq == Lk``.)
  Backward: the five products of a FlashAttention-style backward over the same visible pairs:
  ``S = Q K^T`` recomputed (E), ``dV = P^T dO`` (Ev), ``dP = dO V^T`` (Ev), ``dQ = dS K`` (E),
  ``dK = dS^T Q`` (E): ``2 * pairs * (3E + 2Ev)``, i.e. 2.5x the forward when ``E == Ev``; forward +
  backward (``direction="fwd+bwd"``, a training step) ``2 * pairs * (4E + 3Ev)`` = 3.5x the forward.
  This is the *counted* work (FlashAttention's own benchmark convention), not what a kernel executes:
  a backward that recomputes ``S`` and ``dP`` in a separate dQ kernel executes 7 products, not 5.
* Bytes are the algorithmic minimum a fused kernel must move through HBM, not what any particular
  provider moves: read Q (all rows), K and V (valid keys only, per KV head), write O (all rows).
  The backward reads Q, O, dO and writes dQ (all rows), reads K, V and writes dK, dV (valid keys);
  ``fwd+bwd`` is the sum (3x the forward's bytes). Masks, LSE, workspace and re-reads are not
  counted. The same count is used for every provider of a case, so ``gbps`` compares providers on
  equal terms and ``peak_fraction`` is a roofline fraction.
* FFN (``linear -> GELU -> linear``): FLOPs ``2*T*in*hidden + 2*T*hidden*out``; bytes: read ``x``,
  both weights and biases once, write the output (the hidden activation never leaves the chip in a
  fully fused kernel).

Everything here is plain integer arithmetic (no torch), exact for any size.
"""

from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["CAUSAL_NAMES", "DIRECTIONS", "normalize_causal", "visible_pairs", "attention_flops", "attention_bytes",
           "attention_fwd_flops", "attention_fwd_bytes", "encoder_train_flops", "ffn_fwd_flops", "ffn_fwd_bytes",
           "matmul_flops", "copy_bytes", "roofline_fraction"]

CAUSAL_NAMES = ("none", "top_left", "bottom_right")
#: what a timed attention call computes: the forward, the backward alone, or both (a training step)
DIRECTIONS = ("fwd", "bwd", "fwd+bwd")


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return direction


def normalize_causal(causal) -> str:
    """``None``/``False``/``"none"`` -> ``"none"``; ``True`` -> ``"top_left"`` (SDPA ``is_causal``)."""
    if causal is None or causal is False or causal == "none":
        return "none"
    if causal is True:
        return "top_left"
    if causal not in CAUSAL_NAMES:
        raise ValueError(f"causal must be one of {CAUSAL_NAMES} (or a bool), got {causal!r}")
    return causal


def _ramp_sum(n: int, a: int, cap: int) -> int:
    """``sum(min(max(i + a, 0), cap) for i in range(n))`` in O(1)."""
    if n <= 0 or cap <= 0:
        return 0
    lo, hi = a, a + n - 1            # the values t = i + a run over [lo, hi]
    total = 0
    t0, t1 = max(lo, 1), min(hi, cap - 1)  # 0 < t < cap contributes t
    if t1 >= t0:
        total += (t0 + t1) * (t1 - t0 + 1) // 2
    c0 = max(lo, cap)                 # t >= cap contributes cap
    if hi >= c0:
        total += cap * (hi - c0 + 1)
    return total


def visible_pairs(lq: int, lk: int, causal=None, key_length: Optional[int] = None,
                  query_length: Optional[int] = None) -> int:
    """Number of visible (query row, key) pairs of one (batch, head): see the module docstring.
    ``key_length``: valid keys ``[0, key_length)`` (None = all ``lk``); ``query_length``: rows
    ``[0, query_length)`` are computed (None = all ``lq``)."""
    causal = normalize_causal(causal)
    if lq < 0 or lk < 0:
        raise ValueError(f"lq and lk must be >= 0, got lq={lq}, lk={lk}")
    cap = lk if key_length is None else max(0, min(lk, int(key_length)))
    rows = lq if query_length is None else max(0, min(lq, int(query_length)))
    if causal == "none":
        return rows * cap
    off = 0 if causal == "top_left" else lk - lq
    return _ramp_sum(rows, off + 1, cap)  # row i sees min(i + off + 1, cap) keys, at least 0


def _per_batch(batch: int, lengths: Optional[Sequence[int]], name: str):
    if lengths is None:
        return [None] * batch
    lengths = [int(x) for x in lengths]
    if len(lengths) != batch:
        raise ValueError(f"{name} has {len(lengths)} entries but batch={batch}")
    return lengths


def _pairs(batch: int, lq: int, lk: int, causal, key_lengths, query_lengths) -> int:
    kl = _per_batch(batch, key_lengths, "key_lengths")
    ql = _per_batch(batch, query_lengths, "query_lengths")
    return sum(visible_pairs(lq, lk, causal, kl[b], ql[b]) for b in range(batch))


def attention_flops(batch: int, heads_q: int, lq: int, lk: int, head_dim: int, head_dim_v: Optional[int] = None,
                    causal=None, key_lengths: Optional[Sequence[int]] = None,
                    query_lengths: Optional[Sequence[int]] = None, direction: str = "fwd") -> int:
    """Counted FLOPs of ``direction`` over the visible pairs (see the module docstring):
    ``fwd`` ``2 * (E + Ev)``, ``bwd`` ``2 * (3E + 2Ev)``, ``fwd+bwd`` ``2 * (4E + 3Ev)`` per pair and
    query head."""
    e = head_dim
    ev = head_dim if head_dim_v is None else head_dim_v
    per_pair = {"fwd": e + ev, "bwd": 3 * e + 2 * ev, "fwd+bwd": 4 * e + 3 * ev}[_check_direction(direction)]
    return 2 * per_pair * heads_q * _pairs(batch, lq, lk, causal, key_lengths, query_lengths)


def attention_fwd_flops(batch: int, heads_q: int, lq: int, lk: int, head_dim: int, head_dim_v: Optional[int] = None,
                        causal=None, key_lengths: Optional[Sequence[int]] = None,
                        query_lengths: Optional[Sequence[int]] = None) -> int:
    """Forward FLOPs: ``2 * (E + Ev) * heads_q * sum_b visible_pairs(b)``."""
    return attention_flops(batch, heads_q, lq, lk, head_dim, head_dim_v, causal, key_lengths, query_lengths, "fwd")


def attention_bytes(batch: int, heads_q: int, heads_kv: int, lq: int, lk: int, head_dim: int,
                    head_dim_v: Optional[int] = None, elem_bytes: int = 2,
                    key_lengths: Optional[Sequence[int]] = None,
                    query_lengths: Optional[Sequence[int]] = None, direction: str = "fwd") -> int:
    """Minimum HBM traffic of ``direction``. Forward: Q and O of the rows computed, K/V of valid keys per
    KV head. Backward: Q, O, dO read and dQ written per row; K, V read and dK, dV written per valid key
    (2x the forward). ``fwd+bwd``: the sum."""
    ev = head_dim if head_dim_v is None else head_dim_v
    times = {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[_check_direction(direction)]
    kl = _per_batch(batch, key_lengths, "key_lengths")
    ql = _per_batch(batch, query_lengths, "query_lengths")
    total = 0
    for b in range(batch):
        keys = lk if kl[b] is None else max(0, min(lk, kl[b]))
        rows = lq if ql[b] is None else max(0, min(lq, ql[b]))
        total += heads_q * rows * (head_dim + ev) + heads_kv * keys * (head_dim + ev)
    return times * total * elem_bytes


def attention_fwd_bytes(batch: int, heads_q: int, heads_kv: int, lq: int, lk: int, head_dim: int,
                        head_dim_v: Optional[int] = None, elem_bytes: int = 2,
                        key_lengths: Optional[Sequence[int]] = None,
                        query_lengths: Optional[Sequence[int]] = None) -> int:
    """Minimum HBM traffic of a fused forward: Q and O rows computed, K/V of valid keys per KV head."""
    return attention_bytes(batch, heads_q, heads_kv, lq, lk, head_dim, head_dim_v, elem_bytes, key_lengths,
                           query_lengths, "fwd")


def encoder_train_flops(lengths: Sequence[int], layers: int, d_model: int, d_ffn: int, heads: int) -> int:
    """Counted FLOPs of one training step (forward + backward) of a BERT-style encoder over the valid
    tokens of a batch (sequence ``b`` has ``lengths[b]`` tokens; padding is not useful work): per layer
    and token the Q, K, V, output and two FFN projections, ``2 * (4 d^2 + 2 d f)``, times 3 (forward,
    and the two products of the backward); plus the attention of each sequence over its own tokens
    (:func:`attention_flops`, ``fwd+bwd``). Embeddings, pooler, classifier, elementwise work and the
    optimizer are not counted."""
    tokens = sum(int(n) for n in lengths)
    linear = 3 * 2 * (4 * d_model * d_model + 2 * d_model * d_ffn) * tokens
    hd = d_model // heads
    attn = sum(attention_flops(1, heads, int(n), int(n), hd, direction="fwd+bwd") for n in lengths)
    return layers * (linear + attn)


def ffn_fwd_flops(tokens: int, d_in: int, d_hidden: int, d_out: Optional[int] = None) -> int:
    d_out = d_in if d_out is None else d_out
    return 2 * tokens * d_in * d_hidden + 2 * tokens * d_hidden * d_out


def ffn_fwd_bytes(tokens: int, d_in: int, d_hidden: int, d_out: Optional[int] = None, elem_bytes: int = 2,
                  bias: bool = True) -> int:
    d_out = d_in if d_out is None else d_out
    n = tokens * d_in + d_hidden * d_in + d_out * d_hidden + tokens * d_out
    if bias:
        n += d_hidden + d_out
    return n * elem_bytes


def matmul_flops(m: int, n: int, k: int) -> int:
    return 2 * m * n * k


def copy_bytes(numel: int, elem_bytes: int) -> int:
    """A device-to-device copy reads and writes every element."""
    return 2 * numel * elem_bytes


def roofline_fraction(ms: float, flops: Optional[int], nbytes: Optional[int], peak_tflops: Optional[float],
                      peak_gbps: Optional[float]) -> Optional[float]:
    """``max(flops / peak_flops, bytes / peak_bandwidth) / time``: the fraction of this GPU's measured
    roofline the run reached (1.0 = as fast as its binding resource allows). ``None`` when unknown."""
    if not ms or ms <= 0:
        return None
    bound_s = 0.0
    if flops and peak_tflops:
        bound_s = max(bound_s, flops / (peak_tflops * 1e12))
    if nbytes and peak_gbps:
        bound_s = max(bound_s, nbytes / (peak_gbps * 1e9))
    if bound_s == 0.0:
        return None
    return bound_s / (ms * 1e-3)

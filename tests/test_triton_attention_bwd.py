"""The fused Triton attention backward, CPU tier (``TRITON_INTERPRET=1``): dq, dk, dv against autograd
through the float64 reference, with the numerics rule applied to each gradient::

    max|ours - ref64| <= 2 * max|naive_same_dtype - ref64| + floor

(``naive`` = autograd through the same math in the input dtype). Every mask form, GQA/MQA, odd shapes
with the query and key lengths swapped both ways, head dims 8..256 with E != Ev, strided views, rows
with no visible key (dq exactly 0, never NaN), keys no row sees (dk = dv = 0 exactly), pinned tile
shapes for the causal phase splits, dropout through the counter-based keep mask, and determinism.

The backward's inputs ``out`` and ``lse`` come from the forward kernel, as in real use (with dropout:
the same seed and offset). That matters in fp32 at large scores: the
backward's ``delta = rowsum(dO * O)`` carries the forward's rounding of the scores, and only a forward
that rounds them as the backward does makes ``delta`` agree with the recomputed ``P`` (the reference's
``O`` computed by torch's matmul is off by ~1e-5 relative at |scores| ~ 50, and the backward would
inherit that). Case builders and the forward launch are shared with ``tests/test_triton_attention.py``
(loaded by path).

A gradient that is exactly 0 by cancellation (every row sees one key: softmax is constant) has no
magnitude of its own for the rule's floor; there the floor is the dtype's noise at the magnitude of its
summands, ``|scale| * sum_j P_ij (|dP_ij| + |delta_i|) |k_j|`` (see :func:`summand_floor`). ``tests/gpu/test_triton_attention_bwd_gpu.py`` runs
real sizes and bf16.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys
from dataclasses import dataclass
from typing import Optional, Tuple

import pytest
import torch

from fastattn.dropout import dropout_keep_mask
from fastattn.inputs import normalize_attention
from fastattn.masks import KeyPadding
from fastattn.reference import attention_math
from fastattn.testing import assert_close

triton = pytest.importorskip("triton")

_spec = importlib.util.spec_from_file_location(
    "_triton_attention_cases", pathlib.Path(__file__).resolve().parent / "test_triton_attention.py")
if _spec.name in sys.modules:
    cases = sys.modules[_spec.name]
else:
    cases = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = cases  # dataclasses look their module up
    _spec.loader.exec_module(cases)
Case, make_qkv, make_mask, _gen, DTYPES, DEVICE, INTERPRET = (
    cases.Case, cases.make_qkv, cases.make_mask, cases._gen, cases.DTYPES, cases.DEVICE, cases.INTERPRET)

pytestmark = cases.pytestmark + [
    # numpy, inside the interpreter: exp2 of a masked-out score (an out-of-range key column against a
    # row whose LSE is finfo.min) overflows to inf before tl.where discards it, as on the GPU
    pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning"),
]


# ------------------------------------------------------------------------------------------ helpers
@dataclass(frozen=True)
class BwdCase:
    c: Case
    p: float = 0.0                                  # dropout probability
    #: pinned (BLOCK_M, BLOCK_N[, num_warps, num_stages]) of the dK/dV and the dQ kernel
    dkdv: Optional[Tuple[int, ...]] = None
    dq: Optional[Tuple[int, ...]] = None

    @property
    def name(self) -> str:
        s = self.c.name
        if self.p:
            s += f"-drop{self.p:g}"
        if self.dkdv:
            s += "-dkdv" + "x".join(map(str, self.dkdv))
        if self.dq:
            s += "-dq" + "x".join(map(str, self.dq))
        return s

    def config(self):
        cfg = {}
        for fam, t in (("dkdv", self.dkdv), ("dq", self.dq)):
            if t:
                warps, stages = t[2:] if len(t) == 4 else (4, 1 if INTERPRET else 2)
                cfg[fam] = dict(BLOCK_M=t[0], BLOCK_N=t[1], num_warps=warps, num_stages=stages)
        return cfg or None


def run_bwd(inp, out, lse, dout, *, p=0.0, seed=0, offset=0, config=None):
    from fastattn.attention.backends.triton_bwd import attn_bwd_triton
    return attn_bwd_triton(inp.query, inp.key, inp.value, out, lse, dout, inp.mask, inp.scale,
                           dropout_p=p, seed=seed, offset=offset, config=config)


def forward_ref(inp, keep=None):
    """``(out, lse)`` as a kernel returns them: float32 math, output rounded to the input dtype."""
    out, lse = attention_math(inp, torch.float32, dropout_mask=keep, return_lse=True)
    return out.to(inp.dtype), lse.float()


def forward(inp, p=0.0, seed=0, offset=0):
    """The backward's inputs ``(out, lse)`` from the forward kernel (with dropout when ``p > 0``)."""
    from fastattn.attention.backends.triton import _attn_fwd_triton
    out = torch.empty((inp.B, inp.Hq, inp.Lq, inp.Ev), dtype=inp.dtype, device=inp.device)
    lse = _attn_fwd_triton(inp, out, dropout_p=p, seed=seed, offset=offset)
    return out, lse


def ref_grads(inp, keep, dout, cd):
    """Autograd through the reference in ``cd`` (float64 = ground truth; the input dtype = naive),
    from the normalised inputs (the mask stays as given; the reference casts it)."""
    leaves = [t.detach().to(cd).requires_grad_(True) for t in (inp.query, inp.key, inp.value)]
    inp_cd = dataclasses.replace(inp, query=leaves[0], key=leaves[1], value=leaves[2])
    out = attention_math(inp_cd, cd, dropout_mask=keep if inp.dropout_p > 0 else None)
    return torch.autograd.grad(out, leaves, dout.to(cd))


def summand_floor(inp, keep, dout):
    """Noise floors for dq and dk where the reference gradient is exactly 0 by cancellation:
    ``NOISE[dtype] * max |scale| sum_j P_ij (|dP_ij| + |delta_i|) |k_j|`` (and the same over rows with
    ``|q_i|`` for dk), from float64 P and dP (dropout included)."""
    from fastattn.reference import expand_kv, scores_and_keep
    from fastattn.testing import NOISE
    q, k, v = (t.to(torch.float64) for t in (inp.query, inp.key, inp.value))
    ke, ve = expand_kv(k, inp.Hq), expand_kv(v, inp.Hq)
    s, row_has = scores_and_keep(inp, q, ke)
    if row_has is not None:
        s = s.masked_fill(~row_has, 0.0)
    P = torch.softmax(s, dim=-1) * (row_has if row_has is not None else 1.0)
    dP = dout.to(torch.float64) @ ve.transpose(-1, -2)
    if keep is not None:
        dP = dP * keep / (1.0 - inp.dropout_p)
    delta = (P * dP).sum(-1, keepdim=True)
    w = P * (dP.abs() + delta.abs()) * abs(inp.scale)                 # (B, Hq, Lq, Lk)
    tq = float((w @ ke.abs()).max())
    B, Hkv, g = inp.B, inp.Hkv, inp.Hq // inp.Hkv
    tk = float((w.transpose(-1, -2) @ q.abs()).view(B, Hkv, g, inp.Lk, inp.E).sum(2).max())
    return NOISE[inp.dtype] * tq, NOISE[inp.dtype] * tk


def visibility(inp) -> torch.Tensor:
    """Structural visibility ``(B, Hq, Lq, Lk)``: True where the key can receive probability."""
    B, Hq, Lq, Lk = inp.B, inp.Hq, inp.Lq, inp.Lk
    vis = torch.ones((B, Hq, Lq, Lk), dtype=torch.bool, device=inp.device)
    keep = inp.mask.keep(B, Lq, Lk, inp.device)
    if keep is not None:
        vis = vis & keep
    bias = inp.mask.bias()
    if bias is not None:
        vis = vis & ~torch.isneginf(bias)
    return vis


def check_grads(name, inp, grads, ref, naive, keep=None, dout=None):
    dq, dk, dv = grads
    for g, n in zip(grads, "qkv"):
        assert not torch.isnan(g).any(), f"{name}: NaN in d{n}"
    floors = None
    for g, r, nv, n in zip(grads, ref, naive, "qkv"):
        if n != "v" and r.numel() and float(r.abs().max()) == 0.0 and dout is not None:
            # exactly 0 by cancellation: the floor at the summands' magnitude (module docstring)
            floors = floors or summand_floor(inp, keep, dout)
            floor = floors[0] if n == "q" else floors[1]
            err = float(g.double().abs().max())
            print(f"{name} [d{n}]: reference is exactly 0; max |ours| {err:.3e} vs summand floor {floor:.3e}")
            assert err <= floor, f"{name} [d{n}]: {err:.3e} > summand floor {floor:.3e}"
            continue
        assert_close(g, r, nv, inp.dtype, f"{name} [d{n}]")
    vis = visibility(inp)
    empty_rows = ~vis.any(dim=-1)                                       # (B, Hq, Lq)
    if empty_rows.any():
        assert (dq[empty_rows] == 0).all(), f"{name}: dq of rows with no visible key is not exactly 0"
    B, Hkv, Lk = inp.B, inp.Hkv, inp.Lk
    unseen = ~vis.view(B, Hkv, inp.Hq // Hkv, inp.Lq, Lk).any(dim=3).any(dim=2)  # (B, Hkv, Lk)
    if unseen.any():
        assert (dk[unseen] == 0).all() and (dv[unseen] == 0).all(), f"{name}: keys no row sees have dk/dv != 0"
    return empty_rows, unseen


def run_bwd_case(bc: BwdCase, mult=(1.0, 1.0, 1.0), seed=1234, offset=0):
    c = bc.c
    g = _gen(bc.name + str(mult))
    q, k, v = make_qkv(c, g, mult)
    attn_mask, is_causal = make_mask(c, g)
    gqa = c.Hq != c.Hkv
    inp = normalize_attention(q, k, v, attn_mask, bc.p, is_causal, c.scale, enable_gqa=gqa)
    keep = dropout_keep_mask(seed, offset, inp.B, inp.Hq, inp.Lq, inp.Lk, bc.p, DEVICE) if bc.p > 0 else None
    out, lse = forward(inp, bc.p, seed, offset)
    dout = (torch.randn(out.shape, generator=g)).to(inp.dtype).to(DEVICE)
    grads = run_bwd(inp, out, lse, dout, p=bc.p, seed=seed, offset=offset, config=bc.config())
    ref = ref_grads(inp, keep, dout, torch.float64)
    naive = ref_grads(inp, keep, dout, inp.dtype)
    check_grads(bc.name, inp, grads, ref, naive, keep, dout)
    return inp, out, lse, dout, grads


# ------------------------------------------------------------------------------ the main case matrix
SHAPES = [(37, 70), (70, 37), (113, 203), (203, 113), (1, 45), (45, 1)]
#: the long shapes run the masks whose block skipping differs most (the interpreter is slow)
LONG_MASKS = ["causal_br", "key_lengths", "key_mask+causal_tl", "dense_float"]
MASKS = ["none", "causal_tl", "causal_br", "key_lengths", "key_lengths+causal_br", "key_mask",
         "key_mask+causal_tl", "dense_bool", "dense_bool_2d", "dense_float", "dense_keyvec"]
HEAD_DIMS = [(8, 8), (59, 59), (80, 80), (96, 96), (16, 32), (128, 128), (32, 80), (256, 64)]
HEADS = [(2, 2), (4, 2), (3, 1)]


def _matrix():
    """Each shape x mask once; dtype (fp16/fp32, bf16 now and then: the interpreter upcasts its dots),
    head dims and head grouping rotate. Small B*H on the long shapes keeps the interpreter fast."""
    out, i = [], 0
    for Lq, Lk in SHAPES:
        big = Lq * Lk > 10000
        for mask in (LONG_MASKS if big else MASKS):
            E, Ev = HEAD_DIMS[i % len(HEAD_DIMS)] if not big else ((59, 59), (80, 80), (32, 48), (96, 96))[i % 4]
            Hq, Hkv = HEADS[i % 3] if not big else ((2, 1), (1, 1))[i % 2]
            dt = ("fp16", "fp32", "fp16", "fp32", "bf16")[i % 5]
            B = 2 if mask.startswith(("key_", "dense_bool", "dense_keyvec")) or i % 4 == 0 else 1
            out.append(BwdCase(Case(B, Hq, Hkv, Lq, Lk, E, dt, mask, Ev=Ev)))
            i += 1
    return out


@pytest.mark.parametrize("bc", _matrix(), ids=lambda bc: bc.name)
def test_matrix(bc):
    run_bwd_case(bc)


def test_matrix_covers_everything():
    cs = [bc.c for bc in _matrix()]
    assert {(c.E, c.Ev) for c in cs} >= set(HEAD_DIMS)
    assert {(c.Hq, c.Hkv) for c in cs} >= set(HEADS)
    assert {c.dtype for c in cs} == set(DTYPES)
    assert {(c.Lq, c.Lk) for c in cs} == set(SHAPES)
    assert {c.mask for c in cs} == set(MASKS)


# -------------------------------------------------------------------------------- tiles and splits
@pytest.mark.parametrize("tiles", [((16, 64), (64, 16)), ((64, 16), (16, 64))],
                         ids=lambda t: f"dkdv{t[0][0]}x{t[0][1]}-dq{t[1][0]}x{t[1][1]}")
@pytest.mark.parametrize("mask,shape", [("causal_br", (50, 110)), ("causal_tl", (110, 50)),
                                        ("key_mask+causal_br", (110, 50)), ("key_lengths+causal_tl", (50, 110))],
                         ids=lambda x: x if isinstance(x, str) else f"q{x[0]}-k{x[1]}")
def test_block_shapes(tiles, mask, shape):
    """BLOCK_M != BLOCK_N in both kernels: the diagonal / off-diagonal split of the dK/dV query loop
    and the dQ key loop must be exact for any tile shape, not only the interpreter's default."""
    run_bwd_case(BwdCase(Case(2, 2, 1, shape[0], shape[1], 16, "fp32", mask), dkdv=tiles[0], dq=tiles[1]))


# ----------------------------------------------------------------------------------- mask specifics
def test_empty_rows_and_unseen_keys():
    """Rows with no visible key (bottom-right Lq > Lk, an all-False bool row, an all--inf float row)
    get dq == 0 exactly; key columns nobody sees (masked for every row and head) get dk == dv == 0."""
    g = _gen("empty_rows")
    B, Hq, Hkv, Lq, Lk, E = 2, 2, 1, 40, 50, 32
    q = cases._randn(g, (B, Hq, Lq, E), torch.float16)
    k = cases._randn(g, (B, Hkv, Lk, E), torch.float16)
    v = cases._randn(g, (B, Hkv, Lk, E), torch.float16)
    bmask = torch.rand((B, 1, Lq, Lk), generator=g) < 0.7
    bmask[..., 5, :] = False                   # an empty row in every head
    bmask[..., :, 10:14] = False               # keys nobody sees
    bmask[1, ..., 33:] = False                 # a whole tail block of batch 1
    fmask = torch.randn((1, Hq, Lq, Lk), generator=g)
    fmask[..., 7, :] = float("-inf")
    fmask[..., :, 40:] = float("-inf")
    for name, m in (("bool", bmask.to(DEVICE)), ("float", fmask.to(DEVICE)),
                    ("causal_br_q40_k20", "causal_br")):
        kk, vv = (k, v) if name != "causal_br_q40_k20" else (k[:, :, :20], v[:, :, :20])
        if m == "causal_br":
            from torch.nn.attention.bias import causal_lower_right
            m = causal_lower_right(Lq, 20)
        inp = normalize_attention(q, kk, vv, m, enable_gqa=True)
        out, lse = forward(inp)
        dout = cases._randn(g, out.shape, torch.float16)
        grads = run_bwd(inp, out, lse, dout)
        ref = ref_grads(inp, None, dout, torch.float64)
        naive = ref_grads(inp, None, dout, torch.float16)
        empty, unseen = check_grads(f"empty-{name}", inp, grads, ref, naive, None, dout)
        assert empty.any() and (name == "causal_br_q40_k20" or unseen.any()), name


def test_nothing_visible_anywhere():
    """Every key masked (zero lengths, an empty key mask), and Lk == 0: all gradients exactly 0."""
    g = _gen("nothing")
    q = cases._randn(g, (2, 2, 30, 32), torch.float32)
    k, v = cases._randn(g, (2, 2, 20, 32), torch.float32), cases._randn(g, (2, 2, 20, 32), torch.float32)
    for name, m in (("zero_lengths", KeyPadding(lengths=torch.zeros(2, dtype=torch.int64, device=DEVICE))),
                    ("empty_keymask", KeyPadding(mask=torch.zeros(2, 20, dtype=torch.bool, device=DEVICE))),
                    ("bool_false", torch.zeros(30, 20, dtype=torch.bool, device=DEVICE))):
        inp = normalize_attention(q, k, v, m)
        out, lse = forward_ref(inp)
        assert torch.isneginf(lse).all()
        dq, dk, dv = run_bwd(inp, out, lse, torch.randn_like(out))
        assert (dq == 0).all() and (dk == 0).all() and (dv == 0).all(), name
    k0 = k[:, :, :0]
    inp = normalize_attention(q, k0, k0)
    out, lse = torch.zeros_like(q), torch.full(q.shape[:3], float("-inf"))
    dq, dk, dv = run_bwd(inp, out, lse, torch.randn_like(out))
    assert (dq == 0).all() and dk.shape == k0.shape and dv.shape == k0.shape


@pytest.mark.parametrize("scale", [0.5, -0.3, 0.0])
def test_custom_scale(scale):
    """Any finite scale; <= 0 takes the natural-units path."""
    run_bwd_case(BwdCase(Case(1, 2, 2, 33, 71, 64, "fp32", "key_mask+causal_tl", scale=scale)))


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_overflow_prone_magnitudes(dtype):
    """q x5, k and v x3: scores far beyond exp's range without the saved LSE."""
    run_bwd_case(BwdCase(Case(1, 2, 1, 65, 97, 64, dtype, "causal_br")), mult=(5.0, 3.0, 3.0))


# ------------------------------------------------------------------------------------ memory layout
@pytest.mark.parametrize("bc", [
    BwdCase(Case(2, 6, 2, 53, 53, 40, "fp16", "causal_tl", layout="packed")),
    BwdCase(Case(2, 4, 1, 41, 67, 80, "fp16", "causal_br", layout="blhd")),
    BwdCase(Case(1, 2, 2, 41, 67, 32, "fp32", "dense_float", Ev=48, layout="blhd")),
], ids=lambda bc: bc.name)
def test_strided_views(bc):
    run_bwd_case(bc)


def test_grad_layout_and_out_buffers():
    """Gradients of (B, L, H, D) views keep that layout; given buffers (views into one packed dqkv) are
    written in place; a dout with stride 0 on every dim (``out.sum()``'s gradient) works."""
    from fastattn.attention.backends.triton_bwd import attn_bwd_triton
    g = _gen("layouts")
    B, H, L, E = 2, 2, 37, 32
    qkv = cases._randn(g, (B, L, 3 * H, E), torch.float32)
    q, k, v = (qkv[:, :, i * H:(i + 1) * H].transpose(1, 2) for i in range(3))
    inp = normalize_attention(q, k, v, is_causal=True)
    out, lse = forward(inp)
    ones = torch.ones((), device=DEVICE).expand(out.shape)
    dq, dk, dv = run_bwd(inp, out, lse, ones)
    ref = ref_grads(inp, None, ones, torch.float64)
    naive = ref_grads(inp, None, ones, torch.float32)
    check_grads("stride0-dout", inp, (dq, dk, dv), ref, naive, None, ones)
    bl = cases._randn(g, (B, L, H, E), torch.float32).transpose(1, 2)
    inp2 = normalize_attention(bl, bl, bl)
    out2, lse2 = forward(inp2)
    dq2, _, _ = run_bwd(inp2, out2, lse2, torch.ones_like(out2))
    assert dq2.stride() == bl.stride()
    dqkv = torch.full_like(qkv, float("nan"))
    views = [dqkv[:, :, i * H:(i + 1) * H].transpose(1, 2) for i in range(3)]
    r = attn_bwd_triton(q, k, v, out, lse, ones, inp.mask, inp.scale, dq=views[0], dk=views[1], dv=views[2])
    assert all(a is b for a, b in zip(r, views))
    assert torch.equal(views[0], dq) and torch.equal(views[1], dk) and torch.equal(views[2], dv)


def test_nan_filled_buffers_are_never_read():
    """q/k/v/out/dout/mask as views into NaN-filled buffers: gradients are bitwise equal to the run on
    clean contiguous copies, so nothing out of bounds is read."""
    from torch.nn.attention.bias import causal_lower_right
    g = _gen("nan_views")
    B, Hq, Hkv, Lq, Lk, E, Ev = 2, 2, 1, 37, 45, 40, 24

    def padded(shape, extra=(1, 5, 8), dtype=torch.float16):
        buf = torch.full((shape[0], shape[1] + extra[0], shape[2] + extra[1], shape[3] + extra[2]),
                         float("nan"), dtype=dtype, device=DEVICE)
        o = [min(1, e) for e in extra]
        view = buf[:, o[0]:o[0] + shape[1], o[1]:o[1] + shape[2], o[2]:o[2] + shape[3]]
        view.copy_(cases._randn(g, shape, dtype))
        return view

    for mask_kind in ("causal_br", "key_lengths", "dense_float"):
        q, k, v = padded((B, Hq, Lq, E)), padded((B, Hkv, Lk, E)), padded((B, Hkv, Lk, Ev))
        if mask_kind == "dense_float":
            m = padded((B, Hq, Lq, Lk), (0, 3, 9), torch.float32)
        elif mask_kind == "key_lengths":
            m = KeyPadding(lengths=torch.tensor([Lk - 7, 3], device=DEVICE))
        else:
            m = causal_lower_right(Lq, Lk)
        inp = normalize_attention(q, k, v, m, enable_gqa=True)
        o, lse = forward_ref(inp)
        out, dout = padded(o.shape), padded(o.shape)
        out.copy_(o)
        grads = run_bwd(inp, out, lse, dout)
        clean = normalize_attention(q.contiguous(), k.contiguous(), v.contiguous(),
                                    m.contiguous() if isinstance(m, torch.Tensor) else m, enable_gqa=True)
        grads_c = run_bwd(clean, out.contiguous(), lse, dout.contiguous())
        for a, b, n in zip(grads, grads_c, "qkv"):
            assert not torch.isnan(a).any(), f"{mask_kind}: NaN in d{n}"
            assert torch.equal(a, b), f"{mask_kind}: d{n} differs from the clean run"


# ------------------------------------------------------------------------------------- determinism
def test_deterministic():
    """No atomics: two runs are bitwise equal, with and without dropout, under
    ``torch.use_deterministic_algorithms(True)``."""
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for p in (0.0, 0.3):
            inp, out, lse, dout, grads = run_bwd_case(
                BwdCase(Case(2, 2, 1, 40, 70, 40, "fp16", "key_mask+causal_br"), p=p))
            for _ in range(2):
                again = run_bwd(inp, out, lse, dout, p=p, seed=1234)
                assert all(torch.equal(a, b) for a, b in zip(grads, again)), f"p={p}: not bitwise reproducible"
    finally:
        torch.use_deterministic_algorithms(prev)


# ---------------------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("bc", [
    BwdCase(Case(2, 2, 1, 37, 70, 59, "fp32", "causal_br"), p=0.2),
    BwdCase(Case(1, 3, 1, 70, 37, 32, "fp16", "key_mask"), p=0.5),
    BwdCase(Case(2, 2, 2, 45, 45, 64, "fp16", "dense_float", Ev=32), p=0.1),
    BwdCase(Case(1, 2, 2, 50, 90, 48, "fp32", "none"), p=0.9),
    BwdCase(Case(2, 2, 1, 70, 150, 32, "fp32", "key_lengths+causal_tl"), p=0.3, dkdv=(16, 64), dq=(64, 16)),
], ids=lambda bc: bc.name)
def test_dropout_grads(bc):
    """Gradients with dropout against the reference computed with ``dropout_keep_mask`` (a wrong keep
    bit anywhere moves a gradient by O(1/(1-p)) and fails the rule)."""
    run_bwd_case(bc, seed=0x5EED + int(bc.p * 100), offset=12)


def test_dropout_mask_recovered_exactly():
    """Recover the keep mask the backward kernels use, bit for bit, and compare with
    ``dropout_keep_mask``: with q = 0 every visible probability is 1/Lk, so

    * dK/dV: with dO[b, h, i] = e_i (one-hot rows), dV[b, h, j, i] = Z[i, j] / (Lk (1 - p));
    * dQ: with k[j] = e_j, v[j] = e_0 and dO[i] = e_0, dq[i, j] = scale * (Z[i, j] / (1 - p) - delta_i) / Lk,
      two values per row: kept keys sit 1/(Lk (1 - p)) * scale above dropped ones.

    Lk = 45 is not a multiple of the tile nor of 4 (the interleaved Philox words), B*H = 6 heads."""
    B, H, Lq, Lk, D, p = 2, 3, 40, 45, 64, 0.35
    seed, offset = 0xDEADBEEF12345, (7 << 32) + 99
    keep = dropout_keep_mask(seed, offset, B, H, Lq, Lk, p).to(DEVICE)
    eye = torch.eye(D, device=DEVICE)
    # dK/dV: dO rows one-hot
    q = torch.zeros((B, H, Lq, D), device=DEVICE)
    k = torch.randn((B, H, Lk, D), device=DEVICE)
    v = torch.randn((B, H, Lk, D), device=DEVICE)
    inp = normalize_attention(q, k, v, None, p)
    out, lse = forward_ref(inp, keep)
    dout = eye[:Lq].expand(B, H, Lq, D)
    _, _, dv = run_bwd(inp, out, lse, dout, p=p, seed=seed, offset=offset)
    z_dkdv = dv[..., :Lq].transpose(-1, -2) * (Lk * (1 - p))        # (B, H, Lq, Lk): 1 kept, 0 dropped
    assert torch.allclose(z_dkdv, keep.float(), atol=1e-4), "dK/dV kernel's keep mask differs"
    # dQ
    k = eye[:Lk].expand(B, H, Lk, D).contiguous()
    v = eye[:1].expand(B, H, Lk, D).contiguous()
    inp = normalize_attention(q, k, v, None, p, scale=1.0)
    out, lse = forward_ref(inp, keep)
    dout = eye[:1].expand(B, H, Lq, D).contiguous()
    dq, _, _ = run_bwd(inp, out, lse, dout, p=p, seed=seed, offset=offset)
    dq = dq[..., :Lk]
    delta = (out.float() * dout).sum(-1, keepdim=True)
    z_dq = (dq * Lk + delta) * (1 - p)                                # 1 kept, 0 dropped
    assert torch.allclose(z_dq, keep.float(), atol=1e-4), "dQ kernel's keep mask differs"


def test_dropout_seed_and_offset():
    """Same (seed, offset): bitwise the same gradients; another seed or offset: different ones."""
    bc = BwdCase(Case(1, 2, 2, 40, 60, 32, "fp32", "causal_tl"), p=0.25)
    inp, out, lse, dout, grads = run_bwd_case(bc, seed=11, offset=4)
    same = run_bwd(inp, out, lse, dout, p=0.25, seed=11, offset=4)
    assert all(torch.equal(a, b) for a, b in zip(grads, same))
    for seed, offset in ((12, 4), (11, 8), (11 + (1 << 32), 4), (11, 4 + (1 << 32))):
        other = run_bwd(inp, out, lse, dout, p=0.25, seed=seed, offset=offset)
        assert not torch.equal(grads[2], other[2]), (seed, offset)


def test_dropout_fd_check():
    """Forward and backward use the same keep mask: a central finite difference of
    ``<dO, attention(q + t dq, k + t dk, v + t dv)>`` under one fixed mask (the one the kernel
    regenerates from (seed, offset)) matches ``<grads, (dq, dk, dv)>`` (float64 forward)."""
    g = _gen("fd")
    B, Hq, Hkv, Lq, Lk, E, p = 1, 2, 1, 23, 31, 16, 0.4
    q, k, v = (torch.randn(s, generator=g, dtype=torch.float64) for s in
               ((B, Hq, Lq, E), (B, Hkv, Lk, E), (B, Hkv, Lk, E)))
    dirs = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (q, k, v)]
    dout = torch.randn((B, Hq, Lq, E), generator=g, dtype=torch.float64)
    keep = dropout_keep_mask(77, 5, B, Hq, Lq, Lk, p)

    def f(t):
        qq, kk, vv = (x + t * d for x, d in zip((q, k, v), dirs))
        inp = normalize_attention(qq, kk, vv, None, p, True, None, enable_gqa=True)
        return float((attention_math(inp, torch.float64, dropout_mask=keep) * dout).sum())

    h = 1e-4
    fd = (f(h) - f(-h)) / (2 * h)
    q32, k32, v32 = (t.float().to(DEVICE) for t in (q, k, v))
    inp = normalize_attention(q32, k32, v32, None, p, True, None, enable_gqa=True)
    out, lse = forward_ref(inp, keep.to(DEVICE))
    grads = run_bwd(inp, out, lse, dout.float().to(DEVICE), p=p, seed=77, offset=5)
    analytic = sum(float((gr.double().cpu() * d).sum()) for gr, d in zip(grads, dirs))
    print(f"fd {fd:.8f} analytic {analytic:.8f}")
    assert abs(fd - analytic) <= 1e-4 * max(1.0, abs(fd)), (fd, analytic)
    wrong = dropout_keep_mask(78, 5, B, Hq, Lq, Lk, p)   # another mask is far off: the check has teeth
    grads_w = run_bwd(inp, forward_ref(inp, wrong.to(DEVICE))[0], lse, dout.float().to(DEVICE), p=p, seed=78,
                      offset=5)
    analytic_w = sum(float((gr.double().cpu() * d).sum()) for gr, d in zip(grads_w, dirs))
    assert abs(fd - analytic_w) > 100 * abs(fd - analytic)


def test_dropout_p_one_gives_zero_grads():
    g = _gen("p1")
    q = cases._randn(g, (1, 2, 20, 16), torch.float32)
    inp = normalize_attention(q, q, q)
    dq, dk, dv = run_bwd(inp, torch.zeros_like(q), torch.zeros(1, 2, 20), torch.ones_like(q), p=1.0)
    assert (dq == 0).all() and (dk == 0).all() and (dv == 0).all()


# ------------------------------------------------------------------------- configs and the prune
#: Compile-only measurements (triton 3.9, ptxas -v, 2 stages; ``benchmarks/compile_check.py --family
#: bwd_dkdv|bwd_dq --configs ...``): (family, arch, dtype, E, mask, BLOCK_M, BLOCK_N, warps) -> (registers,
#: spilled). The tiles of ``BWD_TILES`` come from these; the ones that spilled must never be kept.
BWD_SPILLS = {
    # sm_90 dK/dV
    ("dkdv", 90, "fp16", 64, "causal", 16, 64, 4): (162, False),
    ("dkdv", 90, "fp16", 64, "causal+key_mask", 32, 64, 4): (196, False),
    ("dkdv", 90, "fp16", 64, "causal", 64, 64, 4): (255, True),
    ("dkdv", 90, "fp16", 64, "causal+key_mask", 32, 128, 8): (197, False),
    ("dkdv", 90, "fp16", 128, "causal+key_mask", 16, 64, 4): (237, False),
    ("dkdv", 90, "fp16", 128, "causal+key_mask", 32, 64, 8): (221, False),
    ("dkdv", 90, "fp16", 128, "causal+key_mask", 16, 128, 8): (229, False),
    ("dkdv", 90, "fp16", 256, "causal", 16, 64, 4): (255, True),
    ("dkdv", 90, "fp16", 256, "causal", 32, 64, 8): (255, True),
    ("dkdv", 90, "fp16", 256, "causal", 32, 32, 4): (255, True),
    ("dkdv", 90, "fp16", 256, "causal+key_mask", 16, 32, 4): (244, False),
    ("dkdv", 90, "fp16", 64, "dense_f16+dropout", 16, 64, 4): (218, False),
    ("dkdv", 90, "fp16", 64, "dense_f16+dropout", 32, 64, 4): (255, True),
    ("dkdv", 90, "fp16", 64, "dense_f16+dropout", 16, 128, 8): (238, False),
    ("dkdv", 90, "fp16", 128, "dense_f16+dropout", 16, 64, 4): (255, True),
    ("dkdv", 90, "fp16", 128, "dense_f16+dropout", 16, 128, 8): (255, True),
    ("dkdv", 90, "fp16", 128, "dense_f16+dropout", 16, 64, 8): (234, False),
    ("dkdv", 90, "fp16", 128, "dense_f16+dropout", 16, 32, 4): (249, False),
    ("dkdv", 90, "fp16", 256, "dense_f16+dropout", 16, 32, 4): (255, True),
    ("dkdv", 90, "fp16", 256, "dense_f16+dropout", 16, 32, 8): (254, False),
    ("dkdv", 90, "fp16", 128, "causal+key_mask+dense_f16+dropout", 16, 64, 8): (255, True),
    ("dkdv", 90, "fp16", 128, "causal+key_mask+dense_f16+dropout", 16, 32, 8): (184, False),
    ("dkdv", 90, "fp16", 256, "causal+key_mask+dense_f16+dropout", 16, 32, 8): (253, False),
    ("dkdv", 90, "fp32", 128, "causal+key_mask+dense_f16+dropout", 16, 32, 4): (255, True),
    ("dkdv", 90, "fp32", 128, "causal+key_mask+dense_f16+dropout", 16, 32, 8): (137, False),
    ("dkdv", 90, "fp32", 256, "causal+key_mask+dense_f16+dropout", 16, 16, 4): (255, True),
    ("dkdv", 90, "fp32", 256, "causal+key_mask+dense_f16+dropout", 16, 16, 8): (132, False),
    # sm_90 dQ
    ("dq", 90, "fp16", 64, "causal", 128, 64, 8): (168, False),
    ("dq", 90, "fp16", 128, "causal+key_mask", 64, 32, 4): (231, False),
    ("dq", 90, "fp16", 128, "causal+key_mask", 128, 64, 8): (255, True),
    ("dq", 90, "fp16", 128, "causal", 128, 32, 8): (176, False),
    ("dq", 90, "fp16", 256, "causal+key_mask", 64, 16, 4): (255, True),
    ("dq", 90, "fp16", 256, "causal+key_mask", 128, 32, 8): (247, False),
    ("dq", 90, "fp16", 256, "causal", 64, 32, 8): (255, True),
    ("dq", 90, "fp16", 64, "dense_f16+dropout", 128, 32, 8): (231, False),
    ("dq", 90, "fp16", 128, "dense_f16+dropout", 64, 16, 4): (236, False),
    ("dq", 90, "fp16", 128, "dense_f16+dropout", 128, 16, 8): (228, False),
    ("dq", 90, "fp16", 256, "dense_f16+dropout", 64, 16, 8): (255, True),
    ("dq", 90, "fp16", 256, "causal+key_mask+dense_f16+dropout", 32, 16, 8): (168, False),
    ("dq", 90, "fp16", 256, "causal+key_mask+dense_f16+dropout", 128, 16, 8): (255, True),
    ("dq", 90, "fp32", 128, "causal+key_mask+dense_f16+dropout", 64, 16, 8): (255, True),
    ("dq", 90, "fp32", 128, "causal+key_mask+dense_f16+dropout", 32, 16, 8): (106, False),
    # sm_80 dK/dV
    ("dkdv", 80, "fp16", 64, "causal+key_mask", 32, 64, 4): (218, False),
    ("dkdv", 80, "fp16", 64, "causal", 64, 64, 8): (255, True),
    ("dkdv", 80, "fp16", 128, "causal+key_mask", 16, 128, 8): (244, False),
    ("dkdv", 80, "fp16", 256, "causal", 16, 64, 4): (255, True),
    ("dkdv", 80, "fp16", 256, "causal+key_mask", 16, 32, 8): (168, False),
    ("dkdv", 80, "fp16", 64, "dense_f16+dropout", 32, 64, 8): (255, True),
    ("dkdv", 80, "fp16", 64, "dense_f16+dropout", 16, 64, 8): (240, False),
    ("dkdv", 80, "fp16", 128, "dense_f16+dropout", 16, 32, 8): (180, False),
    ("dkdv", 80, "fp16", 128, "causal+key_mask+dense_f16+dropout", 32, 64, 8): (255, True),
    ("dkdv", 80, "fp16", 128, "causal+key_mask+dense_f16+dropout", 16, 32, 8): (245, False),
    # sm_80 dQ
    ("dq", 80, "fp16", 64, "causal", 64, 64, 4): (255, True),
    ("dq", 80, "fp16", 128, "causal+key_mask", 64, 32, 4): (240, False),
    ("dq", 80, "fp16", 256, "causal", 64, 16, 4): (255, True),
    ("dq", 80, "fp16", 256, "causal+key_mask", 64, 16, 8): (238, False),
    ("dq", 80, "fp16", 128, "dense_f16+dropout", 64, 32, 8): (220, False),
    ("dq", 80, "fp16", 256, "dense_f16+dropout", 32, 16, 8): (164, False),
    ("dq", 80, "fp16", 128, "causal+key_mask+dense_f16+dropout", 128, 32, 8): (255, True),
    ("dq", 80, "fp16", 256, "causal+key_mask+dense_f16+dropout", 128, 16, 8): (255, True),
    ("dq", 80, "fp16", 256, "causal+key_mask+dense_f16+dropout", 32, 16, 8): (255, False),
    # sm_80 fp32 (full compile_check --arch 80 after the varlen families were added)
    ("dkdv", 80, "fp32", 64, "dense_f32+dropout", 16, 32, 8): (80, True),
    ("dkdv", 80, "fp32", 64, "dense_f32+dropout", 16, 16, 4): (96, False),
}


def _kept(family, arch, dtype, E, mask, tile):
    from fastattn.kernels import attention as K
    parts = set(mask.split("+"))
    dense = 1 if "dense_bool" in parts else 2 if any(p.startswith("dense_f") for p in parts) else 0
    bd = max(16, 1 << (E - 1).bit_length())
    cap = (arch // 10, arch % 10)
    smem = {90: 227 * 1024, 80: 163 * 1024}[arch]
    kept = K.bwd_candidates(family, cap, smem, bd, bd, 4 if dtype == "fp32" else 2, dense, "key_mask" in parts,
                            "dropout" in parts, bool(parts & {"causal", "key_lens", "key_mask"}))
    return any((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) == tile for c in kept)


def test_bwd_prune_keeps_no_measured_spill():
    """Every compile-only point that spilled is pruned for its specialisation (and for every lighter
    tier that shares its tile list); the measured non-spilling tiles of the table are kept."""
    for (fam, arch, dtype, E, mask, bm, bn, w), (regs, spilled) in BWD_SPILLS.items():
        kept = _kept(fam, arch, dtype, E, mask, (bm, bn, w))
        assert not (spilled and kept), f"{fam} sm_{arch} {dtype} E{E} {mask} {(bm, bn, w)} spills but is kept"


def test_bwd_every_head_dim_has_configs():
    """Every head dim 8..256 (E != Ev too), dtype, arch (incl. a 100 KB sm_86 part) and mask tier keeps at
    least one config, and each kept config fits the part's shared memory."""
    from fastattn.kernels import attention as K
    for fam in ("dkdv", "dq"):
        for cap, smem in (((9, 0), 227 * 1024), ((8, 0), 163 * 1024), ((8, 6), 99 * 1024)):
            for elem in (2, 4):
                for E, Ev in ((8, 8), (59, 59), (64, 128), (128, 128), (256, 256), (256, 64)):
                    bd, bdv = max(16, 1 << (E - 1).bit_length()), max(16, 1 << (Ev - 1).bit_length())
                    for dense, km, drop, st in ((0, False, False, False), (0, True, True, True),
                                                (2, False, True, False), (1, True, False, True)):
                        cands = K.bwd_candidates(fam, cap, smem, bd, bdv, elem, dense, km, drop, st)
                        assert cands, (fam, cap, elem, E, Ev, dense, km, drop)
                        for c in cands:
                            assert c in K.bwd_configs_for(fam, cap) or c.num_stages == 1
                            assert K.bwd_smem_bytes(fam, c, bd, bdv, elem) <= smem or c.num_stages == 1


def test_bwd_autotune_winner_is_remembered(monkeypatch):
    """The autotuned backward (a GPU's path, simulated: a device reporting sm_90, the autotuner and the
    kernels replaced by recorders): dQ and dK/dV go through triton.autotune once per key, later calls
    launch the remembered winners with fixed grids."""
    from types import SimpleNamespace

    from fastattn.attention.backends import triton_bwd as TB
    from fastattn.kernels import attention as K
    tuned, launched = [], []

    class Tuner:
        def __init__(self, family):
            self.family = family
            self.best_config = SimpleNamespace(kwargs={"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=2)

        def __getitem__(self, grid):
            return lambda *a, **kw: tuned.append((self.family, grid({"BLOCK_M": 64, "BLOCK_N": 32})))

    class Kernel:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *a, **kw: launched.append((self.name, grid, kw.get("num_warps")))

    monkeypatch.setattr(K, "autotuned_bwd_kernel", lambda family, cap: Tuner(family))
    for n in ("_attn_bwd_dq_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_preprocess_kernel"):
        monkeypatch.setattr(K, n, Kernel(n))
    monkeypatch.setattr(TB, "device_info", lambda dev: SimpleNamespace(capability=(9, 0), index=0))
    monkeypatch.setattr(TB, "_TUNED", {})
    B, H, L, E = 1, 2, 100, 16
    q, k, v, out, dout = (torch.randn(B, H, L, E, dtype=torch.float16) for _ in range(5))
    lse = torch.zeros(B, H, L)
    for _ in range(3):
        TB.attn_bwd_triton(q, k, v, out, lse, dout, None, E ** -0.5)
    assert tuned == [("dq", (2 * B * H,)), ("dkdv", (4 * B * H,))]
    main = [x for x in launched if x[0] != "_attn_bwd_preprocess_kernel"]
    assert main == [("_attn_bwd_dq_kernel", (2 * B * H,), 4), ("_attn_bwd_dkdv_kernel", (4 * B * H,), 4)] * 2
    assert len(TB._TUNED) == 2

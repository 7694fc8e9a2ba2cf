"""Cost of the on-device self-check (``fastattn.selfcheck``, issue #14).

Per kernel variant, interleaved repeats (ABC ABC ...), each with fresh dispatch state
(``fastattn.dispatch.reset()``: no plan, no verdict, as in a new process):

* ``first_call_off``: the first call with ``FASTATTN_SELF_CHECK=0`` (plan miss + the kernel);
* ``first_call_check``: the first call with ``FASTATTN_SELF_CHECK=always`` (plan miss + the self-check +
  the kernel); ``added_first_call`` = the difference of the medians; ``check_only`` = the check's own
  time as it measures it (small problems, reference, comparison);
* ``first_call_cached``: the first call with ``FASTATTN_SELF_CHECK=1`` and the pass already in the cache
  file (a later process); ``cache_lookup`` times what that adds on its own (environment facts with the
  digest of the kernel sources, the file read) — the difference of first-call medians is within noise;
* ``later_call_on`` / ``later_call_off``: a repeated call (plan cache hit) with the check on (after it
  passed) and off; ``plan_hit_on`` / ``plan_hit_off``: ``plan_for`` alone on a hit. The check sits on
  the plan-cache miss only, so these must agree within noise.

Without a GPU the Triton kernels run under the interpreter (``TRITON_INTERPRET=1``, set here before
anything imports triton), where a kernel launch costs ~0.1-1 s of Python: the numbers then say what the
check costs relative to an interpreted launch, not what it costs on a GPU (there a check is two or three
tiny launches plus a float64 reference of a 2x2x40x72 problem; the Triton compile of the variant dominates).

    python -m benchmarks.bench_selfcheck [--reps 5] [--out benchmarks/results/selfcheck_cost.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time

if __name__ == "__main__" and "TRITON_INTERPRET" not in os.environ:
    try:
        import torch as _t
        if not _t.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    except Exception:  # noqa: BLE001
        pass

import torch  # noqa: E402

FIELDS = ["suite", "case", "variant", "metric", "median", "p20", "p80", "unit", "reps", "note",
          "machine", "gpu", "torch", "triton", "cuda", "fastattn", "commit", "date", "command"]


def _cases(device):
    import fastattn
    g = torch.Generator().manual_seed(0)

    def qkv(B, Hq, Hkv, Lq, Lk, E, dtype):
        mk = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
        return mk(B, Hq, Lq, E), mk(B, Hkv, Lk, E), mk(B, Hkv, Lk, E)

    yield "fp32-none-d64", qkv(1, 2, 2, 64, 64, 64, torch.float32), {}
    yield "fp16-causal-d64", qkv(1, 2, 2, 64, 64, 64, torch.float16), {"is_causal": True}
    yield "bf16-dense_bool-d128", qkv(1, 2, 2, 64, 64, 128, torch.bfloat16), {
        "attn_mask": (torch.rand(64, 64, generator=g) > 0.2).to(device)}
    q, k, v = qkv(1, 2, 2, 64, 64, 64, torch.float16)
    yield "fp16-causal-d64-grad(fwd+bwd)", (q.requires_grad_(True), k, v), {"is_causal": True}
    yield "fp16-decode-q1-keypad-gqa", qkv(2, 4, 2, 1, 256, 64, torch.float16), {
        "attn_mask": fastattn.KeyPadding(lengths=torch.tensor([256, 100], device=device)), "enable_gqa": True}


def _quantiles(xs):
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=5, method="inclusive") if len(xs) > 1 else [xs[0]] * 4
    return statistics.median(xs), q[0], q[3]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(reps: int, backend: str, device) -> list:
    import fastattn
    from fastattn import dispatch, selfcheck
    from fastattn.attention.plan import plan_for
    from fastattn.inputs import normalize_attention

    rows = []
    for case, (q, k, v), kw in _cases(device):
        call = lambda: fastattn.attention(q, k, v, backend=backend, **kw)  # noqa: E731
        inp = normalize_attention(q, k, v, kw.get("attn_mask"), 0.0, kw.get("is_causal", False), None,
                                  kw.get("enable_gqa", False))
        keys = selfcheck.variant_keys("attention", dispatch.backends("attention")[backend], inp)
        key = " + ".join(keys)
        t = {m: [] for m in ("first_call_off", "first_call_check", "first_call_cached", "check_only",
                             "cache_lookup")}

        def first(mode):
            os.environ["FASTATTN_SELF_CHECK"] = mode
            dispatch.reset()
            _sync(device)
            t0 = time.perf_counter()
            call()
            _sync(device)
            return time.perf_counter() - t0

        call()  # the kernel's own first-use costs (JIT compile / interpreter warm-up) are not the check's
        for _ in range(reps):
            t["first_call_off"].append(first("0"))
            t["first_call_check"].append(first("always"))
            t["check_only"].append(sum(selfcheck._RESULTS[(selfcheck._dev(device), k)].seconds for k in keys))
            t["first_call_cached"].append(first("1"))
            assert all(selfcheck.status()[f"{selfcheck._dev(device)}|{k}"]["source"] == "cache file" for k in keys)
            dispatch.reset()  # what a later process pays instead of the check: environment facts + file read
            t0 = time.perf_counter()
            assert all(selfcheck._cached_pass(device, k) for k in keys)
            t["cache_lookup"].append(time.perf_counter() - t0)
        # later calls: plan hits, check on (passed) vs off
        later = {"on": [], "off": []}
        hits = {"on": [], "off": []}
        for _ in range(reps):
            for mode in ("on", "off"):
                os.environ["FASTATTN_SELF_CHECK"] = "1" if mode == "on" else "0"
                call()
                _sync(device)
                t0 = time.perf_counter()
                call()
                _sync(device)
                later[mode].append(time.perf_counter() - t0)
                n = 2000
                t0 = time.perf_counter()
                for _ in range(n):
                    plan_for(inp, backend)
                hits[mode].append((time.perf_counter() - t0) / n)
        meds = {m: _quantiles(x) for m, x in t.items()}
        for m, (med, p20, p80) in meds.items():
            rows.append(dict(case=case, variant=key, metric=m, median=med * 1e3, p20=p20 * 1e3, p80=p80 * 1e3,
                             unit="ms", reps=reps))
        added = meds["first_call_check"][0] - meds["first_call_off"][0]
        rows.append(dict(case=case, variant=key, metric="added_first_call", median=added * 1e3, unit="ms",
                         reps=reps, note="median(first_call_check) - median(first_call_off)"))
        cached = meds["first_call_cached"][0] - meds["first_call_off"][0]
        rows.append(dict(case=case, variant=key, metric="added_first_call_cached", median=cached * 1e3, unit="ms",
                         reps=reps, note="median(first_call_cached) - median(first_call_off): file read, no check"))
        for mode in ("on", "off"):
            med, p20, p80 = _quantiles(later[mode])
            rows.append(dict(case=case, variant=key, metric=f"later_call_{mode}", median=med * 1e3, p20=p20 * 1e3,
                             p80=p80 * 1e3, unit="ms", reps=reps))
            med, p20, p80 = _quantiles(hits[mode])
            rows.append(dict(case=case, variant=key, metric=f"plan_hit_{mode}", median=med * 1e9, p20=p20 * 1e9,
                             p80=p80 * 1e9, unit="ns", reps=reps, note="plan_for() on a plan-cache hit, 2000 calls"))
        print(f"{case:28} check adds {added * 1e3:8.1f} ms to the first call (check itself "
              f"{meds['check_only'][0] * 1e3:.1f} ms; first call without {meds['first_call_off'][0] * 1e3:.1f} ms); "
              f"from the cache file {cached * 1e3:+.2f} ms (lookup alone {meds['cache_lookup'][0] * 1e3:.2f} ms); "
              f"plan hit on/off "
              f"{_quantiles(hits['on'])[0] * 1e9:.0f}/{_quantiles(hits['off'])[0] * 1e9:.0f} ns", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "selfcheck_cost.csv"))
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.harness import _cpu_model, capture_env
    import fastattn

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache = tempfile.mkdtemp(prefix="fastattn-selfcheck-bench-")
    os.environ["FASTATTN_CACHE_DIR"] = cache
    env = capture_env(device.type, command="python -m benchmarks.bench_selfcheck " + " ".join(argv or sys.argv[1:]))
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    machine = (f"{os.cpu_count()} CPUs ({_cpu_model()})" + (", Triton interpreter (TRITON_INTERPRET=1): CPU "
                                                               "timings of interpreted kernels, not GPU ones"
                                                               if interp else ""))
    load0 = os.getloadavg()[0]
    rows = measure(args.reps, args.backend, device)
    machine += f"; load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end (shared machine: noisy)"
    stamp = dict(env.stamp(), machine=machine, fastattn=fastattn.__version__)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            row = {k: "" for k in FIELDS}
            row.update(stamp)
            row.update(r)
            row["suite"] = "selfcheck"
            w.writerow(row)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

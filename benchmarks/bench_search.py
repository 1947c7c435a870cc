"""Benchmark vqswitch's nearest-codeword search (torch path) against peers.

What it measures (l2 metric, per-token codebooks: each of the T token positions has its own book):
  * ``vqswitch``          nearest_codeword(z, cb, groups) (groups only when M > 1);
  * ``vqswitch-nearest``  nearest_group(z, cb), the "nearest" group selection (M > 1 only);
  * ``cdist``             torch.cdist(z.transpose(0, 1), cb).argmin(-1), the full (T, B, K) distance
                          matrix; for M > 1 one full matrix per group bucket (the images of each group);
  * ``cdist-nearest``     every group's full distance matrix, min over codes, squared errors summed per
                          image, argmin over groups (M > 1 only);
  * ``vector-quantize-pytorch``  VectorQuantize(dim=T*D, codebook_dim=D, heads=T,
                          separate_codebook_per_head=True), its per-position mode, in eval mode with EMA,
                          k-means init and dead-code expiry off, holding a copy of the same codebooks, so
                          only its search (+ its gather of the quantized vectors) runs. It has no groups:
                          for M > 1 it searches group 0's books (K codes per token) as the closest analogue.
Shapes: TiTok-S (B=64, T=128, D=12, K=4096, M=1) and (B=64, T=128, D=12, K=1024, M=16, random groups).

Per row: median wall time (time.perf_counter) over --repeats calls after one warm-up call, and the
peak memory of the calls. Every (method, shape) runs in a fresh subprocess (this script re-invoked
with a hidden --worker argument). On CPU the peak is ru_maxrss (a process high-water mark) after the
calls minus ru_maxrss just before them, taken after the inputs and module are built and a tiny
unrelated op has initialised the BLAS / thread pools; inputs are built without large temporaries so
the high-water mark sits at the resident size before the call ("baseline slack" in the JSON is
ru_maxrss - current RSS at that point; a large slack would hide part of the call's peak). On CUDA the
peak is torch.cuda.max_memory_allocated() minus memory_allocated() before the calls, with
synchronisation around every timed call. Why the parent stays small: Linux carries a process's
high-water mark across exec, so a worker started by a parent that had imported torch would start
with the parent's RSS as its ru_maxrss floor and under-report its peak; the parent therefore never
imports torch or the libraries (machine info comes from an "info" worker). Peaks are approximate at
the MiB level (freed-but-resident allocator memory can be reused without raising the mark). Each non-vqswitch row also reports how often its indices
(and groups) agree with vqswitch's answer on the same inputs. Speed-ups are this method's median time
over vqswitch's (nearest_codeword, or nearest_group for the "nearest" rows) from the same run.

Run:  python benchmarks/bench_search.py            (full shapes, a few minutes on 2 CPU cores)
      python benchmarks/bench_search.py --quick    (small shapes, smoke test)
Options: --repeats N (default 7), --json PATH (default benchmarks/results/bench_search.json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec

if "--worker" in sys.argv:  # only workers import torch: see "Why the parent stays small" above
    import torch

    from vqswitch.kernels import DEFAULT_MEMORY_BUDGET, nearest_codeword, nearest_group

VQP = "vector-quantize-pytorch"
SHAPES = {
    "full": [dict(name="titok-s", B=64, T=128, D=12, K=4096, M=1),
             dict(name="groups", B=64, T=128, D=12, K=1024, M=16)],
    "quick": [dict(name="quick", B=8, T=32, D=12, K=512, M=1),
              dict(name="quick-groups", B=8, T=32, D=12, K=256, M=4)],
}
# each method's speed-up is measured against the vqswitch call solving the same task
REFERENCE = {"vqswitch": "vqswitch", "cdist": "vqswitch", VQP: "vqswitch",
             "vqswitch-nearest": "vqswitch-nearest", "cdist-nearest": "vqswitch-nearest"}


def num_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def make_inputs(s: dict, device: torch.device):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(s["B"], s["T"], s["D"], generator=g)
    books = (s["T"], s["K"], s["D"]) if s["M"] == 1 else (s["M"], s["T"], s["K"], s["D"])
    cb = torch.randn(*books, generator=g)
    groups = torch.randint(0, s["M"], (s["B"],), generator=g)
    return z.to(device), cb.to(device), groups.to(device)


def cdist_buckets(z, cb, groups):
    """Per group present in the batch: the full distance matrix of its images against its books."""
    out = torch.empty(z.shape[:2], dtype=torch.long, device=z.device)
    for g in groups.unique().tolist():
        sel = (groups == g).nonzero().squeeze(1)
        out[sel] = torch.cdist(z[sel].transpose(0, 1), cb[g]).argmin(-1).T
    return out


def cdist_nearest(z, cb):
    """Every group's full distance matrix; the group of least summed squared error per image."""
    zt, errors, indices = z.transpose(0, 1), [], []
    for g in range(cb.shape[0]):
        d, i = torch.cdist(zt, cb[g]).min(-1)  # (T, B)
        errors.append(d.square().sum(0))
        indices.append(i.T)
    best = torch.stack(errors).argmin(0)  # (B,)
    return best, torch.stack(indices)[best, torch.arange(z.shape[0], device=z.device)]


def build_vqp(z, cb):
    """VectorQuantize in per-position mode holding a copy of cb (T, K, D) (group 0 when M > 1)."""
    from vector_quantize_pytorch import VectorQuantize
    B, T, D = z.shape
    book = cb if cb.dim() == 3 else cb[0]
    # dim is the full feature size heads * codebook_dim, so no projection layer is created
    vq = VectorQuantize(dim=T * D, codebook_dim=D, heads=T, separate_codebook_per_head=True,
                        codebook_size=book.shape[1], kmeans_init=False, ema_update=False,
                        threshold_ema_dead_code=0, commitment_weight=0.0).to(z.device).eval()
    with torch.no_grad():
        vq.codebook = book  # copies into its (heads, K, D) buffer
    x = z.reshape(B, 1, T * D)  # one position, T heads: head t sees token t
    return lambda: vq(x)[1].reshape(B, T)


def build(method, z, cb, groups):
    """(timed call, vqswitch's answer to the same question) for one method."""
    multi = cb.dim() == 4
    fixed = lambda: nearest_codeword(z, cb, groups if multi else None).indices  # noqa: E731
    nearest = lambda: tuple(nearest_group(z, cb)[:2])  # noqa: E731
    if method == "vqswitch":
        return fixed, fixed
    if method == "vqswitch-nearest":
        return nearest, nearest
    if method == "cdist":
        if multi:
            return (lambda: cdist_buckets(z, cb, groups)), fixed
        return (lambda: torch.cdist(z.transpose(0, 1), cb).argmin(-1).T), fixed
    if method == "cdist-nearest":
        return (lambda: cdist_nearest(z, cb)), nearest
    if method == VQP:
        ref = (lambda: nearest_codeword(z, cb[0]).indices) if multi else fixed
        return build_vqp(z, cb), ref
    raise ValueError(method)


def maxrss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def worker(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    z, cb, groups = make_inputs(spec["shape"], dev)
    fn, ref = build(spec["method"], z, cb, groups)
    a = torch.randn(16, 1, 8, device=dev)  # tiny unrelated op: BLAS / thread-pool initialisation
    torch.cdist(a, a).argmin(-1).sum().item()
    with torch.no_grad():
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base, slack = torch.cuda.memory_allocated(), 0.0
        else:
            base = maxrss_mib()
            slack = base - rss_mib()
        out = fn()  # warm-up (its memory counts toward the peak too)
        sync()
        times = []
        for _ in range(spec["repeats"]):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        if dev.type == "cuda":
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            peak = maxrss_mib() - base
        expect = ref() if ref is not fn else out
    pairs = zip(out, expect) if isinstance(out, tuple) else [(out, expect)]
    agree = [100.0 * (o == e).double().mean().item() for o, e in pairs]
    return dict(median_ms=1e3 * statistics.median(times), times_ms=[1e3 * t for t in times],
                peak_mib=peak, baseline_slack_mib=slack, agreement_pct=agree)


def run_one(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  ! {spec['method']} on {spec['shape']['name']} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return dict(error=proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def shape_label(s: dict) -> str:
    return f"{s['name']} B{s['B']} T{s['T']} D{s['D']} K{s['K']} M{s['M']}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes for a smoke run")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", default=os.path.join("benchmarks", "results", "bench_search.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    try:
        import vector_quantize_pytorch  # noqa: F401
        from importlib.metadata import version
        vqp_version = version(VQP)
    except ImportError:
        vqp_version = None
        print(f"note: {VQP} is not importable; its rows are skipped")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = num_cpus()
    torch.set_num_threads(threads)
    machine = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                   device=torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                   device_type=device, python=platform.python_version(), platform=platform.platform(),
                   vector_quantize_pytorch=vqp_version)
    budget_mib = DEFAULT_MEMORY_BUDGET / 2**20
    print(f"torch {machine['torch']} on {device}, {threads} threads; vqswitch memory budget "
          f"(DEFAULT_MEMORY_BUDGET) = {budget_mib:.1f} MiB; median of {args.repeats} after 1 warm-up")

    rows = []
    for s in SHAPES["quick" if args.quick else "full"]:
        methods = ["vqswitch", "cdist"] + (["vqswitch-nearest", "cdist-nearest"] if s["M"] > 1 else [])
        methods += [VQP] if vqp_version else []
        for m in methods:
            print(f"  running {m} on {shape_label(s)} ...", flush=True)
            spec = dict(shape=s, method=m, repeats=args.repeats, threads=threads, device=device)
            rows.append(dict(shape=shape_label(s), shape_spec=s, method=m, reference=REFERENCE[m], **run_one(spec)))

    by_key = {(r["shape"], r["method"]): r for r in rows}
    ratios = []
    for r in rows:
        ref = by_key[(r["shape"], r["reference"])]
        ok = "median_ms" in r and "median_ms" in ref
        r["speedup_of_vqswitch"] = r["median_ms"] / ref["median_ms"] if ok and r is not ref else None
        r["memory_ratio_vs_vqswitch"] = r["peak_mib"] / max(ref["peak_mib"], 1e-9) if ok and r is not ref else None
        if r["method"].startswith("vqswitch") and "peak_mib" in r:
            r["within_budget"] = r["peak_mib"] <= budget_mib
        if r["speedup_of_vqswitch"] is not None:
            ratios.append(dict(shape=r["shape"], vs=r["method"], vqswitch=r["reference"],
                               speedup=r["speedup_of_vqswitch"], memory_ratio=r["memory_ratio_vs_vqswitch"]))

    head = f"{'shape':<36} {'method':<26} {'median ms':>10} {'peak MiB':>9} {'vqswitch speed-up':>18} {'agree %':>14}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        name = r["method"] + ("*" if r["method"] == VQP and r["shape_spec"]["M"] > 1 else "")
        if "error" in r:
            print(f"{r['shape']:<36} {name:<26} {'failed':>10}")
            continue
        sp = f"{r['speedup_of_vqswitch']:.2f}x" if r["speedup_of_vqswitch"] is not None else "(ref)"
        ag = "/".join(f"{a:.2f}" for a in r["agreement_pct"]) if r["reference"] != r["method"] else "-"
        print(f"{r['shape']:<36} {name:<26} {r['median_ms']:>10.2f} {r['peak_mib']:>9.1f} {sp:>18} {ag:>14}")
    print("speed-up = this method's median / vqswitch's (nearest_codeword; nearest_group for *-nearest rows);"
          " agree % = indices (groups/indices for nearest) equal to vqswitch's.")
    if any(r["method"] == VQP and r["shape_spec"]["M"] > 1 for r in rows):
        print(f"* {VQP} has no groups: timed per-token on group 0's books (same K) as the closest analogue.")
    print("\nRatios from this run:")
    for q in ratios:
        label = VQP if q["vs"] == VQP else q["vs"]
        print(f"  {q['vqswitch']} vs {label} [{q['shape']}]: {q['speedup']:.2f}x faster, "
              f"its peak memory = {q['memory_ratio']:.2f}x vqswitch's")
    for r in rows:
        if "within_budget" in r:
            print(f"  {r['method']} [{r['shape']}]: peak {r['peak_mib']:.1f} MiB vs budget {budget_mib:.1f} MiB"
                  f" -> {'within' if r['within_budget'] else 'OVER'} budget")

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       machine=machine, memory_budget_bytes=DEFAULT_MEMORY_BUDGET, repeats=args.repeats,
                       quick=args.quick, metric="l2", rows=rows, ratios=ratios), f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

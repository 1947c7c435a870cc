"""Benchmark vqswitch's nearest-codeword search (torch path) against peers.

What it measures (l2 metric, per-token codebooks: each of the T token positions has its own book):
  * ``vqswitch``          nearest_codeword(z, cb, groups) (groups only when M > 1);
  * ``vqswitch-nearest``  nearest_group(z, cb), the "nearest" group selection (M > 1 only);
  * ``cdist``             torch.cdist(z.transpose(0, 1), cb).argmin(-1), the full (T, B, K) distance
                          matrix; for M > 1 one full matrix per group bucket (the images of a group);
  * ``cdist-nearest``     every group's full distance matrix, min over codes, squared errors summed per
                          image, argmin over groups (M > 1 only);
  * ``vector-quantize-pytorch``  VectorQuantize(dim=T*D, codebook_dim=D, heads=T,
                          separate_codebook_per_head=True), its per-position mode, in eval mode with EMA,
                          k-means init and dead-code expiry off, holding a copy of the same codebooks, so
                          only its search (+ its gather of the quantized vectors) runs. It has no groups:
                          for M > 1 it searches group 0's books (same K) as the closest analogue.
Shapes: TiTok-S (B=64, T=128, D=12, K=4096, M=1) and (B=64, T=128, D=12, K=1024, M=16, random groups).

Time: median wall time (time.perf_counter) over --repeats calls after one warm-up call.
Peak memory: every (method, shape) runs in a fresh subprocess (this script re-invoked with a hidden
--worker argument). On CPU the peak is resource.getrusage(RUSAGE_SELF).ru_maxrss (a high-water
mark) after the calls minus ru_maxrss just before them, read once the inputs (and the peer's module)
exist and a tiny unrelated op has initialised the BLAS / thread pools; inputs are built without large
temporaries, so the mark sits at the resident size before the call (JSON "baseline_slack_mib" =
ru_maxrss - current RSS there; a large slack would hide part of the call's peak). Linux carries a
process's high-water mark across exec, so the parent never imports torch (machine info comes from an
"info" worker): a fat parent would give every worker its RSS as a floor. Peaks are approximate at the
MiB level (freed-but-resident allocator memory can be reused without raising the mark). On CUDA the
peak is torch.cuda.max_memory_allocated() minus memory_allocated() before the calls, and every timed
call is synchronised. Each peer row also reports how often its indices (and groups) agree with
vqswitch's on the same inputs. Speed-up = the method's median time / vqswitch's (nearest_codeword,
or nearest_group for the "nearest" rows), both from the same run.

Run:  python benchmarks/bench_search.py            (full shapes, a few minutes on 2 CPU cores)
      python benchmarks/bench_search.py --quick    (small shapes, smoke test)
Options: --repeats N (default 7), --json PATH (default benchmarks/results/bench_search.json),
--retries N (default 2). Other processes disturb timings badly on small machines, so each worker
waits (up to 60 s) for the CPUs to be quiet, and one during whose repeats other processes used > 10%
of the CPUs (from /proc/stat, JSON "contention") is rerun up to N times, keeping the least disturbed.
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

if "--worker" in sys.argv:  # only workers import torch (see the docstring on peak memory)
    import torch

    from vqswitch.kernels import DEFAULT_MEMORY_BUDGET, nearest_codeword, nearest_group

VQP = "vector-quantize-pytorch"
SHAPES = {
    "full": [dict(name="titok-s", B=64, T=128, D=12, K=4096, M=1),
             dict(name="groups", B=64, T=128, D=12, K=1024, M=16)],
    "quick": [dict(name="quick", B=8, T=32, D=12, K=512, M=1),
              dict(name="quick-groups", B=8, T=32, D=12, K=256, M=4)],
}
# each row's speed-up is taken against the vqswitch call answering the same question
REFERENCE = {"vqswitch": "vqswitch", "cdist": "vqswitch", VQP: "vqswitch",
             "vqswitch-nearest": "vqswitch-nearest", "cdist-nearest": "vqswitch-nearest"}


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process); machine NaN off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # guest time is already in user
        machine = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except OSError:
        machine = float("nan")
    t = os.times()
    return machine, t.user + t.system


# ----------------------------------------------------------------------------- worker side
def make_inputs(s: dict, device):
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
    """Every group's full distance matrix; per image the group of least summed squared error."""
    zt, errors, indices = z.transpose(0, 1), [], []
    for g in range(cb.shape[0]):
        d, i = torch.cdist(zt, cb[g]).min(-1)  # (T, B)
        errors.append(d.square().sum(0))
        indices.append(i.T)
    best = torch.stack(errors).argmin(0)  # (B,)
    return best, torch.stack(indices)[best, torch.arange(z.shape[0], device=z.device)]


def vqp_module(book, device):
    """VectorQuantize in per-position mode holding a copy of one group's token books (T, K, D)."""
    from vector_quantize_pytorch import VectorQuantize
    T, K, D = book.shape
    # dim is the full feature size heads * codebook_dim; with dim == T * D no projection is created
    vq = VectorQuantize(dim=T * D, codebook_dim=D, heads=T, separate_codebook_per_head=True,
                        codebook_size=K, kmeans_init=False, ema_update=False,
                        threshold_ema_dead_code=0, commitment_weight=0.0).to(device).eval()
    assert not vq.has_projections
    with torch.no_grad():
        vq.codebook = book  # copied into its (heads, K, D) buffer
    return vq


def build_vqp(z, cb):
    """VectorQuantize in per-position mode holding a copy of cb (T, K, D) (group 0's when M > 1)."""
    B, T, D = z.shape
    vq = vqp_module(cb if cb.dim() == 3 else cb[0], z.device)
    x = z.reshape(B, 1, T * D)  # one position whose features split into T heads: head t = token t
    return lambda: vq(x)[1].reshape(B, T)


def build_vqp_groups(z, cb, groups):
    """The grouped task done with vector-quantize-pytorch: one per-position VectorQuantize per group
    present in the batch (built here, untimed), and a timed call that routes each image to its
    group's module and scatters the indices back, as a user of that library would have to."""
    B, T, D = z.shape
    mods = {g: vqp_module(cb[g], z.device) for g in groups.unique().tolist()}

    def run():
        out = torch.empty(B, T, dtype=torch.long, device=z.device)
        for g, vq in mods.items():
            sel = (groups == g).nonzero().squeeze(1)
            out[sel] = vq(z[sel].reshape(-1, 1, T * D))[1].reshape(-1, T)
        return out

    return run


def build(method, z, cb, groups):
    """(the timed call, vqswitch's answer to the same question) for one method."""
    multi = cb.dim() == 4
    fixed = lambda: nearest_codeword(z, cb, groups if multi else None).indices  # noqa: E731
    nearest = lambda: tuple(nearest_group(z, cb)[:2])  # noqa: E731  (groups, indices)
    if method in ("vqswitch", "vqswitch-nearest"):
        return (fixed, fixed) if method == "vqswitch" else (nearest, nearest)
    if method == "cdist" and multi:
        return (lambda: cdist_buckets(z, cb, groups)), fixed
    if method == "cdist":
        return (lambda: torch.cdist(z.transpose(0, 1), cb).argmin(-1).T), fixed
    if method == "cdist-nearest":
        return (lambda: cdist_nearest(z, cb)), nearest
    if method == VQP:
        return build_vqp(z, cb), ((lambda: nearest_codeword(z, cb[0]).indices) if multi else fixed)
    raise ValueError(f"unknown method {method!r}")


def maxrss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def machine_info(threads: int) -> dict:
    torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    try:
        import vector_quantize_pytorch  # noqa: F401
        from importlib.metadata import version
        vqp = version(VQP)
    except Exception as e:  # not installed, or broken: its rows are skipped
        vqp = None
        print(f"note: {VQP} is not importable ({e!r}); its rows are skipped", file=sys.stderr)
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                device_type="cuda" if cuda else "cpu",
                device=torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine()),
                python=platform.python_version(), platform=platform.platform(),
                vector_quantize_pytorch=vqp, memory_budget_bytes=DEFAULT_MEMORY_BUDGET)


def measure(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    z, cb, groups = make_inputs(spec["shape"], dev)
    fn, ref = build(spec["method"], z, cb, groups)
    a = torch.randn(16, 1, 8, device=dev)  # tiny unrelated op: BLAS / thread-pool initialisation
    torch.cdist(a, a).argmin(-1).sum().item()
    # one-time library set-up is not per-call memory: vqswitch's custom ops import torch's op machinery on
    # their first call, so every method's process makes one tiny search call before the baseline
    tiny = torch.randn(1, 2, 4, device=dev)
    nearest_codeword(tiny, torch.randn(2, 3, 4, device=dev))
    nearest_group(tiny, torch.randn(2, 2, 3, 4, device=dev))
    with torch.no_grad():
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base, slack = torch.cuda.memory_allocated() / 2**20, 0.0
        else:
            base = maxrss_mib()
            slack = base - rss_mib()
        out = fn()  # the warm-up call (it counts toward the peak like the others)
        sync()
        times, cpu0 = [], cpu_seconds()
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        cpu1 = cpu_seconds()
        peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else maxrss_mib()) - base
        expect = out if ref is fn else ref()
    pairs = zip(out, expect) if isinstance(out, tuple) else [(out, expect)]
    # share of the machine's CPUs used by *other* processes while the repeats ran (noise indicator)
    other = (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])
    contention = max(0.0, other / (sum(times) * (os.cpu_count() or 1)))
    return dict(median_ms=1e3 * statistics.median(times), times_ms=[1e3 * t for t in times], peak_mib=peak,
                baseline_slack_mib=slack, contention=contention,
                agreement_pct=[100.0 * (o == e).double().mean().item() for o, e in pairs])


# ----------------------------------------------------------------------------- parent side
def run_worker(spec: dict):
    wait_for_quiet()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    sys.stderr.write(proc.stderr if proc.returncode == 0 else "")
    if proc.returncode != 0:
        print(f"  ! worker {spec.get('method', 'info')} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return dict(error=proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_for_quiet(limit_s: float = 60.0) -> None:
    """Wait (at most limit_s) until other processes use < 10% of the CPUs over half a second."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        m0 = cpu_seconds()[0]
        time.sleep(0.5)
        if not (cpu_seconds()[0] - m0) / (0.5 * (os.cpu_count() or 1)) >= 0.1:  # NaN (no /proc): go
            return


def label(s: dict) -> str:
    return f"{s['name']} B{s['B']} T{s['T']} D{s['D']} K{s['K']} M{s['M']}"


def report(rows: list, budget_mib: float) -> list:
    """Fill speed-ups / budget checks into rows, print the table and the ratios; return the ratios."""
    by_key, ratios = {(r["shape"], r["method"]): r for r in rows}, []
    for r in rows:
        ref = by_key[(r["shape"], r["reference"])]
        ok = r is not ref and "median_ms" in r and "median_ms" in ref
        r["speedup_of_vqswitch"] = r["median_ms"] / ref["median_ms"] if ok else None
        r["memory_ratio_vs_vqswitch"] = r["peak_mib"] / ref["peak_mib"] if ok and ref["peak_mib"] >= 1 else None
        if r["method"].startswith("vqswitch") and "peak_mib" in r:
            r["within_budget"] = r["peak_mib"] <= budget_mib
        if ok:
            ratios.append(dict(shape=r["shape"], vqswitch=r["reference"], vs=r["method"],
                               speedup=r["speedup_of_vqswitch"], memory_ratio=r["memory_ratio_vs_vqswitch"]))
    head = f"{'shape':<34} {'method':<25} {'median ms':>10} {'peak MiB':>9} {'vqswitch speed-up':>18} {'agree %':>14}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        name = r["method"] + ("*" if r["method"] == VQP and r["shape_spec"]["M"] > 1 else "")
        name += "!" if r.get("contention", 0) > 0.1 else ""
        if "error" in r:
            print(f"{r['shape']:<34} {name:<25} {'failed':>10}")
            continue
        sp = "(ref)" if r["speedup_of_vqswitch"] is None else f"{r['speedup_of_vqswitch']:.2f}x"
        ag = "-" if r["method"] == r["reference"] else "/".join(f"{a:.2f}" for a in r["agreement_pct"])
        print(f"{r['shape']:<34} {name:<25} {r['median_ms']:>10.2f} {r['peak_mib']:>9.1f} {sp:>18} {ag:>14}")
    print("speed-up = method's median / vqswitch's (nearest_codeword; nearest_group for the *-nearest rows); "
          "agree % = indices (nearest: groups/indices) equal to vqswitch's")
    if any(r["method"] == VQP and r["shape_spec"]["M"] > 1 for r in rows):
        print(f"* {VQP} has no groups: timed per-token on group 0's books (same K), the closest analogue")
    if any(r.get("contention", 0) > 0.1 for r in rows):
        print("! other processes used > 10% of the CPUs during this row's repeats even after retries: noisy timing")
    print("\nRatios (same run):")
    for q in ratios:
        mem = "n/a" if q["memory_ratio"] is None else f"{q['memory_ratio']:.1f}x"
        print(f"  {q['vqswitch']} vs {q['vs']} [{q['shape']}]: {q['speedup']:.2f}x faster; "
              f"{q['vs']} peak memory = {mem} vqswitch's")
    for r in rows:
        if "within_budget" in r:
            print(f"  {r['method']} [{r['shape']}]: peak {r['peak_mib']:.1f} MiB, budget {budget_mib:.1f} MiB "
                  f"-> {'within' if r['within_budget'] else 'OVER'} budget")
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes for a smoke run")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--retries", type=int, default=2, help="reruns of a measurement disturbed by other processes")
    p.add_argument("--json", default=os.path.join("benchmarks", "results", "bench_search.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(machine_info(spec["threads"]) if spec.get("info") else measure(spec)))
        return

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = run_worker(dict(info=True, threads=threads))
    if "error" in machine:
        sys.exit("could not import torch / vqswitch in a worker")
    machine["load_average_at_start"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    budget_mib = machine["memory_budget_bytes"] / 2**20
    print(f"torch {machine['torch']} on {machine['device_type']} ({machine['device']}), {machine['threads']} threads "
          f"of {machine['cpu_count']} CPUs; vqswitch memory budget (DEFAULT_MEMORY_BUDGET) = {budget_mib:.1f} MiB; "
          f"median of {args.repeats} calls after 1 warm-up")

    rows = []
    for s in SHAPES["quick" if args.quick else "full"]:
        methods = ["vqswitch", "cdist"] + (["vqswitch-nearest", "cdist-nearest"] if s["M"] > 1 else [])
        methods += [VQP] if machine["vector_quantize_pytorch"] else []
        for m in methods:
            print(f"  running {m} on {label(s)} ...", flush=True)
            spec = dict(shape=s, method=m, repeats=args.repeats, threads=threads, device=machine["device_type"])
            res = run_worker(spec)
            for _ in range(args.retries):  # other processes took > 10% of the CPUs: run it again
                if res.get("contention", 0) <= 0.1:
                    break
                print(f"    busy machine ({100 * res['contention']:.0f}% of CPUs used by others), rerunning")
                res = min(res, run_worker(spec), key=lambda r: r.get("contention", 2.0))
            rows.append(dict(shape=label(s), shape_spec=s, method=m, reference=REFERENCE[m], **res))
    ratios = report(rows, budget_mib)

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       machine=machine, repeats=args.repeats, quick=args.quick, metric="l2",
                       rows=rows, ratios=ratios), f, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

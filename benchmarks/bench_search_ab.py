"""A/B: the torch search path of this checkout against the same files at another git revision, in one process.

Run (from the repository root, in a git checkout):
  python benchmarks/bench_search_ab.py --base 527812a            # the default cases (~2 min on 2 CPU cores)
  python benchmarks/bench_search_ab.py --base HEAD~3 --rounds 5 --json out.json
Outputs: a table on stdout and benchmarks/results/bench_search_ab.json (--json PATH).

Why: this machine's speed drifts by up to 2x between runs (neighbours share its memory bandwidth), so two runs of
bench_kernels.py made at different times cannot show a 1.2x change. Here both versions run in the same process on the
same inputs, interleaved: each round times the base, then this checkout, and the reported time is the best of the
rounds' medians, so a slow spell hits both sides.

How: `git show REV:kernels/torch_search.py` and `REV:kernels/norms.py` are written to a temporary package (its own norm
cache; vqswitch's custom ops are not imported twice) and timed against vqswitch.kernels.torch_search of this checkout:
search_fixed_groups (router groups) or search_all_groups ("nearest"), metric l2, uniform(-sqrt 3, sqrt 3) inputs,
torch threads = all CPUs. Each case also checks that both versions return the same indices.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import torch

from vqswitch.kernels import torch_search as current

#: (B, T, D, K, M, task): TiTok-S shapes of bench_kernels.py, router ("fixed") and "nearest" selection.
CASES = [
    (1, 128, 12, 256, 256, "fixed"), (16, 128, 12, 256, 256, "fixed"), (64, 128, 12, 256, 256, "fixed"),
    (256, 128, 12, 256, 256, "fixed"), (1, 128, 12, 1024, 16, "fixed"), (16, 128, 12, 1024, 16, "fixed"),
    (64, 128, 12, 1024, 16, "fixed"), (256, 128, 12, 1024, 16, "fixed"), (1, 128, 12, 4096, 1, "fixed"),
    (64, 128, 12, 4096, 1, "fixed"), (1, 128, 12, 256, 256, "nearest"), (16, 128, 12, 256, 256, "nearest"),
    (1, 128, 12, 1024, 16, "nearest"), (64, 128, 12, 1024, 16, "nearest"),
]


def load_base(rev: str, root: str):
    """The torch search module as it was at ``rev``, imported from a temporary package."""
    sources = {}
    for name in ("torch_search.py", "norms.py"):
        try:
            sources[name] = subprocess.run(["git", "show", f"{rev}:kernels/{name}"], cwd=root, check=True,
                                           capture_output=True, text=True).stdout
        except subprocess.CalledProcessError as e:
            sys.exit(f"cannot read kernels/{name} at {rev!r}: {e.stderr.strip()}")
    package = f"base_kernels_{uuid.uuid4().hex[:8]}"  # a fresh name per call: no stale module cache
    tmp = tempfile.mkdtemp(prefix="vqswitch_ab_")
    try:
        os.makedirs(os.path.join(tmp, package))
        open(os.path.join(tmp, package, "__init__.py"), "w").close()
        for name, src in sources.items():
            with open(os.path.join(tmp, package, name), "w") as f:
                f.write(src)
        sys.path.insert(0, tmp)
        try:
            return importlib.import_module(f"{package}.torch_search")
        finally:
            sys.path.remove(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def median_ms(fn, calls: int) -> float:
    fn()  # warm: caches, norm cache, thread pool
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 2]


def run_case(case, base, rounds: int) -> dict:
    B, T, D, K, M, task = case
    g = torch.Generator().manual_seed(0)
    a = math.sqrt(3.0)
    z = torch.empty(B, T, D).uniform_(-a, a, generator=g)
    cb = torch.empty(M, T, K, D).uniform_(-a, a, generator=g)
    groups = torch.randint(0, M, (B,), generator=g) if M > 1 else None

    def call(mod):
        if task == "nearest":
            return lambda: mod.search_all_groups(z, cb, "l2")[1]
        return lambda: mod.search_fixed_groups(z, cb, groups, "l2")[0]

    same = torch.equal(call(base)(), call(current)())
    probe = time.perf_counter()
    call(current)()
    calls = max(3, min(50, int(0.15 / max(time.perf_counter() - probe, 1e-6))))
    runs = {"base": [], "this": []}
    for _ in range(rounds):  # interleaved: a slow spell of the machine hits both sides
        runs["base"].append(median_ms(call(base), calls))
        runs["this"].append(median_ms(call(current), calls))
    b, c = min(runs["base"]), min(runs["this"])
    return dict(B=B, T=T, D=D, K=K, M=M, task=task, base_ms=b, this_ms=c, speedup=b / c, same_indices=same,
                rounds_ms=runs, calls_per_median=calls)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="git revision to compare against (e.g. a commit or HEAD~3)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case; the best median is kept")
    p.add_argument("--json", default=os.path.join("benchmarks", "results", "bench_search_ab.json"))
    args = p.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=root, capture_output=True, text=True)
    if rev.returncode:
        sys.exit(f"unknown revision {args.base!r}: {rev.stderr.strip()}")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "kernels"], cwd=root, capture_output=True, text=True).stdout
    base = load_base(args.base, root)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; base {rev.stdout.strip()} vs this checkout "
          f"({head}{', kernels/ modified' if dirty else ''}); best of {args.rounds} interleaved medians", flush=True)
    print(f"{'task':8} {'B':>4} {'T':>4} {'D':>4} {'K':>5} {'M':>4} {'base ms':>9} {'this ms':>9} {'speed-up':>9}  "
          "same idx")
    rows = []
    for case in CASES:
        r = run_case(case, base, args.rounds)
        rows.append(r)
        print(f"{r['task']:8} {r['B']:>4} {r['T']:>4} {r['D']:>4} {r['K']:>5} {r['M']:>4} {r['base_ms']:9.3f} "
              f"{r['this_ms']:9.3f} {r['speedup']:8.2f}x  {'yes' if r['same_indices'] else 'NO'}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(base=rev.stdout.strip(), head=head, kernels_modified=bool(dirty), rounds=args.rounds,
                       torch=torch.__version__, threads=torch.get_num_threads(), rows=rows), f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

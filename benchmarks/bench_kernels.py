"""Benchmark vqswitch's search kernels (triton and torch backends) at the paper's shapes, against peers.

Run (from the repository root):
  python benchmarks/bench_kernels.py                  # every shape, B in 1,16,64,256 (~8 min on 2 CPU cores)
  python benchmarks/bench_kernels.py --quick          # B in 1,16 and three shapes: a smoke run (~30 s)
  python benchmarks/bench_kernels.py --shapes titok-s,ibq-k8192 --batches 16,64 --repeats 7
  python benchmarks/bench_kernels.py --metric cosine  # TiTok's real metric instead of the default l2
  python benchmarks/bench_kernels.py --max-gflop 200  # run bigger (method, shape) pairs on CPU too
Outputs: a table and target checks on stdout, benchmarks/results/bench_kernels.json (--json PATH) and, when
matplotlib is importable (it is optional, not a dependency), benchmarks/results/bench_kernels.png (--plot PATH).

Shapes (--shapes takes names or prefixes: "titok-s", "maskgit", "ibq-k8192"; --batches 1,16,64,256):
  titok-s-k4096 / -k1024-m16 / -k256-m256   TiTok-S        T=128 D=12   token-specific books (M, T, K, D)
  titok-l-k4096 / -k256-m256                TiTok-L        T=32  D=12   token-specific
  maskgit-k4096 / -k1024-m16                MaskGIT-VQGAN  T=256 D=256  token-specific
  ibq-k8192 / ibq-k262144                   IBQ            T=256 D=256  one token-SHARED (K, D) book, metric "dot"
Token-specific shapes use metric l2 (TiTok uses cosine in practice; --metric overrides every shape's metric).

Methods (rows), all on the same inputs; "-nearest" rows answer the "nearest" group selection (M > 1 only):
  vqswitch-triton[-nearest]  nearest_codeword(..., backend="triton") / nearest_group (CUDA only; without CUDA
                             these rows are left out with a printed note: the interpreter is far too slow)
  vqswitch-torch[-nearest]   the same with backend="torch" (the chunked pure-torch path)
  cdist[-nearest]            the full distance matrix: torch.cdist + argmin (cosine: on normalised vectors;
                             dot: matmul + argmax, cdist has no inner product); for M > 1 one matrix per group
                             bucket (router groups), or every group's matrix for "-nearest"
  vector-quantize-pytorch    VectorQuantize in its per-position mode, built by bench_search.build_vqp (l2 and
                             token-specific shapes only; for M > 1 it searches group 0's books, marked "*": a
                             smaller task, every image against ONE group's books, so a lower bound on its cost)
  vector-quantize-pytorch-per-group   M > 1: the same task as vqswitch done with that library: one
                             per-position VectorQuantize per group present (built untimed), each image routed
                             to its group's module and the indices scattered back (bench_search.build_vqp_groups)
  faiss-flat                 faiss IndexFlatL2 (IndexFlatIP for dot/cosine) over the K codes of a SHARED book,
                             searching all B*T queries with k=1 (index built outside the timed call)
  faiss-flat-per-token       TiTok-S M=1 only (the issue's CPU target): T IndexFlatL2 indexes, one per token,
                             searched in a Python loop; faiss has no token-specific mode
faiss is the faiss-cpu wheel (`pip install faiss-cpu`); without it its rows are left out with a note. faiss rows
always run on the host CPU with host data, also on a GPU machine (their peak is then host RSS).
Each peer row reports how often its indices (and groups) agree with vqswitch's torch path ("agree %").
vqswitch is called with its defaults otherwise (memory_budget=DEFAULT_MEMORY_BUDGET, its NaN/Inf check of z on).

Measurement (bench_search.py's method, and its helpers, imported from it): every (shape, B, method) runs in
a fresh process so that peak memory can be read per row, after one call of the same method on tiny inputs
of the same structure, so that one-time lazy set-up does not count (vqswitch's search is a torch.library
custom op whose first call imports torch._dynamo, sympy, ...: ~1 s and ~150 MiB of RSS, once per process):
  CPU:  ru_maxrss growth over the warm-up and timed calls (the warm-up call counts toward the peak).
  CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated() before,
        all synchronised; the warm-up call (JIT compilation, autotuning) runs BEFORE the reset so that
        autotuner scratch buffers do not count.
  The fresh process (--isolation) is, by default on CPU, a fork of this script made after it has imported
  torch, vqswitch and vector-quantize-pytorch (and run one tiny single-threaded search) but before any
  parallel torch op or CUDA call: re-importing all that costs ~4 s per row, ~8 of the ~10 minutes of a full
  CPU run. Linux gives a forked child a high-water mark equal to the RSS it actually maps, not the parent's
  peak, so ru_maxrss growth is measured as in an exec'd worker. On CUDA (and with --isolation exec) the
  row runs in this script re-run with a hidden --worker argument, as in bench_search.py; the parent then
  never imports torch, since exec (unlike fork) carries a process's high-water mark over to the new program.
Time is the median of --repeats (default 5) calls, or of as many as fit in 0.3 s (at most 200), after
warm-up calls filling 0.2 s (at least one; see WARMUP_S). Before each row the parent waits
(<= 60 s) for the CPUs to be quiet and reruns a row (--retries, default 2) whose repeats were disturbed by
other processes using > 10% of the CPUs (marked "!" if still disturbed; rows whose repeats last < 0.2 s
cannot be judged from /proc/stat's 10 ms ticks: JSON "contention" null).

Inputs are uniform(-sqrt 3, sqrt 3) (unit variance) generated directly on the device: the MaskGIT M=16 books
hold 1G floats (4 GiB) and randn on one CPU core would take ~15 s per row; the distribution does not change
timings. Groups for the router path are uniform in [0, M).

Feasibility: the search costs 2*B*T*K*D FLOPs per group searched (M groups for "-nearest"). A (method, shape,
B) whose estimate exceeds --max-gflop (default 40 for methods running on a CPU, unlimited on a GPU) is not run
and shows as "skipped (est. X GFLOP)"; dense methods whose estimated memory (inputs + 2x the distance matrix
for cdist, 5x for vector-quantize-pytorch) exceeds 80% of the memory free at start are skipped likewise.

Roofline: at start an "info" worker measures on the device the copy bandwidth BW (a 1 GiB device-to-device
tensor.copy_ on CUDA, 256 MiB memcpy on CPU, 2 x bytes / time, best of 5) and the matmul peak (8192^2 on CUDA,
4096^2 on CPU; fp32 with TF32 off, and bf16; best of 5; torch.set_num_threads(all CPUs)). Per row:
  bytes moved = z + the codebooks the task must read (the groups present for the router path, all M for
                "-nearest", K*D for a shared book) + the outputs (int64 indices, fp32 distances; "-nearest"
                also int64 groups and the fp32 (B, M) group errors)      -> GB/s = bytes / median
  FLOPs       = 2*B*T*K*D per group searched                              -> GFLOP/s = FLOPs / median
  roofline x  = median / max(bytes / BW, FLOPs / fp32 peak)   (1.0 = at the measured roofline; the floor is the
                task's, identical for every method, so roofline x compares methods too; < 1 is possible where
                a method beats the fp32 peak, e.g. TF32/bf16 tensor cores)
"vqs-best x" = the row's median / the fastest vqswitch backend's median for the same task, shape and B.

Target checks (printed PASS / FAIL / N/A, computed from this run only):
  GPU: vqswitch-triton >= 5x cdist and >= 2x vqswitch-torch at every shape and B (task by task), and within
       1.5x of the roofline floor for B >= 16;
  CPU: vqswitch-torch >= 3x vector-quantize-pytorch and no slower than faiss at the TiTok-S shapes (for M > 1
       against vector-quantize-pytorch-per-group, the same task; the ratio to the "*" lower bound is printed
       as information);
  both: every vqswitch row's peak memory <= its memory budget (vqswitch.kernels.DEFAULT_MEMORY_BUDGET) plus the
        input-sized allowance its docs grant (allowance_mib: outputs, one copy of z, the cached codebook norms).
Other options: --json PATH, --plot PATH ("" for none), --retries N, --row-timeout S (default 900),
--isolation fork|exec.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import multiprocessing
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_search as bs  # noqa: E402  (helpers; like this script, it imports torch only in --worker processes)

torch = F = nearest_codeword = nearest_group = None  # set by load_torch(), only where rows are measured


def load_torch() -> None:
    """Import torch and vqswitch.kernels here and in bench_search (whose helpers use them as globals)."""
    global torch, F, nearest_codeword, nearest_group
    import torch
    import torch.nn.functional as F

    from vqswitch.kernels import DEFAULT_MEMORY_BUDGET, nearest_codeword, nearest_group
    bs.torch, bs.DEFAULT_MEMORY_BUDGET = torch, DEFAULT_MEMORY_BUDGET
    bs.nearest_codeword, bs.nearest_group = nearest_codeword, nearest_group

SHAPES = [  # name, model, T tokens, D dims, K codes, M groups; shared: one (K, D) book for all tokens
    dict(name="titok-s-k4096", model="TiTok-S", T=128, D=12, K=4096, M=1),
    dict(name="titok-s-k1024-m16", model="TiTok-S", T=128, D=12, K=1024, M=16),
    dict(name="titok-s-k256-m256", model="TiTok-S", T=128, D=12, K=256, M=256),
    dict(name="titok-l-k4096", model="TiTok-L", T=32, D=12, K=4096, M=1),
    dict(name="titok-l-k256-m256", model="TiTok-L", T=32, D=12, K=256, M=256),
    dict(name="maskgit-k4096", model="MaskGIT-VQGAN", T=256, D=256, K=4096, M=1),
    dict(name="maskgit-k1024-m16", model="MaskGIT-VQGAN", T=256, D=256, K=1024, M=16),
    dict(name="ibq-k8192", model="IBQ", T=256, D=256, K=8192, M=1, shared=True, metric="dot"),
    dict(name="ibq-k262144", model="IBQ", T=256, D=256, K=262144, M=1, shared=True, metric="dot"),
]
QUICK_SHAPES = ["titok-s-k4096", "titok-s-k1024-m16", "ibq-k8192"]
BATCHES, QUICK_BATCHES = [1, 16, 64, 256], [1, 16]
CPU_MAX_GFLOP = 40.0

TRITON, TORCH, CDIST, VQP = "vqswitch-triton", "vqswitch-torch", "cdist", bs.VQP
VQP_GROUPS = VQP + "-per-group"
FAISS, FAISS_LOOP = "faiss-flat", "faiss-flat-per-token"
NEAREST = "-nearest"
METHOD_ORDER = [TRITON, TORCH, CDIST, VQP, VQP_GROUPS, FAISS, FAISS_LOOP,
                TRITON + NEAREST, TORCH + NEAREST, CDIST + NEAREST]
DENSE_MEMORY_FACTOR = {CDIST: 2, CDIST + NEAREST: 2, VQP: 5, VQP_GROUPS: 5}  # x the (B, T, K) fp32 distance matrix


def task(method: str) -> str:
    return "nearest" if method.endswith(NEAREST) else "codeword"


def flops(s: dict, B: int, method: str) -> int:
    """2*B*T*K*D per group searched: one group per image for the router path, all M for "-nearest"."""
    return 2 * B * s["T"] * s["K"] * s["D"] * (s["M"] if task(method) == "nearest" else 1)


def input_bytes(s: dict, B: int) -> int:
    books = s["K"] * s["D"] if s.get("shared") else s["M"] * s["T"] * s["K"] * s["D"]
    return 4 * (B * s["T"] * s["D"] + books)


# ============================================================================ worker side
def make_inputs(s: dict, B: int, device):
    """z (B, T, D), codebooks ((K, D) shared, (T, K, D) for M = 1, else (M, T, K, D)), groups (B,)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = math.sqrt(3.0)  # uniform(-a, a) has unit variance
    if s.get("shared"):
        books = (s["K"], s["D"])
    else:
        books = (s["T"], s["K"], s["D"]) if s["M"] == 1 else (s["M"], s["T"], s["K"], s["D"])
    z = torch.empty(B, s["T"], s["D"], device=device).uniform_(-a, a, generator=g)
    cb = torch.empty(books, device=device).uniform_(-a, a, generator=g)
    groups = torch.randint(0, s["M"], (B,), generator=g, device=device)
    return z, cb, groups


def dense_min(zt, cb, metric: str):
    """Full distance matrix of zt (T', R, D) against cb (T', K, D); (min distance, argmin) over K, each (T', R)."""
    if metric == "dot":
        v, i = torch.matmul(zt, cb.transpose(-1, -2)).max(-1)
        return v.neg(), i
    if metric == "cosine":
        zt, cb = F.normalize(zt, dim=-1), F.normalize(cb, dim=-1)
    d, i = torch.cdist(zt, cb).min(-1)
    return d.square(), i


def dense_codeword(z, cb, groups, metric: str):
    """The "cdist" baseline: one full matrix for M = 1 or a shared book, else one per group bucket."""
    B, T, D = z.shape
    if cb.dim() == 2:  # shared: all B*T tokens against the K codes
        return dense_min(z.reshape(1, B * T, D), cb[None], metric)[1].reshape(B, T)
    if groups is None:
        return dense_min(z.transpose(0, 1), cb, metric)[1].T
    out = torch.empty(B, T, dtype=torch.long, device=z.device)
    for g in groups.unique().tolist():
        sel = (groups == g).nonzero().squeeze(1)
        out[sel] = dense_min(z[sel].transpose(0, 1), cb[g], metric)[1].T
    return out


def dense_nearest(z, cb, metric: str):
    """The "cdist-nearest" baseline: every group's full matrix; per image the group of least summed distance."""
    zt, errors, indices = z.transpose(0, 1), [], []
    for g in range(cb.shape[0]):
        d, i = dense_min(zt, cb[g], metric)  # (T, B)
        errors.append(d.sum(0))
        indices.append(i.T)
    best = torch.stack(errors).argmin(0)  # (B,)
    return best, torch.stack(indices)[best, torch.arange(z.shape[0], device=z.device)]


def build_faiss(z, cb, metric: str, threads: int, per_token: bool):
    """Flat faiss index(es) over host copies of the books (built here, untimed); returns the timed search."""
    import faiss
    import numpy as np
    faiss.omp_set_num_threads(threads)
    B, T, D = z.shape
    prep = (lambda x: F.normalize(x, dim=-1)) if metric == "cosine" else (lambda x: x)
    index_type = faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP  # cosine: IP on unit vectors
    books, zh = prep(cb).float().cpu().contiguous(), z.float().cpu()

    def index(book):
        ix = index_type(D)
        ix.add(book.numpy())
        return ix

    if not per_token:
        ix = index(books)
        return lambda: torch.from_numpy(ix.search(prep(zh).reshape(B * T, D).contiguous().numpy(), 1)[1]).view(B, T)
    ixs = [index(books[t]) for t in range(T)]

    def search():
        q = prep(zh).transpose(0, 1).contiguous().numpy()  # (T, B, D): one contiguous query block per token
        return torch.from_numpy(np.concatenate([ix.search(q[t], 1)[1] for t, ix in enumerate(ixs)], axis=1))

    return search


def build(method: str, s: dict, z, cb, groups, threads: int):
    """(the timed call, the vqswitch torch-path call it is checked against; the same object for that row)."""
    metric, g = s["metric"], (groups if s["M"] > 1 else None)

    def codeword(backend):
        return lambda: nearest_codeword(z, cb, g, metric, backend=backend).indices

    def nearest(backend):
        return lambda: tuple(nearest_group(z, cb, metric, backend=backend)[:2])  # (groups, indices)

    ref = nearest("torch") if task(method) == "nearest" else codeword("torch")
    if method in (TORCH, TORCH + NEAREST):
        return ref, ref
    if method == TRITON:
        return codeword("triton"), ref
    if method == TRITON + NEAREST:
        return nearest("triton"), ref
    if method == CDIST:
        return (lambda: dense_codeword(z, cb, g, metric)), ref
    if method == CDIST + NEAREST:
        return (lambda: dense_nearest(z, cb, metric)), ref
    if method == VQP:  # no groups: for M > 1 it searches group 0's books, so check against those
        vq_ref = (lambda: nearest_codeword(z, cb[0], None, metric, backend="torch").indices) if s["M"] > 1 else ref
        return bs.build_vqp(z, cb), vq_ref
    if method == VQP_GROUPS:
        return bs.build_vqp_groups(z, cb, groups), ref
    if method in (FAISS, FAISS_LOOP):
        return build_faiss(z, cb, metric, threads, per_token=method == FAISS_LOOP), ref
    raise ValueError(f"unknown method {method!r}")


def task_work(s: dict, B: int, method: str, groups) -> dict:
    """Minimum bytes the task must move (inputs read + outputs written) and its FLOPs (see the docstring)."""
    T, D, K, M = s["T"], s["D"], s["K"], s["M"]
    near = task(method) == "nearest"
    if s.get("shared"):
        book_bytes = 4 * K * D
    else:
        read = M if near else (1 if M == 1 else int(groups.unique().numel()))  # groups present in the batch
        book_bytes = 4 * read * T * K * D
    out_bytes = B * T * (8 + 4) + (B * 8 + B * M * 4 if near else 0)
    return dict(bytes=4 * B * T * D + book_bytes + out_bytes, flops=flops(s, B, method))


#: Calls shorter than these windows are repeated: warm-up calls fill WARMUP_S (at least one call), and
#: the timed calls fill TIMED_S (at least --repeats), both at most MAX_CALLS. Sub-millisecond rows
#: were measured to slow down by up to 3x over their first ~10 calls (caches, thread pools), for
#: every method alike, so a fixed 1 + 5 calls over-stated their times.
WARMUP_S, TIMED_S, MAX_CALLS = 0.2, 0.3, 200


def measure(spec: dict) -> dict:
    """Time one (shape, B, method) and read its peak memory; runs in a fresh worker process."""
    torch.set_num_threads(spec["threads"])
    s, B, method = spec["shape"], spec["B"], spec["method"]
    dev = torch.device(spec["device"])
    host = dev.type == "cpu" or method.startswith("faiss")  # peak from ru_maxrss (faiss runs on the host)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.no_grad():  # one call on tiny inputs of the same structure: lazy imports and one-time set-up
        tiny = dict(s, T=min(s["T"], 4), K=min(s["K"], 8), M=min(s["M"], 2))  # (e.g. torch.library's first
        build(method, tiny, *make_inputs(tiny, 2, dev), spec["threads"])[0]()  # call imports torch._dynamo)
    z, cb, groups = make_inputs(s, B, dev)
    fn, ref = build(method, s, z, cb, groups, spec["threads"])
    a = torch.randn(16, 1, 8, device=dev)  # tiny unrelated op: BLAS / thread-pool / CUDA initialisation
    torch.cdist(a, a).argmin(-1).sum().item()
    with torch.no_grad():
        sync()
        if host:
            out = None
            base = bs.maxrss_mib()
            slack = base - bs.rss_mib()
        else:  # CUDA: JIT compilation and autotuning happen in this warm-up, outside the peak
            out = fn()
            sync()
            torch.cuda.reset_peak_memory_stats()
            base, slack = torch.cuda.memory_allocated() / 2**20, 0.0
        t0 = time.perf_counter()
        if out is None:
            out = fn()  # CPU: the warm-up call counts toward the peak like the others
            sync()
        warm = 1
        while time.perf_counter() - t0 < WARMUP_S and warm < MAX_CALLS:  # short calls: warm caches and pools
            fn()
            sync()
            warm += 1
        per_call = (time.perf_counter() - t0) / warm
        repeats = max(spec["repeats"], min(MAX_CALLS, int(TIMED_S / max(per_call, 1e-9))))
        times, cpu0 = [], bs.cpu_seconds()
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        cpu1 = bs.cpu_seconds()
        peak = (bs.maxrss_mib() if host else torch.cuda.max_memory_allocated() / 2**20) - base
        expect = out if ref is fn else ref()
    pairs = zip(out, expect) if isinstance(out, tuple) else [(out, expect)]
    # share of the CPUs used by other processes during the repeats; /proc/stat counts 10 ms ticks, so a
    # window under 0.2 s cannot tell (None): the parent's wait for a quiet machine is the only guard there
    other = (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])
    contention = max(0.0, other / (sum(times) * (os.cpu_count() or 1))) if sum(times) >= 0.2 else None
    return dict(median_ms=1e3 * statistics.median(times), times_ms=[1e3 * t for t in times],
                peak_mib=peak, peak_kind="host ru_maxrss growth" if host else "CUDA max_memory_allocated growth",
                baseline_slack_mib=slack, contention=contention, warmup_calls=warm,
                agreement_pct=None if ref is fn else
                [100.0 * (o.cpu() == e.cpu()).double().mean().item() for o, e in pairs],
                **task_work(s, B, method, groups))


def measure_roofline(device: str, threads: int) -> dict:
    """Copy bandwidth and fp32 / bf16 matmul peaks measured on the device (best of 5 after a warm-up)."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def best(fn, n=5):
        fn()
        sync()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    nbytes = 2**30 if cuda else 2**28
    src = torch.empty(nbytes // 4, device=dev).fill_(1.0)
    dst = torch.empty_like(src).fill_(0.0)
    bw = 2 * nbytes / best(lambda: dst.copy_(src))
    src = dst = None  # free the two buffers (a del would leave the lambda's names undefined)
    n = 8192 if cuda else 4096
    old = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        fp32 = 2 * n**3 / best(lambda: a @ b)
        a, b = a.bfloat16(), b.bfloat16()
        bf16 = 2 * n**3 / best(lambda: a @ b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old[0]
        torch.set_float32_matmul_precision(old[1])
    return dict(copy_bandwidth_bytes_per_s=bw, fp32_matmul_flop_per_s=fp32, bf16_matmul_flop_per_s=bf16,
                copy_bytes=nbytes, matmul_n=n, tf32="disabled for the fp32 peak")


def machine_info(threads: int) -> dict:
    """bench_search's machine info plus faiss / triton availability, free memory and the roofline numbers."""
    from importlib.metadata import PackageNotFoundError, version
    info = bs.machine_info(threads)
    cuda = info["device_type"] == "cuda"
    try:
        import faiss
        info["faiss"] = faiss.__version__
    except Exception as e:
        info["faiss"], info["faiss_error"] = None, repr(e)
    try:
        info["triton"] = version("triton")
    except PackageNotFoundError:
        info["triton"] = None
    try:
        import numpy
        info["numpy"] = numpy.__version__
    except ImportError:
        info["numpy"] = None
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
        with open("/proc/meminfo") as f:
            kib = {ln.split(":")[0]: int(ln.split()[1]) for ln in f}
        host_free = 1024 * kib.get("MemAvailable", kib["MemFree"])
    except OSError:
        info["cpu_model"], host_free = platform.processor() or None, None
    info["host_memory_available_bytes"] = host_free
    if cuda:
        free, total = torch.cuda.mem_get_info()
        info.update(device_memory_total_bytes=total, device_memory_available_bytes=free)
        try:  # is the triton backend usable today? (it is being written; a failure skips its rows)
            z, cb = torch.randn(2, 3, 16, device="cuda"), torch.randn(2, 3, 32, 16, device="cuda")
            nearest_codeword(z, cb, torch.tensor([0, 1], device="cuda"), backend="triton")
            info["triton_backend"], info["triton_backend_error"] = True, None
        except Exception as e:
            info["triton_backend"], info["triton_backend_error"] = False, f"{type(e).__name__}: {e}"[:300]
    else:
        info.update(device_memory_available_bytes=host_free, triton_backend=False,
                    triton_backend_error="no CUDA device (the triton backend runs on CUDA tensors only)")
    info["roofline"] = measure_roofline(info["device_type"], threads)
    return info


# ============================================================================ parent side
def prepare_fork_parent() -> None:
    """Import everything rows need once, in this process, so that forked rows start warm.

    Runs no parallel torch op (one thread, tiny CPU tensors) and never touches CUDA: a forked child
    must start its own OpenMP pool and CUDA context.
    """
    load_torch()
    torch.set_num_threads(1)
    with torch.no_grad():  # the first custom-op call imports torch._dynamo, sympy, ... (~1 s)
        z, cb = torch.randn(2, 3, 4), torch.randn(2, 3, 5, 4)
        nearest_codeword(z, cb, torch.tensor([0, 1]), backend="torch")
        nearest_group(z, cb, backend="torch")
    for name in ("vector_quantize_pytorch", "numpy"):
        try:
            __import__(name)
        except Exception:
            pass  # the info worker has reported it


def _fork_child(spec: dict, conn) -> None:
    try:
        conn.send(("ok", measure(spec)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def fork_worker(spec: dict, timeout: float) -> dict:
    """Measure spec in a forked child (a fresh process per row, without re-importing torch)."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_fork_child, args=(spec, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            return dict(error=f"timed out after {timeout:.0f} s")
        status, res = recv.recv()
    except EOFError:
        status, res = "error", "worker died without an answer"
    finally:
        proc.join()
        recv.close()
    if status != "ok":
        res += f" (exit code {proc.exitcode})" if proc.exitcode else ""
        print(f"    ! worker failed: {res.strip().splitlines()[-1]}", file=sys.stderr)
        return dict(error=res[-2000:])
    return res


def run_worker(spec: dict, timeout: float, isolation: str = "exec") -> dict:
    """Measure spec in a fresh process once the CPUs are quiet: a fork of this one, or this script re-run
    with --worker (exec; its last stdout line is the JSON answer)."""
    bs.wait_for_quiet()
    if isolation == "fork":
        return fork_worker(spec, timeout)
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        print(f"    ! worker failed: {tail}", file=sys.stderr)
        return dict(error=proc.stderr[-2000:])
    sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def select_shapes(arg: str | None, quick: bool) -> list:
    if not arg:
        return [s for s in SHAPES if not quick or s["name"] in QUICK_SHAPES]
    names = [n.strip() for n in arg.split(",") if n.strip()]
    chosen = [s for s in SHAPES if any(s["name"] == n or s["name"].startswith(n + "-") for n in names)]
    unknown = [n for n in names if not any(s["name"] == n or s["name"].startswith(n + "-") for s in SHAPES)]
    if unknown or not chosen:
        sys.exit(f"unknown shape(s) {unknown or names}; known: {', '.join(s['name'] for s in SHAPES)}")
    return chosen


def methods_for(s: dict, machine: dict) -> list:
    triton = [TRITON] if machine["triton_backend"] else []
    ms = triton + [TORCH, CDIST]
    if machine["vector_quantize_pytorch"] and not s.get("shared") and s["metric"] == "l2":
        ms += [VQP, VQP_GROUPS] if s["M"] > 1 else [VQP]
    if machine["faiss"] and s.get("shared"):
        ms.append(FAISS)
    if machine["faiss"] and s["model"] == "TiTok-S" and s["M"] == 1 and not s.get("shared"):
        ms.append(FAISS_LOOP)
    if s["M"] > 1:
        ms += [m + NEAREST for m in triton] + [TORCH + NEAREST, CDIST + NEAREST]
    return ms


def skip_reason(s: dict, B: int, method: str, machine: dict, max_gflop: float | None) -> str | None:
    on_cpu = machine["device_type"] == "cpu" or method.startswith("faiss")
    limit = max_gflop if max_gflop is not None else (CPU_MAX_GFLOP if on_cpu else math.inf)
    gflop = flops(s, B, method) / 1e9
    if gflop > limit:
        return f"skipped (est. {gflop:.0f} GFLOP)"
    if method in DENSE_MEMORY_FACTOR:
        need = input_bytes(s, B) + DENSE_MEMORY_FACTOR[method] * 4 * B * s["T"] * s["K"]
        free = machine["host_memory_available_bytes" if on_cpu else "device_memory_available_bytes"]
        if free and need > 0.8 * free:
            return f"skipped (est. {need / 2**30:.0f} GiB)"
    return None


def allowance_mib(s: dict, B: int, method: str) -> float:
    """What vqswitch may allocate beyond its budget, by its documented rules (kernels/torch_search.py):
    its outputs, one copy of z, and the cached codebook norms (M*T'*K fp32; twice for cosine; none
    for dot)."""
    T, D, K, M = s["T"], s["D"], s["K"], s["M"]
    outputs = B * T * (8 + 4) + (B * 8 + B * M * 4 if task(method) == "nearest" else 0)
    norms = {"l2": 1, "cosine": 2, "dot": 0}[s["metric"]] * 4 * M * (1 if s.get("shared") else T) * K
    return (outputs + 4 * B * T * D + norms) / 2**20


def derive(rows: list, roof: dict) -> None:
    """Add GFLOP/s, GB/s, roofline x and vqs-best x (speed-up of the fastest vqswitch backend) to each row."""
    for r in rows:
        if "median_ms" in r:
            t = r["median_ms"] / 1e3
            floor = max(r["bytes"] / roof["copy_bandwidth_bytes_per_s"], r["flops"] / roof["fp32_matmul_flop_per_s"])
            r.update(gflop_per_s=r["flops"] / t / 1e9, gbyte_per_s=r["bytes"] / t / 1e9,
                     roofline_floor_ms=1e3 * floor, roofline_x=t / floor)
    for r in rows:
        best = [q["median_ms"] for q in rows if q["shape"] == r["shape"] and q["B"] == r["B"]
                and q["task"] == r["task"] and q["method"].startswith("vqswitch") and "median_ms" in q]
        r["vqswitch_best_speedup"] = r["median_ms"] / min(best) if best and "median_ms" in r else None


def fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def print_table(rows: list, shapes: list) -> None:
    print("\nShapes:")
    for s in shapes:
        form = "shared (K, D)" if s.get("shared") else ("(T, K, D)" if s["M"] == 1 else "(M, T, K, D)")
        print(f"  {s['name']:<18} {s['model']:<14} T={s['T']:<4} D={s['D']:<4} K={s['K']:<7} M={s['M']:<4} "
              f"books {form:<13} metric {s['metric']}")
    head = (f"{'shape':<18} {'B':>4} {'method':<32} {'median ms':>10} {'peak MiB':>9} {'GFLOP/s':>8} {'GB/s':>7} "
            f"{'roofline x':>10} {'vqs-best x':>10} {'agree %':>13}")
    print("\n" + head + "\n" + "-" * len(head))
    prev = None
    for r in rows:
        if prev is not None and (r["shape"], r["B"]) != prev:
            print()
        prev = (r["shape"], r["B"])
        name = r["method"] + ("*" if r["method"] == VQP and r["shape_spec"]["M"] > 1 else "")
        name += "!" if (r.get("contention") or 0) > 0.1 else ""
        lead = f"{r['shape']:<18} {r['B']:>4} {name:<32}"
        if "skipped" in r:
            print(f"{lead} {r['skipped']}")
            continue
        if "error" in r:
            last = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
            print(f"{lead} failed: {last[:90]}")
            continue
        sp = r["vqswitch_best_speedup"]
        sp = "(best)" if r["method"].startswith("vqswitch") and sp is not None and sp <= 1.0 else fmt(sp, ".2f")
        ag = "-" if r["agreement_pct"] is None else "/".join(f"{a:.2f}" for a in r["agreement_pct"])
        print(f"{lead} {r['median_ms']:>10.3f} {r['peak_mib']:>9.1f} {r['gflop_per_s']:>8.1f} {r['gbyte_per_s']:>7.1f} "
              f"{r['roofline_x']:>10.2f} {sp:>10} {ag:>13}")
    print("vqs-best x = row's median / fastest vqswitch backend's median (same shape, B, task: nearest_codeword, or "
          "nearest_group for -nearest rows);\nagree % = share of indices (-nearest: groups/indices) equal to "
          "vqswitch-torch's; roofline x = median / max(bytes/BW, FLOPs/fp32 peak)")
    if any(r["method"] == VQP and r["shape_spec"]["M"] > 1 for r in rows):
        print(f"* {VQP} has no groups: timed per-token on group 0's books (same K), the closest analogue")
    if any(r["method"] == CDIST and r["shape_spec"]["metric"] == "dot" for r in rows):
        print("cdist rows with metric dot are matmul + argmax (torch.cdist has no inner product)")
    if any((r.get("contention") or 0) > 0.1 for r in rows):
        print("! other processes used > 10% of the CPUs during this row's repeats even after retries: noisy timing")


def check(name: str, results: list, na: str | None, fail_when) -> dict:
    """One target: results are (label, value) pairs; fail_when(value) marks a failing one."""
    if na is None and not results:
        na = "no measured rows to compare"
    if na is not None:
        print(f"  [N/A ] {name}: {na}")
        return dict(target=name, status="N/A", reason=na)
    bad = [(lab, v) for lab, v in results if fail_when(v)]
    status = "FAIL" if bad else "PASS"
    worst = (bad or sorted(results, key=lambda x: x[1]))[0]
    detail = f"{len(results) - len(bad)}/{len(results)} pass"
    if bad:
        detail += "; failing: " + ", ".join(f"{lab} {v:.2f}" for lab, v in bad[:12]) + (" ..." if len(bad) > 12 else "")
    print(f"  [{status}] {name}: {detail}")
    return dict(target=name, status=status, passed=len(results) - len(bad), total=len(results),
                failing=[dict(row=lab, value=v) for lab, v in bad], worst=dict(row=worst[0], value=worst[1]))


def targets(rows: list, machine: dict, budget_mib: float) -> list:
    """The issue's targets, from this run's rows; PASS / FAIL / N/A each."""
    by = {(r["shape"], r["B"], r["method"]): r for r in rows if "median_ms" in r}
    cuda = machine["device_type"] == "cuda"

    def ratios(fast: str, slow: str, where=lambda r: True) -> list:
        """(label, slow median / fast median) for every (shape, B, task) where both rows were measured."""
        out = []
        for (shape, B, m), r in by.items():
            for suffix in ("", NEAREST):
                if m == fast + suffix and where(r) and (shape, B, slow + suffix) in by:
                    label = f"{shape} B{B}{suffix}" + ("*" if slow == VQP and r["shape_spec"]["M"] > 1 else "")
                    out.append((label, by[(shape, B, slow + suffix)]["median_ms"] / r["median_ms"]))
        return out

    gpu_na = None if cuda else "no CUDA device in this run"
    if cuda and not machine["triton_backend"]:
        gpu_na = f"triton backend unusable: {machine['triton_backend_error']}"
    cpu_na = None if not cuda else "this run's vqswitch-torch rows ran on CUDA"
    titok_s = lambda r: r["shape_spec"]["model"] == "TiTok-S"  # noqa: E731
    print(f"\nTarget checks (this run, device {machine['device_type']}; value = speed-up or ratio):")
    res = [
        check("GPU: vqswitch-triton >= 5x cdist at every shape", ratios(TRITON, CDIST), gpu_na, lambda v: v < 5),
        check("GPU: vqswitch-triton >= 2x vqswitch-torch at every shape", ratios(TRITON, TORCH), gpu_na,
              lambda v: v < 2),
        check("GPU: vqswitch-triton within 1.5x of the roofline floor for B >= 16 (value = roofline x)",
              [(f"{r['shape']} B{r['B']}{NEAREST if r['task'] == 'nearest' else ''}", r["roofline_x"])
               for r in by.values() if r["method"] in (TRITON, TRITON + NEAREST) and r["B"] >= 16],
              gpu_na, lambda v: v > 1.5),
        check(f"CPU: vqswitch-torch >= 3x {VQP} at TiTok-S shapes (M > 1: {VQP_GROUPS}, the same task)",
              ratios(TORCH, VQP, lambda r: titok_s(r) and r["shape_spec"]["M"] == 1)
              + ratios(TORCH, VQP_GROUPS, titok_s),
              cpu_na or (None if machine["vector_quantize_pytorch"] else f"{VQP} not installed"), lambda v: v < 3),
        check("CPU: vqswitch-torch no slower than faiss at TiTok-S shapes (faiss-flat-per-token)",
              ratios(TORCH, FAISS_LOOP, titok_s), cpu_na or (None if machine["faiss"] else "faiss not installed"),
              lambda v: v < 1),
        check(f"vqswitch peak memory <= its budget ({budget_mib:.0f} MiB) + the input-sized allowance "
              "(value = peak / (budget + allowance))",
              [(f"{r['shape']} B{r['B']} {r['method']}", r["peak_mib"] / (budget_mib + r["allowance_mib"]))
               for r in by.values() if r["method"].startswith("vqswitch")], None, lambda v: v > 1),
    ]
    lower = ratios(TORCH, VQP, lambda r: titok_s(r) and r["shape_spec"]["M"] > 1)
    if lower:  # informative only: a smaller task than vqswitch's (one group's books for every image)
        print(f"  (info) vqswitch-torch vs {VQP}* (group 0's books only, a lower bound): "
              + ", ".join(f"{lab} {v:.2f}x" for lab, v in lower))
    faiss_shared = ratios(TORCH, FAISS)
    if faiss_shared:  # informative only: the faiss target is at TiTok-S
        print("  (info) vqswitch-torch vs faiss-flat on shared books: "
              + ", ".join(f"{lab} {v:.2f}x" for lab, v in faiss_shared))
    return res


def plot(rows: list, shapes: list, path: str, machine: dict) -> str | None:
    """Median time vs batch size per method, one log-log subplot per shape; None if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not importable (optional; pip install matplotlib)")
        return None
    names = [s["name"] for s in shapes if any(r["shape"] == s["name"] and "median_ms" in r for r in rows)]
    if not names:
        print("plot skipped: no measured rows")
        return None
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.9 * nrows), squeeze=False)
    bases = list(dict.fromkeys(m.removesuffix(NEAREST) for m in METHOD_ORDER))
    for ax, name in zip(axes.flat, names):
        for m in METHOD_ORDER:  # one colour per method, dashed for the "nearest" task
            pts = sorted((r["B"], r["median_ms"]) for r in rows if r["shape"] == name and r["method"] == m
                         and "median_ms" in r)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=f"C{bases.index(m.removesuffix(NEAREST))}",
                        linestyle="--" if m.endswith(NEAREST) else "-", label=m)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        measured = sorted({r["B"] for r in rows if r["shape"] == name and "median_ms" in r})
        ax.set_xticks(measured, [str(b) for b in measured])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("median ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"vqswitch search kernels on {machine['device_type']} ({machine['device']})", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"B in {QUICK_BATCHES} and shapes {QUICK_SHAPES}")
    p.add_argument("--shapes", help="comma-separated shape names or prefixes (default: all; see the docstring)")
    p.add_argument("--batches", help="comma-separated batch sizes (default 1,16,64,256)")
    p.add_argument("--repeats", type=int, default=5, help="least timed calls per row, after warm-up (median reported)")
    p.add_argument("--metric", choices=["l2", "cosine", "dot"], help="override every shape's metric")
    p.add_argument("--max-gflop", type=float, default=None,
                   help=f"skip rows estimated above this (default {CPU_MAX_GFLOP:.0f} on CPU, unlimited on GPU)")
    p.add_argument("--retries", type=int, default=2, help="reruns of a row disturbed by other processes")
    p.add_argument("--row-timeout", type=float, default=900.0, help="seconds before a row's worker is abandoned")
    p.add_argument("--isolation", choices=["fork", "exec"],
                   help="fresh process per row: fork (default on CPU) or exec (default on CUDA); see the docstring")
    p.add_argument("--json", default=os.path.join("benchmarks", "results", "bench_kernels.json"))
    p.add_argument("--plot", default=os.path.join("benchmarks", "results", "bench_kernels.png"),
                   help='PNG path ("" for no plot)')
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        load_torch()
        spec = json.loads(args.worker)
        print(json.dumps(machine_info(spec["threads"]) if spec.get("info") else measure(spec)))
        return

    started = time.monotonic()
    shapes = [dict(s, metric=args.metric or s.get("metric", "l2")) for s in select_shapes(args.shapes, args.quick)]
    batches = [int(b) for b in args.batches.split(",")] if args.batches else (QUICK_BATCHES if args.quick else BATCHES)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("measuring the machine (roofline: copy bandwidth, matmul peaks) ...", flush=True)
    machine = run_worker(dict(info=True, threads=threads), args.row_timeout)
    if "error" in machine:
        sys.exit("could not import torch / vqswitch in a worker:\n" + machine["error"])
    machine["load_average_at_start"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    roof = machine["roofline"]
    budget_mib = machine["memory_budget_bytes"] / 2**20
    print(f"torch {machine['torch']} on {machine['device_type']} ({machine['device']}; {machine.get('cpu_model')}), "
          f"{machine['threads']} threads of {machine['cpu_count']} CPUs; vqswitch memory budget {budget_mib:.0f} MiB")
    print(f"measured roofline: copy {roof['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, fp32 matmul "
          f"{roof['fp32_matmul_flop_per_s'] / 1e9:.0f} GFLOP/s (TF32 off), bf16 matmul "
          f"{roof['bf16_matmul_flop_per_s'] / 1e9:.0f} GFLOP/s")
    notes = []
    if not machine["triton_backend"]:
        notes.append(f"vqswitch-triton rows skipped: {machine['triton_backend_error']}")
    if not machine["faiss"]:
        notes.append(f"faiss rows skipped: faiss is not importable ({machine.get('faiss_error')}); "
                     "pip install faiss-cpu")
    else:
        notes.append(f"faiss {machine['faiss']} (faiss-cpu): its rows run on the host CPU")
    if not machine["vector_quantize_pytorch"]:
        notes.append(f"{VQP} rows skipped: not importable")
    elif any(s["metric"] != "l2" and not s.get("shared") for s in shapes):
        notes.append(f"{VQP} rows only with metric l2 (bench_search.build_vqp)")
    for n in notes:
        print("note: " + n)
    isolation = args.isolation or ("fork" if machine["device_type"] == "cpu" else "exec")
    if isolation == "fork":
        prepare_fork_parent()  # after the info worker: an exec'd process inherits its parent's RSS peak
    limit = args.max_gflop if args.max_gflop is not None else CPU_MAX_GFLOP
    print(f"median of >= {args.repeats} calls (as many as fit in {TIMED_S} s, <= {MAX_CALLS}) after >= 1 warm-up "
          f"call ({WARMUP_S} s); rows above {limit:.0f} GFLOP "
          f"{'skipped' if args.max_gflop is not None else 'skipped on CPU (faiss always runs on CPU)'}", flush=True)

    plan = [(s, B, m) for s in shapes for B in batches for m in methods_for(s, machine)]
    rows = []
    for n, (s, B, m) in enumerate(plan, 1):
        row = dict(shape=s["name"], B=B, method=m, task=task(m), shape_spec=s, allowance_mib=allowance_mib(s, B, m))
        reason = skip_reason(s, B, m, machine, args.max_gflop)
        if reason:
            rows.append(dict(row, skipped=reason))
            continue
        print(f"  [{n}/{len(plan)}] {s['name']} B{B} {m} ...", end=" ", flush=True)
        spec = dict(shape=s, B=B, method=m, repeats=args.repeats, threads=threads, device=machine["device_type"])
        res = run_worker(spec, args.row_timeout, isolation)
        for _ in range(args.retries):  # other processes took > 10% of the CPUs: run it again
            if (res.get("contention") or 0) <= 0.1:
                break
            print(f"(busy machine: {100 * res['contention']:.0f}% of CPUs used by others, rerunning)", end=" ",
                  flush=True)
            res = min(res, run_worker(spec, args.row_timeout, isolation),
                      key=lambda r: 2.0 if "error" in r else (r.get("contention") or 0))
        print("failed" if "error" in res else f"{res['median_ms']:.3f} ms", flush=True)
        rows.append(dict(row, **res))

    derive(rows, roof)
    print_table(rows, shapes)
    checks = targets(rows, machine, budget_mib)
    elapsed = time.monotonic() - started
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       command=[os.path.basename(sys.executable)] + sys.argv, machine=machine, roofline=roof,
                       repeats=args.repeats, quick=args.quick, batches=batches, metric_override=args.metric,
                       max_gflop=args.max_gflop if args.max_gflop is not None else
                       {"cpu": CPU_MAX_GFLOP, "cuda": None}, notes=notes, shapes=shapes, rows=rows,
                       targets=checks, elapsed_s=elapsed), f, indent=2)
    print(f"\nwrote {args.json}")
    if args.plot:
        out = plot(rows, shapes, args.plot, machine)
        if out:
            print(f"wrote {out}")
    print(f"total {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()

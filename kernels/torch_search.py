"""Chunked pure-torch nearest-codeword search: the specification every other backend must match.

Shapes (canonical; ``kernels/__init__.py`` converts the public forms):
    x:         (B, T, D) float     tokens to quantize
    codebooks: (M, T', K, D) float M groups; T' = T (token-specific) or 1 (shared by all tokens)

Distances (what the search minimises, and what it reports):
    "l2":     ||x - c||^2
    "cosine": ||x/|x| - c/|c| ||^2  (= 2 - 2 cos when neither is zero; TiTok's rule)
    "dot":    -<x, c>               (the largest inner product wins; IBQ's rule)

Memory: no backend ever holds the (B, T, K) (or (B, M, T, K)) distance tensor. ``memory_budget``
bounds everything the search allocates beyond its inputs and outputs, in fixed shares: score tiles
of (groups, tokens, rows, codes) of at most ``memory_budget // 16`` fp32 elements (a quarter), the
matmul's and argmin's temporaries (a quarter), cached codebook norms (at most an eighth, else they
are computed per tile; see norms.py), and the per-group index/distance blocks of "nearest"
selection (a quarter). The one exception is input-sized: with several groups, the images of each
group are gathered into a copy (at most one copy of z, O(B*T*D)).

Fixed groups take one of two paths (``search_fixed_groups``): "bucket" searches the images of each
present group together, one block per group; "gather" walks chunks of images, each against its own
group's code tiles, gathered per tile into (images, tokens, codes, D) copies that plan_tiles sizes
like any code tile (images standing in for groups), so many small buckets cost no per-group calls.

A running minimum and argmin are carried across code tiles. Ties break toward the lowest code index
(first minimum inside a tile, strict ``<`` across tiles) and the lowest group.

Precision: the search runs in float32 (float64 when any input is float64), with autocast off,
whatever the input dtype. Scores use ||c||^2 - 2<x, c> (||x||^2 is constant per row); the reported
distance of the chosen code is then recomputed directly from the difference, so it is exact in
the compute dtype and the per-group error sums are consistent with it.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F

from .norms import codebook_norms

__all__ = ["DEFAULT_MEMORY_BUDGET", "METRICS", "SEARCH_PATHS", "TARGET_ELEMENTS", "TilePlan", "choose_path",
           "plan_tiles", "search_fixed_groups", "search_all_groups"]

#: Bytes the search may allocate beyond its inputs, outputs and one copy of z (see the module docstring).
DEFAULT_MEMORY_BUDGET = 32 * 2**20
METRICS = ("l2", "cosine", "dot")


class TilePlan(NamedTuple):
    """Tile extents along (groups, tokens, rows, codes); their product bounds the score tile."""

    groups: int
    tokens: int
    rows: int
    codes: int

    @property
    def elements(self) -> int:
        return self.groups * self.tokens * self.rows * self.codes


def plan_tiles(groups: int, tokens: int, rows: int, codes: int, dim: int, memory_budget: int,
               target_elements: int | None = None) -> TilePlan:
    """Choose tile extents along (groups, tokens, rows, codes).

    The working set of one step, score tile (g*t*r*k) plus code tile (g*t*k*D) plus token and
    gathered-code tiles (g*t*r*D), is kept within ``target_elements`` (a cache-sized default on
    CPU, larger on GPU) and never above ``memory_budget // 16`` fp32 elements (a quarter of the
    budget; another quarter covers the matmul's and argmin's temporaries). Prefers whole codebooks,
    then rows, tokens and groups.
    Every extent is at least 1, so a tiny budget still makes progress.
    """
    cap = max(1, int(memory_budget) // 16)
    elems = min(cap, target_elements) if target_elements else cap
    r0 = max(1, min(rows, 64))
    k = min(codes, max(1, elems // (r0 + dim)))
    r = min(rows, max(1, (elems - k * dim) // k) if elems > k * dim else 1)
    per_token = k * r + k * dim + r * dim
    t = min(tokens, max(1, elems // per_token))
    g = min(groups, max(1, elems // (t * per_token)))
    return TilePlan(g, t, r, k)


#: Working-set target per step in fp32 elements: cache-sized on CPU, large on GPU.
TARGET_ELEMENTS = {"cpu": 2**21, "cuda": 2**25}


def _ranges(n: int, step: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, step):
        yield a, min(n, a + step)


def _prepare(x: torch.Tensor, metric: str) -> torch.Tensor:
    return F.normalize(x, dim=-1) if metric == "cosine" else x


def _tile(a: torch.Tensor, sel: torch.Tensor | None, k0: int, k1: int) -> torch.Tensor:
    """Codes k0:k1 of (G, t, K, ...) ``a``: a view of every group, or a gathered copy of groups ``sel``."""
    return a[:, :, k0:k1] if sel is None else a[:, :, k0:k1].index_select(0, sel)


def _argmin_codes(xt: torch.Tensor, cb: torch.Tensor, sq: torch.Tensor, inv: torch.Tensor, metric: str,
                  plan: TilePlan, sel: torch.Tensor | None = None) -> torch.Tensor:
    """Nearest code per (group, token, row).

    xt: (1, t, R, D) prepared tokens (normalised for "cosine"), compute dtype, searched against every
        group; or (g, t, R, D) with ``sel``: row set i against group sel[i] only (the gather path)
    cb: (G, t, K, D) codebooks (raw); sq, inv: (G, t, K) their cached norms (see norms.py), or empty
        tensors to compute each tile's norms on the fly
    sel: None (g = G: every group) or (g,) int64 group ids; each code tile is then gathered per row
        set, (g, t, k, D), never the whole (g, t, K, D)
    returns (g, t, R) int64
    """
    _, t, K, _ = cb.shape
    g = cb.shape[0] if sel is None else sel.shape[0]
    R = xt.shape[2]
    out = torch.empty(g, t, R, dtype=torch.long, device=xt.device)
    for r0, r1 in _ranges(R, plan.rows):
        xr = xt[:, :, r0:r1]
        best_val = best_idx = None
        for k0, k1 in _ranges(K, plan.codes):
            c = _tile(cb, sel, k0, k1).to(xt.dtype)  # (g, t, k, D)
            if metric == "dot":
                score = torch.matmul(xr, c.transpose(-1, -2)).neg_()
            else:  # ||c||^2 - 2 <x, c> (cosine: <x, c> / |c|); ||x||^2 is constant per row
                if sq.numel():
                    cn = _tile(sq, sel, k0, k1).to(xt.dtype).unsqueeze(-2)
                    ic = _tile(inv, sel, k0, k1).to(xt.dtype).unsqueeze(-2) if metric == "cosine" else None
                else:  # norms not cached (they would not fit the budget): this tile's, on the fly
                    nrm = torch.linalg.vector_norm(c, dim=-1).unsqueeze(-2)
                    ic = 1.0 / nrm.clamp_min(1e-12) if metric == "cosine" else None
                    cn = (nrm * ic).square_() if metric == "cosine" else nrm.square_()
                if metric == "l2" and g == 1:
                    score = torch.baddbmm(cn[0], xr[0], c[0].transpose(-1, -2), alpha=-2).unsqueeze(0)
                else:
                    dots = torch.matmul(xr, c.transpose(-1, -2))
                    if metric == "cosine":
                        dots.mul_(ic)
                    score = dots.mul_(-2).add_(cn)
            val, idx = score.min(-1)  # first minimum: lowest index wins ties (as argmin; one pass, not two)
            idx = idx.add_(k0)
            del score
            if best_val is None:
                best_val, best_idx = val, idx
            else:
                better = val < best_val  # strict: the earlier tile (lower index) keeps ties
                best_val = torch.where(better, val, best_val)
                best_idx = torch.where(better, idx, best_idx)
        out[:, :, r0:r1] = best_idx
    return out


def _distance(x: torch.Tensor, c: torch.Tensor, metric: str) -> torch.Tensor:
    """Exact distance between prepared tokens x (..., D) and raw codes c (..., D) -> (...)."""
    if metric == "dot":
        return -(x * c).sum(-1)
    return (x - _prepare(c, metric)).square().sum(-1)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _token_layout(x: torch.Tensor, shared: bool) -> torch.Tensor:
    """(B, T, D) -> (1, T', R, D): tokens-major for token-specific books, one flat row set if shared."""
    B, T, D = x.shape
    return x.reshape(1, 1, B * T, D) if shared else x.transpose(0, 1).unsqueeze(0)


def _from_token_layout(v: torch.Tensor, B: int, T: int, shared: bool) -> torch.Tensor:
    """(g, T', R) -> (g, B, T)."""
    return v.reshape(v.shape[0], B, T) if shared else v.transpose(1, 2)


def _search_group_block(x: torch.Tensor, cb: torch.Tensor, sq: torch.Tensor, inv: torch.Tensor, metric: str,
                        budget: int):
    """All images x (B, T, D) against groups cb (G, T', K, D) with norms sq, inv (G, T', K):
    (indices (G, B, T), distances (G, B, T))."""
    B, T, D = x.shape
    G, Tp, K, _ = cb.shape
    shared = Tp == 1
    xt = _token_layout(_prepare(x, metric), shared)  # (1, T', R, D)
    R = xt.shape[2]
    plan = plan_tiles(G, Tp, R, K, D, budget, TARGET_ELEMENTS.get(x.device.type, TARGET_ELEMENTS["cuda"]))
    idx = torch.empty(G, Tp, R, dtype=torch.long, device=x.device)
    dist = torch.empty(G, Tp, R, dtype=x.dtype, device=x.device)
    for g0, g1 in _ranges(G, plan.groups):
        for t0, t1 in _ranges(Tp, plan.tokens):
            sub = cb[g0:g1, t0:t1]
            norms = [n[g0:g1, t0:t1] if n.numel() else n for n in (sq, inv)]
            i = _argmin_codes(xt[:, t0:t1], sub, *norms, metric, plan)  # (g, t, R)
            idx[g0:g1, t0:t1] = i
            for r0, r1 in _ranges(R, plan.rows):
                ii = i[:, :, r0:r1]
                codes = torch.gather(sub, 2, ii.unsqueeze(-1).expand(*ii.shape, D)).to(x.dtype)
                dist[g0:g1, t0:t1, r0:r1] = _distance(xt[:, t0:t1, r0:r1], codes, metric)
    return _from_token_layout(idx, B, T, shared), _from_token_layout(dist, B, T, shared)


def _search_gathered(x: torch.Tensor, codebooks: torch.Tensor, groups: torch.Tensor, sq: torch.Tensor,
                     inv: torch.Tensor, metric: str, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image against its own group's books, a chunk of images per step (the gather path).

    x: (B, T, D) compute dtype; codebooks: (M, T', K, D); groups: (B,) int64; sq, inv: (M, T', K)
    cached norms or empty. Returns (indices (B, T) int64, distances (B, T) x.dtype). The chunk's code
    tiles codebooks[groups[chunk], tokens, codes] are gathered into (b, t, k, D) copies sized by
    plan_tiles (images play the role of groups), so no group's images are bucketed.
    """
    B, T, D = x.shape
    Tp, K = codebooks.shape[1], codebooks.shape[2]
    xp = _prepare(x, metric)
    xt = xp.unsqueeze(1) if Tp == 1 else xp.unsqueeze(2)  # (B, T', R, D): R = T if shared, else 1
    R = xt.shape[2]
    plan = plan_tiles(B, Tp, R, K, D, budget, TARGET_ELEMENTS.get(x.device.type, TARGET_ELEMENTS["cuda"]))
    idx = torch.empty(B, Tp, R, dtype=torch.long, device=x.device)
    dist = torch.empty(B, Tp, R, dtype=x.dtype, device=x.device)
    for b0, b1 in _ranges(B, plan.groups):
        sel = groups[b0:b1]
        for t0, t1 in _ranges(Tp, plan.tokens):
            sub = codebooks[:, t0:t1]
            norms = [n[:, t0:t1] if n.numel() else n for n in (sq, inv)]
            xs = xt[b0:b1, t0:t1]
            i = _argmin_codes(xs, sub, *norms, metric, plan, sel)  # (b, t, R)
            idx[b0:b1, t0:t1] = i
            tok = torch.arange(t1 - t0, device=x.device)[None, :, None]
            for r0, r1 in _ranges(R, plan.rows):
                codes = sub[sel[:, None, None], tok, i[:, :, r0:r1]].to(x.dtype)  # (b, t, r, D)
                dist[b0:b1, t0:t1, r0:r1] = _distance(xs[:, :, r0:r1], codes, metric)
    return idx.reshape(B, T), dist.reshape(B, T)


#: "auto" takes the gather path when the batch's images fall in more than one group and average fewer
#: than this many images per present group; keyed on (shared books, device type). Measured on CPU at
#: TiTok shapes (T=128, D=12, K=256..1024): with shared (K, D) books the gather path is 2.5-3.9x faster
#: at about 1-2 images per group and breaks even near 8-16; with token-specific books each image reads
#: its own T*K*D codes, the search is memory-bound (plus the per-tile norm pass) and the gathered copy
#: costs more than the per-group calls it saves, so CPU keeps buckets. The torch path on GPU (Triton is
#: the default there) copies the CPU values until they are measured on a GPU.
GATHER_BELOW_IMAGES_PER_GROUP = {(True, "cpu"): 8.0, (False, "cpu"): 0.0, (True, "cuda"): 8.0, (False, "cuda"): 0.0}
SEARCH_PATHS = ("auto", "bucket", "gather")


def choose_path(batch: int, groups_present: int, shared: bool, device_type: str = "cpu") -> str:
    """"bucket" or "gather" for ``batch`` images in ``groups_present`` distinct groups, with shared
    (T' = 1) or token-specific books on ``device_type`` (see GATHER_BELOW_IMAGES_PER_GROUP)."""
    limit = GATHER_BELOW_IMAGES_PER_GROUP.get((shared, device_type), GATHER_BELOW_IMAGES_PER_GROUP[(shared, "cuda")])
    return "gather" if groups_present > 1 and batch < limit * groups_present else "bucket"


def _norms_within_budget(codebooks: torch.Tensor, metric: str, memory_budget: int):
    """Cached norms (norms.py) when they take at most an eighth of the budget, else empty tensors
    (each tile then computes its own): the cache is memory the budget must account for."""
    nbytes = codebooks.shape[0] * codebooks.shape[1] * codebooks.shape[2] * 4 * (2 if metric == "cosine" else 1)
    if metric == "dot" or nbytes > memory_budget // 8:
        empty = codebooks.new_empty(0, dtype=torch.float32)
        return empty, empty
    return codebook_norms(codebooks, metric)


def search_fixed_groups(x: torch.Tensor, codebooks: torch.Tensor, groups: torch.Tensor | None, metric: str,
                        memory_budget: int = DEFAULT_MEMORY_BUDGET, *, path: str = "auto"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code of each token in the codebook of its image's group.

    x: (B, T, D) float; codebooks: (M, T', K, D) float; groups: (B,) int64 in [0, M) or None (M == 1).
    path: "bucket" (the images of each present group searched together, one block per group),
    "gather" (chunks of images, each against its own gathered code tiles) or "auto" (choose_path:
    gather when images average few per present group, see GATHER_BELOW_IMAGES_PER_GROUP). Both give
    the same indices (up to exact float near-ties) and exact distances. M == 1 or groups None always
    searches the one group as a block.
    Returns (indices (B, T) int64, distances (B, T) float32 or float64). Inputs are trusted
    (validated by the public wrappers); raises ValueError for an unknown ``path``.
    """
    if path not in SEARCH_PATHS:
        raise ValueError(f"path must be one of {SEARCH_PATHS}, got {path!r}")
    B, T, D = x.shape
    M = codebooks.shape[0]
    dtype = _compute_dtype(x, codebooks)
    sq, inv = _norms_within_budget(codebooks, metric, memory_budget)

    def part(n, g):
        return n[g:g + 1] if n.numel() else n

    with torch.autocast(x.device.type, enabled=False):
        x = x.to(dtype)
        if M == 1 or groups is None:
            i, d = _search_group_block(x, codebooks[:1], part(sq, 0), part(inv, 0), metric, memory_budget)
            return i[0], d[0]
        counts = torch.bincount(groups, minlength=M).tolist()
        if path == "auto":
            path = choose_path(B, sum(1 for n in counts if n), codebooks.shape[1] == 1, x.device.type)
        if path == "gather":
            return _search_gathered(x, codebooks, groups, sq, inv, metric, memory_budget)
        indices = torch.empty(B, T, dtype=torch.long, device=x.device)
        dists = torch.empty(B, T, dtype=dtype, device=x.device)
        order = torch.argsort(groups, stable=True)
        start = 0
        for g, n in enumerate(counts):  # one bucket per group present in the batch
            if n:
                sel = order[start:start + n]
                i, d = _search_group_block(x[sel], codebooks[g:g + 1], part(sq, g), part(inv, g), metric, memory_budget)
                indices[sel], dists[sel] = i[0], d[0]
                start += n
        return indices, dists


def _pick_best_groups(chunks, B: int, T: int, M: int, dtype: torch.dtype, device: torch.device):
    """Reduce per-group results to the least-error group per image, lowest group first on ties.

    chunks: iterable of (g0, indices (g, B, T), distances (g, B, T)) in ascending g0.
    Returns (groups (B,), indices (B, T), distances (B, T), group_errors (B, M)).
    """
    errors = torch.empty(B, M, dtype=dtype, device=device)
    best_err = torch.full((B,), math.inf, dtype=dtype, device=device)
    best_g = torch.zeros(B, dtype=torch.long, device=device)
    best_i = torch.zeros(B, T, dtype=torch.long, device=device)
    best_d = torch.zeros(B, T, dtype=dtype, device=device)
    for g0, i, d in chunks:
        e = d.sum(-1)  # (g, B)
        errors[:, g0:g0 + e.shape[0]] = e.T
        for j in range(e.shape[0]):  # strict < keeps the lowest group on ties
            better = e[j] < best_err
            best_err = torch.where(better, e[j], best_err)
            best_g = torch.where(better, torch.full_like(best_g, g0 + j), best_g)
            best_i = torch.where(better[:, None], i[j], best_i)
            best_d = torch.where(better[:, None], d[j], best_d)
    return best_g, best_i, best_d, errors


def search_all_groups(x: torch.Tensor, codebooks: torch.Tensor, metric: str,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET):
    """Search every group and pick, per image, the group of least total error ("nearest" selection).

    x: (B, T, D) float; codebooks: (M, T', K, D) float.
    Returns (groups (B,) int64, indices (B, T) int64, distances (B, T), group_errors (B, M)), where
    group_errors[b, m] = sum_t distance of token t's nearest code in group m, and groups[b] is the
    first m of least error (ties toward the lowest group).
    """
    B, T, D = x.shape
    M, Tp, K, _ = codebooks.shape
    dtype = _compute_dtype(x, codebooks)
    sq, inv = _norms_within_budget(codebooks, metric, memory_budget)
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(dtype)
        # bound the (g, B, T) index/distance blocks held per step to the budget as well
        step = max(1, min(M, plan_tiles(M, Tp, B * T // Tp, K, D, memory_budget).groups,
                          (memory_budget // 64) // max(1, B * T)))  # (g, B, T) int64 + float: <= budget / 4
        chunks = ((g0, *_search_group_block(x, codebooks[g0:g1], sq[g0:g1] if sq.numel() else sq,
                                            inv[g0:g1] if inv.numel() else inv, metric, memory_budget))
                  for g0, g1 in _ranges(M, step))
        return _pick_best_groups(chunks, B, T, M, dtype, x.device)

"""Chunked pure-torch nearest-codeword search: the specification every other backend must match.

Shapes (canonical; ``kernels/__init__.py`` converts the public forms):
    x:         (B, T, D) float     tokens to quantize
    codebooks: (M, T', K, D) float M groups; T' = T (token-specific) or 1 (shared by all tokens)

Distances (what the search minimises, and what it reports):
    "l2":     ||x - c||^2
    "cosine": ||x/|x| - c/|c| ||^2  (= 2 - 2 cos when neither is zero; TiTok's rule)
    "dot":    -<x, c>               (the largest inner product wins; IBQ's rule)

Memory: no backend ever holds the (B, T, K) (or (B, M, T, K)) distance tensor. ``memory_budget``
bounds what the search allocates beyond its inputs and outputs, in fixed shares:
  - a quarter for the Workspace: score tiles of (groups, tokens, rows, codes), gathered or cast code
    tiles and the running minima, sized by plan_tiles and reused by every tile (tested);
  - a quarter for the bucket path's copy of the images it is searching (sorted by group, cast,
    normalised, in token layout), made a chunk of images at a time;
  - a quarter for the ops' own temporaries (a broadcast matmul's copies) and the distance pass;
  - a quarter for the per-group index/distance blocks of "nearest" selection.
Two allocations scale with the inputs instead, and are not charged to the budget: the codebook norms
(norms.py: M*T'*K floats, 1/D of fp32 books, twice that for "cosine", none for "dot"; cached while
the codebook is unchanged, so a fixed codebook pays for them once) and, on the other paths, one copy
of z when it must be cast to the compute dtype or normalised for "cosine".

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

__all__ = ["DEFAULT_MEMORY_BUDGET", "METRICS", "SEARCH_PATHS", "TARGET_ELEMENTS", "TilePlan", "Workspace",
           "choose_path", "exact_distances", "plan_tiles", "search_fixed_groups", "search_all_groups"]

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

    def working_elements(self, dim: int) -> int:
        """Workspace of one step in compute-dtype elements: scores (g*t*r*k), a gathered or cast code
        tile and its norms (g*t*k*(D+2)), and the token tile and running minima (g*t*r*(D+7): the
        values, int64 indices and mask of the current and best minima take at most 7 elements' bytes)."""
        g, t, r, k = self
        return g * t * (r * k + k * (dim + 2) + r * (dim + 7))


def plan_tiles(groups: int, tokens: int, rows: int, codes: int, dim: int, memory_budget: int,
               target_elements: int | None = None, itemsize: int = 4) -> TilePlan:
    """Choose tile extents along (groups, tokens, rows, codes).

    The working set of one step (``TilePlan.working_elements``: score tile, code tile, token tile and
    running minima) is kept within ``target_elements`` (a cache-sized default on CPU, larger on GPU)
    and never above ``memory_budget // (4 * itemsize)`` elements: a quarter of the budget in the
    compute dtype (``itemsize`` bytes; another quarter covers the ops' own temporaries). Prefers whole
    codebooks, then rows, tokens and groups.
    Every extent is at least 1, so a tiny budget still makes progress.
    """
    cap = max(1, int(memory_budget) // (4 * itemsize))
    elems = min(cap, target_elements) if target_elements else cap
    r0 = max(1, min(rows, 64))
    while r0 > 1 and elems < r0 * (dim + 7) + r0 + dim + 2:  # room for r0 rows and at least one code
        r0 //= 2
    k = min(codes, max(1, (elems - r0 * (dim + 7)) // (r0 + dim + 2)))
    fixed = k * (dim + 2)
    r = min(rows, max(1, (elems - fixed) // (k + dim + 7)) if elems > fixed else 1)
    per_token = k * r + fixed + r * (dim + 7)
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


#: Elements of z copied per step when sorting images by group (the step's temporary).
COPY_CHUNK_ELEMENTS = 2**20


def _prepared(x: torch.Tensor, metric: str, dtype: torch.dtype, order: torch.Tensor | None = None,
              token_major: bool = False) -> torch.Tensor:
    """x (B, T, D) in the compute dtype, normalised for "cosine" (as F.normalize). With ``order`` (n,):
    a new contiguous tensor of images x[order], laid out (T, n, D) if ``token_major`` else (n, T, D),
    filled a chunk of images at a time (index_select on a transposed view would first copy all of z).
    Without ``order`` the result is x itself for an fp32 "l2"/"dot" input, else one z-sized copy."""
    y, owned = x, False
    if order is not None:
        B, T, D = x.shape
        n = order.shape[0]
        y, owned = torch.empty((T, n, D) if token_major else (n, T, D), dtype=dtype, device=x.device), True
        step = max(1, COPY_CHUNK_ELEMENTS // max(1, T * D))
        for b0, b1 in _ranges(n, step):
            part = x.index_select(0, order[b0:b1])
            if token_major:
                y[:, b0:b1] = part.transpose(0, 1)
            else:
                y[b0:b1] = part
    if y.dtype != dtype:
        y, owned = y.to(dtype), True
    if metric == "cosine":
        y = y.div_(y.norm(2, -1, keepdim=True).clamp_min_(1e-12)) if owned else _prepare(y, metric)
    return y


class Workspace:
    """Scratch buffers of one search, one per role, reused by every tile (and every group bucket).

    Each tile writes its scores, gathered codes and running minima into the same memory (``out=``
    and in-place ops) instead of allocating and freeing tile-sized tensors: the resident memory of
    a search is then these buffers, bounded by the plan, rather than whatever the allocator keeps
    after thousands of frees (measured: 4 MiB score tiles raised RSS by 33 MiB), and no page is
    faulted in twice. ``nbytes`` is what the buffers hold; tests check it against the budget.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._bufs: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """A contiguous (shape) tensor of ``dtype`` on the buffer ``name`` (grown when too small)."""
        n = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            self._bufs.pop(name, None)  # free the old one first
            buf = self._bufs[name] = torch.empty(n, dtype=dtype, device=self.device)
        return buf[:n].view(shape)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._bufs.values())


def _tile(a: torch.Tensor, sel: torch.Tensor | None, k0: int, k1: int, ws: Workspace, name: str,
          dtype: torch.dtype) -> torch.Tensor:
    """Codes k0:k1 of (G, t, K, ...) ``a`` in ``dtype``: a view of every group when that needs no copy,
    else a copy in the workspace (groups ``sel`` gathered, and/or cast)."""
    part = a[:, :, k0:k1]
    if sel is None:
        if part.dtype == dtype:
            return part
        return ws.take(name, tuple(part.shape), dtype).copy_(part)
    shape = (sel.shape[0], *part.shape[1:])
    if part.dtype == dtype:
        return torch.index_select(part, 0, sel, out=ws.take(name, shape, dtype))
    return ws.take(name, shape, dtype).copy_(part.index_select(0, sel))


def _argmin_codes(xt: torch.Tensor, cb: torch.Tensor, sq: torch.Tensor, inv: torch.Tensor, metric: str,
                  plan: TilePlan, ws: Workspace, out: torch.Tensor, sel: torch.Tensor | None = None) -> None:
    """Nearest code per (group, token, row), written into ``out``.

    xt: (1, t, R, D) prepared tokens (normalised for "cosine"), compute dtype, searched against every
        group; or (g, t, R, D) with ``sel``: row set i against group sel[i] only (the gather path)
    cb: (G, t, K, D) codebooks (raw); sq, inv: (G, t, K) their cached norms (see norms.py; empty for
        "dot", inv empty unless "cosine")
    sel: None (g = G: every group) or (g,) int64 group ids; each code tile is then gathered per row
        set, (g, t, k, D), never the whole (g, t, K, D)
    out: (g, t, R) int64
    """
    _, t, K, _ = cb.shape
    g = cb.shape[0] if sel is None else sel.shape[0]
    R, dtype = xt.shape[2], xt.dtype
    for r0, r1 in _ranges(R, plan.rows):
        xr = xt[:, :, r0:r1]
        r = r1 - r0
        dst = out[:, :, r0:r1]  # the running argmin lives in the output itself when that is contiguous
        best_idx = dst if dst.is_contiguous() else ws.take("best_idx", (g, t, r), torch.long)
        best_val = ws.take("best_val", (g, t, r), dtype)
        for k0, k1 in _ranges(K, plan.codes):
            c = _tile(cb, sel, k0, k1, ws, "codes", dtype)  # (g, t, k, D)
            score = ws.take("score", (g, t, r, k1 - k0), dtype)
            if metric == "dot":
                torch.matmul(xr, c.transpose(-1, -2), out=score).neg_()
            else:  # ||c||^2 - 2 <x, c> (cosine: <x, c> / |c|); ||x||^2 is constant per row
                cn = _tile(sq, sel, k0, k1, ws, "sq", dtype).unsqueeze(-2)
                if metric == "l2" and g == 1:
                    torch.baddbmm(cn[0], xr[0], c[0].transpose(-1, -2), alpha=-2, out=score[0])
                else:
                    torch.matmul(xr, c.transpose(-1, -2), out=score)
                    if metric == "cosine":
                        score.mul_(_tile(inv, sel, k0, k1, ws, "inv", dtype).unsqueeze(-2))
                    score.mul_(-2).add_(cn)
            if k0 == 0:  # first minimum: the lowest index wins ties, as argmin (one pass, not two)
                torch.min(score, -1, out=(best_val, best_idx))
                continue
            val, idx = ws.take("val", (g, t, r), dtype), ws.take("idx", (g, t, r), torch.long)
            torch.min(score, -1, out=(val, idx))
            better = torch.lt(val, best_val, out=ws.take("better", (g, t, r), torch.bool))  # strict: the
            torch.where(better, val, best_val, out=best_val)  # earlier tile (lower index) keeps ties
            torch.where(better, idx.add_(k0), best_idx, out=best_idx)
        if best_idx is not dst:
            dst.copy_(best_idx)


def _distance(x: torch.Tensor, c: torch.Tensor, metric: str) -> torch.Tensor:
    """Exact distance between prepared tokens x (..., D) and raw codes c (..., D) -> (...)."""
    if metric == "dot":
        return -(x * c).sum(-1)
    return (x - _prepare(c, metric)).square().sum(-1)


def _codes_at(codebooks: torch.Tensor, groups: torch.Tensor | None, indices: torch.Tensor) -> torch.Tensor:
    """codebooks[groups, t, indices[..., t]]: the chosen codes (..., T, D) of ``indices`` (..., T) int64.

    codebooks: (M, T', K, D); groups: int64 broadcastable against ``indices`` (e.g. (B, 1) for one
    group per image, (g, 1, 1) for one per block), or None for group 0. One index_select on the books
    viewed as (M*T'*K, D) rows, (g*T' + t)*K + k, when they flatten without a copy; else advanced indexing.
    """
    T = indices.shape[-1]
    M, Tp, K, D = codebooks.shape
    tok = torch.arange(T, device=indices.device) if Tp > 1 else torch.zeros(T, dtype=torch.long, device=indices.device)
    try:
        flat = codebooks.view(-1, D)
    except RuntimeError:  # strided books (an expanded or sliced view)
        return codebooks[0 if groups is None else groups, tok, indices]
    rows = indices + tok * K if Tp > 1 else indices
    if groups is not None:
        rows = rows + groups * (Tp * K)
    return flat.index_select(0, rows.reshape(-1)).view(*rows.shape, D)


def exact_distances(x: torch.Tensor, codebooks: torch.Tensor, groups: torch.Tensor | None, indices: torch.Tensor,
                    metric: str, memory_budget: int = DEFAULT_MEMORY_BUDGET, dtype: torch.dtype | None = None
                    ) -> torch.Tensor:
    """The distance of each token to its chosen code, recomputed directly from the difference.

    x: (B, T, D) float (raw: normalised here for "cosine"); codebooks: (M, T', K, D) float; groups: (B,)
    int64 or None (group 0); indices: (B, T) int64; dtype: the compute dtype (default x's).
    Returns (B, T) ``dtype``. Works in chunks of images whose gathered codes and temporaries take at
    most a quarter of the budget.
    """
    B, T, D = x.shape
    dtype = dtype or x.dtype
    out = torch.empty(B, T, dtype=dtype, device=x.device)
    step = max(1, (memory_budget // 4) // max(1, 4 * T * D * out.element_size()))  # x, codes, x - c, its square
    for b0, b1 in _ranges(B, step):
        codes = _codes_at(codebooks, None if groups is None else groups[b0:b1, None], indices[b0:b1])
        out[b0:b1] = _distance(_prepare(x[b0:b1].to(dtype), metric), codes.to(dtype), metric)
    return out


def _group_distances(x: torch.Tensor, xp: torch.Tensor, codebooks: torch.Tensor, g0: int, indices: torch.Tensor,
                     metric: str, memory_budget: int, dtype: torch.dtype) -> torch.Tensor:
    """Exact distances (g, B, T) of every image to codes indices[j] (g, B, T) of group g0 + j.

    x: (B, T, D) raw, xp: the same prepared (compute dtype, normalised for "cosine"); codebooks:
    (M, T', K, D). Several groups per step, gathered at once (_codes_at), while their codes and
    temporaries fit a quarter of the budget; else group by group (exact_distances, in chunks of images).
    """
    g, B, T = indices.shape
    per_group = 3 * B * T * x.shape[-1] * torch.empty((), dtype=dtype).element_size()  # codes, x - c, its square
    if per_group > memory_budget // 4:
        return torch.stack([exact_distances(x, codebooks[g0 + j:g0 + j + 1], None, indices[j], metric, memory_budget,
                                            dtype) for j in range(g)])
    out = torch.empty(g, B, T, dtype=dtype, device=x.device)
    for j0, j1 in _ranges(g, max(1, (memory_budget // 4) // per_group)):
        ids = torch.arange(g0 + j0, g0 + j1, device=x.device).view(-1, 1, 1)
        out[j0:j1] = _distance(xp, _codes_at(codebooks, ids, indices[j0:j1]).to(dtype), metric)
    return out


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _token_layout(x: torch.Tensor, shared: bool) -> torch.Tensor:
    """(B, T, D) -> (1, T', R, D): tokens-major for token-specific books, one flat row set if shared."""
    B, T, D = x.shape
    return x.reshape(1, 1, B * T, D) if shared else x.transpose(0, 1).unsqueeze(0)


def _from_token_layout(v: torch.Tensor, B: int, T: int, shared: bool) -> torch.Tensor:
    """(g, T', R) -> (g, B, T)."""
    return v.reshape(v.shape[0], B, T) if shared else v.transpose(1, 2)


def _target(device: torch.device) -> int:
    return TARGET_ELEMENTS.get(device.type, TARGET_ELEMENTS["cuda"])


def _search_block(xt: torch.Tensor, cb: torch.Tensor, sq: torch.Tensor, inv: torch.Tensor, metric: str,
                  budget: int, ws: Workspace, out: torch.Tensor) -> None:
    """Every row of xt (1, T', R, D) (prepared, compute dtype, token layout) against every group of
    cb (G, T', K, D) with norms sq, inv (G, T', K) (empty where the metric needs none); the nearest
    code indices go to out (G, T', R) int64."""
    _, Tp, R, D = xt.shape
    G, _, K, _ = cb.shape
    plan = plan_tiles(G, Tp, R, K, D, budget, _target(xt.device), xt.element_size())
    if plan.groups == G and plan.tokens == Tp:  # one step: no slicing (the common case of small buckets)
        _argmin_codes(xt, cb, sq, inv, metric, plan, ws, out)
        return
    for g0, g1 in _ranges(G, plan.groups):
        for t0, t1 in _ranges(Tp, plan.tokens):
            norms = [n[g0:g1, t0:t1] if n.numel() else n for n in (sq, inv)]
            _argmin_codes(xt[:, t0:t1], cb[g0:g1, t0:t1], *norms, metric, plan, ws, out[g0:g1, t0:t1])


def _search_group_block(xp: torch.Tensor, cb: torch.Tensor, sq: torch.Tensor, inv: torch.Tensor, metric: str,
                        budget: int, ws: Workspace) -> torch.Tensor:
    """Indices (G, B, T) int64 of all prepared images xp (B, T, D) (compute dtype) against groups
    cb (G, T', K, D) with norms sq, inv (G, T', K) (empty where the metric needs none)."""
    B, T, D = xp.shape
    shared = cb.shape[1] == 1
    xt = _token_layout(xp, shared)  # (1, T', R, D)
    idx = torch.empty(cb.shape[0], *xt.shape[1:3], dtype=torch.long, device=xp.device)
    _search_block(xt, cb, sq, inv, metric, budget, ws, idx)
    return _from_token_layout(idx, B, T, shared)


def _search_buckets(x: torch.Tensor, dtype: torch.dtype, codebooks: torch.Tensor, groups: torch.Tensor,
                    sq: torch.Tensor, inv: torch.Tensor, metric: str, budget: int, ws: Workspace) -> torch.Tensor:
    """The bucket path: images x (B, T, D) (raw) sorted by group, then copied (cast, normalised, in token
    layout) a chunk of sorted images at a time, at most a quarter of the budget per copy; within a
    chunk each group's rows, a contiguous slice, are searched against that group's books.
    Returns indices (B, T) int64."""
    B, T, D = x.shape
    shared = codebooks.shape[1] == 1
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    step = max(1, (budget // 4) // (T * D * torch.empty((), dtype=dtype).element_size()))  # images per copy
    found = torch.empty(B, T, dtype=torch.long, device=x.device)  # indices of the sorted images
    for c0, c1 in _ranges(B, step):
        n = c1 - c0
        xs = _prepared(x, metric, dtype, order[c0:c1], token_major=not shared)
        # token-specific: (1, T, n, D), rows = images; shared: (1, 1, n*T, D), image b's tokens are rows b*T..
        xt, per = (xs.view(1, 1, n * T, D), T) if shared else (xs.unsqueeze(0), 1)
        idx = torch.empty(1, *xt.shape[1:3], dtype=torch.long, device=x.device)
        gs, counts = torch.unique_consecutive(sorted_groups[c0:c1], return_counts=True)
        start = 0
        for g, m in zip(gs.tolist(), counts.tolist()):  # one bucket per group present, ascending
            rows = slice(start * per, (start + m) * per)
            norms = [v[g:g + 1] if v.numel() else v for v in (sq, inv)]
            _search_block(xt[:, :, rows], codebooks[g:g + 1], *norms, metric, budget, ws, idx[:, :, rows])
            start += m
        found[c0:c1] = _from_token_layout(idx, n, T, shared)[0]
        del xs, xt
    indices = torch.empty(B, T, dtype=torch.long, device=x.device)
    indices[order] = found
    return indices


def _search_gathered(xp: torch.Tensor, codebooks: torch.Tensor, groups: torch.Tensor, sq: torch.Tensor,
                     inv: torch.Tensor, metric: str, budget: int, ws: Workspace) -> torch.Tensor:
    """Each image against its own group's books, a chunk of images per step (the gather path).

    xp: (B, T, D) prepared, compute dtype; codebooks: (M, T', K, D); groups: (B,) int64; sq, inv:
    (M, T', K) cached norms or empty. Returns indices (B, T) int64. The chunk's code tiles
    codebooks[groups[chunk], tokens, codes] are gathered into (b, t, k, D) workspace copies sized by
    plan_tiles (images play the role of groups), so no group's images are bucketed.
    """
    B, T, D = xp.shape
    Tp, K = codebooks.shape[1], codebooks.shape[2]
    xt = xp.unsqueeze(1) if Tp == 1 else xp.unsqueeze(2)  # (B, T', R, D): R = T if shared, else 1
    R = xt.shape[2]
    plan = plan_tiles(B, Tp, R, K, D, budget, _target(xp.device), xp.element_size())
    idx = torch.empty(B, Tp, R, dtype=torch.long, device=xp.device)
    for b0, b1 in _ranges(B, plan.groups):
        for t0, t1 in _ranges(Tp, plan.tokens):
            norms = [n[:, t0:t1] if n.numel() else n for n in (sq, inv)]
            _argmin_codes(xt[b0:b1, t0:t1], codebooks[:, t0:t1], *norms, metric, plan, ws, idx[b0:b1, t0:t1],
                          groups[b0:b1])
    return idx.reshape(B, T)


#: "auto" takes the gather path when the batch's images fall in more than one group and average fewer
#: than this many images per present group; keyed on (shared books, device type). Measured on CPU at
#: TiTok shapes (T=128, D=12, K=256..1024): with shared (K, D) books the gather path is 2.5-3.9x faster
#: at about 1-2 images per group and breaks even near 8-16; with token-specific books each image reads
#: its own T*K*D codes, the search is memory-bound and the gathered copy costs more than the per-group
#: calls it saves, so CPU keeps buckets. The torch path on GPU (Triton is the default there) copies the
#: CPU values until they are measured on a GPU.
GATHER_BELOW_IMAGES_PER_GROUP = {(True, "cpu"): 8.0, (False, "cpu"): 0.0, (True, "cuda"): 8.0, (False, "cuda"): 0.0}
SEARCH_PATHS = ("auto", "bucket", "gather")


def choose_path(batch: int, groups_present: int, shared: bool, device_type: str = "cpu") -> str:
    """"bucket" or "gather" for ``batch`` images in ``groups_present`` distinct groups, with shared
    (T' = 1) or token-specific books on ``device_type`` (see GATHER_BELOW_IMAGES_PER_GROUP)."""
    limit = GATHER_BELOW_IMAGES_PER_GROUP.get((shared, device_type), GATHER_BELOW_IMAGES_PER_GROUP[(shared, "cuda")])
    return "gather" if groups_present > 1 and batch < limit * groups_present else "bucket"


def search_fixed_groups(x: torch.Tensor, codebooks: torch.Tensor, groups: torch.Tensor | None, metric: str,
                        memory_budget: int = DEFAULT_MEMORY_BUDGET, *, path: str = "auto"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code of each token in the codebook of its image's group.

    x: (B, T, D) float; codebooks: (M, T', K, D) float; groups: (B,) int64 in [0, M) or None (M == 1).
    path: "bucket" (the images of each present group searched together, one block per group),
    "gather" (chunks of images, each against its own gathered code tiles) or "auto" (choose_path:
    gather when images average few per present group, see GATHER_BELOW_IMAGES_PER_GROUP). Both give
    the same indices (up to exact float near-ties) and exact distances. A batch whose images all fall
    in one group (always when M == 1 or groups is None) is searched as one block, whatever the path.
    Returns (indices (B, T) int64, distances (B, T) float32 or float64). Inputs are trusted
    (validated by the public wrappers); raises ValueError for an unknown ``path``.
    """
    if path not in SEARCH_PATHS:
        raise ValueError(f"path must be one of {SEARCH_PATHS}, got {path!r}")
    B, T, D = x.shape
    M = codebooks.shape[0]
    dtype = _compute_dtype(x, codebooks)
    sq, inv = codebook_norms(codebooks, metric)
    ws = Workspace(x.device)

    def part(n, g):
        return n[g:g + 1] if n.numel() else n

    with torch.autocast(x.device.type, enabled=False):
        present = [0] if M == 1 or groups is None else torch.unique(groups).tolist()
        if len(present) == 1:  # one group (always for M == 1): a single block, nothing to sort or gather
            g = present[0]
            groups = None if M == 1 else groups
            indices = _search_group_block(_prepared(x, metric, dtype), codebooks[g:g + 1], part(sq, g), part(inv, g),
                                          metric, memory_budget, ws)[0]
        else:
            if path == "auto":
                path = choose_path(B, len(present), codebooks.shape[1] == 1, x.device.type)
            if path == "gather":
                indices = _search_gathered(_prepared(x, metric, dtype), codebooks, groups, sq, inv, metric,
                                           memory_budget, ws)
            else:
                indices = _search_buckets(x, dtype, codebooks, groups, sq, inv, metric, memory_budget, ws)
        del ws  # the scratch buffers go before the distance pass allocates
        return indices, exact_distances(x, codebooks, groups, indices, metric, memory_budget, dtype)


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
        err, j = e.min(0)  # the chunk's best group per image: the first minimum, so the lowest on ties
        better = err < best_err  # strict: an earlier chunk (lower groups) keeps ties
        pick = j.view(1, B, 1).expand(1, B, T)
        best_err = torch.where(better, err, best_err)
        best_g = torch.where(better, j + g0, best_g)
        best_i = torch.where(better[:, None], i.gather(0, pick)[0], best_i)
        best_d = torch.where(better[:, None], d.gather(0, pick)[0], best_d)
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
    sq, inv = codebook_norms(codebooks, metric)
    ws = Workspace(x.device)
    with torch.autocast(x.device.type, enabled=False):
        xp = _prepared(x, metric, dtype)
        # bound the (g, B, T) index/distance blocks held per step to the budget as well
        step = max(1, min(M, plan_tiles(M, Tp, B * T // Tp, K, D, memory_budget).groups,
                          (memory_budget // 64) // max(1, B * T)))  # (g, B, T) int64 + float: <= budget / 4

        def chunks():
            for g0, g1 in _ranges(M, step):
                norms = [n[g0:g1] if n.numel() else n for n in (sq, inv)]
                i = _search_group_block(xp, codebooks[g0:g1], *norms, metric, memory_budget, ws)  # (g, B, T)
                yield g0, i, _group_distances(x, xp, codebooks, g0, i, metric, memory_budget, dtype)

        return _pick_best_groups(chunks(), B, T, M, dtype, x.device)

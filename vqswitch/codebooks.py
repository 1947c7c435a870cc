"""Codebook initialisation and usage statistics (tensors in, tensors out; no nn.Modules).

- :func:`kmeans` - batched Lloyd k-means over P independent problems (assignment by the
  kernels' search, so it never holds an N x K distance matrix).
- :func:`reduce_codebook` - the M group codebooks of K codes from one pretrained (K0, D) codebook.
- :func:`codebooks_from_latents` - per-group, per-token k-means of encoder outputs.
- :class:`Utilization` - the paper's Table 4 statistics from usage counts.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from vqswitch.kernels import DEFAULT_MEMORY_BUDGET, _nearest_codeword

from ._checks import check_float_tensor, check_int

__all__ = ["kmeans", "reduce_codebook", "codebooks_from_latents", "Utilization", "utilization"]


@contextmanager
def allocation(what: str):
    """Turn the allocator's error for an impossible size into a ValueError naming ``what`` (the arguments
    that asked for it), instead of a RuntimeError from deep inside torch."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        text = str(e)
        if not isinstance(e, MemoryError) and not any(word in text.lower() for word in ("alloc", "memory")):
            raise
        reason = text.splitlines()[0][:200] if text else type(e).__name__
        raise ValueError(f"cannot allocate {what}: {reason}") from None


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The nearest centroid (l2) of every point: x (N, P, D) float32, centroids (P, K, D) float32 on x's device ->
    (N, P) int64. Both are this module's own (checked by the public function that made them), so the kernels'
    trusted entry point searches them; NaN/Inf points still raise ValueError there."""
    return _nearest_codeword(x, centroids.unsqueeze(0), None, "l2", "auto", DEFAULT_MEMORY_BUDGET, True).indices


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


#: Largest K seeded with k-means++ (its K sequential passes cost too much above this).
KMEANSPP_MAX_K = 256


def _kmeanspp(x: torch.Tensor, K: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling), batched over problems: x (P, N, D) -> (P, K, D).

    Seeds from a random subsample of at most max(2K, 1024) points per problem, so the K sequential
    steps stay cheap for large N.
    """
    P, N, D = x.shape
    n = min(N, max(2 * K, 1024))
    if n < N:
        sub = torch.argsort(torch.rand(P, N, generator=gen, device=x.device), dim=1)[:, :n]
        x = torch.gather(x, 1, sub.unsqueeze(-1).expand(P, n, D))
    rows = torch.arange(P, device=x.device)
    c = torch.empty(P, K, D, dtype=x.dtype, device=x.device)
    c[:, 0] = x[rows, torch.randint(0, n, (P,), generator=gen, device=x.device)]
    d2 = (x - c[:, :1]).square().sum(-1)  # (P, n) squared distance to the nearest seed so far
    for k in range(1, K):
        w = d2 + (d2.sum(-1, keepdim=True) == 0)  # all points already seeds: sample uniformly
        c[:, k] = x[rows, torch.multinomial(w, 1, generator=gen).squeeze(1)]
        d2 = torch.minimum(d2, (x - c[:, k:k + 1]).square().sum(-1))
    return c


def kmeans(x: torch.Tensor, num_clusters: int, *, iters: int = 10, metric: str = "l2", seed: int = 0) -> torch.Tensor:
    """Batched k-means: P independent problems of N points each.

    Args:
        x: (P, N, D) float points (N >= 1).
        num_clusters: K >= 1 centroids per problem.
        iters: Lloyd iterations (>= 0; 0 returns the initial sample).
        metric: "l2" or "dot" cluster in Euclidean space; "cosine" runs spherical k-means
            (points and centroids on the unit sphere).
        seed: the random start; different seeds give different centroids.
    Returns:
        (P, K, D) float32 centroids. The start is k-means++ seeding for K <= KMEANSPP_MAX_K (256),
        K distinct random points for larger K, and every point plus noisy copies when N < K;
        an empty cluster is re-seeded with a random point.
    Raises TypeError for a non-float x (integers are not cast) or a non-int num_clusters; ValueError
    for a wrong shape, num_clusters < 1, or centroids too large to allocate.
    """
    check_float_tensor("x", x)
    if x.dim() != 3 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (P, N, D) with N >= 1, got {tuple(x.shape)}")
    K = check_int("num_clusters", num_clusters, 1)
    P, N, D = x.shape
    with allocation(f"num_clusters={K} centroids of D={D} for each of P={P} problems"):
        torch.empty(P, K, D + 3, device=x.device)  # the centroids and their per-code bookkeeping, or a clear error
    gen = _generator(seed, x.device)
    x = x.float()
    if metric == "cosine":
        x = F.normalize(x, dim=-1)
    if N >= K and K <= KMEANSPP_MAX_K:
        c = _kmeanspp(x, K, gen)
    elif N >= K:  # large K: K distinct random points (k-means++ costs K sequential passes)
        start = torch.argsort(torch.rand(P, N, generator=gen, device=x.device), dim=1)[:, :K]
        c = torch.gather(x, 1, start.unsqueeze(-1).expand(P, K, D)).clone()
    else:  # every point once, then noisy copies of random points
        pick = torch.cat([torch.arange(N, device=x.device).expand(P, N),
                          torch.randint(0, N, (P, K - N), generator=gen, device=x.device)], dim=1)
        c = torch.gather(x, 1, pick.unsqueeze(-1).expand(P, K, D)).clone()
        scale = x.std(dim=1, keepdim=True, correction=0).clamp_min(1e-3)
        c[:, N:] += 0.01 * scale * torch.randn(P, K - N, D, generator=gen, device=x.device)
    if N <= K:  # every point is already a centroid: Lloyd would only collapse the noisy copies
        return c
    rows = torch.arange(P, device=x.device).unsqueeze(1) * K
    scale = 0.01 * x.std(dim=1, keepdim=True, correction=0)
    for _ in range(iters):
        assign = _nearest(x.transpose(0, 1), c).T  # (P, N)
        flat = (assign + rows).reshape(-1)
        sums = torch.zeros(P * K, D, device=x.device).index_add_(0, flat, x.reshape(-1, D))
        counts = torch.bincount(flat, minlength=P * K).to(x.dtype).unsqueeze(-1)
        new = (sums / counts.clamp_min(1)).view(P, K, D)
        empty = (counts.view(P, K) == 0)
        if empty.any():
            refill = torch.randint(0, N, (P, K), generator=gen, device=x.device)
            fresh = torch.gather(x, 1, refill.unsqueeze(-1).expand(P, K, D))
            fresh = fresh + scale * torch.randn(fresh.shape, generator=gen, device=x.device)
            new = torch.where(empty.unsqueeze(-1), fresh, new)
        c = F.normalize(new, dim=-1) if metric == "cosine" else new
    return c


def reduce_codebook(weight: torch.Tensor, codebook_size: int, num_groups: int = 1, *, metric: str = "l2",
                    iters: int = 20, seed: int = 0) -> torch.Tensor:
    """M group codebooks of K codes from one pretrained codebook.

    Args:
        weight: (K0, D) float pretrained codebook.
        codebook_size: K <= K0.
        num_groups: M.
    Returns:
        (M, K, D) float32. K == K0: group 0 is an exact copy; groups 1.. are copies with small
        noise (1% of the codebook's per-dimension std) so that they can drift apart in training.
        K < K0: each group is a k-means reduction of the K0 codes to K centroids, each group from a
        different random start (seed + g), so groups start different. Data-driven starts
        (:func:`codebooks_from_latents`) usually separate groups far better.
    Raises TypeError for a non-float weight (integers are not cast); ValueError for K > K0, a
    non-(K0, D) or 'meta' weight.
    """
    check_float_tensor("weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"weight must have shape (K0, D), got {tuple(weight.shape)}")
    K0, D = weight.shape
    if codebook_size > K0:
        raise ValueError(f"codebook_size K={codebook_size} exceeds the pretrained codebook's K0={K0}; "
                         "choose K <= K0 or initialise from latents")
    w = weight.detach().float()
    if codebook_size == K0:
        gen = _generator(seed, w.device)
        out = w.unsqueeze(0).repeat(num_groups, 1, 1)
        if num_groups > 1:
            scale = 0.01 * w.std(dim=0).nan_to_num(0.0)
            out[1:] += scale * torch.randn(num_groups - 1, K0, D, generator=gen, device=w.device)
        return out
    return torch.cat([kmeans(w.unsqueeze(0), codebook_size, iters=iters, metric=metric, seed=seed + g)
                      for g in range(num_groups)])


def codebooks_from_latents(z: torch.Tensor, codebook_size: int, num_groups: int = 1, token_specific: bool = True,
                           *, metric: str = "l2", iters: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Data-driven codebooks: split images into M groups, then k-means per (group, token).

    Args:
        z: (N, T, D) float encoder outputs of N images.
        codebook_size: K; num_groups: M; token_specific: one codebook per token (else per group).
    Returns:
        (codebooks (M, T', K, D) float32 with T' = T or 1, image_groups (N,) int64). With M > 1 the
        images are first clustered into M groups by k-means of their whole (T*D) latent, so each
        group specialises in a kind of image; a group left empty is built from all images.
    """
    check_float_tensor("z", z)
    if z.dim() != 3 or z.shape[0] < 1:
        raise ValueError(f"z must have shape (N, T, D) with N >= 1, got {tuple(z.shape)}")
    N, T, D = z.shape
    z = z.detach().float()
    if metric == "cosine":
        z = F.normalize(z, dim=-1)
    if num_groups > 1:
        flat = z.reshape(1, N, T * D)
        centres = kmeans(flat, num_groups, iters=iters, metric="l2", seed=seed)
        image_groups = _nearest(flat.transpose(0, 1), centres)[:, 0]
    else:
        image_groups = torch.zeros(N, dtype=torch.long, device=z.device)
    books = []
    for g in range(num_groups):
        zg = z[image_groups == g]
        if zg.shape[0] == 0:
            zg = z
        x = zg.transpose(0, 1) if token_specific else zg.reshape(1, -1, D)
        books.append(kmeans(x, codebook_size, iters=iters, metric=metric, seed=seed + 1 + g))
    return torch.stack(books), image_groups


@dataclass
class Utilization:
    """Codebook use (the paper's Table 4): over (group, token) codebooks that saw any data, the
    fraction of their K codes used at least once. ``per_codebook`` is (M, T') float (NaN where a
    codebook saw no data); ``group_counts`` is (M,) int64 images per group."""

    min: float
    max: float
    mean: float
    std: float
    per_codebook: torch.Tensor
    group_counts: torch.Tensor

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_codebook"] = self.per_codebook.tolist()
        d["group_counts"] = self.group_counts.tolist()
        return d


@torch.no_grad()
def add_code_counts(usage: torch.Tensor, group_counts: torch.Tensor, groups: torch.Tensor,
                    indices: torch.Tensor) -> None:
    """Count codes in place: usage (M, T', K) int64 (T' = T per token, or 1 shared) += one per (group, token,
    code) of ``indices`` (B, T) int64 under ``groups`` (B,) int64; group_counts (M,) int64 += one per image.
    Inputs are trusted (in range, on usage's device)."""
    _, tp, k = usage.shape
    t = indices.shape[1]
    tok = torch.arange(t, device=indices.device) if tp > 1 else torch.zeros(t, dtype=torch.long, device=indices.device)
    flat = ((groups[:, None] * tp + tok[None, :]) * k + indices).reshape(-1)
    usage.view(-1).index_add_(0, flat, torch.ones_like(flat))
    group_counts.index_add_(0, groups, torch.ones_like(groups))


def utilization(usage: torch.Tensor, group_counts: torch.Tensor) -> Utilization:
    """usage: (M, T', K) int64 code counts; group_counts: (M,) int64 -> :class:`Utilization`."""
    seen = usage.sum(-1) > 0
    rate = (usage > 0).float().mean(-1)
    vals = rate[seen]
    nan = float("nan")
    if vals.numel() == 0:
        stats = (nan, nan, nan, nan)
    else:
        stats = (vals.min().item(), vals.max().item(), vals.mean().item(),
                 vals.std(unbiased=False).item())
    return Utilization(*stats, per_codebook=torch.where(seen, rate, torch.full_like(rate, nan)).cpu(),
                       group_counts=group_counts.detach().cpu().clone())

"""The collectives STSCQ needs under DDP; each is the identity when torch.distributed is not initialised."""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["world_size", "rank", "global_mean", "global_ratio", "gather_variable", "average_gradients"]


def world_size() -> int:
    """Number of ranks (1 when torch.distributed is unavailable or not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when torch.distributed is unavailable or not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def average_gradients(params) -> None:
    """Average ``p.grad`` over ranks for every parameter with a gradient (what DDP does after backward);
    a no-op on one process. Every rank must pass the same parameters in the same order."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def global_mean(x: torch.Tensor, sync: bool = True) -> torch.Tensor:
    """Mean over dim 0 of x (N, ...) float, over every rank when DDP is initialised.

    Differentiable: the sum is all-reduced with ``torch.distributed.nn`` so each rank's gradient is
    that of the global mean (DDP then averages parameter gradients as usual). Ranks may hold
    different N; an empty local batch contributes nothing.
    """
    if not sync or world_size() == 1:
        return x.mean(dim=0)
    from torch.distributed.nn.functional import all_reduce

    total = all_reduce(x.sum(dim=0))
    count = torch.tensor([float(x.shape[0])], device=x.device)
    dist.all_reduce(count)
    return total / count.clamp_min(1)


def global_ratio(totals: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Batch means over every rank: (sum over ranks of ``totals``) / (sum over ranks of ``counts``).

    totals: (n,) float, each a sum over this rank's share of the batch (differentiable);
    counts: (n,) float, how many items each sum covers on this rank (no gradient).
    Returns (n,) float, the same on every rank; an entry whose global count is 0 gives 0.
    This is how every batch-mean loss is formed under DDP, so that ranks holding different numbers of
    images (a batch of 5 split 3 + 2) weigh each image as one process does. The totals are all-reduced
    with ``torch.distributed.nn``: each rank's gradient is ``world_size`` times that of its share, and
    DDP's (or :func:`average_gradients`') averaging over ranks then gives exactly the gradient of the
    global mean. One process: ``totals / counts``. Every rank must call it (a collective).
    """
    if world_size() == 1:
        return totals / counts.clamp_min(1)
    from torch.distributed.nn.functional import all_reduce

    total = all_reduce(totals)
    count = counts.detach().clone()
    dist.all_reduce(count)
    return total / count.clamp_min(1)


def gather_variable(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the 1-D int64 tensors of all ranks (sizes may differ); no gradient."""
    if world_size() == 1:
        return x
    n = torch.tensor([x.numel()], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.full((longest,), -1, dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])

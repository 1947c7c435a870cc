"""Brute-force float64 references the tests compare vqswitch against (clarity over speed)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distances(z: torch.Tensor, codebooks: torch.Tensor, groups: torch.Tensor, metric: str) -> torch.Tensor:
    """z (B, T, D), codebooks (M, T', K, D), groups (B,) -> all distances (B, T, K) in float64."""
    z = z.double()
    cb = codebooks.double()[groups]  # (B, T', K, D)
    cb = cb.expand(-1, z.shape[1], -1, -1)
    if metric == "cosine":
        z, cb = F.normalize(z, dim=-1), F.normalize(cb, dim=-1)
    if metric == "dot":
        return -(z.unsqueeze(2) * cb).sum(-1)
    return (z.unsqueeze(2) - cb).square().sum(-1)


def nearest(z, codebooks, groups, metric):
    """(indices (B, T), min distances (B, T)) in float64, ties toward the lowest index."""
    d = distances(z, codebooks, groups, metric)
    return d.argmin(-1), d.min(-1).values


def group_errors(z, codebooks, metric):
    """(B, M) float64 total minimum error of every group."""
    B, M = z.shape[0], codebooks.shape[0]
    return torch.stack([nearest(z, codebooks, torch.full((B,), m), metric)[1].sum(-1) for m in range(M)], dim=1)

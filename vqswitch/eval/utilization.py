"""Codebook use per token and per group: the paper's Table 4 (:func:`utilization_table`) and the image share of
each group (:func:`group_histogram`), built on :func:`vqswitch.codebooks.utilization`."""
from __future__ import annotations

import math

import torch

from .._checks import check_int_tensor
from ..codebooks import Utilization

__all__ = ["group_histogram", "utilization_table"]


def _check_group_counts(group_counts) -> torch.Tensor:
    check_int_tensor("group_counts", group_counts)
    if group_counts.dim() != 1 or group_counts.shape[0] < 1:
        raise ValueError(f"group_counts must have shape (M,) with M >= 1, got {tuple(group_counts.shape)}")
    if bool((group_counts < 0).any()):
        raise ValueError("group_counts must be non-negative")
    return group_counts.detach().cpu()


def group_histogram(group_counts: torch.Tensor) -> torch.Tensor:
    """Fraction of images that chose each group.

    Args:
        group_counts: (M,) non-negative integer images per group (``quantizer.group_counts`` or
            ``Utilization.group_counts``).
    Returns:
        (M,) float64 CPU tensor summing to 1.
    Raises:
        TypeError for a non-integer tensor; ValueError for a wrong shape, negative counts or no
        images at all (the fractions are undefined).
    """
    counts = _check_group_counts(group_counts)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("group_counts are all zero: no image was counted, so there is no histogram")
    return counts.double() / total


def _stats(values: torch.Tensor) -> dict:
    """min/max/mean/std (population, as :func:`vqswitch.codebooks.utilization`) or all None if empty."""
    if values.numel() == 0:
        return {"min": None, "max": None, "mean": None, "std": None}
    v = values.double()
    return {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
            "std": float(v.std(unbiased=False))}


def _none_if_nan(v: float):
    return None if math.isnan(v) else float(v)


def utilization_table(util: Utilization) -> dict:
    """The paper's Table 4 as a JSON-serialisable dict, overall, per group and per token.

    Args:
        util: a :class:`vqswitch.codebooks.Utilization` (``quantizer.utilization()`` or
            :func:`vqswitch.codebooks.utilization`); ``per_codebook`` is (M, T') with NaN for
            codebooks that saw no data.
    Returns:
        ``{"overall": {min, max, mean, std}, "codebooks": M*T', "codebooks_seen": n,
        "groups": [{"group", "images", "image_fraction", "codebooks_seen", min, max, mean, std}] * M,
        "tokens": [{"token", "codebooks_seen", min, max, mean, std}] * T'}``: each min/max/mean/std
        is over the fraction of codes used in the codebooks that saw data (population std), and
        None where no codebook saw data (JSON has no NaN); ``image_fraction`` is None when no image
        was counted. T' is 1 for token-shared codebooks.
    Raises:
        TypeError for anything but a Utilization; ValueError for an inconsistent one.
    """
    if not isinstance(util, Utilization):
        raise TypeError(f"util must be a vqswitch.codebooks.Utilization, got {type(util).__name__}")
    rates = util.per_codebook
    if not isinstance(rates, torch.Tensor) or rates.dim() != 2:
        raise ValueError("util.per_codebook must be an (M, T') tensor")
    counts = _check_group_counts(util.group_counts)
    M, Tp = rates.shape
    if counts.shape[0] != M:
        raise ValueError(f"util.group_counts has {counts.shape[0]} groups but util.per_codebook has {M}")
    rates = rates.detach().cpu().double()
    seen = ~torch.isnan(rates)
    total = int(counts.sum())
    groups = []
    for g in range(M):
        groups.append({"group": g, "images": int(counts[g]),
                       "image_fraction": int(counts[g]) / total if total else None,
                       "codebooks_seen": int(seen[g].sum()), **_stats(rates[g][seen[g]])})
    tokens = [{"token": t, "codebooks_seen": int(seen[:, t].sum()), **_stats(rates[:, t][seen[:, t]])}
              for t in range(Tp)]
    overall = {k: _none_if_nan(getattr(util, k)) for k in ("min", "max", "mean", "std")}
    return {"overall": overall, "codebooks": M * Tp, "codebooks_seen": int(seen.sum()),
            "groups": groups, "tokens": tokens}

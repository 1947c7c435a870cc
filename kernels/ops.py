"""The search as ``torch.library`` custom ops, so compiled models keep one graph.

``torch.ops.vqswitch.nearest_codeword`` and ``torch.ops.vqswitch.nearest_group`` take canonical
(M, T', K, D) codebooks and an already-resolved backend; :mod:`vqswitch.kernels` validates the
arguments (its public functions) and calls them. Their fake (meta) implementations give output shapes and dtypes without
running anything. Checks that depend on values (NaN/Inf, group range) run here, at run time.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .torch_search import _compute_dtype, search_all_groups, search_fixed_groups

__all__ = ["all_finite", "safe_magnitudes"]


def _out_dtype(z: torch.Tensor, cb: torch.Tensor, backend: str) -> torch.dtype:
    return torch.float64 if backend == "torch" and torch.float64 in (z.dtype, cb.dtype) else torch.float32


def all_finite(z: torch.Tensor) -> bool:
    """Whether float tensor z holds no NaN or Inf: one pass, no temporaries, one device sync.

    One min/max reduction (``torch.aminmax``, which propagates NaN) instead of
    ``torch.isfinite(z).all()``, which allocates ~1.6x |z| and ran ~10x slower on 64 MiB. z must be
    non-empty. The check allocates nothing that grows with z.
    """
    lo, hi = torch.aminmax(z.reshape(-1))
    return bool(torch.isfinite(lo).logical_and_(torch.isfinite(hi)))


def safe_magnitudes(dtype: torch.dtype, dim: int) -> tuple[float, float]:
    """(lo, hi): the search of D=``dim`` tokens in compute ``dtype`` (fp32, or fp64) is exact for z whose
    largest magnitude max|z| is 0 or lies in [lo, hi]. Above hi, ||z||^2 and ||z - c||^2 (up to
    4*D*max|z|^2 with codes of z's size) overflow; below lo, the squares of z's entries are subnormal
    or 0, so distances lose their digits or come back as 0 (and "cosine" cannot normalise z)."""
    info = torch.finfo(dtype)
    return (info.tiny ** 0.5) * 8.0, (info.max / (8.0 * max(1, dim))) ** 0.5


def _runtime_checks(z: torch.Tensor, groups: Optional[torch.Tensor], num_groups: int, check_finite: bool,
                    compute_dtype: torch.dtype = torch.float32) -> None:
    """The value checks, the one place they run (inside the ops, so compiled graphs keep them): NaN/Inf and
    the magnitude range of z (when ``check_finite``), the range of groups."""
    if check_finite and z.numel():  # one aminmax pass: NaN/Inf and the magnitude range together
        with torch.autocast(z.device.type, enabled=False):  # (autocast would promote the stack of half values)
            lo, hi = torch.stack(torch.aminmax(z.reshape(-1))).tolist()  # one device sync
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("z contains NaN or Inf values")
        low, high = safe_magnitudes(compute_dtype, z.shape[-1])
        biggest = max(abs(lo), abs(hi))
        if biggest > high or 0.0 < biggest < low:
            dtype = str(compute_dtype).replace("torch.", "")
            raise ValueError(f"z holds values of magnitude {biggest:.3g}: the {dtype} "
                             f"search squares them, which is exact only for max|z| in [{low:.3g}, {high:.3g}] "
                             f"(or 0) at D={z.shape[-1]}; rescale z (the nearest code is scale-invariant for "
                             "all three metrics when the codebooks are rescaled with it)")
    if groups is not None and groups.numel():
        lo, hi = (int(v) for v in torch.aminmax(groups))
        if lo < 0 or hi >= num_groups:
            raise ValueError(f"groups must lie in [0, {num_groups}), got values in [{lo}, {hi}]")


@torch.library.custom_op("vqswitch::nearest_codeword", mutates_args=())
def nearest_codeword_op(z: torch.Tensor, codebooks: torch.Tensor, groups: Optional[torch.Tensor], metric: str,
                        backend: str, memory_budget: int, check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """z (B, T, D), codebooks (M, T', K, D), groups (B,) int64 or None -> (indices (B, T), distances (B, T))."""
    _runtime_checks(z, groups, codebooks.shape[0], check_finite, _compute_dtype(z, codebooks))
    if z.shape[0] == 0:
        return (z.new_empty(z.shape[:2], dtype=torch.long),
                z.new_empty(z.shape[:2], dtype=_out_dtype(z, codebooks, backend)))
    if backend == "triton":
        from .triton_search import triton_fixed_groups

        i, d = triton_fixed_groups(z, codebooks, groups, metric)
    else:
        i, d = search_fixed_groups(z, codebooks, groups, metric, memory_budget)
    return i.contiguous(), d.contiguous()


@nearest_codeword_op.register_fake
def _(z, codebooks, groups, metric, backend, memory_budget, check_finite):
    B, T = z.shape[:2]
    return z.new_empty((B, T), dtype=torch.long), z.new_empty((B, T), dtype=_out_dtype(z, codebooks, backend))


@torch.library.custom_op("vqswitch::nearest_group", mutates_args=())
def nearest_group_op(z: torch.Tensor, codebooks: torch.Tensor, metric: str, backend: str, memory_budget: int,
                     check_finite: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """z (B, T, D), codebooks (M, T', K, D) -> (groups (B,), indices (B, T), distances (B, T), group_errors (B, M))."""
    _runtime_checks(z, None, codebooks.shape[0], check_finite, _compute_dtype(z, codebooks))
    B, T = z.shape[:2]
    M = codebooks.shape[0]
    if B == 0:
        dt = _out_dtype(z, codebooks, backend)
        return (z.new_empty((0,), dtype=torch.long), z.new_empty((0, T), dtype=torch.long),
                z.new_empty((0, T), dtype=dt), z.new_empty((0, M), dtype=dt))
    if backend == "triton":
        from .triton_search import triton_all_groups

        out = triton_all_groups(z, codebooks, metric, memory_budget)
    else:
        out = search_all_groups(z, codebooks, metric, memory_budget)
    return tuple(t.contiguous() for t in out)


@nearest_group_op.register_fake
def _(z, codebooks, metric, backend, memory_budget, check_finite):
    B, T = z.shape[:2]
    M = codebooks.shape[0]
    dt = _out_dtype(z, codebooks, backend)
    return (z.new_empty((B,), dtype=torch.long), z.new_empty((B, T), dtype=torch.long),
            z.new_empty((B, T), dtype=dt), z.new_empty((B, M), dtype=dt))

"""Codebook norms, computed once per codebook version and shared by every backend.

For each code c of a (M, T', K, D) codebook: ``sq = ||c||^2`` ("l2"), or ``sq = ||c/|c| ||^2`` and
``inv = 1 / max(|c|, 1e-12)`` ("cosine", F.normalize's eps); "dot" needs neither.

An entry is keyed on the caller's tensor: storage address, offset, shape, strides, dtype and its
autograd version counter (bumped by every in-place update, such as an optimizer step), and holds a
weak reference to the storage, so a freed codebook never matches, even if the allocator gives its
address to a new tensor. Entries of freed codebooks are dropped, and a new version of a codebook replaces
its older versions' entries (a training loop holds one entry, not one per step). The norms are computed
in chunks of CHUNK_ELEMENTS codebook elements, so half-precision books are never copied whole to fp32.
Writes through ``.data`` bypass the version counter: call :func:`clear_norm_cache` after those.
Computing the norms of a new version also checks them: a finite code whose squared norm would overflow
the search's dtype (magnitude above sqrt(max/8): about 6.5e18 in fp32) raises ValueError ("dot" computes
no norms and is not checked here; NaN/Inf codes are left to give NaN distances and losses).
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

import torch

__all__ = ["codebook_norms", "clear_norm_cache"]

_CACHE: "OrderedDict[tuple, tuple[weakref.ref, torch.Tensor, torch.Tensor]]" = OrderedDict()
_CACHE_SIZE = 4


def clear_norm_cache() -> None:
    """Forget every cached codebook norm."""
    _CACHE.clear()


#: Codebook elements per chunk of the norm computation: its temporaries (a cast copy of half-precision
#: books, the reduction's scratch) stay this size whatever the codebook's size.
CHUNK_ELEMENTS = 2**20


def _code_rows(cb: torch.Tensor, norm: torch.Tensor):
    """(codes (n, D), their slots (n,) in ``norm``): all at once when ``cb`` flattens without a copy,
    else one (group, token) codebook at a time (strided views, e.g. expanded books)."""
    try:
        flat = cb.view(-1, cb.shape[-1])
    except RuntimeError:
        for m in range(cb.shape[0]):
            for t in range(cb.shape[1]):
                yield cb[m, t], norm[m, t]
        return
    yield flat, norm.view(-1)


def _row_norms(cb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """||c|| of every code of (M, T', K, D) ``cb`` as (M, T', K) ``dtype``, in chunks of codes."""
    M, Tp, K, D = cb.shape
    norm = torch.empty(M, Tp, K, dtype=dtype, device=cb.device)
    step = max(1, CHUNK_ELEMENTS // max(1, D))
    for rows, out in _code_rows(cb, norm):
        for r0 in range(0, rows.shape[0], step):
            torch.linalg.vector_norm(rows[r0:r0 + step].to(dtype), dim=-1, out=out[r0:r0 + step])
    return norm


def codebook_norms(cb: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """cb: (M, T', K, D) float -> (sq (M, T', K), inv (M, T', K) or empty), fp32 (fp64 for fp64 books)."""
    if metric == "dot":
        empty = cb.new_empty(0, dtype=torch.float32)
        return empty, empty
    storage = cb.untyped_storage()
    key = (storage.data_ptr(), cb.storage_offset(), cb._version, tuple(cb.shape), tuple(cb.stride()),
           cb.dtype, cb.device, metric)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is storage:
        _CACHE.move_to_end(key)
        return hit[1], hit[2]
    dtype = torch.float64 if cb.dtype == torch.float64 else torch.float32
    norm = _row_norms(cb, dtype)
    if norm.numel():  # once per codebook version: squares of longer codes overflow the search's distances
        longest, limit = float(norm.max()), (torch.finfo(dtype).max / 8.0) ** 0.5
        if not longest <= limit and bool(torch.isfinite(torch.stack(torch.aminmax(cb.reshape(-1)))).all()):
            # finite codes (NaN/Inf ones flow on into NaN losses, which training reports as divergence)
            raise ValueError(f"codebooks hold codes of magnitude {longest:.3g} (above {limit:.3g}): their squared "
                             f"norms overflow the {str(dtype).replace('torch.', '')} search; rescale them (with z)")
    if metric == "cosine":
        inv = norm.clamp_min(1e-12).reciprocal_()
        sq = norm.mul_(inv).square_()  # in place: the cache is the only norm-sized memory held
    else:
        inv, sq = norm.new_empty(0), norm.square_()
    for k in [k for k, v in _CACHE.items()  # codebooks that are gone, and older versions of this one
              if v[0]() is None or (k[:2] == key[:2] and k[3:] == key[3:] and v[0]() is storage)]:
        del _CACHE[k]
    _CACHE[key] = (weakref.ref(storage), sq, inv)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return sq, inv

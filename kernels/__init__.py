"""vqswitch.kernels: the nearest-codeword search behind SwitchableTokenQuantizer.

Two public functions, the only way the rest of vqswitch searches codebooks:

- :func:`nearest_codeword` - each token's nearest code in its image's group (groups given);
- :func:`nearest_group` - every group searched, each image assigned the group of least total
  error (the paper's "nearest" selection), with the per-group errors.

Codebooks may be given as
    (K, D)          one codebook shared by all tokens
    (T, K, D)       token-specific codebooks, one group
    (M, T', K, D)   M groups; T' = T (token-specific) or 1 (shared by all tokens)

Backends: ``"torch"`` is the tiled pure-torch path (CPU and CUDA; see ``torch_search.py`` for the
memory budget and tie rules); ``"triton"`` is the fused kernel (``triton_search.py``; CUDA tensors,
or CPU tensors under ``TRITON_INTERPRET=1``; fp32/fp16/bf16); ``"auto"`` picks Triton for CUDA
tensors when triton is importable, else the torch path.

Both functions run as ``torch.library`` custom ops (``torch.ops.vqswitch.*``, see ``ops.py``), so a
model that calls them compiles with ``torch.compile(fullgraph=True)``: checks that depend on the
data (NaN/Inf inputs, group range) run inside the op, at run time, and still raise ``ValueError``.

Validation happens once. The two public functions check their arguments (types, shapes, choices,
devices: :func:`_check`) and then call the trusted entry points :func:`_nearest_codeword` and
:func:`_nearest_group`, which take canonical (M, T', K, D) codebooks and check nothing but the
backend; callers that have validated their inputs themselves (the quantizer, k-means) call those
directly, so a quantizer forward checks z once (plus the values, inside the op).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .norms import clear_norm_cache
from .ops import all_finite  # importing ops also registers the torch.ops.vqswitch custom ops
from .torch_search import DEFAULT_MEMORY_BUDGET, METRICS, plan_tiles

__all__ = [
    "DEFAULT_MEMORY_BUDGET", "METRICS", "BACKENDS", "SearchResult", "GroupSearchResult",
    "nearest_codeword", "nearest_group", "as_grouped_codebooks", "plan_tiles", "resolve_backend", "clear_norm_cache",
    "all_finite",
]

BACKENDS = ("auto", "torch", "triton")


class SearchResult(NamedTuple):
    """indices (B, T) int64; distances (B, T) float32 (float64 for float64 inputs)."""

    indices: torch.Tensor
    distances: torch.Tensor


class GroupSearchResult(NamedTuple):
    """groups (B,) int64; indices (B, T) int64; distances (B, T); group_errors (B, M)."""

    groups: torch.Tensor
    indices: torch.Tensor
    distances: torch.Tensor
    group_errors: torch.Tensor


def as_grouped_codebooks(codebooks: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """View any accepted codebook form as (M, T', K, D) with T' in {1, num_tokens} (no copy).

    Raises TypeError for a non-floating tensor, ValueError for a wrong rank or token count.
    """
    if not isinstance(codebooks, torch.Tensor):
        raise TypeError(f"codebooks must be a torch.Tensor, got {type(codebooks).__name__}")
    if not codebooks.is_floating_point():
        raise TypeError(f"codebooks must be a floating-point tensor, got dtype {codebooks.dtype}")
    if codebooks.dim() == 2:
        cb = codebooks[None, None]
    elif codebooks.dim() == 3:
        cb = codebooks[None]
    elif codebooks.dim() == 4:
        cb = codebooks
    else:
        raise ValueError(f"codebooks must have shape (K, D), (T, K, D) or (M, T', K, D); got {tuple(codebooks.shape)}")
    if cb.shape[1] not in (1, num_tokens):
        raise ValueError(f"codebooks hold {cb.shape[1]} token codebooks but z has T={num_tokens} tokens (expected "
                         f"{num_tokens}, or 1 for a shared codebook); codebooks shape {tuple(codebooks.shape)}")
    if cb.shape[2] < 1:
        raise ValueError("codebooks must hold at least one code (K >= 1)")
    return cb


def _check(z: torch.Tensor, codebooks: torch.Tensor, metric: str, backend: str, memory_budget) -> torch.Tensor:
    """The public functions' checks, the only place the kernels validate arguments: z and the codebooks as
    tensors (type, dtype, shapes, device), metric, backend and memory_budget. Returns the codebooks as
    (M, T', K, D). The values (NaN/Inf, group range) are the op's to check (ops.py)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor, got dtype {z.dtype}")
    if z.dim() != 3:
        raise ValueError(f"z must have shape (B, T, D), got {tuple(z.shape)}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(memory_budget, int) or isinstance(memory_budget, bool) or memory_budget < 1:
        raise ValueError(f"memory_budget must be a positive int (bytes), got {memory_budget!r}")
    cb = as_grouped_codebooks(codebooks, z.shape[1])
    if cb.shape[-1] != z.shape[-1]:
        raise ValueError(f"z has dim D={z.shape[-1]} but codebooks have dim {cb.shape[-1]}")
    if cb.device != z.device:
        raise ValueError(f"z is on {z.device} but codebooks are on {cb.device}")
    return cb


def resolve_backend(backend: str, z: torch.Tensor, codebooks: torch.Tensor) -> str:
    """The backend that will run: "torch" or "triton".

    "auto" takes Triton for CUDA tensors of fp32/fp16/bf16 when triton is importable, else torch.
    Raises ValueError when "triton" is asked for but cannot run (no triton, a CPU tensor without
    TRITON_INTERPRET=1, or fp64 inputs, which the kernel does not take).
    """
    fp64 = torch.float64 in (z.dtype, codebooks.dtype)
    if backend == "auto":
        if z.device.type != "cuda" or fp64:  # decided without importing triton
            return "torch"
        from .triton_search import available

        return "triton" if available(z.device) else "torch"
    if backend == "triton":
        from .triton_search import available

        if not available(z.device):
            raise ValueError("backend='triton' needs triton installed and CUDA tensors (or TRITON_INTERPRET=1 "
                             f"set before vqswitch.kernels is imported, for CPU tensors); got a {z.device.type} tensor")
        if fp64:
            raise ValueError("backend='triton' takes fp32, fp16 or bf16 inputs; use backend='torch' for float64")
    return backend


def nearest_codeword(z: torch.Tensor, codebooks: torch.Tensor, groups: torch.Tensor | None = None,
                     metric: str = "l2", *, backend: str = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET,
                     check_finite: bool = True) -> SearchResult:
    """Each token's nearest code in the codebook of (its image's group, its position).

    Args:
        z: (B, T, D) float tokens (any float dtype; searched in fp32, fp64 for fp64 inputs).
        codebooks: (K, D) | (T, K, D) | (M, T', K, D) float, on z's device.
        groups: (B,) integer group of each image, in [0, M); may be None only when M == 1.
        metric: "l2" | "cosine" | "dot" (see module docs for the distance each reports).
        backend: "auto" | "torch" | "triton".
        memory_budget: bytes of temporary memory the torch path may hold at once.
        check_finite: raise ValueError when z holds NaN or Inf, or finite values too large or too small
            for the search's squares to be exact (max|z| outside ``ops.safe_magnitudes``: about
            [8.7e-19, 2.3e18] in fp32 at D=8; the same one aminmax pass, one device sync). False skips both.
    Returns:
        SearchResult(indices (B, T) int64, distances (B, T) float32; float64 for float64 inputs on
        the torch path); ties go to the lowest index.
    Raises:
        TypeError for non-tensor or non-float inputs; ValueError for shape mismatches, an unknown
        metric/backend, a backend that cannot run here, NaN/Inf or out-of-range magnitudes in z, finite
        codes whose squared norms overflow (l2, cosine), or groups missing, of the
        wrong shape/dtype, or out of range.
    """
    cb = _check(z, codebooks, metric, backend, memory_budget)
    M = cb.shape[0]
    if groups is None:
        if M != 1:
            raise ValueError(f"groups is required when codebooks hold M={M} groups")
    else:
        if not isinstance(groups, torch.Tensor) or groups.dtype.is_floating_point or groups.dtype == torch.bool:
            raise TypeError("groups must be an integer tensor of shape (B,), got "
                            f"{getattr(groups, 'dtype', type(groups))}")
        if groups.shape != (z.shape[0],):
            raise ValueError(f"groups must have shape (B,)=({z.shape[0]},), got {tuple(groups.shape)}")
        groups = groups.to(device=z.device, dtype=torch.long)
    return _nearest_codeword(z, cb, groups, metric, backend, memory_budget, check_finite)


def nearest_group(z: torch.Tensor, codebooks: torch.Tensor, metric: str = "l2", *, backend: str = "auto",
                  memory_budget: int = DEFAULT_MEMORY_BUDGET, check_finite: bool = True) -> GroupSearchResult:
    """Search all M groups; give each image the group of least total error, and its codes.

    Args: as :func:`nearest_codeword` (no groups).
    Returns:
        GroupSearchResult(groups (B,) int64, indices (B, T) int64, distances (B, T) float32,
        group_errors (B, M) float32) with group_errors[b, m] = sum over tokens of the distance to
        the nearest code of group m, and groups[b] = the lowest m attaining the minimum.
    Raises: as :func:`nearest_codeword`.
    """
    cb = _check(z, codebooks, metric, backend, memory_budget)
    return _nearest_group(z, cb, metric, backend, memory_budget, check_finite)


def _nearest_codeword(z: torch.Tensor, codebooks: torch.Tensor, groups: torch.Tensor | None, metric: str,
                      backend: str, memory_budget: int, check_finite: bool) -> SearchResult:
    """:func:`nearest_codeword` for trusted callers: nothing is validated but what only the op can see.

    z: (B, T, D) float; codebooks: canonical (M, T', K, D) float with T' in {1, T}, K >= 1, z's D and device;
    groups: (B,) int64 on z's device, or None when M == 1; metric in METRICS; backend in BACKENDS;
    memory_budget: an int >= 1. The op still checks the values (NaN/Inf and magnitudes of z when
    ``check_finite``, the group range) and :func:`resolve_backend` whether the backend can run here.
    """
    backend = resolve_backend(backend, z, codebooks)
    return SearchResult(*torch.ops.vqswitch.nearest_codeword(z, codebooks, groups, metric, backend, memory_budget,
                                                             check_finite))


def _nearest_group(z: torch.Tensor, codebooks: torch.Tensor, metric: str, backend: str, memory_budget: int,
                   check_finite: bool) -> GroupSearchResult:
    """:func:`nearest_group` for trusted callers (the arguments as :func:`_nearest_codeword`'s)."""
    backend = resolve_backend(backend, z, codebooks)
    return GroupSearchResult(*torch.ops.vqswitch.nearest_group(z, codebooks, metric, backend, memory_budget,
                                                               check_finite))

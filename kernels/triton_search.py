"""Fused Triton nearest-codeword search: the kernel and its launchers.

The torch reference for this file is ``torch_search.py``; tests compare the two per dtype.

One kernel serves both selection modes. A program owns (a block of BLOCK_R rows, one token t,
one group slot, one K split) and streams the codes of its codebook in BLOCK_K tiles, keeping a
running minimum and argmin per row in registers; no distance ever reaches memory.

- Fixed groups (router selection): rows are images sorted by group (a device-side argsort, no host
  sync). A row block may span several groups; the program walks the distinct groups of its block
  in ascending order, searching each group's codebook for the rows of that group only.
- All groups ("nearest" selection): the group slot is the program's third grid index; the launcher
  reduces per-group errors in torch, in a fixed order (deterministic, ties to the lowest group).

Scores: l2 ``||c||^2 - 2 x.c``; cosine ``||c^||^2 - 2 x^.c / |c|`` (x normalised by the launcher);
dot ``-x.c``. ``||c||^2`` and ``1/|c|`` come from ``norms.py``: computed once per codebook version.

Precision: fp32 inputs use ``tl.dot(input_precision="ieee")`` (no TF32); fp16/bf16 inputs use the
tensor cores with fp32 accumulation (products of half values are exact in fp32). Ties go to the
lowest index: ``tl.argmin`` keeps the leftmost minimum in a tile, ``<`` keeps earlier tiles, and
K splits are merged lowest split first.

Block sizes (a documented heuristic, no autotuning sweep, so nothing recompiles when B changes):
BLOCK_D = the next power of two >= max(D, 16) up to 64 (looping over D beyond that), BLOCK_K = 64
(128 when BLOCK_D <= 16), BLOCK_R = 64 (16 or 32 for fewer rows), 4 warps. Compiled variants are
keyed on (D, metric, dtype, mode); B, K, T and M are runtime arguments.
"""
from __future__ import annotations

import os

import torch

from .norms import codebook_norms as _norms
from .torch_search import _prepare, exact_distances

try:  # triton is optional: the torch path serves when it is missing
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on installs without triton
    triton = None

__all__ = ["available", "interpreting", "block_sizes", "triton_fixed_groups", "triton_all_groups"]

_METRIC_ID = {"l2": 0, "cosine": 1, "dot": 2}


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available(device: torch.device) -> bool:
    """Whether the Triton backend can run on tensors of ``device``."""
    return triton is not None and (device.type == "cuda" or (device.type == "cpu" and interpreting()))


def block_sizes(rows: int, dim: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_K, BLOCK_D): powers of two >= 16, as tl.dot needs on a GPU."""
    block_d = min(64, max(16, triton.next_power_of_2(dim)))
    block_k = 128 if block_d <= 16 else 64
    block_r = 64 if rows > 32 else (32 if rows > 16 else 16)
    return block_r, block_k, block_d


if triton is not None:

    @triton.jit
    def _nearest_kernel(
        x_ptr, cb_ptr, cn_ptr, inv_ptr, grp_ptr, val_ptr, idx_ptr,
        R, K, Tp, g0, codes_per_split, num_splits,
        stride_xt, stride_xr, stride_cm, stride_ct, stride_ck,
        D: tl.constexpr, METRIC: tl.constexpr, ALL_GROUPS: tl.constexpr, UPCAST: tl.constexpr,
        IEEE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        pid_r = tl.program_id(0)
        t = tl.program_id(1)
        slot = tl.program_id(2)
        g_local = slot // num_splits
        split = slot % num_splits
        rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < R
        if ALL_GROUPS:
            grp = tl.zeros([BLOCK_R], dtype=tl.int32) + (g0 + g_local)
        else:
            grp = tl.load(grp_ptr + rows, mask=rmask, other=2147483647)
        g_cur = tl.min(grp, axis=0)
        g_last = tl.max(tl.where(rmask, grp, -1), axis=0)
        k_begin = split * codes_per_split
        k_end = tl.minimum(K, k_begin + codes_per_split)
        dr = tl.arange(0, BLOCK_D)
        x_row = x_ptr + t * stride_xt + rows[:, None] * stride_xr
        if D <= BLOCK_D:  # the whole token fits one tile: load it once
            x_tile = tl.load(x_row + dr[None, :], mask=rmask[:, None] & (dr[None, :] < D), other=0.0)
            if UPCAST:
                x_tile = x_tile.to(tl.float32)
        best_val = tl.full([BLOCK_R], float("inf"), dtype=tl.float32)
        best_idx = tl.zeros([BLOCK_R], dtype=tl.int64)
        while g_cur <= g_last:
            mine = rmask & (grp == g_cur)
            cb_base = cb_ptr + g_cur.to(tl.int64) * stride_cm + t * stride_ct
            norm_base = (g_cur.to(tl.int64) * Tp + t) * K
            for k0 in range(k_begin, k_end, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                kmask = ks < k_end
                acc = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
                for d0 in tl.static_range(0, D, BLOCK_D):
                    dm = (d0 + dr) < D
                    if D > BLOCK_D:
                        x_tile = tl.load(x_row + d0 + dr[None, :], mask=rmask[:, None] & dm[None, :], other=0.0)
                        if UPCAST:
                            x_tile = x_tile.to(tl.float32)
                    c = tl.load(cb_base + ks[:, None].to(tl.int64) * stride_ck + d0 + dr[None, :],
                                mask=kmask[:, None] & dm[None, :], other=0.0)
                    if UPCAST:
                        c = c.to(tl.float32)
                    if IEEE:
                        acc = tl.dot(x_tile, tl.trans(c), acc, input_precision="ieee")
                    else:
                        acc = tl.dot(x_tile, tl.trans(c), acc)
                if METRIC == 2:
                    score = -acc
                else:
                    cn = tl.load(cn_ptr + norm_base + ks, mask=kmask, other=0.0)
                    if METRIC == 1:
                        inv = tl.load(inv_ptr + norm_base + ks, mask=kmask, other=0.0)
                        score = cn[None, :] - 2.0 * acc * inv[None, :]
                    else:
                        score = cn[None, :] - 2.0 * acc
                score = tl.where(kmask[None, :], score, float("inf"))
                tile_min = tl.min(score, axis=1)
                tile_arg = tl.argmin(score, axis=1, tie_break_left=True).to(tl.int64) + k0
                better = mine & (tile_min < best_val)
                best_val = tl.where(better, tile_min, best_val)
                best_idx = tl.where(better, tile_arg, best_idx)
            g_cur = tl.min(tl.where(grp > g_cur, grp, g_last + 1), axis=0)
        out = (slot.to(tl.int64) * Tp + t) * R + rows
        tl.store(val_ptr + out, best_val, mask=rmask)
        tl.store(idx_ptr + out, best_idx, mask=rmask)


# ---------------------------------------------------------------------------------------- launch
def _num_splits(programs: int, K: int, block_k: int, device: torch.device) -> int:
    """Split K across programs when there are too few programs to fill the GPU."""
    if device.type != "cuda":
        return 1
    target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(K, block_k * 8), triton.cdiv(target, max(programs, 1))))


def _launch(xt: torch.Tensor, cb: torch.Tensor, norms, grp: torch.Tensor | None, metric: str, g0: int,
            groups_here: int) -> torch.Tensor:
    """xt: (T', R, D) prepared rows; cb: (M, T', K, D); norms: from :func:`_norms` of the caller's
    codebook. Returns idx (G, T', R) int64, the nearest code of each row in each of the G groups searched
    (the running minima are only needed to merge K splits)."""
    Tp, R, D = xt.shape
    K = cb.shape[2]
    half = xt.dtype in (torch.float16, torch.bfloat16)
    upcast = half and interpreting()  # the interpreter cannot run half-precision tl.dot correctly
    block_r, block_k, block_d = block_sizes(R, D)
    grid_r = triton.cdiv(R, block_r)
    splits = _num_splits(grid_r * Tp * groups_here, K, block_k, xt.device)
    per_split = triton.cdiv(triton.cdiv(K, splits), block_k) * block_k
    splits = triton.cdiv(K, per_split)
    cn, inv = norms
    val = torch.empty(splits * groups_here, Tp, R, dtype=torch.float32, device=xt.device)
    idx = torch.empty(splits * groups_here, Tp, R, dtype=torch.long, device=xt.device)
    grid = (grid_r, Tp, groups_here * splits)
    _nearest_kernel[grid](
        xt, cb, cn, inv, grp if grp is not None else idx, val, idx,
        R, K, Tp, g0, per_split, splits,
        xt.stride(0), xt.stride(1), cb.stride(0), cb.stride(1), cb.stride(2),
        D=D, METRIC=_METRIC_ID[metric], ALL_GROUPS=grp is None, UPCAST=upcast, IEEE=not half,
        BLOCK_R=block_r, BLOCK_K=block_k, BLOCK_D=block_d, num_warps=4,
    )
    if splits > 1:  # merge K splits: first minimum = lowest split = lowest index on ties
        val = val.view(groups_here, splits, Tp, R)
        idx = idx.view(groups_here, splits, Tp, R)
        pick = val.argmin(dim=1, keepdim=True)
        idx = idx.gather(1, pick).squeeze(1)
    return idx


def _kernel_inputs(x: torch.Tensor, cb: torch.Tensor, metric: str):
    """Rows and codebook in the kernel's dtype: fp16/bf16 stay half (tensor cores, exact products)
    when both are the same half type and the metric is not cosine; everything else runs in fp32."""
    same_half = x.dtype == cb.dtype and x.dtype in (torch.float16, torch.bfloat16)
    dtype = x.dtype if same_half and metric != "cosine" else torch.float32
    xp = _prepare(x.float(), metric).to(dtype)  # cosine: normalised in fp32, searched in fp32
    return xp, cb if cb.dtype == dtype else cb.to(dtype)


def triton_fixed_groups(x: torch.Tensor, cb: torch.Tensor, groups: torch.Tensor | None, metric: str):
    """Triton twin of torch_search.search_fixed_groups: (indices (B, T) int64, distances (B, T) fp32)."""
    B, T, D = x.shape
    M, Tp, K, _ = cb.shape
    xp, cbk = _kernel_inputs(x, cb, metric)
    if groups is None or M == 1:
        groups = torch.zeros(B, dtype=torch.long, device=x.device)
    order = torch.argsort(groups, stable=True)
    xs, gs = xp[order], groups[order]
    if Tp == 1:  # token-shared: every (image, token) is a row of the one codebook per group
        xt, grp = xs.reshape(1, B * T, D), gs.repeat_interleave(T)
    else:
        xt, grp = xs.transpose(0, 1), gs
    idx = _launch(xt.contiguous(), cbk.contiguous(), _norms(cb, metric), grp.to(torch.int32).contiguous(), metric, 0, 1)
    idx = idx[0].reshape(B, T) if Tp == 1 else idx[0].transpose(0, 1)
    indices = torch.empty_like(idx)
    indices[order] = idx
    return indices, exact_distances(x.float(), cb, groups, indices, metric)


def triton_all_groups(x: torch.Tensor, cb: torch.Tensor, metric: str, memory_budget: int):
    """Triton twin of torch_search.search_all_groups: (groups, indices, distances, group_errors)."""
    from .torch_search import _group_distances, _pick_best_groups

    B, T, D = x.shape
    M, Tp, K, _ = cb.shape
    xp, cbk = _kernel_inputs(x, cb, metric)
    xf = x.float()
    xfp = _prepare(xf, metric)  # the exact-distance pass's tokens (fp32, normalised for cosine)
    xt = (xp.reshape(1, B * T, D) if Tp == 1 else xp.transpose(0, 1)).contiguous()
    cbk = cbk.contiguous()
    norms = _norms(cb, metric)
    step = max(1, min(M, memory_budget // max(1, 24 * B * T)))  # (G, B, T) ints, floats and codes per chunk

    def chunks():
        for g0 in range(0, M, step):
            g1 = min(M, g0 + step)
            idx = _launch(xt, cbk, norms, None, metric, g0, g1 - g0)
            idx = idx.reshape(g1 - g0, B, T) if Tp == 1 else idx.transpose(1, 2)
            yield g0, idx, _group_distances(xf, xfp, cb, g0, idx, metric, memory_budget, torch.float32)

    return _pick_best_groups(chunks(), B, T, M, torch.float32, x.device)


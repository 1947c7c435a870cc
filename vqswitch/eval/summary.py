"""One JSON-serialisable summary of a set of reconstructions: :func:`evaluate` (bpp, PSNR, SSIM, IDS, codebook use)."""
from __future__ import annotations

from typing import Callable

import torch

from .._checks import check_image_pair, check_int, check_real
from ..bits import bpp
from ..codebooks import Utilization
from .image_quality import check_ssim_window, psnr_unchecked, ssim_unchecked
from .utilization import utilization_table
from .verification import check_embedder, identity_similarity_unchecked

__all__ = ["evaluate"]


def evaluate(originals: torch.Tensor, reconstructions: torch.Tensor, *, data_range: float, bits_per_image: int,
             embed: Callable[[torch.Tensor], torch.Tensor] | None = None, batch_size: int = 64,
             util: Utilization | None = None) -> dict:
    """One JSON-serialisable summary of a set of reconstructions.

    Args:
        originals, reconstructions: (B, C, H, W) float images of the same shape, values in
            ``[lo, lo + data_range]``; H and W >= 11 (the SSIM window).
        data_range: the pixel span (1 for [0, 1], 2 for [-1, 1]).
        bits_per_image: int, the fixed-length bits of one image's codes
            (``quantizer.bits_per_image``); bpp divides it by H * W (:func:`vqswitch.bits.bpp`).
        embed: optional face-embedding model for IDS (see :func:`identity_similarity`).
        batch_size: images per ``embed`` call.
        util: optional codebook :class:`Utilization` to include as :func:`utilization_table`.
    Returns:
        ``{"images", "height", "width", "bits_per_image", "bpp", "psnr", "psnr_exact_images",
        "ssim"}`` plus ``"ids"`` when embed is given and ``"utilization"`` when util is. ``psnr`` is
        the mean of the per-image PSNRs in dB, or None when some image is reconstructed exactly
        (its PSNR is +inf, and JSON has no infinity); ``psnr_exact_images`` counts those images.
    Raises:
        as :func:`psnr`, :func:`ssim`, :func:`identity_similarity` and :func:`vqswitch.bits.bpp`.
    """
    check_image_pair("originals", originals, "reconstructions", reconstructions)
    data_range = check_real("data_range", data_range, 0.0, min_open=True)
    B, _, H, W = originals.shape
    rate = bpp(bits_per_image, H, W)
    check_ssim_window(originals, 11)
    if embed is not None:
        check_embedder(embed)
        batch_size = check_int("batch_size", batch_size, 1)
    table = None if util is None else utilization_table(util)  # checked before the work
    p = psnr_unchecked(originals, reconstructions, data_range)
    exact = int(torch.isinf(p).sum())
    out = {"images": B, "height": H, "width": W, "bits_per_image": bits_per_image, "bpp": rate,
           "psnr": None if exact else float(p.mean()), "psnr_exact_images": exact,
           "ssim": float(ssim_unchecked(originals, reconstructions, data_range).mean())}
    if embed is not None:
        out["ids"] = float(identity_similarity_unchecked(originals, reconstructions, embed, batch_size).mean())
    if table is not None:
        out["utilization"] = table
    return out

"""What the metrics of vqswitch.eval share (private): the ``reduction`` argument and chunking."""
from __future__ import annotations

import torch

#: The values of every metric's ``reduction`` argument: "mean" (a 0-dim mean) or "none" (one value per image).
REDUCTIONS = ("mean", "none")
#: Images per internal chunk: bounds the float64 temporaries of psnr / ssim.
CHUNK = 16


def apply_reduction(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """``values`` (one per image) reduced as ``reduction`` (one of :data:`REDUCTIONS`, checked by the caller) says."""
    return values.mean() if reduction == "mean" else values

"""Reading image files with Pillow (private to vqswitch.data): decode to RGB, resize, crop, scale to a pixel range.

Pillow is imported only when a file is read or written (:func:`import_pil`), so ``import vqswitch`` stays light.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def import_pil():
    """PIL's ``Image`` and ``ImageOps`` modules; ``ImportError`` saying how to install Pillow when it is missing."""
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - Pillow comes with the dev extras
        raise ImportError("reading and writing image files needs Pillow: pip install pillow") from e
    return Image, ImageOps


def to_rgb(im):
    """A loaded PIL image -> mode "RGB" (8-bit); transparency is composited over white."""
    Image, _ = import_pil()
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):  # 16-bit greyscale: keep its range
        arr = np.asarray(im, dtype=np.float64) / 257.0
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def open_rgb(path: Path):
    """The whole RGB PIL image of ``path`` (decoded now, EXIF orientation applied); raises on any failure."""
    Image, ImageOps = import_pil()
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        im = to_rgb(im)
    w, h = im.size
    if w < 1 or h < 1:
        raise ValueError(f"empty image {w}x{h}")
    return im


def fit_short_side(im, size: int):
    """``im`` resized (bicubic) so that its short side is ``size`` (unchanged when it already is)."""
    Image, _ = import_pil()
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    return im


def center_crop(im, size: int) -> torch.Tensor:
    """The centre ``size x size`` window of a PIL RGB image whose short side is ``size``: uint8 (3, size, size)."""
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(im, dtype=np.uint8)[top:top + size, left:left + size]
    return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C")).permute(2, 0, 1)


def to_float(x: torch.Tensor, pixel_range: tuple[float, float]) -> torch.Tensor:
    """uint8 pixels -> float32 in ``pixel_range`` (0 -> low, 255 -> high)."""
    lo, hi = pixel_range
    return x.to(torch.float32).mul_((hi - lo) / 255.0).add_(lo)


def failure_reason(error: BaseException) -> str:
    """How a skipped file failed, for ``skipped`` lists and warnings: ``"<exception type>: <message>"``."""
    return f"{type(error).__name__}: {error}"


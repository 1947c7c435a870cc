"""Image grids: a batch of images as one picture (:func:`save_image_grid`), or labelled rows of images enlarged to be
looked at (:func:`save_labelled_grid`); written atomically with Pillow (imported on first use)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .._checks import check_images, check_int, check_path, check_range_pair
from .._io import atomic_path
from ._pillow import import_pil

__all__ = ["save_image_grid", "save_labelled_grid", "label_band_height"]

_GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP"}


def _grid_path(path) -> tuple[Path, str]:
    """(Path, Pillow format name) of an image-grid file name; TypeError/ValueError naming ``path``."""
    path = check_path("path", path)
    fmt = _GRID_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"path must end with one of {', '.join(_GRID_FORMATS)}, got {str(path)!r}")
    return path, fmt


def _grid_pixels(name: str, images, pixel_range) -> torch.Tensor:
    """Float images (N, 1|3, H, W) or (1|3, H, W) in ``pixel_range`` -> uint8 (N, 3, H, W) on the CPU (clamped,
    NaN -> 0); TypeError/ValueError naming ``name`` (or pixel_range)."""
    images = check_images(name, images, single=True)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape (N, 3, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
    lo, hi = check_range_pair("pixel_range", pixel_range)
    x = images.detach().to("cpu", torch.float32)
    x = ((x - lo) * (255.0 / (hi - lo))).nan_to_num_(0.0).clamp_(0, 255).round_().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def save_image_grid(images: torch.Tensor, path, nrow: int = 8, pixel_range=(0.0, 1.0), padding: int = 2) -> Path:
    """Write ``images`` as one picture: a grid of ``nrow`` images per row, ``padding`` black pixels between and
    around them.

    Args:
        images: float tensor (N, C, H, W) or one image (C, H, W), C = 3 (RGB) or 1 (grey), any device; values are
            mapped from ``pixel_range`` to [0, 255] and clamped (NaN -> 0).
        path: file to write (str or PathLike); the format follows its suffix, .png (lossless, preferred), .jpg,
            .jpeg, .bmp or .webp. Written atomically (:func:`vqswitch._io.atomic_path`); folders are created.
        nrow: images per row, int >= 1 (fewer when N < nrow).
        pixel_range: (low, high), low < high.
        padding: int >= 0.
    Returns the path written. The picture is ``cols * W + (cols + 1) * padding`` wide and
    ``rows * H + (rows + 1) * padding`` high, with ``cols = min(nrow, N)`` and ``rows = ceil(N / nrow)``.
    Raises ``TypeError``/``ValueError`` naming the argument for bad input (including N = 0).
    """
    path, fmt = _grid_path(path)
    x = _grid_pixels("images", images, pixel_range)
    nrow = check_int("nrow", nrow, 1)
    padding = check_int("padding", padding, 0)
    Image, _ = import_pil()
    n, _, h, w = x.shape
    cols, rows = min(nrow, n), -(-n // nrow)
    grid = torch.zeros(3, rows * h + (rows + 1) * padding, cols * w + (cols + 1) * padding, dtype=torch.uint8)
    for k in range(n):
        r, c = divmod(k, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[:, top:top + h, left:left + w] = x[k]
    picture = Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy())
    with atomic_path(path) as tmp:
        picture.save(tmp, format=fmt)
    return path


def save_labelled_grid(rows, path, scale: int = 4, pixel_range=(0.0, 1.0), padding: int = 2) -> Path:
    """Write rows of images, each under a text label, enlarged ``scale`` times by nearest-neighbour (every pixel
    becomes a ``scale`` x ``scale`` block), so small images can be looked at.

    Args:
        rows: a non-empty sequence of ``(label, images)``: label a str (one line, drawn in white with Pillow's
            default font on a black band above the row), images a float tensor (N, C, H, W), C = 3 or 1, values in
            ``pixel_range``; every row has the same H and W (N may differ).
        path: as :func:`save_image_grid` (written atomically; the format follows the suffix).
        scale: int >= 1; pixel_range: (low, high), low < high; padding: int >= 0 black pixels around each image.
    Returns the path written. With ``cols`` the largest N and ``band`` :func:`label_band_height` pixels, the
    picture is ``cols * W * scale + (cols + 1) * padding`` wide and ``len(rows) * (band + H * scale + padding) +
    padding`` high; row ``r``'s band starts at ``padding + r * (band + H * scale + padding)`` and its images
    ``band`` pixels lower. A label wider than the picture is cut off at its right edge.
    Raises ``TypeError``/``ValueError`` naming the argument for bad input.
    """
    path, fmt = _grid_path(path)
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty sequence of (label, images) pairs")
    scale = check_int("scale", scale, 1)
    padding = check_int("padding", padding, 0)
    pictures, labels, size = [], [], None
    for r, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) != 2 or not isinstance(row[0], str):
            raise TypeError(f"rows[{r}] must be a (label: str, images: tensor) pair")
        if "\n" in row[0]:
            raise ValueError(f"rows[{r}]'s label must be one line")
        x = _grid_pixels(f"rows[{r}] images", row[1], pixel_range)
        if size is not None and tuple(x.shape[2:]) != size:
            raise ValueError(f"rows[{r}] images are {tuple(x.shape[2:])} pixels, rows[0] images {size}")
        size = tuple(x.shape[2:])
        labels.append(row[0])
        pictures.append(x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3))
    Image, _ = import_pil()
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    band = label_band_height()
    h, w = pictures[0].shape[2:]
    cols = max(x.shape[0] for x in pictures)
    grid = torch.zeros(3, len(rows) * (band + h + padding) + padding, cols * w + (cols + 1) * padding,
                       dtype=torch.uint8)
    for r, x in enumerate(pictures):
        top = padding + r * (band + h + padding) + band
        for c in range(x.shape[0]):
            left = padding + c * (w + padding)
            grid[:, top:top + h, left:left + w] = x[c]
    picture = Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy())
    draw = ImageDraw.Draw(picture)
    for r, label in enumerate(labels):
        draw.text((padding + 1, padding + r * (band + h + padding) + 1), label, fill=(255, 255, 255), font=font)
    with atomic_path(path) as tmp:
        picture.save(tmp, format=fmt)
    return path


def label_band_height() -> int:
    """Height in pixels of the text band :func:`save_labelled_grid` draws above each row (Pillow's default font)."""
    from PIL import ImageFont

    _, top, _, bottom = ImageFont.load_default().getbbox("Ag|")
    return bottom + max(top, 0) + 3

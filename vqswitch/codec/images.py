"""Images in and out of the codec: tensors, PIL images and image files checked up front and read in batches
(:class:`ImageSource`); decoded images as PNG files under safe, unique names (:func:`output_file_names`,
:func:`save_png`).

The codec never resizes: every image must already have the model's size. Pillow modes that convert to RGB without
loss are accepted (RGB, greyscale, palette, and RGBA / LA / PA when every pixel is fully opaque).
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import torch

from vqswitch._checks import check_images

from .model import CodecModel

__all__ = ["BATCH", "ImageSource", "progress_bar", "output_file_names", "save_png"]

BATCH = 32  # images encoded / decoded per model call
_OPAQUE_MODES = ("RGB", "L", "1", "P")  # Pillow modes converted to RGB without loss
_ALPHA_MODES = ("RGBA", "LA", "PA")  # accepted only when every pixel is fully opaque


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` images (a no-op one when not ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


# ------------------------------------------------------------------------------------------------ images in


def _label(item, i: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return repr(os.fspath(item))
    filename = getattr(item, "filename", None)
    return repr(filename) if filename else f"image {i}"


def _default_name(item, i: int) -> str:
    filename = item if isinstance(item, (str, os.PathLike)) else getattr(item, "filename", None)
    if not filename:
        return f"{i:06d}"
    stem = Path(os.fspath(filename)).stem
    return stem.encode("utf-8", "replace").decode("utf-8") or f"{i:06d}"  # lone surrogates of odd file names


def _check_pil(im, label: str, size: tuple[int, int]) -> None:
    """Mode and size checks that need only the image header."""
    if im.mode not in _OPAQUE_MODES + _ALPHA_MODES:
        raise ValueError(f"{label}: Pillow mode {im.mode!r} is not supported: give RGB or greyscale (L) images "
                         "(convert it yourself, e.g. CMYK or 16-bit images, to 8-bit RGB first)")
    h, w = size
    if im.size != (w, h):
        raise ValueError(f"{label} is {im.size[0]}x{im.size[1]} pixels (width x height) but this model takes "
                         f"{w}x{h}; resize or crop it first (the codec never resizes)")


def _pil_to_tensor(im, label: str, pixel_range) -> torch.Tensor:
    """An opened PIL image -> (3, H, W) float in ``pixel_range``; refuses transparent pixels."""
    if im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        alpha = np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., 3]
        if alpha.size and int(alpha.min()) < 255:
            raise ValueError(f"{label}: Pillow mode {im.mode!r} with transparent pixels is not supported "
                             "(composite it onto a background and save it as RGB first)")
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    lo, hi = pixel_range
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255.0
    return x * (hi - lo) + lo


def _open_image(path, label: str):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except UnidentifiedImageError as err:
        raise ValueError(f"{label} is not an image file Pillow can read ({err})") from err


class ImageSource:
    """The images given to compress, checked up front and read in batches: ``len``, ``names``, ``batches()``.

    ``images``: a (N, 3, H, W) float tensor in ``cm``'s pixel range at exactly its image size, or a list of PIL
    images / image file paths (only their headers are read here). ``names``: the file stems, else "000000", ...
    Raises TypeError for anything else; ValueError for a tensor of the wrong shape, size or range, an image of
    another size than the model's, an unsupported Pillow mode or a file Pillow cannot read; OSError reading a file.
    """

    def __init__(self, images, cm: CodecModel):
        self.cm = cm
        if isinstance(images, torch.Tensor):
            check_images("images", images, channels=3, size=cm.image_size, pixel_range=cm.pixel_range)
            self.tensor, self.items = images, None
            self.names = [f"{i:06d}" for i in range(images.shape[0])]
            return
        if isinstance(images, (str, bytes, os.PathLike)) or not hasattr(images, "__iter__"):
            raise TypeError("images must be a (N, 3, H, W) float tensor or a list of PIL images / image file paths, "
                            f"got {type(images).__name__}")
        from PIL import Image

        self.tensor, self.items = None, list(images)
        for i, item in enumerate(self.items):
            label = _label(item, i)
            if isinstance(item, (str, os.PathLike)):
                with _open_image(item, label) as im:  # reads the header only
                    _check_pil(im, label, cm.image_size)
            elif isinstance(item, Image.Image):
                _check_pil(item, label, cm.image_size)
            else:
                raise TypeError(f"images[{i}] must be a PIL image or a file path, got {type(item).__name__}")
        self.names = [_default_name(item, i) for i, item in enumerate(self.items)]

    def __len__(self) -> int:
        return self.tensor.shape[0] if self.tensor is not None else len(self.items)

    def batches(self):
        """Yield (B, 3, H, W) float batches in the model's pixel range."""
        for start in range(0, len(self), BATCH):
            if self.tensor is not None:
                yield self.tensor[start:start + BATCH]
                continue
            out = []
            for i in range(start, min(len(self), start + BATCH)):
                item, label = self.items[i], _label(self.items[i], i)
                if isinstance(item, (str, os.PathLike)):
                    with _open_image(item, label) as im:
                        _check_pil(im, label, self.cm.image_size)  # the file may have changed since
                        out.append(_pil_to_tensor(im, label, self.cm.pixel_range))
                else:
                    out.append(_pil_to_tensor(item, label, self.cm.pixel_range))
            yield torch.stack(out)


# ------------------------------------------------------------------------------------------------ images out


_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_MAX_NAME_BYTES = 200


def _safe(name: str) -> bool:
    """A plain file-name stem: no separators, no '..', no control characters, not hidden or Windows-reserved."""
    if not name or name != name.strip() or name.startswith(".") or name.endswith("."):
        return False
    if any(c in name for c in '/\\:*?"<>|') or ".." in name:
        return False
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name):
        return False
    if name.split(".")[0].lower() in _RESERVED:
        return False
    return len(name.encode("utf-8")) <= _MAX_NAME_BYTES


def output_file_names(names) -> list[str]:
    """Safe, unique PNG file names for decoded images: ``<name>.png``, or ``<index>.png`` (six digits) for a name
    that is unsafe (a path, '..', control characters, hidden, reserved, too long). Uniqueness ignores case (for
    case-insensitive file systems); a repeated name gets ``-<index>`` appended."""
    out, used = [], set()
    for i, name in enumerate(names):
        stem = name if isinstance(name, str) and _safe(name) else f"{i:06d}"
        candidate, extra = stem, 0
        while candidate.casefold() in used:
            extra += 1
            candidate = f"{stem}-{i:06d}" if extra == 1 else f"{stem}-{i:06d}-{extra}"
        used.add(candidate.casefold())
        out.append(candidate + ".png")
    return out


def save_png(image: torch.Tensor, path: str | os.PathLike, pixel_range: tuple[float, float]) -> None:
    """Write one (3, H, W) float image in ``pixel_range`` (clamped to it) as an 8-bit RGB PNG at ``path``."""
    from PIL import Image

    lo, hi = pixel_range
    x = ((image.clamp(lo, hi) - lo) / (hi - lo) * 255.0).round().to(torch.uint8)
    Image.fromarray(x.permute(1, 2, 0).contiguous().numpy()).save(path, format="PNG")

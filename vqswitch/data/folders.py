"""Image folders: every image under a folder (:class:`ImageFolder`), and face folders in the one-folder-per-identity
layout (:class:`FaceFolder`, :func:`load_face_folder` with its verification pairs).

Files are read with Pillow, which is imported only when a file is read, so ``import vqswitch`` stays light.
Unreadable files never stop a run half-way: each is skipped, recorded in ``skipped`` and reported by one
:class:`UnreadableImageWarning`. Images come out as float32 (3, size, size) tensors (or (B, 3, size, size) batches)
with pixel values in the caller's ``pixel_range``.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_bool, check_choice, check_int, check_path, check_range_pair
from ..formats import PAIRS_FILE
from ._common import check_index, rng
from ._pillow import center_crop, failure_reason, fit_short_side, import_pil, open_rgb, to_float
from .pairs import draw_pairs, parse_pairs, resolve_pair_image

__all__ = ["ImageFolder", "UnreadableImageWarning", "IMAGE_EXTENSIONS", "FaceFolder", "FaceData", "load_face_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class UnreadableImageWarning(UserWarning):
    """An image file could not be read and was skipped (one warning per file)."""


def _check_root(root) -> Path:
    """An image folder argument: a str or PathLike naming an existing folder (TypeError / ValueError otherwise)."""
    path = check_path("root", root)
    if not path.is_dir():
        raise ValueError(f"root {str(path)!r} is not an existing folder")
    return path


def _check_extensions(extensions) -> tuple[str, ...]:
    """File name endings (a str or a sequence of str, each starting with ".") as a lower-cased tuple."""
    if isinstance(extensions, str):
        extensions = (extensions,)
    if not isinstance(extensions, Iterable):
        raise TypeError(f"extensions must be a str or a sequence of str, got {type(extensions).__name__}")
    extensions = tuple(extensions)
    if not extensions or not all(isinstance(e, str) for e in extensions):
        raise TypeError(f"extensions must be a non-empty sequence of str, got {extensions!r}")
    bad = [e for e in extensions if not e.startswith(".") or len(e) < 2]
    if bad:
        raise ValueError(f"extensions must each start with '.', like '.png', got {bad!r}")
    return tuple(e.lower() for e in extensions)


class ImageFolder(torch.utils.data.Dataset):
    """A map-style Dataset of every image file under ``root`` (recursively), square-cropped to ``size``.

    Files are those whose name ends with one of ``extensions`` (case-insensitive), in sorted order of their path
    relative to ``root`` (the same order on every machine). ``dataset[i]`` reads file ``i`` with Pillow (EXIF
    orientation applied, transparency composited over white, 16-bit greyscale kept to its range), converts it to
    RGB, resizes it so that its short side is ``size`` (bicubic, antialiased), crops ``size x size`` (the centre,
    or a random window with ``crop="random"``), flips it horizontally with probability 1/2 if ``flip``, and returns
    a float32 (3, size, size) tensor with pixel values in ``pixel_range``. The random window and flip depend only
    on ``(seed, epoch, i)``: call :meth:`set_epoch` each epoch for new ones.

    Unreadable files: reading is lazy, so a file that fails (corrupt, truncated, not an image, vanished) is found
    when first indexed. It is then recorded in ``skipped`` as ``(path, reason)``, reported by one
    :class:`UnreadableImageWarning`, never read again, and the next readable file in order (wrapping around) is
    returned in its place (with index ``i``'s crop and flip), so ``len`` and every index stay valid and a run never
    stops half-way. :meth:`validate` reads every file up front instead and drops the bad ones. With DataLoader
    workers, each worker has its own ``skipped``.

    Args:
        root: a folder (str or PathLike).
        size: output side in pixels, int >= 1.
        pixel_range: (low, high), low < high.
        crop: "center" or "random".
        flip: random horizontal flips (bool).
        extensions: file name endings to include, each starting with "." (a str or a sequence of str).
        seed: int >= 0, for crops and flips.
    Raises ``TypeError``/``ValueError`` naming the argument for bad values, and ``ValueError`` naming the folder
    when it does not exist or holds no file with one of ``extensions``, or (when found) when none is readable.
    """

    def __init__(self, root, size: int, pixel_range=(0.0, 1.0), crop: str = "center", flip: bool = False,
                 extensions=IMAGE_EXTENSIONS, seed: int = 0):
        self.root = _check_root(root)
        self.size = check_int("size", size, 1)
        self.pixel_range = check_range_pair("pixel_range", pixel_range)
        self.crop = check_choice("crop", crop, ("center", "random"))
        self.flip = check_bool("flip", flip)
        self.extensions = _check_extensions(extensions)
        self.seed = check_int("seed", seed, 0)
        self.epoch = 0
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.lower().endswith(self.extensions):
                    found.append(Path(dirpath, name))
        self.paths: list[Path] = sorted(found, key=lambda p: p.relative_to(self.root).as_posix())
        if not self.paths:
            raise ValueError(f"folder {str(self.root)!r} holds no image file (looked for {', '.join(self.extensions)}, "
                             "recursively)")
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Use the random crops and flips of ``epoch`` (int >= 0) from now on."""
        self.epoch = check_int("epoch", epoch, 0)

    def _read(self, path: Path):
        """The RGB PIL image of ``path`` resized so that its short side is ``size``; raises on any failure."""
        return fit_short_side(open_rgb(path), self.size)

    def _skip(self, index: int, error: BaseException) -> None:
        reason = failure_reason(error)
        path = str(self.paths[index])
        self._bad.add(index)
        self.skipped.append((path, reason))
        warnings.warn(f"ImageFolder: skipping unreadable image {path} ({reason})", UnreadableImageWarning,
                      stacklevel=3)

    def __getitem__(self, index: int) -> torch.Tensor:
        index = check_index(index, len(self.paths))
        import_pil()  # a missing Pillow is an ImportError, never a skipped file
        im = None
        for k in range(len(self.paths)):
            j = (index + k) % len(self.paths)
            if j in self._bad:
                continue
            try:
                im = self._read(self.paths[j])
                break
            except Exception as e:  # noqa: BLE001 - any failure of one file skips that file, never the run
                self._skip(j, e)
        if im is None:
            raise ValueError(f"folder {str(self.root)!r} holds no readable image ({len(self.skipped)} unreadable "
                             f"files, see .skipped)")
        r = rng(self.seed, self.epoch, index)
        w, h = im.size
        if self.crop == "random":
            left, top = int(r.integers(0, w - self.size + 1)), int(r.integers(0, h - self.size + 1))
        else:
            left, top = (w - self.size) // 2, (h - self.size) // 2
        arr = np.asarray(im, dtype=np.uint8)[top:top + self.size, left:left + self.size]
        if self.flip and r.random() < 0.5:
            arr = arr[:, ::-1]
        return to_float(torch.from_numpy(np.array(arr, dtype=np.uint8, order="C")).permute(2, 0, 1),
                         self.pixel_range).contiguous()

    def validate(self) -> list[tuple[str, str]]:
        """Read every file now; drop the unreadable ones from ``paths`` (indices shift), recording each in
        ``skipped`` with one :class:`UnreadableImageWarning`. Returns the list of ``(path, reason)`` found by this
        call. Raises ``ValueError`` naming the folder when no file is readable."""
        import_pil()
        found, keep = [], []
        for j, path in enumerate(self.paths):
            if j in self._bad:
                continue
            try:
                self._read(path)
                keep.append(path)
            except Exception as e:  # noqa: BLE001
                self._skip(j, e)
                found.append(self.skipped[-1])
        self._bad = set()
        self.paths = keep
        if not keep:
            raise ValueError(f"folder {str(self.root)!r} holds no readable image ({len(self.skipped)} unreadable "
                             f"files, see .skipped)")
        return found



class FaceFolder(torch.utils.data.Dataset):
    """A map-style Dataset of face images in the one-folder-per-identity layout: ``root/<identity>/<image files>``
    (LFW, CelebA by identity, CASIA-WebFace), each image resized and centre-cropped to ``size x size``.

    Identities are the sub-folders of ``root`` in sorted order of name (hidden ones, starting with ".", ignored);
    within one, images are its files ending with one of ``extensions`` in sorted order of file name. Every file is
    read once at construction (decoded with Pillow, as :class:`ImageFolder` reads it), so a bad file is found
    before any run starts: unreadable, truncated or non-image files, images smaller than ``min_size`` on their short
    side, image files directly in ``root`` (no identity), other non-hidden files inside identity folders, and
    identity folders with no readable image are each recorded in ``skipped`` as ``(path, reason)`` and reported by
    one :class:`UnreadableImageWarning` (listing the first few), never a crash. With ``cache=True`` the resized
    images are kept as uint8 (3 bytes per output pixel), so each file is decoded exactly once.

    ``dataset[i]`` is a float32 (3, size, size) tensor in ``pixel_range`` (resized so that the short side is
    ``size``, bicubic, then the centre ``size x size`` window); :meth:`get_batch` returns many at once.

    Attributes:
        identities: list of identity folder names that kept at least one image, sorted.
        labels: int64 tensor (N,), ``identities[labels[i]]`` is the identity of image i.
        paths: list of N image Paths, grouped by identity in the order of ``identities``.
        skipped: list of ``(path, reason)`` (str, str).
    Args:
        root: the folder (str or PathLike).
        size: output side in pixels, int >= 1.
        pixel_range: (low, high), low < high.
        min_size: int >= 1; images whose short side is smaller are skipped.
        extensions: image file endings, each starting with "." (str or sequence of str).
        identities: optional collection of identity folder names to read (e.g. one side of
            :func:`split_identities`); the others are not read. Names with no folder raise ``ValueError``.
        cache: keep the decoded images in memory (bool).
    Raises ``TypeError``/``ValueError`` naming the argument for bad values, and ``ValueError`` naming the folder
    when it does not exist or no identity folder under it holds a readable image.
    """

    def __init__(self, root, size: int = 64, pixel_range=(0.0, 1.0), min_size: int = 1,
                 extensions=IMAGE_EXTENSIONS, identities=None, cache: bool = True):
        self.root = _check_root(root)
        self.size = check_int("size", size, 1)
        self.pixel_range = check_range_pair("pixel_range", pixel_range)
        self.min_size = check_int("min_size", min_size, 1)
        self.extensions = _check_extensions(extensions)
        check_bool("cache", cache)
        folders = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.name)
        if identities is not None:
            if isinstance(identities, (str, bytes)) or not isinstance(identities, Iterable):
                raise TypeError(f"identities must be a collection of folder names, got {type(identities).__name__}")
            wanted = {str(i) for i in identities}
            missing = sorted(wanted - {p.name for p in folders})
            if missing:
                raise ValueError(f"identities names {len(missing)} folder(s) not under {str(self.root)!r}: "
                                 f"{', '.join(missing[:5])}")
            folders = [p for p in folders if p.name in wanted]
        self.skipped: list[tuple[str, str]] = []
        self.identities: list[str] = []
        self.paths: list[Path] = []
        labels: list[int] = []
        cached: list[torch.Tensor] = []
        if identities is None:
            for p in sorted(self.root.iterdir(), key=lambda p: p.name):
                if p.is_file() and p.name.lower().endswith(self.extensions):
                    self.skipped.append((str(p), "image file directly in root: not inside an identity folder"))
        for folder in folders:
            kept = 0
            for p in sorted(folder.iterdir(), key=lambda p: p.name):
                if p.name.startswith("."):
                    continue
                if not p.is_file() or not p.name.lower().endswith(self.extensions):
                    what = "folder" if p.is_dir() else "file"
                    self.skipped.append((str(p), f"not an image file ({what}; image files end with "
                                                 f"{', '.join(self.extensions)})"))
                    continue
                try:
                    im = open_rgb(p)
                    if min(im.size) < self.min_size:
                        raise ValueError(f"image {im.size[0]}x{im.size[1]} is smaller than min_size={self.min_size}")
                    if cache:
                        cached.append(center_crop(fit_short_side(im, self.size), self.size))
                except Exception as e:  # noqa: BLE001 - any failure of one file skips that file, never the run
                    self.skipped.append((str(p), failure_reason(e)))
                    continue
                self.paths.append(p)
                labels.append(len(self.identities))
                kept += 1
            if kept:
                self.identities.append(folder.name)
            else:
                self.skipped.append((str(folder), "identity folder with no readable image"))
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self._cache = torch.stack(cached) if cache and cached else None
        self._index = {p: i for i, p in enumerate(self.paths)}
        if self.skipped:
            shown = "; ".join(f"{p} ({r})" for p, r in self.skipped[:5])
            more = f"; and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            warnings.warn(f"FaceFolder: skipped {len(self.skipped)} path(s) under {str(self.root)!r} (see .skipped): "
                          f"{shown}{more}", UnreadableImageWarning, stacklevel=2)
        if not self.paths:
            raise ValueError(f"folder {str(self.root)!r} holds no identity folder with a readable image "
                             f"({len(self.skipped)} skipped paths, see the warning)")

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> torch.Tensor:
        if self._cache is not None:
            return self._cache[index]
        return center_crop(fit_short_side(open_rgb(self.paths[index]), self.size), self.size)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_float(self._load(check_index(index, len(self.paths))), self.pixel_range)

    def get_batch(self, indices: Iterable[int]) -> torch.Tensor:
        """Images ``indices`` (ints, negatives count from the end) as one float32 (len(indices), 3, size, size)
        tensor in ``pixel_range``. Without the cache a file that fails now (changed since construction) raises."""
        if isinstance(indices, (torch.Tensor, np.ndarray)):
            indices = indices.tolist()
        idx = [check_index(i, len(self.paths)) for i in indices]
        if not idx:
            return torch.empty(0, 3, self.size, self.size)
        if self._cache is not None:
            return to_float(self._cache[torch.tensor(idx, dtype=torch.int64)], self.pixel_range)
        return to_float(torch.stack([self._load(i) for i in idx]), self.pixel_range)

    def __getitems__(self, indices) -> list[torch.Tensor]:
        return list(self.get_batch(indices).unbind(0))

    def index_of(self, name: str, number: int, ext: str = "jpg") -> int:
        """The dataset index of image ``number`` of identity ``name`` as a pairs file means it (LFW naming
        ``name/name_{number:04d}.{ext}`` when that file exists, else the number-th image file of the folder sorted by
        name, counting every file ending with ``extensions``, skipped ones included: see
        :func:`vqswitch.data.resolve_pair_image`).

        Raises ``FileNotFoundError`` when there is no such file, ``ValueError`` when it was skipped (with the
        reason) or its identity was left out of this dataset.
        """
        path = resolve_pair_image(self.root, name, number, ext, self.extensions)
        i = self._index.get(path)
        if i is None:
            reason = dict(self.skipped).get(str(path))
            if reason is not None:
                raise ValueError(f"{path} was skipped: {reason}")
            raise ValueError(f"{path} is not in this dataset (identity {name!r} was not selected)")
        return i


class FaceData(NamedTuple):
    """Everything a face benchmark needs from one folder (:func:`load_face_folder`).

    images: float32 (N, 3, size, size) in pixel_range; labels: int64 (N,) indices into ``identities``;
    pairs: int64 (P, 2) image indices; same: bool (P,); folds: the number of contiguous verification folds of
    ``pairs``; identities: list of names; paths: list of N Paths; skipped: list of (path, reason);
    pairs_source: the pairs file's path (str) or "drawn".
    """

    images: torch.Tensor
    labels: torch.Tensor
    pairs: torch.Tensor
    same: torch.Tensor
    folds: int
    identities: list
    paths: list
    skipped: list
    pairs_source: str


def load_face_folder(root, size: int = 64, pixel_range=(0.0, 1.0), *, pairs="auto", num_pairs: int = 3000,
                     folds: int = 10, seed: int = 0, identities=None, min_size: int = 1, ext: str = "jpg",
                     extensions=IMAGE_EXTENSIONS) -> FaceData:
    """Read a one-folder-per-identity face folder with its verification pairs, in one call.

    Args:
        root, size, pixel_range, min_size, extensions, identities: as :class:`FaceFolder`.
        pairs: ``"auto"`` (``root/pairs.txt`` when it exists, else drawn), ``"draw"`` (always drawn by
            :func:`draw_pairs` from the identity labels), or the path of an LFW-style pairs file
            (:func:`vqswitch.data.parse_pairs`; ``name n`` resolved by :meth:`FaceFolder.index_of`).
        num_pairs, folds, seed: for drawn pairs (see :func:`draw_pairs`). With a pairs file, ``folds`` is the
            file's number of sets when it has 2 or more, else this argument.
        ext: the LFW file extension for pairs files (``name/name_0001.jpg``).
    Returns:
        :class:`FaceData`.
    Raises:
        as :class:`FaceFolder` and :func:`draw_pairs`; for a pairs file, as :func:`vqswitch.data.parse_pairs`,
        and ``ValueError`` / ``FileNotFoundError`` naming the file and line for an image that does not exist, was
        skipped, or belongs to an identity not selected.
    """
    data = FaceFolder(root, size, pixel_range, min_size=min_size, extensions=extensions, identities=identities)
    if isinstance(pairs, str) and pairs in ("auto", "draw"):
        file = data.root / PAIRS_FILE if pairs == "auto" and (data.root / PAIRS_FILE).is_file() else None
    elif isinstance(pairs, (str, os.PathLike)):
        file = Path(pairs)
    else:
        raise TypeError(f"pairs must be 'auto', 'draw' or a pairs file path, got {type(pairs).__name__}")
    if file is None:
        pair_idx, same = draw_pairs(data.labels, num_pairs, folds=folds, seed=seed)
        source = "drawn"
    else:
        entries, sets = parse_pairs(file)
        rows = []
        for e in entries:
            try:
                rows.append((data.index_of(e.name1, e.index1, ext), data.index_of(e.name2, e.index2, ext)))
            except (FileNotFoundError, ValueError) as err:
                raise type(err)(f"{file}: line {e.line}: {err}") from None
        pair_idx = torch.tensor(rows, dtype=torch.int64).view(-1, 2)
        same = torch.tensor([e.same for e in entries], dtype=torch.bool)
        folds = sets if sets >= 2 else check_int("folds", folds, 2)
        source = str(file)
    images = data.get_batch(range(len(data)))
    return FaceData(images, data.labels, pair_idx, same, folds, list(data.identities), list(data.paths),
                    list(data.skipped), source)


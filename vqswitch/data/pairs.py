"""Who is compared with whom in face verification: identity splits, drawn pair lists and LFW-style pairs files.

- :func:`split_identities` splits identities into train and test sets (no person in both).
- :func:`draw_pairs` draws a balanced, fold-ordered pair list from identity labels (as LFW's pairs.txt is built).
- :func:`parse_pairs`, :func:`resolve_pair_image` and :func:`read_pairs` read pairs files (pairs.txt,
  pairsDevTest.txt ...) against LFW or CelebA-style one-folder-per-identity layouts.

The metrics that score these pairs are in :mod:`vqswitch.eval` (:func:`~vqswitch.eval.verification_accuracy`,
:func:`~vqswitch.eval.pair_verification`).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_bool, check_int, check_real, is_int
from ._common import rng

__all__ = ["split_identities", "draw_pairs", "PairLine", "parse_pairs", "resolve_pair_image", "read_pairs"]


def split_identities(identities, test_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split identities into train and test sets, so that no person is in both.

    Args:
        identities: a collection of identity names (str) or labels (int); duplicates count once, input order does not
            matter (they are sorted first), e.g. ``FaceFolder.identities``.
        test_fraction: float in (0, 1); the test set has ``round(test_fraction * n)`` identities, at least 1 and at
            most n - 1.
        seed: int >= 0; the split depends only on ``(set of identities, test_fraction, seed)``.
    Returns:
        ``(train, test)``: two disjoint sorted lists whose union is the set of identities.
    Raises ``TypeError`` for mixed or unsupported identity types, ``ValueError`` for fewer than 2 identities or a
    test_fraction outside (0, 1).
    """
    if isinstance(identities, (str, bytes)) or not isinstance(identities, Iterable):
        raise TypeError(f"identities must be a collection of names or int labels, got {type(identities).__name__}")
    items = list(identities.tolist() if isinstance(identities, (torch.Tensor, np.ndarray)) else identities)
    if all(isinstance(i, str) for i in items):
        unique = sorted(set(items))
    elif all(is_int(i) for i in items):
        unique = sorted({int(i) for i in items})
    else:
        raise TypeError("identities must be all str (names) or all int (labels)")
    test_fraction = check_real("test_fraction", test_fraction, 0.0, 1.0, min_open=True, max_open=True)
    seed = check_int("seed", seed, 0)
    n = len(unique)
    if n < 2:
        raise ValueError(f"identities must hold at least 2 distinct identities to split, got {n}")
    n_test = min(n - 1, max(1, round(test_fraction * n)))
    order = rng(seed, 0x5B).permutation(n)
    test = sorted(unique[int(k)] for k in order[:n_test])
    train = sorted(unique[int(k)] for k in order[n_test:])
    return train, test


def _sample_pairs(count: int, total: int, draw, enumerate_all, r: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` distinct unordered pairs (a < b) out of ``total``: by rejection (``draw()`` gives one uniformly
    random valid pair) when they are plentiful, else by enumerating all ``total`` (<= 2 * count) and choosing."""
    if 2 * count <= total:
        seen: set[tuple[int, int]] = set()
        out = []
        while len(out) < count:
            a, b = draw()
            key = (a, b) if a < b else (b, a)
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out
    every = enumerate_all()
    pick = r.choice(len(every), size=count, replace=False)
    return [every[int(k)] for k in pick]


def draw_pairs(labels, num_pairs: int, folds: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a balanced face-verification pair list from identity labels (as LFW's pairs.txt is built).

    Half the pairs show one person (two different images of one identity; identities with one image give none),
    half two people; no unordered pair appears twice. The list is ordered in ``folds`` contiguous blocks of
    ``num_pairs / folds`` pairs, each holding equal numbers of same and different pairs (same first), so each fold
    of :func:`vqswitch.eval.verification_accuracy` (``folds`` folds) is balanced.

    Args:
        labels: (N,) integer identity labels (tensor, array or list), e.g. ``FaceFolder.labels``.
        num_pairs: int >= 2 * folds, a multiple of ``2 * folds``.
        folds: int >= 1.
        seed: int >= 0; the pairs depend only on ``(labels, num_pairs, folds, seed)``.
    Returns:
        ``(pairs, same)``: int64 (num_pairs, 2) image indices (first < second) and bool (num_pairs,).
    Raises ``TypeError``/``ValueError`` naming the argument for bad values, and ``ValueError`` when the labels do
    not admit ``num_pairs / 2`` distinct same or different pairs (saying how many exist).
    """
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        labels = labels.tolist()
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a 1-D tensor, array or list of int labels, got {type(labels).__name__}")
    if not all(is_int(v) for v in labels):
        raise TypeError("labels must hold ints (identity labels)")
    folds = check_int("folds", folds, 1)
    num_pairs = check_int("num_pairs", num_pairs, 2 * folds)
    if num_pairs % (2 * folds):
        raise ValueError(f"num_pairs must be a multiple of 2 * folds = {2 * folds} so that every fold holds as many "
                         f"same as different pairs, got {num_pairs}")
    seed = check_int("seed", seed, 0)
    lab = np.asarray(labels, dtype=np.int64)
    n = lab.shape[0]
    order = np.argsort(lab, kind="stable")  # images grouped by identity
    ids, starts, counts = np.unique(lab[order], return_index=True, return_counts=True)
    half = num_pairs // 2
    same_total = int((counts * (counts - 1) // 2).sum())
    diff_total = n * (n - 1) // 2 - same_total
    if same_total < half:
        raise ValueError(f"labels admit only {same_total} distinct same-identity pairs (identities with 2+ images: "
                         f"{int((counts >= 2).sum())}), fewer than num_pairs / 2 = {half}")
    if diff_total < half:
        raise ValueError(f"labels admit only {diff_total} distinct different-identity pairs ({len(ids)} identities), "
                         f"fewer than num_pairs / 2 = {half}")
    r = rng(seed, 0x9A)
    cum_same = np.cumsum(counts * (counts - 1) // 2)  # identity g is drawn with weight C(counts[g], 2)
    group_of = np.empty(n, dtype=np.int64)
    group_of[order] = np.repeat(np.arange(len(ids)), counts)

    def draw_same():
        g = int(np.searchsorted(cum_same, int(r.integers(same_total)), side="right"))
        a, b = r.choice(int(counts[g]), size=2, replace=False)
        return int(order[starts[g] + a]), int(order[starts[g] + b])

    def all_same():
        return [(min(int(order[s + a]), int(order[s + b])), max(int(order[s + a]), int(order[s + b])))
                for s, c in zip(starts, counts) for a in range(c) for b in range(a + 1, c)]

    def draw_diff():
        a = int(r.integers(n))
        g = group_of[a]
        k = int(r.integers(n - counts[g]))  # one of the images outside a's identity, in grouped order
        k = k if k < starts[g] else k + int(counts[g])
        return a, int(order[k])

    def all_diff():  # only pairs across identities (grouped order: each image with every later group's images)
        out = []
        for s, c in zip(starts, counts):
            for a in order[s:s + c].tolist():
                out += [(a, b) if a < b else (b, a) for b in order[s + c:].tolist()]
        return out

    same_pairs = _sample_pairs(half, same_total, draw_same, all_same, r)
    diff_pairs = _sample_pairs(half, diff_total, draw_diff, all_diff, r)
    k = half // folds
    rows = []
    for f in range(folds):
        rows += same_pairs[f * k:(f + 1) * k] + diff_pairs[f * k:(f + 1) * k]
    pairs = torch.tensor(rows, dtype=torch.int64).view(-1, 2)
    same = torch.tensor(([True] * k + [False] * k) * folds, dtype=torch.bool)
    return pairs, same



def _is_uint(s: str) -> bool:
    return s.isascii() and s.isdigit()


class PairLine(NamedTuple):
    """One pair line of an LFW-style pairs file: image ``index1`` of ``name1`` and image ``index2`` of ``name2``
    (indices >= 1; ``name2 == name1`` for a same-person line), ``same`` as the line's form says, and its 1-based
    ``line`` number in the file (for error messages)."""

    name1: str
    index1: int
    name2: str
    index2: int
    same: bool
    line: int


def parse_pairs(path: str | os.PathLike) -> tuple[list[PairLine], int]:
    """Parse an LFW-style pairs file into its pair lines, without touching any image.

    Format: the first line is ``N_sets N_per_set`` (pairs.txt: ``10 300``) or just ``N_per_set``
    (one set). Then, per set, ``N_per_set`` same-person lines ``name idx1 idx2`` and ``N_per_set``
    different-person lines ``name1 idx1 name2 idx2`` (fields separated by whitespace, indices
    >= 1). Blank lines are ignored. The number of pair lines must be ``2 * N_sets * N_per_set``.

    Returns:
        ``(lines, n_sets)``: the :class:`PairLine` of every pair in file order, and N_sets (1 for
        a one-number header).
    Raises:
        ValueError naming the file and line number for a malformed header or pair line, or a pair
        count that does not match the header; OSError when the file cannot be read.
    """
    lines = Path(path).read_text().splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{path}: line 1: expected a header 'N_sets N_per_set' or 'N_per_set', got an empty line")
    header = lines[0].split()
    if len(header) not in (1, 2) or not all(_is_uint(h) and int(h) > 0 for h in header):
        raise ValueError(f"{path}: line 1: expected a header 'N_sets N_per_set' or 'N_per_set' "
                         f"(positive integers), got {lines[0]!r}")
    sets, per_set = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))

    def index(idx: str, lineno: int) -> int:
        if not _is_uint(idx) or int(idx) < 1:
            raise ValueError(f"{path}: line {lineno}: image index must be a positive integer, got {idx!r}")
        return int(idx)

    pairs = []
    for lineno, line in enumerate(lines[1:], start=2):
        f = line.split()
        if not f:
            continue
        if len(f) == 3:
            pairs.append(PairLine(f[0], index(f[1], lineno), f[0], index(f[2], lineno), True, lineno))
        elif len(f) == 4:
            pairs.append(PairLine(f[0], index(f[1], lineno), f[2], index(f[3], lineno), False, lineno))
        else:
            raise ValueError(f"{path}: line {lineno}: expected 'name idx1 idx2' (same person) or "
                             f"'name1 idx1 name2 idx2' (different people), got {line!r}")
    if len(pairs) != 2 * sets * per_set:
        raise ValueError(f"{path}: the header promises {sets} set(s) of {per_set} same + {per_set} different "
                         f"pairs = {2 * sets * per_set} pairs, but the file has {len(pairs)}")
    return pairs, sets


def _check_ext(ext) -> str:
    if not isinstance(ext, str) or not ext.lstrip("."):
        raise TypeError(f"ext must be a non-empty str such as 'jpg', got {ext!r}")
    return ext.lstrip(".")


def _folder_images(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files of ``folder`` whose lower-cased name ends with one of ``suffixes``, sorted by file name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)),
                  key=lambda p: p.name)


def resolve_pair_image(root: str | os.PathLike, name: str, index: int, ext: str = "jpg",
                       extensions: Sequence[str] | None = None) -> Path:
    """The image file that ``name index`` of a pairs file means, in a one-folder-per-identity ``root``.

    LFW naming first: ``root/name/name_{index:04d}.{ext}`` when that file exists. Otherwise the
    ``index``-th image (1-based) of folder ``root/name``, counting the files whose name ends with
    one of ``extensions`` (case-insensitive; default ``("." + ext,)``) in sorted order of file name
    (CelebA-style folders such as ``7201/001085.png``).

    Args:
        root: the image folder (str or PathLike); name: an identity folder name; index: int >= 1.
        ext: the LFW file extension, with or without the dot.
        extensions: the image file endings counted for the index-th form, each starting with ".".
    Returns:
        the existing file's Path.
    Raises:
        FileNotFoundError naming the identity folder and the files it has when there is no such
        folder or it has fewer than ``index`` images; TypeError / ValueError for bad arguments.
    """
    ext = _check_ext(ext)
    index = check_int("index", index, 1)
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"name must be one identity folder name, got {name!r}")
    folder = Path(root) / name
    lfw = folder / f"{name}_{index:04d}.{ext}"
    if lfw.is_file():
        return lfw
    if not folder.is_dir():
        raise FileNotFoundError(f"no identity folder {str(folder)!r} (nor {lfw.name})")
    suffixes = ("." + ext.lower(),) if extensions is None else tuple(e.lower() for e in extensions)
    files = _folder_images(folder, suffixes)
    if index > len(files):
        raise FileNotFoundError(f"identity folder {str(folder)!r} has no {lfw.name} and only {len(files)} "
                                f"image(s) ending with {', '.join(suffixes)}, so no image number {index}")
    return files[index - 1]


def read_pairs(path: str | os.PathLike, root: str | os.PathLike, ext: str = "jpg", resolve: bool = False,
               extensions: Sequence[str] | None = None) -> list[tuple[Path, Path, bool]]:
    """Read an LFW-style pairs file (pairs.txt, pairsDevTest.txt, ...) as image paths.

    The format is :func:`parse_pairs`'s.

    Args:
        path: the pairs file.
        root: the image folder, one sub-folder per identity.
        ext: the image extension, with or without the dot.
        resolve: False (default): image ``idx`` of ``name`` is ``root/name/name_{idx:04d}.{ext}``
            (LFW naming), not checked for existence. True: each is resolved to an existing file by
            :func:`resolve_pair_image` (LFW naming when that file exists, else the idx-th image of
            folder ``name`` sorted by file name, counting files ending with ``extensions``).
        extensions: passed to :func:`resolve_pair_image` (only with ``resolve=True``).
    Returns:
        ``[(path_a, path_b, same), ...]`` in file order (Path, Path, bool). For the 10-fold
        protocol pass these pairs in this order to :func:`verification_accuracy` with
        ``folds=N_sets``.
    Raises:
        ValueError naming the line number for a malformed header or pair line, or a pair count that
        does not match the header; with ``resolve=True``, FileNotFoundError naming the line for an
        image that does not exist; TypeError for a non-str ``ext``.
    """
    ext = _check_ext(ext)
    check_bool("resolve", resolve)
    root = Path(root)
    entries, _sets = parse_pairs(path)

    def image(name: str, idx: int, lineno: int) -> Path:
        if not resolve:
            return root / name / f"{name}_{idx:04d}.{ext}"
        try:
            return resolve_pair_image(root, name, idx, ext, extensions)
        except (FileNotFoundError, ValueError) as err:
            raise type(err)(f"{path}: line {lineno}: {name} {idx}: {err}") from None

    return [(image(e.name1, e.index1, e.line), image(e.name2, e.index2, e.line), e.same) for e in entries]

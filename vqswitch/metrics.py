"""Evaluation metrics for tokenizer reconstructions (tensors in, plain numbers out; no nn.Modules).

- :func:`psnr` and :func:`ssim` - reconstruction quality per image (SSIM as Wang et al. 2004).
- :func:`identity_similarity` - the paper's IDS: cosine similarity of face embeddings of an
  original and its reconstruction, with a pluggable embedding model.
- :func:`verification_accuracy` and :func:`read_pairs` - face verification with the LFW 10-fold
  protocol; :func:`parse_pairs` and :func:`resolve_pair_image` read pairs files against LFW or
  CelebA-style one-folder-per-identity layouts.
- :func:`identity_metrics` - IDS and verification accuracy of reconstructions from precomputed
  embeddings (:func:`pair_verification` for one embedding set and an index pair list).
- :func:`group_histogram`, :func:`utilization_table`, :func:`plot_utilization`,
  :func:`plot_group_histogram` - codebook use per token and per group (the paper's Table 4 and its
  histograms), built on :func:`vqswitch.codebooks.utilization`.
- :func:`evaluate` - one JSON-serialisable summary of a set of reconstructions (bpp, PSNR, SSIM, IDS).

Images are ``(B, C, H, W)`` floating-point tensors (any float dtype; the math runs in float64)
with values in ``[lo, lo + data_range]``, e.g. ``[0, 1]`` with ``data_range=1`` or ``[-1, 1]``
with ``data_range=2``. Bad input raises ``TypeError`` (wrong type or dtype) or ``ValueError``
(wrong shape or value), naming the argument. matplotlib is optional and imported only by the
plotting functions.
"""
from __future__ import annotations

import importlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._io import atomic_path
from .bits import bpp as _bpp
from .codebooks import Utilization, utilization

__all__ = [
    "psnr", "ssim", "identity_similarity", "VerificationResult", "verification_accuracy", "read_pairs",
    "PairLine", "parse_pairs", "resolve_pair_image", "pair_verification", "IdentityMetrics", "identity_metrics",
    "group_histogram", "utilization_table", "evaluate", "plot_utilization", "plot_group_histogram",
]

_REDUCTIONS = ("mean", "none")
#: Images per internal chunk: bounds the float64 temporaries of psnr / ssim.
_CHUNK = 16


# ---------------------------------------------------------------------------------- validation
def _check_images(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (B, C, H, W), got dtype {x.dtype}; "
                        f"convert integer images with e.g. {name}.float() and pass the matching data_range")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
    if min(x.shape) < 1:
        raise ValueError(f"{name} must have no empty dimension, got shape {tuple(x.shape)}")
    return x


def _check_image_pair(x, y, xname: str = "x", yname: str = "y") -> None:
    _check_images(xname, x)
    _check_images(yname, y)
    if x.shape != y.shape:
        raise ValueError(f"{xname} and {yname} must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"{xname} and {yname} must be on the same device, got {x.device} and {y.device}")
    for name, t in ((xname, x), (yname, y)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf values")


def _check_positive_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_reduction(reduction) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return reduction


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    return values.mean() if reduction == "mean" else values


# ---------------------------------------------------------------------------------- PSNR / SSIM
def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: ``10 * log10(data_range**2 / MSE)``.

    Args:
        x, y: (B, C, H, W) float tensors of the same shape and device (any float dtype), values in
            ``[lo, lo + data_range]``. Symmetric in x and y.
        data_range: the span of the pixel values (1 for [0, 1], 2 for [-1, 1], 255 for [0, 255]).
        reduction: ``"none"`` -> (B,) per-image PSNR; ``"mean"`` -> 0-dim mean of the per-image
            PSNRs (not the PSNR of the pooled MSE, which weights bad images less).
    Returns:
        float64 tensor on the inputs' device. MSE is taken over C, H, W in float64. Identical
        images give ``+inf`` (MSE 0), and then a ``"mean"`` over the batch is ``+inf`` too.
    Raises:
        TypeError for non-tensors, non-float dtypes or a non-number data_range; ValueError for a
        shape other than (B, C, H, W), mismatched shapes or devices, NaN/Inf pixels, data_range <= 0
        or an unknown reduction.
    """
    _check_image_pair(x, y)
    L = _check_positive_real("data_range", data_range)
    _check_reduction(reduction)
    mse = torch.cat([(x[i:i + _CHUNK].double() - y[i:i + _CHUNK].double()).square().mean(dim=(1, 2, 3))
                     for i in range(0, x.shape[0], _CHUNK)])
    return _reduce(10.0 * torch.log10(L * L / mse), reduction)


def _gaussian_window(window_size: int, sigma: float, device) -> torch.Tensor:
    """(window_size,) float64 Gaussian taps centred on the middle tap, summing to 1."""
    r = torch.arange(window_size, dtype=torch.float64, device=device) - (window_size - 1) / 2
    g = torch.exp(-r.square() / (2 * sigma * sigma))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, reduction: str = "mean") -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh and Simoncelli 2004), per image.

    With a normalised ``window_size x window_size`` Gaussian window ``w`` (std ``sigma``; 11 and 1.5
    as in the paper), at every position where the window fits inside the image ('valid' region,
    no padding), per channel::

        mu_x = sum w x,  sigma_x^2 = sum w x^2 - mu_x^2,  sigma_xy = sum w x y - mu_x mu_y
        SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))

    with ``C1 = (k1 * data_range)**2`` and ``C2 = (k2 * data_range)**2``; the SSIM map is averaged
    over channels and positions. Variances are the window-weighted (biased) ones, as in Wang et
    al.'s reference code; unlike that code, images are not downsampled first.

    Args:
        x, y: (B, C, H, W) float tensors of the same shape and device, any float dtype (computed in
            float64), any number of channels (grayscale C=1, RGB C=3, ...), H and W >= window_size.
        data_range: the span of the pixel values (1 for [0, 1], 2 for [-1, 1]).
        window_size: odd int >= 1; sigma, k1, k2: numbers > 0.
        reduction: ``"none"`` -> (B,); ``"mean"`` -> 0-dim mean of the per-image values.
    Returns:
        float64 tensor on the inputs' device, each value in [-1, 1]; exactly 1 for identical
        images. Symmetric in x and y.
    Raises:
        TypeError / ValueError as :func:`psnr`, plus ValueError for images smaller than the window
        or an even/non-positive window_size.
    """
    _check_image_pair(x, y)
    L = _check_positive_real("data_range", data_range)
    ws = _check_positive_int("window_size", window_size)
    if ws % 2 == 0:
        raise ValueError(f"window_size must be odd, got {ws}")
    sigma = _check_positive_real("sigma", sigma)
    k1 = _check_positive_real("k1", k1)
    k2 = _check_positive_real("k2", k2)
    _check_reduction(reduction)
    B, C, H, W = x.shape
    if H < ws or W < ws:
        raise ValueError(f"images of {H}x{W} pixels are smaller than the {ws}x{ws} SSIM window; "
                         "use larger images or a smaller window_size")
    g = _gaussian_window(ws, sigma, x.device)
    gh, gv = g.view(1, 1, 1, ws), g.view(1, 1, ws, 1)
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    out = []
    for i in range(0, B, _CHUNK):
        a, b = x[i:i + _CHUNK].double(), y[i:i + _CHUNK].double()
        n = a.shape[0]
        maps = torch.stack([a, b, a * a, b * b, a * b], dim=1).reshape(-1, 1, H, W)  # (n*5*C, 1, H, W)
        m = F.conv2d(F.conv2d(maps, gh), gv).view(n, 5, C, H - ws + 1, W - ws + 1)
        mu_x, mu_y, e_xx, e_yy, e_xy = m.unbind(1)
        mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        num = (2 * mu_xy + c1) * (2 * (e_xy - mu_xy) + c2)
        den = (mu_xx + mu_yy + c1) * ((e_xx - mu_xx) + (e_yy - mu_yy) + c2)
        out.append((num / den).mean(dim=(1, 2, 3)))
    return _reduce(torch.cat(out), reduction)


# ---------------------------------------------------------------------------------- identity similarity
def _cosine(a: torch.Tensor, b: torch.Tensor, aname: str, bname: str) -> torch.Tensor:
    """Row-wise cosine similarity of (N, E) float64 tensors, clamped to [-1, 1]."""
    na, nb = a.norm(dim=1), b.norm(dim=1)
    for name, norm in ((aname, na), (bname, nb)):
        zero = (norm == 0).nonzero()
        if zero.numel():
            raise ValueError(f"{name} has an all-zero embedding at row {int(zero[0])}; "
                             "cosine similarity is undefined")
    return ((a / na.unsqueeze(1)) * (b / nb.unsqueeze(1))).sum(dim=1).clamp(-1.0, 1.0)


def _embed_chunk(embed: Callable, images: torch.Tensor, name: str) -> torch.Tensor:
    e = embed(images)
    if not isinstance(e, torch.Tensor):
        raise TypeError(f"embed must return a torch.Tensor (B, E), got {type(e).__name__} for {name}")
    if e.dim() != 2 or e.shape[0] != images.shape[0] or e.shape[1] < 1:
        raise ValueError(f"embed must map ({images.shape[0]}, C, H, W) images to ({images.shape[0]}, E) "
                         f"embeddings, got shape {tuple(e.shape)} for {name}")
    if not e.is_floating_point():
        raise TypeError(f"embed must return floating-point embeddings, got dtype {e.dtype} for {name}")
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"embed returned NaN or Inf embeddings for {name}")
    return e.detach().double()


def identity_similarity(x: torch.Tensor, y: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor],
                        batch_size: int = 64, reduction: str = "mean") -> torch.Tensor:
    """Identity similarity (the paper's IDS): cosine similarity of ``embed(x)`` and ``embed(y)`` per image.

    Args:
        x, y: (N, C, H, W) float images of the same shape and device (originals and
            reconstructions), in whatever range and size ``embed`` expects.
        embed: maps a (b, C, H, W) batch to (b, E) float embeddings. Pass a face-recognition network
            (e.g. an ArcFace-style model, in ``eval()`` mode, with its own resizing and
            normalisation wrapped in); any deterministic image -> vector map works. It is called
            under ``torch.no_grad()`` on at most ``batch_size`` images at a time, on x and y
            separately.
        batch_size: int >= 1, images per ``embed`` call.
        reduction: ``"none"`` -> (N,) per-image similarities; ``"mean"`` -> their 0-dim mean.
    Returns:
        float64 tensor on the embeddings' device, in [-1, 1]; 1 when embed(x) and embed(y) point the
        same way (e.g. identical images).
    Raises:
        TypeError / ValueError as :func:`psnr` for the images; TypeError if ``embed`` is not
        callable or returns a non-tensor or a non-float dtype; ValueError if it returns a shape
        other than (b, E), NaN/Inf values, or an all-zero embedding (cosine undefined).
    """
    _check_image_pair(x, y)
    if not callable(embed):
        raise TypeError(f"embed must be callable (images (B, C, H, W) -> embeddings (B, E)), got {type(embed).__name__}")
    bs = _check_positive_int("batch_size", batch_size)
    _check_reduction(reduction)
    sims = []
    with torch.no_grad():
        for i in range(0, x.shape[0], bs):
            ex = _embed_chunk(embed, x[i:i + bs], "x")
            ey = _embed_chunk(embed, y[i:i + bs], "y")
            if ex.shape != ey.shape:
                raise ValueError(f"embed gave shapes {tuple(ex.shape)} for x and {tuple(ey.shape)} for y")
            sims.append(_cosine(ex, ey.to(ex.device), "embed(x)", "embed(y)"))
    return _reduce(torch.cat(sims), reduction)


# ---------------------------------------------------------------------------------- face verification
@dataclass
class VerificationResult:
    """Face verification accuracy by k-fold cross-validation (the LFW protocol).

    ``accuracy`` is the mean of ``fold_accuracies``; ``std`` is their sample standard deviation
    (n - 1 in the denominator, as the LFW protocol defines sigma) and ``standard_error`` is
    ``std / sqrt(folds)``. ``thresholds[f]`` is the cosine-similarity threshold chosen on the other
    folds and used on fold f (a pair is "same" when its similarity >= the threshold; ``-inf`` /
    ``+inf`` mean "all same" / "all different"). ``fold_sizes[f]`` is the number of pairs in fold f.
    """

    accuracy: float
    std: float
    standard_error: float
    fold_accuracies: list
    thresholds: list
    fold_sizes: list

    def to_dict(self) -> dict:
        """JSON-serialisable copy (infinite thresholds become None)."""
        d = asdict(self)
        d["thresholds"] = [t if math.isfinite(t) else None for t in self.thresholds]
        return d


def _embedding_matrix(name: str, e) -> torch.Tensor:
    if isinstance(e, np.ndarray):
        e = torch.from_numpy(e)
    if not isinstance(e, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, E), got {type(e).__name__}")
    if not e.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {e.dtype}")
    if e.dim() != 2 or e.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, E) with E >= 1, got {tuple(e.shape)}")
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return e.detach().double().cpu()


def _fold_bounds(n: int, folds: int) -> list[int]:
    """Contiguous folds; the first ``n % folds`` folds hold one pair more."""
    base, extra = divmod(n, folds)
    bounds = [0]
    for f in range(folds):
        bounds.append(bounds[-1] + base + (1 if f < extra else 0))
    return bounds


def _best_threshold(s: np.ndarray, y: np.ndarray, grid: np.ndarray | None) -> float:
    """The threshold with the most correct ``(s >= t) == y`` on (s, y); ties go to the lowest one."""
    n = s.shape[0]
    if grid is None:
        order = np.argsort(s, kind="stable")
        ss, yy = s[order], y[order]
        # split i: predict "same" for ss[i:]; correct = different pairs below + same pairs at/above
        diff_below = np.concatenate([[0], np.cumsum(~yy)])
        same_below = np.concatenate([[0], np.cumsum(yy)])
        correct = diff_below + (same_below[-1] - same_below)
        valid = np.ones(n + 1, dtype=bool)
        valid[1:n] = ss[1:] > ss[:-1]  # a split between equal similarities is no threshold
        i = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
        if i == 0:
            return -math.inf
        if i == n:
            return math.inf
        lo, hi = float(ss[i - 1]), float(ss[i])
        t = lo + (hi - lo) / 2
        return t if t > lo else hi  # adjacent doubles: the midpoint rounds onto lo
    diff_sorted, same_sorted = np.sort(s[~y]), np.sort(s[y])
    correct = np.searchsorted(diff_sorted, grid, side="left") + (
        same_sorted.shape[0] - np.searchsorted(same_sorted, grid, side="left"))
    return float(grid[int(np.argmax(correct))])


def verification_accuracy(emb1, emb2, same, folds: int = 10, thresholds: Sequence[float] | None = None
                          ) -> VerificationResult:
    """Face verification accuracy with the LFW k-fold protocol.

    Each pair's score is the cosine similarity of ``emb1[i]`` and ``emb2[i]``; a pair is predicted
    "same person" when its score >= a threshold. The N pairs are split, in the given order, into
    ``folds`` contiguous folds (as LFW's pairs.txt is organised: pass its pairs in file order with
    ``folds`` = its number of sets). When N is not a multiple of ``folds`` the first ``N % folds``
    folds hold one pair more. For each fold, the threshold that maximises accuracy on the other
    folds is chosen and the accuracy on the held-out fold is reported.

    Threshold search: with ``thresholds=None`` the candidates are every split of the training
    scores: the midpoints between consecutive distinct training scores, plus ``-inf`` (all same) and
    ``+inf`` (all different), so the exact maximum of training accuracy is found. With a sequence of
    thresholds (a grid, e.g. ``np.arange(-1, 1, 0.001)``) only those are tried. Ties go to the
    lowest threshold in both cases.

    Args:
        emb1, emb2: (N, E) float embeddings (torch tensors or numpy arrays) of the two images of
            each pair; need not be normalised.
        same: (N,) bool, True where the pair shows the same person (tensor, array or list).
        folds: int, 2 <= folds <= N.
        thresholds: optional 1-D sequence of finite floats.
    Returns:
        :class:`VerificationResult`.
    Raises:
        TypeError for wrong types (non-bool ``same``, non-float embeddings); ValueError for shape
        mismatches, non-finite values, an all-zero embedding, or ``folds`` outside [2, N].
    """
    e1 = _embedding_matrix("emb1", emb1)
    e2 = _embedding_matrix("emb2", emb2)
    if e1.shape != e2.shape:
        raise ValueError(f"emb1 and emb2 must have the same shape (N, E), got {tuple(e1.shape)} and {tuple(e2.shape)}")
    n = e1.shape[0]
    if isinstance(same, np.ndarray):
        same = torch.from_numpy(same)
    elif not isinstance(same, torch.Tensor):
        if not isinstance(same, (list, tuple)) or not all(isinstance(v, (bool, np.bool_)) for v in same):
            raise TypeError("same must be a bool tensor, bool array or list of bools of shape (N,)")
        same = torch.tensor([bool(v) for v in same], dtype=torch.bool)
    if same.dtype != torch.bool:
        raise TypeError(f"same must have dtype bool (True = same person), got {same.dtype}")
    if same.shape != (n,):
        raise ValueError(f"same must have shape (N,) = ({n},) to match the embeddings, got {tuple(same.shape)}")
    if isinstance(folds, bool) or not isinstance(folds, int):
        raise TypeError(f"folds must be an int, got {type(folds).__name__}")
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the number of pairs N={n}, got {folds}")
    grid = None
    if thresholds is not None:
        try:
            grid = np.asarray(thresholds, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"thresholds must be a 1-D sequence of numbers: {err}") from None
        if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all():
            raise ValueError(f"thresholds must be a non-empty 1-D sequence of finite numbers, got shape {grid.shape}")
        grid = np.unique(grid)  # sorted, so argmax's first maximum is the lowest threshold
    scores = _cosine(e1, e2, "emb1", "emb2").numpy()
    labels = same.cpu().numpy().astype(bool)
    bounds = _fold_bounds(n, folds)
    accs, chosen, sizes = [], [], []
    for f in range(folds):
        test = np.zeros(n, dtype=bool)
        test[bounds[f]:bounds[f + 1]] = True
        t = _best_threshold(scores[~test], labels[~test], grid)
        size = int(test.sum())
        accs.append(int(((scores[test] >= t) == labels[test]).sum()) / size)
        chosen.append(t)
        sizes.append(size)
    std = float(np.std(accs, ddof=1))
    return VerificationResult(accuracy=float(np.mean(accs)), std=std, standard_error=std / math.sqrt(folds),
                              fold_accuracies=accs, thresholds=chosen, fold_sizes=sizes)


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
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    if index < 1:
        raise ValueError(f"index must be >= 1 (pairs files count from 1), got {index}")
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
    if not isinstance(resolve, bool):
        raise TypeError(f"resolve must be a bool, got {type(resolve).__name__}")
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


# ---------------------------------------------------------------------------------- identity metrics
@dataclass
class IdentityMetrics:
    """The paper's two identity measures of a set of reconstructions, from face embeddings.

    ``ids`` / ``ids_std``: mean and sample standard deviation (n - 1; 0 for one image) of the
    per-image cosine similarity between the embedding of each original and of its reconstruction
    (IDS). ``accuracy`` / ``accuracy_std``: face-verification accuracy on the pair list with both
    images of every pair reconstructed, mean and sample standard deviation over the folds
    (``verification`` holds the whole :class:`VerificationResult`). ``images`` and ``pairs`` count
    what was measured.
    """

    ids: float
    ids_std: float
    accuracy: float
    accuracy_std: float
    images: int
    pairs: int
    verification: VerificationResult

    def to_dict(self) -> dict:
        """JSON-serialisable copy."""
        d = asdict(self)
        d["verification"] = self.verification.to_dict()
        return d


def _check_pairs(pairs, same, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(pairs, np.ndarray):
        pairs = torch.from_numpy(pairs)
    if not isinstance(pairs, torch.Tensor):
        raise TypeError(f"pairs must be an int64 tensor or integer array of shape (P, 2), got {type(pairs).__name__}")
    if pairs.is_floating_point() or pairs.is_complex() or pairs.dtype == torch.bool:
        raise TypeError(f"pairs must hold integer image indices, got dtype {pairs.dtype}")
    if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.shape[0] < 1:
        raise ValueError(f"pairs must have shape (P, 2) with P >= 1, got {tuple(pairs.shape)}")
    pairs = pairs.detach().cpu().long()
    if bool(((pairs < 0) | (pairs >= n_images)).any()):
        raise ValueError(f"pairs must index images in [0, {n_images}), got values in "
                         f"[{int(pairs.min())}, {int(pairs.max())}]")
    if isinstance(same, np.ndarray):
        same = torch.from_numpy(same)
    if not isinstance(same, torch.Tensor) or same.dtype != torch.bool:
        raise TypeError("same must be a bool tensor or array of shape (P,)")
    if same.shape != (pairs.shape[0],):
        raise ValueError(f"same must have shape (P,) = ({pairs.shape[0]},), got {tuple(same.shape)}")
    return pairs, same.detach().cpu()


def pair_verification(embeddings, pairs, same, folds: int = 10,
                      thresholds: Sequence[float] | None = None) -> VerificationResult:
    """Face-verification accuracy of a pair list over one set of image embeddings.

    Args:
        embeddings: (N, E) float embeddings of N images (torch tensor or numpy array).
        pairs: (P, 2) integer image indices into ``embeddings``, in fold order (see
            :func:`vqswitch.data.draw_pairs`).
        same: (P,) bool, True where the pair shows one person.
        folds, thresholds: as :func:`verification_accuracy` (contiguous folds of ``pairs``).
    Returns:
        :class:`VerificationResult`.
    Raises:
        TypeError / ValueError naming the argument for wrong types, shapes or out-of-range indices,
        and as :func:`verification_accuracy`.
    """
    e = _embedding_matrix("embeddings", embeddings)
    pairs, same = _check_pairs(pairs, same, e.shape[0])
    return verification_accuracy(e[pairs[:, 0]], e[pairs[:, 1]], same, folds=folds, thresholds=thresholds)


def identity_metrics(originals, reconstructions, pairs, same, folds: int = 10,
                     thresholds: Sequence[float] | None = None) -> IdentityMetrics:
    """IDS and face-verification accuracy of reconstructions, from embeddings (embed the originals once, reuse).

    Args:
        originals: (N, E) float embeddings of the original images (tensor or array).
        reconstructions: (N, E) float embeddings of their reconstructions, row i of image i. Pass
            ``originals`` again to measure the originals' own verification accuracy (the ceiling;
            IDS is then 1).
        pairs: (P, 2) integer indices into the N images; both images of every pair are taken from
            ``reconstructions``.
        same: (P,) bool; folds, thresholds: as :func:`verification_accuracy`.
    Returns:
        :class:`IdentityMetrics`.
    Raises:
        TypeError / ValueError naming the argument for wrong types or shapes, mismatched N or E,
        NaN/Inf or all-zero embeddings, and as :func:`pair_verification`.
    """
    a = _embedding_matrix("originals", originals)
    b = _embedding_matrix("reconstructions", reconstructions)
    if a.shape != b.shape:
        raise ValueError(f"originals and reconstructions must have the same shape (N, E), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    sims = _cosine(a, b, "originals", "reconstructions")
    ver = pair_verification(b, pairs, same, folds=folds, thresholds=thresholds)
    n = sims.shape[0]
    return IdentityMetrics(ids=float(sims.mean()), ids_std=float(sims.std(unbiased=True)) if n > 1 else 0.0,
                           accuracy=ver.accuracy, accuracy_std=ver.std, images=n, pairs=sum(ver.fold_sizes),
                           verification=ver)


# ---------------------------------------------------------------------------------- codebook use
def _check_group_counts(group_counts) -> torch.Tensor:
    if not isinstance(group_counts, torch.Tensor):
        raise TypeError(f"group_counts must be a torch.Tensor of shape (M,), got {type(group_counts).__name__}")
    if group_counts.is_floating_point() or group_counts.is_complex() or group_counts.dtype == torch.bool:
        raise TypeError(f"group_counts must be an integer tensor, got dtype {group_counts.dtype}")
    if group_counts.dim() != 1 or group_counts.shape[0] < 1:
        raise ValueError(f"group_counts must have shape (M,) with M >= 1, got {tuple(group_counts.shape)}")
    if bool((group_counts < 0).any()):
        raise ValueError("group_counts must be non-negative")
    return group_counts.detach().cpu()


def group_histogram(group_counts: torch.Tensor) -> torch.Tensor:
    """Fraction of images that chose each group.

    Args:
        group_counts: (M,) non-negative integer images per group (``quantizer.group_counts`` or
            ``Utilization.group_counts``).
    Returns:
        (M,) float64 CPU tensor summing to 1.
    Raises:
        TypeError for a non-integer tensor; ValueError for a wrong shape, negative counts or no
        images at all (the fractions are undefined).
    """
    counts = _check_group_counts(group_counts)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("group_counts are all zero: no image was counted, so there is no histogram")
    return counts.double() / total


def _stats(values: torch.Tensor) -> dict:
    """min/max/mean/std (population, as :func:`vqswitch.codebooks.utilization`) or all None if empty."""
    if values.numel() == 0:
        return {"min": None, "max": None, "mean": None, "std": None}
    v = values.double()
    return {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
            "std": float(v.std(unbiased=False))}


def _none_if_nan(v: float):
    return None if math.isnan(v) else float(v)


def utilization_table(util: Utilization) -> dict:
    """The paper's Table 4 as a JSON-serialisable dict, overall, per group and per token.

    Args:
        util: a :class:`vqswitch.codebooks.Utilization` (``quantizer.utilization()`` or
            :func:`vqswitch.codebooks.utilization`); ``per_codebook`` is (M, T') with NaN for
            codebooks that saw no data.
    Returns:
        ``{"overall": {min, max, mean, std}, "codebooks": M*T', "codebooks_seen": n,
        "groups": [{"group", "images", "image_fraction", "codebooks_seen", min, max, mean, std}] * M,
        "tokens": [{"token", "codebooks_seen", min, max, mean, std}] * T'}``: each min/max/mean/std
        is over the fraction of codes used in the codebooks that saw data (population std), and
        None where no codebook saw data (JSON has no NaN); ``image_fraction`` is None when no image
        was counted. T' is 1 for token-shared codebooks.
    Raises:
        TypeError for anything but a Utilization; ValueError for an inconsistent one.
    """
    if not isinstance(util, Utilization):
        raise TypeError(f"util must be a vqswitch.codebooks.Utilization, got {type(util).__name__}")
    rates = util.per_codebook
    if not isinstance(rates, torch.Tensor) or rates.dim() != 2:
        raise ValueError("util.per_codebook must be an (M, T') tensor")
    counts = _check_group_counts(util.group_counts)
    M, Tp = rates.shape
    if counts.shape[0] != M:
        raise ValueError(f"util.group_counts has {counts.shape[0]} groups but util.per_codebook has {M}")
    rates = rates.detach().cpu().double()
    seen = ~torch.isnan(rates)
    total = int(counts.sum())
    groups = []
    for g in range(M):
        groups.append({"group": g, "images": int(counts[g]),
                       "image_fraction": int(counts[g]) / total if total else None,
                       "codebooks_seen": int(seen[g].sum()), **_stats(rates[g][seen[g]])})
    tokens = [{"token": t, "codebooks_seen": int(seen[:, t].sum()), **_stats(rates[:, t][seen[:, t]])}
              for t in range(Tp)]
    overall = {k: _none_if_nan(getattr(util, k)) for k in ("min", "max", "mean", "std")}
    return {"overall": overall, "codebooks": M * Tp, "codebooks_seen": int(seen.sum()),
            "groups": groups, "tokens": tokens}


# ---------------------------------------------------------------------------------- summary
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
    _check_image_pair(originals, reconstructions, "originals", "reconstructions")
    B, _, H, W = originals.shape
    rate = _bpp(bits_per_image, H, W)
    p = psnr(originals, reconstructions, data_range, reduction="none")
    exact = int(torch.isinf(p).sum())
    out = {"images": B, "height": H, "width": W, "bits_per_image": bits_per_image, "bpp": rate,
           "psnr": None if exact else float(p.mean()), "psnr_exact_images": exact,
           "ssim": float(ssim(originals, reconstructions, data_range, reduction="mean"))}
    if embed is not None:
        out["ids"] = float(identity_similarity(originals, reconstructions, embed, batch_size=batch_size))
    if util is not None:
        out["utilization"] = utilization_table(util)
    return out


# ---------------------------------------------------------------------------------- plots
def _figure_class():
    """matplotlib's Figure, imported on first use (no pyplot, no global backend change)."""
    try:
        return importlib.import_module("matplotlib.figure").Figure
    except ImportError as err:
        raise ImportError("vqswitch's plots need matplotlib, which is not installed: pip install matplotlib") from err


def _integer_ticks(n: int) -> np.ndarray:
    """At most about 16 integer tick positions in [0, n)."""
    return np.arange(0, n, max(1, math.ceil(n / 16)))


def _save_png(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_utilization(usage, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Heat map of the fraction of codes used per (group, token) codebook, saved as a PNG.

    Args:
        usage: (M, T', K) integer code counts (``quantizer.usage``) or a :class:`Utilization`.
        path: the PNG file, written atomically (the old file stays whole on failure).
        title: optional plot title.
    Returns:
        ``Path(path)``. Rows are groups, columns tokens; codebooks that saw no data are blank.
    Raises:
        ImportError (telling you to ``pip install matplotlib``) without matplotlib; TypeError /
        ValueError for a wrong ``usage``.
    """
    if isinstance(usage, Utilization):
        rates = usage.per_codebook
    elif isinstance(usage, torch.Tensor):
        if usage.is_floating_point() or usage.is_complex() or usage.dtype == torch.bool:
            raise TypeError(f"usage must be an integer tensor of code counts, got dtype {usage.dtype}")
        if usage.dim() != 3 or min(usage.shape) < 1:
            raise ValueError(f"usage must have shape (M, T', K), got {tuple(usage.shape)}")
        rates = utilization(usage.detach().cpu(), torch.zeros(usage.shape[0], dtype=torch.long)).per_codebook
    else:
        raise TypeError(f"usage must be an (M, T', K) tensor or a Utilization, got {type(usage).__name__}")
    data = np.ma.masked_invalid(rates.detach().cpu().double().numpy())
    Figure = _figure_class()
    M, Tp = data.shape
    fig = Figure(figsize=(min(16.0, 3.0 + 0.08 * Tp), min(12.0, 2.0 + 0.25 * M)))
    ax = fig.add_subplot()
    im = ax.imshow(data, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(_integer_ticks(Tp))
    ax.set_yticks(_integer_ticks(M))
    ax.set_xlabel("token")
    ax.set_ylabel("group")
    ax.set_title(title or "fraction of codes used per codebook")
    fig.colorbar(im, ax=ax, label="fraction used")
    return _save_png(fig, path)


def plot_group_histogram(group_counts: torch.Tensor, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Bar chart of the fraction of images per group (:func:`group_histogram`), saved as a PNG.

    Args:
        group_counts: (M,) non-negative integer images per group, not all zero.
        path: the PNG file, written atomically.
        title: optional plot title.
    Returns:
        ``Path(path)``.
    Raises:
        ImportError (telling you to ``pip install matplotlib``) without matplotlib; as
        :func:`group_histogram` for a wrong ``group_counts``.
    """
    frac = group_histogram(group_counts).numpy()
    Figure = _figure_class()
    fig = Figure(figsize=(min(16.0, 3.0 + 0.25 * frac.shape[0]), 3.5))
    ax = fig.add_subplot()
    ax.bar(np.arange(frac.shape[0]), frac, width=1.0 if frac.shape[0] > 64 else 0.8)
    ax.set_xticks(_integer_ticks(frac.shape[0]))
    ax.set_xlabel("group")
    ax.set_ylabel("fraction of images")
    ax.set_title(title or "images per codebook group")
    return _save_png(fig, path)

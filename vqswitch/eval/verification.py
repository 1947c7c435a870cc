"""Identity measures from face embeddings: the paper's IDS and face verification with the LFW k-fold protocol.

- :func:`identity_similarity`: IDS of two image sets, with a pluggable embedding model.
- :func:`verification_accuracy`: k-fold face verification of embedding pairs (:class:`VerificationResult`);
  :func:`pair_verification` for one embedding set and an index pair list.
- :func:`identity_metrics`: IDS and verification accuracy of reconstructions from precomputed embeddings
  (:class:`IdentityMetrics`).

The pair lists come from :mod:`vqswitch.data` (:func:`~vqswitch.data.draw_pairs`, :func:`~vqswitch.data.read_pairs`,
:func:`~vqswitch.data.load_face_folder`); a real embedder is :class:`vqswitch.eval.identity.DlibFaceEmbedder`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .._checks import check_choice, check_float_tensor, check_image_pair, check_int, check_int_tensor
from ._common import REDUCTIONS, apply_reduction

__all__ = ["identity_similarity", "VerificationResult", "verification_accuracy", "IdentityMetrics",
           "pair_verification", "identity_metrics"]


def _cosine(a: torch.Tensor, b: torch.Tensor, aname: str, bname: str) -> torch.Tensor:
    """Row-wise cosine similarity of (N, E) float64 tensors, clamped to [-1, 1]."""
    na, nb = a.norm(dim=1), b.norm(dim=1)
    for name, norm in ((aname, na), (bname, nb)):
        zero = (norm == 0).nonzero()
        if zero.numel():
            raise ValueError(f"{name} has an all-zero embedding at row {int(zero[0])}; "
                             "cosine similarity is undefined")
    return ((a / na.unsqueeze(1)) * (b / nb.unsqueeze(1))).sum(dim=1).clamp(-1.0, 1.0)


def check_embedder(embed) -> Callable:
    """``embed`` if it is callable (an embedding model: images (B, C, H, W) -> embeddings (B, E)); else TypeError."""
    if not callable(embed):
        raise TypeError(f"embed must be callable (images (B, C, H, W) -> embeddings (B, E)), "
                        f"got {type(embed).__name__}")
    return embed


def call_embedder(embed: Callable, images: torch.Tensor, what: str | None = None) -> torch.Tensor:
    """``embed(images)``, checked: a finite floating-point (b, E) tensor for b images, E >= 1, detached (same dtype
    and device). Errors end with "for ``what``" when it is given (the argument the images came from).

    Raises:
        TypeError: ``embed`` returned something other than a tensor, or a tensor that is not floating point.
        ValueError: a shape other than (b, E), or NaN/Inf values.
    """
    e = embed(images)
    b = images.shape[0]
    where = f" for {what}" if what else ""
    if not isinstance(e, torch.Tensor):
        raise TypeError(f"embed must return a torch.Tensor (B, E), got {type(e).__name__}{where}")
    if e.dim() != 2 or e.shape[0] != b or e.shape[1] < 1:
        raise ValueError(f"embed must map ({b}, C, H, W) images to ({b}, E) embeddings, got shape "
                         f"{tuple(e.shape)}{where}")
    if not e.is_floating_point():
        raise TypeError(f"embed must return floating-point embeddings, got dtype {e.dtype}{where}")
    if not bool(torch.isfinite(e).all()):
        raise ValueError(f"embed returned NaN or Inf embeddings{where}")
    return e.detach()


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
    check_image_pair("x", x, "y", y)
    check_embedder(embed)
    bs = check_int("batch_size", batch_size, 1)
    check_choice("reduction", reduction, REDUCTIONS)
    return apply_reduction(identity_similarity_unchecked(x, y, embed, bs), reduction)


def identity_similarity_unchecked(x: torch.Tensor, y: torch.Tensor, embed: Callable, batch_size: int
                                  ) -> torch.Tensor:
    """:func:`identity_similarity` with ``reduction="none"`` of arguments the caller has checked as it does (the
    embeddings are still checked: they are made here)."""
    sims = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            ex = call_embedder(embed, x[i:i + batch_size], "x").double()
            ey = call_embedder(embed, y[i:i + batch_size], "y").double()
            if ex.shape != ey.shape:
                raise ValueError(f"embed gave shapes {tuple(ex.shape)} for x and {tuple(ey.shape)} for y")
            sims.append(_cosine(ex, ey.to(ex.device), "embed(x)", "embed(y)"))
    return torch.cat(sims)


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
    check_float_tensor(name, e)
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
    labels = _check_same(same, n, "N")
    return _verify(e1, e2, labels, _check_folds(folds, n), _check_thresholds(thresholds))


def _check_same(same, n: int, symbol: str) -> np.ndarray:
    """``same`` (a bool tensor, array or list of bools, one per pair) as an (n,) bool array; ``symbol`` names n."""
    if isinstance(same, np.ndarray):
        same = torch.from_numpy(same)
    elif not isinstance(same, torch.Tensor):
        if not isinstance(same, (list, tuple)) or not all(isinstance(v, (bool, np.bool_)) for v in same):
            raise TypeError(f"same must be a bool tensor, bool array or list of bools of shape ({symbol},)")
        same = torch.tensor([bool(v) for v in same], dtype=torch.bool)
    if same.dtype != torch.bool:
        raise TypeError(f"same must have dtype bool (True = same person), got {same.dtype}")
    if same.shape != (n,):
        raise ValueError(f"same must have shape ({symbol},) = ({n},), one per pair, got {tuple(same.shape)}")
    return same.detach().cpu().numpy().astype(bool)


def _check_folds(folds, n: int) -> int:
    folds = check_int("folds", folds)
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the number of pairs N={n}, got {folds}")
    return folds


def _check_thresholds(thresholds) -> np.ndarray | None:
    """``thresholds`` as a sorted float64 grid without repeats (None stays None)."""
    if thresholds is None:
        return None
    try:
        grid = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"thresholds must be a 1-D sequence of numbers: {err}") from None
    if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all():
        raise ValueError(f"thresholds must be a non-empty 1-D sequence of finite numbers, got shape {grid.shape}")
    return np.unique(grid)  # sorted, so argmax's first maximum is the lowest threshold


def _verify(e1: torch.Tensor, e2: torch.Tensor, labels: np.ndarray, folds: int,
            grid: np.ndarray | None) -> VerificationResult:
    """:func:`verification_accuracy` of checked arguments: (N, E) float64 CPU embeddings, (N,) bool labels."""
    n = e1.shape[0]
    scores = _cosine(e1, e2, "emb1", "emb2").numpy()
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


def _check_pairs(pairs, n_images: int) -> torch.Tensor:
    """``pairs`` (an integer tensor or array (P, 2), P >= 1, of indices into n_images images) as int64 on the CPU."""
    if isinstance(pairs, np.ndarray):
        pairs = torch.from_numpy(pairs)
    if not isinstance(pairs, torch.Tensor):
        raise TypeError(f"pairs must be an int64 tensor or integer array of shape (P, 2), got {type(pairs).__name__}")
    check_int_tensor("pairs", pairs)
    if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.shape[0] < 1:
        raise ValueError(f"pairs must have shape (P, 2) with P >= 1, got {tuple(pairs.shape)}")
    pairs = pairs.detach().cpu().long()
    if bool(((pairs < 0) | (pairs >= n_images)).any()):
        raise ValueError(f"pairs must index images in [0, {n_images}), got values in "
                         f"[{int(pairs.min())}, {int(pairs.max())}]")
    return pairs


def _pair_verification(e: torch.Tensor, pairs, same, folds, thresholds) -> VerificationResult:
    """:func:`pair_verification` of checked (N, E) float64 CPU embeddings ``e`` (the other arguments unchecked)."""
    pairs = _check_pairs(pairs, e.shape[0])
    p = pairs.shape[0]
    labels = _check_same(same, p, "P")
    return _verify(e[pairs[:, 0]], e[pairs[:, 1]], labels, _check_folds(folds, p), _check_thresholds(thresholds))


def pair_verification(embeddings, pairs, same, folds: int = 10,
                      thresholds: Sequence[float] | None = None) -> VerificationResult:
    """Face-verification accuracy of a pair list over one set of image embeddings.

    Args:
        embeddings: (N, E) float embeddings of N images (torch tensor or numpy array).
        pairs: (P, 2) integer image indices into ``embeddings``, in fold order (see
            :func:`vqswitch.data.draw_pairs`).
        same: (P,) bool, True where the pair shows one person (tensor, array or list).
        folds, thresholds: as :func:`verification_accuracy` (contiguous folds of ``pairs``).
    Returns:
        :class:`VerificationResult`.
    Raises:
        TypeError / ValueError naming the argument for wrong types, shapes or out-of-range indices,
        and as :func:`verification_accuracy`.
    """
    return _pair_verification(_embedding_matrix("embeddings", embeddings), pairs, same, folds, thresholds)


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
    ver = _pair_verification(b, pairs, same, folds, thresholds)
    n = sims.shape[0]
    return IdentityMetrics(ids=float(sims.mean()), ids_std=float(sims.std(unbiased=True)) if n > 1 else 0.0,
                           accuracy=ver.accuracy, accuracy_std=ver.std, images=n, pairs=sum(ver.fold_sizes),
                           verification=ver)

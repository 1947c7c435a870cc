"""Evaluation of tokenizer reconstructions (tensors in, plain numbers out; no nn.Modules): one job per module.

- :mod:`~vqswitch.eval.image_quality`: :func:`psnr` and :func:`ssim` (Wang et al. 2004), per image.
- :mod:`~vqswitch.eval.verification`: the paper's IDS (:func:`identity_similarity`), face verification with the
  LFW k-fold protocol (:func:`verification_accuracy`, :func:`pair_verification`) and both from precomputed
  embeddings (:func:`identity_metrics`).
- :mod:`~vqswitch.eval.identity`: a real face-embedding model, dlib's descriptor (:class:`DlibFaceEmbedder`, the
  optional ``[faces]`` extra, imported lazily) and :func:`embed_images` (batched, progress bar).
- :mod:`~vqswitch.eval.utilization`: codebook use per token and per group (:func:`utilization_table`, the paper's
  Table 4; :func:`group_histogram`).
- :mod:`~vqswitch.eval.plots`: :func:`plot_utilization`, :func:`plot_group_histogram` (matplotlib, imported only
  when a plot is drawn).
- :mod:`~vqswitch.eval.summary`: :func:`evaluate`, one JSON-serialisable summary (bpp, PSNR, SSIM, IDS, use).

Pairs files are data: :func:`read_pairs`, :func:`parse_pairs`, :func:`resolve_pair_image` and :class:`PairLine`
live in :mod:`vqswitch.data.pairs` and are re-exported here (and by the old path ``vqswitch.metrics``).

Images are ``(B, C, H, W)`` floating-point tensors (any float dtype; the math runs in float64) with values in
``[lo, lo + data_range]``, e.g. ``[0, 1]`` with ``data_range=1`` or ``[-1, 1]`` with ``data_range=2``. Bad input
raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape or value), naming the argument.
"""
from ..data.pairs import PairLine, parse_pairs, read_pairs, resolve_pair_image
from .identity import DLIB_INPUT_SIZE, EMBEDDING_DIM, FACES_EXTRA_HINT, DlibFaceEmbedder, embed_images
from .image_quality import psnr, ssim
from .plots import plot_group_histogram, plot_utilization
from .summary import evaluate
from .utilization import group_histogram, utilization_table
from .verification import (IdentityMetrics, VerificationResult, identity_metrics, identity_similarity,
                           pair_verification, verification_accuracy)

__all__ = [
    "psnr", "ssim", "identity_similarity", "VerificationResult", "verification_accuracy", "read_pairs",
    "PairLine", "parse_pairs", "resolve_pair_image", "pair_verification", "IdentityMetrics", "identity_metrics",
    "group_histogram", "utilization_table", "evaluate", "plot_utilization", "plot_group_histogram",
    "DlibFaceEmbedder", "embed_images", "EMBEDDING_DIM", "DLIB_INPUT_SIZE", "FACES_EXTRA_HINT",
]

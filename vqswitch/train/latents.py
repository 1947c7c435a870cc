"""A memory-mapped cache of encoder tokens, so that fine-tuning stages 1 and 2 run without the encoder.

Stages 1 and 2 train only the quantizer on the (frozen) encoder's tokens z (N, T, D). Encoding the
training set once and reading z from a ``.npy`` memory map makes every later epoch cost a read
instead of an encoder pass. The file is written under a temporary name and renamed when complete
(:func:`vqswitch._io.atomic_path`), and a small JSON beside it records what it holds (a key naming the
model and the data, e.g. :func:`model_digest` of every frozen weight), so an interrupted or foreign
cache is rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vqswitch._checks import check_int
from vqswitch._io import atomic_path, atomic_write_json, read_json_object

__all__ = ["LatentCache", "model_digest"]


def model_digest(model: nn.Module, exclude: Iterable[nn.Module] = ()) -> str:
    """An exact fingerprint of ``model``'s weights: the SHA-256 (hex) of the name, kind, dtype, shape and bytes of
    every parameter and buffer of ``model`` (persistent or not), in ``named_parameters`` / ``named_buffers`` order,
    leaving out the tensors of the ``exclude`` modules (e.g. those fine-tuning trains).

    Any change to any byte of a tensor that is hashed changes the digest; the device the tensors are on does not
    (each is copied to the CPU to be read). Raises RuntimeError for tensors without data ('meta').
    """
    skip = {id(t) for m in exclude for t in itertools.chain(m.parameters(), m.buffers())}
    h = hashlib.sha256()
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if id(t) in skip:
                continue
            t = t.detach()
            h.update(f"{kind} {name} {t.dtype} {tuple(t.shape)}\n".encode())
            h.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class LatentCache:
    """Encoder tokens of a data set, in ``<path>.npy`` (float32, (N, T, D)) + ``<path>.json``.

    Use :meth:`build` to create (or reuse a matching) cache, :meth:`batch` to read rows.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.array = np.load(self.npy, mmap_mode="r")

    @property
    def npy(self) -> Path:
        return self.path.with_suffix(".npy")

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    def batch(self, indices) -> torch.Tensor:
        """Rows ``indices`` (1-D ints) -> (len(indices), T, D) float32 tensor (a copy)."""
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(self.array[idx]))

    @classmethod
    def build(cls, path: str | os.PathLike, encode, num_items: int, batch_items, *, key: dict,
              batch_size: int = 32, progress: bool = True) -> LatentCache:
        """Encode ``num_items`` items into a cache at ``path`` (or reuse one built with the same ``key``).

        Args:
            encode: images (B, C, H, W) -> tokens (B, T, D); called under ``torch.no_grad()``.
            batch_items: indices (list of ints) -> images (B, C, H, W).
            key: JSON-serialisable description of what is encoded (model and data identity);
                a cache whose recorded key differs is rebuilt.
        Raises TypeError for a num_items or batch_size that is not an int, ValueError for one < 1.
        """
        num_items = check_int("num_items", num_items, minimum=1)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        path = Path(path)
        meta_file, npy = path.with_suffix(".json"), path.with_suffix(".npy")
        meta = {"key": key, "num_items": num_items}
        cache = cls._matching(path, meta)
        if cache is not None:
            return cache
        from tqdm.auto import tqdm

        with atomic_path(npy) as tmp, torch.no_grad():
            out = None
            starts = range(0, num_items, batch_size)
            for start in tqdm(starts, desc="caching latents", disable=not progress, leave=False):
                idx = list(range(start, min(start + batch_size, num_items)))
                z = encode(batch_items(idx)).detach().float().cpu().numpy()
                if out is None:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(num_items,) + z.shape[1:])
                out[idx[0]:idx[-1] + 1] = z
            out.flush()
            del out
        atomic_write_json(meta_file, meta, indent=None, sort_keys=True)
        return cls(path)

    @classmethod
    def _matching(cls, path: Path, meta: dict) -> LatentCache | None:
        """The cache at ``path`` when its recorded ``meta`` equals ``meta`` (as JSON) and its rows are all there."""
        meta_file, npy = path.with_suffix(".json"), path.with_suffix(".npy")
        if not (meta_file.is_file() and npy.is_file()):
            return None
        try:
            if read_json_object(meta_file, "latent cache description") != json.loads(json.dumps(meta)):
                return None
            cache = cls(path)
        except (ValueError, OSError):
            return None  # unreadable or mismatched: rebuilt
        return cache if len(cache) == meta["num_items"] else None


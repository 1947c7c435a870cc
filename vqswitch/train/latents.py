"""A memory-mapped cache of encoder tokens, so that fine-tuning stages 1 and 2 run without the encoder.

Stages 1 and 2 train only the quantizer on the (frozen) encoder's tokens z (N, T, D). Encoding the
training set once and reading z from a ``.npy`` memory map makes every later epoch cost a read
instead of an encoder pass. The file is written under a temporary name and renamed when complete,
and a small JSON beside it records what it holds, so an interrupted or foreign cache is rebuilt,
never used.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from vqswitch._io import atomic_write_bytes

__all__ = ["LatentCache"]


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
              batch_size: int = 32, progress: bool = True) -> "LatentCache":
        """Encode ``num_items`` items into a cache at ``path`` (or reuse one built with the same ``key``).

        Args:
            encode: images (B, C, H, W) -> tokens (B, T, D); called under ``torch.no_grad()``.
            batch_items: indices (list of ints) -> images (B, C, H, W).
            key: JSON-serialisable description of what is encoded (model and data identity);
                a cache whose recorded key differs is rebuilt.
        Raises ValueError for num_items < 1.
        """
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        path = Path(path)
        meta_file, npy = path.with_suffix(".json"), path.with_suffix(".npy")
        meta = {"key": key, "num_items": num_items}
        if meta_file.is_file() and npy.is_file():
            try:
                if json.loads(meta_file.read_text()) == json.loads(json.dumps(meta)):
                    cache = cls(path)
                    if len(cache) == num_items:
                        return cache
            except (ValueError, OSError):
                pass  # unreadable or mismatched: rebuild
        from tqdm.auto import tqdm

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(f".{npy.name}.tmp")
        out = None
        try:
            with torch.no_grad():
                starts = range(0, num_items, batch_size)
                for start in tqdm(starts, desc="caching latents", disable=not progress, leave=False):
                    idx = list(range(start, min(start + batch_size, num_items)))
                    z = encode(batch_items(idx)).detach().float().cpu().numpy()
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                        shape=(num_items,) + z.shape[1:])
                    out[idx[0]:idx[-1] + 1] = z
            out.flush()
            del out
            os.replace(tmp, npy)
        finally:
            tmp.unlink(missing_ok=True)
        atomic_write_bytes(meta_file, json.dumps(meta, sort_keys=True).encode())
        return cls(path)

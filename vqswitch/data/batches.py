"""Batching images: :func:`iterate_batches`, the one batcher of vqswitch (tensors, datasets, lists, streams)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from .._checks import check_bool, check_image_batch, check_int

__all__ = ["iterate_batches"]


def _as_batch(x, where: str) -> torch.Tensor:
    """One (3, H, W) image or a (B, 3, H, W) batch (B may be 0) as (B, 3, H, W); errors name ``where``."""
    return check_image_batch(where, x, channels=3, single=True)


def iterate_batches(data, batch_size: int, shuffle: bool = False, seed: int = 0,
                    drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Yield (B, 3, H, W) batches of images from ``data``.

    ``data`` is one of:
      * a (N, 3, H, W) float tensor;
      * a map-style ``torch.utils.data.Dataset`` (with ``__len__``) whose items are (3, H, W) float images
        (``ProceduralFaces`` and ``ImageFolder``; a ``get_batch``/``__getitems__`` method is used when present);
      * a list or tuple of float tensors, each one image (3, H, W) or a batch (B, 3, H, W);
      * any other iterable of such tensors (a generator, an ``IterableDataset``, a ``DataLoader``): streamed, the
        rows of its tensors regrouped into batches of ``batch_size``.

    Args:
        batch_size: int >= 1; every batch has ``batch_size`` images except possibly the last.
        shuffle: visit the images in a random order (a permutation drawn from ``seed``); needs a tensor, a
            Dataset or a list/tuple -- a streamed iterable cannot be shuffled.
        seed: int >= 0 for the permutation (pass e.g. ``base_seed + epoch`` for a new order per epoch).
        drop_last: drop a last batch smaller than ``batch_size``.
    Batches keep the images' device and dtype (promoted when they differ); all images of a batch must have the same
    H and W; a tensor or item holding no image, (0, 3, H, W), adds none (an empty tensor gives no batch). Raises
    ``TypeError``/``ValueError`` naming the argument or the offending item (its position) for bad input, at the item
    where it is found.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    check_bool("shuffle", shuffle)
    check_bool("drop_last", drop_last)
    seed = check_int("seed", seed, 0)
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"data as a tensor must have shape (N, 3, H, W), got {tuple(data.shape)}")
        _as_batch(data, "data")
    if isinstance(data, (str, bytes)) or not (isinstance(data, (torch.Tensor, torch.utils.data.Dataset, Iterable))):
        raise TypeError(f"data must be a tensor, a Dataset or an iterable of image tensors, got {type(data).__name__}")
    map_style = isinstance(data, (torch.Tensor, list, tuple)) or (
        isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__")
        and not isinstance(data, torch.utils.data.IterableDataset))
    if map_style:
        return _iterate(data, batch_size, shuffle, seed, drop_last)
    if shuffle:
        raise ValueError("shuffle=True needs a tensor, a Dataset or a list/tuple; an iterable such as "
                         f"{type(data).__name__} is streamed in its own order (pass list(data) to shuffle it)")
    return _stream(data, batch_size, drop_last)


def _stack(parts: list[torch.Tensor], where: str) -> torch.Tensor:
    hw = parts[0].shape[-2:]
    for p in parts:
        if p.shape[-2:] != hw:
            raise ValueError(f"images of one batch must share H and W: {where} has {tuple(p.shape[-2:])}, "
                             f"an earlier image {tuple(hw)}")
    return torch.cat(parts, 0)


def _iterate(data, batch_size, shuffle, seed, drop_last) -> Iterator[torch.Tensor]:
    """Batches of a map-style source: a tensor, a list/tuple of image tensors or a Dataset with __len__."""
    if isinstance(data, torch.Tensor):
        n = data.shape[0]

        def fetch(idx):
            return data[torch.as_tensor(idx, dtype=torch.int64, device=data.device)]
    elif isinstance(data, (list, tuple)):
        items = [_as_batch(x, f"data[{k}]") for k, x in enumerate(data)]
        rows = [(k, r) for k, x in enumerate(items) for r in range(x.shape[0])]
        n = len(rows)

        def fetch(idx):
            return _stack([items[rows[i][0]][rows[i][1]:rows[i][1] + 1] for i in idx], f"data item {rows[idx[-1]][0]}")
    else:
        n = len(data)
        batch_fn = getattr(data, "get_batch", None)

        def fetch(idx):
            if callable(batch_fn):
                out = batch_fn(idx)
                out = _as_batch(out, f"data.get_batch({len(idx)} indices)")
                if out.shape[0] != len(idx):
                    raise ValueError(f"data.get_batch returned {out.shape[0]} images for {len(idx)} indices")
                return out
            parts = []
            for i in idx:
                x = data[i]
                if not isinstance(x, torch.Tensor) or x.dim() != 3:
                    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ValueError(f"data[{i}] must be one image tensor (3, H, W), got {shape}")
                parts.append(_as_batch(x, f"data[{i}]"))
            return _stack(parts, f"data[{idx[-1]}]")

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() if shuffle else list(range(n))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield fetch(order[start:start + batch_size])


def _stream(data, batch_size, drop_last) -> Iterator[torch.Tensor]:
    pending: list[torch.Tensor] = []
    count = 0
    for k, x in enumerate(data):
        x = _as_batch(x, f"item {k} of data")
        pending.append(x)
        count += x.shape[0]
        if count >= batch_size:
            batch = _stack(pending, f"item {k} of data")
            whole = count - count % batch_size
            yield from batch[:whole].split(batch_size)
            rest = batch[whole:]
            pending, count = ([rest] if rest.shape[0] else []), rest.shape[0]
    if count and not drop_last:
        yield _stack(pending, "the last item of data")


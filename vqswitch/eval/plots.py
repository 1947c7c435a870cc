"""Plots of codebook use, saved as PNG files (atomically): :func:`plot_utilization` (a heat map per (group, token)
codebook) and :func:`plot_group_histogram` (images per group). matplotlib is optional (the ``[plots]`` extra) and
imported only when a plot is drawn; no pyplot, no global backend change."""
from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import numpy as np
import torch

from .._checks import check_int_tensor, check_path
from .._io import atomic_path
from ..codebooks import Utilization, utilization
from .utilization import group_histogram

__all__ = ["plot_utilization", "plot_group_histogram"]


def _figure_class():
    """matplotlib's Figure, imported on first use (no pyplot, no global backend change)."""
    try:
        return importlib.import_module("matplotlib.figure").Figure
    except ImportError as err:
        raise ImportError("vqswitch's plots need matplotlib, which is not installed: pip install matplotlib") from err


def _integer_ticks(n: int) -> np.ndarray:
    """At most about 16 integer tick positions in [0, n)."""
    return np.arange(0, n, max(1, math.ceil(n / 16)))


def _save_png(fig, path: Path) -> Path:
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
    path = check_path("path", path)
    if isinstance(usage, Utilization):
        rates = usage.per_codebook
    elif isinstance(usage, torch.Tensor):
        check_int_tensor("usage", usage)
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
    path = check_path("path", path)
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

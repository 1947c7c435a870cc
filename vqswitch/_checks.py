"""The one home of vqswitch's argument validators (private: the public functions that call them document the errors).

Every public function validates its own arguments with these, once, at the boundary; internal helpers trust their
callers. Each check names the argument in its message (``name``), raises ``TypeError`` for the wrong kind of value
and ``ValueError`` for a value of the right kind out of range, and returns the value normalised (``int`` for any
integral number, ``float`` for any real, a ``(B, C, H, W)`` tensor for images ...).

A ``bool`` is never accepted where a number is asked for (``True`` is an ``int`` to Python, not to a user).
"""
from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["check_int", "check_bool", "check_real", "check_choice", "check_str", "check_path", "check_range_pair",
           "check_float_tensor", "check_images", "check_image_pair", "is_repo_id", "check_repo_id", "is_int",
           "check_int_list", "check_size", "check_int_tensor", "check_image_batch", "check_not_meta"]


def is_int(value) -> bool:
    """Whether ``value`` is an integral number (Python or NumPy) and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound may be None)."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_real(name: str, value, minimum: float | None = None, maximum: float | None = None, *,
               min_open: bool = False, max_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the interval given by the bounds (closed unless ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    low_bad = minimum is not None and (value < minimum or (min_open and value == minimum))
    high_bad = maximum is not None and (value > maximum or (max_open and value == maximum))
    if not math.isfinite(value) or low_bad or high_bad:
        lo = "(-inf" if minimum is None else f"{'(' if min_open else '['}{minimum:g}"
        hi = "inf)" if maximum is None else f"{maximum:g}{')' if max_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {lo}, {hi}, got {value}")
    return value


def check_choice(name: str, value, choices):
    """``value`` if it is one of ``choices`` (compared with ``==``; a bool never matches an int choice)."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_str(name: str, value, *, optional: bool = False, empty: bool = False) -> str | None:
    """``value`` as a ``str`` (``None`` allowed with ``optional``; ``""`` allowed with ``empty``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str{' or None' if optional else ''}, got {type(value).__name__}")
    if not empty and not value:
        raise ValueError(f"{name} must not be empty")
    return value


def check_path(name: str, value) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a ``Path``; an empty string is refused."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or a path, got {type(value).__name__}")
    if isinstance(value, str) and not value:
        raise ValueError(f"{name} must not be empty")
    return Path(value)


def check_range_pair(name: str, value) -> tuple[float, float]:
    """A pair ``(low, high)`` of finite reals with ``low < high`` (a pixel range), as floats."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in value):
        raise TypeError(f"{name} must hold two real numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ValueError(f"{name} must be finite with low < high, got {value!r}")
    return lo, hi


def check_float_tensor(name: str, t) -> torch.Tensor:
    """A floating-point tensor with data (integers are refused rather than cast; a 'meta' tensor is refused)."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    return check_not_meta(name, t)


def check_images(name: str, x, *, channels: int | None = None, size: tuple[int, int] | None = None,
                 single: bool = False, finite: bool = False, pixel_range: tuple[float, float] | None = None
                 ) -> torch.Tensor:
    """A floating-point image batch ``(B, C, H, W)`` with no empty dimension, returned as such.

    Args:
        channels: C that is required (None: any).
        size: (H, W) that is required (None: any).
        single: also accept one image ``(C, H, W)``, returned as a batch of one.
        finite: refuse NaN / Inf values (reads the values: a device sync).
        pixel_range: refuse values outside ``(low, high)`` by more than 1% of its width (so [0, 255] bytes or
            [0, 1] images given to a [-1, 1] model are caught as far as the values can tell); implies ``finite``.
    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: wrong rank, channel count or size; an empty dimension; NaN/Inf or out-of-range values.
    """
    c = "C" if channels is None else str(channels)
    shape = f"({c}, H, W) or (B, {c}, H, W)" if single else f"(B, {c}, H, W)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor {shape}, got dtype {x.dtype}; convert integer "
                        f"images with .float() and scale them to the expected pixel range")
    if single and x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if min(x.shape) < 1:
        raise ValueError(f"{name} must have no empty dimension, got shape {tuple(x.shape)}")
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        raise ValueError(f"{name} must be {size[0]}x{size[1]} pixels for this model, got {x.shape[-2]}x{x.shape[-1]}")
    if finite or pixel_range is not None:
        mn, mx = float(x.min()), float(x.max())
        if not (math.isfinite(mn) and math.isfinite(mx)):
            raise ValueError(f"{name} contains NaN or Inf values")
        if pixel_range is not None:
            lo, hi = pixel_range
            slack = 0.01 * (hi - lo)
            if mn < lo - slack or mx > hi + slack:
                raise ValueError(f"{name} must lie in the pixel range [{lo:g}, {hi:g}], got values in "
                                 f"[{mn:.4g}, {mx:.4g}]")
    return x


def check_image_pair(xname: str, x, yname: str, y, *, channels: int | None = None, finite: bool = True) -> None:
    """Two image batches of one shape on one device (:func:`check_images` each; finite unless ``finite=False``,
    which skips reading the values: no device sync, for a per-step training loss)."""
    check_images(xname, x, channels=channels, finite=finite)
    check_images(yname, y, channels=channels, finite=finite)
    if x.shape != y.shape:
        raise ValueError(f"{xname} and {yname} must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"{xname} and {yname} must be on the same device, got {x.device} and {y.device}")


_HUB_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"  # as the Hub: "-" and "." never first or last
HUB_NAME = _HUB_NAME
_REPO_ID = re.compile(rf"{_HUB_NAME}/{_HUB_NAME}")


def is_repo_id(text) -> bool:
    """Whether ``text`` is a Hub model id ``"org/name"``: ASCII letters, digits, ``-``, ``_``, ``.`` (``-`` and ``.``
    neither first nor last, no ``--`` or ``..``), a name of at most 96 characters. Says nothing of whether a local
    path of that spelling exists."""
    return (isinstance(text, str) and bool(_REPO_ID.fullmatch(text)) and "--" not in text and ".." not in text
            and len(text.split("/")[-1]) <= 96)


def check_repo_id(name: str, value) -> str:
    """``value`` if it is a Hub model id (:func:`is_repo_id`)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str 'org/name', got {type(value).__name__}")
    if not is_repo_id(value):
        raise ValueError(f"{name} must be a Hub repository id 'org/name' (letters, digits, '-', '_', '.'; "
                         f"no '--' or '..'; a name of at most 96 characters), got {value!r}")
    return value


def check_int_list(name: str, value, minimum: int | None = None, *, empty: bool = False) -> list[int]:
    """``value`` (a list, tuple or other non-string sequence of ints, each :func:`check_int` as ``name[i]``) as a
    list of ``int``; an empty one only with ``empty``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__}")
    if not value and not empty:
        raise ValueError(f"{name} must not be empty")
    return [check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(value)]


def check_size(name: str, value) -> tuple[int, int]:
    """An image size: an int ``S`` (square) or a pair ``(H, W)`` of ints, each >= 1, as ``(H, W)``.

    Raises TypeError for anything else, ValueError for a side below 1."""
    if is_int(value):
        value = (value, value)
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
            or not all(is_int(v) for v in value)):
        raise TypeError(f"{name} must be an int or a pair (H, W) of ints, got {value!r}")
    h, w = int(value[0]), int(value[1])
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be >= 1 on each side, got {value!r}")
    return h, w


def check_int_tensor(name: str, t) -> torch.Tensor:
    """An integer tensor (any shape; floating-point, complex and bool tensors are refused), returned as is."""
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    return t


def check_image_batch(name: str, x, *, channels: int | None = None, single: bool = False,
                      finite: bool = False) -> torch.Tensor:
    """:func:`check_images`, except that a batch may hold no image: ``(0, C, H, W)`` is returned as it is, its C, H
    and W checked as for one image (a batcher or an embedder given nothing gives nothing back)."""
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] == 0:
        try:
            check_images(name, torch.empty((1, *x.shape[1:]), dtype=x.dtype, device="meta"), channels=channels)
        except ValueError:
            c = "C" if channels is None else str(channels)
            raise ValueError(f"{name} must have shape (B, {c}, H, W) with H, W >= 1, got {tuple(x.shape)}") from None
        return x
    return check_images(name, x, channels=channels, single=single, finite=finite)


def check_not_meta(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` if it holds data: a 'meta' tensor (a shape without values) is a ValueError."""
    if t.is_meta:
        raise ValueError(f"{name} is a 'meta' tensor (a shape without data); pass a tensor with values")
    return t


def one_line(exc, limit: int = 1500) -> str:
    """``str(exc)`` on one line (whitespace runs collapsed; the type name when empty), cut to ``limit`` characters:
    another error quoted inside a message (``vqswitch push``, the command line's one-line errors)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."

"""Helpers the data modules share (private): seeded random streams and dataset index checks."""
from __future__ import annotations

import numpy as np

from .._checks import check_int


def rng(*entropy: int) -> np.random.Generator:
    """A NumPy generator seeded by the whole tuple ``entropy`` (ints >= 0): one independent stream per tuple."""
    return np.random.default_rng(np.random.SeedSequence(list(entropy)))


def check_index(value, length: int) -> int:
    """A dataset index in ``[-length, length)`` as an index in ``[0, length)``; ``TypeError`` for a non-int (a bool
    included), ``IndexError`` out of range."""
    value = check_int("index", value)
    if not -length <= value < length:
        raise IndexError(f"index {value} out of range for a dataset of {length} images")
    return value % length

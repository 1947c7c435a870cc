"""The bit accounting of STSCQ: the one place the bits formula lives.

An image quantized with M codebook groups of K codes over T tokens costs

    bits_per_image = T * ceil(log2 K) + ceil(log2 M)

fixed-length bits (the group index once per image, then one index per token), and
``bpp = bits_per_image / (H * W)`` for an H x W image.
"""
from __future__ import annotations

from ._checks import check_int

__all__ = ["index_bits", "bits_per_image", "bpp"]


def index_bits(n: int) -> int:
    """Bits of a fixed-length index into ``n`` choices: ``ceil(log2 n)`` (0 for ``n == 1``).

    Exact for every size (integer arithmetic, no floating-point log).
    Raises ``TypeError``/``ValueError`` unless ``n`` is an int >= 1.
    """
    return (check_int("n", n, 1) - 1).bit_length()


def bits_per_image(num_tokens: int, codebook_size: int, num_groups: int = 1) -> int:
    """``T * ceil(log2 K) + ceil(log2 M)``: fixed-length bits of one image's codes.

    Args:
        num_tokens: T, tokens per image (int >= 1).
        codebook_size: K, codes per (group, token) codebook (int >= 1).
        num_groups: M, codebook groups (int >= 1); the group index is sent once per image.
    Raises ``TypeError``/``ValueError`` naming the argument for non-int or < 1 values.
    """
    t = check_int("num_tokens", num_tokens, 1)
    k = check_int("codebook_size", codebook_size, 1)
    m = check_int("num_groups", num_groups, 1)
    return t * index_bits(k) + index_bits(m)


def bpp(bits: int, height: int, width: int) -> float:
    """Bits per pixel of ``bits`` bits spent on a ``height x width`` image (a float).

    Raises ``TypeError``/``ValueError`` naming the argument unless ``bits`` is an int >= 0 and ``height``,
    ``width`` are ints >= 1.
    """
    bits = check_int("bits", bits, 0)
    return bits / (check_int("height", height, 1) * check_int("width", width, 1))

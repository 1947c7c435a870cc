"""Discrete codes of a batch of images and their fixed-length bitstream.

A :class:`Codes` holds what a SwitchableTokenQuantizer emits for B images: one group
index per image (``groups``, shape (B,)) and T token indices per image (``indices``,
shape (B, T)), with K codes per codebook and M codebook groups.

Stream format (version 1), all header integers little-endian (``struct`` ``"<4sB5I"``)::

    offset size  field
         0    4  magic b"VQSC"
         4    1  format version, u8 = 1
         5    4  T, tokens per image, u32 >= 1
         9    4  K, codebook size, u32 >= 1
        13    4  M, number of codebook groups, u32 >= 1
        17    4  N, number of images, u32
        21    4  CRC32 (zlib.crc32) of bytes 0..20 followed by the whole payload
        25       payload

The payload is ONE bitstream, most significant bit first: for each image in order its
group index in ``index_bits(M)`` bits, then its T token indices in ``index_bits(K)`` bits
each -- exactly ``bits_per_image(T, K, M)`` bits per image, no per-image padding -- and
zero bits at the end up to a whole byte. So a stream is
``HEADER_SIZE + ceil(N * bits_per_image(T, K, M) / 8)`` bytes long.

Limit: a stream holds at most ``max(8 * payload bytes, MAX_ZERO_BIT_VALUES)`` token values (N*T). With K >= 2
every token costs at least one bit, so every such stream is within it; the limit only bites when K == 1 (tokens
cost 0 bits), where the length no longer bounds N*T: without it a 25-byte header could make the reader allocate
N*T int64 values. :meth:`Codes.to_bytes` refuses to write what :meth:`Codes.from_bytes` would refuse to read.
Decoding works through the payload in chunks, so its memory is the int64 output plus a few MiB.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import check_int
from ._io import atomic_write_bytes
from .bits import bits_per_image, index_bits
from .formats import CODES_MAGIC as MAGIC
from .formats import CODES_VERSION as FORMAT_VERSION

__all__ = ["Codes", "MAGIC", "FORMAT_VERSION", "HEADER_SIZE", "MAX_ZERO_BIT_VALUES", "check_value_count",
           "pack_payload", "unpack_payload"]

_HEADER = struct.Struct("<4sB5I")
_CRC_OFFSET = _HEADER.size - 4  # the CRC covers bytes [0, 21) then the payload
HEADER_SIZE = _HEADER.size  # 25
_U32_MAX = 2**32 - 1
_I64_MAX = 2**63 - 1
MAX_ZERO_BIT_VALUES = 2**20  # token values (N*T) a stream may hold beyond 8 per payload byte (only K == 1 needs it)
_CHUNK_BITS = 2**19  # payload bits unpacked at a time (about 8 MiB of scratch)


def check_value_count(count: int, num_tokens: int, payload_bytes: int, *, per_byte: int = 8) -> None:
    """Raise ValueError unless ``count * num_tokens <= max(per_byte * payload_bytes, MAX_ZERO_BIT_VALUES)``.

    The bound on how many int64 values (N*T) a payload of ``payload_bytes`` bytes may decode to, checked before
    anything is allocated (see the module docstring; the entropy-coded container uses ``per_byte=64``).
    """
    limit = max(per_byte * payload_bytes, MAX_ZERO_BIT_VALUES)
    if count * num_tokens > limit:
        raise ValueError(f"N*T = {count}*{num_tokens} = {count * num_tokens} token values is more than a payload of "
                         f"{payload_bytes} bytes may hold (at most max({per_byte} per byte, {MAX_ZERO_BIT_VALUES}) "
                         f"= {limit}); it is corrupted or forged")


def _beyond_int64(name: str, value) -> None:
    """ValueError quoting the largest value, when ``value`` holds an integer above int64 (numpy uint64, a list)."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _I64_MAX:
        raise ValueError(f"{name} must hold int64 values, got {int(arr.max())}")
    if arr.dtype == object and arr.size:
        big = [v for v in arr.reshape(-1).tolist() if isinstance(v, int) and not -_I64_MAX - 1 <= v <= _I64_MAX]
        if big:
            raise ValueError(f"{name} must hold int64 values, got {max(big, key=abs)}")


def _as_int64(name: str, value) -> torch.Tensor:
    if value is None or isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be a tensor, array or nested list of integers, got {type(value).__name__}")
    if not isinstance(value, torch.Tensor):
        _beyond_int64(name, value)
    elif value.dtype == getattr(torch, "uint64", None) and value.numel() and int(value.max()) > _I64_MAX:
        raise ValueError(f"{name} must hold int64 values, got {int(value.max())}")
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise TypeError(f"{name} must be a tensor, array or nested list of integers, got {type(value).__name__} "
                        f"that torch cannot read ({err})") from None
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    return t.to(torch.int64)


def _check_range(name: str, t: torch.Tensor, bound: int, bound_name: str) -> None:
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= bound:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} must lie in [0, {bound_name}={bound}), got {bad}")


def _to_bits(values: np.ndarray, width: int) -> np.ndarray:
    """(N, C) uint64 -> (N, C * width) uint8 bit matrix, each value MSB-first."""
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = (values[..., None] >> shifts) & np.uint64(1)
    return bits.astype(np.uint8).reshape(values.shape[0], values.shape[1] * width)


def _from_bits(bits: np.ndarray, cols: int, width: int, out: np.ndarray) -> None:
    """(N, cols * width) uint8 bit matrix -> ``out`` (N, cols) int64 values (inverse of _to_bits), one bit plane
    at a time: no scratch beyond ``out`` (width <= 32, so the values fit int64)."""
    b = bits.reshape(bits.shape[0], cols, width)
    out[...] = 0
    for j in range(width):
        out <<= 1
        out |= b[:, :, j]


def pack_payload(groups: np.ndarray, indices: np.ndarray, codebook_size: int, num_groups: int) -> bytes:
    """The fixed-length bitstream: per image its group in ``index_bits(M)`` bits, then its T indices in
    ``index_bits(K)`` bits each, MSB-first, no per-image padding, zero bits up to a whole byte.

    groups: (N,) integers in [0, M); indices: (N, T) integers in [0, K) (not checked here).
    """
    n = int(indices.shape[0])
    g = np.asarray(groups).astype(np.uint64).reshape(n, 1)
    idx = np.asarray(indices).astype(np.uint64)  # (N, T)
    bit_matrix = np.concatenate([_to_bits(g, index_bits(num_groups)), _to_bits(idx, index_bits(codebook_size))], axis=1)
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


def unpack_payload(payload: bytes, count: int, num_tokens: int, codebook_size: int,
                   num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_payload` -> (groups (N,) int64, indices (N, T) int64), values unchecked.

    ``payload`` must hold at least ``ceil(N * bits_per_image / 8)`` bytes (the caller checks the length).
    Raises ValueError for more values than :func:`check_value_count` allows (before allocating anything) and for
    nonzero padding bits after the last image. Works in chunks of about 2**19 payload bits: memory is the output
    plus a few MiB.
    """
    check_value_count(count, num_tokens, len(payload))
    bpi = bits_per_image(num_tokens, codebook_size, num_groups)
    gb, kb = index_bits(num_groups), index_bits(codebook_size)
    total = count * bpi
    raw = np.frombuffer(payload, dtype=np.uint8)
    tail = raw[total // 8:]  # the byte holding the last bits (if partial) and any bytes after it
    if tail.size and ((int(tail[0]) & (0xFF >> (total % 8))) or tail[1:].any()):
        raise ValueError("nonzero padding bits after the fixed-length codes")
    groups = np.zeros(count, dtype=np.int64)
    indices = np.zeros((count, num_tokens), dtype=np.int64)
    if bpi == 0:
        return groups, indices
    step = 8 * max(1, _CHUNK_BITS // (8 * bpi))  # images per chunk: a multiple of 8 starts on a whole byte
    for start in range(0, count, step):
        n = min(step, count - start)
        first = start * bpi // 8
        bits = np.unpackbits(raw[first:first + (n * bpi + 7) // 8], count=n * bpi).reshape(n, bpi)
        if gb:
            _from_bits(bits[:, :gb], 1, gb, groups[start:start + n, None])
        if kb:
            _from_bits(bits[:, gb:], num_tokens, kb, indices[start:start + n])
    return groups, indices


@dataclass(frozen=True, eq=False)
class Codes:
    """Codes of B images: ``groups`` (B,) int64, ``indices`` (B, T) int64, K and M ints.

    Tensors may be anything ``torch.as_tensor`` accepts; they are converted to int64 on
    their own device. Raises ``TypeError`` for non-integer tensors (float, complex, bool)
    or non-int K/M, ``ValueError`` naming the argument for bad shapes (groups not 1-D,
    indices not 2-D, different B, T < 1), K or M < 1, or values outside
    ``0 <= group < M`` / ``0 <= index < K``. B = 0 (an empty batch) is allowed.
    """

    groups: torch.Tensor
    indices: torch.Tensor
    codebook_size: int
    num_groups: int

    def __post_init__(self):
        groups, indices = _as_int64("groups", self.groups), _as_int64("indices", self.indices)
        if groups.dim() != 1:
            raise ValueError(f"groups must be 1-D (B,), got shape {tuple(groups.shape)}")
        if indices.dim() != 2:
            raise ValueError(f"indices must be 2-D (B, T), got shape {tuple(indices.shape)}")
        if indices.shape[0] != groups.shape[0]:
            raise ValueError(f"groups has B={groups.shape[0]} images but indices has {indices.shape[0]}")
        if indices.shape[1] < 1:
            raise ValueError("indices must have T >= 1 tokens per image, got T=0")
        k = check_int("codebook_size", self.codebook_size, 1)
        m = check_int("num_groups", self.num_groups, 1)
        _check_range("groups", groups, m, "num_groups")
        _check_range("indices", indices, k, "codebook_size")
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "codebook_size", k)
        object.__setattr__(self, "num_groups", m)

    __hash__ = None  # mutable tensors inside: not hashable

    @property
    def batch_size(self) -> int:
        """B, the number of images."""
        return self.indices.shape[0]

    @property
    def num_tokens(self) -> int:
        """T, tokens per image."""
        return self.indices.shape[1]

    @property
    def bits_per_image(self) -> int:
        """Payload bits of one image, ``bits.bits_per_image(T, K, M)``."""
        return bits_per_image(self.num_tokens, self.codebook_size, self.num_groups)

    @property
    def num_bits(self) -> int:
        """Payload bits of the batch, ``B * bits_per_image`` (header and padding excluded)."""
        return self.batch_size * self.bits_per_image

    def __len__(self) -> int:
        return self.batch_size

    def to(self, device) -> "Codes":
        """The same codes with both tensors on ``device``."""
        return Codes(self.groups.to(device), self.indices.to(device), self.codebook_size, self.num_groups)

    def __getitem__(self, key) -> "Codes":
        """Select images by int (a batch of 1), slice, or index/bool tensor or list.

        Raises ``IndexError`` for an out-of-range int or index.
        """
        groups, indices = self.groups[key], self.indices[key]
        if groups.dim() == 0:  # a single integer index: keep a batch of 1
            groups, indices = groups.reshape(1), indices.unsqueeze(0)
        return Codes(groups, indices, self.codebook_size, self.num_groups)

    def __eq__(self, other) -> bool:
        """Exact equality of K, M, shapes and every value (compared on CPU)."""
        if not isinstance(other, Codes):
            return NotImplemented
        return (
            self.codebook_size == other.codebook_size
            and self.num_groups == other.num_groups
            and self.indices.shape == other.indices.shape
            and torch.equal(self.groups.cpu(), other.groups.cpu())
            and torch.equal(self.indices.cpu(), other.indices.cpu())
        )

    @classmethod
    def cat(cls, codes: list["Codes"]) -> "Codes":
        """Concatenate batches along B. Raises ``ValueError`` for an empty list or
        differing T, K or M; ``TypeError`` for an item that is not a Codes."""
        codes = list(codes)
        if not codes:
            raise ValueError("Codes.cat needs at least one Codes")
        for c in codes:
            if not isinstance(c, Codes):
                raise TypeError(f"Codes.cat expects Codes, got {type(c).__name__}")
        first = codes[0]
        key = (first.num_tokens, first.codebook_size, first.num_groups)
        for c in codes[1:]:
            if (c.num_tokens, c.codebook_size, c.num_groups) != key:
                raise ValueError(
                    f"cannot cat codes with T,K,M={c.num_tokens},{c.codebook_size},{c.num_groups} "
                    f"onto T,K,M={key[0]},{key[1]},{key[2]}"
                )
        return cls(torch.cat([c.groups for c in codes]), torch.cat([c.indices for c in codes]),
                   first.codebook_size, first.num_groups)

    def to_bytes(self) -> bytes:
        """The fixed-length stream described in the module docstring.

        Raises ``ValueError`` if T, K, M or B do not fit the header's u32 fields, or (K == 1 only) for more
        token values than a stream may hold (:func:`check_value_count`; :meth:`from_bytes` would refuse it).
        """
        t, k, m, n = self.num_tokens, self.codebook_size, self.num_groups, self.batch_size
        for name, v in (("num_tokens", t), ("codebook_size", k), ("num_groups", m), ("batch_size", n)):
            if v > _U32_MAX:
                raise ValueError(f"{name}={v} does not fit the stream's u32 header field")
        check_value_count(n, t, (n * self.bits_per_image + 7) // 8)
        payload = pack_payload(self.groups.cpu().numpy(), self.indices.cpu().numpy(), k, m)
        head = _HEADER.pack(MAGIC, FORMAT_VERSION, t, k, m, n, 0)[:_CRC_OFFSET]
        crc = zlib.crc32(payload, zlib.crc32(head))
        return head + struct.pack("<I", crc) + payload

    @classmethod
    def from_bytes(cls, data, num_tokens: int | None = None, codebook_size: int | None = None,
                   num_groups: int | None = None) -> "Codes":
        """Decode a stream from :meth:`to_bytes` into CPU int64 ``Codes``.

        ``num_tokens``/``codebook_size``/``num_groups``, when given, must match the header.
        Raises ``TypeError`` if ``data`` is not bytes/bytearray/memoryview, and ``ValueError``
        for: data shorter than the header, wrong magic, unsupported version, T/K/M of 0,
        a payload of the wrong length (truncated or trailing bytes), more token values N*T than the
        payload may hold (the module docstring's limit; checked before allocating), CRC mismatch
        (corrupted), nonzero padding bits, decoded group >= M or index >= K, and a header
        that differs from the expected T/K/M.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < HEADER_SIZE:
            raise ValueError(f"codes stream too short: {len(data)} bytes < {HEADER_SIZE}-byte header")
        magic, version, t, k, m, n, crc = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError(f"not a vqswitch codes stream (magic {magic!r}, expected {MAGIC!r})")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported codes format version {version} (this reader knows {FORMAT_VERSION})")
        for name, v in (("T", t), ("K", k), ("M", m)):
            if v == 0:
                raise ValueError(f"invalid codes header: {name}=0")
        bpi = bits_per_image(t, k, m)
        expected = HEADER_SIZE + (n * bpi + 7) // 8
        if len(data) != expected:
            what = "truncated" if len(data) < expected else "trailing bytes"
            raise ValueError(f"codes stream has wrong length ({what}): expected {expected} bytes "
                             f"for N={n} images, got {len(data)}")
        try:
            check_value_count(n, t, len(data) - HEADER_SIZE)
        except ValueError as err:
            raise ValueError(f"codes stream refused: {err}") from None
        payload = data[HEADER_SIZE:]
        if zlib.crc32(payload, zlib.crc32(data[:_CRC_OFFSET])) != crc:
            raise ValueError("codes stream corrupted: CRC32 mismatch")
        want = {"T": num_tokens, "K": codebook_size, "M": num_groups}
        if any(v is not None and v != have for v, have in zip(want.values(), (t, k, m))):
            expects = ",".join(f"{key}={v}" for key, v in want.items() if v is not None)
            raise ValueError(f"codes were made for T={t},K={k},M={m} but the caller expects {expects}")
        try:
            groups, indices = unpack_payload(payload, n, t, k, m)
        except ValueError as err:
            raise ValueError(f"codes stream has {err}") from None
        if groups.size and groups.max() >= m:
            raise ValueError(f"decoded group index {int(groups.max())} >= num_groups M={m}")
        if indices.size and indices.max() >= k:
            raise ValueError(f"decoded token index {int(indices.max())} >= codebook_size K={k}")
        return cls(torch.from_numpy(groups), torch.from_numpy(indices), k, m)

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_bytes` to ``path`` atomically (the old file survives a failure)."""
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike, num_tokens: int | None = None, codebook_size: int | None = None,
             num_groups: int | None = None) -> "Codes":
        """Read a file written by :meth:`save`; same checks and errors as :meth:`from_bytes`
        (plus ``OSError`` from reading)."""
        with open(path, "rb") as f:
            data = f.read()
        return cls.from_bytes(data, num_tokens=num_tokens, codebook_size=codebook_size, num_groups=num_groups)

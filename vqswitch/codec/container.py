"""The VQSF container: the byte format of a compressed-image file (:mod:`vqswitch.codec` fills and reads it).

The magic number and the format version are spelled in :mod:`vqswitch.formats`.

Container format (version 1); integers little-endian::

    size      field
       4      magic b"VQSF"
       1      format version, u8 = 1
       1      mode, u8: 0 fixed-length, 1 entropy-coded
      32      model identity: model_identity() of the model and entropy model that wrote it
     2 + s    source: u16 byte length s, then s bytes of UTF-8: the Hub repo id "org/name" the model came from
              (s = 0: not recorded; vqswitch never writes a local path here, files of older versions may hold one)
     2 + r    revision: u16 byte length r, then r bytes of UTF-8: the Hub commit (r = 0: none)
       4      N, number of images, u32 >= 1
       2      H, image height in pixels, u16 >= 1
       2      W, image width in pixels, u16 >= 1
       4      T, tokens per image, u32 >= 1
       4      K, codebook size, u32 >= 1
       4      M, number of codebook groups, u32 >= 1
    N x (2+n) names, one per image: u16 byte length n, then n bytes of UTF-8
       8      P, payload length in bytes, u64
       P      payload
       4      CRC32 (zlib.crc32) of every byte before it -- always the file's last 4 bytes

Payloads:

* fixed (mode 0): the bitstream of :mod:`vqswitch.codes` -- for each image its group index in ``ceil(log2 M)``
  bits then its T token indices in ``ceil(log2 K)`` bits each, most significant bit first, exactly
  ``bits_per_image`` bits per image with no per-image padding, and zero bits up to a whole byte:
  ``P = ceil(N * bits_per_image / 8)``;
* entropy (mode 1): the bytes of ``EntropyModel.encode(groups, indices)`` for the whole batch.

A reader checks the magic, the CRC, the version and every length against the bytes actually present before it
decodes anything (a header claiming four billion images allocates nothing). The payload also bounds the work: it
may decode to at most ``max(8 * P, 2**20)`` token values N*T in fixed mode (only K == 1, 0-bit tokens, gets near
it) and ``max(32 * P, 2**20)`` in entropy mode (``vqswitch.entropy.MAX_VALUES_PER_BYTE``), checked by
:func:`parse` before any model is loaded or any code decoded. Every failure to read a container
raises :class:`CodecError` (a ``ValueError``) saying what is wrong and what to do.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from vqswitch.bits import bits_per_image as _bits_per_image
from vqswitch.codes import Codes, check_value_count, pack_payload, unpack_payload
from vqswitch.entropy import MAX_VALUES_PER_BYTE
from vqswitch.formats import CONTAINER_MAGIC as MAGIC
from vqswitch.formats import CONTAINER_VERSION as FORMAT_VERSION

__all__ = ["CodecError", "ContainerHeader", "MAGIC", "FORMAT_VERSION", "MODES", "build", "parse", "read_header",
           "pack_fixed", "unpack_fixed", "check_text_field"]

MODES = ("fixed", "entropy")  # the mode byte is the index in this tuple
U16, U32 = 2**16 - 1, 2**32 - 1
_PREFIX = struct.Struct("<4sBB32s")  # magic, version, mode, identity
_SIZES = struct.Struct("<IHHIII")  # N, H, W, T, K, M
_MIN_SIZE = _PREFIX.size + 2 + 2 + _SIZES.size + 8 + 4  # no names (N = 0 is invalid anyway), empty payload


class CodecError(ValueError):
    """A container could not be read: truncated, corrupted, not a VQSF file, an unsupported version, or made with
    another model. The message says what is wrong and what to do."""


@dataclass(frozen=True)
class ContainerHeader:
    """What a container says about itself (see the module docstring), read by :func:`read_header`.

    ``mode`` is "fixed" or "entropy"; ``identity`` the 32-byte model identity; ``names`` one str per image;
    ``payload_bytes`` P; ``payload_bits`` the bits the codes take: ``count * fixed_bits_per_image`` exactly in
    fixed mode (byte padding excluded), ``8 * payload_bytes`` in entropy mode; ``total_bytes`` the container's size.
    """

    version: int
    mode: str
    identity: bytes
    source: str | None
    revision: str | None
    count: int
    height: int
    width: int
    num_tokens: int
    codebook_size: int
    num_groups: int
    names: tuple[str, ...]
    payload_bytes: int
    payload_bits: int
    total_bytes: int

    @property
    def identity_hex(self) -> str:
        return self.identity.hex()

    @property
    def fixed_bits_per_image(self) -> int:
        """``T * ceil(log2 K) + ceil(log2 M)``: what one image costs in fixed mode."""
        return _bits_per_image(self.num_tokens, self.codebook_size, self.num_groups)

    @property
    def bits_per_image(self) -> float:
        """Payload bits per image in this container's mode (``payload_bits / count``)."""
        return self.payload_bits / self.count

    @property
    def bpp(self) -> float:
        """Payload bits per pixel (``bits_per_image / (H * W)``)."""
        return self.bits_per_image / (self.height * self.width)


def check_text_field(name: str, value: str) -> None:
    """ValueError (naming ``name``) unless the str ``value`` fits a u16-length text field: encodable as UTF-8 (no lone
    surrogates of an undecodable path) in at most 65535 bytes."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise ValueError(f"{name} {value!r} is not encodable as UTF-8 ({err.reason}; an undecodable path?)") from None
    if size > U16:
        raise ValueError(f"{name} is {size} bytes of UTF-8; at most {U16} fit a container")


def _put_str(value: str | None) -> bytes:
    raw = (value or "").encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


def pack_fixed(codes: Codes) -> bytes:
    """The fixed-length payload of ``codes`` (:func:`vqswitch.codes.pack_payload`)."""
    return pack_payload(codes.groups.cpu().numpy(), codes.indices.cpu().numpy(), codes.codebook_size,
                        codes.num_groups)


def build(mode_id: int, identity: bytes, source: str | None, revision: str | None, image_size: tuple[int, int],
          codes: Codes, names: list[str], payload: bytes) -> bytes:
    """The container bytes (module docstring) of N = ``codes.batch_size`` images with the given payload.

    Raises ValueError for no images, more than 2**32 - 1 images, or a height/width above 65535.
    """
    n = codes.batch_size
    h, w = image_size
    if n < 1:
        raise ValueError("there are no images to compress")
    if n > U32:
        raise ValueError(f"at most {U32} images fit one container, got {n}")
    if h > U16 or w > U16:
        raise ValueError(f"images of {h}x{w} pixels do not fit the container's u16 height/width fields")
    parts = [_PREFIX.pack(MAGIC, FORMAT_VERSION, mode_id, identity), _put_str(source), _put_str(revision),
             _SIZES.pack(n, h, w, codes.num_tokens, codes.codebook_size, codes.num_groups)]
    parts += [_put_str(name) for name in names]
    parts += [struct.pack("<Q", len(payload)), payload]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


class _Truncated(CodecError):
    """A field runs past the end of the data (raised while parsing; reported as truncation)."""


class _Cursor:
    """Reads fields from ``data[:end]``, raising CodecError when a field runs past the end."""

    def __init__(self, data: bytes, end: int):
        self.data, self.pos, self.end = data, 0, end

    def take(self, size: int, what: str) -> bytes:
        if size > self.end - self.pos:
            raise _Truncated(f"the container is truncated or corrupted: its {what} needs {size} bytes but only "
                             f"{self.end - self.pos} remain; get the file again")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def unpack(self, fmt: struct.Struct, what: str):
        return fmt.unpack(self.take(fmt.size, what))

    def text(self, what: str) -> str:
        (size,) = struct.unpack("<H", self.take(2, f"{what} length"))
        raw = self.take(size, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError(f"the container is corrupted: its {what} is not valid UTF-8; get the file again") from None


def _parse_fields(data: bytes) -> tuple[dict, int, int]:
    """Parse every header field of ``data`` (CRC excluded) -> (fields, payload offset, payload length)."""
    cur = _Cursor(data, len(data) - 4)
    _, version, mode_id, identity = cur.unpack(_PREFIX, "header")
    source, revision = cur.text("source"), cur.text("revision")
    n, h, w, t, k, m = cur.unpack(_SIZES, "image sizes")
    if 2 * n > cur.end - cur.pos:  # every name takes >= 2 bytes: bound N before looping over it
        raise _Truncated(f"the container is truncated or corrupted: it claims {n} images but has room for at most "
                         f"{(cur.end - cur.pos) // 2} names; get the file again")
    names = tuple(cur.text(f"name of image {i}") for i in range(n))
    (size,) = struct.unpack("<Q", cur.take(8, "payload length"))
    payload_at = cur.pos
    cur.take(size, "payload")
    if cur.pos != cur.end:
        raise CodecError(f"the container has {cur.end - cur.pos} unexpected bytes after its payload (corrupted or "
                         "two files joined?); get the file again")
    fields = dict(version=version, mode_id=mode_id, identity=identity, source=source or None,
                  revision=revision or None, count=n, height=h, width=w, num_tokens=t, codebook_size=k,
                  num_groups=m, names=names, payload_bytes=size)
    return fields, payload_at, size


def parse(data) -> tuple[ContainerHeader, bytes]:
    """Check and parse a whole container -> (header, payload bytes). Raises CodecError (also for more token values
    N*T than the payload may hold, see the module docstring), TypeError for non-bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:4] != MAGIC[:len(data[:4])]:
        raise CodecError(f"not a vqswitch compressed-image file (it starts with {data[:8]!r}, expected the magic "
                         f"{MAGIC!r}); give a file written by vqswitch.codec.compress")
    if len(data) < _MIN_SIZE:
        raise CodecError(f"the container is truncated: {len(data)} bytes is less than the smallest possible "
                         f"container ({_MIN_SIZE} bytes); get the file again")
    (crc,) = struct.unpack("<I", data[-4:])
    version = data[4]
    if zlib.crc32(data[:-4]) != crc:
        what = "corrupted"
        if version == FORMAT_VERSION:
            try:
                _parse_fields(data)
            except _Truncated:  # a length that runs past the end: most likely a cut-off file
                what = "truncated or corrupted"
            except CodecError:
                pass
        raise CodecError(f"the container is {what}: its CRC32 does not match its content; get the file again")
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported container format version {version}: this vqswitch reads version "
                         f"{FORMAT_VERSION}; upgrade vqswitch to read it")
    fields, at, size = _parse_fields(data)
    mode_id = fields.pop("mode_id")
    if mode_id >= len(MODES):
        raise CodecError(f"the container has an unknown mode {mode_id} (known: 0 fixed, 1 entropy); it is corrupted "
                         "or from a newer vqswitch")
    for key in ("count", "height", "width", "num_tokens", "codebook_size", "num_groups"):
        if fields[key] == 0:
            raise CodecError(f"the container is corrupted: its {key} is 0")
    bpi = _bits_per_image(fields["num_tokens"], fields["codebook_size"], fields["num_groups"])
    if mode_id == 0:
        want = (fields["count"] * bpi + 7) // 8
        if size != want:
            raise CodecError(f"the container is corrupted: a fixed-length payload of {fields['count']} images of "
                             f"{bpi} bits is {want} bytes, but it holds {size}")
        bits = fields["count"] * bpi
    else:
        bits = 8 * size
    try:
        check_value_count(fields["count"], fields["num_tokens"], size,
                          per_byte=8 if mode_id == 0 else MAX_VALUES_PER_BYTE)
    except ValueError as err:
        raise CodecError(f"the container is corrupted or forged: {err}") from None
    header = ContainerHeader(mode=MODES[mode_id], payload_bits=bits, total_bytes=len(data), **fields)
    return header, data[at:at + size]


def read_header(data: bytes) -> ContainerHeader:
    """Check a whole container (magic, CRC, version, every length) and return its header, decoding no codes.

    Raises CodecError for anything that is not a complete, intact VQSF container of a known version;
    TypeError when ``data`` is not bytes-like.
    """
    return parse(data)[0]


# ------------------------------------------------------------------------------------------------ fixed-length payload


def unpack_fixed(payload: bytes, header: ContainerHeader) -> tuple[np.ndarray, np.ndarray]:
    """(groups (N,), indices (N, T)) uint64 of a fixed-length payload; CodecError for nonzero padding bits."""
    try:
        return unpack_payload(payload, header.count, header.num_tokens, header.codebook_size, header.num_groups)
    except ValueError as err:
        raise CodecError(f"the container is corrupted: {err}") from None

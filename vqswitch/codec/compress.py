"""Images / codes -> one VQSF container: :func:`compress`, :func:`compress_codes` and :func:`compress_files`.

The codes are stored either at the fixed length of the quantizer (``T * ceil(log2 K) + ceil(log2 M)`` bits per
image) or entropy coded with the model's :class:`~vqswitch.entropy.EntropyModel`; "auto" writes the smaller of
the two. Every container is decoded again and compared with the codes before it is returned or written: the codec
is lossless on codes, or it raises.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vqswitch._checks import check_choice
from vqswitch._io import atomic_write_bytes
from vqswitch.codes import Codes
from vqswitch.entropy import EntropyDensityError

from .container import MODES, build, check_text_field, pack_fixed, parse
from .decompress import decode_payload
from .images import ImageSource, progress_bar
from .model import CodecModel, as_codec_model

__all__ = ["compress", "compress_codes", "compress_files", "CompressReport"]

AUTO = -1  # "auto": the smaller of the two payloads


def _check_mode(mode) -> int:
    """The mode id of ``mode`` ("auto" -> AUTO, else its index in MODES); ValueError for any other value."""
    mode = check_choice("mode", mode, ("auto",) + MODES)
    return AUTO if mode == "auto" else MODES.index(mode)


def _pick(mode_id: int, payloads: dict) -> int:
    """The mode written: ``mode_id``, or for "auto" the smaller payload (fixed on a tie: no model needed)."""
    if mode_id != AUTO:
        return mode_id
    return 1 if 1 in payloads and len(payloads[1]) < len(payloads[0]) else 0


def _check_names(names, n: int, default: list[str]) -> list[str]:
    if names is None:
        names = default
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise TypeError(f"names must be a list of {n} str, got {type(names).__name__}")
    names = list(names)
    if len(names) != n:
        raise ValueError(f"names must hold one name per image ({n}), got {len(names)}")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"names[{i}] must be a str, got {type(name).__name__}")
        check_text_field(f"names[{i}]", name)
    return names


def _encode(cm: CodecModel, images: ImageSource, progress: bool = False) -> Codes:
    from vqswitch.adapters import encode_codes

    parts = []
    with progress_bar(len(images), "encoding", progress) as bar:
        for batch in images.batches():
            parts.append(encode_codes(cm.model, batch.to(cm.device, cm.dtype)).to("cpu"))
            bar.update(batch.shape[0])
    return Codes.cat(parts)


def _payloads(cm: CodecModel, mode_id: int, codes: Codes) -> dict:
    """{mode id: payload} of the modes ``mode_id`` asks for (both for "auto"). In "auto", codes too predictable for
    an entropy stream (:class:`~vqswitch.entropy.EntropyDensityError`) get the fixed payload only."""
    out = {}
    if mode_id in (AUTO, 0):
        out[0] = pack_fixed(codes)
    if mode_id in (AUTO, 1):
        try:
            out[1] = cm.entropy.encode(codes.groups, codes.indices)
        except EntropyDensityError:
            if mode_id == 1:
                raise
    return out


def _check_round_trip(cm: CodecModel, data: bytes, codes: Codes) -> None:
    """Decode what was just written and compare: the codec is lossless on codes, or it raises."""
    header, payload = parse(data)
    back = decode_payload(payload, header, cm)
    if back != codes:
        raise RuntimeError(f"internal error: the {header.mode} payload does not decode to the codes it was made from "
                           "(please report this bug); nothing was written")


# ------------------------------------------------------------------------------------------------ compress


def compress_codes(codec_model, codes: Codes, *, mode: str = "auto", names=None) -> bytes:
    """Store already computed codes in a container (what :func:`compress` does after encoding the images).

    Args:
        codec_model: the :class:`CodecModel` the codes belong to (its identity and image size are recorded).
        codes: :class:`~vqswitch.Codes` of N >= 1 images with the model's T, K and M.
        mode: "auto" (the smaller payload of the two; fixed on a tie), "entropy" or "fixed".
        names: N str (default "000000", "000001", ...).
    Returns: the container bytes; the payload is decoded again and compared before returning.
    Raises: TypeError for a non-Codes ``codes`` or non-str names; ValueError for an unknown mode, no images, codes
        made for another T, K or M, or names of the wrong count or too long.
    """
    cm = as_codec_model(codec_model, what="codec_model")
    mode_id = _check_mode(mode)
    if not isinstance(codes, Codes):
        raise TypeError(f"codes must be a vqswitch.Codes, got {type(codes).__name__}")
    have = (codes.num_tokens, codes.codebook_size, codes.num_groups)
    if have != (cm.num_tokens, cm.codebook_size, cm.num_groups):
        raise ValueError(f"codes have T,K,M={have[0]},{have[1]},{have[2]} but the model has "
                         f"T,K,M={cm.num_tokens},{cm.codebook_size},{cm.num_groups}")
    codes = codes.to("cpu")
    names = _check_names(names, codes.batch_size, [f"{i:06d}" for i in range(codes.batch_size)])
    payloads = _payloads(cm, mode_id, codes)
    mode_id = _pick(mode_id, payloads)
    data = build(mode_id, cm.identity, cm.source, cm.revision, cm.image_size, codes, names, payloads[mode_id])
    _check_round_trip(cm, data, codes)
    return data


def compress(codec_model, images, *, mode: str = "auto", names=None) -> bytes:
    """Compress images into one VQSF container (see :mod:`vqswitch.codec`).

    Args:
        codec_model: a :class:`CodecModel` (or a swapped ``nn.Module``, or a folder / Hub repo id to load).
        images: (N, 3, H, W) float tensor in the model's pixel range at exactly its image size, or a list of
            PIL images / image file paths (RGB or greyscale; palette and fully opaque RGBA also work).
        mode: "entropy" (entropy-coded codes), "fixed" (``bits_per_image`` bits per image) or "auto" (default:
            the smaller of the two payloads, so a file never costs more than fixed-length codes).
            "auto" stores fixed-length codes when they are too predictable for an entropy stream, where "entropy"
            raises :class:`~vqswitch.entropy.EntropyDensityError` (a ValueError; see :mod:`vqswitch.entropy`).
        names: N str stored with the images (default: file stems, else "000000", "000001", ...).
    Returns: the container bytes. The codes stored are exactly ``encode_codes(model, images)``; the payload is
        decoded again and compared before returning.
    Raises: TypeError for arguments of the wrong type; ValueError for an unknown mode, no images, names of the
        wrong count, a tensor of the wrong shape, size or range, or an image file of another size than the
        model's (naming the file, its size and the expected one), an unsupported Pillow mode (CMYK, 16-bit,
        transparency...) or a file Pillow cannot read; OSError reading a file.
    """
    cm = as_codec_model(codec_model, what="codec_model")
    _check_mode(mode)
    source = ImageSource(images, cm)
    if len(source) == 0:
        raise ValueError("there are no images to compress")
    names = _check_names(names, len(source), source.names)
    return compress_codes(cm, _encode(cm, source), mode=mode, names=names)


@dataclass(frozen=True)
class CompressReport:
    """What :func:`compress_files` wrote, with the cost of both modes for the same codes.

    ``fixed_bits_per_image``: the exact fixed-length cost; ``entropy_bits_per_image``: the entropy payload's
    actual bits / N; ``information_bits_per_image``: the entropy model's ideal ``-log2 p`` bits per image;
    ``*_bpp``: those per pixel; ``total_bytes``: the container file's size (header, names and CRC included) and
    ``container_bpp`` its bits per pixel; ``saving``: ``1 - entropy_bits / fixed_bits``.
    """

    path: Path
    mode: str
    count: int
    height: int
    width: int
    total_bytes: int
    fixed_bits_per_image: int
    entropy_bits_per_image: float
    information_bits_per_image: float
    names: tuple[str, ...] = field(repr=False)

    @property
    def fixed_bpp(self) -> float:
        return self.fixed_bits_per_image / (self.height * self.width)

    @property
    def entropy_bpp(self) -> float:
        return self.entropy_bits_per_image / (self.height * self.width)

    @property
    def bits_per_image(self) -> float:
        """Payload bits per image of the mode written."""
        return float(self.fixed_bits_per_image) if self.mode == "fixed" else self.entropy_bits_per_image

    @property
    def bpp(self) -> float:
        return self.bits_per_image / (self.height * self.width)

    @property
    def container_bpp(self) -> float:
        return 8 * self.total_bytes / (self.count * self.height * self.width)

    @property
    def saving(self) -> float:
        return 1.0 - self.entropy_bits_per_image / self.fixed_bits_per_image if self.fixed_bits_per_image else 0.0

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field and derived number."""
        keys = ("mode", "count", "height", "width", "total_bytes", "fixed_bits_per_image", "entropy_bits_per_image",
                "information_bits_per_image", "fixed_bpp", "entropy_bpp", "bits_per_image", "bpp", "container_bpp",
                "saving")
        return {"path": str(self.path), **{k: getattr(self, k) for k in keys}}


def compress_files(paths, model, out_path, *, mode: str = "auto", revision: str | None = None,
                   progress: bool = True) -> CompressReport:
    """Compress image files into one container file, written atomically (nothing is left on failure).

    Args:
        paths: image file paths (each RGB or greyscale, at exactly the model's image size); names stored are
            their stems.
        model: a :class:`CodecModel`, a swapped ``nn.Module``, or a folder / Hub repo id (loaded with
            ``revision``).
        out_path: the container file to write (replaced atomically).
        mode: "auto" (default; the smaller payload), "entropy" or "fixed". progress: show a progress bar.
    Returns: a :class:`CompressReport` (bits per image and bpp of both modes, the container's size).
    Raises: as :func:`compress`, and :func:`~vqswitch.codec.load_codec_model` when loading; OSError writing the file.
    """
    cm = as_codec_model(model, revision)
    mode_id = _check_mode(mode)
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("paths must be a list of image file paths, not a single path")
    paths = list(paths)
    for i, p in enumerate(paths):
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"paths[{i}] must be a file path, got {type(p).__name__}")
    source = ImageSource(paths, cm)
    if len(source) == 0:
        raise ValueError("paths is empty: there are no images to compress")
    codes = _encode(cm, source, progress)
    payloads = _payloads(cm, mode_id, codes)
    payloads.setdefault(0, pack_fixed(codes))  # the report gives both modes' costs
    if 1 not in payloads:
        try:
            payloads[1] = cm.entropy.encode(codes.groups, codes.indices)
        except EntropyDensityError:
            pass
    mode_id = _pick(mode_id, payloads)
    data = build(mode_id, cm.identity, cm.source, cm.revision, cm.image_size, codes, source.names, payloads[mode_id])
    _check_round_trip(cm, data, codes)
    atomic_write_bytes(out_path, data)
    info = torch.as_tensor(cm.entropy.information_bits(codes.groups, codes.indices), dtype=torch.float64)
    n, (h, w) = codes.batch_size, cm.image_size
    return CompressReport(path=Path(out_path), mode=MODES[mode_id], count=n, height=h, width=w, total_bytes=len(data),
                          fixed_bits_per_image=cm.bits_per_image,
                          entropy_bits_per_image=8 * len(payloads[1]) / n if 1 in payloads else float("nan"),
                          information_bits_per_image=float(info.sum()) / n, names=tuple(source.names))

"""An image codec on a fine-tuned swapped tokenizer: images -> codes -> one compressed file, and back.

:func:`compress` turns images into the model's discrete codes (:func:`vqswitch.adapters.encode_codes`) and
stores them in a self-describing **VQSF container**, either at the fixed length of the quantizer
(``bits_per_image = T * ceil(log2 K) + ceil(log2 M)`` bits per image) or entropy coded with the model's
:class:`~vqswitch.entropy.EntropyModel` (fewer bits for the same codes). :func:`decompress` checks the container,
recovers exactly the same codes -- the codec is lossless on codes, always; only the tokenizer is lossy -- and
reconstructs the images with :func:`vqswitch.adapters.decode_codes`, clamped to the model's pixel range.
:func:`compress_files` / :func:`decompress_file` do the same from image files to a container file and from a
container file to PNGs, atomically.

A container names the model that made it by its **identity** (:func:`model_identity`): a sha256 of the swapped
model's weights and buffers and of the entropy model. Decoding with any other model is refused, because the same
codes would silently give other pictures. When the model came from the Hub (a repo id, or a folder of the Hub
cache), the container also records the repo id and the commit it resolved to, so :func:`decompress` can load it
by itself. A local folder is never recorded: a path means nothing on another machine, breaks when the working
folder changes and shows the machine's layout; such a file names its model by identity only, and is decoded by
passing the model.

The container's byte format is documented in :mod:`vqswitch.container`.

A reader checks the magic, the CRC, the version and every length against the bytes actually present before it
decodes anything (a header claiming four billion images allocates nothing), and every failure to read a container
raises :class:`CodecError` (a ``ValueError``) saying what is wrong and what to do.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ._io import atomic_directory, atomic_write_bytes
from .codes import Codes
from .container import (FORMAT_VERSION, MAGIC, MODES, U16, CodecError, ContainerHeader, build, pack_fixed, parse,
                        read_header, unpack_fixed)
from .entropy import FILE_NAME as ENTROPY_FILE_NAME
from .entropy import EntropyDecodeError, EntropyDensityError, EntropyModel

__all__ = ["CodecError", "CodecModel", "ContainerHeader", "DecodedImages", "CompressReport", "load_codec_model",
           "model_identity", "compress", "decompress", "read_header", "compress_codes", "decompress_codes",
           "compress_files", "decompress_file",
           "output_file_names", "MAGIC", "FORMAT_VERSION", "MODES"]

_BATCH = 32  # images encoded / decoded per model call
_IDENTITY_TAG = b"vqswitch-codec-identity/1\0"
_OPAQUE_MODES = ("RGB", "L", "1", "P")  # Pillow modes converted to RGB without loss
_ALPHA_MODES = ("RGBA", "LA", "PA")  # accepted only when every pixel is fully opaque


# ------------------------------------------------------------------------------------------------ the model


def model_identity(model: nn.Module, entropy_model: EntropyModel) -> bytes:
    """The 32-byte sha256 identity of a (swapped model, entropy model) pair, as containers record it.

    Hashes, for each ``model.state_dict()`` entry in sorted name order, its name, dtype, shape and raw bytes
    (on the CPU, in the machine's little-endian order), then ``entropy_model.fingerprint()``. Independent of file
    names, save ids and metadata: a model saved and loaded again has the same identity; any changed weight, buffer
    (usage counts included) or entropy table gives another.
    Raises TypeError for a non-module model or an entropy model that is not an :class:`EntropyModel`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(entropy_model, EntropyModel):
        raise TypeError(f"entropy_model must be a vqswitch.entropy.EntropyModel, got {type(entropy_model).__name__}")
    h = hashlib.sha256(_IDENTITY_TAG)

    def put(blob: bytes) -> None:
        h.update(struct.pack("<Q", len(blob)))
        h.update(blob)

    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        put(name.encode("utf-8"))
        put(str(t.dtype).encode("ascii"))
        put(struct.pack(f"<{t.dim()}Q", *t.shape))
        put(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")  # a 1-D uint8 view: len() = bytes
    put(entropy_model.fingerprint().encode("ascii"))
    return h.digest()


class CodecModel:
    """A swapped tokenizer ready to compress: the model, its entropy model and their identity.

    Attributes:
        model: the swapped ``nn.Module`` (put in eval mode).
        entropy: the :class:`~vqswitch.entropy.EntropyModel` for entropy mode.
        identity: 32-byte sha256 (:func:`model_identity`), computed once here: do not change the model afterwards.
        source, revision: the Hub repo id ("org/name") and revision the model was loaded from, or None; recorded
            in containers (never a local path).
        image_size: (H, W) of the images it takes. pixel_range: (lo, hi) of their values.
        num_tokens, codebook_size, num_groups: T, K, M of its quantizer. bits_per_image: the fixed-length cost.

    ``CodecModel(model, entropy=None, *, source=None, revision=None)``: ``entropy=None`` builds the entropy model
    from the quantizer's usage counts (``EntropyModel.from_quantizer``). Raises TypeError for a non-module model,
    a non-EntropyModel entropy or a non-str source/revision; ValueError for an unswapped model, one whose images are
    not 3-channel, an entropy model made for another T, K or M, or a source that is not a Hub repo id
    (:func:`vqswitch.adapters.saving.is_repo_id`: local paths are not recorded).
    """

    def __init__(self, model: nn.Module, entropy: EntropyModel | None = None, *, source: str | None = None,
                 revision: str | None = None):
        from vqswitch.adapters import adapter_for, swapped_quantizer
        from vqswitch.adapters.saving import is_repo_id

        quantizer = swapped_quantizer(model)  # TypeError / ValueError for a non-module or unswapped model
        adapter = adapter_for(model)
        if entropy is None:
            entropy = EntropyModel.from_quantizer(quantizer)
        if not isinstance(entropy, EntropyModel):
            raise TypeError(f"entropy must be a vqswitch.entropy.EntropyModel or None, got {type(entropy).__name__}")
        for name, value in (("source", source), ("revision", revision)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
            try:
                size = len((value or "").encode("utf-8"))
            except UnicodeEncodeError:
                raise ValueError(f"{name} {value!r} is not valid UTF-8 text (an undecodable path?)") from None
            if size > U16:
                raise ValueError(f"{name} is {size} bytes of UTF-8; at most {U16} fit a container")
        if source and not is_repo_id(source):
            raise ValueError(f"source must be a Hub repo id 'org/name' or None, got {source!r}: containers record "
                             "where a model can be downloaded, never a local path")
        channels = adapter.image_channels(model)
        if channels != 3:
            raise ValueError(f"the codec compresses RGB images, but this model takes {channels}-channel images")
        entropy.check_fits(quantizer, name="entropy")
        self.model = model.eval()
        self.entropy = entropy
        self.source = source or None
        self.revision = revision or None
        self.image_size = tuple(int(s) for s in adapter.image_size(model))
        self.pixel_range = tuple(float(v) for v in adapter.pixel_range)
        self.num_tokens = quantizer.num_tokens
        self.codebook_size = quantizer.codebook_size
        self.num_groups = quantizer.num_groups
        self.bits_per_image = quantizer.bits_per_image
        self.identity = model_identity(model, entropy)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (images and codes are moved there)."""
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model's parameters (images are cast to it)."""
        p = next((p for p in self.model.parameters() if p.is_floating_point()), None)
        return p.dtype if p is not None else torch.float32

    def __repr__(self) -> str:
        return (f"CodecModel({self.identity.hex()[:12]}, source={self.source!r}, revision={self.revision!r}, "
                f"T={self.num_tokens}, K={self.codebook_size}, M={self.num_groups}, "
                f"image_size={self.image_size[0]}x{self.image_size[1]})")


_COMMIT = re.compile(r"[0-9a-f]{40}")


def load_codec_model(dir_or_repo: str | os.PathLike, *, revision: str | None = None) -> CodecModel:
    """Load a swapped model (a folder from ``save_swapped`` or a Hub repo id) and its entropy model for compressing.

    The entropy model is the folder's ``entropy_model.safetensors``; a save without one (older vqswitch) gets
    ``EntropyModel.from_quantizer`` of the loaded model. For a Hub repo, ``source`` is the repo id and ``revision``
    the commit the files were resolved to (so later decoding loads the same files); a folder of the Hub cache
    records its repo and commit the same way; any other local folder records nothing
    (:func:`vqswitch.adapters.saving.shareable_source`).
    Before building anything, the quantizer sizes ``config.json`` asks for are checked against the tensor shapes in
    ``model.safetensors``'s header (:func:`vqswitch.adapters.checkpoints.check_quantizer_fits`), so a config that
    lies about its sizes fails fast instead of allocating them.
    Raises what :func:`vqswitch.adapters.load_swapped` and ``EntropyModel.load`` raise (FileNotFoundError, OSError,
    ValueError), and ValueError for an entropy model that does not fit the model or sizes that do not fit the
    weights.
    """
    from vqswitch.adapters import load_swapped
    from vqswitch.adapters.saving import shareable_source

    _check_sizes_before_building(dir_or_repo, revision)
    model = load_swapped(dir_or_repo, revision=revision)
    path = Path(dir_or_repo)
    if path.is_dir():
        file = path / ENTROPY_FILE_NAME
        entropy = EntropyModel.load(file) if file.is_file() else None
        source, commit = shareable_source(path)
        return CodecModel(model, entropy, source=source, revision=commit)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo = str(dir_or_repo)
    try:  # EntryNotFoundError: absent on the Hub, or (offline) never downloaded -- an older save
        file = Path(hf_hub_download(repo, ENTROPY_FILE_NAME, revision=revision))
    except EntryNotFoundError:
        file = None
    entropy = EntropyModel.load(file) if file is not None else None
    anchor = file if file is not None else Path(hf_hub_download(repo, "config.json", revision=revision))
    commit = anchor.parent.name if _COMMIT.fullmatch(anchor.parent.name) else revision
    return CodecModel(model, entropy, source=repo, revision=commit)


def _check_sizes_before_building(dir_or_repo, revision) -> None:
    """ValueError unless the swapped model's config.json quantizer sizes match model.safetensors (headers only)."""
    import json

    from vqswitch.adapters.checkpoints import check_quantizer_fits, resolve_file, safetensors_shapes

    files = [resolve_file(dir_or_repo, name, revision=revision) for name in ("config.json", "model.safetensors")]
    try:
        config = json.loads(files[0].read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(files[0])!r} is not valid JSON: {err}") from None
    if isinstance(config, dict) and "quantizer" in config:  # else load_swapped says what is wrong
        check_quantizer_fits(config["quantizer"], safetensors_shapes(files[1]), what=str(files[0]))


def _as_codec_model(model, revision=None, *, what: str = "model") -> CodecModel:
    if isinstance(model, CodecModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_codec_model(model, revision=revision)
    if isinstance(model, nn.Module):
        return CodecModel(model)
    raise TypeError(f"{what} must be a CodecModel, a swapped nn.Module, or a model folder / Hub repo id, "
                    f"got {type(model).__name__}")


# ------------------------------------------------------------------------------------------------ images in


AUTO = -1  # "auto": the smaller of the two payloads


def _check_mode(mode) -> int:
    if mode == "auto":
        return AUTO
    if mode not in MODES:
        raise ValueError(f"mode must be 'auto' or one of {MODES}, got {mode!r}")
    return MODES.index(mode)


def _pick(mode_id: int, payloads: dict) -> int:
    """The mode written: ``mode_id``, or for "auto" the smaller payload (fixed on a tie: no model needed)."""
    if mode_id != AUTO:
        return mode_id
    return 1 if 1 in payloads and len(payloads[1]) < len(payloads[0]) else 0


def _label(item, i: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return repr(os.fspath(item))
    filename = getattr(item, "filename", None)
    return repr(filename) if filename else f"image {i}"


def _default_name(item, i: int) -> str:
    filename = item if isinstance(item, (str, os.PathLike)) else getattr(item, "filename", None)
    if not filename:
        return f"{i:06d}"
    stem = Path(os.fspath(filename)).stem
    return stem.encode("utf-8", "replace").decode("utf-8") or f"{i:06d}"  # lone surrogates of odd file names


def _check_pil(im, label: str, size: tuple[int, int]) -> None:
    """Mode and size checks that need only the image header."""
    if im.mode not in _OPAQUE_MODES + _ALPHA_MODES:
        raise ValueError(f"{label}: Pillow mode {im.mode!r} is not supported: give RGB or greyscale (L) images "
                         "(convert it yourself, e.g. CMYK or 16-bit images, to 8-bit RGB first)")
    h, w = size
    if im.size != (w, h):
        raise ValueError(f"{label} is {im.size[0]}x{im.size[1]} pixels (width x height) but this model takes "
                         f"{w}x{h}; resize or crop it first (the codec never resizes)")


def _pil_to_tensor(im, label: str, pixel_range) -> torch.Tensor:
    """An opened PIL image -> (3, H, W) float in ``pixel_range``; refuses transparent pixels."""
    if im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        alpha = np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., 3]
        if alpha.size and int(alpha.min()) < 255:
            raise ValueError(f"{label}: Pillow mode {im.mode!r} with transparent pixels is not supported "
                             "(composite it onto a background and save it as RGB first)")
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    lo, hi = pixel_range
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255.0
    return x * (hi - lo) + lo


def _open_image(path, label: str):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except UnidentifiedImageError as err:
        raise ValueError(f"{label} is not an image file Pillow can read ({err})") from err


class _Images:
    """The images given to compress, checked up front and read in batches: ``len``, ``names``, ``batches()``."""

    def __init__(self, images, cm: CodecModel):
        self.cm = cm
        if isinstance(images, torch.Tensor):
            from vqswitch.adapters.contract import check_images

            check_images(images, channels=3, size=cm.image_size, pixel_range=cm.pixel_range, name="images")
            self.tensor, self.items = images, None
            self.names = [f"{i:06d}" for i in range(images.shape[0])]
            return
        if isinstance(images, (str, bytes, os.PathLike)) or not hasattr(images, "__iter__"):
            raise TypeError("images must be a (N, 3, H, W) float tensor or a list of PIL images / image file paths, "
                            f"got {type(images).__name__}")
        from PIL import Image

        self.tensor, self.items = None, list(images)
        for i, item in enumerate(self.items):
            label = _label(item, i)
            if isinstance(item, (str, os.PathLike)):
                with _open_image(item, label) as im:  # reads the header only
                    _check_pil(im, label, cm.image_size)
            elif isinstance(item, Image.Image):
                _check_pil(item, label, cm.image_size)
            else:
                raise TypeError(f"images[{i}] must be a PIL image or a file path, got {type(item).__name__}")
        self.names = [_default_name(item, i) for i, item in enumerate(self.items)]

    def __len__(self) -> int:
        return self.tensor.shape[0] if self.tensor is not None else len(self.items)

    def batches(self):
        """Yield (B, 3, H, W) float batches in the model's pixel range."""
        for start in range(0, len(self), _BATCH):
            if self.tensor is not None:
                yield self.tensor[start:start + _BATCH]
                continue
            out = []
            for i in range(start, min(len(self), start + _BATCH)):
                item, label = self.items[i], _label(self.items[i], i)
                if isinstance(item, (str, os.PathLike)):
                    with _open_image(item, label) as im:
                        _check_pil(im, label, self.cm.image_size)  # the file may have changed since
                        out.append(_pil_to_tensor(im, label, self.cm.pixel_range))
                else:
                    out.append(_pil_to_tensor(item, label, self.cm.pixel_range))
            yield torch.stack(out)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


def _encode(cm: CodecModel, images: _Images, progress: bool = False) -> Codes:
    from vqswitch.adapters import encode_codes

    parts = []
    with _progress(len(images), "encoding", progress) as bar:
        for batch in images.batches():
            parts.append(encode_codes(cm.model, batch.to(cm.device, cm.dtype)).to("cpu"))
            bar.update(batch.shape[0])
    return Codes.cat(parts)


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
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError as err:
            raise ValueError(f"names[{i}] is not encodable as UTF-8 ({err.reason})") from None
        if size > U16:
            raise ValueError(f"names[{i}] is {size} bytes of UTF-8; at most {U16} fit the container")
    return names


# ------------------------------------------------------------------------------------------------ codes <-> payload


def _decode_payload(payload: bytes, header: ContainerHeader, cm: CodecModel) -> Codes:
    n, t, k, m = header.count, header.num_tokens, header.codebook_size, header.num_groups
    if header.mode == "fixed":
        groups, indices = unpack_fixed(payload, header)  # int64 arrays
        groups, indices = torch.from_numpy(groups), torch.from_numpy(indices)
    else:
        try:
            groups, indices = cm.entropy.decode(payload, n)
        except EntropyDecodeError as err:
            raise CodecError(f"the container's entropy-coded payload is corrupted ({err}); get the file again") from err
        groups, indices = torch.as_tensor(groups).to(torch.int64).cpu(), torch.as_tensor(indices).to(torch.int64).cpu()
    if tuple(groups.shape) != (n,) or tuple(indices.shape) != (n, t):
        raise CodecError(f"the container's payload decoded to codes of shapes {tuple(groups.shape)}, "
                         f"{tuple(indices.shape)} instead of ({n},), ({n}, {t}); it is corrupted")
    if n and (int(groups.min()) < 0 or int(groups.max()) >= m):
        raise CodecError(f"the container is corrupted: a decoded group index lies outside [0, M={m})")
    if n and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise CodecError(f"the container is corrupted: a decoded token index lies outside [0, K={k})")
    return Codes(groups, indices, k, m)


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
    back = _decode_payload(payload, header, cm)
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
    cm = _as_codec_model(codec_model, what="codec_model")
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
    """Compress images into one VQSF container (see the module docstring).

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
    cm = _as_codec_model(codec_model, what="codec_model")
    _check_mode(mode)
    source = _Images(images, cm)
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
    Raises: as :func:`compress`, and :func:`load_codec_model` when loading; OSError writing the file.
    """
    cm = _as_codec_model(model, revision)
    mode_id = _check_mode(mode)
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("paths must be a list of image file paths, not a single path")
    paths = list(paths)
    for i, p in enumerate(paths):
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"paths[{i}] must be a file path, got {type(p).__name__}")
    source = _Images(paths, cm)
    if len(source) == 0:
        raise ValueError("paths is empty: there are no images to compress")
    codes = _encode(cm, source, progress)
    payloads = _payloads(cm, AUTO if mode_id == AUTO else mode_id, codes)
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


# ------------------------------------------------------------------------------------------------ decompress


@dataclass(frozen=True, eq=False)
class DecodedImages:
    """What :func:`decompress` returns: ``images`` (N, 3, H, W) float32 on the CPU in the model's pixel range
    (clamped), ``names`` (N str), the container's ``header`` and the decoded ``codes`` (exactly those compressed)."""

    images: torch.Tensor
    names: list[str]
    header: ContainerHeader
    codes: Codes

    def __len__(self) -> int:
        return len(self.names)


def _model_for(header: ContainerHeader, codec_model, revision) -> CodecModel:
    """The model to decode ``header``'s container with: the one given, or the one it records; checked."""
    if codec_model is None:
        if header.source is None:
            raise CodecError(f"the container does not record which model made it (identity "
                             f"{header.identity_hex[:12]}; files made from a local folder record none): pass the "
                             "model that made it (--model on the command line, the model argument in Python)")
        rev = revision if revision is not None else header.revision
        try:
            codec_model = load_codec_model(header.source, revision=rev)
        except (OSError, ValueError) as err:
            where = header.source + (f" at revision {rev}" if rev else "")
            raise CodecError(f"cannot load the model the container was compressed with ({where}): {err}; pass "
                             "the model (--model on the command line, the model argument in Python)") from err
    else:
        codec_model = _as_codec_model(codec_model, revision, what="codec_model")
    if codec_model.identity != header.identity:
        raise CodecError(
            f"this container was compressed with model {header.identity_hex[:12]} "
            f"({header.source or 'source not recorded'}), not {codec_model.identity.hex()[:12]} "
            f"({codec_model.source or 'the model given'}); decode it with the model (and entropy model) that made it")
    have = (header.num_tokens, header.codebook_size, header.num_groups, header.height, header.width)
    want = (codec_model.num_tokens, codec_model.codebook_size, codec_model.num_groups, *codec_model.image_size)
    if have != want:
        raise CodecError(f"the container's header (T,K,M,H,W={have}) disagrees with its own model ({want}); "
                         "it is corrupted or was forged")
    return codec_model


def _reconstruct(cm: CodecModel, codes: Codes, progress: bool = False):
    """Yield (B, 3, H, W) float32 CPU batches of clamped reconstructions."""
    from vqswitch.adapters import decode_codes

    lo, hi = cm.pixel_range
    with _progress(codes.batch_size, "decoding", progress) as bar:
        for start in range(0, codes.batch_size, _BATCH):
            part = codes[start:start + _BATCH].to(cm.device)
            yield decode_codes(cm.model, part).clamp(lo, hi).float().cpu()
            bar.update(part.batch_size)


def decompress_codes(data: bytes, codec_model=None, *, revision: str | None = None) -> tuple[ContainerHeader, Codes]:
    """Check a container and decode its codes, without reconstructing images.

    ``codec_model`` and ``revision`` as :func:`decompress` (the model is needed for its identity and, in entropy
    mode, its entropy model). Returns (header, codes): CPU int64 :class:`~vqswitch.Codes`, exactly those compressed.
    Raises: as :func:`decompress`.
    """
    header, payload = parse(data)
    cm = _model_for(header, codec_model, revision)
    return header, _decode_payload(payload, header, cm)


def decompress(data: bytes, codec_model=None, *, revision: str | None = None) -> DecodedImages:
    """Decode a container from :func:`compress` into images.

    Args:
        data: the container bytes.
        codec_model: the :class:`CodecModel` (or folder / repo id) it was compressed with; None loads the model
            the container records (its source at its revision, or ``revision`` when given) -- only do that for
            files you trust, since their header names what gets loaded.
    Returns: :class:`DecodedImages`: images (N, 3, H, W) float32 = ``decode_codes(model, codes)`` clamped to the
        pixel range, names, header and codes.
    Raises: CodecError for a container that is not intact (truncated, corrupted, foreign, unknown version), one made
        with another model (naming both identities), or whose recorded model cannot be loaded; TypeError when
        ``data`` is not bytes-like.
    """
    header, payload = parse(data)
    cm = _model_for(header, codec_model, revision)
    codes = _decode_payload(payload, header, cm)
    images = torch.cat(list(_reconstruct(cm, codes)))
    return DecodedImages(images, list(header.names), header, codes)


_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_MAX_NAME_BYTES = 200


def _safe(name: str) -> bool:
    """A plain file-name stem: no separators, no '..', no control characters, not hidden or Windows-reserved."""
    if not name or name != name.strip() or name.startswith(".") or name.endswith("."):
        return False
    if any(c in name for c in '/\\:*?"<>|') or ".." in name:
        return False
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name):
        return False
    if name.split(".")[0].lower() in _RESERVED:
        return False
    return len(name.encode("utf-8")) <= _MAX_NAME_BYTES


def output_file_names(names) -> list[str]:
    """Safe, unique PNG file names for decoded images: ``<name>.png``, or ``<index>.png`` (six digits) for a name
    that is unsafe (a path, '..', control characters, hidden, reserved, too long). Uniqueness ignores case (for
    case-insensitive file systems); a repeated name gets ``-<index>`` appended."""
    out, used = [], set()
    for i, name in enumerate(names):
        stem = name if isinstance(name, str) and _safe(name) else f"{i:06d}"
        candidate, extra = stem, 0
        while candidate.casefold() in used:
            extra += 1
            candidate = f"{stem}-{i:06d}" if extra == 1 else f"{stem}-{i:06d}-{extra}"
        used.add(candidate.casefold())
        out.append(candidate + ".png")
    return out


def _to_png_array(image: torch.Tensor, pixel_range) -> np.ndarray:
    lo, hi = pixel_range
    x = ((image.clamp(lo, hi) - lo) / (hi - lo) * 255.0).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def decompress_file(path, out_dir, *, model=None, revision: str | None = None, progress: bool = True,
                    overwrite: bool = False) -> list[Path]:
    """Decode a container file into one PNG per image in ``out_dir``, all atomically (on failure no new file
    appears there).

    File names come from the stored names made safe by :func:`output_file_names` (base names only; an unsafe name
    becomes the image's index). Existing files -- and symlinks, even dangling ones -- are never replaced unless
    ``overwrite=True`` (which replaces the link itself, never its target). The PNGs are built in a temporary folder
    beside ``out_dir`` (:func:`vqswitch._io.atomic_directory`); one a killed run left is removed by the next.
    Args: model: the :class:`CodecModel` (or folder / repo id) it was made with; None loads the recorded one.
    Returns: the PNG paths, in image order.
    Raises: CodecError as :func:`decompress`; FileExistsError naming an existing output file; OSError reading or
        writing.
    """
    data = Path(path).read_bytes()
    header, payload = parse(data)
    cm = _model_for(header, model, revision)
    codes = _decode_payload(payload, header, cm)
    out_dir = Path(out_dir)
    files = output_file_names(header.names)
    if not overwrite:
        taken = [f for f in files if os.path.lexists(out_dir / f)]  # a link, even dangling, is taken
        if taken:
            raise FileExistsError(f"{str(out_dir / taken[0])!r} already exists ({len(taken)} of the {len(files)} "
                                  "output files do); choose another folder or pass overwrite=True")
    from PIL import Image

    with atomic_directory(out_dir) as tmp:
        names = iter(files)
        for batch in _reconstruct(cm, codes, progress):
            for image in batch:
                Image.fromarray(_to_png_array(image, cm.pixel_range)).save(tmp / next(names), format="PNG")
    return [out_dir / f for f in files]

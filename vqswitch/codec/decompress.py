"""Containers -> codes -> images: :func:`decompress_codes`, :func:`decompress` and :func:`decompress_file`.

Every container is checked whole (:func:`vqswitch.codec.container.parse`) before anything is decoded, and is decoded
only with the model whose identity it records; the codes decoded are exactly those compressed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vqswitch._io import atomic_directory
from vqswitch.codes import Codes
from vqswitch.entropy import EntropyDecodeError

from .container import CodecError, ContainerHeader, parse, unpack_fixed
from .images import BATCH, output_file_names, progress_bar, save_png
from .model import CodecModel, as_codec_model, load_codec_model

__all__ = ["DecodedImages", "decompress_codes", "decompress", "decompress_file", "decode_payload"]


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


def decode_payload(payload: bytes, header: ContainerHeader, cm: CodecModel) -> Codes:
    """The CPU int64 :class:`~vqswitch.Codes` of a container's payload (``header`` from :func:`parse`), decoded
    with ``cm``'s entropy model in entropy mode. Raises CodecError for a payload that does not decode to N images of
    T in-range indices."""
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
        codec_model = as_codec_model(codec_model, revision, what="codec_model")
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
    with progress_bar(codes.batch_size, "decoding", progress) as bar:
        for start in range(0, codes.batch_size, BATCH):
            part = codes[start:start + BATCH].to(cm.device)
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
    return header, decode_payload(payload, header, cm)


def decompress(data: bytes, codec_model=None, *, revision: str | None = None) -> DecodedImages:
    """Decode a container from :func:`~vqswitch.codec.compress` into images.

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
    codes = decode_payload(payload, header, cm)
    images = torch.cat(list(_reconstruct(cm, codes)))
    return DecodedImages(images, list(header.names), header, codes)


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
    codes = decode_payload(payload, header, cm)
    out_dir = Path(out_dir)
    files = output_file_names(header.names)
    if not overwrite:
        taken = [f for f in files if os.path.lexists(out_dir / f)]  # a link, even dangling, is taken
        if taken:
            raise FileExistsError(f"{str(out_dir / taken[0])!r} already exists ({len(taken)} of the {len(files)} "
                                  "output files do); choose another folder or pass overwrite=True")
    with atomic_directory(out_dir) as tmp:
        names = iter(files)
        for batch in _reconstruct(cm, codes, progress):
            for image in batch:
                save_png(image, tmp / next(names), cm.pixel_range)
    return [out_dir / f for f in files]

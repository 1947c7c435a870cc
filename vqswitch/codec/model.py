"""The codec's model: a swapped tokenizer, its entropy model and their identity (:class:`CodecModel`), loaded from a
folder or the Hub (:func:`load_codec_model`).

A container names the model that made it by its **identity** (:func:`model_identity`): a sha256 of the swapped
model's weights and buffers and of the entropy model. When the model came from the Hub (a repo id, or a folder of the
Hub cache), :class:`CodecModel` also carries the repo id and the commit it resolved to; a local folder is never
recorded (a path means nothing on another machine).
"""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import torch
import torch.nn as nn

from vqswitch._checks import check_str, is_repo_id
from vqswitch._io import read_json_object
from vqswitch.entropy import EntropyModel
from vqswitch.formats import CODEC_IDENTITY_TAG, CONFIG_FILE, ENTROPY_FILE, WEIGHTS_FILE

from .container import check_text_field

__all__ = ["model_identity", "CodecModel", "load_codec_model", "as_codec_model"]


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
    h = hashlib.sha256(CODEC_IDENTITY_TAG)

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
    (:func:`vqswitch._checks.is_repo_id`: local paths are not recorded).
    """

    def __init__(self, model: nn.Module, entropy: EntropyModel | None = None, *, source: str | None = None,
                 revision: str | None = None):
        from vqswitch.adapters import adapter_for, swapped_quantizer

        quantizer = swapped_quantizer(model)  # TypeError / ValueError for a non-module or unswapped model
        adapter = adapter_for(model)
        if entropy is None:
            entropy = EntropyModel.from_quantizer(quantizer)
        if not isinstance(entropy, EntropyModel):
            raise TypeError(f"entropy must be a vqswitch.entropy.EntropyModel or None, got {type(entropy).__name__}")
        for name, value in (("source", source), ("revision", revision)):
            check_text_field(name, check_str(name, value, optional=True, empty=True) or "")
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
        file = path / ENTROPY_FILE
        entropy = EntropyModel.load(file) if file.is_file() else None
        source, commit = shareable_source(path)
        return CodecModel(model, entropy, source=source, revision=commit)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo = str(dir_or_repo)
    try:  # EntryNotFoundError: absent on the Hub, or (offline) never downloaded -- an older save
        file = Path(hf_hub_download(repo, ENTROPY_FILE, revision=revision))
    except EntryNotFoundError:
        file = None
    entropy = EntropyModel.load(file) if file is not None else None
    anchor = file if file is not None else Path(hf_hub_download(repo, CONFIG_FILE, revision=revision))
    commit = shareable_source(anchor.parent)[1]  # the Hub cache snapshot folder names the commit
    return CodecModel(model, entropy, source=repo, revision=commit or revision)


def _check_sizes_before_building(dir_or_repo, revision) -> None:
    """ValueError unless the swapped model's config.json quantizer sizes match model.safetensors (headers only)."""
    from vqswitch.adapters.checkpoints import check_quantizer_fits, resolve_file, safetensors_shapes

    files = [resolve_file(dir_or_repo, name, revision=revision) for name in (CONFIG_FILE, WEIGHTS_FILE)]
    config = read_json_object(files[0], "config")
    if "quantizer" in config:  # else load_swapped says what is wrong
        check_quantizer_fits(config["quantizer"], safetensors_shapes(files[1]), what=str(files[0]))


def as_codec_model(model, revision=None, *, what: str = "model") -> CodecModel:
    """``model`` as a :class:`CodecModel`: one as it is, a swapped ``nn.Module`` wrapped, a folder / Hub repo id
    loaded (:func:`load_codec_model` at ``revision``). Raises TypeError (naming ``what``) for anything else."""
    if isinstance(model, CodecModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_codec_model(model, revision=revision)
    if isinstance(model, nn.Module):
        return CodecModel(model)
    raise TypeError(f"{what} must be a CodecModel, a swapped nn.Module, or a model folder / Hub repo id, "
                    f"got {type(model).__name__}")

"""Reading upstream checkpoints: where the file is, what is in it, and a strict, explained load.

Every adapter's ``load_pretrained`` goes through these three functions, so that a checkpoint from
a local path, a local folder or a Hub repository (``hf_hub_download``, which honours
``HF_HUB_OFFLINE`` and the local cache) is found the same way, and a checkpoint that does not fit
the model fails with one message naming the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from vqswitch._checks import check_path, is_repo_id

__all__ = ["resolve_file", "optional_file", "hub_repo_id", "read_state_dict", "load_state_dict_strict",
           "safetensors_shapes", "check_quantizer_fits"]

_SAFETENSORS = (".safetensors",)
_PICKLES = (".bin", ".pt", ".pth", ".ckpt")


def hub_repo_id(repo_id_or_path) -> str | None:
    """The Hub repo id ``repo_id_or_path`` names, or None: a str or path that is not an existing local file or
    folder and reads as ``"org/name"`` (:func:`vqswitch._checks.is_repo_id`). Raises nothing."""
    if not isinstance(repo_id_or_path, (str, os.PathLike)):
        return None
    text = os.fspath(repo_id_or_path)
    if not isinstance(text, str) or not text or Path(text).exists():
        return None
    return text if is_repo_id(text) else None


def resolve_file(repo_id_or_path, filename: str | None = None, *, revision: str | None = None,
                 cache_dir=None, subfolder: str | None = None) -> Path:
    """The local path of a checkpoint file.

    Args:
        repo_id_or_path: a file, a folder (then ``filename`` names the file inside it, under
            ``subfolder`` if given) or a Hub repo id ``"org/name"`` (then ``filename`` is required).
        filename: the file's name inside the folder or repository.
        revision, cache_dir: passed to ``huggingface_hub.hf_hub_download`` for repo ids.
        subfolder: a folder inside the folder or repository.
    Returns: the file's path (for a repo id, inside the Hub cache).
    Raises:
        TypeError: repo_id_or_path is not a str or os.PathLike.
        FileNotFoundError: a local file or folder entry that does not exist.
        ValueError: a folder or repo id without ``filename``; an empty string.
        OSError (from huggingface_hub): a repository or file that cannot be downloaded or is not cached
            when offline.
    """
    path = check_path("repo_id_or_path", repo_id_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        if filename is None:
            raise ValueError(f"{str(path)!r} is a folder: pass filename= to name the checkpoint file inside it")
        file = path / (subfolder or "") / filename
        if not file.is_file():
            raise FileNotFoundError(f"no checkpoint file {filename!r} in {str(file.parent)!r}")
        return file
    repo_id = hub_repo_id(repo_id_or_path)
    if repo_id is None:
        raise FileNotFoundError(f"{str(repo_id_or_path)!r} is neither an existing file or folder nor a Hub repo id "
                                "'org/name'")
    if filename is None:
        raise ValueError(f"loading from the Hub repo {repo_id!r} needs filename= (the checkpoint file in the repo)")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, subfolder=subfolder, revision=revision, cache_dir=cache_dir))


def optional_file(repo_id_or_path, filename: str, *, revision: str | None = None, cache_dir=None,
                  subfolder: str | None = None) -> Path | None:
    """:func:`resolve_file` of a file that may be absent: None when the folder or the Hub repository has no
    ``filename`` (or, offline, none is cached). Raises what :func:`resolve_file` raises otherwise."""
    from huggingface_hub.utils import EntryNotFoundError

    try:
        return resolve_file(repo_id_or_path, filename, revision=revision, cache_dir=cache_dir, subfolder=subfolder)
    except (FileNotFoundError, EntryNotFoundError):
        return None


def read_state_dict(path, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors, on the CPU, as ``{name: tensor}``.

    ``.safetensors`` files are read with safetensors; ``.bin``/``.pt``/``.pth``/``.ckpt`` with
    ``torch.load(weights_only=True)`` (never arbitrary pickles). ``key`` picks a nested dict
    (e.g. ``"state_dict"`` of a Lightning checkpoint); without it, a file holding a
    ``"state_dict"`` dict and no tensors at its top level is unwrapped.
    Raises: FileNotFoundError, ValueError for an unknown suffix, a file that is not a state dict,
        or a missing ``key``; the loader's own error (chained) for a corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix in _SAFETENSORS:
            import safetensors.torch

            obj = safetensors.torch.load_file(str(path), device="cpu")
        elif suffix in _PICKLES:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"unknown checkpoint suffix {suffix!r} in {str(path)!r}: expected one of "
                             f"{_SAFETENSORS + _PICKLES}")
    except ValueError:
        raise
    except Exception as err:  # corrupt or non-weights pickle: say which file, keep the cause
        raise ValueError(f"cannot read checkpoint {str(path)!r}: {type(err).__name__}: {err}") from err
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"checkpoint {str(path)!r} has no entry {key!r}")
        obj = obj[key]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and \
            not any(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"checkpoint {str(path)!r} is not a state dict of named tensors")
    return dict(obj)


def _listing(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], *,
                           what: str = "checkpoint") -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with one clear error instead of torch's.

    Raises: ValueError naming ``what`` and listing missing keys, unexpected keys and keys whose
        shape differs (expected vs found), when any of the three is non-empty.
    """
    own = module.state_dict()
    missing = own.keys() - state_dict.keys()
    unexpected = state_dict.keys() - own.keys()
    shapes = [f"{k}: expected {tuple(own[k].shape)}, found {tuple(state_dict[k].shape)}"
              for k in sorted(own.keys() & state_dict.keys()) if own[k].shape != state_dict[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:8]))
        raise ValueError(f"{what} does not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)


_MAX_SAFETENSORS_HEADER = 100 * 2**20


def safetensors_shapes(path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every tensor in a safetensors file, read from its JSON header alone (no tensor is
    loaded; at most 100 MiB of header is read).

    Raises: FileNotFoundError; ValueError for a file whose header is not a readable safetensors header, or
        whose tensors' data offsets run past the end of the file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{str(path)!r} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise ValueError(f"{str(path)!r} is not a safetensors file (header length {n})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        shapes = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
            if not 0 <= begin <= end <= size - 8 - n or min(shape, default=0) < 0:
                raise ValueError(f"tensor {name!r} lies outside the file")
            shapes[name] = shape
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{str(path)!r} has an unreadable safetensors header: {err}") from None
    return shapes


def check_quantizer_fits(quantizer_config: dict, shapes: dict[str, tuple[int, ...]], *, what: str = "config") -> None:
    """Check, before anything real is built, that a SwitchableTokenQuantizer config matches the tensors a weights
    file holds: the quantizer is built on torch's ``meta`` device (no memory) and each of its tensors' shapes is
    compared with ``shapes`` (from :func:`safetensors_shapes`) under the prefix ending in ``quantizer.`` that holds
    ``codebooks``. So a config asking for K=65536 codes cannot make the loader allocate gigabytes before failing.

    Raises: ValueError naming ``what`` for a config the quantizer refuses (TypeError too), weights without one
        quantizer, or any tensor whose shape differs or is missing.
    """
    from vqswitch.quantizer import SwitchableTokenQuantizer

    if not isinstance(quantizer_config, dict):
        raise ValueError(f"{what}: the quantizer entry must be a mapping, got {type(quantizer_config).__name__}")
    prefixes = [k[:-len("codebooks")] for k in shapes if k.endswith("quantizer.codebooks") or k == "codebooks"]
    if len(prefixes) != 1:
        raise ValueError(f"{what}: the weights file holds {len(prefixes)} quantizer codebooks, expected 1")
    try:
        with torch.device("meta"):
            quantizer = SwitchableTokenQuantizer(**quantizer_config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: invalid quantizer config: {err}") from None
    wrong = []
    for name, tensor in quantizer.state_dict().items():
        have = shapes.get(prefixes[0] + name)
        if have != tuple(tensor.shape):
            wrong.append(f"{name}: config needs {tuple(tensor.shape)}, weights hold {have}")
    if wrong:
        raise ValueError(f"{what} does not match its weights file (nothing was built): " + "; ".join(wrong[:4]))

"""Saving and loading swapped models, and loading upstream checkpoints by family.

A swapped-model folder holds three files, written atomically:

* ``config.json``: ``{"format": "vqswitch-swapped", "format_version": 1, "adapter": <family>,
  "base_config": <the base model's config>, "shim": <upstream quantizer settings kept by the shim>,
  "quantizer": <SwitchableTokenQuantizer config>, "save_id": <random id>}``;
* ``model.safetensors``: the whole swapped model's ``state_dict`` (base model and quantizer,
  under ``quantize.quantizer.*``), with the same ``save_id`` in its metadata;
* ``entropy_model.safetensors``: the codec's per-(group, token) code statistics
  (:class:`vqswitch.entropy.EntropyModel`), by default built from the quantizer's usage counts.
  :func:`load_swapped` does not need it; :mod:`vqswitch.codec` does (and rebuilds it from the
  usage counts for folders saved without one).

Each file is replaced atomically; the shared ``save_id`` lets :func:`load_swapped` refuse a folder
whose two files come from different saves (a save interrupted between the two renames).
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import safetensors.torch
import torch
import torch.nn as nn

from vqswitch._checks import HUB_NAME, is_repo_id
from vqswitch._io import atomic_directory, read_json_object
from vqswitch.formats import CONFIG_FILE as CONFIG_NAME
from vqswitch.formats import ENTROPY_FILE
from vqswitch.formats import SWAPPED_FORMAT as FORMAT
from vqswitch.formats import SWAPPED_FORMAT_VERSION as FORMAT_VERSION
from vqswitch.formats import WEIGHTS_FILE as WEIGHTS_NAME
from vqswitch.quantizer import SwitchableTokenQuantizer

from .checkpoints import hub_repo_id, load_state_dict_strict
from .contract import adapter_for, adapter_named, adapters
from .generic import GENERIC_PREFIX, adapter_for_class
from .native_saving import NATIVE_SAVE_METHODS, SwappedSaveError, guard_native_saving, unguard_native_saving
from .swap import swapped_quantizer

__all__ = ["save_swapped", "load_swapped", "load_pretrained", "load_model", "load_builder", "detect_family",
           "guard_native_saving", "unguard_native_saving", "SwappedSaveError", "NATIVE_SAVE_METHODS", "is_repo_id",
           "shareable_source", "FORMAT", "FORMAT_VERSION"]


# ------------------------------------------------------------------------------------------------ sources
_SNAPSHOT = re.compile(rf"models--({HUB_NAME})--({HUB_NAME})")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def shareable_source(dir_or_repo, revision: str | None = None) -> tuple[str | None, str | None]:
    """Where a model came from, as it may be written into files that others read: ``(repo_id, revision)``.

    * an existing local path: ``(None, None)`` -- a local path means nothing on another machine, breaks when the
      working folder changes, and shows the machine's layout -- except the root of a Hub cache snapshot
      (``.../models--ORG--NAME/snapshots/<commit>``), which is ``("ORG/NAME", commit)``;
    * a Hub id ``"org/name"`` (:func:`is_repo_id`) that is not a local path: ``(repo_id, revision)``;
    * anything else: ``(None, None)``.
    ``revision`` must be None or a str. Raises nothing else.
    """
    text = os.fspath(dir_or_repo) if isinstance(dir_or_repo, (str, os.PathLike)) else None
    if not text:
        return None, None
    path = Path(text)
    if path.exists():
        parts = path.resolve().parts
        if len(parts) >= 3 and parts[-2] == "snapshots" and _COMMIT.fullmatch(parts[-1]):
            match = _SNAPSHOT.fullmatch(parts[-3])
            if match and is_repo_id(f"{match[1]}/{match[2]}"):
                return f"{match[1]}/{match[2]}", parts[-1]
        return None, None
    if is_repo_id(text):
        return text, revision
    return None, None


def _tensors_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, contiguous, with storage shared between entries copied apart
    (safetensors refuses shared storage)."""
    seen, out = set(), {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        if v.numel() and key in seen:
            v = v.clone()
        seen.add(key)
        out[k] = v
    return out


def save_swapped(model: nn.Module, save_directory: str | os.PathLike, *, entropy_model=None) -> Path:
    """Write a swapped model to ``save_directory`` (``config.json``, ``model.safetensors`` and
    ``entropy_model.safetensors``, each atomically).

    Args:
        model: a model swapped with :func:`vqswitch.adapters.swap_quantizer`.
        save_directory: the folder (created; other files in it are kept).
        entropy_model: the codec's :class:`vqswitch.entropy.EntropyModel`; default
            ``EntropyModel.from_quantizer(quantizer)`` (the recorded usage counts, smoothed).
    Returns the folder. Raises ValueError for an unswapped model, one no adapter recognises, or an
    entropy model whose (M, T, K) differ from the quantizer's; OSError when the folder cannot be
    written (then nothing in it changes).
    """
    from vqswitch.entropy import EntropyModel

    adapter = adapter_for(model)
    quantizer = swapped_quantizer(model)
    if entropy_model is None:
        entropy_model = EntropyModel.from_quantizer(quantizer)
    elif not isinstance(entropy_model, EntropyModel):
        raise TypeError(f"entropy_model must be a vqswitch.entropy.EntropyModel, got {type(entropy_model).__name__}")
    entropy_model.check_fits(quantizer)
    save_id = uuid.uuid4().hex
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "adapter": adapter.name,
        "base_config": adapter.base_config(model), "shim": adapter.quantize_module(model).settings(),
        "quantizer": quantizer.get_config(), "save_id": save_id,
    }
    text = json.dumps(config, indent=2, sort_keys=True)
    with atomic_directory(save_directory) as tmp:
        (tmp / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
        safetensors.torch.save_file(_tensors_for_saving(model), str(tmp / WEIGHTS_NAME),
                                    metadata={"format": FORMAT, "save_id": save_id})
        entropy_model.save(tmp / ENTROPY_FILE)
    return Path(save_directory)


def _swapped_files(dir_or_repo, revision, cache_dir) -> tuple[Path, Path]:
    path = Path(dir_or_repo)
    if path.is_dir():
        files = path / CONFIG_NAME, path / WEIGHTS_NAME
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{str(path)!r} is not a swapped-model folder: missing {missing}")
        return files
    repo_id = hub_repo_id(dir_or_repo)
    if repo_id is None:
        raise FileNotFoundError(f"{str(dir_or_repo)!r} is neither a folder nor a Hub repo id 'org/name'")
    from huggingface_hub import hf_hub_download

    return tuple(Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir))
                 for name in (CONFIG_NAME, WEIGHTS_NAME))


def load_swapped(dir_or_repo: str | os.PathLike, *, revision: str | None = None, cache_dir=None,
                 map_location: str | torch.device = "cpu", model: nn.Module | type | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_swapped`, from a folder or a Hub repo id, exactly.

    ``model``: None (the adapter builds the base model from the saved config; for a model described with
    :func:`vqswitch.adapters.describe_model` the describing code must have run, and the class must build
    without arguments or through its ``build=``), a model class described with ``describe_model``
    (built the same way), or an instance (swapped or not) of the saved family: its weights are replaced
    in place and it is returned.
    Returns the swapped model in eval mode on ``map_location``.
    Raises: FileNotFoundError for a folder without the two files; ValueError for a config that is
        not a vqswitch swapped-model config (or a newer format version), an unknown adapter, files
        from two different saves, a ``model`` of another family or architecture than the saved one,
        or weights that do not fit the config (naming the keys); TypeError for a ``model`` that is
        neither a module nor a class; OSError (from huggingface_hub) for a repository that cannot be
        fetched or is not cached offline.
    """
    config_file, weights_file = _swapped_files(dir_or_repo, revision, cache_dir)
    config = read_json_object(config_file, "swapped-model config")
    if config.get("format") != FORMAT:
        raise ValueError(f"{str(config_file)!r} is not a vqswitch swapped-model config (format {FORMAT!r}); "
                         "for an upstream checkpoint use vqswitch.adapters.load_pretrained")
    if not isinstance(config.get("format_version"), int) or config["format_version"] > FORMAT_VERSION:
        raise ValueError(f"swapped-model format version {config.get('format_version')!r} is newer than this vqswitch "
                         f"reads ({FORMAT_VERSION}); upgrade vqswitch")
    for key in ("adapter", "base_config", "shim", "quantizer"):
        if key not in config:
            raise ValueError(f"{str(config_file)!r} lacks the entry {key!r}")
    with safetensors.safe_open(str(weights_file), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("save_id") != config.get("save_id"):
        raise ValueError(f"{str(config_file)!r} and {str(weights_file)!r} come from different saves (an interrupted "
                         "save_swapped?); save the model again")
    adapter, model = _base_for(config, model)
    quantizer = SwitchableTokenQuantizer(**config["quantizer"])
    adapter.set_quantize_module(model, adapter.shim_from_settings(quantizer, config["shim"]))
    state = safetensors.torch.load_file(str(weights_file), device="cpu")
    load_state_dict_strict(model, state, what=f"swapped checkpoint {str(weights_file)!r}")
    guard_native_saving(model)
    return model.to(map_location).eval()


def _base_for(config: dict, model) -> tuple:
    """(adapter, base model) for a saved config: built from it, or the caller's class or instance, checked
    against it."""
    name = config["adapter"]
    if model is None:
        if name.startswith(GENERIC_PREFIX) and name not in adapters():
            raise ValueError(f"this folder holds a model described by user code as {name[len(GENERIC_PREFIX):]!r} "
                             f"(class {config['base_config'].get('class')!r}); run the code that describes it "
                             "(vqswitch.adapters.describe_model) first, or pass model= its class or an instance")
        adapter = adapter_named(name)
        return adapter, adapter.build_base(config["base_config"])
    if isinstance(model, type):
        adapter = adapter_for_class(model)
        if adapter.name != name:
            raise ValueError(f"this folder holds a {name!r} model, but model= is {model.__qualname__}, described as "
                             f"{adapter.name!r}")
        return adapter, adapter.build_base(config["base_config"])
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be None, a model class or an nn.Module instance, got {type(model).__name__}")
    adapter = adapter_for(model)
    if adapter.name != name:
        raise ValueError(f"this folder holds a {name!r} model, but model= is a {type(model).__name__} "
                         f"({adapter.name!r})")
    adapter.check_base(model, config["base_config"])
    return adapter, model


# Public repositories whose family their files alone do not tell (no config naming the class).
KNOWN_REPOS = {
    "fun-research/TiTok": "maskgit-vqgan",  # maskgit-vqgan-imagenet-f16-256.bin
}
KNOWN_REPO_PREFIXES = {
    "TencentARC/IBQ-Tokenizer-": "ibq",
    "yucornetto/tokenizer_titok_": "titok",
}


def _config_file_family(file: Path) -> str | None:
    """The family a ``config.json`` names, or None (also for a file that is not a JSON object).
    Raises ValueError for a vqswitch swapped-model config."""
    try:
        config = read_json_object(file, "config")
    except ValueError:
        return None
    if config.get("_class_name") == "VQModel":
        return "diffusers-vqmodel"
    if config.get("_class_name") == "MaskGitVQGAN":
        return "maskgit-vqgan"
    if isinstance(config.get("model"), dict) and "vq_model" in config["model"]:
        return "titok"
    if config.get("format") == FORMAT:
        raise ValueError("this is a vqswitch swapped-model checkpoint: load it with vqswitch.adapters.load_swapped")
    return None


def detect_family(repo_id_or_path, *, subfolder: str | None = None, revision: str | None = None,
                  cache_dir=None) -> str:
    """The tokenizer family of a checkpoint (an adapter name), from its files.

    Local folders and files: a ``config.json`` naming ``VQModel`` (diffusers) or ``MaskGitVQGAN``
    (open-muse), TiTok's ``model.vq_model`` config, an IBQ ``config.yaml`` or Lightning ``.ckpt``, or a
    MaskGIT-VQGAN ``.bin`` by its public name. Hub ids: the public repositories above, else the repo's
    ``config.json``. Raises ValueError asking for ``adapter=`` when the files do not tell.
    """
    path = Path(repo_id_or_path)
    if path.exists():
        folder = path if path.is_dir() else path.parent
        folder = folder / subfolder if subfolder and path.is_dir() else folder
        cfg = folder / CONFIG_NAME
        family = _config_file_family(cfg) if cfg.is_file() else None
        if family:
            return family
        names = [path.name] if path.is_file() else [p.name for p in folder.iterdir()]
        if "config.yaml" in names or any(n.endswith(".ckpt") for n in names):
            return "ibq"
        if any("maskgit" in n.lower() for n in names):
            return "maskgit-vqgan"
    else:
        text = str(repo_id_or_path)
        if text in KNOWN_REPOS:
            return KNOWN_REPOS[text]
        for prefix, family in KNOWN_REPO_PREFIXES.items():
            if text.startswith(prefix):
                return family
        if is_repo_id(text):
            from huggingface_hub import hf_hub_download

            try:
                file = hf_hub_download(text, CONFIG_NAME, subfolder=subfolder, revision=revision, cache_dir=cache_dir)
            except (OSError, ValueError):  # no config.json there, or the repository cannot be reached
                file = None
            family = None if file is None else _config_file_family(Path(file))
            if family:
                return family
    raise ValueError(f"cannot tell which tokenizer {str(repo_id_or_path)!r} holds: pass adapter= one of "
                     f"{sorted(adapters())}")


def load_pretrained(repo_id_or_path: str | os.PathLike, *, adapter: str | None = None,
                    device: str | torch.device | None = None, **kwargs) -> nn.Module:
    """Load an upstream public checkpoint into the right model, in eval mode.

    Args:
        repo_id_or_path: a local file or folder, or a Hub repo id.
        adapter: the family: ``"diffusers-vqmodel"``, ``"maskgit-vqgan"``, ``"titok"`` or ``"ibq"``
            (see ``vqswitch.adapters.adapters()``); None detects it from the files (:func:`detect_family`).
        device: where the model's weights go (``"cuda"``, ``"cuda:1"``, ``"cpu"``, ``"meta"``...); None keeps
            the family loader's choice (the CPU). Checked before anything loads.
        kwargs: the family's options (``subfolder``, ``filename``, ``revision``, ``cache_dir``...).
    Raises: ValueError for an unknown or undetectable family, for a device torch does not know or this
        machine lacks (CUDA asked for without one: never a silent CPU fallback), and each family's errors
        for missing files or keys.
    """
    if device is not None:
        from vqswitch.device import check_device

        device = check_device(device)
    if adapter is None:
        adapter = detect_family(repo_id_or_path, subfolder=kwargs.get("subfolder"), revision=kwargs.get("revision"),
                                cache_dir=kwargs.get("cache_dir"))
    if not isinstance(adapter, str):
        raise TypeError(f"adapter must be a family name, one of {sorted(adapters())}")
    model = adapter_named(adapter).load_pretrained(repo_id_or_path, **kwargs)
    return model if device is None else model.to(device)


def _builder_parts(spec: str) -> tuple[str, str] | None:
    """('target', 'function') when ``spec`` reads as ``module:function`` or ``path/file.py:function``, else None."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        return None
    if target.endswith(".py") or all(part.isidentifier() for part in target.split(".")):
        return target, name
    return None


def load_builder(spec: str):
    """The function a ``module:function`` or ``path/to/file.py:function`` spec names (the file is run as a module).

    Returns the callable. Raises TypeError for a non-str spec; ValueError naming what is wrong: not of that form,
    no such file, a module that cannot be imported (with the import error), or no callable of that name.
    """
    import importlib
    import importlib.util
    import sys

    if not isinstance(spec, str):
        raise TypeError(f"a builder must be a str 'module:function' or 'path/file.py:function', got "
                        f"{type(spec).__name__}")
    parts = _builder_parts(spec)
    if parts is None:
        raise ValueError(f"a builder must look like 'module:function' or 'path/file.py:function', got {spec!r}")
    target, name = parts
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"builder {spec!r}: no such file {target!r}")
        module_name = f"_vqswitch_user_{path.stem}_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            mod_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
            try:
                mod_spec.loader.exec_module(module)
            except Exception:
                del sys.modules[module_name]
                raise
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ValueError(f"builder {spec!r}: cannot import module {target!r} ({err})") from err
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"builder {spec!r}: {target!r} has no function {name!r}")
    return fn


def load_model(spec: str | os.PathLike, **kwargs) -> nn.Module:
    """A tokenizer from a command-line style spec, in eval mode.

    ``spec`` is either ``module:function`` / ``path/to/file.py:function`` (the function is called with no
    arguments and must return the user's own model, described with :func:`vqswitch.adapters.describe_model`, or
    any model an adapter recognises; :func:`load_builder` finds it), or anything :func:`load_pretrained` reads
    (a checkpoint file or folder, or a Hub repo id; ``kwargs`` go to it).
    Raises TypeError/ValueError for a bad spec, a builder that returns no ``nn.Module`` or a model no adapter
    recognises; what :func:`load_pretrained` raises otherwise.
    """
    if isinstance(spec, str) and not Path(spec).exists() and _builder_parts(spec) is not None:
        if kwargs:
            raise TypeError(f"a builder spec takes no loading options, got {sorted(kwargs)}")
        model = load_builder(spec)()
        if not isinstance(model, nn.Module):
            raise TypeError(f"builder {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        adapter_for(model)  # ValueError naming the known families when none recognises it
        return model.eval()
    return load_pretrained(spec, **kwargs).eval()

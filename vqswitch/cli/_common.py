"""What several ``vqswitch`` commands share: the two error kinds and their one-line messages, the shared
arguments (``--device``, ``--height``/``--width``), output-path checks, loading a checkpoint named on the command
line, and a folder of images.

Heavy imports (torch, the adapters, the codec) happen inside the functions that need them, so ``vqswitch --help``
and ``vqswitch bits`` start quickly.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings

from vqswitch import formats
from vqswitch._checks import check_int, one_line

__all__ = ["CLIError", "CLIFailure", "show_warning", "parse_args", "seed_arg", "int_list_arg", "positive",
           "add_size_arguments", "check_size_args", "add_device_argument", "device", "check_output_file",
           "check_output_dir", "is_local", "check_checkpoint_dir", "checkpoint_config", "is_swapped_checkpoint",
           "load_quantizer", "load_codec", "image_folder"]


class CLIError(Exception):
    """A usage error (a bad argument, a missing or wrong-kind path): printed as one line, exit code 2."""

    exit_code = 2


class CLIFailure(CLIError):
    """A runtime failure (a file that cannot be read or written, training that diverged): one line, exit code 1."""

    exit_code = 1


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``vqswitch: warning: ...`` line on stderr (no source file, line number or source line)."""
    print(f"vqswitch: warning: {one_line(message)}", file=sys.stderr if file is None else file)


def parse_args(parser: argparse.ArgumentParser, argv):
    """``parser.parse_args(argv)``, or the exit code argparse chose (2 for bad arguments, 0 for --help)
    after printing its usage or help: for entry points that return codes instead of exiting (the benchmarks)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2


def seed_arg(text: str) -> int:
    """argparse type for a seed: an int >= 0 (ArgumentTypeError otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {value}")
    return value


def int_list_arg(*, empty: bool = False):
    """An argparse type for comma-separated ints >= 1: ``"16,32,64"`` -> ``(16, 32, 64)``; with ``empty``, ``""``
    gives ``()``. ArgumentTypeError otherwise (the benchmarks' setting lists)."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be comma-separated ints, got {text!r}") from None
        if (not values and not empty) or any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"must be ints >= 1, got {text!r}")
        return values

    return parse


def positive(value, flag: str) -> None:
    """An optional count given as ``flag`` is >= 1 (None passes); CLIError naming the flag otherwise."""
    if value is not None:
        try:
            check_int(flag, value, minimum=1)
        except (TypeError, ValueError) as e:
            raise CLIError(one_line(e)) from None


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """``--height``, ``--width`` (the image size bpp is computed for) and ``--json``."""
    parser.add_argument("--height", type=int, default=256, help="image height for bpp (default 256)")
    parser.add_argument("--width", type=int, default=256, help="image width for bpp (default 256)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def check_size_args(args) -> None:
    positive(args.height, "--height")
    positive(args.width, "--width")


def add_device_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--device DEV``, where ``what`` runs."""
    parser.add_argument("--device", metavar="DEV", help=f"where {what} runs: cuda, cuda:1, cpu... (default: cuda "
                        "when available, else cpu; a device this machine lacks is an error)")


def device(args):
    """--device as a torch.device that exists here (default: CUDA when available, else the CPU)."""
    from vqswitch.device import check_device, default_device

    if args.device is None:
        return default_device()
    try:
        return check_device(args.device, name="--device")
    except (TypeError, ValueError) as e:
        raise CLIError(one_line(e)) from None


def check_output_file(path: str, flag: str, overwrite: bool | None = None) -> None:
    """Before any work: ``path`` can be written as a file (not a folder; its folder exists; not taken unless
    ``overwrite``, when ``overwrite`` is not None)."""
    if os.path.isdir(path):
        raise CLIError(f"{flag} {path!r} is a folder; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"{flag} {path!r}: its folder {parent!r} does not exist")
    if overwrite is False and os.path.lexists(path):
        raise CLIError(f"{flag} {path!r} already exists; pass --overwrite to replace it")


def check_output_dir(path: str, flag: str) -> None:
    """``path`` is a folder or does not exist yet."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise CLIError(f"{flag} {path!r} exists and is not a folder")


def is_local(source: str) -> bool:
    """A Hub repo is ORG/NAME; anything else (or anything that exists on disk) is a local path."""
    return (os.path.exists(source) or source.count("/") != 1 or source.startswith((".", "/", "~"))
            or (os.sep != "/" and os.sep in source))


def check_checkpoint_dir(source: str) -> None:
    """``source`` is a folder with a config and weights (a quantizer or a swapped model); CLIError otherwise."""
    if not os.path.isdir(source):
        raise CLIError(f"{source}: {'not a directory' if os.path.exists(source) else 'no such checkpoint directory'}")
    for name in (formats.CONFIG_FILE, formats.WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(source, name)):
            raise CLIError(f"{source}: not a vqswitch checkpoint (no {name})")


def checkpoint_config(source: str, revision: str | None, cache_dir: str | None) -> dict | None:
    """The checkpoint's config.json as a dict (None when it cannot be read: the loader then says why)."""
    from vqswitch._io import read_json_object

    try:
        if is_local(source):
            path = os.path.join(source, formats.CONFIG_FILE)
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(source, formats.CONFIG_FILE, revision=revision, cache_dir=cache_dir)
        return read_json_object(path, "config")
    except Exception:  # noqa: BLE001 - the loader reports the problem
        return None


def is_swapped_checkpoint(source: str, revision=None, cache_dir=None) -> bool:
    """Whether ``source``'s config.json is a swapped model's (:func:`vqswitch.adapters.save_swapped`)."""
    return (checkpoint_config(source, revision, cache_dir) or {}).get("format") == formats.SWAPPED_FORMAT


def load_quantizer(source: str, revision: str | None, cache_dir: str | None):
    """``SwitchableTokenQuantizer.from_pretrained`` with every failure turned into a CLIError."""
    from vqswitch.quantizer import SwitchableTokenQuantizer

    local = is_local(source)
    if local:
        check_checkpoint_dir(source)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the Hub mixin prints while loading
            return SwitchableTokenQuantizer.from_pretrained(source, revision=revision, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - any failure is reported in one line, never a traceback
        where = "" if local else " (not a local directory; tried the Hugging Face Hub)"
        raise CLIFailure(f"cannot load {source!r}{where}: {type(e).__name__}: {one_line(e)}") from None


def load_codec(source: str, revision: str | None, device=None):
    """``load_codec_model`` (the swapped model and its entropy model), moved to ``device``; a missing local path
    is a usage error, any failure to load a runtime one."""
    from vqswitch.codec import load_codec_model

    if is_local(source):
        check_checkpoint_dir(source)
    try:
        cm = load_codec_model(source, revision=revision)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        where = "" if is_local(source) else " (not a local directory; tried the Hugging Face Hub)"
        raise CLIFailure(f"cannot load the swapped model {source!r}{where}: {type(e).__name__}: {one_line(e)}") \
            from None
    if device is not None:
        cm.model.to(device)
    return cm


def image_folder(model, data: str, limit: int | None = None, *, warn_resized: bool = False):
    """``--data``: the folder's images at ``model``'s (square) size and pixel range -> ``(images, folder)``.

    images is the :class:`vqswitch.data.ImageFolder` itself, or with ``limit`` a ``(n, 3, S, S)`` float tensor of
    its first ``limit`` images. Unreadable files are left out with a warning each; with ``warn_resized`` one warning
    counts the images that are not S x S (they are resized and centre-cropped). CLIError for a missing folder or a
    non-square model.
    """
    from vqswitch.adapters import adapter_for
    from vqswitch.data import ImageFolder

    adapter = adapter_for(model)
    size = adapter.image_size(model)
    if size[0] != size[1]:
        raise CLIError(f"the model is configured for non-square {size[0]}x{size[1]} images; use the Python API")
    if not os.path.isdir(data):
        raise CLIError(f"--data {data!r}: {'not a folder' if os.path.exists(data) else 'no such folder'}")
    try:
        folder = ImageFolder(data, size[0], pixel_range=adapter.pixel_range)
        folder.validate()  # unreadable files are reported (a warning each) and left out, never fatal
    except (TypeError, ValueError) as e:
        raise CLIError(one_line(e)) from None
    n = len(folder) if limit is None else min(limit, len(folder))
    if warn_resized:
        from PIL import Image

        other = 0
        for path in folder.paths[:n]:
            with Image.open(path) as im:
                other += im.size != (size[1], size[0])
        if other:
            warnings.warn(f"{other} of the {n} images are not {size[1]}x{size[0]}: they were resized (short side) and "
                          f"centre-cropped to it, so their scores are for the crops (vqswitch compress refuses such "
                          "images: resize them yourself to compare the two)", UserWarning, stacklevel=2)
    if limit is not None:
        import torch

        return torch.stack([folder[i] for i in range(n)]), folder
    return folder, folder

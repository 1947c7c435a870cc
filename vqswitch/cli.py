"""The ``vqswitch`` console script (``main(argv) -> exit code``).

    vqswitch bits                                   the paper's bits/bpp table for standard tokenizers
    vqswitch bits --tokens T --codebook-size K [--groups M] [--height H --width W]
    vqswitch info DIR_OR_REPO [--revision REV] [--height H --width W]
    vqswitch new DIR --tokens T --codebook-size K --dim D [--groups M] [--shared] [--metric l2] [--seed S]
    vqswitch finetune --adapter {diffusers,maskgit,titok,ibq} --model REPO_OR_DIR --data DIR --groups M
                      --codebook-size K --out RUN_DIR [--stages 1,2,3] [--steps N] [--resume] ...
    vqswitch eval --model SWAPPED_DIR_OR_REPO --data DIR [--out FILE.json] [--plots DIR] [--limit N]
    vqswitch demo [--out DIR] [--quick] [--seed S] [--no-progress] [--data FACES_DIR]
                                                    the main job: train, swap, fine-tune, compare (CPU, minutes)
    vqswitch compress IMAGES... --model DIR_OR_REPO -o OUT.vqs [--mode auto|entropy|fixed] [--revision REV]
    vqswitch decompress FILE.vqs -o DIR (--model DIR_OR_REPO | --trust-file-model) [--revision REV] [--overwrite]
    vqswitch push RUN_DIR --repo-id ORG/NAME [--revision BRANCH] [--private] [--dry-run OUT_DIR] ...

Every command takes ``--json``. Errors print one ``vqswitch: error: ...`` line to stderr and
return 2 (argparse does the same for malformed arguments). All bit counts come from
:mod:`vqswitch.bits`, the one place the formula lives.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

from vqswitch import bits as _bits

__all__ = ["main", "PAPER_CONFIGS"]

def parse_args(parser: argparse.ArgumentParser, argv):
    """``parser.parse_args(argv)``, or the exit code argparse chose (2 for bad arguments, 0 for --help)
    after printing its usage or help: for entry points that return codes instead of exiting."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2


# (tokenizer, T, ((K, M), ...)) of the paper's bit-budget table; the numbers are computed, never typed.
PAPER_CONFIGS = (
    ("TiTok-S", 128, ((4096, 1), (1024, 16), (256, 256))),
    ("TiTok-L", 32, ((4096, 1), (256, 256))),
    ("MaskGIT-VQGAN", 256, ((4096, 1), (1024, 16))),
    ("IBQ", 256, ((8192, 1),)),
)


class CLIError(Exception):
    """A usage error (a bad argument, a missing or wrong-kind path): printed as one line, exit code 2."""

    exit_code = 2


class CLIFailure(CLIError):
    """A runtime failure (a file that cannot be read or written, training that diverged): one line, exit code 1."""

    exit_code = 1


def _one_line(exc) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 1500 else text[:1497] + "..."


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``vqswitch: warning: ...`` line on stderr (no source file, line number or source line)."""
    print(f"vqswitch: warning: {_one_line(message)}", file=sys.stderr if file is None else file)


def _positive(value, flag: str) -> None:
    if value is not None and value < 1:
        raise CLIError(f"{flag} must be >= 1, got {value}")


def _check_size_args(args) -> None:
    _positive(args.height, "--height")
    _positive(args.width, "--width")


def _device(args):
    """--device as a torch.device that exists here (default: CUDA when available, else the CPU)."""
    from vqswitch.device import check_device, default_device

    if args.device is None:
        return default_device()
    try:
        return check_device(args.device, name="--device")
    except (TypeError, ValueError) as e:
        raise CLIError(_one_line(e)) from None


def _check_output_file(path: str, flag: str, overwrite: bool | None = None) -> None:
    """Before any work: ``path`` can be written as a file (not a folder; its folder exists; not taken unless
    ``overwrite``, when ``overwrite`` is not None)."""
    if os.path.isdir(path):
        raise CLIError(f"{flag} {path!r} is a folder; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"{flag} {path!r}: its folder {parent!r} does not exist")
    if overwrite is False and os.path.lexists(path):
        raise CLIError(f"{flag} {path!r} already exists; pass --overwrite to replace it")


def _check_output_dir(path: str, flag: str) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        raise CLIError(f"{flag} {path!r} exists and is not a folder")


def _is_local(source: str) -> bool:
    """A Hub repo is ORG/NAME; anything else (or anything that exists on disk) is a local path."""
    return (os.path.exists(source) or source.count("/") != 1 or source.startswith((".", "/", "~"))
            or (os.sep != "/" and os.sep in source))


def _row(name: str | None, t: int, k: int, m: int, h: int, w: int) -> dict:
    try:
        b = _bits.bits_per_image(t, k, m)
        return {"tokenizer": name, "num_tokens": t, "codebook_size": k, "num_groups": m,
                "bits_per_image": b, "height": h, "width": w, "bpp": _bits.bpp(b, h, w)}
    except (TypeError, ValueError) as e:
        raise CLIError(_one_line(e)) from None


def cmd_bits(args) -> int:
    """The paper's table, or one (T, K, M) configuration when --tokens/--codebook-size are given."""
    h, w = args.height, args.width
    if args.tokens is None and args.codebook_size is None:
        rows = [_row(name, t, k, m, h, w) for name, t, kms in PAPER_CONFIGS for k, m in kms]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'tokenizer':<14} {'T':>4} {'K':>5} {'M':>4} {'bits/image':>10} {f'bpp@{h}x{w}':>12}")
        for r in rows:
            print(f"{r['tokenizer']:<14} {r['num_tokens']:>4} {r['codebook_size']:>5} {r['num_groups']:>4} "
                  f"{r['bits_per_image']:>10} {r['bpp']:>12.4f}")
        return 0
    if args.tokens is None or args.codebook_size is None:
        raise CLIError("give both --tokens and --codebook-size (or neither, for the paper's table)")
    r = _row(None, args.tokens, args.codebook_size, args.groups, h, w)
    del r["tokenizer"]
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"T={r['num_tokens']} K={r['codebook_size']} M={r['num_groups']}: "
              f"bits per image {r['bits_per_image']}, bpp at {h}x{w} {r['bpp']:.4f}")
    return 0


def _load(source: str, revision: str | None, cache_dir: str | None):
    """``SwitchableTokenQuantizer.from_pretrained`` with every failure turned into a CLIError."""
    from vqswitch.quantizer import SwitchableTokenQuantizer

    local = _is_local(source)
    if local:
        _check_checkpoint_dir(source)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the Hub mixin prints while loading
            return SwitchableTokenQuantizer.from_pretrained(source, revision=revision, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - any failure is reported in one line, never a traceback
        where = "" if local else " (not a local directory; tried the Hugging Face Hub)"
        raise CLIFailure(f"cannot load {source!r}{where}: {type(e).__name__}: {_one_line(e)}") from None


def _check_checkpoint_dir(source: str) -> None:
    if not os.path.isdir(source):
        raise CLIError(f"{source}: {'not a directory' if os.path.exists(source) else 'no such checkpoint directory'}")
    for name in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(source, name)):
            raise CLIError(f"{source}: not a vqswitch checkpoint (no {name})")


def _checkpoint_config(source: str, revision: str | None, cache_dir: str | None) -> dict | None:
    """The checkpoint's config.json as a dict (None when it cannot be read: the loader then says why)."""
    try:
        if _is_local(source):
            path = os.path.join(source, "config.json")
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(source, "config.json", revision=revision, cache_dir=cache_dir)
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except Exception:  # noqa: BLE001 - the loader reports the problem
        return None
    return config if isinstance(config, dict) else None


def _is_swapped_checkpoint(source: str, revision=None, cache_dir=None) -> bool:
    from vqswitch.adapters.saving import FORMAT

    return (_checkpoint_config(source, revision, cache_dir) or {}).get("format") == FORMAT


def _load_codec(source: str, revision: str | None, device=None):
    """``load_codec_model`` (the swapped model and its entropy model), moved to ``device``; a missing local path
    is a usage error, any failure to load a runtime one."""
    from vqswitch.codec import load_codec_model

    if _is_local(source):
        _check_checkpoint_dir(source)
    try:
        cm = load_codec_model(source, revision=revision)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        where = "" if _is_local(source) else " (not a local directory; tried the Hugging Face Hub)"
        raise CLIFailure(f"cannot load the swapped model {source!r}{where}: {type(e).__name__}: {_one_line(e)}") \
            from None
    if device is not None:
        cm.model.to(device)
    return cm


def _count(params) -> dict:
    params = list(params)
    return {"count": sum(p.numel() for p in params), "bytes": sum(p.numel() * p.element_size() for p in params)}


def _util_dict(u) -> dict:
    return {"min": u.min, "max": u.max, "mean": u.mean, "std": u.std, "group_counts": u.group_counts.tolist()}


def _ideal_bits(entropy) -> float | None:
    """Mean ideal code length (bits per image) of the images an entropy model was counted on, under the model."""
    import numpy as np

    counts, gcounts = entropy.code_counts.double().numpy(), entropy.group_counts.double().numpy()
    n = float(gcounts.sum())
    if n == 0:
        return None
    s = entropy.smoothing
    bits = 0.0
    if entropy.num_groups > 1:
        bits += float((gcounts * (np.log2(n + entropy.num_groups * s) - np.log2(gcounts + s))).sum())
    if entropy.codebook_size > 1:
        totals = counts.sum(-1, keepdims=True) + entropy.codebook_size * s
        bits += float((counts * (np.log2(totals) - np.log2(counts + s))).sum())
    return bits / n


def _info_swapped(args, config: dict) -> int:
    """`vqswitch info` on a swapped model (save_swapped / finetune final / the demo's checkpoint)."""
    from vqswitch.adapters import swapped_quantizer

    cm = _load_codec(args.source, args.revision)
    model, q = cm.model, swapped_quantizer(cm.model)
    base = config.get("base_config") if isinstance(config.get("base_config"), dict) else {}
    base_name = base.get("_class_name") or base.get("class") or type(model).__name__
    run_json = os.path.join(os.path.dirname(os.path.normpath(args.source)), "run.json") if _is_local(args.source) \
        else None
    base_model = None
    if run_json and os.path.isfile(run_json):
        try:
            with open(run_json, encoding="utf-8") as f:
                base_model = json.load(f).get("base_model")
        except (OSError, ValueError, AttributeError):
            base_model = None
    router = list(q.router.parameters()) if q.router is not None else []
    h, w = args.height, args.width
    entropy_file = (os.path.isfile(os.path.join(args.source, "entropy_model.safetensors"))
                    if _is_local(args.source) else None)
    counted = int(cm.entropy.group_counts.sum())
    info = {"kind": "swapped-model", "source": args.source, "adapter": config.get("adapter"), "base_model_class":
            base_name, "base_model": base_model, "image_size": list(cm.image_size), "quantizer": q.get_config(),
            "bits_per_image": q.bits_per_image, "height": h, "width": w, "bpp": q.bpp(h, w),
            "parameters": {"codebooks": _count([q.codebooks]), "router": _count(router),
                           "quantizer": _count(q.parameters()), "model": _count(model.parameters())},
            "entropy_model": {"file": entropy_file, "smoothing": cm.entropy.smoothing, "counted_images": counted,
                              "bits_per_image": _ideal_bits(cm.entropy), "fingerprint": cm.entropy.fingerprint()},
            "utilisation": _util_dict(q.utilization()) if int(q.usage.sum()) > 0 else None}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    kind = "token-specific" if q.token_specific else "token-shared"
    print(f"swapped model: {args.source}")
    print(f"adapter: {info['adapter']}")
    print(f"base model: {base_name}" + (f" ({base_model})" if base_model else ""))
    print(f"images: {cm.image_size[0]}x{cm.image_size[1]}")
    print(f"quantizer: T={q.num_tokens} K={q.codebook_size} M={q.num_groups} D={q.dim} {kind}, metric {q.metric}")
    print(f"bits per image: {q.bits_per_image}")
    print(f"bpp at {h}x{w}: {info['bpp']:.4f}")
    for name in ("codebooks", "router", "quantizer", "model"):
        c = info["parameters"][name]
        print(f"parameters ({name}): {c['count']} ({c['bytes']} bytes)")
    e = info["entropy_model"]
    where = {True: "entropy_model.safetensors", False: "rebuilt from the usage counts (no file)", None: "loaded"}
    ideal = "" if e["bits_per_image"] is None else f", ideal {e['bits_per_image']:.1f} bits per image on them"
    print(f"entropy model: {where[e['file']]}; counted on {counted} images{ideal}")
    u = info["utilisation"]
    if u is None:
        print("utilisation: not recorded")
    else:
        print(f"utilisation: min {u['min']:.3f} max {u['max']:.3f} mean {u['mean']:.3f} std {u['std']:.3f}")
        print(f"group histogram: {u['group_counts']}")
    return 0


def cmd_info(args) -> int:
    """Describe a saved quantizer or a swapped model: config, bits, bpp, parameter sizes, entropy model and
    recorded utilisation."""
    _check_size_args(args)
    config = _checkpoint_config(args.source, args.revision, args.cache_dir)
    if _is_local(args.source):
        _check_checkpoint_dir(args.source)
    from vqswitch.adapters.saving import FORMAT

    if config is not None and config.get("format") == FORMAT:
        return _info_swapped(args, config)
    q = _load(args.source, args.revision, args.cache_dir)
    router = list(q.router.parameters()) if q.router is not None else []
    params = {"codebooks": _count([q.codebooks]), "router": _count(router), "total": _count(q.parameters())}
    util = _util_dict(q.utilization()) if int(q.usage.sum()) > 0 else None
    h, w = args.height, args.width
    info = {"source": args.source, "config": q.get_config(), "bits_per_image": q.bits_per_image,
            "height": h, "width": w, "bpp": q.bpp(h, w), "parameters": params, "utilisation": util}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"checkpoint: {args.source}")
    print("config:")
    for k, v in info["config"].items():
        print(f"  {k}: {v}")
    print(f"bits per image: {q.bits_per_image}")
    print(f"bpp at {h}x{w}: {info['bpp']:.4f}")
    for name in ("codebooks", "router", "total"):
        print(f"parameters ({name}): {params[name]['count']} ({params[name]['bytes']} bytes)")
    if util is None:
        print("utilisation: not recorded")
    else:
        print(f"utilisation: min {util['min']:.3f} max {util['max']:.3f} mean {util['mean']:.3f} std {util['std']:.3f}")
        print(f"group histogram: {util['group_counts']}")
    return 0


def cmd_new(args) -> int:
    """Save a fresh, randomly initialised quantizer (seeded) to DIR."""
    import torch

    from vqswitch.quantizer import SwitchableTokenQuantizer

    try:
        with torch.random.fork_rng(devices=[]):  # seeded, without disturbing the caller's RNG
            torch.manual_seed(args.seed)
            q = SwitchableTokenQuantizer(num_tokens=args.tokens, codebook_size=args.codebook_size, dim=args.dim,
                                         num_groups=args.groups, token_specific=not args.shared, metric=args.metric)
    except (TypeError, ValueError) as e:
        raise CLIError(_one_line(e)) from None
    except (RuntimeError, MemoryError) as e:  # the allocator refused
        raise CLIFailure(f"cannot allocate the quantizer (T={args.tokens}, K={args.codebook_size}, D={args.dim}, "
                         f"M={args.groups}): {_one_line(e)}") from None
    kept = False
    if os.path.exists(os.path.join(args.dir, "config.json")) and not args.force:
        # Re-running the same command is a no-op; anything else would destroy a different checkpoint.
        try:
            old = _load(args.dir, None, None)
            same = old.get_config() == q.get_config() and all(
                torch.equal(a, b) for a, b in zip(old.state_dict().values(), q.state_dict().values()))
        except CLIError:
            same = False
        if not same:
            raise CLIError(f"{args.dir} already holds a different checkpoint; pass --force to overwrite it")
        kept = True
    else:
        try:
            q.save_pretrained(args.dir)
        except OSError as e:
            raise CLIFailure(f"cannot save to {args.dir}: {_one_line(e)}") from None
    kind = "token-shared" if args.shared else "token-specific"
    desc = (f"SwitchableTokenQuantizer (T={q.num_tokens}, K={q.codebook_size}, D={q.dim}, M={q.num_groups}, "
            f"{kind}, metric {q.metric}, seed {args.seed})")
    print(f"{args.dir} already holds this {desc}; left unchanged" if kept else f"saved a new {desc} to {args.dir}")
    print(f"bits per image: {q.bits_per_image}, bpp at 256x256: {q.bpp(256, 256):.4f}")
    print(f"next: vqswitch info {args.dir}")
    return 0


ADAPTER_NAMES = {"diffusers": "diffusers-vqmodel", "maskgit": "maskgit-vqgan", "titok": "titok", "ibq": "ibq"}


def _stages(text: str) -> tuple[int, ...]:
    try:
        stages = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise CLIError(f"--stages must be a comma-separated list drawn from 1,2,3, got {text!r}") from None
    return stages


def _per_stage(text: str | None, flag: str, kind, default: tuple) -> tuple:
    """``--steps 300`` (every stage) or ``--steps 300,300,150`` (stages 1, 2, 3) -> three values, each > 0."""
    if text is None:
        return default
    parts = text.split(",")
    if len(parts) not in (1, 3):
        raise CLIError(f"{flag} takes one value for every stage or three (stage 1,2,3), got {text!r}")
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise CLIError(f"{flag} takes {kind.__name__} values, got {text!r}") from None
    if any(not (v > 0) or v != v or v == float("inf") for v in values):
        raise CLIError(f"{flag} values must be finite and > 0, got {text!r}")
    return tuple(values * 3) if len(values) == 1 else tuple(values)


def stage_settings(args) -> list:
    """The three :class:`~vqswitch.train.finetune.StageConfig` of ``vqswitch finetune`` from ``--steps``, ``--lr``
    and ``--batch-size`` (each one value or three); defaults are the demo's working settings
    (:data:`vqswitch.demo.FULL`). Raises CLIError for a count, rate or size that is not > 0."""
    from vqswitch.demo import FULL
    from vqswitch.train.finetune import StageConfig

    steps = _per_stage(args.steps, "--steps", int, (FULL.stage1_steps, FULL.stage2_steps, FULL.stage3_steps))
    lr = _per_stage(args.lr, "--lr", float, (FULL.stage12_lr, FULL.stage12_lr, FULL.stage3_lr))
    batch = _per_stage(args.batch_size, "--batch-size", int, (FULL.stage_batch_size,) * 3)
    return [StageConfig(steps=steps[i], lr=lr[i], batch_size=batch[i]) for i in range(3)]


def _image_folder(model, data: str, limit: int | None = None, *, warn_resized: bool = False):
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
        raise CLIError(_one_line(e)) from None
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


def _feature_losses(args, model) -> tuple[dict, dict]:
    """Stage 3's optional perceptual / identity losses from --perceptual / --identity (Hub id or folder)."""
    from vqswitch.adapters import adapter_for
    from vqswitch.train.losses import identity_loss, perceptual_loss

    losses, weights = {}, {}
    for name, build in (("perceptual", perceptual_loss), ("identity", identity_loss)):
        source = getattr(args, name)
        if source is None:
            continue
        weight = getattr(args, f"{name}_weight")
        losses[name] = build(source, pixel_range=adapter_for(model).pixel_range)
        weights[f"{name}_weight"] = 1.0 if weight is None else weight
    return losses, weights


def _write_run_info(args, adapter: str, config, num_images: int, quantizer) -> None:
    """``RUN_DIR/run.json``: what the run started from (read by ``vqswitch push`` for the model card)."""
    from vqswitch._io import atomic_write_bytes

    info = {"format": "vqswitch-run", "adapter": adapter, "base_model": args.model,
            "base_revision": args.revision, "base_subfolder": args.subfolder,
            # only the folder's name: run.json is published with the model (`vqswitch push`), local paths are not
            "data": {"description": f"image folder {os.path.basename(os.path.normpath(args.data))!r}",
                     "path": os.path.basename(os.path.normpath(args.data)), "num_images": num_images},
            "num_groups": quantizer.num_groups, "codebook_size": quantizer.codebook_size,
            "losses": {"perceptual": args.perceptual, "identity": args.identity},
            "finetune": config.to_dict()}
    atomic_write_bytes(os.path.join(args.out, "run.json"), (json.dumps(info, indent=2) + "\n").encode())


# What a finetune run writes into RUN_DIR (a rerun without --resume needs --overwrite, which removes these).
RUN_ENTRIES = ("metrics.jsonl", "checkpoints", "final", "run.json", "latents.npy", "latents.json")


def _prepare_run_dir(args) -> None:
    import shutil

    _check_output_dir(args.out, "--out")
    if args.resume and args.overwrite:
        raise CLIError("--resume continues RUN_DIR's run, --overwrite starts it again: pass one of them")
    taken = [e for e in RUN_ENTRIES if os.path.lexists(os.path.join(args.out, e))]
    if args.resume or not taken:
        return
    if not args.overwrite:
        raise CLIError(f"--out {args.out!r} already holds a run ({', '.join(taken)}); pass --resume to continue it, "
                       "or --overwrite to start again (its checkpoints, metrics and final model are removed)")
    for e in taken:
        path = os.path.join(args.out, e)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _amp_dtype(args, device):
    import torch

    if args.dtype == "fp32":
        return None
    if args.dtype == "fp16" and device.type != "cuda":
        raise CLIError(f"--dtype fp16 needs a CUDA device (--device is {str(device)!r}); use bf16 or fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]


def _load_base(args, device):
    """(model, adapter name, swapped?) for --model: a swapped checkpoint (continued as it is) or an upstream one
    (loaded by family; swapped later)."""
    from vqswitch.adapters import detect_family, load_pretrained, load_swapped, swapped_quantizer

    source = args.model
    if _is_local(source):
        if not os.path.exists(source):
            raise CLIError(f"--model {source!r}: no such file or folder")
        if args.subfolder:
            source = os.path.join(source, args.subfolder)
            if not os.path.exists(source):
                raise CLIError(f"--subfolder {args.subfolder!r}: no such folder in {args.model!r}")
    if _is_swapped_checkpoint(source, args.revision):
        try:
            model = load_swapped(source, revision=args.revision, map_location=device)
        except Exception as e:  # noqa: BLE001
            raise CLIFailure(f"cannot load the swapped checkpoint {source!r}: {type(e).__name__}: {_one_line(e)}") \
                from None
        q = swapped_quantizer(model)
        for flag, value, have in (("--groups", args.groups, q.num_groups),
                                  ("--codebook-size", args.codebook_size, q.codebook_size)):
            if value is not None and value != have:
                raise CLIError(f"{flag} {value}: the swapped checkpoint {source!r} has {have} (leave {flag} out to "
                               "continue it as it is)")
        from vqswitch.adapters import adapter_for

        name = adapter_for(model).name
        if args.adapter is not None and ADAPTER_NAMES[args.adapter] != name:
            raise CLIError(f"--adapter {args.adapter}: the swapped checkpoint {source!r} holds a {name!r} model")
        return model, name, True
    for flag, value in (("--groups", args.groups), ("--codebook-size", args.codebook_size)):
        if value is None:
            raise CLIError(f"{flag} is required when --model is an upstream checkpoint (not a swapped one)")
    name = ADAPTER_NAMES[args.adapter] if args.adapter else None
    kwargs = {"revision": args.revision}
    if args.subfolder and not _is_local(args.model):
        kwargs["subfolder"] = args.subfolder
    if name is None:
        try:
            name = detect_family(source, subfolder=kwargs.get("subfolder"), revision=args.revision)
        except ValueError as e:
            raise CLIError(_one_line(e).replace("pass adapter=", "pass --adapter, the family of")) from None
    try:
        model = load_pretrained(source, adapter=name, device=device, **kwargs)
    except FileNotFoundError as e:
        raise CLIError(_one_line(e)) from None
    except Exception as e:  # noqa: BLE001
        raise CLIFailure(f"cannot load {source!r} as {name}: {type(e).__name__}: {_one_line(e)}") from None
    return model, name, False


def _resume_hint(args) -> str:
    argv = [a for a in getattr(args, "argv", []) if a != "--overwrite"]
    if os.path.isfile(os.path.join(args.out, "checkpoints", "latest")):
        return "resume with: vqswitch " + shlex.join(argv + ([] if "--resume" in argv else ["--resume"]))
    return "no checkpoint was written yet; start again with: vqswitch " + shlex.join(argv + ["--overwrite"])


def cmd_finetune(args) -> int:
    """Load an upstream tokenizer and swap in a token-shared STSCQ quantizer (or continue a swapped checkpoint),
    then run the fine-tuning stages on --device (mixed precision in stage 3 with --dtype)."""
    import torch

    from vqswitch.adapters import save_swapped, swap_quantizer, swapped_quantizer
    from vqswitch.train.finetune import FinetuneConfig, Finetuner, StageConfig

    stages = _stages(args.stages) if args.stages is not None else None
    settings = stage_settings(args)
    for name in ("perceptual", "identity"):
        if getattr(args, f"{name}_weight") is not None and getattr(args, name) is None:
            raise CLIError(f"--{name}-weight needs --{name} MODEL (a transformers vision backbone)")
    if args.groups is not None and args.groups < 1 or args.codebook_size is not None and args.codebook_size < 1:
        raise CLIError("--groups and --codebook-size must be >= 1")
    device = _device(args)
    amp = _amp_dtype(args, device)
    _prepare_run_dir(args)
    try:
        model, adapter, swapped = _load_base(args, device)
        data, folder = _image_folder(model, args.data)
        if not swapped:
            if args.groups > len(folder):
                raise CLIError(f"--groups {args.groups} is more than the {len(folder)} training images: the router "
                               f"cannot give every group an image; use at most {len(folder)} (the paper uses 16)")
            torch.manual_seed(args.seed)  # the router's initialisation
            model = swap_quantizer(model, num_groups=args.groups, codebook_size=args.codebook_size,
                                   token_specific=False, seed=args.seed)
        q = swapped_quantizer(model)
        if stages is None:
            stages = (2, 3) if q.token_specific else (1, 2, 3)
        losses, weights = _feature_losses(args, model)
        stage = settings[:2] + [StageConfig(**{**settings[2].__dict__, **weights})]
        config = FinetuneConfig(stages=stages, stage1=stage[0], stage2=stage[1], stage3=stage[2], seed=args.seed,
                                checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
        finetuner = Finetuner(model, data, args.out, config, resume=args.resume, device=device, autocast_dtype=amp,
                              **losses)
        _write_run_info(args, adapter, config, len(folder), q)
        model = finetuner.run()
        final = save_swapped(model, os.path.join(args.out, "final"))
    except KeyboardInterrupt:
        print(f"vqswitch: interrupted; {_resume_hint(args)}", file=sys.stderr)
        return 130
    except (TypeError, ValueError) as e:
        raise CLIError(_one_line(e)) from None
    except (OSError, RuntimeError, ArithmeticError) as e:  # I/O, CUDA out of memory, TrainingDiverged
        raise CLIFailure(f"{type(e).__name__}: {_one_line(e)}") from None
    q = swapped_quantizer(model)
    summary = {"run_dir": args.out, "final": str(final), "bits_per_image": q.bits_per_image,
               "skipped_images": [str(p) for p, _ in folder.skipped]}
    print(json.dumps(summary, indent=2) if args.json else
          f"fine-tuned {adapter} model saved to {final} ({q.bits_per_image} bits per image)")
    return 0


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("--plots needs matplotlib: pip install 'vqswitch[plots]' (or leave --plots out)") from None


def cmd_eval(args) -> int:
    """Reconstruct a folder of images through a swapped model's codes; print and save bpp, PSNR, SSIM and the
    codebook use of those images."""
    import torch
    from tqdm.auto import tqdm

    from vqswitch import metrics
    from vqswitch.adapters import adapter_for, decode_codes, encode_codes, swapped_quantizer
    from vqswitch.codebooks import add_code_counts, utilization
    from vqswitch.codes import Codes

    _positive(args.limit, "--limit")
    _positive(args.batch_size, "--batch-size")
    if args.out:
        _check_output_file(args.out, "--out")
    if args.plots:
        _check_output_dir(args.plots, "--plots")
        _require_matplotlib()
    device = _device(args)
    codec = _load_codec(args.model, args.revision, device)  # the swapped model and its entropy model
    model = codec.model
    images, folder = _image_folder(model, args.data, args.limit, warn_resized=True)
    try:
        lo, hi = adapter_for(model).pixel_range
        originals, recons, codes = [], [], []
        with tqdm(total=len(images), desc="evaluating", unit="img", disable=args.no_progress) as bar, \
                torch.no_grad():
            for start in range(0, len(images), args.batch_size):
                x = images[start:start + args.batch_size] if isinstance(images, torch.Tensor) else \
                    torch.stack([images[i] for i in range(start, min(start + args.batch_size, len(images)))])
                c = encode_codes(model, x.to(device))
                recons.append(decode_codes(model, c).clamp(lo, hi).float().cpu())
                originals.append(x)
                codes.append(c.to("cpu"))
                bar.update(x.shape[0])
        q = swapped_quantizer(model)
        every = Codes.cat(codes)
        usage = torch.zeros(q.usage.shape, dtype=torch.long)  # the evaluated images' codes, not training counts
        group_counts = torch.zeros(q.num_groups, dtype=torch.long)
        add_code_counts(usage, group_counts, every.groups, every.indices)
        util = utilization(usage, group_counts)
        result = metrics.evaluate(torch.cat(originals), torch.cat(recons), data_range=hi - lo,
                                  bits_per_image=q.bits_per_image, util=util)
        entropy_bits = 8 * len(codec.entropy.encode(every.groups, every.indices)) / every.batch_size
    except (TypeError, ValueError) as e:
        raise CLIFailure(_one_line(e)) from None
    result["entropy_bits_per_image"] = entropy_bits  # what `vqswitch compress` stores (one container)
    result["entropy_bpp"] = entropy_bits / (result["height"] * result["width"])
    result["images"] = int(every.batch_size)
    result["skipped_images"] = [str(p) for p, _ in folder.skipped]
    if args.out:  # written before the plots: a plotting failure never loses the evaluation
        from vqswitch._io import atomic_write_bytes

        try:
            atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
        except OSError as e:
            raise CLIFailure(f"cannot write --out {args.out!r}: {_one_line(e)}") from None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [("images", result["images"]), ("bits/image", q.bits_per_image), ("bpp", f"{result['bpp']:.5f}"),
                ("entropy bits", f"{result['entropy_bits_per_image']:.1f}"),
                ("entropy bpp", f"{result['entropy_bpp']:.5f}"),
                ("PSNR (dB)", "exact" if result["psnr"] is None else f"{result['psnr']:.3f}"),
                ("SSIM", f"{result['ssim']:.4f}"),
                ("codebook use", f"{100 * util.mean:.1f}%" if util.mean == util.mean else "n/a")]
        for name, value in rows:
            print(f"{name:<12} {value:>12}")
        print(f"(codebook use: mean fraction of each (group, token) codebook's {q.codebook_size} codes used by these "
              f"images; groups {util.group_counts.tolist()})")
    if args.plots:
        try:
            metrics.plot_utilization(usage, os.path.join(args.plots, "utilization.png"))
            metrics.plot_group_histogram(group_counts, os.path.join(args.plots, "groups.png"))
        except (ImportError, OSError, ValueError) as e:
            raise CLIFailure(f"cannot write the plots to {args.plots!r}: {_one_line(e)}") from None
    return 0


def _holds_full_demo(out) -> bool:
    """Whether ``out/metrics.json`` is a full (not --quick) demo's."""
    try:
        with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
            config = json.load(f).get("config", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(config, dict) and config.get("quick") is False


def cmd_demo(args) -> int:
    """Run :func:`vqswitch.demo.run_demo` (it prints the before/after table)."""
    from pathlib import Path

    from vqswitch.demo import check_data_folder, run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a folder")
    if args.quick and not args.overwrite and _holds_full_demo(out):
        raise CLIError(f"--out {str(out)!r} holds a full demo's results, which --quick would replace; choose another "
                       f"--out (e.g. {str(out) + '-quick'!r}) or pass --overwrite")
    try:
        data = check_data_folder(args.data)
        # --json: stdout carries only the JSON (the demo's table goes to stderr)
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            metrics = run_demo(out, quick=args.quick, seed=args.seed, progress=args.progress, data=data,
                               model=args.model)
    except (ValueError, TypeError) as e:  # an unusable --data folder or --model spec
        raise CLIError(_one_line(e)) from None
    if args.json:
        print(json.dumps(metrics, indent=2))
    return 0


def cmd_compress(args) -> int:
    """Compress image files into one container; print both modes' bits per image and bpp."""
    from vqswitch.codec import compress_files

    for p in args.images:
        if os.path.isdir(p):
            raise CLIError(f"{p} is a folder, not an image file (give its files, e.g. {os.path.join(p, '*.png')})")
    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:
        raise CLIError(f"no such image file: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    _check_output_file(args.output, "-o", overwrite=args.overwrite)
    device = _device(args)
    cm = _load_codec(args.model, args.revision, device)
    try:
        report = compress_files(args.images, cm, args.output, mode=args.mode, progress=not args.no_progress)
    except (TypeError, ValueError) as e:  # an image of the wrong size or mode: the input given
        raise CLIError(_one_line(e)) from None
    except OSError as e:
        raise CLIFailure(_one_line(e)) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    r = report
    print(f"wrote {r.path}: {r.count} image(s) of {r.height}x{r.width}, {r.total_bytes} bytes, mode {r.mode}")
    print(f"{'mode':<8} {'bits/image':>11} {'bpp':>8}")
    print(f"{'fixed':<8} {r.fixed_bits_per_image:>11} {r.fixed_bpp:>8.4f}")
    change = f"{100 * r.saving:.1f}% fewer" if r.saving >= 0 else f"{-100 * r.saving:.1f}% more"
    print(f"{'entropy':<8} {r.entropy_bits_per_image:>11.1f} {r.entropy_bpp:>8.4f}   "
          f"({change} bits than fixed; ideal {r.information_bits_per_image:.1f})")
    print(f"container: {r.container_bpp:.4f} bpp with header, names and checksum")
    return 0


def cmd_decompress(args) -> int:
    """Decode a container into PNGs. Without --model it loads the model the file names only when
    --trust-file-model is given: a .vqs file is untrusted input, and its header names what would be loaded."""
    from vqswitch.codec import decompress_file, read_header

    if not os.path.isfile(args.file):
        raise CLIError(f"no such file: {args.file}" if not os.path.exists(args.file) else f"{args.file} is not a file")
    _check_output_dir(args.output, "-o")
    device = _device(args)
    try:
        with open(args.file, "rb") as f:
            header = read_header(f.read())
    except (ValueError, OSError) as e:
        raise CLIFailure(_one_line(e)) from None
    if args.model is None and not args.trust_file_model:
        named = f"{header.source!r}" + (f" at revision {header.revision}" if header.revision else "") \
            if header.source else "no model"
        raise CLIError(f"{args.file} names {named} (identity {header.identity_hex[:12]}) as its model; pass --model "
                       "DIR_OR_REPO, or --trust-file-model to load the model the file names (only for files you "
                       "trust: it decides what gets loaded)")
    if args.model is not None:
        model = _load_codec(args.model, args.revision, device)
    elif header.source is not None:  # --trust-file-model: the recorded model, on --device
        model = _load_codec(header.source, args.revision if args.revision is not None else header.revision, device)
    else:
        model = None  # decompress_file says the file names no model
    try:
        files = decompress_file(args.file, args.output, model=model, progress=not args.no_progress,
                                overwrite=args.overwrite)
    except FileExistsError as e:
        raise CLIError(_one_line(e).replace("pass overwrite=True", "pass --overwrite")) from None
    except (TypeError, ValueError, OSError) as e:
        raise CLIFailure(_one_line(e)) from None
    if args.json:
        print(json.dumps([str(f) for f in files], indent=2))
    else:
        print(f"wrote {len(files)} image(s) to {args.output}")
    return 0


def _push(argv: list[str]) -> int:
    """``vqswitch push``: :mod:`vqswitch.publish`'s options plus ``--json`` (the result as one JSON object)."""
    from vqswitch import publish

    parser = publish.add_arguments(argparse.ArgumentParser(
        prog="vqswitch push", description="Publish a fine-tuned swapped model (weights, configs, entropy model "
        "and a model card) on the Hugging Face Hub."))
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    if not args.json:
        return publish.cmd_push(args)
    try:
        if args.dry_run is not None:
            out = publish.prepare_upload(args.run_dir, args.dry_run, repo_id=args.repo_id)
            result = {"run_dir": args.run_dir, "prepared": str(out),
                      "files": sorted(p.name for p in Path(out).iterdir())}
        else:
            if args.repo_id is None:
                raise ValueError("--repo-id ORG/NAME is required (or --dry-run OUT_DIR to only prepare the folder)")
            url = publish.push(args.run_dir, args.repo_id, revision=args.revision, private=args.private,
                               token=args.token, commit_message=args.message, create_pr=args.create_pr)
            result = {"run_dir": args.run_dir, "repo_id": args.repo_id, "url": str(url)}
    except (TypeError, ValueError, OSError) as err:
        print(f"vqswitch push: error: {_one_line(err)}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``vqswitch`` command."""
    from vqswitch import __version__

    p = argparse.ArgumentParser(prog="vqswitch", description="Switchable token-specific codebook quantization tools.")
    p.add_argument("--version", action="version", version=f"vqswitch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{bits,info,new,finetune,eval,demo,compress,decompress,push}")

    def size(s):
        s.add_argument("--height", type=int, default=256, help="image height for bpp (default 256)")
        s.add_argument("--width", type=int, default=256, help="image width for bpp (default 256)")
        s.add_argument("--json", action="store_true", help="print JSON")

    def device(s, what: str):
        s.add_argument("--device", metavar="DEV", help=f"where {what} runs: cuda, cuda:1, cpu... (default: cuda when "
                       "available, else cpu; a device this machine lacks is an error)")

    b = sub.add_parser("bits", help="bits per image and bpp (the paper's table by default)")
    b.add_argument("--tokens", type=int, help="T, tokens per image")
    b.add_argument("--codebook-size", type=int, help="K, codes per codebook")
    b.add_argument("--groups", type=int, default=1, help="M, codebook groups (default 1)")
    size(b)
    b.set_defaults(func=cmd_bits)

    i = sub.add_parser("info", help="describe a saved quantizer or swapped model (local directory or Hub repo ORG/NAME)")
    i.add_argument("source", metavar="DIR_OR_REPO", help="a quantizer folder (vqswitch new), a swapped model "
                   "(finetune's RUN_DIR/final, the demo's checkpoint) or a Hub repo id")
    i.add_argument("--revision", help="Hub branch, tag or commit")
    i.add_argument("--cache-dir", help="Hugging Face cache folder (default: the standard one)")
    size(i)
    i.set_defaults(func=cmd_info)

    n = sub.add_parser("new", help="save a fresh, randomly initialised quantizer")
    n.add_argument("dir", metavar="DIR", help="the folder to write (config.json, model.safetensors)")
    n.add_argument("--tokens", type=int, required=True, help="T, tokens per image")
    n.add_argument("--codebook-size", type=int, required=True, help="K, codes per codebook")
    n.add_argument("--dim", type=int, required=True, help="D, token dimension")
    n.add_argument("--groups", type=int, default=1, help="M, codebook groups (default 1)")
    n.add_argument("--shared", action="store_true", help="one codebook per group shared by all tokens")
    n.add_argument("--metric", choices=("l2", "cosine", "dot"), default="l2",
                   help="code search: squared L2 distance (default), cosine similarity or dot product")
    n.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the random codebooks")
    n.add_argument("--force", action="store_true", help="overwrite a different checkpoint already in DIR")
    n.set_defaults(func=cmd_new)

    f = sub.add_parser("finetune", help="swap STSCQ into a tokenizer (or continue a swapped one) and run the "
                       "fine-tuning stages")
    f.add_argument("--adapter", choices=sorted(ADAPTER_NAMES), help="the tokenizer family (default: detected "
                   "from the checkpoint's files)")
    f.add_argument("--model", required=True, metavar="REPO_OR_DIR", help="upstream checkpoint (Hub repo or path), "
                   "or a swapped checkpoint to continue (finetune's RUN_DIR/final, the demo's checkpoint)")
    f.add_argument("--subfolder", metavar="SUB", help="the model's folder inside --model (e.g. vqvae for "
                   "CompVis/ldm-celebahq-256)")
    f.add_argument("--data", required=True, metavar="DIR", help="a folder of training images")
    f.add_argument("--groups", type=int, help="M, codebook groups (required for an upstream --model)")
    f.add_argument("--codebook-size", type=int, help="K, codes per codebook (required for an upstream --model)")
    f.add_argument("--out", required=True, metavar="RUN_DIR", help="checkpoints, metrics.jsonl, final/")
    f.add_argument("--stages", help="which stages to run (default 1,2,3; 2,3 for a token-specific swapped --model)")
    f.add_argument("--steps", metavar="N|N1,N2,N3", help="optimizer steps, for every stage or per stage "
                   "(default 300,300,150, the demo's)")
    f.add_argument("--batch-size", metavar="B|B1,B2,B3", help="images per step, for every stage or per stage "
                   "(default 32)")
    f.add_argument("--lr", metavar="LR|LR1,LR2,LR3", help="AdamW learning rate, for every stage or per stage "
                   "(default 1e-3,1e-3,3e-4, the demo's)")
    f.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (0: stage ends only)")
    f.add_argument("--revision", help="Hub branch, tag or commit of --model")
    f.add_argument("--perceptual", metavar="MODEL", help="stage 3 perceptual loss over this transformers vision "
                   "backbone (Hub id or folder), e.g. a DINOv2 or ViT model")
    f.add_argument("--perceptual-weight", type=float, help="its weight (default 1.0 when --perceptual is given)")
    f.add_argument("--identity", metavar="MODEL", help="stage 3 identity loss: 1 - cosine of this backbone's "
                   "embeddings (a face-recognition model for the paper's identity loss)")
    f.add_argument("--identity-weight", type=float, help="its weight (default 1.0 when --identity is given)")
    f.add_argument("--seed", type=int, default=0, help="seeds the router, the batches and the initialisation")
    device(f, "training")
    f.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="stage 3's decoder under "
                   "autocast in this precision (fp16 needs CUDA); the encoder and the code search stay fp32")
    f.add_argument("--resume", action="store_true", help="continue RUN_DIR's run from its latest checkpoint")
    f.add_argument("--overwrite", action="store_true", help="start again in a RUN_DIR that holds a run (its "
                   "checkpoints, metrics and final model are removed)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=cmd_finetune)

    e = sub.add_parser("eval", help="bpp, PSNR, SSIM and codebook use of a swapped model on a folder of images")
    e.add_argument("--model", required=True, metavar="DIR_OR_REPO", help="a swapped model (save_swapped / finetune)")
    e.add_argument("--data", required=True, metavar="DIR", help="a folder of images (others than the model's size "
                   "are resized and centre-cropped, with a warning)")
    e.add_argument("--revision", help="Hub branch, tag or commit")
    e.add_argument("--limit", type=int, help="evaluate at most this many images (>= 1)")
    e.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    e.add_argument("--out", metavar="FILE.json", help="write the metrics here (atomically)")
    e.add_argument("--plots", metavar="DIR", help="write utilisation and group-histogram PNGs (needs matplotlib: "
                   "pip install 'vqswitch[plots]')")
    device(e, "the model")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_eval)

    from vqswitch.demo import add_arguments as demo_arguments

    d = demo_arguments(sub.add_parser("demo", help="the main job: train a small tokenizer on procedural faces, swap in "
                                      "STSCQ, run the three stages, print a before/after table (CPU, minutes)"))
    d.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout (the table goes to "
                   "stderr)")
    d.add_argument("--overwrite", action="store_true", help="let --quick replace a full demo's results in --out")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("compress", help="compress images into one .vqs file (entropy-coded or fixed-length codes)")
    c.add_argument("images", nargs="+", metavar="IMAGES", help="image files at the model's image size")
    c.add_argument("--model", required=True, metavar="DIR_OR_REPO", help="a fine-tuned swapped model")
    c.add_argument("-o", "--output", required=True, metavar="OUT.vqs", help="the file to write (atomically)")
    c.add_argument("--overwrite", action="store_true", help="replace OUT.vqs if it exists")
    c.add_argument("--mode", choices=("auto", "entropy", "fixed"), default="auto",
                   help="payload coding: entropy-coded, fixed-length, or auto (default): the smaller of the two")
    c.add_argument("--revision", help="Hub branch, tag or commit of --model")
    device(c, "the encoder")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=cmd_compress)

    x = sub.add_parser("decompress", help="decode a .vqs file into PNGs")
    x.add_argument("file", metavar="FILE.vqs", help="the container to decode")
    x.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNGs")
    x.add_argument("--model", metavar="DIR_OR_REPO", help="the model it was compressed with")
    x.add_argument("--trust-file-model", action="store_true", help="without --model, load the model the file "
                   "names (only for files you trust: the file decides what gets loaded)")
    x.add_argument("--revision", help="Hub branch, tag or commit of --model")
    x.add_argument("--overwrite", action="store_true", help="replace existing PNGs of the same names")
    device(x, "the decoder")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")
    x.add_argument("--json", action="store_true", help="print the written paths as JSON")
    x.set_defaults(func=cmd_decompress)

    # `vqswitch push ...` is handed whole to _push (see main()); listed here for --help
    sub.add_parser("push", help="publish a fine-tuned model (weights, entropy model, model card) to the Hub; "
                   "see `vqswitch push --help`", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``vqswitch`` command line; returns the exit code (argparse exits 2 on bad syntax): 0 ok, 2 usage
    errors, 1 runtime failures, 130 an interrupted finetune."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["push"]:  # its own parser and error handling
        return _push(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv
    with warnings.catch_warnings():  # restores the caller's warning display afterwards
        warnings.showwarning = _show_warning  # one line each, never a source line
        try:
            return args.func(args)
        except CLIError as e:
            print(f"vqswitch: error: {e}", file=sys.stderr)
            return e.exit_code


if __name__ == "__main__":
    sys.exit(main())

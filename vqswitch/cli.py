"""The ``vqswitch`` console script (``main(argv) -> exit code``).

    vqswitch bits                                   the paper's bits/bpp table for standard tokenizers
    vqswitch bits --tokens T --codebook-size K [--groups M] [--height H --width W]
    vqswitch info DIR_OR_REPO [--revision REV] [--height H --width W]
    vqswitch new DIR --tokens T --codebook-size K --dim D [--groups M] [--shared] [--metric l2] [--seed S]
    vqswitch finetune --adapter {diffusers,maskgit,titok,ibq} --model REPO_OR_DIR --data DIR --groups M
                      --codebook-size K --out RUN_DIR [--stages 1,2,3] [--steps N] [--resume] ...
    vqswitch eval --model SWAPPED_DIR_OR_REPO --data DIR [--out FILE.json] [--plots DIR] [--limit N]
    vqswitch demo [--out DIR] [--quick] [--seed S] [--no-progress]
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
import sys

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
    """A user-facing error: printed as one line, exit code 2."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


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

    # A Hub repo is ORG/NAME; anything else (or anything that exists on disk) is a local path.
    local = (os.path.exists(source) or source.count("/") != 1 or source.startswith((".", "/", "~"))
             or (os.sep != "/" and os.sep in source))
    if local:
        if not os.path.isdir(source):
            raise CLIError(f"{source}: {'not a directory' if os.path.exists(source) else 'no such checkpoint directory'}")
        for name in ("config.json", "model.safetensors"):
            if not os.path.isfile(os.path.join(source, name)):
                raise CLIError(f"{source}: not a vqswitch checkpoint (no {name})")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the Hub mixin prints while loading
            return SwitchableTokenQuantizer.from_pretrained(source, revision=revision, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - any failure is reported in one line, never a traceback
        where = "" if local else " (not a local directory; tried the Hugging Face Hub)"
        raise CLIError(f"cannot load {source!r}{where}: {type(e).__name__}: {_one_line(e)}") from None


def _count(params) -> dict:
    params = list(params)
    return {"count": sum(p.numel() for p in params), "bytes": sum(p.numel() * p.element_size() for p in params)}


def cmd_info(args) -> int:
    """Config, bits, parameter sizes and recorded utilisation of a saved quantizer."""
    q = _load(args.source, args.revision, args.cache_dir)
    router = list(q.router.parameters()) if q.router is not None else []
    params = {"codebooks": _count([q.codebooks]), "router": _count(router), "total": _count(q.parameters())}
    util = None
    if int(q.usage.sum()) > 0:
        u = q.utilization()
        util = {"min": u.min, "max": u.max, "mean": u.mean, "std": u.std, "group_counts": u.group_counts.tolist()}
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
            raise CLIError(f"cannot save to {args.dir}: {_one_line(e)}") from None
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


def _image_folder(model, data: str, limit: int | None = None):
    from vqswitch.adapters import adapter_for
    from vqswitch.data import ImageFolder

    adapter = adapter_for(model)
    size = adapter.image_size(model)
    if size[0] != size[1]:
        raise CLIError(f"the model is configured for non-square {size[0]}x{size[1]} images; use the Python API")
    try:
        folder = ImageFolder(data, size[0], pixel_range=adapter.pixel_range)
        folder.validate()  # unreadable files are reported (a warning each) and left out, never fatal
    except (TypeError, ValueError) as e:
        raise CLIError(_one_line(e)) from None
    if limit is not None:
        import torch

        return torch.stack([folder[i] for i in range(min(limit, len(folder)))]), folder
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


def _write_run_info(args, config, num_images: int) -> None:
    """``RUN_DIR/run.json``: what the run started from (read by ``vqswitch push`` for the model card)."""
    from vqswitch.atomic import atomic_write_bytes

    info = {"format": "vqswitch-run", "adapter": ADAPTER_NAMES[args.adapter], "base_model": args.model,
            "base_revision": args.revision,
            # only the folder's name: run.json is published with the model (`vqswitch push`), local paths are not
            "data": {"description": f"image folder {os.path.basename(os.path.normpath(args.data))!r}",
                     "path": os.path.basename(os.path.normpath(args.data)), "num_images": num_images},
            "num_groups": args.groups, "codebook_size": args.codebook_size,
            "losses": {"perceptual": args.perceptual, "identity": args.identity},
            "finetune": config.to_dict()}
    atomic_write_bytes(os.path.join(args.out, "run.json"), (json.dumps(info, indent=2) + "\n").encode())


def cmd_finetune(args) -> int:
    """Load an upstream tokenizer, swap in a token-shared STSCQ quantizer, and run the three stages."""
    from vqswitch.adapters import load_pretrained, save_swapped, swap_quantizer, swapped_quantizer
    from vqswitch.train.finetune import FinetuneConfig, Finetuner, StageConfig

    stages = _stages(args.stages)
    for name in ("perceptual", "identity"):
        if getattr(args, f"{name}_weight") is not None and getattr(args, name) is None:
            raise CLIError(f"--{name}-weight needs --{name} MODEL (a transformers vision backbone)")
    try:
        import torch

        model = load_pretrained(args.model, adapter=ADAPTER_NAMES[args.adapter], revision=args.revision)
        torch.manual_seed(args.seed)  # the router's initialisation
        model = swap_quantizer(model, num_groups=args.groups, codebook_size=args.codebook_size, token_specific=False,
                               seed=args.seed)
        data, folder = _image_folder(model, args.data)
        losses, weights = _feature_losses(args, model)
        stage = [StageConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size) for _ in range(2)]
        stage.append(StageConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, **weights))
        config = FinetuneConfig(stages=stages, stage1=stage[0], stage2=stage[1], stage3=stage[2], seed=args.seed,
                                checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
        finetuner = Finetuner(model, data, args.out, config, resume=args.resume, **losses)
        _write_run_info(args, config, len(folder))
        model = finetuner.run()
        final = save_swapped(model, os.path.join(args.out, "final"))
    except (TypeError, ValueError, OSError) as e:
        raise CLIError(_one_line(e)) from None
    q = swapped_quantizer(model)
    summary = {"run_dir": args.out, "final": str(final), "bits_per_image": q.bits_per_image,
               "skipped_images": [str(p) for p, _ in folder.skipped]}
    print(json.dumps(summary, indent=2) if args.json else
          f"fine-tuned {args.adapter} model saved to {final} ({q.bits_per_image} bits per image)")
    return 0


def cmd_eval(args) -> int:
    """Reconstruct a folder of images through a swapped model's codes; print and save the metrics."""
    import torch

    from vqswitch import metrics
    from vqswitch.adapters import adapter_for, decode_codes, encode_codes, swapped_quantizer

    from vqswitch.codec import load_codec_model
    from vqswitch.codes import Codes

    try:
        codec = load_codec_model(args.model, revision=args.revision)  # the swapped model and its entropy model
        model = codec.model
        images, folder = _image_folder(model, args.data, args.limit)
        lo, hi = adapter_for(model).pixel_range
        originals, recons, codes = [], [], []
        for start in range(0, len(images), args.batch_size):
            x = images[start:start + args.batch_size] if isinstance(images, torch.Tensor) else \
                torch.stack([images[i] for i in range(start, min(start + args.batch_size, len(images)))])
            originals.append(x)
            codes.append(encode_codes(model, x))
            recons.append(decode_codes(model, codes[-1]).clamp(lo, hi))
        q = swapped_quantizer(model)
        result = metrics.evaluate(torch.cat(originals), torch.cat(recons), data_range=hi - lo,
                                  bits_per_image=q.bits_per_image, util=q.utilization())
        every = Codes.cat(codes).to("cpu")
        entropy_bits = 8 * len(codec.entropy.encode(every.groups, every.indices)) / every.batch_size
        result["entropy_bits_per_image"] = entropy_bits  # what `vqswitch compress` stores (one container)
        result["entropy_bpp"] = entropy_bits / (result["height"] * result["width"])
        if args.plots:
            try:
                metrics.plot_utilization(q.usage, os.path.join(args.plots, "utilization.png"))
                metrics.plot_group_histogram(q.group_counts, os.path.join(args.plots, "groups.png"))
            except ImportError as e:
                raise CLIError(_one_line(e)) from None
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise CLIError(_one_line(e)) from None
    result["images"] = int(sum(x.shape[0] for x in originals))
    result["skipped_images"] = [str(p) for p, _ in folder.skipped]
    if args.out:
        from vqswitch.atomic import atomic_write_bytes

        atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [("images", result["images"]), ("bits/image", q.bits_per_image), ("bpp", f"{result['bpp']:.5f}"),
                ("entropy bits", f"{result['entropy_bits_per_image']:.1f}"),
                ("entropy bpp", f"{result['entropy_bpp']:.5f}"),
                ("PSNR (dB)", "exact" if result["psnr"] is None else f"{result['psnr']:.3f}"),
                ("SSIM", f"{result['ssim']:.4f}")]
        for name, value in rows:
            print(f"{name:<12} {value:>12}")
    return 0


def cmd_demo(args) -> int:
    """Run :func:`vqswitch.demo.run_demo` (it prints the before/after table)."""
    from pathlib import Path

    from vqswitch.demo import run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a folder")
    metrics = run_demo(out, quick=args.quick, seed=args.seed, progress=args.progress)
    if args.json:
        print(json.dumps(metrics, indent=2))
    return 0


def cmd_compress(args) -> int:
    """Compress image files into one container; print both modes' bits per image and bpp."""
    from vqswitch.codec import compress_files

    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:
        raise CLIError(f"no such image file: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    try:
        report = compress_files(args.images, args.model, args.output, mode=args.mode, revision=args.revision,
                                progress=not args.no_progress)
    except (TypeError, ValueError, OSError) as e:
        raise CLIError(_one_line(e)) from None
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
        raise CLIError(f"no such file: {args.file}")
    if args.model is None and not args.trust_file_model:
        try:
            with open(args.file, "rb") as f:
                header = read_header(f.read())
        except (ValueError, OSError) as e:
            raise CLIError(_one_line(e)) from None
        named = f"{header.source!r}" + (f" at revision {header.revision}" if header.revision else "") \
            if header.source else "no model"
        raise CLIError(f"{args.file} names {named} (identity {header.identity_hex[:12]}) as its model; pass --model "
                       "DIR_OR_REPO, or --trust-file-model to load the model the file names (only for files you "
                       "trust: it decides what gets loaded)")
    try:
        files = decompress_file(args.file, args.output, model=args.model, revision=args.revision,
                                progress=not args.no_progress, overwrite=args.overwrite)
    except FileExistsError as e:
        raise CLIError(_one_line(e).replace("pass overwrite=True", "pass --overwrite")) from None
    except (TypeError, ValueError, OSError) as e:
        raise CLIError(_one_line(e)) from None
    if args.json:
        print(json.dumps([str(f) for f in files], indent=2))
    else:
        print(f"wrote {len(files)} image(s) to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``vqswitch`` command."""
    p = argparse.ArgumentParser(prog="vqswitch", description="Switchable token-specific codebook quantization tools.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{bits,info,new,finetune,eval,demo,compress,decompress,push}")

    def size(s):
        s.add_argument("--height", type=int, default=256, help="image height for bpp (default 256)")
        s.add_argument("--width", type=int, default=256, help="image width for bpp (default 256)")
        s.add_argument("--json", action="store_true", help="print JSON")

    b = sub.add_parser("bits", help="bits per image and bpp (the paper's table by default)")
    b.add_argument("--tokens", type=int, help="T, tokens per image")
    b.add_argument("--codebook-size", type=int, help="K, codes per codebook")
    b.add_argument("--groups", type=int, default=1, help="M, codebook groups (default 1)")
    size(b)
    b.set_defaults(func=cmd_bits)

    i = sub.add_parser("info", help="describe a saved quantizer (local directory or Hub repo ORG/NAME)")
    i.add_argument("source", metavar="DIR_OR_REPO")
    i.add_argument("--revision", help="Hub branch, tag or commit")
    i.add_argument("--cache-dir", help="Hugging Face cache folder (default: the standard one)")
    size(i)
    i.set_defaults(func=cmd_info)

    n = sub.add_parser("new", help="save a fresh, randomly initialised quantizer")
    n.add_argument("dir", metavar="DIR")
    n.add_argument("--tokens", type=int, required=True, help="T, tokens per image")
    n.add_argument("--codebook-size", type=int, required=True, help="K, codes per codebook")
    n.add_argument("--dim", type=int, required=True, help="D, token dimension")
    n.add_argument("--groups", type=int, default=1, help="M, codebook groups (default 1)")
    n.add_argument("--shared", action="store_true", help="one codebook per group shared by all tokens")
    n.add_argument("--metric", choices=("l2", "cosine", "dot"), default="l2")
    n.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the random codebooks")
    n.add_argument("--force", action="store_true", help="overwrite a different checkpoint already in DIR")
    n.set_defaults(func=cmd_new)

    f = sub.add_parser("finetune", help="swap STSCQ into a tokenizer and run the three fine-tuning stages")
    f.add_argument("--adapter", choices=sorted(ADAPTER_NAMES), required=True, help="the tokenizer family")
    f.add_argument("--model", required=True, metavar="REPO_OR_DIR", help="upstream checkpoint (Hub repo or path)")
    f.add_argument("--data", required=True, metavar="DIR", help="a folder of training images")
    f.add_argument("--groups", type=int, required=True, help="M, codebook groups")
    f.add_argument("--codebook-size", type=int, required=True, help="K, codes per codebook")
    f.add_argument("--out", required=True, metavar="RUN_DIR", help="checkpoints, metrics.jsonl, final/")
    f.add_argument("--stages", default="1,2,3", help="which stages to run (default 1,2,3)")
    f.add_argument("--steps", type=int, default=1000, help="optimizer steps per stage (default 1000)")
    f.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    f.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    f.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (0: stage ends only)")
    f.add_argument("--revision", help="Hub branch, tag or commit of --model")
    f.add_argument("--perceptual", metavar="MODEL", help="stage 3 perceptual loss over this transformers vision "
                   "backbone (Hub id or folder), e.g. a DINOv2 or ViT model")
    f.add_argument("--perceptual-weight", type=float, help="its weight (default 1.0 when --perceptual is given)")
    f.add_argument("--identity", metavar="MODEL", help="stage 3 identity loss: 1 - cosine of this backbone's "
                   "embeddings (a face-recognition model for the paper's identity loss)")
    f.add_argument("--identity-weight", type=float, help="its weight (default 1.0 when --identity is given)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--resume", action="store_true", help="continue RUN_DIR's run from its latest checkpoint")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=cmd_finetune)

    e = sub.add_parser("eval", help="bpp, PSNR, SSIM and codebook use of a swapped model on a folder of images")
    e.add_argument("--model", required=True, metavar="DIR_OR_REPO", help="a swapped model (save_swapped / finetune)")
    e.add_argument("--data", required=True, metavar="DIR", help="a folder of images")
    e.add_argument("--revision", help="Hub branch, tag or commit")
    e.add_argument("--limit", type=int, help="evaluate at most this many images")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--out", metavar="FILE.json", help="write the metrics here (atomically)")
    e.add_argument("--plots", metavar="DIR", help="write utilisation and group-histogram PNGs (needs matplotlib)")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_eval)

    from vqswitch.demo import add_arguments as demo_arguments

    d = demo_arguments(sub.add_parser("demo", help="the main job: train a small tokenizer on procedural faces, swap in "
                                      "STSCQ, run the three stages, print a before/after table (CPU, minutes)"))
    d.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("compress", help="compress images into one .vqs file (entropy-coded or fixed-length codes)")
    c.add_argument("images", nargs="+", metavar="IMAGES", help="image files at the model's image size")
    c.add_argument("--model", required=True, metavar="DIR_OR_REPO", help="a fine-tuned swapped model")
    c.add_argument("-o", "--output", required=True, metavar="OUT.vqs", help="the file to write (atomically)")
    c.add_argument("--mode", choices=("auto", "entropy", "fixed"), default="auto",
                   help="payload coding: entropy-coded, fixed-length, or auto (default): the smaller of the two")
    c.add_argument("--revision", help="Hub branch, tag or commit of --model")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=cmd_compress)

    x = sub.add_parser("decompress", help="decode a .vqs file into PNGs")
    x.add_argument("file", metavar="FILE.vqs")
    x.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNGs")
    x.add_argument("--model", metavar="DIR_OR_REPO", help="the model it was compressed with")
    x.add_argument("--trust-file-model", action="store_true", help="without --model, load the model the file "
                   "names (only for files you trust: the file decides what gets loaded)")
    x.add_argument("--revision", help="Hub branch, tag or commit of --model")
    x.add_argument("--overwrite", action="store_true", help="replace existing PNGs of the same names")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")
    x.add_argument("--json", action="store_true", help="print the written paths as JSON")
    x.set_defaults(func=cmd_decompress)

    # `vqswitch push ...` is handed whole to vqswitch.publish.main (see main()); listed here for --help
    sub.add_parser("push", help="publish a fine-tuned model (weights, entropy model, model card) to the Hub; "
                   "see `vqswitch push --help`", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the ``vqswitch`` command line; returns the exit code (argparse exits 2 on bad syntax)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["push"]:  # its own parser and error handling
        from vqswitch.publish import main as push_main

        return push_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"vqswitch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

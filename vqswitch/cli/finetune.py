"""``vqswitch finetune``: swap STSCQ into an upstream tokenizer (or continue a swapped checkpoint) and run the
fine-tuning stages into a run folder (checkpoints, metrics.jsonl, run.json, final/), resumable."""
from __future__ import annotations

import os
import shlex
import sys

from vqswitch import formats
from vqswitch._checks import one_line
from vqswitch.cli._common import (CLIError, CLIFailure, add_device_argument, check_output_dir, device, image_folder,
                                  is_local, is_swapped_checkpoint)

__all__ = ["ADAPTER_NAMES", "stage_settings", "add_parser", "run"]

# --adapter NAME -> the adapter's registered name
ADAPTER_NAMES = {"diffusers": "diffusers-vqmodel", "maskgit": "maskgit-vqgan", "titok": "titok", "ibq": "ibq"}


def add_parser(subparsers) -> None:
    f = subparsers.add_parser("finetune", help="swap STSCQ into a tokenizer (or continue a swapped one) and run the "
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
    add_device_argument(f, "training")
    f.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="stage 3's decoder under "
                   "autocast in this precision (fp16 needs CUDA); the encoder and the code search stay fp32")
    f.add_argument("--resume", action="store_true", help="continue RUN_DIR's run from its latest checkpoint")
    f.add_argument("--overwrite", action="store_true", help="start again in a RUN_DIR that holds a run (its "
                   "checkpoints, metrics and final model are removed)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=run)


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
    """The three :class:`~vqswitch.train.StageConfig` of ``vqswitch finetune`` from ``--steps``, ``--lr``
    and ``--batch-size`` (each one value or three); defaults are the demo's working settings
    (:data:`vqswitch.experiments.faces.FULL`). Raises CLIError for a count, rate or size that is not > 0."""
    from vqswitch.experiments.faces import FULL
    from vqswitch.train import StageConfig

    steps = _per_stage(args.steps, "--steps", int, (FULL.stage1_steps, FULL.stage2_steps, FULL.stage3_steps))
    lr = _per_stage(args.lr, "--lr", float, (FULL.stage12_lr, FULL.stage12_lr, FULL.stage3_lr))
    batch = _per_stage(args.batch_size, "--batch-size", int, (FULL.stage_batch_size,) * 3)
    return [StageConfig(steps=steps[i], lr=lr[i], batch_size=batch[i]) for i in range(3)]


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
    from vqswitch._io import atomic_write_json

    info = {"format": formats.RUN_FORMAT, "adapter": adapter, "base_model": args.model,
            "base_revision": args.revision, "base_subfolder": args.subfolder,
            # only the folder's name: run.json is published with the model (`vqswitch push`), local paths are not
            "data": {"description": f"image folder {os.path.basename(os.path.normpath(args.data))!r}",
                     "path": os.path.basename(os.path.normpath(args.data)), "num_images": num_images},
            "num_groups": quantizer.num_groups, "codebook_size": quantizer.codebook_size,
            "losses": {"perceptual": args.perceptual, "identity": args.identity},
            "finetune": config.to_dict()}
    atomic_write_json(os.path.join(args.out, formats.RUN_INFO_FILE), info)


def _prepare_run_dir(args) -> None:
    """--out may hold a run only with --resume (continue it) or --overwrite (its run entries are removed)."""
    import shutil

    check_output_dir(args.out, "--out")
    if args.resume and args.overwrite:
        raise CLIError("--resume continues RUN_DIR's run, --overwrite starts it again: pass one of them")
    taken = [e for e in formats.RUN_ENTRIES if os.path.lexists(os.path.join(args.out, e))]
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
    from vqswitch.adapters import adapter_for, detect_family, load_pretrained, load_swapped, swapped_quantizer

    source = args.model
    if is_local(source):
        if not os.path.exists(source):
            raise CLIError(f"--model {source!r}: no such file or folder")
        if args.subfolder:
            source = os.path.join(source, args.subfolder)
            if not os.path.exists(source):
                raise CLIError(f"--subfolder {args.subfolder!r}: no such folder in {args.model!r}")
    if is_swapped_checkpoint(source, args.revision):
        try:
            model = load_swapped(source, revision=args.revision, map_location=device)
        except Exception as e:  # noqa: BLE001
            raise CLIFailure(f"cannot load the swapped checkpoint {source!r}: {type(e).__name__}: {one_line(e)}") \
                from None
        q = swapped_quantizer(model)
        for flag, value, have in (("--groups", args.groups, q.num_groups),
                                  ("--codebook-size", args.codebook_size, q.codebook_size)):
            if value is not None and value != have:
                raise CLIError(f"{flag} {value}: the swapped checkpoint {source!r} has {have} (leave {flag} out to "
                               "continue it as it is)")
        name = adapter_for(model).name
        if args.adapter is not None and ADAPTER_NAMES[args.adapter] != name:
            raise CLIError(f"--adapter {args.adapter}: the swapped checkpoint {source!r} holds a {name!r} model")
        return model, name, True
    for flag, value in (("--groups", args.groups), ("--codebook-size", args.codebook_size)):
        if value is None:
            raise CLIError(f"{flag} is required when --model is an upstream checkpoint (not a swapped one)")
    name = ADAPTER_NAMES[args.adapter] if args.adapter else None
    kwargs = {"revision": args.revision}
    if args.subfolder and not is_local(args.model):
        kwargs["subfolder"] = args.subfolder
    if name is None:
        try:
            name = detect_family(source, subfolder=kwargs.get("subfolder"), revision=args.revision)
        except ValueError as e:
            raise CLIError(one_line(e).replace("pass adapter=", "pass --adapter, the family of")) from None
    try:
        model = load_pretrained(source, adapter=name, device=device, **kwargs)
    except FileNotFoundError as e:
        raise CLIError(one_line(e)) from None
    except Exception as e:  # noqa: BLE001
        raise CLIFailure(f"cannot load {source!r} as {name}: {type(e).__name__}: {one_line(e)}") from None
    return model, name, False


def _resume_hint(args) -> str:
    argv = [a for a in getattr(args, "argv", []) if a != "--overwrite"]
    if os.path.isfile(os.path.join(args.out, formats.CHECKPOINTS_DIR, formats.LATEST_FILE)):
        return "resume with: vqswitch " + shlex.join(argv + ([] if "--resume" in argv else ["--resume"]))
    return "no checkpoint was written yet; start again with: vqswitch " + shlex.join(argv + ["--overwrite"])


def run(args) -> int:
    """Load an upstream tokenizer and swap in a token-shared STSCQ quantizer (or continue a swapped checkpoint),
    then run the fine-tuning stages on --device (mixed precision in stage 3 with --dtype)."""
    import json

    import torch

    from vqswitch.adapters import save_swapped, swap_quantizer, swapped_quantizer
    from vqswitch.train import FinetuneConfig, Finetuner, StageConfig

    stages = _stages(args.stages) if args.stages is not None else None
    settings = stage_settings(args)
    for name in ("perceptual", "identity"):
        if getattr(args, f"{name}_weight") is not None and getattr(args, name) is None:
            raise CLIError(f"--{name}-weight needs --{name} MODEL (a transformers vision backbone)")
    if args.groups is not None and args.groups < 1 or args.codebook_size is not None and args.codebook_size < 1:
        raise CLIError("--groups and --codebook-size must be >= 1")
    dev = device(args)
    amp = _amp_dtype(args, dev)
    _prepare_run_dir(args)
    try:
        model, adapter, swapped = _load_base(args, dev)
        data, folder = image_folder(model, args.data)
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
        finetuner = Finetuner(model, data, args.out, config, resume=args.resume, device=dev, autocast_dtype=amp,
                              **losses)
        _write_run_info(args, adapter, config, len(folder), q)
        model = finetuner.run()
        final = save_swapped(model, os.path.join(args.out, formats.FINAL_DIR))
    except KeyboardInterrupt:
        print(f"vqswitch: interrupted; {_resume_hint(args)}", file=sys.stderr)
        return 130
    except (TypeError, ValueError) as e:
        raise CLIError(one_line(e)) from None
    except (OSError, RuntimeError, ArithmeticError) as e:  # I/O, CUDA out of memory, TrainingDiverged
        raise CLIFailure(f"{type(e).__name__}: {one_line(e)}") from None
    q = swapped_quantizer(model)
    summary = {"run_dir": args.out, "final": str(final), "bits_per_image": q.bits_per_image,
               "skipped_images": [str(p) for p, _ in folder.skipped]}
    print(json.dumps(summary, indent=2) if args.json else
          f"fine-tuned {adapter} model saved to {final} ({q.bits_per_image} bits per image)")
    return 0

"""The demo: the whole STSCQ story on a laptop CPU, in a few minutes, with no download (``vqswitch demo`` runs
:func:`run_demo`; its pieces live in :mod:`vqswitch.experiments.faces`).

1. Draw procedural faces (:class:`vqswitch.data.ProceduralFaces`): a training set and held-out test faces.
2. Train a small MaskGIT-VQGAN tokenizer (:class:`~vqswitch.adapters.models.maskgit_vqgan.MaskGitVQGAN`, random
   init) as a standard VQ tokenizer with one global codebook of K0 codes: encoder + decoder + codebook, L2
   reconstruction + the quantizer's codebook/commitment loss with straight-through gradients, Adam. The codebook
   starts as a k-means of encoder outputs and dead codes are reset to random encoder outputs during training.
   This is the *baseline* (M = 1, K0 codes, ``T * ceil(log2 K0)`` bits per image).
3. Swap in a :class:`~vqswitch.SwitchableTokenQuantizer` (M groups of K <= K0 codes, token-shared, started from a
   per-group k-means of the training latents) and run the paper's three stages with
   :class:`~vqswitch.train.Finetuner` (encoder frozen): group codebooks + router, token-specific
   codebooks + router, then the decoder.
   For a fair comparison the baseline also gets the same stage-3 decoder fine-tuning (swapped with M = 1 and its
   own K0 codes, an exact drop-in, so only its decoder changes): the "baseline + stage 3" row.
4. Evaluate them on the test faces -- bits per image, bpp, PSNR, SSIM, codebook utilisation -- print a
   before/after table and write into ``out_dir``:

   * ``metrics.json``: ``{"config": ..., "baseline": {...}, "baseline_decoder_tuned": {...}, "stscq": {...}}``
     (written atomically); each model's
     entry is :func:`vqswitch.eval.evaluate`'s dict (with the utilisation table) plus ``num_tokens``,
     ``codebook_size``, ``num_groups`` and ``utilization_mean``;
   * ``reconstructions.png``: rows of test originals, baseline reconstructions, STSCQ reconstructions;
   * ``checkpoint/``: the fine-tuned swapped model (``config.json`` + ``model.safetensors``), loadable with
     :func:`vqswitch.adapters.load_swapped`;
   * ``run/``: the fine-tuning run directory (metrics.jsonl, stage checkpoints, latent cache), and
     ``run-baseline-decoder/``: the baseline's stage-3 run;
   * ``run.json``: what the run started from and its stages (``vqswitch push`` reads it for the model card).

Every number is measured by the run; nothing is typed in. Runs are deterministic for a given ``seed`` on one
machine (torch is seeded; the data depend only on the seed). Reconstructions are clamped to the pixel range
[0, 1] before PSNR/SSIM, as a saved image would be.
"""
from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from vqswitch import formats
from vqswitch._checks import check_int, check_path
from vqswitch.experiments.faces import (FULL, QUICK, DemoConfig, build_tokenizer, evaluate_baseline,
                                        evaluate_swapped, folder_faces, format_table, grid_rows, pick_config,
                                        split_faces, to_pixel_range, train_baseline)

__all__ = ["run_demo"]


def run_demo(out_dir="vqswitch-demo", *, quick: bool = False, seed: int = 0, progress: bool = True,
             config: DemoConfig | None = None, data=None, model=None) -> dict:
    """Run the demo (see the module docstring) and return its metrics (what ``metrics.json`` holds).

    Args:
        out_dir: output folder (created; ``metrics.json``, ``reconstructions.png``, ``checkpoint/`` and ``run/``
            in it are replaced).
        quick: a tiny run (seconds) for tests and smoke checks; numbers are then not meaningful.
        seed: int >= 0; seeds the data, the weights and every random choice.
        progress: show tqdm progress bars.
        config: override the sizes and steps (default :data:`~vqswitch.experiments.faces.FULL`, or
            :data:`~vqswitch.experiments.faces.QUICK` with ``quick=True``).
        data: None (procedural faces), or a face folder (str or PathLike; one sub-folder per identity): its
            identities are split into training and test people (:func:`~vqswitch.experiments.faces.folder_faces`),
            images resized to the tokenizer's ``image_size``.
        model: None (train the demo's own small MaskGIT-VQGAN), or a pretrained tokenizer: an ``nn.Module`` an
            adapter recognises, or a spec :func:`vqswitch.adapters.load_model` reads (a checkpoint
            ``load_pretrained`` reads, or ``module:function`` / ``path/file.py:function`` building the user's own
            described model). Its own codebook is the baseline (no training), images take its configured size and
            pixel range, and K must not exceed its K0.
    Prints the before/after table to stdout.
    Raises TypeError/ValueError for bad arguments, ``FloatingPointError`` if training diverges.
    """
    from vqswitch._io import atomic_write_json
    from vqswitch.adapters import adapter_for, encode_latents, load_model, save_swapped, swap_quantizer
    from vqswitch.adapters.saving import shareable_source
    from vqswitch.data import save_labelled_grid
    from vqswitch.train import Finetuner, FinetuneConfig, StageConfig

    seed = check_int("seed", seed, minimum=0)
    cfg = config = pick_config(quick, config, DemoConfig, QUICK, FULL)
    if data is not None:
        data = check_path("data", data)
    pretrained, model_spec = None, None
    if model is not None:
        if isinstance(model, torch.nn.Module):
            pretrained = model
        else:
            model_spec = str(model)
            pretrained = load_model(model)
        adapter = adapter_for(pretrained)
        pixel_range = tuple(float(v) for v in adapter.pixel_range)
        size = adapter.image_size(pretrained)
        if size[0] != size[1]:
            raise ValueError(f"the demo draws square faces, but the model is configured for {size[0]}x{size[1]} images")
        image_size, K0 = int(size[0]), int(adapter.codebook(pretrained).shape[0])
    else:
        pixel_range, image_size, K0 = (0.0, 1.0), cfg.image_size, cfg.codebook_size0
    if cfg.codebook_size > K0:
        raise ValueError(f"codebook_size K={cfg.codebook_size} must be <= the baseline's K0={K0}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / formats.DEMO_RUN_DIR
    for stale in (run_dir, out / formats.DEMO_BASELINE_RUN_DIR):  # fresh fine-tuning runs every time (never resumed)
        shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    torch.manual_seed(seed)

    # 1. data: held-out test faces are the images after the training ones
    if data is None:
        train, test = split_faces(cfg.num_train, cfg.num_test, image_size, seed)
        data_info = {"name": "ProceduralFaces", "train_images": cfg.num_train,
                     "test": f"held-out indices {cfg.num_train}..{cfg.num_train + cfg.num_test - 1}"}
        data_description = (f"vqswitch.data.ProceduralFaces (seed {seed}): {cfg.num_train} procedural "
                            f"{image_size}x{image_size} faces drawn from random identity attributes")
    else:
        train, test, data_info = folder_faces(data, image_size, seed, max_train=8 * cfg.num_train,
                                              max_test=4 * cfg.num_test)
        data_info = {"name": f"face folder {data.name}", **data_info,
                     "test": f"{data_info['test_images']} images of {data_info['test_identities']} held-out people"}
        data_description = (f"{data_info['train_images']} face images of {data_info['train_identities']} people "
                            f"from {data.name}/, resized to {image_size}x{image_size}")

    # 2. the baseline: a standard global-codebook VQ tokenizer
    phases = {"data": time.perf_counter() - start}
    train_m = to_pixel_range(train, pixel_range)  # what the model trains on, in its own pixel range
    if pretrained is None:
        model = build_tokenizer(cfg)
        baseline_log = train_baseline(model, train, cfg, seed=seed, progress=progress)
        phases["baseline"] = time.perf_counter() - start - sum(phases.values())
        baseline, baseline_recon = evaluate_baseline(model, test, cfg)
    else:  # the pretrained model as it comes, through the exact M=1 drop-in swap of its own codebook
        model, baseline_log = pretrained, []
        baseline, baseline_recon = evaluate_swapped(swap_quantizer(copy.deepcopy(model)), test, pixel_range)
        phases["baseline"] = time.perf_counter() - start - sum(phases.values())
    stage3 = StageConfig(steps=cfg.stage3_steps, lr=cfg.stage3_lr, batch_size=cfg.stage_batch_size, l2_weight=1.0)

    # 2b. the fair reference: the same baseline with the same stage-3 decoder fine-tuning STSCQ gets. Swapped with
    #     M=1 and its own K0 codes (an exact drop-in: identical codes), so only the decoder changes.
    tuned = copy.deepcopy(model)
    swap_quantizer(tuned, num_groups=1, codebook_size=K0, token_specific=False, init="codebook")
    tuned = Finetuner(tuned, train_m, out / formats.DEMO_BASELINE_RUN_DIR,
                      FinetuneConfig(stages=(3,), seed=seed, progress=progress, stage3=stage3)).run()
    baseline_tuned, tuned_recon = evaluate_swapped(tuned, test, pixel_range)
    del tuned
    phases["baseline_stage3"] = time.perf_counter() - start - sum(phases.values())

    # 3. swap in STSCQ (M groups of K codes, token-shared, data-driven start) and run the three stages
    with torch.no_grad():
        latents = encode_latents(model, train_m[:4096])  # the k-means start needs no more
    torch.manual_seed(seed)  # the router's initialisation: independent of what ran before
    swap_quantizer(model, num_groups=cfg.num_groups, codebook_size=cfg.codebook_size, token_specific=False,
                   init="latents", latents=latents, seed=seed)
    ft_config = FinetuneConfig(
        stages=(1, 2, 3), seed=seed, progress=progress,
        stage1=StageConfig(steps=cfg.stage1_steps, lr=cfg.stage12_lr, batch_size=cfg.stage_batch_size),
        stage2=StageConfig(steps=cfg.stage2_steps, lr=cfg.stage12_lr, batch_size=cfg.stage_batch_size),
        stage3=stage3)
    model = Finetuner(model, train_m, run_dir, ft_config).run()
    stscq, stscq_recon = evaluate_swapped(model, test, pixel_range)
    phases["stscq_stages"] = time.perf_counter() - start - sum(phases.values())

    # 4. report and save
    save_swapped(model, out / formats.DEMO_CHECKPOINT_DIR)
    metrics = {
        "config": {**asdict(cfg), "channel_mult": list(cfg.channel_mult), "quick": quick, "seed": seed,
                   "tokenizer": "MaskGitVQGAN" if pretrained is None else type(pretrained).__name__,
                   "pretrained": pretrained is not None, "image_size": image_size, "codebook_size0": K0,
                   "data": data_info["name"], "test_images": data_info["test"], "data_info": data_info},
        "baseline": {**baseline, "train_final_l2": baseline_log[-1]["l2"] if baseline_log else None},
        "baseline_decoder_tuned": baseline_tuned,
        "stscq": stscq,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        "files": {"metrics": formats.DEMO_METRICS_FILE, "reconstructions": formats.DEMO_GRID_FILE,
                  "checkpoint": formats.DEMO_CHECKPOINT_DIR, "run": formats.DEMO_RUN_DIR,
                  "run_baseline_decoder": formats.DEMO_BASELINE_RUN_DIR, "run_info": formats.RUN_INFO_FILE},
    }
    atomic_write_json(out / formats.DEMO_METRICS_FILE, metrics)
    k = min(cfg.grid_images, test.shape[0])
    save_labelled_grid(grid_rows(test[:k], metrics, {"baseline": baseline_recon[:k], "baseline_decoder_tuned":
                                                     tuned_recon[:k], "stscq": stscq_recon[:k]}),
                       out / formats.DEMO_GRID_FILE, scale=cfg.grid_scale, pixel_range=(0.0, 1.0))
    base_repo, base_revision = shareable_source(model_spec) if model_spec else (None, None)  # never a local path
    run_info = {  # what `vqswitch push` puts in the model card
        "format": formats.RUN_FORMAT, "adapter": adapter_for(model).name,
        "base_model": base_repo, "base_revision": base_revision,
        "base_description": (f"a small MaskGitVQGAN trained from scratch by `vqswitch demo` (seed {seed}) with one "
                             f"global codebook of {K0} codes") if pretrained is None else
                            (f"a pretrained {type(pretrained).__name__} ({adapter_for(model).name} adapter) with one "
                             f"global codebook of {K0} codes"),
        "data": {"description": data_description, "path": None if data is None else str(data),
                 "num_images": int(train.shape[0])},
        "num_groups": cfg.num_groups, "codebook_size": cfg.codebook_size, "finetune": ft_config.to_dict()}
    atomic_write_json(out / formats.RUN_INFO_FILE, run_info)
    print(format_table(metrics))
    print(f"(test: {test.shape[0]} held-out {image_size}x{image_size} faces; {metrics['wall_seconds']} s; "
          f"outputs in {out})")
    return metrics

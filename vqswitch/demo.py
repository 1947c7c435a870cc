"""``vqswitch demo``: the whole STSCQ story on a laptop CPU, in a few minutes, with no download.

1. Draw procedural faces (:class:`vqswitch.data.ProceduralFaces`): a training set and held-out test faces.
2. Train a small MaskGIT-VQGAN tokenizer (:class:`~vqswitch.adapters.models.maskgit_vqgan.MaskGitVQGAN`, random
   init) as a standard VQ tokenizer with one global codebook of K0 codes: encoder + decoder + codebook, L2
   reconstruction + the quantizer's codebook/commitment loss with straight-through gradients, Adam. The codebook
   starts as a k-means of encoder outputs and dead codes are reset to random encoder outputs during training.
   This is the *baseline* (M = 1, K0 codes, ``T * ceil(log2 K0)`` bits per image).
3. Swap in a :class:`~vqswitch.SwitchableTokenQuantizer` (M groups of K <= K0 codes, token-shared, started from a
   per-group k-means of the training latents) and run the paper's three stages with
   :class:`~vqswitch.train.finetune.Finetuner` (encoder frozen): group codebooks + router, token-specific
   codebooks + router, then the decoder.
   For a fair comparison the baseline also gets the same stage-3 decoder fine-tuning (swapped with M = 1 and its
   own K0 codes, an exact drop-in, so only its decoder changes): the "baseline + stage 3" row.
4. Evaluate them on the test faces -- bits per image, bpp, PSNR, SSIM, codebook utilisation -- print a
   before/after table and write into ``out_dir``:

   * ``metrics.json``: ``{"config": ..., "baseline": {...}, "baseline_decoder_tuned": {...}, "stscq": {...}}``
     (written atomically); each model's
     entry is :func:`vqswitch.metrics.evaluate`'s dict (with the utilisation table) plus ``num_tokens``,
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

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vqswitch.cli import parse_args

__all__ = ["DemoConfig", "FULL", "QUICK", "run_demo", "train_baseline", "evaluate_baseline", "evaluate_swapped", "pick_config", "seed_arg",
           "split_faces", "build_tokenizer", "check_seed", "grid_rows",
           "format_table", "add_arguments", "check_data_folder", "folder_faces", "main"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and step counts of one demo run."""

    image_size: int = 32
    num_train: int = 512
    num_test: int = 64
    # the tokenizer: f = 2**(len(channel_mult) - 1) = 4, so T = (32 / 4)**2 = 64 tokens of dimension D = z_channels
    hidden_channels: int = 32
    channel_mult: tuple = (1, 1, 1)
    num_res_blocks: int = 1
    z_channels: int = 16
    codebook_size0: int = 256  # K0, the baseline's global codebook
    # baseline training
    baseline_steps: int = 2000
    baseline_batch_size: int = 16
    baseline_lr: float = 2e-3
    dead_code_every: int = 25  # reset unused codes every this many steps (during the first 80% of training)
    # STSCQ
    num_groups: int = 4  # M
    codebook_size: int = 64  # K
    stage1_steps: int = 300
    stage2_steps: int = 300
    stage3_steps: int = 150
    stage_batch_size: int = 32
    stage12_lr: float = 1e-3
    stage3_lr: float = 3e-4
    grid_images: int = 8
    grid_scale: int = 4  # reconstructions.png enlarges every pixel to a grid_scale x grid_scale block


FULL = DemoConfig()
QUICK = DemoConfig(num_train=32, num_test=12, codebook_size0=64, codebook_size=16, baseline_steps=12,
                   baseline_batch_size=8, dead_code_every=4, stage1_steps=6, stage2_steps=6, stage3_steps=4,
                   stage_batch_size=8)


def split_faces(num_train: int, num_test: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo's data: ``(train (num_train, 3, S, S), test (num_test, 3, S, S))`` float in [0, 1], procedural faces
    of one seed; the held-out test faces are the images after the training ones (same identities, new pose and
    lighting)."""
    from vqswitch.data import ProceduralFaces

    n = num_train + num_test
    images = ProceduralFaces(n, image_size, seed=seed, pixel_range=(0.0, 1.0)).get_batch(range(n))
    return images[:num_train].contiguous(), images[num_train:].contiguous()


def folder_faces(root, image_size: int, seed: int, test_fraction: float = 0.2, max_train: int = 4096,
                 max_test: int = 256) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A user's face folder (one sub-folder per identity, :class:`vqswitch.data.FaceFolder`) split by identity, so
    no person is in both sets: ``(train (N, 3, S, S), test (M, 3, S, S), info)`` float in [0, 1], S =
    ``image_size``, at most ``max_train`` / ``max_test`` images each (an even, seeded subset when there are more).
    info: {"folder", "identities", "train_identities", "test_identities", "train_images", "test_images",
    "skipped"}. Raises ``ValueError`` naming the folder when it does not exist, holds no identity folder with a
    readable image, or has fewer than 2 identities (no split is possible)."""
    from vqswitch.data import FaceFolder, split_identities

    folder = FaceFolder(root, size=image_size, pixel_range=(0.0, 1.0))
    if len(folder.identities) < 2:
        raise ValueError(f"--data {str(root)!r} needs at least 2 identity folders (train and test people), "
                         f"found {len(folder.identities)}")
    train_ids, test_ids = split_identities(folder.identities, test_fraction=test_fraction, seed=seed)
    names = [folder.identities[int(i)] for i in folder.labels.tolist()]
    gen = torch.Generator().manual_seed(seed)

    def pick(ids, cap):
        wanted = set(ids)
        idx = torch.tensor([i for i, n in enumerate(names) if n in wanted], dtype=torch.long)
        if idx.numel() > cap:
            idx = idx[torch.randperm(idx.numel(), generator=gen)[:cap].sort().values]
        return folder.get_batch(idx.tolist())

    train, test = pick(train_ids, max_train), pick(test_ids, max_test)
    info = {"folder": str(root), "identities": len(folder.identities), "train_identities": len(train_ids),
            "test_identities": len(test_ids), "train_images": int(train.shape[0]), "test_images": int(test.shape[0]),
            "skipped": [f"{p}: {why}" for p, why in folder.skipped]}
    return train, test, info


def build_tokenizer(cfg: DemoConfig):
    """A fresh, randomly initialised MaskGitVQGAN of ``cfg``'s sizes with a global codebook of K0 codes."""
    from vqswitch.adapters.models.maskgit_vqgan import MaskGitVQGAN

    return MaskGitVQGAN(resolution=cfg.image_size, hidden_channels=cfg.hidden_channels,
                        channel_mult=cfg.channel_mult, num_res_blocks=cfg.num_res_blocks, attn_resolutions=(),
                        z_channels=cfg.z_channels, num_embeddings=cfg.codebook_size0,
                        quantized_embed_dim=cfg.z_channels)


def check_seed(seed) -> int:
    """seed as an int >= 0; TypeError / ValueError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


def pick_config(quick, config, config_type: type, quick_config, full_config):
    """``config`` when given (it must be a ``config_type``), else ``quick_config`` or ``full_config``
    by ``quick`` (a bool); TypeError otherwise. Shared by the demo and the rate-distortion benchmark."""
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be a bool, got {type(quick).__name__}")
    if config is None:
        config = quick_config if quick else full_config
    if not isinstance(config, config_type):
        raise TypeError(f"config must be of type {config_type.__name__}, got {type(config).__name__}")
    return config


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


# ------------------------------------------------------------------------------------------------ baseline


@torch.no_grad()
def _encoder_tokens(model, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encoder outputs of ``images`` as (N * T, D) rows (the vectors the global codebook quantizes)."""
    out = []
    for s in _batches(images.shape[0], batch_size):
        z = model.encoder(images[s])  # (B, D, h, w)
        out.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    return torch.cat(out)


def train_baseline(model, images: torch.Tensor, cfg: DemoConfig, *, seed: int, progress: bool) -> list[dict]:
    """Train ``model`` (a MaskGitVQGAN) in place as a global-codebook VQ tokenizer; returns a small loss log."""
    from tqdm.auto import tqdm

    from vqswitch.codebooks import kmeans

    gen = torch.Generator().manual_seed(seed)
    K0 = cfg.codebook_size0
    codebook = model.quantize.embedding.weight
    # data-driven start: the codebook is a k-means of the (random-init) encoder's outputs
    z = _encoder_tokens(model, images)
    with torch.no_grad():
        codebook.copy_(kmeans(z.unsqueeze(0), K0, iters=10, seed=seed)[0])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.baseline_lr)
    steps = cfg.baseline_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    usage = torch.zeros(K0, dtype=torch.long)
    log = []
    model.train()
    n = images.shape[0]
    perm, pos = torch.randperm(n, generator=gen), 0
    bar = tqdm(total=steps, desc="baseline", disable=not progress)
    for step in range(1, steps + 1):
        if pos + cfg.baseline_batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + cfg.baseline_batch_size]
        pos += cfg.baseline_batch_size
        x = images[idx]
        # the standard VQ-VAE loss (van den Oord et al.): the codebook term pulls codes to the encoder outputs at
        # weight 1, the commitment term the encoder to its codes at weight 0.25. (MaskGitQuantizer's own
        # return_loss keeps upstream's swapped weights, which pin the encoder to the codes and train slower.)
        h = model.encoder(x)
        z_q, indices, _ = model.quantize(h)
        vq_loss = F.mse_loss(z_q, h.detach()) + 0.25 * F.mse_loss(h, z_q.detach())
        recon = model.decoder(h + (z_q - h).detach())  # straight-through
        l2 = F.mse_loss(recon, x)
        loss = l2 + vq_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"baseline training diverged at step {step} (loss {float(loss)})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        usage += torch.bincount(indices.reshape(-1), minlength=K0)
        if cfg.dead_code_every and step % cfg.dead_code_every == 0 and step <= 0.8 * steps:
            dead = (usage == 0).nonzero().flatten()
            if dead.numel():
                with torch.no_grad():
                    fresh = _encoder_tokens(model, x)
                    pick = torch.randint(fresh.shape[0], (dead.numel(),), generator=gen)
                    codebook[dead] = fresh[pick] + 1e-3 * fresh.std() * torch.randn(
                        dead.numel(), fresh.shape[1], generator=gen)
            usage.zero_()
        rec = {"step": step, "loss": float(loss.detach()), "l2": float(l2.detach()),
               "vq": float(vq_loss.detach())}
        log.append(rec)
        bar.update(1)
        bar.set_postfix(l2=f"{rec['l2']:.4f}")
    bar.close()
    model.eval()
    return log


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate_baseline(model, images: torch.Tensor, cfg: DemoConfig) -> tuple[dict, torch.Tensor]:
    """The unswapped global-codebook MaskGitVQGAN on images (N, 3, H, W) in [0, 1] -> (metrics, reconstructions).

    metrics: :func:`vqswitch.metrics.evaluate`'s dict (with utilisation) plus num_tokens, codebook_size (K0),
    num_groups (1), token_specific (False) and utilization_mean; reconstructions (N, 3, H, W) clamped to [0, 1].
    """
    from vqswitch.bits import bits_per_image
    from vqswitch.codebooks import utilization
    from vqswitch.metrics import evaluate

    model.eval()
    recons, codes = [], []
    for s in _batches(images.shape[0], 64):
        recon, _, indices = model(images[s])
        recons.append(recon.clamp(0.0, 1.0))
        codes.append(indices)
    recon, indices = torch.cat(recons), torch.cat(codes)
    T, K0 = indices.shape[1], cfg.codebook_size0
    usage = torch.bincount(indices.reshape(-1), minlength=K0).view(1, 1, K0)
    util = utilization(usage, torch.tensor([images.shape[0]]))
    bits = bits_per_image(T, K0, 1)
    result = evaluate(images, recon, data_range=1.0, bits_per_image=bits, util=util)
    result.update(num_tokens=T, codebook_size=K0, num_groups=1, token_specific=False,
                  utilization_mean=util.mean)
    return result, recon


@torch.no_grad()
def evaluate_swapped(model, images: torch.Tensor, pixel_range=(0.0, 1.0)) -> tuple[dict, torch.Tensor]:
    """A swapped model through its codes (encode_codes -> decode_codes) on images (N, 3, H, W) in [0, 1]
    -> (metrics, reconstructions in [0, 1]), as :func:`evaluate_baseline` plus group_counts; usage is counted on
    these images. ``pixel_range`` is the model's: images are mapped to it before encoding and back after decoding.
    """
    from vqswitch.adapters import decode_codes, encode_codes, swapped_quantizer
    from vqswitch.codebooks import add_code_counts, utilization
    from vqswitch.metrics import evaluate

    model.eval()
    q = swapped_quantizer(model)
    M, K, T = q.num_groups, q.codebook_size, q.num_tokens
    Tp = T if q.token_specific else 1
    usage = torch.zeros(M, Tp, K, dtype=torch.long)
    group_counts = torch.zeros(M, dtype=torch.long)
    recons = []
    for s in _batches(images.shape[0], 64):
        codes = encode_codes(model, to_pixel_range(images[s], pixel_range))
        recons.append(from_pixel_range(decode_codes(model, codes).float(), pixel_range).clamp(0.0, 1.0))
        add_code_counts(usage, group_counts, codes.groups.cpu(), codes.indices.cpu())
    recon = torch.cat(recons)
    util = utilization(usage, group_counts)
    result = evaluate(images, recon, data_range=1.0, bits_per_image=q.bits_per_image, util=util)
    result.update(num_tokens=T, codebook_size=K, num_groups=M, token_specific=q.token_specific,
                  utilization_mean=util.mean, group_counts=group_counts.tolist())
    return result, recon


def to_pixel_range(images: torch.Tensor, pixel_range) -> torch.Tensor:
    """images in [0, 1] -> the same images in ``pixel_range`` (lo, hi)."""
    lo, hi = pixel_range
    return images if (lo, hi) == (0.0, 1.0) else images * (hi - lo) + lo


def from_pixel_range(images: torch.Tensor, pixel_range) -> torch.Tensor:
    """images in ``pixel_range`` (lo, hi) -> [0, 1] (not clamped)."""
    lo, hi = pixel_range
    return images if (lo, hi) == (0.0, 1.0) else (images - lo) / (hi - lo)


def grid_rows(originals: torch.Tensor, metrics: dict, recons: dict) -> list[tuple[str, torch.Tensor]]:
    """The labelled rows of ``reconstructions.png``: the originals (N, 3, H, W) float, then one row per model of
    :data:`ROWS` present in both ``metrics`` (as :func:`run_demo` returns: bits per image, M, K and PSNR go in the
    label) and ``recons`` ({metrics key: (N, 3, H, W) reconstructions}). Returns ``[(label, images), ...]`` for
    :func:`vqswitch.data.save_labelled_grid`."""
    rows = [("original", originals)]
    for name, key in ROWS:
        if key in metrics and key in recons:
            m = metrics[key]
            rows.append((f"{name}: {m['bits_per_image']} bits/image (M={m['num_groups']}, K={m['codebook_size']}), "
                         f"PSNR {_fmt(m['psnr'], '.2f')} dB", recons[key]))
    return rows


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


# (row label, metrics key) of the before/after table
ROWS = (("baseline VQ", "baseline"), ("baseline + stage 3", "baseline_decoder_tuned"), ("STSCQ", "stscq"))


def format_table(metrics: dict) -> str:
    """The before/after table of a ``metrics`` dict (as :func:`run_demo` returns) as aligned plain text."""
    header = ("model", "M", "K", "T", "bits/image", "bpp", "PSNR (dB)", "SSIM", "codebook use")
    rows = [header]
    for name, key in ROWS:
        if key not in metrics:
            continue
        m = metrics[key]
        rows.append((name, str(m["num_groups"]), str(m["codebook_size"]), str(m["num_tokens"]),
                     str(m["bits_per_image"]), _fmt(m["bpp"], ".4f"), _fmt(m["psnr"], ".2f"), _fmt(m["ssim"], ".4f"),
                     _fmt(None if m["utilization_mean"] is None else 100 * m["utilization_mean"], ".1f") + "%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the run


def run_demo(out_dir="vqswitch-demo", *, quick: bool = False, seed: int = 0, progress: bool = True,
             config: DemoConfig | None = None, data=None, model=None) -> dict:
    """Run the demo (see the module docstring) and return its metrics (what ``metrics.json`` holds).

    Args:
        out_dir: output folder (created; ``metrics.json``, ``reconstructions.png``, ``checkpoint/`` and ``run/``
            in it are replaced).
        quick: a tiny run (seconds) for tests and smoke checks; numbers are then not meaningful.
        seed: int >= 0; seeds the data, the weights and every random choice.
        progress: show tqdm progress bars.
        config: override the sizes and steps (default :data:`FULL`, or :data:`QUICK` with ``quick=True``).
        data: None (procedural faces), or a face folder (str or PathLike; one sub-folder per identity): its
            identities are split into training and test people (:func:`folder_faces`), images resized to the
            tokenizer's ``image_size``.
        model: None (train the demo's own small MaskGIT-VQGAN), or a pretrained tokenizer: an ``nn.Module`` an
            adapter recognises, or a spec :func:`vqswitch.adapters.load_model` reads (a checkpoint
            ``load_pretrained`` reads, or ``module:function`` / ``path/file.py:function`` building the user's own
            described model). Its own codebook is the baseline (no training), images take its configured size and
            pixel range, and K must not exceed its K0.
    Prints the before/after table to stdout.
    Raises TypeError/ValueError for bad arguments, ``FloatingPointError`` if training diverges.
    """
    from vqswitch.adapters import adapter_for, encode_latents, load_model, save_swapped, swap_quantizer
    from vqswitch.adapters.saving import shareable_source
    from vqswitch._io import atomic_write_bytes
    from vqswitch.data import save_labelled_grid
    from vqswitch.train.finetune import Finetuner, FinetuneConfig, StageConfig

    seed = check_seed(seed)
    cfg = config = pick_config(quick, config, DemoConfig, QUICK, FULL)
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
    run_dir = out / "run"
    for stale in (run_dir, out / "run-baseline-decoder"):  # fresh fine-tuning runs every time (never resumed)
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
        if not isinstance(data, (str, os.PathLike)):
            raise TypeError(f"data must be a folder path (str or PathLike) or None, got {type(data).__name__}")
        train, test, data_info = folder_faces(data, image_size, seed, max_train=8 * cfg.num_train,
                                              max_test=4 * cfg.num_test)
        data_info = {"name": f"face folder {Path(data).name}", **data_info,
                     "test": f"{data_info['test_images']} images of {data_info['test_identities']} held-out people"}
        data_description = (f"{data_info['train_images']} face images of {data_info['train_identities']} people "
                            f"from {Path(data).name}/, resized to {image_size}x{image_size}")

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
    tuned = Finetuner(tuned, train_m, out / "run-baseline-decoder",
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
    save_swapped(model, out / "checkpoint")
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
        "files": {"metrics": "metrics.json", "reconstructions": "reconstructions.png", "checkpoint": "checkpoint",
                  "run": "run", "run_baseline_decoder": "run-baseline-decoder", "run_info": "run.json"},
    }
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode("utf-8"))
    k = min(cfg.grid_images, test.shape[0])
    save_labelled_grid(grid_rows(test[:k], metrics, {"baseline": baseline_recon[:k], "baseline_decoder_tuned":
                                                     tuned_recon[:k], "stscq": stscq_recon[:k]}),
                       out / "reconstructions.png", scale=cfg.grid_scale, pixel_range=(0.0, 1.0))
    base_repo, base_revision = shareable_source(model_spec) if model_spec else (None, None)  # never a local path
    run_info = {  # what `vqswitch push` puts in the model card
        "format": "vqswitch-run", "adapter": adapter_for(model).name,
        "base_model": base_repo, "base_revision": base_revision,
        "base_description": (f"a small MaskGitVQGAN trained from scratch by `vqswitch demo` (seed {seed}) with one "
                             f"global codebook of {K0} codes") if pretrained is None else
                            (f"a pretrained {type(pretrained).__name__} ({adapter_for(model).name} adapter) with one "
                             f"global codebook of {K0} codes"),
        "data": {"description": data_description, "path": None if data is None else str(data),
                 "num_images": int(train.shape[0])},
        "num_groups": cfg.num_groups, "codebook_size": cfg.codebook_size, "finetune": ft_config.to_dict()}
    atomic_write_bytes(out / "run.json", (json.dumps(run_info, indent=2) + "\n").encode("utf-8"))
    print(format_table(metrics))
    print(f"(test: {test.shape[0]} held-out {image_size}x{image_size} faces; {metrics['wall_seconds']} s; "
          f"outputs in {out})")
    return metrics


# ------------------------------------------------------------------------------------------------ command line


def seed_arg(text: str) -> int:
    """argparse type for a seed: an int >= 0 (ArgumentTypeError otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the demo's options (``--out``, ``--quick``, ``--seed``, ``--no-progress``) to ``parser``."""
    parser.add_argument("--out", default="vqswitch-demo", help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a tiny run of a few seconds (smoke test)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed, int >= 0 (default: %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    parser.add_argument("--model", metavar="SPEC", help="start from a pretrained tokenizer instead of training the "
                        "demo's own: a checkpoint load_pretrained reads (file, folder or Hub id), or module:function / "
                        "path/file.py:function that builds your own described model (e.g. "
                        "examples/vqvae_cifar.py:build); its own codebook is the baseline")
    parser.add_argument("--data", metavar="DIR", help="your own faces instead of procedural ones: a folder with one "
                        "sub-folder per identity (e.g. ../shared/data/celeba-faces-64); train and test are split "
                        "by identity, images resized to the tokenizer's size")
    return parser


def check_data_folder(data) -> Path | None:
    """``--data``: None, or an existing folder (returned as a Path); ValueError naming it otherwise (checked before
    any training starts)."""
    if data is None:
        return None
    path = Path(data)
    if not path.is_dir():
        raise ValueError(f"--data {str(data)!r} is {'not a folder' if path.exists() else 'not found'}: give a "
                         "folder with one sub-folder of face images per identity")
    return path


def main(argv=None) -> int:
    """``vqswitch demo [--out DIR] [--quick] [--seed S] [--no-progress] [--data DIR]`` -> exit code (0 ok, 2 bad
    arguments or an unusable --data folder, with one error line on stderr)."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="vqswitch demo", description="Train a small VQ tokenizer on procedural faces, swap in STSCQ, "
        "fine-tune it in three stages and compare bits, PSNR and SSIM."))
    args = parse_args(parser, argv)
    if isinstance(args, int):  # argparse printed usage and the error (or the help)
        return args
    out = Path(args.out)
    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a folder")
        data = check_data_folder(args.data)
        run_demo(out, quick=args.quick, seed=args.seed, progress=args.progress, data=data, model=args.model)
    except ValueError as e:
        print(f"vqswitch demo: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

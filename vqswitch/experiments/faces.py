"""The faces experiment's pieces, shared by ``vqswitch demo`` (:mod:`vqswitch.experiments.demo`) and the benchmarks
(``benchmarks/bench_rate_distortion.py``, ``bench_codec.py``, ``bench_faces.py``).

* :class:`DemoConfig` (:data:`FULL`, :data:`QUICK`): sizes and step counts of one run;
* the data: :func:`split_faces` (procedural faces, held-out test faces after the training ones) and
  :func:`folder_faces` (a user's face folder split by identity);
* the global-codebook baseline: :func:`build_tokenizer` (a small MaskGIT-VQGAN) and :func:`train_baseline`;
* evaluation: :func:`evaluate_baseline` (the unswapped model) and :func:`evaluate_swapped` (through the codes),
  with the pixel-range maps :func:`to_pixel_range` / :func:`from_pixel_range`;
* the report: :func:`format_table` (the before/after table), :func:`grid_rows` (the labelled rows of
  ``reconstructions.png``), :func:`format_number`.

Every image tensor here is ``(N, 3, H, W)`` float in [0, 1] unless a docstring says otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vqswitch._checks import check_bool

__all__ = ["DemoConfig", "FULL", "QUICK", "split_faces", "folder_faces", "build_tokenizer", "pick_config",
           "batches", "train_baseline", "evaluate_baseline", "evaluate_swapped", "to_pixel_range", "from_pixel_range",
           "ROWS", "grid_rows", "format_number", "format_table"]


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


def pick_config(quick, config, config_type: type, quick_config, full_config):
    """``config`` when given (it must be a ``config_type``), else ``quick_config`` or ``full_config``
    by ``quick`` (a bool); TypeError otherwise. Shared by the demo and the rate-distortion benchmark."""
    check_bool("quick", quick)
    if config is None:
        config = quick_config if quick else full_config
    if not isinstance(config, config_type):
        raise TypeError(f"config must be of type {config_type.__name__}, got {type(config).__name__}")
    return config


def batches(n: int, batch_size: int):
    """The slices ``[0, batch_size), [batch_size, 2 * batch_size), ...`` covering ``range(n)``."""
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


# ------------------------------------------------------------------------------------------------ baseline


@torch.no_grad()
def _encoder_tokens(model, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encoder outputs of ``images`` as (N * T, D) rows (the vectors the global codebook quantizes)."""
    out = []
    for s in batches(images.shape[0], batch_size):
        z = model.encoder(images[s])  # (B, D, h, w)
        out.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    return torch.cat(out)


def train_baseline(model, images: torch.Tensor, cfg: DemoConfig, *, seed: int, progress: bool) -> list[dict]:
    """Train ``model`` (a MaskGitVQGAN) in place as a global-codebook VQ tokenizer on ``images`` (N, 3, H, W) float
    in [0, 1]; returns a small loss log (one dict per step: step, loss, l2, vq). Raises ``FloatingPointError`` when
    the loss stops being finite."""
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

    metrics: :func:`vqswitch.eval.evaluate`'s dict (with utilisation) plus num_tokens, codebook_size (K0),
    num_groups (1), token_specific (False) and utilization_mean; reconstructions (N, 3, H, W) clamped to [0, 1].
    """
    from vqswitch.bits import bits_per_image
    from vqswitch.codebooks import utilization
    from vqswitch.eval import evaluate

    model.eval()
    recons, codes = [], []
    for s in batches(images.shape[0], 64):
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
    from vqswitch.eval import evaluate

    model.eval()
    q = swapped_quantizer(model)
    M, K, T = q.num_groups, q.codebook_size, q.num_tokens
    Tp = T if q.token_specific else 1
    usage = torch.zeros(M, Tp, K, dtype=torch.long)
    group_counts = torch.zeros(M, dtype=torch.long)
    recons = []
    for s in batches(images.shape[0], 64):
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


# ------------------------------------------------------------------------------------------------ the report


# (row label, metrics key) of the before/after table
ROWS = (("baseline VQ", "baseline"), ("baseline + stage 3", "baseline_decoder_tuned"), ("STSCQ", "stscq"))


def format_number(v, spec: str) -> str:
    """``format(v, spec)``, or ``"n/a"`` for None or NaN (a PSNR of an exact reconstruction, an empty mean)."""
    return "n/a" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def grid_rows(originals: torch.Tensor, metrics: dict, recons: dict) -> list[tuple[str, torch.Tensor]]:
    """The labelled rows of ``reconstructions.png``: the originals (N, 3, H, W) float, then one row per model of
    :data:`ROWS` present in both ``metrics`` (as :func:`vqswitch.experiments.demo.run_demo` returns: bits per image,
    M, K and PSNR go in the label) and ``recons`` ({metrics key: (N, 3, H, W) reconstructions}). Returns
    ``[(label, images), ...]`` for :func:`vqswitch.data.save_labelled_grid`."""
    rows = [("original", originals)]
    for name, key in ROWS:
        if key in metrics and key in recons:
            m = metrics[key]
            rows.append((f"{name}: {m['bits_per_image']} bits/image (M={m['num_groups']}, K={m['codebook_size']}), "
                         f"PSNR {format_number(m['psnr'], '.2f')} dB", recons[key]))
    return rows


def format_table(metrics: dict) -> str:
    """The before/after table of a ``metrics`` dict (as :func:`vqswitch.experiments.demo.run_demo` returns) as
    aligned plain text."""
    header = ("model", "M", "K", "T", "bits/image", "bpp", "PSNR (dB)", "SSIM", "codebook use")
    rows = [header]
    for name, key in ROWS:
        if key not in metrics:
            continue
        m = metrics[key]
        rows.append((name, str(m["num_groups"]), str(m["codebook_size"]), str(m["num_tokens"]),
                     str(m["bits_per_image"]), format_number(m["bpp"], ".4f"), format_number(m["psnr"], ".2f"),
                     format_number(m["ssim"], ".4f"),
                     format_number(None if m["utilization_mean"] is None else 100 * m["utilization_mean"], ".1f")
                     + "%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

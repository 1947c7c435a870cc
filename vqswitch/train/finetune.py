"""The paper's three-stage fine-tuning of a swapped tokenizer, with the encoder frozen throughout.

1. M token-shared group codebooks + the router, on encoder tokens (codebook error + router losses);
2. token-specific codebooks, each token's copied from its group's stage-1 codebook, + the router;
3. the decoder alone, on images: L2 + lambda_p perceptual + lambda_f identity.

Stages 1 and 2 read encoder tokens from a memory-mapped :class:`~vqswitch.train.latents.LatentCache`
built once (a speed-up the paper does not have); stage 3 reads it too once it would encode the data at
least once. The cache is keyed on an exact digest (:func:`~vqswitch.train.latents.model_digest`) of every
parameter and buffer the stages never train (everything but the quantizer and the decoder), so it stays
valid across a resume and is rebuilt when anything the encoder path reads changes. Every run writes into
``run_dir`` (the names are :mod:`vqswitch.formats`'):

* ``metrics.jsonl``: one JSON object per logged step (stage, step, losses, bpp, utilisation);
* ``checkpoints/<name>/``: the swapped model (``model/``, :func:`~vqswitch.adapters.save_swapped`) and
  ``trainer.pt`` (optimizer state, stage, step), replaced whole (:func:`vqswitch._io.atomic_replace_directory`);
  ``checkpoints/latest`` names the newest. One after every stage (``stage1``...) and one every
  ``checkpoint_every`` steps (only the newest periodic one is kept);
* ``latents.npy`` / ``latents.json``: the token cache.

``resume=True`` continues from ``checkpoints/latest`` exactly: batches are drawn from a
permutation seeded by (seed, stage, epoch), so a killed run that resumes reaches the same weights
as an uninterrupted one. Resuming first undoes what a kill can leave in ``checkpoints/``
(:func:`vqswitch._io.recover_directories`: temporaries of dead writers are removed, a checkpoint caught
between the two renames of its replacement is put back), and truncates ``metrics.jsonl`` to the checkpoint's
(stage, step), so no record appears twice. A NaN or Inf loss stops the run with :class:`TrainingDiverged`
before the optimizer step; the last good checkpoint stays the latest.

Under ``torchrun`` / ``accelerate launch`` (torch.distributed initialised), each rank takes its share
of every batch (a batch need not be a multiple of the world size, but must give every rank an image),
gradients are averaged over ranks, router batch statistics and usage counts are reduced by the
quantizer itself, and only rank 0 writes files. Every loss is a sum over the global batch divided by
its size (the quantizer's and router's through :func:`vqswitch.distributed.global_ratio`, stage 3's
by weighting each rank's mean by its share), so a 3 + 2 split of 5 images trains the model one
process trains on the same 5 images.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from vqswitch._checks import check_choice, check_images, check_int, check_real, is_int
from vqswitch._io import atomic_replace_directory, atomic_write_bytes, read_json_lines, recover_directories
from vqswitch.distributed import average_gradients, rank, world_size
from vqswitch.formats import (CHECKPOINT_MODEL_DIR, CHECKPOINTS_DIR, LATENTS_NAME, LATEST_FILE, TRAIN_LOG_FILE,
                              TRAINER_STATE_FILE)

from .latents import LatentCache, model_digest
from .losses import ReconstructionLoss

__all__ = ["StageConfig", "FinetuneConfig", "Finetuner", "TrainingDiverged", "finetune", "DISPLAY_KEYS",
           "config_differences"]

# FinetuneConfig fields that only change what is shown, never what is trained: a resumed run may change them.
DISPLAY_KEYS = ("progress",)

STAGES = (1, 2, 3)


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or Inf; the run stopped before the optimizer step."""


@dataclass
class StageConfig:
    """One stage's settings. ``steps`` optimizer steps of AdamW(``lr``, ``weight_decay``) on batches of
    ``batch_size`` images (split over DDP ranks). The weights are stage 3's loss weights.

    Checked by :meth:`check` (no model needed), which :class:`Finetuner` calls through :meth:`FinetuneConfig.check`.
    """

    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    l2_weight: float = 1.0
    perceptual_weight: float = 0.0
    identity_weight: float = 0.0

    def check(self, name: str = "stage") -> StageConfig:
        """Validate (and normalise: ``int`` / ``float``) every setting; returns ``self``. ``name`` prefixes the
        messages (``"stage3"`` -> ``"stage3.lr must be ..."``).

        Raises:
            TypeError: ``steps`` / ``batch_size`` not an int, a rate or weight not a real number (a bool is neither).
            ValueError: ``steps < 0``, ``batch_size < 1``, a rate or weight negative or not finite.
        """
        self.steps = check_int(f"{name}.steps", self.steps, minimum=0)
        self.batch_size = check_int(f"{name}.batch_size", self.batch_size, minimum=1)
        for key in ("lr", "weight_decay", "l2_weight", "perceptual_weight", "identity_weight"):
            setattr(self, key, check_real(f"{name}.{key}", getattr(self, key), minimum=0))
        return self


@dataclass
class FinetuneConfig:
    """The whole run: which stages (any of 1, 2, 3, in order), each stage's settings, and bookkeeping.

    Checked by :meth:`check` (no model needed); :class:`Finetuner` calls it.
    """

    stages: tuple = STAGES
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    stage3: StageConfig = field(default_factory=StageConfig)
    seed: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    cache_latents: bool = True
    progress: bool = True

    def check(self) -> FinetuneConfig:
        """Validate (and normalise) every setting; returns ``self``.

        Raises:
            TypeError: a stage setting that is not a :class:`StageConfig`; a bad type per :meth:`StageConfig.check`;
                ``seed`` / ``checkpoint_every`` / ``log_every`` not an int.
            ValueError: ``stages`` empty, not increasing or not drawn from (1, 2, 3); a bad value per
                :meth:`StageConfig.check` (named ``stage<s>.<key>``); ``seed`` / ``checkpoint_every`` /
                ``log_every`` < 0.
        """
        stages = tuple(self.stages)
        if not stages or any(not is_int(s) or s not in STAGES for s in stages) or list(stages) != sorted(set(stages)):
            raise ValueError(f"stages must be increasing and drawn from (1, 2, 3), got {self.stages!r}")
        self.stages = tuple(int(s) for s in stages)
        for s in STAGES:
            stage = self.stage(s)
            if not isinstance(stage, StageConfig):
                raise TypeError(f"stage{s} must be a StageConfig, got {type(stage).__name__}")
            stage.check(f"stage{s}")
        for key in ("checkpoint_every", "log_every", "seed"):
            setattr(self, key, check_int(key, getattr(self, key), minimum=0))
        return self

    def stage(self, s: int) -> StageConfig:
        return getattr(self, f"stage{s}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneConfig:
        d = dict(d)
        for s in STAGES:
            if isinstance(d.get(f"stage{s}"), dict):
                d[f"stage{s}"] = StageConfig(**d[f"stage{s}"])
        d["stages"] = tuple(d.get("stages", STAGES))
        return cls(**d)


def config_differences(saved: dict, now: dict) -> list[str]:
    """The settings two ``FinetuneConfig.to_dict()`` dicts disagree on, display keys (:data:`DISPLAY_KEYS`) left
    out, as ``"key: saved -> now"`` strings with dotted keys for stage settings (``"stage3.lr: 0.001 -> 0.5"``)."""
    out = []
    for key in sorted(set(saved) | set(now)):
        if key in DISPLAY_KEYS:
            continue
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(f"{key}.{d}" for d in config_differences(a, b))
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def _as_dataset(data):
    """A map-style view of ``data``: a (N, C, H, W) tensor, a Dataset (len + getitem), or an iterable of
    (C, H, W) / (B, C, H, W) tensors (gathered into memory once)."""
    if isinstance(data, torch.Tensor):
        return check_images("data", data)
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data
    items = []
    for x in data:
        items.extend(check_images("each item of data", x, single=True).unbind(0))
    if not items:
        raise ValueError("data is empty")
    return torch.stack(items)


def _images(dataset, idx) -> torch.Tensor:
    if isinstance(dataset, torch.Tensor):
        return dataset[torch.as_tensor(idx, dtype=torch.long)]
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx)
    return torch.stack([dataset[i] for i in idx])


class Finetuner:
    """Runs :class:`FinetuneConfig` on a swapped model (any adapter) and ``data`` (images in its pixel range).

    Args:
        model: a tokenizer swapped with :func:`vqswitch.adapters.swap_quantizer`; stage 1 needs a
            token-shared quantizer (stage 2 makes it token-specific).
        data: a (N, C, H, W) float tensor, a Dataset of (C, H, W) tensors, or an iterable of tensors.
        run_dir: where checkpoints, metrics and the latent cache go.
        perceptual, identity: image -> feature loss modules for stage 3
            (:mod:`vqswitch.train.losses`), weighted by the stage-3 weights.
        resume: continue from ``run_dir/checkpoints/latest`` (the model's weights come from there); the
            config must equal the saved one except for display settings (:data:`DISPLAY_KEYS`).
        callback: called as ``callback(finetuner, stage, step, metrics)`` after every step.
        device: where the model trains (default: where its parameters are).
        autocast_dtype: None (fp32 throughout), ``torch.bfloat16`` or ``torch.float16``: mixed precision for
            stage 3's decoder (``torch.autocast`` on ``device``; float16 adds a gradient scaler). The encoder, the
            quantizer's code search and stages 1 and 2 stay in float32, so codes never depend on it.
    Raises: TypeError/ValueError for an unswapped model, bad data (not float images, or empty), a bad config
        (:meth:`FinetuneConfig.check`), an autocast dtype other than the two, a batch that gives a DDP rank no
        image, or stage 1 on a token-specific quantizer; ValueError on resume naming the settings that differ;
        FileNotFoundError on resume without a checkpoint.
    """

    def __init__(self, model: nn.Module, data, run_dir, config: FinetuneConfig | None = None, *,
                 perceptual: nn.Module | None = None, identity: nn.Module | None = None, resume: bool = False,
                 callback=None, device: str | torch.device | None = None, autocast_dtype: torch.dtype | None = None):
        from vqswitch.adapters import adapter_for, swapped_quantizer

        self.config = config or FinetuneConfig()
        if not isinstance(self.config, FinetuneConfig):
            raise TypeError(f"config must be a FinetuneConfig, got {type(self.config).__name__}")
        self.config.check()
        self.adapter = adapter_for(model)
        swapped_quantizer(model)  # raises for an unswapped model
        self.autocast_dtype = check_choice("autocast_dtype", autocast_dtype, (None, torch.bfloat16, torch.float16))
        if device is not None:
            from vqswitch.device import check_device

            self.device = check_device(device)
        else:
            self.device = next(model.parameters()).device
        self.model = model.to(self.device)
        self.data = _as_dataset(data)
        self._check_batches()
        self.run_dir = Path(run_dir)
        s3 = self.config.stage3
        self.recon_loss = ReconstructionLoss(l2_weight=s3.l2_weight, perceptual=perceptual,
                                             perceptual_weight=s3.perceptual_weight, identity=identity,
                                             identity_weight=s3.identity_weight).to(self.device)
        self.callback = callback
        self.stage_index, self.step = 0, 0  # position in config.stages, and optimizer steps done in it
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state = None
        if resume:
            self._load_latest()

    def _check_batches(self) -> None:
        """Every rank needs an image of every batch (the losses are global means)."""
        for s in self.config.stages:
            batch = self.config.stage(s).batch_size
            if min(batch, len(self.data)) < world_size():
                raise ValueError(f"stage{s}.batch_size={batch} (with {len(self.data)} images) gives some of the "
                                 f"{world_size()} ranks no image; use a batch of at least {world_size()} images")

    # ------------------------------------------------------------------ bookkeeping
    @property
    def quantizer(self):
        return self.adapter.quantize_module(self.model).quantizer  # model.quantize, or a described model's path

    @property
    def is_main(self) -> bool:
        return rank() == 0

    @property
    def _checkpoints(self) -> Path:
        return self.run_dir / CHECKPOINTS_DIR

    def _log(self, record: dict) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / TRAIN_LOG_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _checkpoint(self, name: str, periodic: bool) -> None:
        """Write checkpoints/<name>/ (replaced whole: the old one or the new one, never half) and point `latest`
        at it; a periodic one removes the older periodic ones."""
        from vqswitch.adapters import save_swapped

        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingDiverged(f"weights became NaN or Inf ({', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}); "
                                   f"checkpoint {name!r} was not written, the latest good one stays")
        if self.is_main:
            root = self._checkpoints
            state = {"stage_index": self.stage_index, "step": self.step, "config": json.dumps(self.config.to_dict()),
                     "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}
            with atomic_replace_directory(root / name) as tmp:
                save_swapped(self.model, tmp / CHECKPOINT_MODEL_DIR)
                torch.save(state, tmp / TRAINER_STATE_FILE)
            atomic_write_bytes(root / LATEST_FILE, name.encode())
            if periodic:  # keep only the newest periodic checkpoint (stage checkpoints stay)
                for p in root.glob("periodic-*"):
                    if p.name != name:
                        shutil.rmtree(p, ignore_errors=True)
        if world_size() > 1:
            torch.distributed.barrier()

    def _latest_checkpoint(self) -> Path | None:
        """The folder ``checkpoints/latest`` names, None before the first checkpoint."""
        latest = self._checkpoints / LATEST_FILE
        return self._checkpoints / latest.read_text().strip() if latest.is_file() else None

    def _load_latest(self) -> None:
        from vqswitch.adapters import load_swapped

        if self.is_main:
            recover_directories(self._checkpoints)  # what a killed save left: put back or removed
        if world_size() > 1:
            torch.distributed.barrier()
        folder = self._latest_checkpoint()
        if folder is None:
            raise FileNotFoundError(f"nothing to resume: no checkpoint in {str(self._checkpoints)!r}")
        state = torch.load(folder / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)
        saved = FinetuneConfig.from_dict(json.loads(state["config"]))
        differ = config_differences(saved.to_dict(), self.config.to_dict())
        if differ:
            raise ValueError(f"resume needs the settings the run started with; these differ from {str(folder)!r} "
                             f"(saved -> now): {'; '.join(differ)}")
        self.model = load_swapped(folder / CHECKPOINT_MODEL_DIR, map_location=self.device)
        self.stage_index, self.step = int(state["stage_index"]), int(state["step"])
        self._pending_optimizer_state = state["optimizer"]
        if self.is_main:
            self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop the ``metrics.jsonl`` records written after the checkpoint being resumed (the resumed run
        writes them again), and a torn last line; rewritten atomically."""
        path = self.run_dir / TRAIN_LOG_FILE
        if not path.is_file():
            return
        stages = tuple(self.config.stages)

        def after_checkpoint(record: dict) -> bool:
            stage, step = record.get("stage"), record.get("step")
            return stage in stages and isinstance(step, int) and (stages.index(stage), step) > (self.stage_index,
                                                                                                   self.step)

        # records are written as json.dumps(record) + "\n", so writing the kept ones again gives their lines back
        text = "".join(json.dumps(r) + "\n" for r in read_json_lines(path) if not after_checkpoint(r))
        if text.encode("utf-8") != path.read_bytes():  # a later record, or a line cut by the kill
            atomic_write_bytes(path, text.encode("utf-8"))

    # ------------------------------------------------------------------ data
    def _batch_indices(self, stage: int, step: int, batch_size: int) -> list[int]:
        """This rank's share of the batch for (stage, step): from a permutation seeded by (seed, stage, epoch)."""
        n = len(self.data)
        per_epoch = max(1, n // batch_size)
        epoch, k = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + stage * 10_007 + epoch)
        perm = torch.randperm(n, generator=g)
        chunk = perm[k * batch_size:(k + 1) * batch_size] if n >= batch_size else perm
        return chunk[rank()::world_size()].tolist()

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        from vqswitch.adapters import encode_latents

        return encode_latents(self.model, images.to(self.device), check_range=False)

    def _cache_key(self) -> dict:
        """What the latent cache holds: the adapter, the number of images, and an exact digest of every parameter
        and buffer no stage trains or changes (the encoder and whatever else the encoder path reads, e.g. TiTok's
        ``latent_tokens``), so the key survives stages 1-3 and a resume, and nothing else."""
        trained = [m for s in STAGES for m in self._stage_modules(s)]
        return {"adapter": self.adapter.name, "num_items": len(self.data),
                "frozen_digest": model_digest(self.model, exclude=trained)}

    def _latent_cache(self) -> LatentCache | None:
        if not self.config.cache_latents:
            return None
        path = self.run_dir / LATENTS_NAME
        if self.is_main:
            cache = LatentCache.build(path, self._encode, len(self.data), lambda idx: _images(self.data, idx),
                                      key=self._cache_key(), progress=self.config.progress)
        if world_size() > 1:
            torch.distributed.barrier()
        return cache if self.is_main else LatentCache(path)

    @torch.no_grad()
    def _recount_usage(self, cache: LatentCache | None) -> None:
        """Replace the quantizer's usage counts by the codes its final stage-2 state gives the training set.

        During training the counts accumulate over codebooks that kept moving; at the end of stage 2 they
        are recounted once with the final codebooks (inference selection), so that utilisation and the
        codec's entropy model (:meth:`vqswitch.entropy.EntropyModel.from_quantizer`) describe the model
        that is saved. Under DDP every rank encodes its share and the counts are gathered.
        """
        q = self.quantizer
        was_training = q.training
        q.eval()
        q.reset_usage()
        n, batch = len(self.data), 256
        for start in range(0, n, batch):
            idx = list(range(start, min(n, start + batch)))[rank()::world_size()]
            if idx:
                z = cache.batch(idx).to(self.device) if cache is not None else self._encode(_images(self.data, idx))
                codes = q.encode(z)
                groups, indices = codes.groups.to(self.device), codes.indices.to(self.device)
            else:  # this rank has no image in this batch, but still takes part in the gather
                groups = torch.zeros(0, dtype=torch.long, device=self.device)
                indices = torch.zeros(0, q.num_tokens, dtype=torch.long, device=self.device)
            q.record_usage(groups, indices)
        q.train(was_training)

    # ------------------------------------------------------------------ stages
    def _stage_modules(self, stage: int) -> list[nn.Module]:
        """The modules ``stage`` trains (everything else stays frozen): the quantizer in stages 1 and 2 (stage 2
        also makes it token-specific), the adapter's decoder modules in stage 3."""
        return [self.quantizer] if stage in (1, 2) else list(self.adapter.decoder_modules(self.model))

    def _trainable(self, stage: int) -> list[nn.Parameter]:
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        params = []
        for m in self._stage_modules(stage):
            m.train()
            for p in m.parameters():
                p.requires_grad_(True)
                params.append(p)
        return params

    def _stage_loss(self, stage: int, idx: list[int], cache: LatentCache | None) -> tuple[torch.Tensor, dict]:
        if stage in (1, 2):
            if cache is not None:
                z = cache.batch(idx).to(self.device)
            else:
                with torch.no_grad():
                    z = self._encode(_images(self.data, idx))
            out = self.quantizer(z)
            parts = {"codebook": out.codebook_loss, "commitment": out.commitment_loss,
                     "router_balance": out.router_balance_loss, "router_decision": out.router_decision_loss,
                     "router_quality": out.router_quality_loss}
            return out.loss, parts
        x = _images(self.data, idx).to(self.device)
        with torch.no_grad():  # the encoder is frozen in every stage: stage 3 reads the same cached tokens
            z = cache.batch(idx).to(self.device) if cache is not None else self._encode(x)
            tokens = self.quantizer.decode(self.quantizer.encode(z)).to(x.dtype)
        if self.autocast_dtype is None:
            recon = self.adapter.decode_tokens(self.model, tokens)
        else:  # mixed precision for the decoder only; the loss is computed in float32
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                recon = self.adapter.decode_tokens(self.model, tokens)
        result = self.recon_loss(x, recon)
        return result["loss"], {k: v for k, v in result.items() if k != "loss"}

    @staticmethod
    def _global_batch_loss(loss: torch.Tensor, parts: dict, local: int, total: int) -> tuple[torch.Tensor, dict]:
        """Stage 3 under DDP: this rank's mean loss over its ``local`` images -> (a loss whose gradient,
        averaged over ranks, is that of the mean over all ``total`` images of the global batch; the
        parts as global means). The returned loss's value is the global mean (the same on every rank,
        so a NaN on any rank stops every rank); its gradient is this rank's share scaled by
        world_size * local / total."""
        weight = local / total
        values = torch.stack([loss.detach().float()] + [v.detach().float() for v in parts.values()]) * weight
        torch.distributed.all_reduce(values)
        scaled = loss * (weight * world_size())
        loss = scaled + (values[0] - scaled.detach())  # value: the global mean; gradient: the scaled share
        return loss, dict(zip(parts, values[1:]))

    # ------------------------------------------------------------------ the run
    def run(self) -> nn.Module:
        """Run the remaining stages; returns the fine-tuned swapped model (also ``self.model``), frozen and in
        eval mode.

        Raises TrainingDiverged when a loss is NaN or Inf (the last good checkpoint stays the latest), ValueError
        for stage 1 on a token-specific quantizer.
        """
        torch.manual_seed(self.config.seed)
        cache = None
        while self.stage_index < len(self.config.stages):
            cache = self._run_stage(self.config.stages[self.stage_index], cache)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def _run_stage(self, stage: int, cache: LatentCache | None) -> LatentCache | None:
        """The rest of ``stage`` from ``self.step``, then its checkpoint; returns the latent cache (built here
        when this is the first stage that reads it)."""
        from tqdm.auto import tqdm

        cfg = self.config.stage(stage)
        params = self._start_stage(stage, cfg)
        if cache is None and (stage in (1, 2) or cfg.steps * cfg.batch_size >= len(self.data)):
            cache = self._latent_cache()  # stage 3 too reads it, once it would encode the data at least once
        scaler = torch.amp.GradScaler(self.device.type) if stage == 3 and self.autocast_dtype == torch.float16 \
            else None
        image_size = tuple(_images(self.data, [0]).shape[-2:])
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"stage {stage}",
                   disable=not (self.config.progress and self.is_main))
        while self.step < cfg.steps:
            record = self._train_step(stage, cfg, params, cache, scaler, image_size)
            self._after_step(stage, cfg, record, bar)
        bar.close()
        self._end_stage(stage, cache)
        return cache

    def _start_stage(self, stage: int, cfg: StageConfig) -> list[nn.Parameter]:
        """Make the quantizer what ``stage`` trains, freeze the rest, and build the optimizer (with the resumed
        checkpoint's state, once); returns the trained parameters."""
        if stage == 1 and self.step == 0 and self.quantizer.token_specific:
            raise ValueError("stage 1 trains token-shared group codebooks, but the quantizer is token-specific: "
                             "swap in a token-shared one (token_specific=False) or start at stage 2")
        if stage == 2 and not self.quantizer.token_specific:
            self.quantizer.to_token_specific()  # each token's codebook copied from its group's
        params = self._trainable(stage)
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if self._pending_optimizer_state is not None:
            self.optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None
        return params

    def _train_step(self, stage: int, cfg: StageConfig, params: list[nn.Parameter], cache: LatentCache | None,
                    scaler, image_size: tuple[int, int]) -> dict:
        """One optimizer step of ``stage`` (NaN/Inf losses stop the run first); returns its metrics record."""
        idx = self._batch_indices(stage, self.step, cfg.batch_size)
        loss, parts = self._stage_loss(stage, idx, cache)
        if stage == 3 and world_size() > 1:
            loss, parts = self._global_batch_loss(loss, parts, len(idx), min(cfg.batch_size, len(self.data)))
        if not torch.isfinite(loss.detach()).all():
            where = self._latest_checkpoint()
            raise TrainingDiverged(f"stage {stage}, step {self.step + 1}: the loss is {float(loss.detach())}; the run "
                                   f"stopped before updating the weights. Last good checkpoint: "
                                   f"{str(where) if where else 'none yet'}")
        self.optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            average_gradients(params)
            self.optimizer.step()
        else:
            scaler.scale(loss).backward()
            average_gradients(params)
            scaler.step(self.optimizer)
            scaler.update()
        self.step += 1
        record = {"stage": stage, "step": self.step, "loss": float(loss.detach()),
                  **{k: float(v.detach()) for k, v in parts.items()}, "bpp": self.quantizer.bpp(*image_size)}
        if stage in (1, 2):
            util = self.quantizer.utilization()
            record["utilization_mean"] = util.mean if util.mean == util.mean else None
        return record

    def _after_step(self, stage: int, cfg: StageConfig, record: dict, bar) -> None:
        """Show, log and report the step's ``record``; write the periodic checkpoint when one is due."""
        bar.update(1)
        shown = {"loss": f"{record['loss']:.4g}", "bpp": f"{record['bpp']:.4f}"}
        if record.get("utilization_mean") is not None:
            shown["util"] = f"{100 * record['utilization_mean']:.1f}%"
        bar.set_postfix(shown)
        if self.config.log_every and (self.step % self.config.log_every == 0 or self.step == cfg.steps):
            self._log(record)
        if self.callback is not None:
            self.callback(self, stage, self.step, record)
        if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0 and self.step < cfg.steps:
            self._checkpoint(f"periodic-stage{stage}-step{self.step:07d}", periodic=True)

    def _end_stage(self, stage: int, cache: LatentCache | None) -> None:
        """Stage 2 recounts the codes of the training set; every stage ends with its checkpoint."""
        if stage == 2:
            self._recount_usage(cache)
        self.stage_index, self.step = self.stage_index + 1, 0
        self.optimizer = None
        self._checkpoint(f"stage{stage}", periodic=False)


def finetune(model: nn.Module, data, run_dir, config: FinetuneConfig | None = None, **kwargs) -> nn.Module:
    """``Finetuner(model, data, run_dir, config, **kwargs).run()``: see :class:`Finetuner`."""
    return Finetuner(model, data, run_dir, config, **kwargs).run()

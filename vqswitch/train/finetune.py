"""The paper's three-stage fine-tuning of a swapped tokenizer, with the encoder frozen throughout.

1. M token-shared group codebooks + the router, on encoder tokens (codebook error + router losses);
2. token-specific codebooks, each token's copied from its group's stage-1 codebook, + the router;
3. the decoder alone, on images: L2 + lambda_p perceptual + lambda_f identity.

Stages 1 and 2 read encoder tokens from a memory-mapped :class:`~vqswitch.train.latents.LatentCache`
built once (a speed-up the paper does not have). Every run writes into ``run_dir``:

* ``metrics.jsonl``: one JSON object per logged step (stage, step, losses, bpp, utilisation);
* ``checkpoints/<name>/``: the swapped model (:func:`~vqswitch.adapters.save_swapped`) and
  ``trainer.pt`` (optimizer state, stage, step), written to a temporary folder and renamed;
  ``checkpoints/latest`` names the newest. One after every stage (``stage1``...) and one every
  ``checkpoint_every`` steps (only the newest periodic one is kept);
* ``latents.npy`` / ``latents.json``: the token cache.

``resume=True`` continues from ``checkpoints/latest`` exactly: batches are drawn from a
permutation seeded by (seed, stage, epoch), so a killed run that resumes reaches the same weights
as an uninterrupted one. Resuming first removes the temporaries a kill can leave in ``checkpoints/``
(``.latest.*.tmp``, ``.<name>.tmp``; a ``.<name>.old`` caught between the two renames of a save is
put back), and truncates ``metrics.jsonl`` to the checkpoint's (stage, step), so no record appears twice. A NaN or Inf loss stops the run with :class:`TrainingDiverged` before the
optimizer step; the last good checkpoint stays the latest.

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
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from vqswitch._io import atomic_write_bytes
from vqswitch.distributed import average_gradients, rank, world_size

from .latents import LatentCache
from .losses import ReconstructionLoss

__all__ = ["StageConfig", "FinetuneConfig", "Finetuner", "TrainingDiverged", "finetune", "DISPLAY_KEYS",
           "config_differences"]

# FinetuneConfig fields that only change what is shown, never what is trained: a resumed run may change them.
DISPLAY_KEYS = ("progress",)


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or Inf; the run stopped before the optimizer step."""


@dataclass
class StageConfig:
    """One stage's settings. ``steps`` optimizer steps of AdamW(``lr``, ``weight_decay``) on batches of
    ``batch_size`` images (split over DDP ranks). The weights are stage 3's loss weights."""

    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    l2_weight: float = 1.0
    perceptual_weight: float = 0.0
    identity_weight: float = 0.0

    def check(self, name: str) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"{name}.steps must be an int >= 0, got {self.steps!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"{name}.batch_size must be an int >= 1, got {self.batch_size!r}")
        for key in ("lr", "weight_decay", "l2_weight", "perceptual_weight", "identity_weight"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}.{key} must be a finite number >= 0, got {v!r}")


@dataclass
class FinetuneConfig:
    """The whole run: which stages (any of 1, 2, 3, in order), each stage's settings, and bookkeeping."""

    stages: tuple = (1, 2, 3)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    stage3: StageConfig = field(default_factory=StageConfig)
    seed: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    cache_latents: bool = True
    progress: bool = True

    def check(self) -> None:
        stages = tuple(self.stages)
        if not stages or any(s not in (1, 2, 3) for s in stages) or list(stages) != sorted(set(stages)):
            raise ValueError(f"stages must be increasing and drawn from (1, 2, 3), got {self.stages!r}")
        for s in (1, 2, 3):
            self.stage(s).check(f"stage{s}")
        for key in ("checkpoint_every", "log_every", "seed"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{key} must be an int >= 0, got {v!r}")

    def stage(self, s: int) -> StageConfig:
        return getattr(self, f"stage{s}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        d = dict(d)
        for s in (1, 2, 3):
            if isinstance(d.get(f"stage{s}"), dict):
                d[f"stage{s}"] = StageConfig(**d[f"stage{s}"])
        d["stages"] = tuple(d.get("stages", (1, 2, 3)))
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
        if data.dim() != 4 or not data.is_floating_point():
            raise ValueError(f"data as a tensor must be (N, C, H, W) float, got {tuple(data.shape)} {data.dtype}")
        return data
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data
    items = []
    for x in data:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() not in (3, 4):
            raise TypeError(f"data must yield float image tensors (C, H, W) or (B, C, H, W), got "
                            f"{getattr(x, 'shape', type(x).__name__)}")
        items.extend(x.unbind(0) if x.dim() == 4 else [x])
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
    Raises: TypeError/ValueError for an unswapped model, bad data, a bad config, an autocast dtype other than
        the two, or stage 1 on a token-specific quantizer; ValueError on resume naming the settings that differ.
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
        if autocast_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"autocast_dtype must be None, torch.bfloat16 or torch.float16, got {autocast_dtype!r}")
        self.autocast_dtype = autocast_dtype
        if device is not None:
            from vqswitch.device import check_device

            self.device = check_device(device)
        else:
            self.device = next(model.parameters()).device
        self.model = model.to(self.device)
        self.data = _as_dataset(data)
        for s in self.config.stages:  # every rank needs an image of every batch (the losses are global means)
            if min(self.config.stage(s).batch_size, len(self.data)) < world_size():
                raise ValueError(f"stage{s}.batch_size={self.config.stage(s).batch_size} (with {len(self.data)} images) "
                                 f"gives some of the {world_size()} ranks no image; use a batch of at least "
                                 f"{world_size()} images")
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

    # ------------------------------------------------------------------ bookkeeping
    @property
    def quantizer(self):
        return self.adapter.quantize_module(self.model).quantizer  # model.quantize, or a described model's path

    @property
    def is_main(self) -> bool:
        return rank() == 0

    def _log(self, record: dict) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _checkpoint(self, name: str, periodic: bool) -> None:
        """Write checkpoints/<name>/ (via a temporary folder renamed into place) and point `latest` at it."""
        from vqswitch.adapters import save_swapped

        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingDiverged(f"weights became NaN or Inf ({', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}); "
                                   f"checkpoint {name!r} was not written, the latest good one stays")
        if self.is_main:
            root = self.run_dir / "checkpoints"
            final, tmp = root / name, root / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            save_swapped(self.model, tmp / "model")
            state = {"stage_index": self.stage_index, "step": self.step, "config": json.dumps(self.config.to_dict()),
                     "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}
            torch.save(state, tmp / "trainer.pt")
            old = None
            if final.exists():
                old = root / f".{name}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(tmp, final)
            atomic_write_bytes(root / "latest", name.encode())
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            if periodic:  # keep only the newest periodic checkpoint (stage checkpoints stay)
                for p in root.glob("periodic-*"):
                    if p.name != name:
                        shutil.rmtree(p, ignore_errors=True)
        if world_size() > 1:
            torch.distributed.barrier()

    def _load_latest(self) -> None:
        from vqswitch.adapters import load_swapped

        root = self.run_dir / "checkpoints"
        if self.is_main:
            self._clean_stale(root)
        if world_size() > 1:
            torch.distributed.barrier()
        if not (root / "latest").is_file():
            raise FileNotFoundError(f"nothing to resume: no checkpoint in {str(root)!r}")
        folder = root / (root / "latest").read_text().strip()
        state = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
        saved = FinetuneConfig.from_dict(json.loads(state["config"]))
        differ = config_differences(saved.to_dict(), self.config.to_dict())
        if differ:
            raise ValueError(f"resume needs the settings the run started with; these differ from {str(folder)!r} "
                             f"(saved -> now): {'; '.join(differ)}")
        self.model = load_swapped(folder / "model", map_location=self.device)
        self.stage_index, self.step = int(state["stage_index"]), int(state["step"])
        self._pending_optimizer_state = state["optimizer"]
        if self.is_main:
            self._truncate_log()

    @staticmethod
    def _clean_stale(root: Path) -> None:
        """Remove what a killed run of ours can leave in ``checkpoints/``: the temporary of ``latest``
        (``.latest.*.tmp``, from :func:`~vqswitch._io.atomic_write_bytes`) and half-written checkpoint
        folders (``.<name>.tmp``). A ``.<name>.old`` is the previous copy of a checkpoint moved aside just
        before the new one was renamed in: it is renamed back when the kill came between the two renames
        (no ``<name>``), else removed. Nothing else is touched."""
        if not root.is_dir():
            return
        for p in sorted(root.iterdir()):
            if not p.name.startswith("."):
                continue
            if p.name.endswith(".old") and p.is_dir():
                final = root / p.name[1:-len(".old")]
                if not final.exists():
                    os.replace(p, final)
                else:
                    shutil.rmtree(p, ignore_errors=True)
            elif p.name.endswith(".tmp"):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.name.startswith(".latest."):
                    p.unlink(missing_ok=True)

    def _truncate_log(self) -> None:
        """Drop the ``metrics.jsonl`` records written after the checkpoint being resumed (the resumed run
        writes them again), and a torn last line; rewritten atomically."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        stages = tuple(self.config.stages)
        keep, dropped = [], False
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                dropped = True  # a line cut by the kill
                continue
            where = (record.get("stage"), record.get("step")) if isinstance(record, dict) else (None, None)
            if where[0] in stages and isinstance(where[1], int) and \
                    (stages.index(where[0]), where[1]) > (self.stage_index, self.step):
                dropped = True
                continue
            keep.append(line)
        if dropped:
            atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode("utf-8"))

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

    def _latent_cache(self) -> LatentCache | None:
        if not self.config.cache_latents:
            return None
        key = {"adapter": self.adapter.name, "num_items": len(self.data),
               "fingerprint": float(sum(float(p.detach().double().sum())
                                        for p in getattr(self.model, "encoder", self.model).parameters()))}
        path = self.run_dir / "latents"
        if self.is_main:
            cache = LatentCache.build(path, self._encode, len(self.data), lambda idx: _images(self.data, idx),
                                      key=key, progress=self.config.progress)
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
    def _trainable(self, stage: int) -> list[nn.Parameter]:
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        if stage in (1, 2):
            modules = [self.quantizer]
        else:
            modules = self.adapter.decoder_modules(self.model)
        params = []
        for m in modules:
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

    def run(self) -> nn.Module:
        """Run the remaining stages; returns the fine-tuned swapped model (also ``self.model``).

        Raises TrainingDiverged when a loss is NaN or Inf (the last good checkpoint stays the latest).
        """
        from tqdm.auto import tqdm

        torch.manual_seed(self.config.seed)
        stages = tuple(self.config.stages)
        cache = None
        while self.stage_index < len(stages):
            stage = stages[self.stage_index]
            cfg = self.config.stage(stage)
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
            if cache is None and (stage in (1, 2) or cfg.steps * cfg.batch_size >= len(self.data)):
                cache = self._latent_cache()  # stage 3 too reads it, once it would encode the data at least once
            scaler = torch.amp.GradScaler(self.device.type) \
                if stage == 3 and self.autocast_dtype == torch.float16 else None
            H, W = tuple(_images(self.data, [0]).shape[-2:])
            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"stage {stage}",
                       disable=not (self.config.progress and self.is_main))
            while self.step < cfg.steps:
                idx = self._batch_indices(stage, self.step, cfg.batch_size)
                loss, parts = self._stage_loss(stage, idx, cache)
                if stage == 3 and world_size() > 1:
                    loss, parts = self._global_batch_loss(loss, parts, len(idx), min(cfg.batch_size, len(self.data)))
                if not torch.isfinite(loss.detach()).all():
                    latest = self.run_dir / "checkpoints" / "latest"
                    where = (self.run_dir / "checkpoints" / latest.read_text().strip()) if latest.is_file() else None
                    raise TrainingDiverged(f"stage {stage}, step {self.step + 1}: the loss is {float(loss)}; the run "
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
                          **{k: float(v.detach()) for k, v in parts.items()},
                          "bpp": self.quantizer.bpp(H, W)}
                if stage in (1, 2):
                    util = self.quantizer.utilization()
                    record["utilization_mean"] = util.mean if util.mean == util.mean else None
                bar.update(1)
                shown = {"loss": f"{record['loss']:.4g}", "bpp": f"{record['bpp']:.4f}"}
                if record.get("utilization_mean") is not None:
                    shown["util"] = f"{100 * record['utilization_mean']:.1f}%"
                bar.set_postfix(shown)
                if self.config.log_every and (self.step % self.config.log_every == 0 or self.step == cfg.steps):
                    self._log(record)
                if self.callback is not None:
                    self.callback(self, stage, self.step, record)
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0 \
                        and self.step < cfg.steps:
                    self._checkpoint(f"periodic-stage{stage}-step{self.step:07d}", periodic=True)
            bar.close()
            if stage == 2:
                self._recount_usage(cache)
            self.stage_index, self.step = self.stage_index + 1, 0
            self.optimizer = None
            self._checkpoint(f"stage{stage}", periodic=False)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model


def finetune(model: nn.Module, data, run_dir, config: FinetuneConfig | None = None, **kwargs) -> nn.Module:
    """``Finetuner(model, data, run_dir, config, **kwargs).run()``: see :class:`Finetuner`."""
    return Finetuner(model, data, run_dir, config, **kwargs).run()

"""IBQ (Index Backpropagation Quantization, TencentARC SEED-Voken): vqswitch's own implementation.

The generator of upstream ``src.IBQ.models.ibqgan.IBQ`` (a taming-style ``VQModel``), written from
public facts about it, with its ``state_dict`` layout key for key (``encoder``, ``decoder``,
``quantize.embedding.weight``, ``quant_conv``, ``post_quant_conv``) and its methods and return
structures:

- ``encode(x) -> (z_q, loss, (None, None, indices))``, ``decode(z_q) -> images``,
  ``forward(x) -> (images, loss)``, ``decode_code(indices) -> images`` (working, unlike upstream's).
- ``loss`` is the 4-tuple ``(quant_loss, sample_entropy, avg_entropy, entropy_loss)`` when
  ``use_entropy_loss`` (the real checkpoints), else the scalar ``quant_loss``.
- ``indices`` are flat int64 ``[B*h*w]`` in (b, h, w) row-major order.

Pixels: images are float ``(B, in_channels, H, W)`` in **[-1, 1]** (upstream's data convention
``x / 127.5 - 1``), H and W multiples of ``2 ** (len(ch_mult) - 1)`` (16 for the real models:
256x256 -> 16x16 tokens). ``decode`` returns **unclamped** values; upstream evaluation clamps
them to [-1, 1] outside the model.

Weights: upstream evaluates with the EMA weights (``with model.ema_scope()``); real checkpoints are
Lightning files whose ``state_dict`` holds the live generator, ``model_ema.<dotless name>`` copies,
``model_ema.decay`` / ``num_updates`` and the training loss (``loss.*``: LPIPS, discriminator, and
``model_ema.lossdiscriminator*``). :func:`load_pretrained` keeps only the generator and by default
(``use_ema=None``) takes the EMA weights when the checkpoint has them.

Configs: ``IBQ(**kwargs)`` / ``IBQ.from_config`` take upstream's keywords flat (the ``ddconfig`` fields
and the quantizer's); :func:`config_from_upstream` turns an upstream yaml (``model: class_path /
init_args``) into that form. Reading a ``config.yaml`` needs PyYAML, imported lazily (it is not a
vqswitch dependency); a dict config needs nothing.

Seam for adapters: every path that quantizes or looks codes up calls ``self.quantize(z)`` or
``self.quantize.get_codebook_entry(indices, shape)``, never the codebook tensor, so a shim with the
same signatures can replace ``model.quantize``.

Upstream quirks kept, because the numbers depend on them (each is marked in the code):

- codes are chosen by the LARGEST raw inner product ``<z, e_n>`` (argmax of ``softmax(logits)``),
  not the smallest distance; ``l2_normalize`` is accepted and has no effect (upstream's flag only
  reaches the quantizer that IBQ replaces);
- the straight-through form ``one_hot = hard - soft.detach() + soft``; ``z_q = one_hot @ W``
  (every code gets a gradient; no ``z + (z_q - z).detach()``); forward value == ``W[idx]`` exactly;
- ``quant_loss = mse(z_q, z) + mse(sg(z_q2), z) + beta * mse(z_q2, sg(z))`` with ``z_q2 = hard @ W``
  (forward value ``(2 + beta) * mse``);
- the entropy loss keeps the ``+1e-5`` inside ``log(avg_probs + 1e-5)`` and inside ``log_softmax``;
- ``z_q`` comes out of an einsum in a channels-last memory layout, so ``decode(z_q)`` and
  ``decode(z_q.contiguous())`` differ by rounding (~5e-6);
- taming architecture details: ``GroupNorm(32, eps=1e-6)``, swish ``x * sigmoid(x)``, asymmetric
  ``(0, 1, 0, 1)`` padding before the stride-2 downsampling conv, single-head attention after every
  res block of a level whose *configured* resolution is in ``attn_resolutions``, ``num_res_blocks + 1``
  blocks per decoder level.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqswitch._checks import check_bool, check_images, check_int, check_int_list, check_int_tensor, check_real

from ..checkpoints import load_state_dict_strict, optional_file, read_state_dict, resolve_file

__all__ = ["IBQ", "IBQQuantizer", "Encoder", "Decoder", "DEFAULT_CONFIG", "PRETRAINED", "DEFAULT_REPO_ID",
           "entropy_terms",
           "config_from_upstream", "generator_state_dict", "load_pretrained"]

# The real public checkpoints (configs/IBQ/gpu/imagenet_ibqgan_{1024,8192}.yaml of SEED-Voken):
# they differ only in n_embed. The defaults are the 1024-code model's.
DEFAULT_CONFIG: dict[str, Any] = {
    "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 4, "attn_resolutions": [16],
    "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3, "double_z": False, "dropout": 0.0,
    "n_embed": 1024, "embed_dim": 256, "beta": 0.25, "l2_normalize": False, "use_entropy_loss": True,
    "entropy_temperature": 0.01, "sample_minimization_weight": 1.0, "batch_maximization_weight": 1.0,
}
_DDCONFIG_KEYS = ("double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
                  "num_res_blocks", "attn_resolutions", "dropout")

DEFAULT_REPO_ID = "TencentARC/IBQ-Tokenizer-1024"
# Hub repos of the public tokenizers: repo id -> (checkpoint file, n_embed). The repos' config.json is
# only {"Name": ["IBQ"]}, so the architecture comes from here. The 1024 file name is the one on the Hub;
# the 8192 name follows the same pattern (not verified against the repo listing).
PRETRAINED: dict[str, tuple[str, int]] = {
    "TencentARC/IBQ-Tokenizer-1024": ("imagenet256_1024.ckpt", 1024),
    "TencentARC/IBQ-Tokenizer-8192": ("imagenet256_8192.ckpt", 8192),
}

# Keys of the upstream yaml (``model.init_args``) that only concern training, logging or upstream's own
# loader: they do not change the generator, so a tokenizer config drops them. ``remap``,
# ``sane_index_shape`` and ``cosine_similarity`` have no effect on IBQ's quantizer upstream.
_UPSTREAM_IGNORED = frozenset({
    "lossconfig", "learning_rate", "use_ema", "resume_lr", "lr_drop_epoch", "lr_drop_iter", "lr_drop_rate",
    "ckpt_path", "ignore_keys", "image_key", "colorize_nlabels", "monitor", "warmup_epochs", "scheduler_type",
    "min_learning_rate", "gradient_clip_val", "stage", "wp", "wp0", "wpe", "max_iter", "sche_type", "wp_iter",
    "use_shared_epoch", "remap", "sane_index_shape", "cosine_similarity",
})


# ---------------------------------------------------------------- building blocks (taming-style)
def _norm(channels: int) -> nn.GroupNorm:
    # upstream quirk: fixed 32 groups, eps 1e-6
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)  # upstream quirk: written out, not F.silu (same function, rounding kept)


class ResnetBlock(nn.Module):
    """norm1 -> swish -> conv1 -> norm2 -> swish -> dropout -> conv2, plus the (1x1-projected) input."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)  # applied to the block input
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions with 1x1 q, k, v and proj_out, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        n = self.norm(x)
        q = self.q(n).reshape(b, c, hh * ww).transpose(1, 2)           # (b, queries, c)
        k = self.k(n).reshape(b, c, hh * ww)                            # (b, c, keys)
        v = self.v(n).reshape(b, c, hh * ww)                            # (b, c, keys)
        weights = torch.softmax(torch.bmm(q, k) * (c ** -0.5), dim=2)   # (b, queries, keys)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # upstream quirk: pad right/bottom only, then an unpadded stride-2 conv
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Middle(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: ``block`` (res blocks), ``attn`` (one per block, or none), and a resampler."""

    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class Encoder(nn.Module):
    """images (B, in_channels, H, W) -> (B, z_channels, H/f, W/f), f = 2 ** (len(ch_mult) - 1)."""

    def __init__(self, *, ch: int, ch_mult, num_res_blocks: int, attn_resolutions, z_channels: int,
                 resolution: int, in_channels: int, dropout: float = 0.0, **_unused):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        channels, curr_res = ch, resolution
        for level, mult in enumerate(ch_mult):
            stage = _Level()
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock(channels, ch * mult, dropout))
                channels = ch * mult
                if curr_res in attn_resolutions:  # upstream quirk: the configured resolution, not the input's
                    stage.attn.append(AttnBlock(channels))
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(channels)
                curr_res //= 2
            self.down.append(stage)
        self.mid = _Middle(channels, dropout)
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage.run(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> images (B, out_ch, h*f, w*f). ``up[i]`` is level i, built from the deepest."""

    def __init__(self, *, ch: int, ch_mult, num_res_blocks: int, attn_resolutions, z_channels: int,
                 resolution: int, out_ch: int, dropout: float = 0.0, **_unused):
        super().__init__()
        channels = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, channels, 3, padding=1)
        self.mid = _Middle(channels, dropout)
        levels: list[_Level] = []
        for level in reversed(range(len(ch_mult))):
            stage = _Level()
            for _ in range(num_res_blocks + 1):  # upstream quirk: one more res block per level than the encoder
                stage.block.append(ResnetBlock(channels, ch * ch_mult[level], dropout))
                channels = ch * ch_mult[level]
                if curr_res in attn_resolutions:
                    stage.attn.append(AttnBlock(channels))
            if level != 0:
                stage.upsample = Upsample(channels)
                curr_res *= 2
            levels.insert(0, stage)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage.run(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


# ---------------------------------------------------------------- quantizer
def entropy_terms(logits: torch.Tensor, temperature: float, sample_weight: float, batch_weight: float,
                   eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sample_entropy, avg_entropy, loss) of token logits (N, n_e) at temperature T."""
    scaled = logits / temperature
    probs = torch.softmax(scaled, dim=-1)
    log_probs = torch.log_softmax(scaled + eps, dim=-1)  # upstream quirk: +eps inside log_softmax (a no-op, kept)
    avg_probs = probs.mean(dim=0)
    avg_entropy = -torch.sum(avg_probs * torch.log(avg_probs + eps))  # upstream quirk: +eps changes the value
    sample_entropy = torch.mean(-torch.sum(probs * log_probs, dim=-1))
    return sample_entropy, avg_entropy, sample_weight * sample_entropy - batch_weight * avg_entropy


class IBQQuantizer(nn.Module):
    """Index Backpropagation Quantization: upstream ``IndexPropagationQuantize``'s computation and API.

    ``forward(z)`` with z ``(B, e_dim, h, w)`` returns ``(z_q, loss, (None, None, indices))``:

    - ``z_q`` ``(B, e_dim, h, w)``: ``(hard - soft.detach() + soft) @ W``, equal to ``W[indices]`` in
      value, with gradients to z through the softmax and to *every* codebook row;
    - ``loss``: ``(quant_loss, sample_entropy, avg_entropy, entropy_loss)`` if ``use_entropy_loss``,
      else the 0-dim ``quant_loss``;
    - ``indices``: int64 ``[B*h*w]``, (b, h, w) row-major, the argmax of the inner product ``<z, e_n>``.

    ``temp``, ``rescale_logits`` and ``return_logits`` are accepted for upstream's signature and
    ignored, as upstream does (the selection softmax always runs at temperature 1).
    """

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, use_entropy_loss: bool = False, *,
                 entropy_temperature: float = 0.01, sample_minimization_weight: float = 1.0,
                 batch_maximization_weight: float = 1.0):
        super().__init__()
        self.n_e = check_int("n_e", n_e, 1)
        self.e_dim = check_int("e_dim", e_dim, 1)
        self.beta = check_real("beta", beta, 0.0)
        self.use_entropy_loss = check_bool("use_entropy_loss", use_entropy_loss)
        self.entropy_temperature = check_real("entropy_temperature", entropy_temperature, 0.0, min_open=True)
        self.sample_minimization_weight = check_real("sample_minimization_weight", sample_minimization_weight)
        self.batch_maximization_weight = check_real("batch_maximization_weight", batch_maximization_weight)
        self.embedding = nn.Embedding(self.n_e, self.e_dim)  # default N(0, 1) init, as upstream

    def extra_repr(self) -> str:
        return f"n_e={self.n_e}, e_dim={self.e_dim}, beta={self.beta}, use_entropy_loss={self.use_entropy_loss}"

    def forward(self, z: torch.Tensor, temp=None, rescale_logits: bool = False, return_logits: bool = False):
        check_images("z", z, channels=self.e_dim)
        weight = self.embedding.weight
        # upstream quirk: codes by the largest raw inner product (no distance, no l2 normalisation)
        logits = torch.einsum("bdhw,nd->bnhw", z, weight)
        soft = torch.softmax(logits, dim=1)
        index = soft.max(dim=1, keepdim=True)[1]  # upstream quirk: argmax of the softmax (ties -> first index)
        hard = torch.zeros_like(logits).scatter_(1, index, 1.0)
        one_hot = hard - soft.detach() + soft  # upstream quirk: straight-through through the softmax, every code
        z_q = torch.einsum("bnhw,nd->bdhw", one_hot, weight)  # channels-last strides, as upstream's
        z_q_hard = torch.einsum("bnhw,nd->bdhw", hard, weight)
        # upstream quirk: three terms summed left to right, forward value (2 + beta) * mse(W[idx], z)
        quant_loss = (torch.mean((z_q - z) ** 2) + torch.mean((z_q_hard.detach() - z) ** 2)
                      + self.beta * torch.mean((z_q_hard - z.detach()) ** 2))
        indices = index.reshape(-1)
        if not self.use_entropy_loss:
            return z_q, quant_loss, (None, None, indices)
        flat = logits.permute(0, 2, 3, 1).reshape(-1, self.n_e)
        sample_entropy, avg_entropy, entropy_loss = entropy_terms(
            flat, self.entropy_temperature, self.sample_minimization_weight, self.batch_maximization_weight)
        return z_q, (quant_loss, sample_entropy, avg_entropy, entropy_loss), (None, None, indices)

    def get_codebook_entry(self, indices: torch.Tensor, shape=None) -> torch.Tensor:
        """Codes of ``indices``: ``[N, e_dim]``, or with ``shape=(B, h, w, e_dim)`` (B*h*w = N) ``[B, e_dim, h, w]``."""
        check_int_tensor("indices", indices)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.n_e):
            raise ValueError(f"indices must lie in [0, n_e={self.n_e}), got values in "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        codes = self.embedding(indices.long())
        if shape is None:
            return codes
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4 or shape[3] != self.e_dim or math.prod(shape[:3]) != indices.numel():
            raise ValueError(f"shape must be (B, h, w, e_dim={self.e_dim}) with B*h*w = {indices.numel()} "
                             f"(the number of indices), got {shape}")
        return codes.view(shape).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- model
class IBQ(nn.Module):
    """The IBQ tokenizer's generator (encoder, quantizer, decoder), upstream state_dict layout.

    Constructor keywords are upstream's vocabulary: the ``ddconfig`` fields (flattened) and the
    quantizer's. Defaults are the public 1024-code ImageNet 256x256 checkpoint's.
    """

    def __init__(self, *, ch: int = 128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks: int = 4,
                 attn_resolutions=(16,), z_channels: int = 256, resolution: int = 256, in_channels: int = 3,
                 out_ch: int = 3, double_z: bool = False, dropout: float = 0.0, n_embed: int = 1024,
                 embed_dim: int = 256, beta: float = 0.25, l2_normalize: bool = False,
                 use_entropy_loss: bool = True, entropy_temperature: float = 0.01,
                 sample_minimization_weight: float = 1.0, batch_maximization_weight: float = 1.0):
        super().__init__()
        ch = check_int("ch", ch, 1)
        ch_mult = check_int_list("ch_mult", ch_mult, 1)
        for i, m in enumerate(ch_mult):
            if (ch * m) % 32:
                raise ValueError(f"ch * ch_mult[{i}] = {ch * m} must be a multiple of 32 (GroupNorm with 32 groups)")
        cfg = {
            "ch": ch, "ch_mult": ch_mult,
            "num_res_blocks": check_int("num_res_blocks", num_res_blocks, 1),
            "attn_resolutions": check_int_list("attn_resolutions", attn_resolutions, 1, empty=True),
            "z_channels": check_int("z_channels", z_channels, 1),
            "resolution": check_int("resolution", resolution, 1),
            "in_channels": check_int("in_channels", in_channels, 1),
            "out_ch": check_int("out_ch", out_ch, 1),
            "double_z": check_bool("double_z", double_z),
            "dropout": check_real("dropout", dropout, 0.0, 1.0, max_open=True),
            "n_embed": check_int("n_embed", n_embed, 1),
            "embed_dim": check_int("embed_dim", embed_dim, 1),
            "beta": check_real("beta", beta, 0.0),
            "l2_normalize": check_bool("l2_normalize", l2_normalize),
            "use_entropy_loss": check_bool("use_entropy_loss", use_entropy_loss),
            "entropy_temperature": check_real("entropy_temperature", entropy_temperature, 0.0, min_open=True),
            "sample_minimization_weight": check_real("sample_minimization_weight", sample_minimization_weight),
            "batch_maximization_weight": check_real("batch_maximization_weight", batch_maximization_weight),
        }
        if cfg["double_z"]:
            raise ValueError("double_z=True is not supported: IBQ's quant_conv takes z_channels, so upstream "
                             "cannot run it either (the real configs use False)")
        self._config = cfg
        self.embed_dim = cfg["embed_dim"]
        self.n_embed = cfg["n_embed"]
        # Registration order = upstream state_dict order (encoder, decoder, [loss], quantize, quant_conv,
        # post_quant_conv).
        self.encoder = Encoder(**cfg)
        self.decoder = Decoder(**cfg)
        # upstream quirk: l2_normalize never reaches IBQ's quantizer; it is recorded and has no effect.
        self.quantize = IBQQuantizer(cfg["n_embed"], cfg["embed_dim"], cfg["beta"], cfg["use_entropy_loss"],
                                     entropy_temperature=cfg["entropy_temperature"],
                                     sample_minimization_weight=cfg["sample_minimization_weight"],
                                     batch_maximization_weight=cfg["batch_maximization_weight"])
        self.quant_conv = nn.Conv2d(cfg["z_channels"], cfg["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(cfg["embed_dim"], cfg["z_channels"], 1)

    # ------------------------------------------------------------ config
    @property
    def config(self) -> dict[str, Any]:
        """The constructor keywords (JSON-serialisable); ``IBQ.from_config(model.config)`` rebuilds the model."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config: dict) -> "IBQ":
        """A model from a flat config (``model.config``'s keys). Raises ValueError naming unknown keys.
        For an upstream yaml config (``model: init_args: ddconfig: ...``) use :func:`config_from_upstream`."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - set(DEFAULT_CONFIG))
        if unknown:
            raise ValueError(f"unknown IBQ config key(s): {', '.join(map(str, unknown))} "
                             f"(known: {', '.join(DEFAULT_CONFIG)})")
        return cls(**config)

    @property
    def downsample_factor(self) -> int:
        """Pixels per token side: 2 ** (len(ch_mult) - 1)."""
        return 2 ** (len(self._config["ch_mult"]) - 1)

    # ------------------------------------------------------------ upstream methods
    def encode(self, x: torch.Tensor):
        """images [-1, 1] (B, in_channels, H, W) -> ``(z_q, loss, (None, None, indices))`` (the quantizer's return)."""
        check_images("x", x, channels=self._config["in_channels"])
        f = self.downsample_factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"x's height and width must be positive multiples of the downsampling factor {f}, "
                             f"got shape {tuple(x.shape)}")
        h = self.quant_conv(self.encoder(x))
        return self.quantize(h)

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """quantized latents (B, embed_dim, h, w) -> images (B, out_ch, h*f, w*f), unclamped."""
        check_images("quant", quant, channels=self.embed_dim)
        return self.decoder(self.post_quant_conv(quant))

    def decode_code(self, code_b: torch.Tensor, shape=None) -> torch.Tensor:
        """Token indices -> images (B, out_ch, h*f, w*f), unclamped.

        Upstream's ``decode_code`` calls ``quantize.embed_code``, which does not exist; this one looks the
        codes up with ``quantize.get_codebook_entry(flat, (B, h, w, embed_dim))`` (as upstream's AR code
        does) and decodes them. ``code_b``: ``(B, h, w)``; or ``(B, L)`` with L a perfect square
        (h = w = sqrt(L)); or any layout holding B*h*w indices in (b, h, w) row-major order together
        with ``shape=(B, h, w)``.
        """
        check_int_tensor("code_b", code_b)
        if shape is not None:
            shape = tuple(int(s) for s in shape)
            if len(shape) != 3 or min(shape) < 1 or math.prod(shape) != code_b.numel():
                raise ValueError(f"shape must be (B, h, w) with B*h*w = {code_b.numel()} (the number of indices), "
                                 f"got {shape}")
        elif code_b.dim() == 3:
            shape = tuple(code_b.shape)
        elif code_b.dim() == 2 and math.isqrt(code_b.shape[1]) ** 2 == code_b.shape[1]:
            side = math.isqrt(code_b.shape[1])
            shape = (code_b.shape[0], side, side)
        else:
            raise ValueError(f"code_b must be (B, h, w), or (B, L) with L a perfect square; pass shape=(B, h, w) "
                             f"for other layouts, got shape {tuple(code_b.shape)}")
        if min(shape) < 1:
            raise ValueError(f"code_b must hold at least one token per image, got shape {tuple(code_b.shape)}")
        quant = self.quantize.get_codebook_entry(code_b.reshape(-1), (*shape, self.embed_dim))
        return self.decode(quant)

    def forward(self, input: torch.Tensor):
        """images [-1, 1] -> ``(reconstruction, loss)`` (upstream's ``(dec, diff)``)."""
        quant, diff, _ = self.encode(input)
        return self.decode(quant), diff


# ---------------------------------------------------------------- configs and checkpoints
def config_from_upstream(config: dict) -> dict[str, Any]:
    """An upstream yaml config -> a flat :class:`IBQ` config.

    Accepts the whole file (``{"model": {"class_path": ..., "init_args": {...}}}``, or ``target`` /
    ``params``), the ``init_args`` dict, or an already flat config. ``ddconfig`` is flattened; keys that
    only concern training (``lossconfig``, ``learning_rate``, ``use_ema``, schedulers, ...) are dropped.
    Raises ValueError naming unknown keys, or a model class other than IBQ.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    if "model" in config and isinstance(config["model"], dict):
        config = config["model"]
    cls = config.get("class_path", config.get("target"))
    if cls is not None and str(cls).rsplit(".", 1)[-1] != "IBQ":
        raise ValueError(f"config describes the model class {cls!r}, not IBQ")
    if "init_args" in config or "params" in config:
        config = config.get("init_args", config.get("params")) or {}
    flat: dict[str, Any] = {}
    unknown = []
    for key, value in config.items():
        if key in ("class_path", "target"):
            continue
        if key == "ddconfig":
            if not isinstance(value, dict):
                raise TypeError(f"ddconfig must be a dict, got {type(value).__name__}")
            for k, v in value.items():
                if k in _DDCONFIG_KEYS:
                    flat[k] = v
                else:
                    unknown.append(f"ddconfig.{k}")
        elif key in DEFAULT_CONFIG:
            flat[key] = value
        elif key not in _UPSTREAM_IGNORED:
            unknown.append(str(key))
    if unknown:
        raise ValueError(f"unknown IBQ config key(s): {', '.join(sorted(unknown))}")
    for key in ("ch_mult", "attn_resolutions"):
        if isinstance(flat.get(key), tuple):
            flat[key] = list(flat[key])
    return flat


def _read_yaml(path: Path) -> dict:
    try:
        import yaml  # optional: only needed to read an upstream config.yaml
    except ImportError as err:
        raise ImportError(f"reading {str(path)!r} needs PyYAML (pip install pyyaml); or pass config= "
                          f"(a dict) to load_pretrained") from err
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh)  # plain data only: python/* tags are a ConstructorError, never executed
        except yaml.YAMLError as err:
            raise ValueError(f"{str(path)!r} is not a plain yaml config (only mappings, lists and scalars are read; "
                             f"Python tags are refused): {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} does not hold a yaml mapping")
    return data


def _dotless(name: str) -> str:
    return name.replace(".", "")


def _ema_weight_keys(state_dict: dict) -> list[str]:
    """The ``model_ema.*`` weight keys, without LitEma's counters and the loss discriminator's copies."""
    return [k for k in state_dict
            if k.startswith("model_ema.") and k not in ("model_ema.decay", "model_ema.num_updates")
            and not k.startswith("model_ema.loss")]


def generator_state_dict(state_dict: dict[str, torch.Tensor], model: nn.Module, *,
                         use_ema: bool | None = None) -> dict[str, torch.Tensor]:
    """The generator weights of an upstream IBQ checkpoint's ``state_dict``, named as ``model``'s.

    Drops ``loss.*`` (LPIPS, discriminator), ``model_ema.decay``, ``model_ema.num_updates`` and
    ``model_ema.loss*``. With EMA (``use_ema=True``, or ``None`` when the checkpoint has
    ``model_ema.*`` weights) each parameter P is taken from ``model_ema.<P without dots>`` (upstream's
    LitEma naming), as upstream inference does, never falling back to a live weight; otherwise the live
    weights are kept. Every other key is kept, so a strict load reports it as unexpected (and a parameter
    found neither way as missing).
    Raises ValueError naming the ``model_ema.*`` keys of parameters the checkpoint holds live but not as EMA,
    when EMA weights are used.
    """
    if use_ema is not None and not isinstance(use_ema, bool):
        raise TypeError(f"use_ema must be True, False or None, got {use_ema!r}")
    ema_keys = _ema_weight_keys(state_dict)
    if use_ema is None:
        use_ema = bool(ema_keys)
    out = {k: v for k, v in state_dict.items() if not k.startswith(("loss.", "model_ema."))}
    if not use_ema:
        return out
    params = [name for name, _ in model.named_parameters()]
    mapping = {"model_ema." + _dotless(name): name for name in params}
    if len(mapping) != len(params):
        raise ValueError("the model's parameter names collide once their dots are removed; "
                         "EMA weights cannot be mapped (pass use_ema=False)")
    # A parameter the checkpoint holds live but not as EMA: the checkpoint is incomplete, say which EMA key.
    # One it holds neither way is an architecture mismatch, left to the strict load (reported as missing).
    missing = [k for k, name in mapping.items() if k not in state_dict and name in state_dict]
    if missing:
        raise ValueError(f"checkpoint has no EMA weight for {len(missing)} parameter(s): "
                         f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} (pass use_ema=False to load "
                         f"the live weights)")
    live_as_ema = {"model_ema." + _dotless(k) for k in out}
    for name in params:
        out.pop(name, None)  # never fall back to a live weight
    for key in ema_keys:
        if key in mapping:
            out[mapping[key]] = state_dict[key]
        elif key not in live_as_ema:
            out[key] = state_dict[key]  # a stray EMA weight: the strict load names it as unexpected
    return out


def _codebook_rows(state_dict: dict[str, torch.Tensor]) -> int | None:
    for key in ("model_ema.quantizeembeddingweight", "quantize.embedding.weight"):
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            return int(value.shape[0])
    return None


def load_pretrained(repo_id_or_path: str | os.PathLike = DEFAULT_REPO_ID, filename: str | None = None, *,
                    revision: str | None = None, cache_dir=None, config: dict | None = None,
                    use_ema: bool | None = None) -> IBQ:
    """An :class:`IBQ` with an upstream checkpoint's generator weights, in eval mode.

    Args:
        repo_id_or_path: a checkpoint file, a folder holding it, or a Hub repo id (default
            ``TencentARC/IBQ-Tokenizer-1024``; see :data:`PRETRAINED`).
        filename: the checkpoint file inside the folder or repo (default: the known file of a
            :data:`PRETRAINED` repo, or a local folder's only ``.ckpt`` file). ``.ckpt``/``.pt``/``.bin`` are read with
            ``torch.load(weights_only=True)``; ``.safetensors`` too.
        revision, cache_dir: passed to the Hub download.
        config: the architecture, flat (``IBQ.config``) or in the upstream yaml layout. Without it:
            ``config.yaml`` beside the file / in the folder / in the repo (upstream layout; needs PyYAML),
            else the known config of a :data:`PRETRAINED` repo, else :data:`DEFAULT_CONFIG` with
            ``n_embed`` taken from the checkpoint's codebook.
        use_ema: True: the EMA weights (``model_ema.*``, what upstream evaluates with); False: the live
            weights; None: EMA when the checkpoint has them.
    Raises: ValueError (from the strict load) naming missing, unexpected and mis-shaped keys;
        FileNotFoundError / OSError for a file that cannot be found.
    """
    known = PRETRAINED.get(str(repo_id_or_path))
    local = Path(repo_id_or_path) if isinstance(repo_id_or_path, (str, os.PathLike)) else None
    is_local = local is not None and local.exists()
    if filename is None and known is not None and not is_local:
        filename = known[0]
    if filename is None and is_local and local.is_dir():
        ckpts = sorted(p.name for p in local.glob("*.ckpt"))
        if len(ckpts) != 1:
            raise ValueError(f"{str(local)!r} holds {len(ckpts)} .ckpt files ({ckpts}): pass filename= to pick one")
        filename = ckpts[0]
    path = resolve_file(repo_id_or_path, filename, revision=revision, cache_dir=cache_dir)
    state_dict = read_state_dict(path)

    if config is not None:
        cfg = config_from_upstream(config)
    else:
        yaml_path = path.parent / "config.yaml"
        if not yaml_path.is_file() and not is_local and known is None:
            yaml_path = optional_file(repo_id_or_path, "config.yaml", revision=revision, cache_dir=cache_dir)
        if yaml_path is not None and yaml_path.is_file():
            cfg = config_from_upstream(_read_yaml(yaml_path))
        else:
            cfg = dict(DEFAULT_CONFIG)
            rows = known[1] if known is not None else _codebook_rows(state_dict)
            if rows is not None:
                cfg["n_embed"] = rows
    model = IBQ.from_config(cfg)
    if use_ema is None:
        use_ema = bool(_ema_weight_keys(state_dict))
    weights = generator_state_dict(state_dict, model, use_ema=use_ema)
    what = f"IBQ checkpoint {str(path)!r}"
    if use_ema:
        what += " (EMA weights: parameter P is read from model_ema.<P without dots>)"
    load_state_dict_strict(model, weights, what=what)
    return model.eval()

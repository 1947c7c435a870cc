"""MaskGIT-VQGAN: the convolutional VQ image tokenizer of MaskGIT, checkpoint-compatible.

This is vqswitch's own implementation of the VQGAN that MaskGIT uses as its image tokenizer (the
PyTorch port published by open-muse as ``MaskGitVQGAN`` and shipped by the TiTok authors as
``maskgit-vqgan-imagenet-f16-256.bin`` in the Hub repository ``fun-research/TiTok``). It loads
those checkpoints key for key and follows the upstream method names and return structures:

* :class:`MaskGitEncoder`: pixels ``(B, 3, H, W)`` in **[0, 1]** (not [-1, 1]) -> latents
  ``(B, z_channels, H/f, W/f)``, ``f = 2 ** (len(channel_mult) - 1)`` (16 for the real model).
* :class:`MaskGitQuantizer`: nearest codebook row per latent position (squared L2, no
  normalisation), indices ``(B, h*w)`` in row-major (h, w) order.
* :class:`MaskGitDecoder`: latents -> pixels; the output is **not clamped** (the upstream demo and
  1d-tokenizer's ``PretrainedTokenizer.decode`` clamp to [0, 1] outside the model).

There is no attention, no ``quant_conv`` and no ``post_quant_conv``; ``attn_resolutions`` and
``resample_with_conv`` are accepted and recorded in the config but unused, as upstream.

Upstream quirks kept because the checkpoint or the numbers depend on them:

1. *Residual shortcut on the transformed states.* When a residual block changes the channel count,
   its shortcut is ``nin_shortcut(h)`` applied to the block's *output* ``h`` (after ``conv2``), not
   to the block input, so the block returns ``h + nin_shortcut(h)``; ``nin_shortcut`` is a bias-free
   1x1 conv of shape ``[out, out, 1, 1]`` (an in->out shortcut would not even fit the checkpoint).
2. *TF-style "same" convolutions*: padding is computed from the input size and applied with
   ``F.pad`` (extra row/column at the bottom/right when the total is odd), then an unpadded conv;
   no pad call at all when the total is zero. The residual convs and ``encoder.conv_in`` are
   bias-free; ``GroupNorm(32, eps=1e-6)`` everywhere, so every channel count must be a multiple of 32.
3. *Quantizer loss placement*: ``loss = mean((sg[z_q] - h)^2) + beta * mean((z_q - sg[h])^2)``:
   beta (``commitment_cost``) weighs the codebook term, the reverse of the VQ-VAE paper and of
   TiTok's quantizer. The straight-through ``h + sg[z_q - h]`` is only applied when
   ``return_loss=True``; otherwise the quantized states are the exact codebook rows.
4. *Distances* are ``addmm(|h|^2 + |e|^2, h, e^T, alpha=-2)`` followed by ``argmin`` (first index on
   ties), as upstream, so the indices agree with upstream bit for bit.
5. *``get_codebook_entry`` returns a permuted view* ``(B, C, s, s)`` with channels-last strides
   (``s = sqrt(N)``: square token grids only). It is kept, not made contiguous: the CPU
   convolutions take a channels-last kernel path for it, so ``decode_code`` reproduces upstream's
   ``decode_code`` exactly (its output keeps channels-last strides, as upstream's), and differs
   from ``decode(quantized_states)`` of the same codes by float32 rounding (7e-6 on the fixture).
   ``decode(get_codebook_entry(i).contiguous())``
   equals ``decode`` of the forward pass's quantized states bit for bit.

Every path that quantizes or looks codes up goes through ``self.quantize`` (``__call__``,
``get_code`` or ``get_codebook_entry``), never ``self.quantize.embedding``, so that the adapter
layer can replace ``model.quantize`` by a module with the same call signatures.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqswitch._checks import check_bool, check_images, check_int, check_int_list, check_int_tensor, check_real
from vqswitch._io import read_json_object

from ..checkpoints import hub_repo_id, load_state_dict_strict, optional_file, read_state_dict, resolve_file

__all__ = [
    "MaskGitVQGAN",
    "MaskGitEncoder",
    "MaskGitDecoder",
    "MaskGitQuantizer",
    "MaskGitResnetBlock",
    "SameConv2d",
    "load_pretrained",
    "DEFAULT_CONFIG",
    "DEFAULT_REPO_ID",
    "DEFAULT_FILENAME",
]

DEFAULT_REPO_ID = "fun-research/TiTok"
DEFAULT_FILENAME = "maskgit-vqgan-imagenet-f16-256.bin"
# Names open-muse's save_pretrained uses, tried in a local folder that lacks DEFAULT_FILENAME.
_FOLDER_FALLBACKS = ("pytorch_model.bin", "model.safetensors")

#: The configuration of the published checkpoint (open-muse vocabulary).
DEFAULT_CONFIG: dict = {
    "resolution": 256,
    "num_channels": 3,
    "hidden_channels": 128,
    "channel_mult": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [16],
    "z_channels": 256,
    "num_embeddings": 1024,
    "quantized_embed_dim": 256,
    "dropout": 0.0,
    "resample_with_conv": True,
    "commitment_cost": 0.25,
}

_GROUPS = 32  # upstream hard-codes GroupNorm(32, eps=1e-6)
_EPS = 1e-6


# ----------------------------------------------------------------------------- argument checks
def _tower_args(hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout):
    hidden_channels = check_int("hidden_channels", hidden_channels, 1)
    channel_mult = check_int_list("channel_mult", channel_mult, 1)
    for i, mult in enumerate(channel_mult):
        if (hidden_channels * mult) % _GROUPS:
            raise ValueError(
                f"hidden_channels * channel_mult[{i}] = {hidden_channels} * {mult} = {hidden_channels * mult} "
                f"must be a multiple of {_GROUPS} (the blocks use GroupNorm with {_GROUPS} groups)")
    return (hidden_channels, channel_mult, check_int("num_res_blocks", num_res_blocks, 1),
            check_int("z_channels", z_channels, 1), check_int("num_channels", num_channels, 1),
            check_real("dropout", dropout, 0.0, 1.0, max_open=True))


def _check_indices(name: str, indices) -> None:
    check_int_tensor(name, indices)
    if indices.dim() != 2:
        raise ValueError(f"{name} must be 2-D (B, num_tokens), got shape {tuple(indices.shape)}")


# ----------------------------------------------------------------------------- building blocks
class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow-style ``"same"`` padding (upstream's ``Conv2dSame``).

    Per spatial dim the total padding is ``max((ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)``,
    split with the smaller half before and the larger half after, applied with ``F.pad`` before an
    unpadded convolution (and no ``F.pad`` call when both totals are zero, as upstream: padding a
    tensor copies it, which can change its memory layout and so the CPU conv kernel used).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, dilation=1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, dilation=dilation,
                         bias=bias)

    @staticmethod
    def _total_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
        return max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = self._total_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = self._total_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_GROUPS, channels, eps=_EPS, affine=True)


class MaskGitResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice (dropout before the second conv), plus a residual.

    Upstream quirk (kept, the checkpoint depends on it): when ``in_channels != out_channels`` the
    residual is ``nin_shortcut(h)`` of the *transformed* states ``h`` (a bias-free ``[out, out, 1, 1]``
    conv), not a projection of the block input; the block then returns ``h + nin_shortcut(h)``.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _group_norm(in_channels)
        self.conv1 = SameConv2d(in_channels, out_channels, 3, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = SameConv2d(out_channels, out_channels, 3, bias=False)
        if in_channels != out_channels:
            self.nin_shortcut = SameConv2d(out_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        # upstream quirk: the shortcut transforms h (the block's output), not the input x
        residual = self.nin_shortcut(h) if self.in_channels != self.out_channels else x
        return h + residual


class _DownLevel(nn.Module):
    """One encoder resolution: residual blocks (``block``), then 2x average pooling unless last."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, dropout: float, downsample: bool):
        super().__init__()
        self.block = nn.ModuleList(
            MaskGitResnetBlock(in_channels if i == 0 else out_channels, out_channels, dropout)
            for i in range(num_res_blocks))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        return F.avg_pool2d(x, kernel_size=2, stride=2) if self.downsample else x


class _UpLevel(nn.Module):
    """One decoder resolution: residual blocks (``block``), then nearest 2x + 3x3 ``upsample_conv``
    unless it is level 0 (the finest)."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int, dropout: float, upsample: bool):
        super().__init__()
        self.block = nn.ModuleList(
            MaskGitResnetBlock(in_channels if i == 0 else out_channels, out_channels, dropout)
            for i in range(num_res_blocks))
        self.upsample = upsample
        if upsample:
            self.upsample_conv = SameConv2d(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.block:
            x = blk(x)
        if self.upsample:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class MaskGitEncoder(nn.Module):
    """Pixels ``(B, num_channels, H, W)`` -> latents ``(B, z_channels, H / f, W / f)``, ``f = 2**(L-1)``.

    Layout (state_dict keys): ``conv_in`` (3x3, no bias), ``down.{i}.block.{j}`` for each of the
    ``L = len(channel_mult)`` levels (``hidden_channels * channel_mult[i]`` channels, 2x average
    pooling after every level but the last), ``mid.{j}`` (``num_res_blocks`` blocks), ``norm_out``,
    SiLU and ``conv_out`` (1x1, with bias).
    """

    def __init__(self, hidden_channels: int, channel_mult, num_res_blocks: int, z_channels: int,
                 num_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout = _tower_args(
            hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout)
        self.num_channels, self.z_channels = num_channels, z_channels
        self.conv_in = SameConv2d(num_channels, hidden_channels, 3, bias=False)
        widths = [hidden_channels * m for m in channel_mult]
        ins = [hidden_channels] + widths[:-1]
        last = len(widths) - 1
        self.down = nn.ModuleList(
            _DownLevel(ins[i], widths[i], num_res_blocks, dropout, downsample=i != last) for i in range(len(widths)))
        self.mid = nn.ModuleList(MaskGitResnetBlock(widths[-1], widths[-1], dropout) for _ in range(num_res_blocks))
        self.norm_out = _group_norm(widths[-1])
        self.conv_out = SameConv2d(widths[-1], z_channels, 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        check_images("pixel_values", pixel_values, channels=self.num_channels)
        x = self.conv_in(pixel_values)
        for level in self.down:
            x = level(x)
        for blk in self.mid:
            x = blk(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class MaskGitDecoder(nn.Module):
    """Latents ``(B, z_channels, h, w)`` -> pixels ``(B, num_channels, h * f, w * f)``, not clamped.

    Layout (state_dict keys): ``conv_in`` (3x3, z_channels -> widest, with bias), ``mid.{j}``,
    ``up.{i}.block.{j}`` and ``up.{i}.upsample_conv`` (``i > 0``), ``norm_out``, SiLU, ``conv_out``
    (3x3, with bias). ``up`` is indexed by resolution level (0 = finest) and run from the coarsest
    level down; level ``i`` maps ``hidden_channels * channel_mult[min(i + 1, L - 1)]`` channels to
    ``hidden_channels * channel_mult[i]``. The same layout is TiTok's legacy ``pixel_decoder``.
    """

    def __init__(self, hidden_channels: int, channel_mult, num_res_blocks: int, z_channels: int,
                 num_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout = _tower_args(
            hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout)
        self.num_channels, self.z_channels = num_channels, z_channels
        widths = [hidden_channels * m for m in channel_mult]
        last = len(widths) - 1
        self.conv_in = SameConv2d(z_channels, widths[-1], 3)
        self.mid = nn.ModuleList(MaskGitResnetBlock(widths[-1], widths[-1], dropout) for _ in range(num_res_blocks))
        self.up = nn.ModuleList(
            _UpLevel(widths[min(i + 1, last)], widths[i], num_res_blocks, dropout, upsample=i != 0)
            for i in range(len(widths)))
        self.norm_out = _group_norm(widths[0])
        self.conv_out = SameConv2d(widths[0], num_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_images("z", z, channels=self.z_channels)
        x = self.conv_in(z)
        for blk in self.mid:
            x = blk(x)
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class MaskGitQuantizer(nn.Module):
    """Nearest-codebook-row vector quantizer (squared L2, no normalisation), upstream API.

    ``embedding`` is an ``nn.Embedding(num_embeddings, embedding_dim)`` initialised, as upstream,
    uniformly in ``[-1/K, 1/K]``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25):
        super().__init__()
        self.num_embeddings = check_int("num_embeddings", num_embeddings, 1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 1)
        self.commitment_cost = check_real("commitment_cost", commitment_cost, 0.0)
        self.embedding = nn.Embedding(self.num_embeddings, self.embedding_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / self.num_embeddings, 1.0 / self.num_embeddings)

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, " \
               f"commitment_cost={self.commitment_cost}"

    def _channels_last(self, hidden_states) -> torch.Tensor:
        check_images("hidden_states", hidden_states, channels=self.embedding_dim)
        return hidden_states.permute(0, 2, 3, 1).contiguous()

    def _nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """argmin_k of |h|^2 + |e_k|^2 - 2 h.e_k for rows h of ``flat`` (N, C) -> (N,) int64."""
        with torch.no_grad():
            weight = self.embedding.weight.detach()
            flat = flat.detach()
            # upstream: addmm(|h|^2 + |e|^2, h, e^T, alpha=-2), then argmin (first index on ties)
            distances = torch.addmm(flat.pow(2).sum(dim=1, keepdim=True) + weight.pow(2).sum(dim=1).unsqueeze(0),
                                    flat, weight.t(), alpha=-2.0)
            return distances.argmin(dim=1)

    def forward(self, hidden_states: torch.Tensor, return_loss: bool = False):
        """Quantize ``hidden_states`` ``(B, C, h, w)`` float, ``C = embedding_dim``.

        Returns ``(z_q, indices, loss)``:
            z_q: ``(B, C, h, w)``, contiguous, same dtype: the nearest codebook rows; with
                ``return_loss=True`` the straight-through value ``h + sg[z_q - h]``.
            indices: ``(B, h*w)`` int64, row-major over (h, w).
            loss: ``None``, or with ``return_loss=True`` a scalar
                ``mean((sg[z_q] - h)^2) + commitment_cost * mean((z_q - sg[h])^2)`` (upstream
                quirk: the commitment cost weighs the codebook term).
        """
        h = self._channels_last(hidden_states)
        batch = h.shape[0]
        indices = self._nearest(h.reshape(-1, self.embedding_dim))
        # exactly the codebook rows (upstream multiplies a one-hot matrix by the codebook: same values)
        z_q = F.embedding(indices, self.embedding.weight).view(h.shape)
        loss = None
        if return_loss:
            # upstream quirk: beta sits on the codebook term, and the straight-through step runs only here
            loss = torch.mean((z_q.detach() - h) ** 2) + self.commitment_cost * torch.mean((z_q - h.detach()) ** 2)
            z_q = h + (z_q - h).detach()
        return z_q.permute(0, 3, 1, 2).contiguous(), indices.view(batch, -1), loss

    def get_code(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Indices ``(B, h*w)`` int64 of the nearest codebook rows of ``hidden_states`` ``(B, C, h, w)``."""
        h = self._channels_last(hidden_states)
        return self._nearest(h.reshape(-1, self.embedding_dim)).view(h.shape[0], -1)

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook rows for ``indices`` ``(B, N)`` (integer, ``N = s*s``) as ``(B, C, s, s)``.

        Upstream quirk kept: the result is a permuted view with channels-last strides (not
        contiguous); see the module docstring for what that does to the decoder's numbers.
        Raises ValueError for a non-square ``N`` or an index outside ``[0, num_embeddings)``.
        """
        _check_indices("indices", indices)
        batch, num_tokens = indices.shape
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"indices must hold a square grid of tokens per image (N = s*s); got N = {num_tokens}")
        if indices.numel() and indices.device.type != "meta":
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.num_embeddings:
                raise ValueError(f"indices must lie in [0, {self.num_embeddings}), got values in [{low}, {high}]")
        rows = self.embedding(indices)  # (B, N, C)
        return rows.reshape(batch, side, side, self.embedding_dim).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- the model
class MaskGitVQGAN(nn.Module):
    """The MaskGIT-VQGAN tokenizer; constructor keywords in open-muse's vocabulary.

    Defaults are the published checkpoint's (:data:`DEFAULT_CONFIG`): 256 px, f16 (16x16 = 256
    tokens per image), 1024 codes of dimension 256. ``quantized_embed_dim`` must equal
    ``z_channels`` (there is no ``quant_conv``). ``attn_resolutions`` and ``resample_with_conv`` are
    accepted and stored but unused, as upstream. ``resolution`` is the nominal image size (recorded,
    must be a multiple of the downsampling factor); other sizes that are multiples of it work too.

    Submodules: ``encoder`` (:class:`MaskGitEncoder`), ``decoder`` (:class:`MaskGitDecoder`) and
    ``quantize`` (:class:`MaskGitQuantizer`); the state_dict keys are the upstream ones.
    """

    def __init__(self, resolution: int = 256, num_channels: int = 3, hidden_channels: int = 128,
                 channel_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), z_channels: int = 256, num_embeddings: int = 1024,
                 quantized_embed_dim: int = 256, dropout: float = 0.0, resample_with_conv: bool = True,
                 commitment_cost: float = 0.25):
        super().__init__()
        hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout = _tower_args(
            hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout)
        resolution = check_int("resolution", resolution, 1)
        factor = 2 ** (len(channel_mult) - 1)
        if resolution % factor:
            raise ValueError(f"resolution ({resolution}) must be a multiple of the downsampling factor "
                             f"2**(len(channel_mult)-1) = {factor}")
        attn_resolutions = check_int_list("attn_resolutions", attn_resolutions, 0, empty=True)
        num_embeddings = check_int("num_embeddings", num_embeddings, 1)
        quantized_embed_dim = check_int("quantized_embed_dim", quantized_embed_dim, 1)
        if quantized_embed_dim != z_channels:
            raise ValueError(f"quantized_embed_dim ({quantized_embed_dim}) must equal z_channels ({z_channels}): "
                             "the model has no quant_conv between the encoder and the codebook")
        check_bool("resample_with_conv", resample_with_conv)
        commitment_cost = check_real("commitment_cost", commitment_cost, 0.0)
        self._config = {
            "resolution": resolution, "num_channels": num_channels, "hidden_channels": hidden_channels,
            "channel_mult": list(channel_mult), "num_res_blocks": num_res_blocks,
            "attn_resolutions": list(attn_resolutions), "z_channels": z_channels, "num_embeddings": num_embeddings,
            "quantized_embed_dim": quantized_embed_dim, "dropout": dropout,
            "resample_with_conv": resample_with_conv, "commitment_cost": commitment_cost,
        }
        self.downsample_factor = factor
        self.encoder = MaskGitEncoder(hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout)
        self.decoder = MaskGitDecoder(hidden_channels, channel_mult, num_res_blocks, z_channels, num_channels, dropout)
        self.quantize = MaskGitQuantizer(num_embeddings, quantized_embed_dim, commitment_cost)

    # -- configuration
    @property
    def config(self) -> dict:
        """The constructor keywords (a JSON-serialisable copy; lists, not tuples)."""
        return json.loads(json.dumps(self._config))

    @classmethod
    def from_config(cls, config: dict) -> "MaskGitVQGAN":
        """Build from a config dict in open-muse's vocabulary (missing keys take the defaults).

        Keys starting with ``_`` (save_config metadata such as ``_class_name``, ``_version``) are
        ignored, except that ``_class_name``, when present, must be ``"MaskGitVQGAN"``.
        Raises: TypeError for a non-dict; ValueError naming unknown keys or a foreign ``_class_name``.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        class_name = config.get("_class_name", cls.__name__)
        if class_name != "MaskGitVQGAN":
            raise ValueError(f"config describes class {class_name!r}, not 'MaskGitVQGAN'")
        unknown = sorted(k for k in config
                         if not (isinstance(k, str) and k.startswith("_")) and k not in DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown MaskGitVQGAN config key(s): {', '.join(map(str, unknown))}; "
                             f"expected a subset of {sorted(DEFAULT_CONFIG)}")
        return cls(**{k: v for k, v in config.items() if k in DEFAULT_CONFIG})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._config.items())

    # -- input checks
    def _check_pixels(self, pixel_values) -> None:
        check_images("pixel_values", pixel_values, channels=self._config["num_channels"])
        height, width = pixel_values.shape[-2:]
        f = self.downsample_factor
        if height % f or width % f:
            raise ValueError(f"pixel_values height and width must be positive multiples of the downsampling "
                             f"factor {f}, got {height}x{width}")

    # -- upstream API
    def encode(self, pixel_values: torch.Tensor, return_loss: bool = False):
        """``pixel_values: (B, num_channels, H, W)`` float in [0, 1], H and W multiples of
        ``downsample_factor`` -> ``(quantized_states, codebook_indices)``, plus ``(loss,)`` with
        ``return_loss=True``.

        quantized_states: ``(B, z_channels, H/f, W/f)`` float (codebook rows; straight-through with
        ``return_loss``); codebook_indices: ``(B, (H/f)*(W/f))`` int64; loss: scalar float.
        """
        self._check_pixels(pixel_values)
        quantized_states, codebook_indices, loss = self.quantize(self.encoder(pixel_values), return_loss)
        return (quantized_states, codebook_indices, loss) if return_loss else (quantized_states, codebook_indices)

    def decode(self, quantized_states: torch.Tensor) -> torch.Tensor:
        """``quantized_states: (B, z_channels, h, w)`` float -> pixels ``(B, num_channels, h*f, w*f)``,
        nominally in [0, 1] but **not clamped**."""
        check_images("quantized_states", quantized_states, channels=self._config["z_channels"])
        return self.decoder(quantized_states)

    def decode_code(self, codebook_indices: torch.Tensor) -> torch.Tensor:
        """``codebook_indices: (B, N)`` integer, ``N = s*s`` -> pixels ``(B, num_channels, s*f, s*f)``,
        not clamped (codes looked up with ``quantize.get_codebook_entry``, upstream layout kept, so
        the result usually carries channels-last strides too, as upstream's: ``.contiguous()`` it
        before ``.view``)."""
        _check_indices("codebook_indices", codebook_indices)
        return self.decode(self.quantize.get_codebook_entry(codebook_indices))

    def get_code(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values: (B, num_channels, H, W)`` float in [0, 1] -> ``(B, (H/f)*(W/f))`` int64."""
        self._check_pixels(pixel_values)
        return self.quantize.get_code(self.encoder(pixel_values))

    def forward(self, pixel_values: torch.Tensor, return_loss: bool = False):
        """``pixel_values: (B, num_channels, H, W)`` float in [0, 1] ->
        ``(reconstructed_pixel_values, quantized_states, codebook_indices)``, plus ``(loss,)`` with
        ``return_loss=True``.

        reconstructed_pixel_values: ``(B, num_channels, H, W)`` float, not clamped;
        quantized_states: ``(B, z_channels, H/f, W/f)``; codebook_indices: ``(B, (H/f)*(W/f))`` int64;
        loss: scalar (see :meth:`MaskGitQuantizer.forward`).
        """
        self._check_pixels(pixel_values)
        quantized_states, codebook_indices, loss = self.quantize(self.encoder(pixel_values), return_loss)
        out = (self.decode(quantized_states), quantized_states, codebook_indices)
        return out + (loss,) if return_loss else out


# ----------------------------------------------------------------------------- loading
def _sibling_config(repo_id_or_path, ckpt: Path, revision, cache_dir) -> dict | None:
    """The open-muse config.json that goes with the checkpoint (in its Hub repository, else beside it), or None
    (see load_pretrained). Raises ValueError for one that is not a JSON object or cannot be read."""
    where = repo_id_or_path if hub_repo_id(repo_id_or_path) is not None else ckpt.parent
    file = optional_file(where, "config.json", revision=revision, cache_dir=cache_dir)
    if file is None:
        return None
    try:
        config = read_json_object(file, "MaskGIT-VQGAN config")
    except OSError as err:
        raise ValueError(f"cannot read {str(file)!r}: {err}") from err
    if config.get("_class_name", "MaskGitVQGAN") != "MaskGitVQGAN":
        return None  # another model's config sharing the folder / repository
    return config


def load_pretrained(repo_id_or_path=DEFAULT_REPO_ID, filename: str = DEFAULT_FILENAME, *,
                    revision: str | None = None, cache_dir=None, config: dict | None = None) -> MaskGitVQGAN:
    """Load a MaskGIT-VQGAN checkpoint into :class:`MaskGitVQGAN`, in eval mode, on the CPU.

    Args:
        repo_id_or_path: a checkpoint file, a folder holding one, or a Hub repo id (default
            ``"fun-research/TiTok"``, where the TiTok authors publish the MaskGIT-VQGAN weights).
        filename: the checkpoint's name in the folder or repository (default
            ``"maskgit-vqgan-imagenet-f16-256.bin"``). In a local folder without that file, with
            the default name, open-muse's ``pytorch_model.bin`` / ``model.safetensors`` are tried.
        revision, cache_dir: passed to the Hub download for repo ids.
        config: the model configuration (open-muse vocabulary). Without it, a ``config.json`` beside
            the checkpoint (the folder, the file's folder, or the Hub repository) is used unless its
            ``_class_name`` names another class; without one, :data:`DEFAULT_CONFIG`.
    Raises: ValueError (from the strict load) naming missing, unexpected and mis-shaped keys when
        the weights do not fit the configuration; ValueError for a bad config; the errors of
        :func:`~vqswitch.adapters.checkpoints.resolve_file` for a file that cannot be found.
    """
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    if (filename == DEFAULT_FILENAME and isinstance(repo_id_or_path, (str, os.PathLike))
            and Path(repo_id_or_path).is_dir() and not (Path(repo_id_or_path) / filename).is_file()):
        filename = next((n for n in _FOLDER_FALLBACKS if (Path(repo_id_or_path) / n).is_file()), filename)
    ckpt = resolve_file(repo_id_or_path, filename, revision=revision, cache_dir=cache_dir)
    if config is None:
        config = _sibling_config(repo_id_or_path, ckpt, revision, cache_dir)
    model = MaskGitVQGAN.from_config(dict(DEFAULT_CONFIG) if config is None else config)
    load_state_dict_strict(model, read_state_dict(ckpt), what=f"checkpoint {str(ckpt)!r}")
    return model.eval()

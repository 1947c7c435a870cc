"""TiTok, the 1-D image tokenizer of bytedance/1d-tokenizer, written for vqswitch from public facts.

TiTok ("An Image is Worth 32 Tokens", arXiv:2406.07550) encodes a square image with a ViT whose
sequence is ``[cls, patch tokens] + learned latent tokens``; the last ``N`` outputs, projected to
``token_size`` channels, are the 1-D latent ``[B, token_size, 1, N]`` (upstream's "fake 2-D"
layout). A vector quantizer (``quantize``) maps every token to one of ``codebook_size`` codes, and a
ViT decoder turns the ``N`` codes back into an image. This module reproduces the upstream
``state_dict`` key for key (``latent_tokens``, ``encoder.*``, ``decoder.*``, ``quantize.*`` and, for
stage-2 models, ``pixel_quantize.*`` / ``pixel_decoder.*``), the upstream config vocabulary
(``config.json`` of the public Hub checkpoints such as ``yucornetto/tokenizer_titok_s128_imagenet``)
and the upstream methods and return structures (``encode``, ``decode``, ``decode_tokens``,
``forward``).

Layouts
    * **Legacy stage-2** (``is_legacy`` true, ``finetune_decoder`` true: TiTok-S/B/L-32/64/128).
      The ViT decoder predicts, per ``patch``-sized cell, logits over the 1024 codes of a frozen
      MaskGIT-VQGAN (``pixel_quantize``); ``decode`` takes the softmax-weighted mix of those codes
      (a soft codebook lookup, the pixel quantizer's forward is never run) and runs the MaskGIT-VQGAN
      pixel decoder (``pixel_decoder``, from :mod:`vqswitch.adapters.models.maskgit_vqgan`).
    * **Non-legacy** (``is_legacy`` false, ``finetune_decoder`` false: the VQ-8k checkpoints). The
      ViT decoder predicts ``patch x patch x 3`` pixels per cell, un-patchifies them and applies a
      3x3 convolution. There is no pixel decoder.
    * ``is_legacy`` true with ``finetune_decoder`` false (legacy stage-1) is accepted: ``decode``
      then returns the decoder's logits over the pixel codebook, as upstream does.

Pixels are in ``[0, 1]`` on both sides (no mean/std normalisation); outputs are not clamped (upstream
clamps outside the model).

Upstream quirks kept, because the published weights' numbers depend on them (each is marked
"upstream quirk" where it is implemented):
    * legacy encoders reinterpret the ``[B, N, width]`` latent tokens as ``[B, width, N, 1]`` with a
      reshape (not a transpose) before the 1x1 ``conv_out``; non-legacy encoders transpose;
    * the quantizer casts to float32 with autocast off, L2-normalises latent and codebook when
      ``use_l2_norm`` (losses and the straight-through output then use the *normalised* latent),
      and puts ``commitment_cost`` on the commitment term ``beta * mean((sg[z_q] - z)^2)``;
    * with ``finetune_decoder`` true, ``encode`` runs the encoder and quantizer under ``no_grad``,
      switches both to eval mode and returns the three losses multiplied by 0; the constructor
      freezes ``latent_tokens``, ``encoder`` and ``quantize`` (``requires_grad`` false);
    * the legacy decoder's logit head has 1024 output channels and the stage-2 pixel decoder and
      pixel codebook are fixed (MaskGIT-VQGAN f16, 1024 x 256); here they are optional arguments
      (``legacy_decoder_output_channels``, ``pixel_decoder_config``, ``pixel_quantizer``) whose
      defaults are the upstream values, so small test models can be built (``overrides.json``).

Every path that quantizes or looks codes up goes through ``self.quantize(...)`` or
``self.quantize.get_codebook_entry(...)``, so that an adapter may replace ``model.quantize`` by any
module with the same call signature. ``encode_latent`` exposes the encoder's latent without the
stage-2 ``no_grad`` wrapper.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqswitch._checks import (check_bool, check_float_tensor, check_images, check_int, check_int_list, check_int_tensor,
                              check_path, check_real)
from vqswitch._io import read_json_object

from ..checkpoints import load_state_dict_strict, optional_file, read_state_dict, resolve_file

__all__ = ["TiTok", "TiTokQuantizer", "TiTokEncoder", "TiTokDecoder", "ResidualAttentionBlock",
           "load_pretrained", "UPSTREAM_MODEL_SIZES", "UPSTREAM_LEGACY_DECODER_OUTPUT_CHANNELS",
           "UPSTREAM_PIXEL_DECODER_CONFIG", "UPSTREAM_PIXEL_QUANTIZER"]

#: name -> (width, num_layers, num_heads) of upstream's encoder/decoder size tables.
UPSTREAM_MODEL_SIZES = {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16)}
#: Output channels of the legacy decoder's logit head (= pixel codebook size), hard-coded upstream.
UPSTREAM_LEGACY_DECODER_OUTPUT_CHANNELS = 1024
#: The stage-2 MaskGIT-VQGAN pixel decoder, hard-coded upstream (1d-tokenizer config vocabulary).
UPSTREAM_PIXEL_DECODER_CONFIG = {"channel_mult": [1, 1, 2, 2, 4], "num_resolutions": 5, "dropout": 0.0,
                                 "hidden_channels": 128, "num_channels": 3, "num_res_blocks": 2,
                                 "resolution": 256, "z_channels": 256}
#: The stage-2 pixel codebook, hard-coded upstream.
UPSTREAM_PIXEL_QUANTIZER = {"num_embeddings": 1024, "embedding_dim": 256, "commitment_cost": 0.25}

_MLP_RATIO = 4.0  # upstream's ResidualAttentionBlock width multiplier, the same for every size
_REQUIRED_VQ_KEYS = ("codebook_size", "token_size", "use_l2_norm", "commitment_cost", "vit_enc_model_size",
                     "vit_dec_model_size", "vit_enc_patch_size", "vit_dec_patch_size", "num_latent_tokens")
_OVERRIDE_KEYS = ("model_size_table", "legacy_decoder_output_channels", "pixel_decoder_config", "pixel_quantizer")


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------

def autocast_off(device: torch.device):
    """A context in which autocast is off on ``device`` (TiTok's quantizer runs in float32 whatever autocast says)."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _size_entry(name: str, value) -> tuple[int, int, int]:
    """(width, num_layers, num_heads) from a 3-sequence or an overrides.json-style mapping."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"width", "num_layers", "num_heads"}
        if unknown or len(value) != 3:
            raise ValueError(f"model size {name!r} must have exactly the keys width, num_layers, num_heads; "
                             f"got {sorted(value)}")
        value = (value["width"], value["num_layers"], value["num_heads"])
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise ValueError(f"model size {name!r} must be (width, num_layers, num_heads), got {value!r}")
    width = check_int(f"model size {name!r} width", value[0], 1)
    layers = check_int(f"model size {name!r} num_layers", value[1], 1)
    heads = check_int(f"model size {name!r} num_heads", value[2], 1)
    if width % heads:
        raise ValueError(f"model size {name!r}: width {width} is not divisible by num_heads {heads}")
    return width, layers, heads


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------

class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block on sequence-first tensors ``[L, B, width]``.

    ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, with ``nn.MultiheadAttention`` (``batch_first``
    false) and an MLP ``c_fc -> GELU -> c_proj`` of hidden width ``mlp_ratio * width``.
    """

    def __init__(self, width: int, num_heads: int, mlp_ratio: float = _MLP_RATIO):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, num_heads)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", nn.GELU()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


def _batch_token(token: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    """[L, width] -> [batch, L, width] (a broadcast view)."""
    return token.unsqueeze(0).expand(batch, -1, -1).to(dtype)


class TiTokEncoder(nn.Module):
    """ViT encoder: image ``[B, 3, S, S]`` + latent tokens ``[N, width]`` -> latent ``[B, token_size, 1, N]``.

    Sequence: ``[cls, g*g patch tokens] + positional_embedding`` followed by
    ``latent_tokens + latent_token_positional_embedding``, then ``ln_pre``, the blocks, and
    ``ln_post`` on the last ``N`` tokens only, then the 1x1 ``conv_out`` to ``token_size`` channels.
    """

    def __init__(self, *, image_size: int, patch_size: int, width: int, num_layers: int, num_heads: int,
                 num_latent_tokens: int, token_size: int, is_legacy: bool = True):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.grid_size = image_size // patch_size
        self.width, self.num_layers, self.num_heads = width, num_layers, num_heads
        self.num_latent_tokens, self.token_size, self.is_legacy = num_latent_tokens, token_size, is_legacy
        # Construction order follows upstream, so a seeded build draws the same initial values.
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=True)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size ** 2 + 1, width))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(num_latent_tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(width, num_heads) for _ in range(num_layers))
        self.ln_post = nn.LayerNorm(width)
        self.conv_out = nn.Conv2d(width, token_size, kernel_size=1, bias=True)

    def forward(self, pixel_values: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        batch = pixel_values.shape[0]
        x = self.patch_embed(pixel_values)
        x = x.reshape(batch, self.width, -1).permute(0, 2, 1)  # [B, g*g, width]
        x = torch.cat([_batch_token(self.class_embedding, batch, x.dtype), x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        latents = _batch_token(latent_tokens, batch, x.dtype) + self.latent_token_positional_embedding.to(x.dtype)
        x = self.ln_pre(torch.cat([x, latents], dim=1))
        x = x.permute(1, 0, 2)  # sequence-first for nn.MultiheadAttention
        for block in self.transformer:
            x = block(x)
        x = x.permute(1, 0, 2)
        latents = self.ln_post(x[:, 1 + self.grid_size ** 2:])  # [B, N, width]
        if self.is_legacy:
            # upstream quirk (legacy layout): reinterpret memory [B, N, width] -> [B, width, N, 1], no transpose
            latents = latents.reshape(batch, self.width, self.num_latent_tokens, 1)
        else:
            latents = latents.reshape(batch, self.num_latent_tokens, self.width, 1).permute(0, 2, 1, 3)
        latents = self.conv_out(latents)
        return latents.reshape(batch, self.token_size, 1, self.num_latent_tokens)


class _CellsToPixels(nn.Module):
    """``[B, p*p*c, h, w]`` with channels ordered (p1, p2, c) -> image ``[B, c, h*p, w*p]``."""

    def __init__(self, patch_size: int, channels: int = 3):
        super().__init__()
        self.patch_size, self.channels = patch_size, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p, c = self.patch_size, self.channels
        x = x.reshape(b, p, p, c, h, w).permute(0, 3, 4, 1, 5, 2)  # b c h p1 w p2
        return x.reshape(b, c, h * p, w * p)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, channels={self.channels}"


class TiTokDecoder(nn.Module):
    """ViT decoder: quantized latent ``[B, token_size, 1, N]`` -> logits (legacy) or pixels.

    Sequence: ``[cls, g*g mask tokens] + positional_embedding`` followed by
    ``decoder_embed(z) + latent_token_positional_embedding``, then ``ln_pre``, the blocks, and
    ``ln_post`` on tokens ``1 .. g*g``, laid out as ``[B, width, g, g]``. Legacy: ``ffn`` = 1x1 conv
    (width -> 2 width), tanh, 1x1 conv (-> ``legacy_output_channels`` logits), ``conv_out`` identity.
    Non-legacy: ``ffn`` = 1x1 conv (-> patch*patch*3) and un-patchify, ``conv_out`` = 3x3 conv.
    """

    def __init__(self, *, image_size: int, patch_size: int, width: int, num_layers: int, num_heads: int,
                 num_latent_tokens: int, token_size: int, is_legacy: bool = True,
                 legacy_output_channels: int = UPSTREAM_LEGACY_DECODER_OUTPUT_CHANNELS):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.grid_size = image_size // patch_size
        self.width, self.num_layers, self.num_heads = width, num_layers, num_heads
        self.num_latent_tokens, self.token_size, self.is_legacy = num_latent_tokens, token_size, is_legacy
        self.decoder_embed = nn.Linear(token_size, width, bias=True)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size ** 2 + 1, width))
        self.mask_token = nn.Parameter(scale * torch.randn(1, 1, width))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(num_latent_tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(width, num_heads) for _ in range(num_layers))
        self.ln_post = nn.LayerNorm(width)
        if is_legacy:
            self.ffn = nn.Sequential(
                nn.Conv2d(width, 2 * width, 1, padding=0, bias=True),
                nn.Tanh(),
                nn.Conv2d(2 * width, legacy_output_channels, 1, padding=0, bias=True),
            )
            self.conv_out = nn.Identity()
        else:
            self.ffn = nn.Sequential(
                nn.Conv2d(width, patch_size * patch_size * 3, 1, padding=0, bias=True),
                _CellsToPixels(patch_size, 3),
            )
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1, bias=True)

    def forward(self, z_quantized: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = z_quantized.shape
        if height != 1 or width != self.num_latent_tokens or channels != self.token_size:
            raise ValueError(f"z_quantized must have shape [B, {self.token_size}, 1, {self.num_latent_tokens}], "
                             f"got {list(z_quantized.shape)}")
        x = self.decoder_embed(z_quantized.reshape(batch, channels, width).permute(0, 2, 1))  # [B, N, width]
        cells = self.mask_token.repeat(batch, self.grid_size ** 2, 1).to(x.dtype)
        cells = torch.cat([_batch_token(self.class_embedding, batch, cells.dtype), cells], dim=1)
        cells = cells + self.positional_embedding.to(cells.dtype)
        x = x + self.latent_token_positional_embedding[:width]
        x = self.ln_pre(torch.cat([cells, x], dim=1))
        x = x.permute(1, 0, 2)
        for block in self.transformer:
            x = block(x)
        x = x.permute(1, 0, 2)
        x = self.ln_post(x[:, 1:1 + self.grid_size ** 2])
        x = x.permute(0, 2, 1).reshape(batch, self.width, self.grid_size, self.grid_size)
        return self.conv_out(self.ffn(x.contiguous()))


# ----------------------------------------------------------------------------------------------
# quantizer
# ----------------------------------------------------------------------------------------------

class TiTokQuantizer(nn.Module):
    """TiTok's vector quantizer (upstream ``VectorQuantizer``, ``quantize.embedding.weight`` [K, C]).

    ``forward(z [B, C, H, W]) -> (z_quantized [B, C, H, W], result_dict)`` with
    ``result_dict = {quantizer_loss, commitment_loss, codebook_loss, min_encoding_indices [B, H, W]}``
    (TiTok calls it with H = 1, W = N). Runs in float32 with autocast off. With ``use_l2_norm`` the
    latent and the codebook are L2-normalised before the nearest-code search, the losses and the
    straight-through output are computed on the normalised latent, and :meth:`get_codebook_entry`
    returns normalised codes.

    Losses: ``commitment_loss = commitment_cost * mean((sg[z_q] - z)^2)``,
    ``codebook_loss = mean((z_q - sg[z])^2)``, ``quantizer_loss`` = their sum. The straight-through
    output is ``z + sg[z_q - z]``.
    """

    def __init__(self, codebook_size: int, token_size: int, commitment_cost: float = 0.25,
                 use_l2_norm: bool = False):
        super().__init__()
        self.codebook_size = check_int("codebook_size", codebook_size, 1)
        self.token_size = check_int("token_size", token_size, 1)
        self.commitment_cost = check_real("commitment_cost", commitment_cost, 0.0)
        self.use_l2_norm = check_bool("use_l2_norm", use_l2_norm)
        self.embedding = nn.Embedding(self.codebook_size, self.token_size)
        self.embedding.weight.data.uniform_(-1.0 / self.codebook_size, 1.0 / self.codebook_size)

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, token_size={self.token_size}, "
                f"commitment_cost={self.commitment_cost}, use_l2_norm={self.use_l2_norm}")

    def _codebook(self) -> torch.Tensor:
        weight = self.embedding.weight.float()
        return F.normalize(weight, dim=-1) if self.use_l2_norm else weight

    def forward(self, z: torch.Tensor):
        check_images("z", z, channels=self.token_size)
        with autocast_off(z.device):
            z = z.float().permute(0, 2, 3, 1).contiguous()  # [B, H, W, C]
            flat = z.reshape(-1, self.token_size)
            if self.use_l2_norm:
                flat = F.normalize(flat, dim=-1)
            codebook = self._codebook()
            distances = (flat.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1)
                         - 2 * (flat @ codebook.t()))
            indices = distances.argmin(dim=1)
            z_q = self.get_codebook_entry(indices).view(z.shape)
            if self.use_l2_norm:
                # upstream quirk: losses and the straight-through output use the normalised latent
                z = F.normalize(z, dim=-1)
            # upstream quirk (loss placement): commitment_cost weights the commitment term, not the codebook term
            commitment_loss = self.commitment_cost * torch.mean((z_q.detach() - z) ** 2)
            codebook_loss = torch.mean((z_q - z.detach()) ** 2)
            z_q = z + (z_q - z).detach()
            z_q = z_q.permute(0, 3, 1, 2).contiguous()
        result = dict(quantizer_loss=commitment_loss + codebook_loss, commitment_loss=commitment_loss,
                      codebook_loss=codebook_loss,
                      min_encoding_indices=indices.view(z_q.shape[0], z_q.shape[2], z_q.shape[3]))
        return z_q, result

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``indices``: int ``[M]`` -> ``[M, C]``; or soft weights float ``[M, K]`` -> ``weights @ codebook``.

        With ``use_l2_norm`` the result is L2-normalised (for soft weights, after the mix).
        """
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
        if indices.dim() == 1:
            check_int_tensor("indices", indices)
            if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
                raise ValueError(f"indices must lie in [0, {self.codebook_size}), got values in "
                                 f"[{int(indices.min())}, {int(indices.max())}]")
            codes = F.embedding(indices, self.embedding.weight)
        elif indices.dim() == 2:
            check_float_tensor("indices", indices)
            if indices.shape[1] != self.codebook_size:
                raise ValueError(f"soft indices must have shape [M, {self.codebook_size}], got {list(indices.shape)}")
            codes = indices @ self.embedding.weight.to(indices.dtype)
        else:
            raise ValueError(f"indices must be 1-D (code ids) or 2-D (soft weights), got shape {list(indices.shape)}")
        if self.use_l2_norm:
            codes = F.normalize(codes, dim=-1)
        return codes


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------

class TiTok(nn.Module):
    """TiTok tokenizer with the upstream ``state_dict`` layout and methods.

    Args (the upstream ``model.vq_model`` config vocabulary, plus ``image_size`` =
    ``dataset.preprocessing.crop_size``):
        image_size: square input size in pixels; a multiple of both patch sizes.
        codebook_size, token_size: the TiTok codebook, ``quantize.embedding.weight`` [K, C].
        num_latent_tokens: N, the number of 1-D tokens per image.
        vit_enc_model_size, vit_dec_model_size: size names, looked up in ``model_sizes``.
        use_l2_norm, commitment_cost: the quantizer (see :class:`TiTokQuantizer`).
        vit_enc_patch_size, vit_dec_patch_size: ViT patch sizes (default 16).
        finetune_decoder: stage-2 model with ``pixel_quantize`` + ``pixel_decoder`` (upstream
            default true); needs ``is_legacy``.
        is_legacy: legacy latent reshape and logit-head decoder (upstream default true).
        model_sizes: extra or replacement size names, ``{name: (width, num_layers, num_heads)}`` or
            ``{name: {"width":, "num_layers":, "num_heads":}}``, merged over
            :data:`UPSTREAM_MODEL_SIZES` (small 512/8/8, base 768/12/12, large 1024/24/16).
        legacy_decoder_output_channels: logit channels of the legacy decoder head (upstream 1024).
        pixel_decoder_config: the stage-2 MaskGIT-VQGAN decoder in 1d-tokenizer vocabulary (keys of
            :data:`UPSTREAM_PIXEL_DECODER_CONFIG`; missing keys take the upstream values).
        pixel_quantizer: ``{"num_embeddings", "embedding_dim", "commitment_cost"}`` of the pixel
            codebook (upstream 1024 x 256, 0.25).
    Raises: TypeError / ValueError naming the argument for a value of the wrong type or range, an
        unknown size name, or inconsistent sizes.
    """

    def __init__(self, *, image_size: int, codebook_size: int, token_size: int, num_latent_tokens: int,
                 vit_enc_model_size: str, vit_dec_model_size: str, use_l2_norm: bool,
                 commitment_cost: float = 0.25, vit_enc_patch_size: int = 16, vit_dec_patch_size: int = 16,
                 finetune_decoder: bool = True, is_legacy: bool = True, model_sizes: Mapping | None = None,
                 legacy_decoder_output_channels: int | None = None, pixel_decoder_config: Mapping | None = None,
                 pixel_quantizer: Mapping | None = None):
        super().__init__()
        image_size = check_int("image_size (dataset.preprocessing.crop_size)", image_size, 1)
        codebook_size = check_int("codebook_size", codebook_size, 1)
        token_size = check_int("token_size", token_size, 1)
        num_latent_tokens = check_int("num_latent_tokens", num_latent_tokens, 1)
        enc_patch = check_int("vit_enc_patch_size", vit_enc_patch_size, 1)
        dec_patch = check_int("vit_dec_patch_size", vit_dec_patch_size, 1)
        for name, patch in (("vit_enc_patch_size", enc_patch), ("vit_dec_patch_size", dec_patch)):
            if image_size % patch:
                raise ValueError(f"image_size {image_size} must be a multiple of {name} {patch}")
        self.finetune_decoder = check_bool("finetune_decoder", finetune_decoder)
        self.is_legacy = check_bool("is_legacy", is_legacy)
        use_l2_norm = check_bool("use_l2_norm", use_l2_norm)
        if self.finetune_decoder and not self.is_legacy:
            raise ValueError("finetune_decoder=True needs is_legacy=True: the stage-2 pixel decoder reads the "
                             "legacy decoder's logits over the pixel codebook")

        if model_sizes is not None and not isinstance(model_sizes, Mapping):
            raise TypeError(f"model_sizes must be a mapping name -> (width, num_layers, num_heads), "
                            f"got {type(model_sizes).__name__}")
        merged = {**UPSTREAM_MODEL_SIZES, **(model_sizes or {})}
        table = {name: _size_entry(name, entry) for name, entry in merged.items()}
        sizes = {}
        for arg, name in (("vit_enc_model_size", vit_enc_model_size), ("vit_dec_model_size", vit_dec_model_size)):
            if not isinstance(name, str):
                raise TypeError(f"{arg} must be a size name (str), got {type(name).__name__} {name!r}")
            if name not in table:
                raise ValueError(f"unknown {arg} {name!r}: known sizes are {sorted(table)} "
                                 f"(add one with model_sizes= or overrides.json's model_size_table)")
            sizes[arg] = table[name]

        if legacy_decoder_output_channels is None:
            legacy_decoder_output_channels = UPSTREAM_LEGACY_DECODER_OUTPUT_CHANNELS
        legacy_out = check_int("legacy_decoder_output_channels", legacy_decoder_output_channels, 1)
        pixel_decoder_config = self._pixel_decoder_config(pixel_decoder_config)
        pixel_quantizer = self._pixel_quantizer(pixel_quantizer)
        if self.finetune_decoder:
            if legacy_out != pixel_quantizer["num_embeddings"]:
                raise ValueError(f"legacy_decoder_output_channels {legacy_out} must equal the pixel codebook size "
                                 f"pixel_quantizer['num_embeddings'] {pixel_quantizer['num_embeddings']}")
            if pixel_quantizer["embedding_dim"] != pixel_decoder_config["z_channels"]:
                raise ValueError(f"pixel_quantizer['embedding_dim'] {pixel_quantizer['embedding_dim']} must equal "
                                 f"pixel_decoder_config['z_channels'] {pixel_decoder_config['z_channels']}")

        self.image_size, self.codebook_size, self.token_size = image_size, codebook_size, token_size
        self.num_latent_tokens = num_latent_tokens
        self._settings = dict(codebook_size=codebook_size, token_size=token_size, use_l2_norm=use_l2_norm,
                              commitment_cost=commitment_cost, vit_enc_model_size=vit_enc_model_size,
                              vit_dec_model_size=vit_dec_model_size, vit_enc_patch_size=enc_patch,
                              vit_dec_patch_size=dec_patch, num_latent_tokens=num_latent_tokens,
                              finetune_decoder=self.finetune_decoder, is_legacy=self.is_legacy)
        self._sizes_used = {name: table[name] for name in (vit_enc_model_size, vit_dec_model_size)}
        self._legacy_out = legacy_out
        self._pixel_decoder_cfg, self._pixel_quantizer_cfg = pixel_decoder_config, pixel_quantizer
        self._extra_config: dict = {}

        enc_width, enc_layers, enc_heads = sizes["vit_enc_model_size"]
        dec_width, dec_layers, dec_heads = sizes["vit_dec_model_size"]
        # Construction order follows upstream (encoder, decoder, latent_tokens, init, quantize, pixel parts).
        self.encoder = TiTokEncoder(image_size=image_size, patch_size=enc_patch, width=enc_width, num_layers=enc_layers,
                                    num_heads=enc_heads, num_latent_tokens=num_latent_tokens, token_size=token_size,
                                    is_legacy=self.is_legacy)
        self.decoder = TiTokDecoder(image_size=image_size, patch_size=dec_patch, width=dec_width, num_layers=dec_layers,
                                    num_heads=dec_heads, num_latent_tokens=num_latent_tokens, token_size=token_size,
                                    is_legacy=self.is_legacy, legacy_output_channels=legacy_out)
        self.latent_tokens = nn.Parameter(enc_width ** -0.5 * torch.randn(num_latent_tokens, enc_width))
        self.apply(self._init_weights)
        self.quantize = TiTokQuantizer(codebook_size, token_size, commitment_cost, use_l2_norm)
        if self.finetune_decoder:
            # upstream: stage 2 freezes the latent tokens, the encoder and the quantizer
            self.latent_tokens.requires_grad_(False)
            self.encoder.eval().requires_grad_(False)
            self.quantize.eval().requires_grad_(False)
            from .maskgit_vqgan import MaskGitDecoder, MaskGitQuantizer

            self.pixel_quantize = MaskGitQuantizer(**pixel_quantizer)
            pd = pixel_decoder_config
            self.pixel_decoder = MaskGitDecoder(hidden_channels=pd["hidden_channels"],
                                                channel_mult=list(pd["channel_mult"]),
                                                num_res_blocks=pd["num_res_blocks"], z_channels=pd["z_channels"],
                                                num_channels=pd["num_channels"], dropout=pd["dropout"])

    # -- configuration ------------------------------------------------------------------------

    @staticmethod
    def _pixel_decoder_config(value) -> dict:
        if value is None:
            return copy.deepcopy(UPSTREAM_PIXEL_DECODER_CONFIG)
        if not isinstance(value, Mapping):
            raise TypeError(f"pixel_decoder_config must be a mapping, got {type(value).__name__}")
        unknown = set(value) - set(UPSTREAM_PIXEL_DECODER_CONFIG)
        if unknown:
            raise ValueError(f"pixel_decoder_config has unknown key(s) {sorted(unknown)}; "
                             f"known: {sorted(UPSTREAM_PIXEL_DECODER_CONFIG)}")
        cfg = {**copy.deepcopy(UPSTREAM_PIXEL_DECODER_CONFIG), **copy.deepcopy(dict(value))}
        cfg["channel_mult"] = check_int_list("pixel_decoder_config['channel_mult']", cfg["channel_mult"], 1)
        if "num_resolutions" not in value:
            cfg["num_resolutions"] = len(cfg["channel_mult"])
        for key in ("num_resolutions", "hidden_channels", "num_channels", "num_res_blocks", "resolution", "z_channels"):
            cfg[key] = check_int(f"pixel_decoder_config[{key!r}]", cfg[key], 1)
        if cfg["num_resolutions"] != len(cfg["channel_mult"]):
            raise ValueError(f"pixel_decoder_config['num_resolutions'] {cfg['num_resolutions']} must equal "
                             f"len(channel_mult) {len(cfg['channel_mult'])}")
        cfg["dropout"] = check_real("pixel_decoder_config['dropout']", cfg["dropout"], 0.0, 1.0, max_open=True)
        return cfg

    @staticmethod
    def _pixel_quantizer(value) -> dict:
        if value is None:
            return dict(UPSTREAM_PIXEL_QUANTIZER)
        if not isinstance(value, Mapping):
            raise TypeError(f"pixel_quantizer must be a mapping, got {type(value).__name__}")
        unknown = set(value) - set(UPSTREAM_PIXEL_QUANTIZER)
        if unknown:
            raise ValueError(f"pixel_quantizer has unknown key(s) {sorted(unknown)}; "
                             f"known: {sorted(UPSTREAM_PIXEL_QUANTIZER)}")
        cfg = {**UPSTREAM_PIXEL_QUANTIZER, **dict(value)}
        for key in ("num_embeddings", "embedding_dim"):
            cfg[key] = check_int(f"pixel_quantizer[{key!r}]", cfg[key], 1)
        cfg["commitment_cost"] = check_real("pixel_quantizer['commitment_cost']", cfg["commitment_cost"], 0.0)
        return cfg

    @classmethod
    def from_config(cls, config: Mapping, overrides: Mapping | None = None) -> "TiTok":
        """Build from an upstream ``config.json`` dict and, optionally, an ``overrides.json`` dict.

        ``config`` has upstream's nested layout: ``config["model"]["vq_model"]`` with the keys
        ``codebook_size``, ``token_size``, ``use_l2_norm``, ``commitment_cost``,
        ``vit_enc_model_size``, ``vit_dec_model_size``, ``vit_enc_patch_size``,
        ``vit_dec_patch_size``, ``num_latent_tokens`` (plus optional ``finetune_decoder`` and
        ``is_legacy``, both default true as upstream, and ``quantize_mode``, which must be
        ``"vq"``) and ``config["dataset"]["preprocessing"]["crop_size"]``. Other keys and sections are kept
        verbatim in :attr:`config`. ``overrides`` may hold ``model_size_table``
        (``{name: {width, num_layers, num_heads}}``), ``legacy_decoder_output_channels``,
        ``pixel_decoder_config`` and ``pixel_quantizer`` (``None`` = upstream value); keys starting
        with ``_`` are comments.
        Raises: TypeError / ValueError naming the offending key.
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping (upstream config.json layout), got {type(config).__name__}")
        try:
            config = json.loads(json.dumps(config))
        except (TypeError, ValueError) as err:
            raise ValueError(f"config must be JSON-serialisable: {err}") from err
        model = config.get("model")
        vq = model.get("vq_model") if isinstance(model, Mapping) else None
        if not isinstance(vq, Mapping):
            raise ValueError("config has no mapping config['model']['vq_model'] (upstream config.json layout expected)")
        dataset = config.get("dataset")
        pre = dataset.get("preprocessing") if isinstance(dataset, Mapping) else None
        if not isinstance(pre, Mapping) or "crop_size" not in pre:
            raise ValueError("config has no config['dataset']['preprocessing']['crop_size'] (the image size)")
        missing = [key for key in _REQUIRED_VQ_KEYS if key not in vq]
        if missing:
            raise ValueError(f"config['model']['vq_model'] lacks key(s) {missing}")
        mode = vq.get("quantize_mode", "vq")
        if mode != "vq":
            raise ValueError(f"config['model']['vq_model']['quantize_mode'] {mode!r} is not supported (only 'vq')")
        kwargs = {key: vq[key] for key in _REQUIRED_VQ_KEYS}
        kwargs.update(finetune_decoder=vq.get("finetune_decoder", True), is_legacy=vq.get("is_legacy", True),
                      image_size=pre["crop_size"])
        kwargs.update(cls._parse_overrides(overrides))
        model_ = cls(**kwargs)
        model_._extra_config = config
        return model_

    @staticmethod
    def _parse_overrides(overrides) -> dict:
        if overrides is None:
            return {}
        if not isinstance(overrides, Mapping):
            raise TypeError(f"overrides must be a mapping (overrides.json layout), got {type(overrides).__name__}")
        unknown = [k for k in overrides if not str(k).startswith("_") and k not in _OVERRIDE_KEYS]
        if unknown:
            raise ValueError(f"overrides has unknown key(s) {sorted(unknown)}; known: {list(_OVERRIDE_KEYS)}")
        return dict(model_sizes=overrides.get("model_size_table"),
                    legacy_decoder_output_channels=overrides.get("legacy_decoder_output_channels"),
                    pixel_decoder_config=overrides.get("pixel_decoder_config"),
                    pixel_quantizer=overrides.get("pixel_quantizer"))

    @property
    def config(self) -> dict:
        """The upstream ``config.json`` layout (JSON-serialisable): ``model.vq_model`` and
        ``dataset.preprocessing.crop_size``, plus any other keys the loaded config had."""
        config = copy.deepcopy(self._extra_config)
        model = config.setdefault("model", {})
        model.setdefault("vq_model", {}).update(self._settings)
        config.setdefault("dataset", {}).setdefault("preprocessing", {})["crop_size"] = self.image_size
        return config

    @property
    def overrides(self) -> dict:
        """The ``overrides.json`` layout: values that differ from upstream's hard-coded ones, else None.

        ``TiTok.from_config(m.config, m.overrides)`` rebuilds the same architecture.
        """
        table = {name: dict(width=w, num_layers=n, num_heads=h) for name, (w, n, h) in self._sizes_used.items()
                 if UPSTREAM_MODEL_SIZES.get(name) != (w, n, h)}
        legacy = self._legacy_out if self._legacy_out != UPSTREAM_LEGACY_DECODER_OUTPUT_CHANNELS else None
        pixel_dec = copy.deepcopy(self._pixel_decoder_cfg)
        pixel_dec = None if pixel_dec == UPSTREAM_PIXEL_DECODER_CONFIG else pixel_dec
        pixel_q = None if self._pixel_quantizer_cfg == UPSTREAM_PIXEL_QUANTIZER else dict(self._pixel_quantizer_cfg)
        return {"model_size_table": table or None, "legacy_decoder_output_channels": legacy,
                "pixel_decoder_config": pixel_dec, "pixel_quantizer": pixel_q}

    def save_pretrained(self, folder) -> Path:
        """Write ``config.json`` (indent 4, as upstream), ``model.safetensors`` and, when any value
        differs from upstream's hard-coded ones, ``overrides.json``. :func:`load_pretrained` reads it back."""
        import safetensors.torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config, indent=4))
        overrides = self.overrides
        if any(v is not None for v in overrides.values()):
            (folder / "overrides.json").write_text(json.dumps(overrides, indent=4))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        safetensors.torch.save_file(state, str(folder / "model.safetensors"))
        return folder

    def _init_weights(self, module: nn.Module) -> None:
        """Upstream's initialisation (applied before the quantizer and pixel parts exist)."""
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # -- the upstream API ------------------------------------------------------------------------

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, S, S]`` in [0, 1] -> encoder latent ``[B, token_size, 1, N]`` (before quantization).

        No ``no_grad`` and no mode switch, whatever ``finetune_decoder`` says.
        """
        check_images("x", x, channels=3, size=(self.image_size, self.image_size))
        return self.encoder(pixel_values=x, latent_tokens=self.latent_tokens)

    def encode(self, x: torch.Tensor):
        """Images -> ``(z_quantized [B, token_size, 1, N], result_dict)`` from ``self.quantize``.

        ``result_dict`` has ``quantizer_loss``, ``commitment_loss``, ``codebook_loss`` and
        ``min_encoding_indices`` [B, 1, N]. With ``finetune_decoder`` true (stage-2 checkpoints) the
        encoder and quantizer run under ``torch.no_grad()``, are switched to eval mode, and the three
        losses come back multiplied by 0, exactly as upstream; use :meth:`encode_latent` and call
        ``self.quantize`` yourself to get gradients or the real losses.
        """
        if self.finetune_decoder:
            with torch.no_grad():
                # upstream quirk: stage-2 encode forces the frozen encoder and quantizer into eval mode
                self.encoder.eval()
                self.quantize.eval()
                z_quantized, result = self.quantize(self.encode_latent(x))
                result = dict(result)
                for key in ("quantizer_loss", "commitment_loss", "codebook_loss"):
                    if key in result:
                        result[key] = result[key] * 0  # upstream quirk: stage-2 reports zeroed losses
            return z_quantized, result
        return self.quantize(self.encode_latent(x))

    def decode(self, z_quantized: torch.Tensor) -> torch.Tensor:
        """Quantized latent ``[B, token_size, 1, N]`` -> images ``[B, 3, S, S]`` (not clamped).

        Stage-2: decoder logits -> softmax over the pixel codebook -> soft mix of
        ``pixel_quantize``'s codes -> ``pixel_decoder``. Legacy stage-1 returns the logits.
        """
        check_float_tensor("z_quantized", z_quantized)
        expected = (self.token_size, 1, self.num_latent_tokens)
        if z_quantized.dim() != 4 or tuple(z_quantized.shape[1:]) != expected:
            raise ValueError(f"z_quantized must have shape [B, {self.token_size}, 1, {self.num_latent_tokens}], "
                             f"got {list(z_quantized.shape)}")
        decoded = self.decoder(z_quantized)
        if self.finetune_decoder:
            mixed = torch.einsum("nchw,cd->ndhw", decoded.softmax(1), self.pixel_quantize.embedding.weight)
            decoded = self.pixel_decoder(mixed)
        return decoded

    def lookup_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Code ids ``[B, 1, N]`` (or ``[B, N]``) -> decoder input ``[B, token_size, 1, N]`` via
        ``self.quantize.get_codebook_entry``."""
        check_int_tensor("tokens", tokens)
        if tokens.dim() == 3 and tokens.shape[1] == 1:
            tokens = tokens[:, 0]
        if tokens.dim() != 2 or tokens.shape[1] != self.num_latent_tokens:
            raise ValueError(f"tokens must have shape [B, 1, {self.num_latent_tokens}] or "
                             f"[B, {self.num_latent_tokens}], "
                             f"got {list(tokens.shape)}")
        batch, length = tokens.shape
        codes = self.quantize.get_codebook_entry(tokens.reshape(-1)).reshape(batch, 1, length, -1)
        return codes.permute(0, 3, 1, 2).contiguous()

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Code ids ``[B, 1, N]`` (``min_encoding_indices``) or ``[B, N]`` -> images (not clamped)."""
        return self.decode(self.lookup_tokens(tokens))

    def forward(self, x: torch.Tensor):
        """Images -> ``(reconstruction, result_dict)`` = ``decode(encode(x)[0])``, ``encode(x)[1]``."""
        z_quantized, result = self.encode(x)
        return self.decode(z_quantized), result


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------

def _read_json(what: str, source) -> dict | None:
    """``source`` itself (None or a mapping), or the JSON object in the file it names."""
    if source is None or isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{what} must be a mapping or a path to a JSON file, got {type(source).__name__}")
    return read_json_object(source, f"{what} file")


def load_pretrained(repo_id_or_path, *, revision: str | None = None, cache_dir=None, overrides=None,
                    config=None) -> TiTok:
    """Load a TiTok checkpoint, in eval mode.

    Args:
        repo_id_or_path: a Hub repo id (e.g. ``"yucornetto/tokenizer_titok_s128_imagenet"``) or a
            local folder in the Hub format the public checkpoints use (``config.json`` in upstream's
            vocabulary + ``model.safetensors``, or ``pytorch_model.bin`` when there is no
            safetensors file), or a single weights file (``.safetensors`` or a raw ``.bin``/``.pt``
            state dict). For a single file the config comes from ``config=`` or from a
            ``config.json`` beside it; it cannot be inferred from the weights alone (``use_l2_norm``
            and ``commitment_cost`` leave no trace in them), so a ValueError says so otherwise.
        revision, cache_dir: for Hub repo ids (``HF_HUB_OFFLINE`` and the local cache are honoured).
        overrides: an ``overrides.json`` dict or path; by default ``overrides.json`` is read when it
            sits beside the config (folder or repository).
        config: an upstream ``config.json`` dict or path, replacing the one found with the weights.
    Raises: ValueError naming missing / unexpected / mis-shaped keys when the weights do not fit the
        config; TypeError / ValueError for a bad config; FileNotFoundError / huggingface_hub errors
        for files that cannot be found.
    """
    path = check_path("repo_id_or_path", repo_id_or_path)
    hub = dict(revision=revision, cache_dir=cache_dir)
    if path.is_file():
        weights = path
        if config is None:
            beside = path.parent / "config.json"
            if not beside.is_file():
                raise ValueError(f"{str(path)!r} is a bare weights file: pass config= (upstream config.json "
                                 f"dict or path); the architecture cannot be fully inferred from the weights")
            config = beside
        if overrides is None and (path.parent / "overrides.json").is_file():
            overrides = path.parent / "overrides.json"
    else:
        if config is None:
            config = resolve_file(repo_id_or_path, "config.json", **hub)
        weights = optional_file(repo_id_or_path, "model.safetensors", **hub)
        if weights is None:
            weights = optional_file(repo_id_or_path, "pytorch_model.bin", **hub)
        if weights is None:
            raise FileNotFoundError(f"neither model.safetensors nor pytorch_model.bin found in "
                                    f"{str(repo_id_or_path)!r}")
        if overrides is None:
            overrides = optional_file(repo_id_or_path, "overrides.json", **hub)
    config = _read_json("config", config)
    overrides = _read_json("overrides", overrides)
    model = TiTok.from_config(config, overrides)
    load_state_dict_strict(model, read_state_dict(weights), what=f"checkpoint {str(weights)!r}")
    return model.eval()

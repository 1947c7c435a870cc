"""TiTok (bytedance's 1-D tokenizer): the adapter and its shim.

Works on vqswitch's own :class:`~vqswitch.adapters.models.titok.TiTok` and, duck typed, on
upstream instances (a model with ``latent_tokens``, ``encoder``, ``decoder`` and a ``quantize`` with
an ``nn.Embedding`` codebook). Pixels are in [0, 1]; T = ``num_latent_tokens`` is fixed by the
architecture. Facts the shim keeps from TiTok's ``VectorQuantizer``:

* ``forward(z [B, D, 1, N]) -> (z_q [B, D, 1, N], {quantizer_loss, commitment_loss, codebook_loss,
  min_encoding_indices [B, 1, N]})``, computed in float32;
* with ``use_l2_norm`` (the ImageNet checkpoints) latents and codes are l2-normalised: the swapped
  quantizer uses the "cosine" metric, and the losses and straight-through output use the
  normalised latent;
* ``commitment_loss = beta * mean((sg[z_q] - z)^2)``, ``codebook_loss = mean((z_q - sg[z])^2)``,
  ``quantizer_loss`` their sum plus, when M > 1, the router losses; output ``z + sg[z_q - z]``;
* ``get_codebook_entry(ids [B*N])`` -> codes [B*N, D] (normalised with ``use_l2_norm``), and soft
  weights [B*N, M*K] -> their mix; ids are flat ``g*K + k`` (see :mod:`vqswitch.adapters.contract`).

Training a swapped quantizer on a stage-2 checkpoint
    Upstream's stage-2 ``encode`` runs the encoder and quantizer under ``torch.no_grad()``, forces
    them into eval mode and zeroes the losses, so calling ``model.encode`` never trains the
    quantizer. Train it on the encoder's latents instead: ``z = model.encode_latent(images)`` (or
    ``vqswitch.adapters.encode_latents``; detach it, the encoder stays frozen), then
    ``z_q, result = model.quantize(z)`` and back-propagate ``result["quantizer_loss"]``: the shim's
    codebooks and router are new parameters with ``requires_grad=True``, outside upstream's freeze.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .contract import Adapter, QuantizerShim, register
from .models.titok import autocast_off  # TiTok's quantizer runs in float32 whatever autocast says (upstream fact)

__all__ = ["TiTokAdapter", "TiTokQuantizerShim"]


class TiTokQuantizerShim(QuantizerShim):
    """Stands in for TiTok's ``VectorQuantizer`` (same call signature and return structure)."""

    adapter_name = "titok"
    SETTINGS = {"commitment_cost": 0.25, "use_l2_norm": False}  # upstream's defaults
    COMMITMENT = "commitment_cost"

    def __init__(self, quantizer, **settings):
        super().__init__(quantizer, **settings)
        self.token_size = quantizer.dim
        self.codebook_size = self.vocab_size  # upstream's attribute: the number of distinct indices

    def forward(self, z: torch.Tensor):
        """z: (B, D, H, W) float (TiTok: H = 1, W = N) -> (z_q (B, D, H, W) float32, result_dict).

        Raises TypeError/ValueError for a non-4-D or non-float z, a wrong D, or H*W != T.
        """
        self.check_grid(z, layout="[B, D, 1, N]")
        B, D, H, W = z.shape
        with autocast_off(z.device):
            z = z.float().permute(0, 2, 3, 1).contiguous()  # [B, H, W, D]
            out, q = self.quantize_tokens(z.view(B, H * W, D))
            q = q.view(z.shape)
            if self.use_l2_norm:
                z = F.normalize(z, dim=-1)
            commitment_loss = self.commitment_cost * torch.mean((q.detach() - z) ** 2)
            codebook_loss = torch.mean((q - z.detach()) ** 2)
            quantizer_loss = commitment_loss + codebook_loss
            quantizer_loss = self.add_router_loss(quantizer_loss, out)
            z_q = (z + (q - z).detach()).permute(0, 3, 1, 2).contiguous()
        ids = self.flat_ids(out.groups, out.indices).view(B, H, W)
        return z_q, dict(quantizer_loss=quantizer_loss, commitment_loss=commitment_loss, codebook_loss=codebook_loss,
                         min_encoding_indices=ids)

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """Flat ids [B*N] (row-major per image) -> codes [B*N, D]; or soft weights float [B*N, M*K] -> their
        mix of each token's codes. Normalised with ``use_l2_norm`` (for soft weights, after the mix).

        Raises TypeError/ValueError for ids that are out of range or not a multiple of T, or weights
        of the wrong width.
        """
        if isinstance(indices, torch.Tensor) and indices.is_floating_point():
            return self._soft_entry(indices)
        if not isinstance(indices, torch.Tensor) or indices.dim() != 1:
            got = getattr(indices, 'shape', type(indices).__name__)
            raise ValueError(f"indices must be 1-D flat ids [B*N], got {got}")
        return self.lookup_ids(indices, what="indices")

    def _soft_entry(self, weights: torch.Tensor) -> torch.Tensor:
        q = self.quantizer
        M, K, T = q.num_groups, q.codebook_size, q.num_tokens
        if weights.dim() != 2 or weights.shape[1] != M * K or weights.shape[0] % T:
            raise ValueError(f"soft weights must have shape [B*N, M*K={M * K}] with N = T = {T}, "
                             f"got {list(weights.shape)}")
        w = weights.view(-1, T, M, K)
        books = q.codebooks.to(weights.dtype)  # (M, T', K, D)
        books = books.expand(M, T, K, q.dim) if not q.token_specific else books
        codes = torch.einsum("btmk,mtkd->btd", w, books).reshape(-1, q.dim)
        return F.normalize(codes, dim=-1) if self.use_l2_norm else codes


class TiTokAdapter(Adapter):
    """TiTok: ViT encoder with learned latent tokens -> quantize -> ViT decoder (-> pixel decoder)."""

    name = "titok"
    pixel_range = (0.0, 1.0)
    shim_class = TiTokQuantizerShim
    fixed_tokens = True
    upstream_quantizer, upstream_attrs = "TiTok's VectorQuantizer", ("use_l2_norm",)

    def matches(self, model) -> bool:
        return (isinstance(getattr(model, "latent_tokens", None), torch.Tensor)
                and all(isinstance(getattr(model, m, None), nn.Module) for m in ("encoder", "decoder", "quantize")))

    def metric(self, model) -> str:
        return "cosine" if bool(getattr(model.quantize, "use_l2_norm", False)) else "l2"

    def image_size(self, model) -> tuple[int, int]:
        size = getattr(model, "image_size", None) or getattr(model.encoder, "image_size", None)
        if size is None:
            raise ValueError("cannot tell this TiTok model's image size (no `image_size` on it or its encoder)")
        return int(size), int(size)

    def image_channels(self, model) -> int:
        return 3

    def num_tokens(self, model, image_size=None) -> int:
        if image_size is not None and tuple(image_size) != self.image_size(model):
            raise ValueError(f"TiTok works at its configured image size {self.image_size(model)}, got image_size="
                             f"{tuple(image_size)}")
        return int(model.latent_tokens.shape[0])

    def encode_latents(self, model, images):
        if hasattr(model, "encode_latent"):
            latent = model.encode_latent(images)
        else:  # upstream TiTok: the encoder takes the learned latent tokens
            latent = model.encoder(pixel_values=images, latent_tokens=model.latent_tokens)
        B, D = latent.shape[:2]
        return latent.reshape(B, D, -1).transpose(1, 2)  # [B, D, 1, N] -> (B, N, D)

    def decode_tokens(self, model, tokens):
        return model.decode(tokens.transpose(1, 2).unsqueeze(2).contiguous())  # (B, N, D) -> [B, D, 1, N]

    def decoder_modules(self, model) -> list[nn.Module]:
        # the ViT decoder and, for legacy stage-2 models, the pixel decoder (the pixel codebook stays fixed)
        pixel_decoder = getattr(model, "pixel_decoder", None)
        return [model.decoder] + ([pixel_decoder] if isinstance(pixel_decoder, nn.Module) else [])

    def base_config(self, model) -> dict:
        config = getattr(model, "config", None)
        if not isinstance(config, dict):
            raise ValueError(f"this {type(model).__name__} has no dict `config`: save_swapped needs one to rebuild it "
                             "(load the weights into vqswitch.adapters.models.titok.TiTok)")
        return {"config": config, "overrides": getattr(model, "overrides", None)}

    def build_base(self, config: dict):
        from .models.titok import TiTok

        return TiTok.from_config(config["config"], config.get("overrides"))

    def load_pretrained(self, repo_id_or_path, **kwargs):
        """:func:`vqswitch.adapters.models.titok.load_pretrained` (a Hub repo id such as
        ``yucornetto/tokenizer_titok_s128_imagenet`` or a folder: config.json + model.safetensors)."""
        from .models.titok import load_pretrained

        return load_pretrained(repo_id_or_path, **kwargs)


register(TiTokAdapter())

"""MaskGIT-VQGAN: the adapter and its shim.

Works on vqswitch's own :class:`~vqswitch.adapters.models.maskgit_vqgan.MaskGitVQGAN` and, duck
typed, on upstream instances (open-muse ``MaskGitVQGAN``, 1d-tokenizer ``PretrainedTokenizer``):
a model with ``encoder``, ``decoder`` and a ``quantize`` that has an ``nn.Embedding`` codebook and
``get_code`` / ``get_codebook_entry``. Pixels are in [0, 1]. Facts the shim keeps:

* ``quantize(hidden_states (B, C, h, w), return_loss=False) -> (z_q, indices (B, h*w), loss or None)``,
  tokens read row-major over (h, w); z_q contiguous (B, C, h, w);
* exact codebook rows without ``return_loss``; with it the straight-through ``h + sg[z_q - h]``
  and ``loss = mean((sg[z_q] - h)^2) + beta * mean((z_q - sg[h])^2)`` (beta on the codebook term,
  an upstream quirk), plus the router losses when M > 1;
* ``get_code(hidden_states) -> (B, h*w)`` and ``get_codebook_entry(indices (B, N)) -> (B, C, s, s)``
  (a channels-last view, as upstream; square grids);
* indices are flat ids ``g*K + k`` (see :mod:`vqswitch.adapters.contract`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .contract import GridAdapter, QuantizerShim, register

__all__ = ["MaskGitAdapter", "MaskGitQuantizerShim"]


class MaskGitQuantizerShim(QuantizerShim):
    """Stands in for MaskGIT-VQGAN's ``VectorQuantizer`` (same call signatures and return structures)."""

    adapter_name = "maskgit-vqgan"
    SETTINGS = {"commitment_cost": 0.25}  # upstream's default
    COMMITMENT = "commitment_cost"

    def __init__(self, quantizer, **settings):
        super().__init__(quantizer, **settings)
        self.embedding_dim = quantizer.dim
        self.num_embeddings = self.vocab_size  # upstream's attribute: the number of distinct indices

    def _tokens(self, hidden_states) -> torch.Tensor:
        self.check_grid(hidden_states, name="hidden_states", layout="(B, C, h, w)", channel="C")
        return hidden_states.permute(0, 2, 3, 1).contiguous()

    def forward(self, hidden_states: torch.Tensor, return_loss: bool = False):
        """hidden_states: (B, C, h, w) float -> (z_q (B, C, h, w), indices (B, h*w) int64 flat ids, loss or None).

        Raises TypeError/ValueError for a non-4-D or non-float input, a wrong C, or a grid of
        another token count than a token-specific quantizer's T (token-shared: any grid size).
        """
        h = self._tokens(hidden_states)
        B, hh, ww, C = h.shape
        out, q = self.quantize_tokens(h.view(B, hh * ww, C))
        q = q.view(h.shape)
        loss = None
        if return_loss:
            loss = torch.mean((q.detach() - h) ** 2) + self.commitment_cost * torch.mean((q - h.detach()) ** 2)
            loss = self.add_router_loss(loss, out)
            q = h + (q - h).detach()
        return q.permute(0, 3, 1, 2).contiguous(), self.flat_ids(out.groups, out.indices), loss

    @torch.no_grad()
    def get_code(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states: (B, C, h, w) float -> flat ids (B, h*w) int64, with the inference selection
        (no usage counting, whatever the mode)."""
        h = self._tokens(hidden_states)
        codes = self.quantizer.encode(h.view(h.shape[0], -1, h.shape[-1]))
        return self.flat_ids(codes.groups, codes.indices)

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (B, N) flat ids, N = s*s -> codes (B, C, s, s), a channels-last view as upstream.

        Raises TypeError/ValueError for non-integer, non-(B, N) or out-of-range ids or a non-square N.
        """
        if not isinstance(indices, torch.Tensor) or indices.dim() != 2:
            raise ValueError(f"indices must have shape (B, N), got {getattr(indices, 'shape', type(indices).__name__)}")
        B, N = indices.shape
        side = math.isqrt(N)
        if side * side != N:
            raise ValueError(f"indices must hold a square grid of tokens per image (N = s*s), got N = {N}")
        codes = self.lookup_ids(indices, what="indices")  # (B, N, C)
        return codes.reshape(B, side, side, -1).permute(0, 3, 1, 2)


def _config(model) -> dict:
    cfg = getattr(model, "config", None)
    return dict(cfg) if isinstance(cfg, dict) or hasattr(cfg, "items") else {}


class MaskGitAdapter(GridAdapter):
    """MaskGIT-VQGAN: encoder -> quantize -> decoder, no quant_conv, no latent tokens."""

    name = "maskgit-vqgan"
    pixel_range = (0.0, 1.0)
    shim_class = MaskGitQuantizerShim
    fixed_tokens = False
    upstream_quantizer = "MaskGIT-VQGAN's VectorQuantizer"
    upstream_attrs = ("get_code", "get_codebook_entry")

    def matches(self, model) -> bool:
        if not all(isinstance(getattr(model, m, None), nn.Module) for m in ("encoder", "decoder", "quantize")):
            return False
        if any(hasattr(model, m) for m in ("quant_conv", "latent_tokens", "pixel_quantize")):
            return False  # diffusers / IBQ (quant_conv) and TiTok (latent tokens) share the module names
        if isinstance(model.quantize, MaskGitQuantizerShim):
            return True
        return hasattr(model.quantize, "get_code") and hasattr(model.quantize, "get_codebook_entry")

    def metric(self, model) -> str:
        return "l2"

    def down_factor(self, model) -> int:
        if hasattr(model, "downsample_factor"):
            return int(model.downsample_factor)
        mult = _config(model).get("channel_mult")
        return 2 ** (len(mult) - 1) if mult else 16  # the published model is f16

    def image_size(self, model) -> tuple[int, int]:
        r = int(_config(model).get("resolution", 256))
        return r, r

    def image_channels(self, model) -> int:
        return int(_config(model).get("num_channels", 3))

    def encode_latents(self, model, images):
        return self.grid_to_tokens(model.encoder(images))  # there is no quant_conv

    def decode_tokens(self, model, tokens, image_size=None):
        return model.decoder(self.tokens_to_grid(model, tokens, image_size))

    def decoder_modules(self, model) -> list[nn.Module]:
        return [model.decoder]

    def base_config(self, model) -> dict:
        cfg = {k: v for k, v in _config(model).items() if not str(k).startswith("_")}
        if not cfg:
            raise ValueError(f"this {type(model).__name__} has no `config`: save_swapped needs one to rebuild it "
                             "(load the weights into vqswitch.adapters.models.maskgit_vqgan.MaskGitVQGAN)")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}

    def build_base(self, config: dict):
        from .models.maskgit_vqgan import MaskGitVQGAN

        return MaskGitVQGAN.from_config(config)

    def load_pretrained(self, repo_id_or_path=None, **kwargs):
        """:func:`vqswitch.adapters.models.maskgit_vqgan.load_pretrained` (a ``.bin`` state dict by file,
        folder or Hub repo id + ``filename``; default the public ``fun-research/TiTok`` file)."""
        from .models.maskgit_vqgan import DEFAULT_REPO_ID, load_pretrained

        return load_pretrained(DEFAULT_REPO_ID if repo_id_or_path is None else repo_id_or_path, **kwargs)


register(MaskGitAdapter())

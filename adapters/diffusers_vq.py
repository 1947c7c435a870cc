"""diffusers ``VQModel`` (and the CompVis / MoVQ VQ-VAEs it loads): the adapter and its shim.

diffusers quantizes inside ``VQModel.decode`` (``encode`` returns the unquantized ``quant_conv``
output), so the shim is what ``decode`` calls: ``quantize(h) -> (z_q, loss, (None, None, indices))``.
Pixels are in [-1, 1]. Facts the shim keeps from diffusers' ``VectorQuantizer``:

* tokens are the latent grid (B, C, h, w) read row-major: ``z.permute(0, 2, 3, 1)`` -> (B, h*w, C);
* nearest code by l2 distance; indices flat int64 ``[B*h*w]``, or ``[B, h, w]`` with
  ``sane_index_shape`` (here flat ids ``g*K + k``, see :mod:`vqswitch.adapters.contract`);
* loss with ``legacy=True`` (diffusers' default, which it keeps for backward compatibility):
  ``mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2)``; with ``legacy=False`` beta moves to
  the first term. The router losses are added when M > 1;
* output ``z + sg[z_q - z]`` (straight-through, in upstream's arithmetic), channels first;
* ``get_codebook_entry(indices, shape)`` with ``shape = (B, h, w, C)`` returns (B, C, h, w), with
  ``shape=None`` the rows; the ``lookup_from_codebook`` decode path and spatial-norm (MoVQ)
  decoders, which receive the quantizer output too, therefore work unchanged.
Index remapping (``remap=``, a rarely used diffusers option) is not supported: swapping refuses it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .contract import GridAdapter, QuantizerShim, register

__all__ = ["DiffusersVQAdapter", "VQModelQuantizerShim"]


class VQModelQuantizerShim(QuantizerShim):
    """Stands in for diffusers' ``VectorQuantizer`` (same call signature and return structure)."""

    adapter_name = "diffusers-vqmodel"
    SETTINGS = {"beta": 0.25, "legacy": True, "sane_index_shape": False}  # diffusers' VectorQuantizer defaults
    COMMITMENT = "beta"

    def __init__(self, quantizer, **settings):
        super().__init__(quantizer, **settings)
        self.remap = None
        self.vq_embed_dim = quantizer.dim
        self.n_e = self.vocab_size  # upstream's attribute: the number of distinct indices

    def forward(self, z: torch.Tensor):
        """z: (B, C, h, w) float -> (z_q (B, C, h, w), loss scalar, (None, None, indices)).

        indices: int64 flat ids, (B*h*w,) or (B, h, w) with ``sane_index_shape``.
        Raises TypeError/ValueError for a non-4-D or non-float z, a wrong C, or a grid of another
        token count than a token-specific quantizer's T (token-shared: any grid size).
        """
        self.check_grid(z, layout="(B, C, h, w)", channel="C")
        B, C, h, w = z.shape
        z = z.permute(0, 2, 3, 1).contiguous()
        out, q = self.quantize_tokens(z.view(B, h * w, C))
        q = q.view(z.shape)
        if self.legacy:
            loss = torch.mean((q.detach() - z) ** 2) + self.beta * torch.mean((q - z.detach()) ** 2)
        else:
            loss = self.beta * torch.mean((q.detach() - z) ** 2) + torch.mean((q - z.detach()) ** 2)
        loss = self.add_router_loss(loss, out)
        z_q = (z + (q - z).detach()).permute(0, 3, 1, 2).contiguous()
        ids = self.flat_ids(out.groups, out.indices)
        ids = ids.view(B, h, w) if self.sane_index_shape else ids.reshape(-1)
        return z_q, loss, (None, None, ids)

    def get_codebook_entry(self, indices: torch.Tensor, shape=None) -> torch.Tensor:
        """indices: flat ids (B*h*w entries, row-major per image); shape: (B, h, w, C) or None.

        Returns (B, C, h, w) with ``shape``, else (N, C) rows, in the codebooks' dtype.
        Raises TypeError/ValueError for non-integer or out-of-range ids, or a shape that does not
        match their count.
        """
        return self.lookup_grid(indices, shape)


def _config(model) -> dict:
    return dict(getattr(model, "config", {}) or {})


class DiffusersVQAdapter(GridAdapter):
    """diffusers ``VQModel`` (recognised by its config's ``num_vq_embeddings`` and its
    encoder / quant_conv / quantize / post_quant_conv / decoder modules)."""

    name = "diffusers-vqmodel"
    pixel_range = (-1.0, 1.0)
    shim_class = VQModelQuantizerShim
    fixed_tokens = False
    upstream_quantizer, upstream_attrs = "diffusers' VectorQuantizer", ("beta",)

    def matches(self, model) -> bool:
        return ("num_vq_embeddings" in _config(model)
                and all(hasattr(model, m) for m in ("encoder", "quant_conv", "quantize", "post_quant_conv", "decoder")))

    def check_upstream_quantizer(self, model) -> None:
        super().check_upstream_quantizer(model)
        if getattr(model.quantize, "remap", None) is not None:
            raise ValueError("model.quantize uses index remapping (remap=...), which vqswitch does not support")

    def metric(self, model) -> str:
        return "l2"

    def down_factor(self, model) -> int:
        return 2 ** (len(_config(model)["block_out_channels"]) - 1)

    def image_size(self, model) -> tuple[int, int]:
        size = _config(model).get("sample_size", 32)
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def image_channels(self, model) -> int:
        return int(_config(model).get("in_channels", 3))

    def encode_latents(self, model, images):
        return self.grid_to_tokens(model.encode(images).latents)  # quant_conv output, unquantized

    def decode_tokens(self, model, tokens, image_size=None):
        quant = self.tokens_to_grid(model, tokens, image_size)
        # what VQModel.decode does after quantizing (upstream fact): post_quant_conv, then the decoder,
        # which spatial-norm (MoVQ) models also condition on the quantized latents
        spatial = _config(model).get("norm_type", "group") == "spatial"
        return model.decoder(model.post_quant_conv(quant), quant if spatial else None)

    def decoder_modules(self, model) -> list[nn.Module]:
        return [model.post_quant_conv, model.decoder]

    def base_config(self, model) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in _config(model).items()
                if not k.startswith("_")}

    def build_base(self, config: dict):
        from diffusers import VQModel

        return VQModel.from_config(config)

    def load_pretrained(self, repo_id_or_path, *, subfolder: str | None = None, revision: str | None = None,
                        cache_dir=None, **kwargs):
        """``VQModel.from_pretrained`` (a folder written by ``save_pretrained``, or a Hub repo id)."""
        from diffusers import VQModel

        return VQModel.from_pretrained(repo_id_or_path, subfolder=subfolder, revision=revision, cache_dir=cache_dir,
                                       **kwargs).eval()


register(DiffusersVQAdapter())

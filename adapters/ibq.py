"""IBQ (TencentARC's index-backpropagation tokenizer): the adapter and its shim.

Works on vqswitch's own :class:`~vqswitch.adapters.models.ibq.IBQ` and, duck typed, on upstream
instances (``encoder``, ``quant_conv``, ``quantize``, ``post_quant_conv``, ``decoder``, with a
``quantize`` that has an ``nn.Embedding`` codebook and ``use_entropy_loss``). Pixels are in
[-1, 1]. IBQ picks the code of **largest inner product**, so the swapped quantizer uses the "dot"
metric. Facts the shim keeps from ``IndexPropagationQuantize``:

* ``forward(z (B, D, h, w)) -> (z_q, loss, (None, None, indices [B*h*w]))`` with ``loss`` the
  4-tuple ``(quant_loss, sample_entropy, avg_entropy, entropy_loss)`` when ``use_entropy_loss``
  (the public checkpoints), else ``quant_loss``; indices are flat ids ``g*K + k``;
* index backpropagation: ``z_q = (hard - sg[soft] + soft) @ C`` with ``soft = softmax(z . C)`` over
  the image's (group, token) codebook, so every code of it gets a gradient, and
  ``quant_loss = mean((z_q - z)^2) + mean((sg[C[k]] - z)^2) + beta * mean((C[k] - sg[z])^2)``;
  the entropy terms are upstream's, over the same logits; the router losses are added to
  ``quant_loss`` when M > 1. This needs the B x T x K logits, as upstream does; the codes API
  (:func:`~vqswitch.adapters.encode_codes`) never builds them.
* ``get_codebook_entry(indices, shape=None)``: (N, D), or (B, D, h, w) for ``shape = (B, h, w, D)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .contract import GridAdapter, QuantizerShim, register
from .models.ibq import entropy_terms

__all__ = ["IBQAdapter", "IBQQuantizerShim"]


class IBQQuantizerShim(QuantizerShim):
    """Stands in for IBQ's ``IndexPropagationQuantize`` (same call signature and return structure)."""

    adapter_name = "ibq"
    SETTINGS = {"beta": 0.25, "use_entropy_loss": False, "entropy_temperature": 0.01,  # upstream's defaults
                "sample_minimization_weight": 1.0, "batch_maximization_weight": 1.0}
    COMMITMENT = "beta"

    def __init__(self, quantizer, **settings):
        super().__init__(quantizer, **settings)
        self.e_dim = quantizer.dim
        self.n_e = self.vocab_size  # upstream's attribute: the number of distinct indices

    def _logits(self, z: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """(B, T, K) inner products of each token with its (group, token) codebook, group by group
        (no (B, T, K, D) copy of the codebooks)."""
        q = self.quantizer
        logits = z.new_empty(z.shape[0], z.shape[1], q.codebook_size)
        for g in torch.unique(groups).tolist():
            rows = (groups == g).nonzero(as_tuple=True)[0]
            book = q.codebooks[g].to(z.dtype)  # (T', K, D)
            if q.token_specific:
                logits[rows] = torch.einsum("btd,tkd->btk", z[rows], book)
            else:
                logits[rows] = torch.einsum("btd,kd->btk", z[rows], book[0])
        return logits

    def _mix(self, weights: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """(B, T, K) code weights -> (B, T, D) mixes of each token's codebook, differentiable to both."""
        q = self.quantizer
        parts = []
        order = []
        for g in torch.unique(groups).tolist():
            rows = (groups == g).nonzero(as_tuple=True)[0]
            book = q.codebooks[g].to(weights.dtype)
            eq = "btk,tkd->btd" if q.token_specific else "btk,kd->btd"
            parts.append(torch.einsum(eq, weights[rows], book if q.token_specific else book[0]))
            order.append(rows)
        mixed = torch.cat(parts)
        return mixed[torch.argsort(torch.cat(order))]

    def forward(self, z: torch.Tensor, temp=None, rescale_logits: bool = False, return_logits: bool = False):
        """z: (B, D, h, w) float -> (z_q (B, D, h, w), loss, (None, None, indices (B*h*w,) int64 flat ids)).

        ``temp``, ``rescale_logits`` and ``return_logits`` are accepted and ignored, as upstream.
        Raises TypeError/ValueError for a non-4-D or non-float z, a wrong D, or h*w != T with a token-specific
        quantizer (token-shared: any grid size).
        """
        self.check_grid(z)
        B, D, h, w = z.shape
        tokens = z.permute(0, 2, 3, 1).reshape(B, h * w, D)
        out, hard_codes = self.quantize_tokens(tokens)
        logits = self._logits(tokens, out.groups)
        soft = torch.softmax(logits, dim=-1)
        hard = torch.zeros_like(logits).scatter_(-1, out.indices.unsqueeze(-1), 1.0)
        z_q = self._mix(hard - soft.detach() + soft, out.groups)  # index backpropagation
        quant_loss = (torch.mean((z_q - tokens) ** 2) + torch.mean((hard_codes.detach() - tokens) ** 2)
                      + self.beta * torch.mean((hard_codes - tokens.detach()) ** 2))
        quant_loss = self.add_router_loss(quant_loss, out)
        # channels-last strides, as upstream's einsum output
        z_q = z_q.view(B, h, w, D).permute(0, 3, 1, 2)
        ids = self.flat_ids(out.groups, out.indices).reshape(-1)
        if not self.use_entropy_loss:
            return z_q, quant_loss, (None, None, ids)
        sample_entropy, avg_entropy, entropy_loss = entropy_terms(
            logits.reshape(-1, logits.shape[-1]), self.entropy_temperature, self.sample_minimization_weight,
            self.batch_maximization_weight)
        return z_q, (quant_loss, sample_entropy, avg_entropy, entropy_loss), (None, None, ids)

    def get_codebook_entry(self, indices: torch.Tensor, shape=None) -> torch.Tensor:
        """indices: flat ids (B*h*w entries, row-major per image); shape: (B, h, w, D) or None.

        Returns (B, D, h, w) with ``shape``, else (N, D). Raises TypeError/ValueError for bad ids or a
        shape that does not match their count.
        """
        return self.lookup_grid(indices, shape)


def _config(model) -> dict:
    cfg = getattr(model, "config", None)
    return dict(cfg) if isinstance(cfg, dict) else {}


class IBQAdapter(GridAdapter):
    """IBQ: encoder -> quant_conv -> index-backpropagation quantizer -> post_quant_conv -> decoder."""

    name = "ibq"
    pixel_range = (-1.0, 1.0)
    shim_class = IBQQuantizerShim
    fixed_tokens = False
    upstream_quantizer, upstream_attrs = "IBQ's IndexPropagationQuantize", ("beta", "use_entropy_loss")

    def matches(self, model) -> bool:
        if not all(isinstance(getattr(model, m, None), nn.Module)
                   for m in ("encoder", "quant_conv", "quantize", "post_quant_conv", "decoder")):
            return False
        if "num_vq_embeddings" in _config(model):
            return False  # a diffusers VQModel
        return isinstance(model.quantize, IBQQuantizerShim) or hasattr(model.quantize, "use_entropy_loss")

    def metric(self, model) -> str:
        return "dot"

    def down_factor(self, model) -> int:
        if hasattr(model, "downsample_factor"):
            return int(model.downsample_factor)
        mult = _config(model).get("ch_mult")
        if mult:
            return 2 ** (len(mult) - 1)
        down = getattr(model.encoder, "down", None)  # upstream's Encoder: one `down` entry per resolution level
        return 2 ** (len(down) - 1) if isinstance(down, nn.ModuleList) and len(down) else 16

    def image_size(self, model) -> tuple[int, int]:
        r = int(_config(model).get("resolution", getattr(model.encoder, "resolution", 256)))
        return r, r

    def image_channels(self, model) -> int:
        return int(_config(model).get("in_channels", 3))

    def encode_latents(self, model, images):
        return self.grid_to_tokens(model.quant_conv(model.encoder(images)))  # unquantized

    def decode_tokens(self, model, tokens, image_size=None):
        return model.decoder(model.post_quant_conv(self.tokens_to_grid(model, tokens, image_size)))

    def decoder_modules(self, model) -> list[nn.Module]:
        return [model.post_quant_conv, model.decoder]

    def base_config(self, model) -> dict:
        cfg = _config(model)
        if not cfg:
            raise ValueError(f"this {type(model).__name__} has no dict `config`: save_swapped needs one to rebuild it "
                             "(load the weights into vqswitch.adapters.models.ibq.IBQ)")
        return cfg

    def build_base(self, config: dict):
        from .models.ibq import IBQ

        return IBQ.from_config(config)

    def load_pretrained(self, repo_id_or_path=None, **kwargs):
        """:func:`vqswitch.adapters.models.ibq.load_pretrained` (the public Lightning ``.ckpt`` files, EMA
        weights by default; default repo ``TencentARC/IBQ-Tokenizer-1024``)."""
        from .models.ibq import DEFAULT_REPO_ID, load_pretrained

        return load_pretrained(DEFAULT_REPO_ID if repo_id_or_path is None else repo_id_or_path, **kwargs)


register(IBQAdapter())

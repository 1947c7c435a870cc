"""The group router and its losses (the paper's Eqs. 7-11).

The paper specifies the balance loss L_ent but publishes neither the router architecture nor the
exact forms of L_dec and L_qua; the forms below are vqswitch's, chosen as follows.

Architecture (:class:`Router`), from encoder features z (B, T, D) to probabilities (B, M):
    h_t    = GELU(W_in z_t + p_t)          shared projection D -> H plus a learned per-position bias
                                           p_t, so a token's vote depends on where it sits (TiTok's 1-D
                                           tokens and 2-D grids both carry meaning by position)
    h      = LayerNorm(mean_t h_t)         order-free pooling over tokens
    logits = W_out h / temperature,  p = softmax(logits)
It costs D*H + T*H + H*M parameters (H = ``hidden_dim``, 256 by default), tiny next to the codebooks.

Losses (:func:`router_losses`), all means over the batch (the global batch under DDP), all with respect to router
parameters only (features and quantization errors are detached by the quantizer):
    L_ent = sum_i g_i log g_i,  g = mean_b p_b     balance: minimised by uniform group use over the
                                                   batch (under DDP, g is the mean over all ranks)
    L_dec = mean_b H(p_b) = -mean_b sum_i p_bi log p_bi
                                                   decisiveness: minimised by one-hot decisions
    L_qua = mean_b CE(q_b, p_b) = -mean_b sum_i q_bi log p_bi,
            q_bi = relu(e_mean_b - e_bi) / sum_j relu(e_mean_b - e_bj),  e_mean_b = mean_i e_bi
                                                   quality: moves probability toward the groups whose
                                                   quantization error e_bi is below the image's mean
                                                   error over groups, in proportion to how far below;
                                                   with M = 2 the target is the better group. Images
                                                   whose groups all tie get no L_qua (q undefined).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_int, check_real
from .distributed import global_mean, global_ratio, world_size

__all__ = ["Router", "router_losses"]


class Router(nn.Module):
    """Maps encoder features (B, T, D) float to group probabilities (B, M) float32.

    Args:
        num_tokens: T; dim: D; num_groups: M (>= 2 to be useful);
        hidden_dim: H; temperature: softmax temperature (> 0).
    Raises TypeError / ValueError naming the argument for a non-int or < 1 size, a non-real or non-positive
    temperature.
    """

    def __init__(self, num_tokens: int, dim: int, num_groups: int, hidden_dim: int = 256, temperature: float = 1.0):
        super().__init__()
        for name, value in (("num_tokens", num_tokens), ("dim", dim), ("num_groups", num_groups),
                            ("hidden_dim", hidden_dim)):
            check_int(name, value, 1)
        self.temperature = check_real("temperature", temperature, 0, min_open=True)
        self.proj = nn.Linear(dim, hidden_dim)
        self.position = nn.Parameter(torch.zeros(num_tokens, hidden_dim))
        nn.init.normal_(self.position, std=0.02)
        self.norm = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, num_groups)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, T, D) float -> logits (B, M) float32 (computed in fp32, also under autocast, and whatever
        the dtypes of z and of the router's own parameters: a half-precision router takes fp32 z and its
        gradients reach its parameters in their dtype)."""
        with torch.autocast(z.device.type, enabled=False):
            def f32(t):
                return None if t is None else t.float()
            h = F.gelu(F.linear(z.float(), f32(self.proj.weight), f32(self.proj.bias)) + f32(self.position))
            h = F.layer_norm(h.mean(dim=1), self.norm.normalized_shape, f32(self.norm.weight), f32(self.norm.bias),
                             self.norm.eps)
            return F.linear(h, f32(self.head.weight), f32(self.head.bias)) / self.temperature

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, T, D) float -> probabilities (B, M) float32, rows summing to 1."""
        return self.logits(z).softmax(dim=-1)


def router_losses(probs: torch.Tensor, group_errors: torch.Tensor | None = None, *, sync: bool = True,
                  eps: float = 1e-9) -> dict[str, torch.Tensor]:
    """The three router losses of the module docstring.

    Args:
        probs: (B, M) float routing probabilities (rows sum to 1), with gradient.
        group_errors: (B, M) float per-group total quantization errors (detached), or None to skip L_qua.
        sync: under DDP, take every batch mean over all ranks' images (L_ent's mean probability, and
            L_dec and L_qua as sums over the global batch divided by its global size), so that ranks
            holding unequal shares of a batch give one process's losses and gradients. Every rank
            must then call it, also with an empty share.
    Returns:
        {"balance": L_ent, "decision": L_dec, "quality": L_qua} scalar float32 tensors (L_qua is 0
        without group_errors).
    """
    p = probs.float()
    mean_p = global_mean(p, sync=sync)
    balance = (mean_p * (mean_p + eps).log()).sum()
    entropy = -(p * (p + eps).log()).sum(dim=-1)  # (B,)
    if group_errors is None or p.shape[0] == 0:
        ce_sum, valid_count = p.sum() * 0, p.new_zeros(())
    else:
        e = group_errors.detach().float()
        margin = (e.mean(dim=-1, keepdim=True) - e).clamp_min(0)
        total = margin.sum(dim=-1, keepdim=True)
        valid = total.squeeze(-1) > 0
        q = margin / total.clamp_min(eps)
        ce_sum = (-(q * (p + eps).log()).sum(dim=-1) * valid).sum()
        valid_count = valid.sum().float()
    if sync and world_size() > 1:  # sums over the global batch / its global size (ranks may hold unequal shares)
        means = global_ratio(torch.stack([entropy.sum(), ce_sum]),
                             torch.stack([p.new_tensor(float(p.shape[0])), valid_count]))
        return {"balance": balance, "decision": means[0], "quality": means[1]}
    decision = entropy.mean() if p.shape[0] else p.sum()
    quality = ce_sum / valid_count.clamp_min(1)
    return {"balance": balance, "decision": decision, "quality": quality}

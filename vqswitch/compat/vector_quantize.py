"""A drop-in for ``vector_quantize_pytorch.VectorQuantize``: switch a model to STSCQ by changing one import.

    from vector_quantize_pytorch import VectorQuantize      # before
    from vqswitch.compat import VectorQuantize              # after: same constructor, same (quantized, indices, loss)

:class:`VectorQuantize` takes the upstream constructor arguments that matter for a switch and answers in
upstream's return structure and layouts; underneath, a :class:`~vqswitch.SwitchableTokenQuantizer` does the
search (``vqswitch.kernels``), so STSCQ's own arguments (``num_tokens``, ``num_groups``, ``token_specific``)
turn a plain VQ into switchable token-specific codebooks, and the module gains bits per image, :class:`Codes`
and decoding.

Facts taken from upstream (vector-quantize-pytorch 1.32, read and re-implemented here, not copied):

* layouts: x (B, N, D); (B, D, N) with ``channel_last=False``; (B, D) one token; (B, C, H, W) with
  ``accept_image_fmap``; (B, C, F, H, W) with ``accept_3d_fmap``. ``quantized`` keeps x's layout;
  ``indices`` are (B, N), (B, H, W), (B, F, H, W) or (B,), with a trailing ``heads`` axis when heads > 1.
* ``project_in`` / ``project_out`` (Linear, with an optional LayerNorm after ``project_in``) exist when
  ``codebook_dim * heads != dim``; heads split each projected vector ``(h d)`` head-major.
* cosine: inputs are l2-normalised (eps 1e-6) before the search and the codes are kept normalised.
* loss: ``commitment_weight * mse(sg(q), x)`` in training (x after projection, head split and
  normalisation), 0 in eval mode. A learnable codebook (``learnable_codebook=True, ema_update=False``)
  also gets that term's gradient.
* gradient to the input in training: the rotation trick (default when ``dim > 1``) or straight-through,
  only when x requires grad and ``route_gradients_to_input``; none in eval mode.
* EMA codebook (the default): per code, ``cluster_size`` and ``embed_avg`` (sum of the vectors assigned)
  move toward the batch's counts and sums by ``lerp(new, 1 - decay)``; the codes become
  ``embed_avg / n_k`` with Laplace-smoothed counts ``n_k = (c_k + eps) / (sum c + K eps) * sum c``
  (l2-normalised for cosine). The step's output uses the codes from before the update.
* dead codes: after the update, codes with ``cluster_size < threshold_ema_dead_code`` are replaced with
  random vectors of the batch (without replacement; when more codes are dead than vectors, the rest wait),
  their ``cluster_size`` set to the threshold and ``embed_avg`` to vector * threshold.

How STSCQ generalises the EMA (M groups, token-specific codebooks): every (group, token) codebook keeps its
own statistics, fed by the vectors of the images that chose its group; a group that no image chose in a batch
keeps its statistics unchanged for that batch (with M = 1 every codebook sees every batch, exactly as
upstream). Dead codes are refilled from their own codebook's vectors.

Differences (deliberate, documented): indices with M > 1 are flat ids ``g * K + k`` (as every vqswitch
adapter's); ``kmeans_init`` runs vqswitch's k-means (k-means++ start, seeded from torch's RNG) and keeps the
k-means codes no batch vector chose (upstream zeroes them); ``get_output_from_indices`` applies ``project_out``
over channels for image feature maps. Arguments that are not supported raise ``ValueError`` naming them when
given a non-default value (:data:`UNSUPPORTED`); unknown ones raise ``TypeError``.
"""
from __future__ import annotations

import math
from collections import namedtuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from vqswitch import bits as _bits
from vqswitch._checks import check_bool, check_int, check_int_tensor, check_real
from vqswitch.codebooks import reduce_codebook
from vqswitch.codes import Codes
from vqswitch.distributed import world_size
from vqswitch.quantizer import QuantizerOutput, SwitchableTokenQuantizer

__all__ = ["VectorQuantize", "LossBreakdown", "UNSUPPORTED", "UNSUPPORTED_FORWARD"]

LossBreakdown = namedtuple("LossBreakdown", ["commitment", "codebook_diversity", "orthogonal_reg", "inplace_optimize"])

#: Upstream constructor arguments this module does not implement, with upstream's default. Passing the
#: default is accepted (it changes nothing); any other value raises ValueError naming the argument.
UNSUPPORTED = {
    "sync_kmeans": True,
    "commitment_use_cross_entropy_loss": False,
    "orthogonal_reg_weight": 0.0,
    "orthogonal_reg_active_codes_only": False,
    "orthogonal_reg_max_codes": None,
    "codebook_diversity_loss_weight": 0.0,
    "codebook_diversity_temperature": 100.0,
    "stochastic_sample_codes": False,
    "sample_codebook_temp": 1.0,
    "straight_through": False,
    "directional_reparam": False,
    "directional_reparam_variance": 5e-3,
    "sync_affine_param": False,
    "vq_bridge": None,
    "manual_ema_update": False,
    "in_place_codebook_optimizer": None,
    "manual_in_place_optimizer_update": False,
    "affine_param": False,
    "affine_param_batch_decay": 0.99,
    "affine_param_codebook_decay": 0.9,
    "sync_update_v": 0.0,
    "return_zeros_for_masked_padding": True,
}

#: Upstream forward() keyword arguments this module does not implement, with their defaults.
UNSUPPORTED_FORWARD = {
    "indices": None, "mask": None, "lens": None, "topk": None, "sample_codebook_temp": None,
    "codebook_transform_fn": None, "ema_update_weight": None, "accum_ema_update": False,
}

#: SwitchableTokenQuantizer arguments that ``quantizer_kwargs`` may set (the rest are set by this module).
_PASS_THROUGH = ("train_selection", "inference_selection", "router_hidden_dim", "router_temperature", "balance_weight",
                 "decision_weight", "quality_weight", "track_usage", "check_finite", "backend", "memory_budget")

_L2NORM_EPS = 1e-6  # upstream's l2norm eps (inputs, codes and the rotation trick)


def _same(value, default) -> bool:
    """Whether ``value`` is upstream's ``default`` (None, a bool, or a number compared by value)."""
    if default is None or isinstance(default, bool):
        return value is default
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == default


def _refuse(given: dict, table: dict, where: str) -> None:
    bad = sorted(k for k, v in given.items() if k in table and not _same(v, table[k]))
    unknown = sorted(k for k in given if k not in table)
    if unknown:
        raise TypeError(f"{where} got unexpected keyword argument(s) {unknown}")
    if bad:
        shown = {k: (f"<{type(given[k]).__name__}>" if isinstance(given[k], torch.Tensor) or callable(given[k])
                     else given[k]) for k in bad}
        raise ValueError(f"{where}: vqswitch.compat.VectorQuantize does not support {bad} (given {shown}); "
                         f"remove them or keep upstream's defaults")


def _rotate_to(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The rotation trick (arXiv 2410.06424): forward value q; backward, the rotation R that takes x's
    direction to q's, times |q|/|x| (R and the scale are constants). Shapes (..., d), same dtype."""
    x_norm = x.norm(dim=-1, keepdim=True).clamp_min(_L2NORM_EPS)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(_L2NORM_EPS)
    u, v = (x / x_norm).detach(), (q / q_norm).detach()
    w = F.normalize(u + v, dim=-1, eps=_L2NORM_EPS)
    rotated = x - 2 * (x * w).sum(-1, keepdim=True) * w + 2 * (x * u).sum(-1, keepdim=True) * v
    return rotated * (q_norm / x_norm).detach()


class VectorQuantize(nn.Module):
    """``vector_quantize_pytorch.VectorQuantize`` on vqswitch's STSCQ quantizer (see the module docstring).

    Upstream's arguments (same meaning and defaults): ``dim``, ``codebook_size``, ``codebook_dim``, ``heads``,
    ``separate_codebook_per_head``, ``decay``, ``eps``, ``freeze_codebook``, ``kmeans_init``, ``kmeans_iters``,
    ``use_cosine_sim``, ``layernorm_after_project_in``, ``threshold_ema_dead_code``, ``channel_last``,
    ``accept_image_fmap``, ``accept_3d_fmap``, ``commitment_weight``, ``rotation_trick`` (default: ``dim > 1``),
    ``sync_codebook`` (default: on under multi-process torch.distributed), ``ema_update`` (default True),
    ``learnable_codebook`` (default False; needs ``ema_update=False``), ``route_gradients_to_input``.
    Arguments after ``heads`` are keyword-only. Upstream arguments in :data:`UNSUPPORTED` are accepted only
    at their default.

    STSCQ's own:
        num_tokens: N, tokens per sample (H*W for image feature maps). Needed when ``num_groups > 1`` or
            ``token_specific``; optional otherwise (then any N is accepted and only ``bits_per_image`` needs it).
            When given, every input must have exactly N tokens.
        num_groups: M codebook groups; each sample picks one (router in training, least error in eval).
        token_specific: one codebook per (token position, head) instead of one shared one.
        quantizer_kwargs: further :class:`~vqswitch.SwitchableTokenQuantizer` arguments (router, selection,
            backend, memory budget), from ``_PASS_THROUGH``.

    Buffers: ``cluster_size`` (M, T', K) and ``embed_avg`` (M, T', K, d) float32 EMA statistics, ``initted``;
    the codes themselves are ``quantizer.codebooks`` (M, T', K, d), with T' the number of codebooks per group
    (1 token-shared, ``heads`` for separate per-head codebooks, N*heads token-specific).
    Raises TypeError / ValueError naming the argument for a wrong type or value, an unsupported argument or an
    impossible combination.
    """

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int | None = None, heads: int = 1, *,
                 separate_codebook_per_head: bool = False, decay: float = 0.8, eps: float = 1e-5,
                 freeze_codebook: bool = False, kmeans_init: bool = False, kmeans_iters: int = 10,
                 use_cosine_sim: bool = False, layernorm_after_project_in: bool = False,
                 threshold_ema_dead_code: float = 0, channel_last: bool = True, accept_image_fmap: bool = False,
                 accept_3d_fmap: bool = False, commitment_weight: float = 1.0, rotation_trick: bool | None = None,
                 sync_codebook: bool | None = None, ema_update: bool | None = None,
                 learnable_codebook: bool | None = None, route_gradients_to_input: bool = True,
                 num_tokens: int | None = None, num_groups: int = 1, token_specific: bool = False,
                 quantizer_kwargs: dict | None = None, **unsupported):
        super().__init__()
        _refuse(unsupported, UNSUPPORTED, "VectorQuantize()")
        ints = {"dim": dim, "codebook_size": codebook_size, "heads": heads, "num_groups": num_groups,
                "kmeans_iters": kmeans_iters}
        if codebook_dim is not None:
            ints["codebook_dim"] = codebook_dim
        if num_tokens is not None:
            ints["num_tokens"] = num_tokens
        for name, v in ints.items():
            check_int(name, v, 0 if name == "kmeans_iters" else 1)
        flags = dict(separate_codebook_per_head=separate_codebook_per_head, freeze_codebook=freeze_codebook,
                     kmeans_init=kmeans_init, use_cosine_sim=use_cosine_sim,
                     layernorm_after_project_in=layernorm_after_project_in, channel_last=channel_last,
                     accept_image_fmap=accept_image_fmap, accept_3d_fmap=accept_3d_fmap,
                     route_gradients_to_input=route_gradients_to_input, token_specific=token_specific)
        for name, v in flags.items():
            check_bool(name, v)
        for name, v in (("rotation_trick", rotation_trick), ("sync_codebook", sync_codebook),
                        ("ema_update", ema_update), ("learnable_codebook", learnable_codebook)):
            if v is not None:
                check_bool(name, v)
        self.decay = check_real("decay", decay, 0.0, 1.0)
        self.eps = check_real("eps", eps, 0.0, min_open=True)
        self.threshold_ema_dead_code = check_real("threshold_ema_dead_code", threshold_ema_dead_code, 0.0)
        self.commitment_weight = check_real("commitment_weight", commitment_weight, 0.0)
        if accept_image_fmap and accept_3d_fmap:
            raise ValueError("accept_image_fmap and accept_3d_fmap cannot both be True")
        ema_update = True if ema_update is None else ema_update
        learnable_codebook = False if learnable_codebook is None else learnable_codebook
        if ema_update and learnable_codebook:
            raise ValueError("learnable_codebook=True needs ema_update=False (a codebook is learned by EMA or by "
                             "gradient, not both), as in vector-quantize-pytorch")
        if (num_groups > 1 or token_specific) and num_tokens is None:
            raise ValueError("num_tokens (tokens per sample, H*W for image feature maps) is required when "
                             "num_groups > 1 or token_specific=True")
        if num_groups > 1 and separate_codebook_per_head and heads > 1 and not token_specific:
            raise ValueError("separate_codebook_per_head=True with num_groups > 1 needs token_specific=True "
                             "(which gives every token and head its own codebook)")
        qkw = dict(quantizer_kwargs or {})
        refused = sorted(k for k in qkw if k not in _PASS_THROUGH)
        if refused:
            raise ValueError(f"quantizer_kwargs may only set {list(_PASS_THROUGH)}, got {refused}")

        self.dim, self.codebook_size, self.heads = dim, codebook_size, heads
        self.codebook_dim = dim if codebook_dim is None else codebook_dim
        self.separate_codebook_per_head = separate_codebook_per_head
        self.freeze_codebook, self.kmeans_iters = freeze_codebook, kmeans_iters
        self.use_cosine_sim = use_cosine_sim
        self.channel_last, self.accept_image_fmap, self.accept_3d_fmap = channel_last, accept_image_fmap, accept_3d_fmap
        self.rotation_trick = (dim > 1) if rotation_trick is None else rotation_trick
        self.sync_codebook = sync_codebook
        self.ema_update, self.learnable_codebook = ema_update, learnable_codebook
        self.route_gradients_to_input = route_gradients_to_input
        self.num_tokens, self.num_groups, self.token_specific = num_tokens, num_groups, token_specific
        self.reset_cluster_size = self.threshold_ema_dead_code

        inner = self.codebook_dim * heads
        self.has_projections = inner != dim
        if self.has_projections:
            proj_in = nn.Linear(dim, inner)
            self.project_in = nn.Sequential(proj_in, nn.LayerNorm(inner)) if layernorm_after_project_in else proj_in
            self.project_out = nn.Linear(inner, dim)
        else:
            self.project_in, self.project_out = nn.Identity(), nn.Identity()

        # The core quantizer's token axis. With one group and token-shared codebooks every vector is
        # independent, so samples are folded into the batch and any N is accepted.
        self.folded = num_groups == 1 and not token_specific
        if self.folded:
            per_head = separate_codebook_per_head and heads > 1
            core_tokens, core_specific = (heads, True) if per_head else (1, False)
        else:
            core_tokens, core_specific = num_tokens * heads, token_specific
        self.quantizer = SwitchableTokenQuantizer(
            num_tokens=core_tokens, codebook_size=codebook_size, dim=self.codebook_dim, num_groups=num_groups,
            token_specific=core_specific, metric="cosine" if use_cosine_sim else "l2",
            commitment_weight=self.commitment_weight, **qkw)
        q = self.quantizer
        with torch.no_grad():
            if kmeans_init:
                q.codebooks.zero_()
            else:  # upstream's start: kaiming-uniform over (K, d) fan-in
                bound = math.sqrt(6.0 / (codebook_size * self.codebook_dim))
                q.codebooks.uniform_(-bound, bound)
                if use_cosine_sim:
                    q.codebooks.copy_(F.normalize(q.codebooks, dim=-1, eps=_L2NORM_EPS))
        q.codebooks.requires_grad_(learnable_codebook)
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self.register_buffer("cluster_size", torch.ones(q.codebooks.shape[:3]))
        self.register_buffer("embed_avg", q.codebooks.detach().clone().float())
        self.last_output: QuantizerOutput | None = None

    # ------------------------------------------------------------------ properties
    @property
    def codebook(self) -> torch.Tensor:
        """Upstream's view of the codes: (K, d), or (heads, K, d) with separate per-head codebooks, when
        M = 1 and token-shared; otherwise the full (M, T', K, d) ``quantizer.codebooks``."""
        cb = self.quantizer.codebooks
        if not self.folded:
            return cb
        return cb[0] if self.quantizer.token_specific else cb[0, 0]

    @property
    def tokens_per_sample(self) -> int:
        """N * heads: indices per sample in :class:`Codes`. Raises ValueError without ``num_tokens``."""
        if self.num_tokens is None:
            raise ValueError("this needs num_tokens: pass num_tokens=N (tokens per sample) to the constructor")
        return self.num_tokens * self.heads

    @property
    def bits_per_image(self) -> int:
        """N*heads*ceil(log2 K) + ceil(log2 M) fixed-length bits per sample. ValueError without ``num_tokens``."""
        return _bits.bits_per_image(self.tokens_per_sample, self.codebook_size, self.num_groups)

    def bpp(self, height: int, width: int) -> float:
        """bits_per_image / (height * width), for samples that are ``height x width`` images."""
        return _bits.bpp(self.bits_per_image, height, width)

    def extra_repr(self) -> str:
        kind = "token-specific" if self.token_specific else "token-shared"
        return (f"dim={self.dim}, K={self.codebook_size}, codebook_dim={self.codebook_dim}, heads={self.heads}, "
                f"M={self.num_groups}, {kind}, N={self.num_tokens}, cosine={self.use_cosine_sim}, "
                f"ema_update={self.ema_update}")

    # ------------------------------------------------------------------ layouts
    def _to_tokens(self, x) -> tuple[torch.Tensor, tuple]:
        """x in upstream's layout -> (B, N, dim) and the spatial shape (None for sequences, () one token)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if self.accept_image_fmap or self.accept_3d_fmap:
            nd = 4 if self.accept_image_fmap else 5
            if x.dim() != nd or x.shape[1] != self.dim:
                lay = "(B, C, H, W)" if nd == 4 else "(B, C, F, H, W)"
                raise ValueError(f"x must have shape {lay} with C=dim={self.dim}, got {tuple(x.shape)}")
            spatial = tuple(x.shape[2:])
            return x.flatten(2).transpose(1, 2), spatial
        if x.dim() == 2:
            if x.shape[1] != self.dim:
                raise ValueError(f"x must have shape (B, dim={self.dim}), got {tuple(x.shape)}")
            return x.unsqueeze(1), ()
        if x.dim() != 3:
            raise ValueError(f"x must have shape (B, N, dim) or (B, dim), got {tuple(x.shape)}")
        if not self.channel_last:
            if x.shape[1] != self.dim:
                raise ValueError(f"x must have shape (B, dim={self.dim}, N) with channel_last=False, "
                                 f"got {tuple(x.shape)}")
            return x.transpose(1, 2), None
        if x.shape[2] != self.dim:
            raise ValueError(f"x must have shape (B, N, dim={self.dim}), got {tuple(x.shape)}")
        return x, None

    def _from_tokens(self, t: torch.Tensor, spatial) -> torch.Tensor:
        """(B, N, C) -> upstream's layout of quantized outputs."""
        if spatial == ():
            return t[:, 0]
        if spatial is None:
            return t if self.channel_last else t.transpose(1, 2)
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *spatial)

    def _indices_layout(self, ids: torch.Tensor, spatial) -> torch.Tensor:
        """flat ids (B, N*heads) -> upstream's index layout."""
        B = ids.shape[0]
        ids = ids.view(B, -1, self.heads) if self.heads > 1 else ids.view(B, -1)
        if spatial == ():
            return ids[:, 0]
        if spatial is None:
            return ids
        return ids.reshape(B, *spatial, *ids.shape[2:])

    def _core_z(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N*heads, d) -> the core quantizer's (B', T, d)."""
        B, NH, d = z.shape
        if not self.folded:
            return z
        return z.reshape(-1, self.heads, d) if self.quantizer.token_specific else z.reshape(-1, 1, d)

    def _check_tokens(self, n: int) -> None:
        if self.num_tokens is not None and n != self.num_tokens:
            raise ValueError(f"x has {n} tokens per sample but this module was built with num_tokens={self.num_tokens}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *, freeze_codebook: bool | None = None, return_loss_breakdown: bool = False,
                ema_update: bool | None = None, **unsupported):
        """Quantize x -> ``(quantized, indices, loss)`` (+ :data:`LossBreakdown` with ``return_loss_breakdown``).

        x: float, (B, N, dim) / (B, dim, N) with ``channel_last=False`` / (B, dim) / (B, dim, H, W) with
        ``accept_image_fmap`` / (B, dim, F, H, W) with ``accept_3d_fmap``.
        quantized: x's shape and dtype. indices: int64 flat ids ``g*K + k`` (plain code indices when M = 1),
        (B, N) / (B,) / (B, H, W) / (B, F, H, W), with a trailing heads axis when heads > 1.
        loss: float32 scalar: ``commitment_weight * commitment`` (+ the router losses when M > 1) in training,
        0 in eval mode. In training the EMA statistics and codes update (unless frozen or ``ema_update=False``).
        ``last_output`` keeps the core :class:`~vqswitch.QuantizerOutput` (groups, router losses).
        Raises TypeError / ValueError for a wrong x, or for an unsupported forward argument (upstream's
        ``indices``, ``mask``, ``lens``, ``topk``, ...).
        """
        _refuse(unsupported, UNSUPPORTED_FORWARD, "VectorQuantize.forward()")
        freeze = self.freeze_codebook if freeze_codebook is None else check_bool("freeze_codebook", freeze_codebook)
        ema = self.ema_update if ema_update is None else check_bool("ema_update", ema_update)
        tokens, spatial = self._to_tokens(x)
        B, N = tokens.shape[:2]
        self._check_tokens(N)
        dtype, requires_grad = x.dtype, x.requires_grad

        z = self.project_in(tokens)
        z = z.reshape(B, N * self.heads, self.codebook_dim)  # (h d) head-major, as upstream
        if self.use_cosine_sim:
            z = F.normalize(z, dim=-1, eps=_L2NORM_EPS)
        zc = self._core_z(z.float())
        if not bool(self.initted) and zc.shape[0]:
            self._kmeans_init(zc.detach())

        out = self.quantizer(zc)
        self.last_output = out
        q_core = out.quantized  # straight-through to zc
        if self.training:
            if requires_grad and self.route_gradients_to_input:
                q_core = _rotate_to(zc, q_core.detach()) if self.rotation_trick else q_core
            else:
                q_core = q_core.detach()
            commit = out.commitment_loss
            if self.learnable_codebook and not freeze:
                # value cw * mse(q, x); gradient to both x and the codes, as upstream's learnable codebook
                commit = commit + (out.codebook_loss - out.codebook_loss.detach())
            loss = self.commitment_weight * commit
            if self.quantizer.router is not None:
                loss = loss + self.quantizer.router_loss(out)
            if not freeze and zc.shape[0]:
                self._update_codebook(zc.detach(), out.groups, out.indices, ema)
        else:
            q_core = q_core.detach()
            commit = loss = torch.zeros((), device=x.device)

        quantized = self.project_out(q_core.reshape(B, N, self.heads * self.codebook_dim).to(dtype))
        quantized = self._from_tokens(quantized, spatial)
        ids = self._flat_ids(out.groups, out.indices, B)
        indices = self._indices_layout(ids, spatial)
        if not return_loss_breakdown:
            return quantized, indices, loss
        zero = torch.zeros((), device=x.device)
        return quantized, indices, loss, LossBreakdown(commit, zero, zero, zero)

    def _flat_ids(self, groups: torch.Tensor, indices: torch.Tensor, B: int) -> torch.Tensor:
        """core (groups (B',), indices (B', T)) -> flat ids (B, N*heads) int64."""
        ids = indices + groups[:, None] * self.codebook_size if self.num_groups > 1 else indices
        return ids.reshape(B, -1)

    # ------------------------------------------------------------------ EMA
    @torch.no_grad()
    def _kmeans_init(self, zc: torch.Tensor) -> None:
        """upstream's kmeans_init on the first batch, with vqswitch's k-means (seeded from torch's RNG)."""
        seed = int(torch.randint(0, 2**31 - 1, ()))
        self.quantizer.init_from_latents(zc, iters=self.kmeans_iters, seed=seed)
        codes = self.quantizer.encode(zc)
        counts, _, _ = self._batch_stats(zc, codes.groups, codes.indices, sums=False)
        self.cluster_size.copy_(counts)
        self.embed_avg.copy_(self.quantizer.codebooks.float() * self._smoothed(self.cluster_size)[..., None])
        self.initted.fill_(True)

    def _batch_stats(self, zc: torch.Tensor, groups: torch.Tensor, indices: torch.Tensor, *, sums: bool = True):
        """Per-code counts (M, T', K) and vector sums (M, T', K, d) of a batch, summed over ranks when synced."""
        q = self.quantizer
        M, Tp, K, d = q.codebooks.shape
        T = zc.shape[1]
        tok = torch.arange(T, device=zc.device) if q.token_specific else torch.zeros(T, dtype=torch.long,
                                                                                      device=zc.device)
        slot = ((groups[:, None] * Tp + tok[None, :]) * K + indices).reshape(-1)
        counts = torch.bincount(slot, minlength=M * Tp * K).float().view(M, Tp, K)
        total = None
        if sums:
            total = torch.zeros(M * Tp * K, d, device=zc.device).index_add_(0, slot, zc.reshape(-1, d).float())
            total = total.view(M, Tp, K, d)
        if self._synced():
            dist.all_reduce(counts)
            if total is not None:
                dist.all_reduce(total)
        active = counts.sum(dim=(1, 2)) > 0  # groups that received vectors
        return counts, total, active

    def _synced(self) -> bool:
        return world_size() > 1 and self.sync_codebook is not False

    def _smoothed(self, cluster_size: torch.Tensor) -> torch.Tensor:
        """Laplace-smoothed counts, rescaled to the codebook's total: (c + eps) / (sum c + K eps) * sum c."""
        total = cluster_size.sum(dim=-1, keepdim=True)
        return (cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total

    @torch.no_grad()
    def _update_codebook(self, zc: torch.Tensor, groups: torch.Tensor, indices: torch.Tensor, ema: bool) -> None:
        if not ema and self.threshold_ema_dead_code <= 0:
            return
        counts, sums, active = self._batch_stats(zc, groups, indices)
        w = 1.0 - self.decay
        if bool(active.all()):
            self.cluster_size.lerp_(counts, w)
            self.embed_avg.lerp_(sums, w)
        else:
            self.cluster_size[active] = self.cluster_size[active].lerp(counts[active], w)
            self.embed_avg[active] = self.embed_avg[active].lerp(sums[active], w)
        books = self.quantizer.codebooks
        if ema:
            new = self.embed_avg / self._smoothed(self.cluster_size)[..., None]
            if self.use_cosine_sim:
                new = F.normalize(new, dim=-1, eps=_L2NORM_EPS)
            new = new.to(books.dtype)
            books.copy_(torch.where(active[:, None, None, None], new, books))  # copy_ bumps the version (norm cache)
        if self.threshold_ema_dead_code > 0:
            self._expire_codes(zc, groups, active)

    @torch.no_grad()
    def _expire_codes(self, zc: torch.Tensor, groups: torch.Tensor, active: torch.Tensor) -> None:
        """Refill codes with cluster_size < threshold from their own codebook's batch vectors."""
        q = self.quantizer
        dead = (self.cluster_size < self.threshold_ema_dead_code) & active[:, None, None]
        if not bool(dead.any()):
            return
        books = q.codebooks.detach().clone()
        for g in dead.any(dim=(1, 2)).nonzero()[:, 0].tolist():
            zg = zc[groups == g]  # (n, T, d), this rank's vectors of group g
            if zg.shape[0] == 0:
                continue
            dead_g = dead[g]  # (T', K)
            rank = dead_g.long().cumsum(dim=-1) - 1  # j-th dead code of its codebook
            if q.token_specific:  # codebook t draws from token t of this group's samples
                n = zg.shape[0]
                perm = torch.rand(n, zg.shape[1], device=zc.device).argsort(dim=0)  # per-token permutation
                use = dead_g & (rank < n)
                t_idx, k_idx = use.nonzero(as_tuple=True)
                rows = zg[perm[rank[t_idx, k_idx], t_idx], t_idx]
            else:  # one codebook draws from every vector of this group's samples
                pool = zg.reshape(-1, zg.shape[-1])
                perm = torch.randperm(pool.shape[0], device=zc.device)
                use = dead_g & (rank < pool.shape[0])
                t_idx, k_idx = use.nonzero(as_tuple=True)
                rows = pool[perm[rank[t_idx, k_idx]]]
            books[g, t_idx, k_idx] = rows.to(books.dtype)
            self.cluster_size[g, t_idx, k_idx] = self.reset_cluster_size
            self.embed_avg[g, t_idx, k_idx] = rows.float() * self.reset_cluster_size
        if self._synced():  # every rank keeps the same codes (rank 0's draw)
            dist.broadcast(books, src=0)
            dist.broadcast(self.cluster_size, src=0)
            dist.broadcast(self.embed_avg, src=0)
        q.codebooks.copy_(books)

    # ------------------------------------------------------------------ codes
    def encode(self, x: torch.Tensor) -> Codes:
        """x (upstream's layout) -> :class:`~vqswitch.Codes`: one group per sample, then N*heads indices per
        sample (token-major, heads inner), chosen by the quantizer's ``inference_selection``. No gradient,
        no statistics update. Raises TypeError / ValueError for a wrong x."""
        tokens, _ = self._to_tokens(x)
        B, N = tokens.shape[:2]
        self._check_tokens(N)
        with torch.no_grad():
            z = self.project_in(tokens).reshape(B, N * self.heads, self.codebook_dim)
            if self.use_cosine_sim:
                z = F.normalize(z, dim=-1, eps=_L2NORM_EPS)
            codes = self.quantizer.encode(self._core_z(z.float()))
        if not self.folded:
            return codes
        return Codes(torch.zeros(B, dtype=torch.long, device=codes.indices.device),
                     codes.indices.reshape(B, N * self.heads), self.codebook_size, 1)

    def decode(self, codes: Codes, *, fmap_size: tuple[int, ...] | None = None) -> torch.Tensor:
        """:class:`~vqswitch.Codes` -> quantized output in forward's layout (after ``project_out``), equal to
        forward's ``quantized`` in eval mode for ``codes = encode(x)``.

        fmap_size: (H, W) (or (F, H, W)) for image / 3-D feature maps (required there), with
        prod(fmap_size) * heads == codes' T. Raises TypeError for a non-Codes argument, ValueError for codes
        of another K or M, a T that is not a multiple of heads, or a missing / inconsistent fmap_size.
        """
        if not isinstance(codes, Codes):
            raise TypeError(f"codes must be a vqswitch.Codes, got {type(codes).__name__}")
        if (codes.codebook_size, codes.num_groups) != (self.codebook_size, self.num_groups):
            raise ValueError(f"codes were made for (K, M)={(codes.codebook_size, codes.num_groups)}, this module has "
                             f"(K, M)={(self.codebook_size, self.num_groups)}")
        groups = codes.groups[:, None].expand_as(codes.indices)
        return self._output_from(groups, codes.indices, fmap_size, spatial_given=fmap_size is not None)

    def get_codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Upstream's lookup: indices (flat ids, forward's layout) -> codes before ``project_out``,
        (B, ..., heads*d), channel-first for feature maps or ``channel_last=False``. Raises TypeError /
        ValueError for non-integer or out-of-range ids or a wrong shape."""
        groups, idx, spatial = self._split_ids(indices)
        return self._output_from(groups, idx, spatial, spatial_given=True, project=False)

    def get_output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Upstream's decode: indices (flat ids, forward's layout) -> quantized output (after ``project_out``),
        in forward's layout."""
        groups, idx, spatial = self._split_ids(indices)
        return self._output_from(groups, idx, spatial, spatial_given=True)

    def _split_ids(self, ids):
        check_int_tensor("indices", ids)
        lead = ids.dim() - (1 if self.heads > 1 else 0)
        if self.heads > 1 and (ids.dim() < 2 or ids.shape[-1] != self.heads):
            raise ValueError(f"indices must end in a heads axis of {self.heads}, got shape {tuple(ids.shape)}")
        if self.accept_image_fmap or self.accept_3d_fmap:
            want = 3 if self.accept_image_fmap else 4
            if lead != want:
                raise ValueError(f"indices must have {want} leading dims (B, spatial...), got shape {tuple(ids.shape)}")
            spatial = tuple(ids.shape[1:lead])
        elif lead == 1:
            spatial = ()
        elif lead == 2:
            spatial = None
        else:
            raise ValueError(f"indices must have shape (B, N) or (B,) (+ heads), got {tuple(ids.shape)}")
        vocab = self.num_groups * self.codebook_size
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(f"indices must lie in [0, M*K={vocab}) (flat ids g*K+k), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        flat = ids.reshape(ids.shape[0], -1).long()
        return flat // self.codebook_size, flat % self.codebook_size, spatial

    def _output_from(self, groups, idx, spatial, *, spatial_given: bool, project: bool = True) -> torch.Tensor:
        """groups, idx (B, N*heads) -> codes in forward's layout (projected out when ``project``)."""
        B, NH = idx.shape
        if NH % self.heads:
            raise ValueError(f"codes hold {NH} indices per sample, not a multiple of heads={self.heads}")
        N = NH // self.heads
        self._check_tokens(N)
        if self.accept_image_fmap or self.accept_3d_fmap:
            if not spatial_given:
                raise ValueError("fmap_size=(H, W) (or (F, H, W)) is required to decode feature maps")
            spatial = tuple(int(s) for s in spatial)
            if len(spatial) != (2 if self.accept_image_fmap else 3) or math.prod(spatial) != N:
                raise ValueError(f"fmap_size {spatial} does not hold the codes' {N} tokens per sample")
        q = self.quantizer
        dev = q.codebooks.device
        groups, idx = groups.to(dev).long(), idx.to(dev).long()
        if self.folded:  # token-shared or per-head codebooks: the core's token axis is 1 or heads
            T = q.num_tokens
            codes = q.lookup(groups.reshape(-1, T), idx.reshape(-1, T))
        else:
            codes = q.lookup(groups, idx)
        codes = codes.reshape(B, N, self.heads * self.codebook_dim)
        if project:
            return self._from_tokens(self.project_out(codes), spatial)
        if spatial == ():
            return codes[:, 0]
        if spatial is None:
            return codes if self.channel_last else codes.transpose(1, 2)
        return codes.transpose(1, 2).reshape(B, codes.shape[2], *spatial)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_vector_quantize(cls, vq: nn.Module, *, num_tokens: int | None = None, num_groups: int = 1,
                             token_specific: bool = False, quantizer_kwargs: dict | None = None,
                             seed: int = 0) -> "VectorQuantize":
        """A module equivalent to a (trained) ``vector_quantize_pytorch.VectorQuantize``: same settings,
        codes, EMA statistics and projections, in vq's device and eval/train mode.

        With num_groups=1 it gives the same indices and outputs as vq (for either ``token_specific``, every
        token's codebook being a copy). With num_groups=M > 1, group 0 is an exact copy and groups 1.. are
        copies with 1% noise (:func:`~vqswitch.codebooks.reduce_codebook`), so that they can drift apart.
        Raises TypeError for something that is not an upstream VectorQuantize, ValueError naming the settings
        of vq that this module does not support (orthogonal / diversity losses, cross-entropy commitment,
        stochastic sampling, affine parameters, in-place optimizer, vq_bridge, DiVeQ, synchronous update...).
        """
        if not (hasattr(vq, "_codebook") and hasattr(vq, "project_in") and hasattr(vq, "codebook_size")):
            raise TypeError(f"vq must be a vector_quantize_pytorch.VectorQuantize, got {type(vq).__name__}")
        cfg = cls._upstream_config(vq)
        new = cls(**cfg, num_tokens=num_tokens, num_groups=num_groups, token_specific=token_specific,
                  quantizer_kwargs=quantizer_kwargs)
        new.load_vector_quantize_state_dict(vq.state_dict(), seed=seed)
        return new.to(vq._codebook.embed.device).train(vq.training)

    @staticmethod
    def _upstream_config(vq: nn.Module) -> dict:
        cb = vq._codebook
        bad = []
        checks = {
            "orthogonal_reg_weight": getattr(vq, "has_codebook_orthogonal_loss", False),
            "codebook_diversity_loss_weight": getattr(vq, "has_codebook_diversity_loss", False),
            "commitment_use_cross_entropy_loss": getattr(vq, "commitment_use_cross_entropy_loss", False),
            "directional_reparam": getattr(vq, "directional_reparam", False),
            "in_place_codebook_optimizer": getattr(vq, "in_place_codebook_optimizer", None) is not None,
            "sync_update_v": getattr(vq, "sync_update_v", 0.0) > 0,
            "affine_param": getattr(cb, "affine_param", False),
            "vq_bridge": getattr(cb, "vq_bridge", None) is not None,
            "manual_ema_update": getattr(cb, "manual_ema_update", False),
            "sample_codebook_temp": getattr(cb, "sample_codebook_temp", 1.0) != 1.0,
        }
        sampler = getattr(getattr(cb, "gumbel_sample", None), "keywords", {}) or {}
        checks["stochastic_sample_codes"] = bool(sampler.get("stochastic", False))
        checks["straight_through"] = bool(sampler.get("straight_through", False))
        bad = sorted(k for k, v in checks.items() if v)
        if bad:
            raise ValueError(f"vq uses settings vqswitch.compat.VectorQuantize does not support: {bad}")
        project_in = vq.project_in
        layernorm = isinstance(project_in, nn.Sequential) and any(isinstance(m, nn.LayerNorm) for m in project_in)
        return dict(
            dim=vq.dim, codebook_size=vq.codebook_size, codebook_dim=cb.embed.shape[-1], heads=vq.heads,
            separate_codebook_per_head=vq.separate_codebook_per_head, decay=float(cb.decay), eps=float(cb.eps),
            freeze_codebook=bool(getattr(vq, "freeze_codebook", False)), kmeans_init=not bool(cb.initted),
            kmeans_iters=int(cb.kmeans_iters), use_cosine_sim=bool(vq.use_cosine_sim),
            layernorm_after_project_in=layernorm, threshold_ema_dead_code=cb.threshold_ema_dead_code,
            channel_last=bool(vq.channel_last), accept_image_fmap=bool(vq.accept_image_fmap),
            accept_3d_fmap=bool(getattr(vq, "accept_3d_fmap", False)), commitment_weight=float(vq.commitment_weight),
            rotation_trick=bool(vq.rotation_trick), ema_update=bool(cb.ema_update),
            learnable_codebook=bool(vq.learnable_codebook),
            route_gradients_to_input=bool(getattr(vq, "route_gradients_to_input", True)),
        )

    @torch.no_grad()
    def load_vector_quantize_state_dict(self, state_dict: dict, *, seed: int = 0) -> None:
        """Load an upstream VectorQuantize ``state_dict()`` into this module (built with matching settings).

        Keys: ``_codebook.embed`` (H', K, d) with H' = heads for separate per-head codebooks else 1,
        ``_codebook.cluster_size`` (H', K), ``_codebook.embed_avg`` (H', K, d), ``_codebook.initted``, and
        ``project_in.*`` / ``project_out.*`` when this module has projections. Each (group, token) codebook gets
        its head's codebook (groups 1.. with 1% noise, see :meth:`from_vector_quantize`); the EMA statistics are
        copied to every group. Raises TypeError for a non-mapping, ValueError naming missing, unexpected or
        wrongly shaped keys.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        heads_books = self.heads if self.separate_codebook_per_head and self.heads > 1 else 1
        K, d = self.codebook_size, self.codebook_dim
        want = {"_codebook.embed": (heads_books, K, d), "_codebook.cluster_size": (heads_books, K),
                "_codebook.embed_avg": (heads_books, K, d), "_codebook.initted": ()}
        proj = {f"project_in.{k}": v for k, v in self.project_in.state_dict().items()}
        proj.update({f"project_out.{k}": v for k, v in self.project_out.state_dict().items()})
        want.update({k: tuple(v.shape) for k, v in proj.items()})
        ignorable = {"zero"}  # upstream's non-persistent constant
        missing = sorted(set(want) - set(state_dict))
        unexpected = sorted(k for k in set(state_dict) - set(want) - ignorable)
        if missing or unexpected:
            raise ValueError(f"state_dict does not match this module's settings: missing {missing}, "
                             f"unexpected {unexpected}")
        wrong = [f"{k}: expected {want[k]}, got {tuple(state_dict[k].shape)}" for k in want
                 if tuple(state_dict[k].shape) != want[k]]
        if wrong:
            raise ValueError(f"state_dict shapes do not match this module's settings ({'; '.join(wrong)})")

        q = self.quantizer
        M, Tp = q.codebooks.shape[:2]
        # which upstream codebook (head) each of the core's T' codebooks copies
        head_of = torch.arange(Tp) % heads_books if Tp > 1 else torch.zeros(1, dtype=torch.long)
        embed = state_dict["_codebook.embed"].detach().float().cpu()
        books = torch.stack([reduce_codebook(embed[h], K, M, seed=seed) for h in range(heads_books)],
                            dim=1)  # (M, H', K, d)
        q.codebooks.copy_(books[:, head_of].to(q.codebooks))
        cs = state_dict["_codebook.cluster_size"].detach().float().cpu()
        avg = state_dict["_codebook.embed_avg"].detach().float().cpu()
        self.cluster_size.copy_(cs[head_of].unsqueeze(0).expand(M, -1, -1))
        self.embed_avg.copy_(avg[head_of].unsqueeze(0).expand(M, -1, -1, -1))
        self.initted.copy_(torch.as_tensor(bool(state_dict["_codebook.initted"])))
        for name, module in (("project_in", self.project_in), ("project_out", self.project_out)):
            sub = {k[len(name) + 1:]: v for k, v in state_dict.items() if k.startswith(name + ".")}
            module.load_state_dict(sub, strict=True)
        q.reset_usage()

"""SwitchableTokenQuantizer: Switchable Token-Specific Codebook Quantization (STSCQ).

Tokens z (B, T, D) are quantized with M codebook groups; group m holds one codebook of K codes per
token position (token-specific) or one codebook for all tokens (token-shared). Each image uses one
group: picked by the router during training ("router", the default when M > 1) and, at inference,
the group of least total quantization error ("nearest", the paper's rule) or the router's argmax.
An image then costs T*ceil(log2 K) + ceil(log2 M) bits (:mod:`vqswitch.bits`).

Gradients of :meth:`SwitchableTokenQuantizer.forward` (exactly these, nothing else):
    quantized          -> z only, as the identity (straight-through); no gradient to codebooks.
    codebook_loss      -> codebooks only (the selected rows): mean ||sg(z) - q||^2.
    commitment_loss    -> z only: mean ||z - sg(q)||^2, weighted by ``commitment_weight`` in loss.
    router losses      -> router parameters only (features and errors are detached).
    indices, groups, group_errors, distances -> no gradient.
For "cosine", both losses compare l2-normalised z and codes, and ``quantized`` holds the
normalised code. Means are over all B*T*D elements; in training under DDP, over the global batch (every
rank's images: sums divided by the global count, so ranks holding unequal shares of a batch weigh each
image as one process does, and every rank must call forward, also with an empty share).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin

from vqswitch import bits as _bits
from vqswitch.kernels import BACKENDS, DEFAULT_MEMORY_BUDGET, METRICS, _nearest_codeword, _nearest_group, all_finite

from ._checks import (check_bool, check_choice, check_float_tensor, check_int, check_int_tensor, check_not_meta,
                      check_real)
from ._io import atomic_directory
from .codebooks import Utilization, add_code_counts, allocation, codebooks_from_latents, reduce_codebook, utilization
from .codes import Codes
from .distributed import gather_variable, global_ratio, world_size
from .router import Router, router_losses

__all__ = ["SwitchableTokenQuantizer", "QuantizerOutput", "SELECTIONS"]

SELECTIONS = ("router", "nearest")


@dataclass
class QuantizerOutput:
    """What :meth:`SwitchableTokenQuantizer.forward` returns.

    quantized: (B, T, D) z's dtype; each row is exactly a code of the selected (group, token)
        codebook (normalised for "cosine"); gradient to z is the identity.
    indices: (B, T) int64 code index per token, in [0, K).
    groups: (B,) int64 group per image, in [0, M).
    distances: (B, T) float32 distance of each token to its code (see kernels for the metric).
    loss: scalar = codebook_loss + commitment_weight * commitment_loss + weighted router losses.
    commitment_loss, codebook_loss: scalars.
    router_balance_loss, router_decision_loss, router_quality_loss: scalars (0 without a router).
    router_probs: (B, M) float32, or None without a router (M == 1).
    group_errors: (B, M) float32 per-group total error, or None when not computed.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    groups: torch.Tensor
    distances: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    router_balance_loss: torch.Tensor
    router_decision_loss: torch.Tensor
    router_quality_loss: torch.Tensor
    router_probs: torch.Tensor | None = None
    group_errors: torch.Tensor | None = None

    def codes(self, codebook_size: int, num_groups: int) -> Codes:
        """The discrete result as :class:`~vqswitch.codes.Codes`."""
        return Codes(self.groups, self.indices, codebook_size=codebook_size, num_groups=num_groups)


class _StraightThrough(torch.autograd.Function):
    """Forward: the code q, exactly (cast to z's dtype). Backward: the identity to z, nothing to q."""

    @staticmethod
    def forward(ctx, z, q):
        return q.detach().to(dtype=z.dtype, copy=True)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class SwitchableTokenQuantizer(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vqswitch",
    tags=["vqswitch", "vector-quantization", "image-tokenizer", "stscq"],
    paper_url="https://arxiv.org/abs/2510.22943",
):
    """STSCQ quantizer: M groups x (T or 1) codebooks x K codes x D dims.

    Args:
        num_tokens: T, tokens per image.
        codebook_size: K, codes per codebook.
        dim: D, token dimension.
        num_groups: M codebook groups (1 = no switching, no router).
        token_specific: one codebook per token position (True) or one per group (False).
        metric: "l2", "cosine" (l2 on l2-normalised vectors, as TiTok) or "dot" (largest inner
            product, as IBQ).
        commitment_weight: beta, the weight of the commitment loss.
        train_selection: group choice in training, "router" (default when M > 1) or "nearest".
        inference_selection: group choice in eval mode and in :meth:`encode`, "nearest" (least
            total error, default) or "router".
        router_hidden_dim, router_temperature: see :class:`~vqswitch.router.Router`.
        balance_weight, decision_weight, quality_weight: weights of the router losses L_ent,
            L_dec, L_qua in ``loss`` (defaults are vqswitch's; the paper does not publish them).
        track_usage: count code and group use in training (buffers ``usage``, ``group_counts``).
        check_finite: reject NaN/Inf inputs, and finite ones whose magnitudes the fp32 search cannot
            square exactly (see :func:`vqswitch.kernels.nearest_codeword`); one device sync per call.
        backend: search backend, "auto" | "torch" | "triton" (see :mod:`vqswitch.kernels`).
        memory_budget: bytes of temporary memory the search may hold at once.
    Raises:
        TypeError / ValueError naming the argument for a wrong type, value or choice.

    Token counts: a token-specific quantizer has one codebook per position and is tied to T (another T
    is a ValueError). A token-shared one (``token_specific=False``) has no reason to care about T, so
    ``forward``, ``encode``, ``decode``, ``lookup``, ``init_from_latents`` and ``revive_dead_codes``
    take any T' >= 1 (a convolutional tokenizer fed images of another size, non-square included): codes
    are searched in the same group codebooks, and :class:`~vqswitch.codes.Codes` record T'. The router's
    position weights are sized for T, so at T' != T each image's group is the one of least error
    ("nearest") whatever the selection settings, the router losses are 0 and ``router_probs`` is None.
    ``num_tokens``, ``bits_per_image`` and ``bpp`` describe T; codes of T' cost their own
    ``Codes.bits_per_image``.
    """

    def __init__(
        self,
        num_tokens: int,
        codebook_size: int,
        dim: int,
        num_groups: int = 1,
        token_specific: bool = True,
        metric: str = "l2",
        commitment_weight: float = 0.25,
        train_selection: str | None = None,
        inference_selection: str = "nearest",
        router_hidden_dim: int = 256,
        router_temperature: float = 1.0,
        balance_weight: float = 0.1,
        decision_weight: float = 0.01,
        quality_weight: float = 1.0,
        track_usage: bool = True,
        check_finite: bool = True,
        backend: str = "auto",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ):
        super().__init__()
        self.num_tokens = check_int("num_tokens", num_tokens, 1)
        self.codebook_size = check_int("codebook_size", codebook_size, 1)
        self.dim = check_int("dim", dim, 1)
        self.num_groups = check_int("num_groups", num_groups, 1)
        self.token_specific = check_bool("token_specific", token_specific)
        self.metric = check_choice("metric", metric, METRICS)
        if train_selection is None:
            train_selection = "router" if num_groups > 1 else "nearest"
        self.train_selection = check_choice("train_selection", train_selection, SELECTIONS)
        self.inference_selection = check_choice("inference_selection", inference_selection, SELECTIONS)
        if num_groups == 1 and "router" in (self.train_selection, self.inference_selection):
            raise ValueError("selection 'router' needs num_groups > 1 (with one group there is no router)")
        self.commitment_weight = check_real("commitment_weight", commitment_weight, 0)
        self.balance_weight = check_real("balance_weight", balance_weight, 0)
        self.decision_weight = check_real("decision_weight", decision_weight, 0)
        self.quality_weight = check_real("quality_weight", quality_weight, 0)
        self.router_hidden_dim = check_int("router_hidden_dim", router_hidden_dim, 1)
        self.router_temperature = check_real("router_temperature", router_temperature, 0, min_open=True)
        self.track_usage = check_bool("track_usage", track_usage)
        self.check_finite = check_bool("check_finite", check_finite)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.memory_budget = check_int("memory_budget", memory_budget, 1)

        tokens = num_tokens if token_specific else 1
        with allocation(f"the codebooks (num_groups*T'*codebook_size*dim = {num_groups}*{tokens}*{codebook_size}*{dim} "
                         "floats) and usage counts"):
            self.codebooks = nn.Parameter(torch.randn(num_groups, tokens, codebook_size, dim))
            self.register_buffer("usage", torch.zeros(num_groups, tokens, codebook_size, dtype=torch.long))
        with allocation(f"the router (num_tokens*router_hidden_dim + dim*router_hidden_dim = "
                         f"{num_tokens}*{router_hidden_dim} + {dim}*{router_hidden_dim} floats)"):
            self.router = (Router(num_tokens, dim, num_groups, router_hidden_dim, router_temperature)
                           if num_groups > 1 else None)
        self.register_buffer("group_counts", torch.zeros(num_groups, dtype=torch.long))

    # ------------------------------------------------------------------ config, bits
    def get_config(self) -> dict:
        """The constructor arguments that rebuild this quantizer (what ``config.json`` holds)."""
        keys = ("num_tokens", "codebook_size", "dim", "num_groups", "token_specific", "metric", "commitment_weight",
                "train_selection", "inference_selection", "router_hidden_dim", "router_temperature",
                "balance_weight", "decision_weight", "quality_weight", "track_usage", "check_finite",
                "backend", "memory_budget")
        return {k: getattr(self, k) for k in keys}

    @property
    def bits_per_image(self) -> int:
        """T*ceil(log2 K) + ceil(log2 M): fixed-length bits of one image's codes."""
        return _bits.bits_per_image(self.num_tokens, self.codebook_size, self.num_groups)

    def bpp(self, height: int, width: int) -> float:
        """Bits per pixel of an ``height x width`` image: bits_per_image / (height * width)."""
        return _bits.bpp(self.bits_per_image, height, width)

    def extra_repr(self) -> str:
        kind = "token-specific" if self.token_specific else "token-shared"
        return (f"T={self.num_tokens}, K={self.codebook_size}, D={self.dim}, M={self.num_groups}, {kind}, "
                f"metric={self.metric}, bits_per_image={self.bits_per_image}")

    # ------------------------------------------------------------------ validation
    def _check_z(self, z, finite: bool = True) -> torch.Tensor:
        """The one check of z for every public method: type, dtype, shape, device (the search trusts them); NaN/Inf
        too when ``finite`` (otherwise the search op checks the values itself, at run time, so that compiled
        graphs need no data-dependent branch here)."""
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor of shape (B, T, D), got {type(z).__name__}")
        check_float_tensor("z", z)
        if self.codebooks.is_meta:
            raise ValueError("the quantizer's weights are on the 'meta' device (no values): load them first "
                             "(from_pretrained, load_state_dict(..., assign=True), or to_empty() and an "
                             "initialisation)")
        if z.dim() != 3:
            raise ValueError(f"z must have shape (B, T={self.num_tokens}, D={self.dim}), got {tuple(z.shape)}")
        if (self.token_specific and z.shape[1] != self.num_tokens) or z.shape[2] != self.dim or z.shape[1] < 1:
            raise ValueError(f"z must have shape (B, T={self.num_tokens}, D={self.dim}), got {tuple(z.shape)}"
                             + (" (a token-specific quantizer has one codebook per position: it is tied to T)"
                                if self.token_specific and z.shape[2] == self.dim else ""))
        if z.device != self.codebooks.device:
            raise ValueError(f"z is on {z.device} but the quantizer is on {self.codebooks.device}")
        if finite and self.check_finite and z.numel() and not all_finite(z):
            raise ValueError("z contains NaN or Inf values")
        return z

    # ------------------------------------------------------------------ core
    def _lookup(self, groups: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """codes (B, T, D) of the codebooks' dtype for groups (B,) or (B, T) and indices (B, T); differentiable."""
        T = indices.shape[1]
        if self.token_specific:
            tok = torch.arange(T, device=indices.device)
        else:
            tok = torch.zeros(T, dtype=torch.long, device=indices.device)
        return self.codebooks[groups[:, None] if groups.dim() == 1 else groups, tok[None, :], indices]

    def lookup(self, groups: torch.Tensor, indices: torch.Tensor, *, check: bool = True) -> torch.Tensor:
        """The codes named by (group, index) per token, differentiable to the codebooks.

        Args:
            groups: (B,) int group per image, or (B, T) int group per token, in [0, M).
            indices: (B, T) int code index per token, in [0, K).
        Returns: (B, T, D) in the codebooks' dtype (l2-normalised for "cosine"), on the codebooks' device.
        check=False skips the validation (and its device sync) for ids the search itself produced.
        Raises: TypeError for non-integer tensors; ValueError for wrong shapes or out-of-range values.
        """
        if not check:
            q = self._lookup(groups, indices)
            return F.normalize(q, dim=-1) if self.metric == "cosine" else q
        for name, t in (("groups", groups), ("indices", indices)):
            check_not_meta(name, check_int_tensor(name, t))
        if indices.dim() != 2 or (self.token_specific and indices.shape[1] != self.num_tokens):
            raise ValueError(f"indices must have shape (B, T={self.num_tokens}), got {tuple(indices.shape)}")
        if groups.shape not in (indices.shape[:1], indices.shape):
            raise ValueError(f"groups must have shape (B,) or (B, T) = {tuple(indices.shape)}, "
                             f"got {tuple(groups.shape)}")
        for name, t, hi in (("groups", groups, self.num_groups), ("indices", indices, self.codebook_size)):
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= hi):
                raise ValueError(f"{name} must lie in [0, {hi}), got values in [{int(t.min())}, {int(t.max())}]")
        dev = self.codebooks.device
        q = self._lookup(groups.to(dev, torch.long), indices.to(dev, torch.long))
        return F.normalize(q, dim=-1) if self.metric == "cosine" else q

    def _select(self, z: torch.Tensor, selection: str, probs: torch.Tensor | None, need_errors: bool):
        """Search: (groups, indices, distances, group_errors or None); no gradient.

        z was checked by :meth:`_check_z` (and the settings by the constructor), so the kernels' trusted entry
        points are called: the op itself still checks the values (NaN/Inf)."""
        cb = self.codebooks.detach()
        args = (self.metric, self.backend, self.memory_budget)
        if selection == "nearest":
            r = _nearest_group(z, cb, *args, self.check_finite)
            return r.groups, r.indices, r.distances.float(), r.group_errors.float()
        groups = probs.argmax(dim=-1)
        r = _nearest_codeword(z, cb, groups, *args, self.check_finite)
        errors = _nearest_group(z, cb, *args, False).group_errors.float() if need_errors else None
        return groups, r.indices, r.distances.float(), errors

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize z: (B, T, D) float -> :class:`QuantizerOutput` (see the module docstring for gradients).

        Group selection follows ``train_selection`` in training mode and ``inference_selection`` in
        eval mode. In training, code and group counts are accumulated (summed over DDP ranks).
        A token-shared quantizer takes z of any T (see the class docstring).
        Raises TypeError/ValueError for a non-tensor, non-float, 'meta', wrong-shape or non-finite z, or z on
        another device than the quantizer.
        """
        z = self._check_z(z, finite=False)
        B = z.shape[0]
        selection = self.train_selection if self.training else self.inference_selection
        sync = self.training and world_size() > 1  # batch means over every rank's images (see router_losses)
        if z.shape[1] != self.num_tokens:  # token-shared at another T: the router is sized for T (see class docs)
            selection = "nearest"
        router = self.router if z.shape[1] == self.num_tokens else None
        probs = router(z.detach()) if router is not None and (B or sync) else None
        need_errors = self.training and router is not None and self.quality_weight > 0
        # No torch.no_grad() around the search: its inputs are detached and its ops have no autograd, and
        # an exception raised inside a no_grad block of a compiled graph would leave grad mode off.
        if B:
            groups, indices, distances, errors = self._select(z.detach(), selection, probs, need_errors)
        else:
            groups = torch.zeros(0, dtype=torch.long, device=z.device)
            indices = torch.zeros(0, z.shape[1], dtype=torch.long, device=z.device)
            distances = torch.zeros(0, z.shape[1], device=z.device)
            errors = None
        q = self._lookup(groups, indices)
        zq = F.normalize(z, dim=-1) if self.metric == "cosine" else z
        q = F.normalize(q, dim=-1) if self.metric == "cosine" else q
        zero = z.sum() * 0.0  # keeps empty batches differentiable
        if sync:  # sums over the global batch / its global size: ranks may hold unequal shares of a batch
            sums = torch.stack([(q.float() - zq.detach().float()).square().sum(),
                                (zq.float() - q.detach().float()).square().sum()])
            if not B:  # an empty share still gives the codebooks a (zero) gradient, as the other ranks' do
                sums = sums + self.codebooks.sum() * 0.0
            means = global_ratio(sums, sums.new_full((2,), float(B * z.shape[1] * z.shape[2])).detach())
            codebook_loss, commitment_loss = means[0], means[1]
        elif B:
            codebook_loss = F.mse_loss(q.float(), zq.detach().float())
            commitment_loss = F.mse_loss(zq.float(), q.detach().float())
        else:
            codebook_loss = commitment_loss = zero + self.codebooks.sum() * 0.0
        if probs is not None:
            rl = router_losses(probs, errors, sync=self.training)
        else:
            rl = {"balance": zero.float(), "decision": zero.float(), "quality": zero.float()}
        loss = self._weighted_router_loss(rl["balance"], rl["decision"], rl["quality"],
                                          plus=codebook_loss + self.commitment_weight * commitment_loss)
        if self.training and self.track_usage:
            self.record_usage(groups, indices)
        return QuantizerOutput(
            quantized=_StraightThrough.apply(z, q), indices=indices, groups=groups, distances=distances,
            loss=loss, commitment_loss=commitment_loss, codebook_loss=codebook_loss,
            router_balance_loss=rl["balance"], router_decision_loss=rl["decision"], router_quality_loss=rl["quality"],
            router_probs=probs, group_errors=errors,
        )

    def router_loss(self, out: QuantizerOutput) -> torch.Tensor:
        """The router's share of ``out.loss``: balance_weight * L_ent + decision_weight * L_dec + quality_weight *
        L_qua, a float32 scalar (0 without a router); differentiable to the router. The one place the weighted sum
        is formed: a wrapper that builds its own loss (an adapter's shim, ``vqswitch.compat``) adds this."""
        return self._weighted_router_loss(out.router_balance_loss, out.router_decision_loss, out.router_quality_loss)

    def _weighted_router_loss(self, balance: torch.Tensor, decision: torch.Tensor, quality: torch.Tensor,
                              plus: torch.Tensor | None = None) -> torch.Tensor:
        """``[plus +] bw * balance + dw * decision + qw * quality``, summed left to right (forward's loss adds the
        terms one by one to the quantization losses, as it always has: the same bits)."""
        terms = (self.balance_weight * balance, self.decision_weight * decision, self.quality_weight * quality)
        total = terms[0] if plus is None else plus + terms[0]
        return total + terms[1] + terms[2]

    @torch.no_grad()
    def record_usage(self, groups: torch.Tensor, indices: torch.Tensor) -> None:
        """Add codes to the usage buffers (``usage`` (M, T, K), ``group_counts`` (M,)), gathered over DDP ranks.

        Training forwards do this themselves (``track_usage``); call it for codes chosen elsewhere, e.g. to
        re-count usage over a dataset with :meth:`encode`. Every rank must call it (a rank with no images passes
        empty tensors), as it gathers.

        Args:
            groups: (B,) int64 group ids in [0, M).
            indices: (B, T) int64 code indices in [0, K), on the quantizer's device.
        """
        all_indices = gather_variable(indices.reshape(-1)).view(-1, indices.shape[1])  # every rank's images
        add_code_counts(self.usage, self.group_counts, gather_variable(groups), all_indices)

    # ------------------------------------------------------------------ codes
    def encode(self, z: torch.Tensor) -> Codes:
        """z: (B, T, D) float -> :class:`Codes` using ``inference_selection``; no gradient, no usage counting.

        Raises the errors of :meth:`forward`."""
        z = self._check_z(z, finite=False).detach()
        if z.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.long, device=z.device)
            return Codes(empty, empty.view(0, 1).expand(0, z.shape[1]), self.codebook_size, self.num_groups)
        probs = None
        selection = self.inference_selection if z.shape[1] == self.num_tokens else "nearest"
        if selection == "router":
            with torch.no_grad():  # nothing in here raises on bad data; the search below does
                probs = self.router(z)
        groups, indices, _, _ = self._select(z, selection, probs, need_errors=False)
        return Codes(groups, indices, codebook_size=self.codebook_size, num_groups=self.num_groups)

    def decode(self, codes: Codes) -> torch.Tensor:
        """:class:`Codes` -> quantized tokens (B, T, D) in the codebooks' dtype (normalised for "cosine").

        Equal in value to ``forward(z).quantized`` for ``codes = encode(z)`` in eval mode.
        Raises TypeError for a non-Codes argument, ValueError when its K or M differ from this
        quantizer's, or its T when token-specific (index ranges are checked by Codes itself). A
        token-shared quantizer decodes codes of any T (see the class docstring).
        """
        if not isinstance(codes, Codes):
            raise TypeError(f"codes must be a vqswitch.Codes, got {type(codes).__name__}")
        want = (self.num_tokens, self.codebook_size, self.num_groups)
        got = (codes.num_tokens, codes.codebook_size, codes.num_groups)
        if got[1:] != want[1:] or (self.token_specific and got[0] != want[0]):
            raise ValueError(f"codes were made for (T, K, M)={got} but this quantizer has (T, K, M)={want}")
        dev = self.codebooks.device
        q = self._lookup(codes.groups.to(dev), codes.indices.to(dev))
        return F.normalize(q, dim=-1) if self.metric == "cosine" else q

    # ------------------------------------------------------------------ initialisation
    @classmethod
    def from_codebook(cls, weight: torch.Tensor, num_tokens: int, codebook_size: int | None = None,
                      num_groups: int = 1, *, seed: int = 0, **kwargs) -> "SwitchableTokenQuantizer":
        """Build a quantizer from a pretrained global codebook.

        Args:
            weight: (K0, D) float pretrained codebook.
            num_tokens: T. codebook_size: K <= K0 (default K0). num_groups: M.
            seed: seeds the reduction; kwargs: any other constructor argument (token_specific, metric...).
        K == K0 copies the codebook (groups > 0 get 1% noise); K < K0 k-means-reduces it per group from
        different starts (see :func:`~vqswitch.codebooks.reduce_codebook`). Every token's codebook
        starts equal to its group's.
        Raises TypeError/ValueError for a non-(K0, D) float weight, a 'meta' or non-finite weight, or K > K0.
        """
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or weight.dim() != 2:
            raise TypeError(f"weight must be a (K0, D) float tensor, got {getattr(weight, 'shape', type(weight))}")
        check_not_meta("weight", weight)
        if weight.numel() and not all_finite(weight):
            raise ValueError("weight (the pretrained codebook) contains NaN or Inf values")
        K = weight.shape[0] if codebook_size is None else codebook_size
        q = cls(num_tokens=num_tokens, codebook_size=K, dim=weight.shape[1], num_groups=num_groups, **kwargs)
        books = reduce_codebook(weight, K, num_groups, metric=q.metric, seed=seed)  # (M, K, D)
        with torch.no_grad():
            q.codebooks.copy_(books.unsqueeze(1).expand_as(q.codebooks))
        return q

    @torch.no_grad()
    def to_token_specific(self) -> "SwitchableTokenQuantizer":
        """Stage 1 -> 2: give every token its own copy of its group's codebook (in place; returns self).

        The codebooks parameter is replaced (rebuild optimizers after this); usage counts are copied
        per token. A quantizer that is already token-specific is returned unchanged.
        """
        if self.token_specific:
            return self
        T = self.num_tokens
        self.codebooks = nn.Parameter(self.codebooks.data.expand(-1, T, -1, -1).clone())
        self.usage = self.usage.expand(-1, T, -1).clone()
        self.token_specific = True
        return self

    @torch.no_grad()
    def init_from_latents(self, z: torch.Tensor, *, iters: int = 10, seed: int = 0) -> torch.Tensor:
        """Data-driven start from encoder outputs z (N, T, D): per-group, per-token k-means.

        Images are clustered into M groups first (see :func:`~vqswitch.codebooks.codebooks_from_latents`).
        Resets usage counts. Returns the (N,) int64 group each image was clustered into.
        A codebook is fitted to the points of its group: N/M images per (group, token) codebook when
        token-specific, N*T/M tokens when shared. With fewer points than its K codes, every point becomes
        a code and the rest are copies of points with small noise (then a UserWarning says so: give at
        least K*M images token-specific, K*M/T shared); a group no image falls in is fitted to all images.
        Raises TypeError for a non-float z (integers are not cast), ValueError for a wrong shape, an empty,
        'meta' or non-finite z.
        """
        z = self._check_z(z)
        if z.shape[0] == 0:
            raise ValueError("z must hold at least one image to initialise from")
        points = z.shape[0] * (1 if self.token_specific else z.shape[1])  # per codebook, when groups split evenly
        if points < self.codebook_size * self.num_groups:
            warnings.warn(f"init_from_latents got {z.shape[0]} images for {self.num_groups} group(s) of "
                          f"{self.codebook_size} codes{' per token' if self.token_specific else ''}: a codebook then "
                          f"sees about {points / self.num_groups:.3g} points for its {self.codebook_size} codes, so "
                          "some codes start as noisy copies of the same point (give at least "
                          f"{math.ceil(self.codebook_size * self.num_groups / (points // z.shape[0]))} images)",
                          UserWarning, stacklevel=2)
        books, image_groups = codebooks_from_latents(z, self.codebook_size, self.num_groups, self.token_specific,
                                                     metric=self.metric, iters=iters, seed=seed)
        self.codebooks.copy_(books.to(self.codebooks.dtype))
        self.reset_usage()
        return image_groups

    # ------------------------------------------------------------------ usage
    def reset_usage(self) -> None:
        """Zero the code and group usage counts."""
        self.usage.zero_()
        self.group_counts.zero_()

    def utilization(self) -> Utilization:
        """Code utilisation from the recorded usage (the paper's Table 4): min/max/mean/std over
        (group, token) codebooks of the fraction of codes used, and the group histogram."""
        return utilization(self.usage, self.group_counts)

    @torch.no_grad()
    def revive_dead_codes(self, z: torch.Tensor, threshold: int = 0, *, seed: int = 0) -> int:
        """Replace codes used at most ``threshold`` times with random recent inputs.

        Args:
            z: (N, T, D) float recent encoder outputs; token t's dead codes are refilled from z[:, t]
               (from all tokens when token-shared), with 1% noise so copies differ.
        Returns the number of codes replaced; their usage counts restart at 0. Call it every few
        hundred steps, after enough images for the counts to mean something.
        """
        z = self._check_z(z)
        if z.shape[0] == 0:
            raise ValueError("z must hold at least one image to revive codes from")
        dead = self.usage <= threshold  # (M, T', K)
        n = int(dead.sum())
        if n == 0:
            return 0
        gen = torch.Generator(device=z.device).manual_seed(seed)
        src = z.detach().to(self.codebooks.dtype)
        src = F.normalize(src, dim=-1) if self.metric == "cosine" else src
        m_idx, t_idx, k_idx = dead.nonzero(as_tuple=True)
        img = torch.randint(0, z.shape[0], (n,), generator=gen, device=z.device)
        tok = t_idx if self.token_specific else torch.randint(0, z.shape[1], (n,), generator=gen, device=z.device)
        rows = src[img, tok.to(z.device)]
        rows = rows + 0.01 * rows.std().nan_to_num(1.0) * torch.randn(rows.shape, generator=gen, device=z.device)
        self.codebooks[m_idx, t_idx, k_idx] = rows.to(self.codebooks.device)
        self.usage[dead] = 0
        return n

    # ------------------------------------------------------------------ Hub I/O
    def save_pretrained(self, save_directory, *, config: dict | None = None, **kwargs):
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` to save_directory.

        Each file is written atomically (a failed save leaves the previous files intact). Takes the
        keyword arguments of ``PyTorchModelHubMixin.save_pretrained`` (``push_to_hub``, ``repo_id``...).
        """
        push = kwargs.pop("push_to_hub", False)
        repo_id = kwargs.pop("repo_id", None)
        card_kwargs = kwargs.pop("model_card_kwargs", None)
        config = config or self.get_config()
        with atomic_directory(save_directory) as tmp:
            super().save_pretrained(tmp, config=config, model_card_kwargs=card_kwargs)
        if push:  # every remaining keyword (token, private, branch, commit_message...) goes to the push
            return self.push_to_hub(repo_id=repo_id or Path(save_directory).name, config=config,
                                    model_card_kwargs=card_kwargs, **kwargs)
        return None

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """A model card with the configuration, bits and bpp, and recorded utilisation."""
        cfg = self.get_config()
        rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in cfg.items())
        util = self.utilization()
        used = "" if math.isnan(util.mean) else (
            f"\n## Recorded codebook utilisation\n\nmin {util.min:.3f}, max {util.max:.3f}, "
            f"mean {util.mean:.3f}, std {util.std:.3f} (fraction of each codebook's codes used in training)\n")
        meta = self._hub_mixin_info.model_card_data.to_yaml()
        books = "one codebook per token" if self.token_specific else "one codebook shared by all tokens"
        K, D, T = self.codebook_size, self.dim, self.num_tokens
        content = f"""---
{meta}
---

# SwitchableTokenQuantizer (vqswitch)

A [Switchable Token-Specific Codebook Quantization](https://arxiv.org/abs/2510.22943) quantizer:
M={self.num_groups} codebook groups, {books},
K={K} codes of dimension D={D}, for T={T} tokens per image, metric `{self.metric}`.

## Bits

- bits per image = T*ceil(log2 K) + ceil(log2 M) = **{self.bits_per_image}**
- bpp at 256x256: **{self.bpp(256, 256):.4f}**; at 512x512: {self.bpp(512, 512):.4f}

## Use

```python
from vqswitch import SwitchableTokenQuantizer
quantizer = SwitchableTokenQuantizer.from_pretrained("REPO_OR_DIR")
codes = quantizer.encode(z)          # z: (B, {self.num_tokens}, {self.dim}) encoder tokens
z_q = quantizer.decode(codes)        # (B, {self.num_tokens}, {self.dim})
data = codes.to_bytes()              # {self.bits_per_image} payload bits per image
```

## Configuration

| key | value |
|---|---|
{rows}
{used}"""
        return ModelCard(content)

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        """Load weights, refusing (ValueError) weights that disagree with config.json."""
        from safetensors import safe_open

        expected = model.state_dict()
        with safe_open(model_file, framework="pt", device=str(map_location)) as f:
            keys = set(f.keys())
            missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
            if missing or unexpected:
                raise ValueError(f"{model_file} does not match config.json: missing {missing}, unexpected {unexpected}")
            state = {k: f.get_tensor(k) for k in keys}
        bad = [f"{k}: config.json implies {tuple(expected[k].shape)}, file has {tuple(v.shape)}"
               for k, v in state.items() if v.shape != expected[k].shape]
        if bad:
            raise ValueError(f"{model_file} does not match config.json ({'; '.join(bad)})")
        model.load_state_dict(state, strict=True)
        model.to(map_location)
        model.eval()
        return model

"""The adapter contract: what every tokenizer adapter provides, and the shim base they share.

An *adapter* knows one tokenizer family (diffusers ``VQModel``, MaskGIT-VQGAN, TiTok, IBQ): how to
recognise a model of it by duck typing (never by importing upstream code), where its codebook,
metric and token count are, how its encoder output becomes tokens ``z (B, T, D)`` and back, and
what its quantizer's call signature returns. A *shim* is the module that replaces
``model.quantize``: it runs a :class:`~vqswitch.SwitchableTokenQuantizer` and answers in the
upstream quantizer's exact structure, so upstream callers run unchanged.

Index representation after a swap (one rule for every adapter)
    Upstream code passes bare indices around (``get_codebook_entry``, decode-from-indices paths).
    With M groups an index alone no longer names a vector, so a shim's indices are **flat ids**
    ``id = g * K + k`` (group g of the image, code k), in [0, M*K), int64, in upstream's index
    layout. With M = 1 they are plain code indices, exactly as upstream. A token's codebook is
    fixed by its position t, which every index layout keeps (row-major per image), so
    ``get_codebook_entry`` recovers (g, t, k) from a flat id and its position. The compact
    :class:`~vqswitch.Codes` (the group once per image, then T indices) stays the canonical form
    for bits and bitstreams: see :func:`vqswitch.adapters.encode_codes`.
"""
from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn as nn

from vqswitch import _checks
from vqswitch.quantizer import QuantizerOutput, SwitchableTokenQuantizer

__all__ = ["GridAdapter", "Adapter", "QuantizerShim", "register", "adapters", "adapter_for", "adapter_named",
           "check_images", "check_fits"]


class QuantizerShim(nn.Module):
    """Base of every adapter's replacement for ``model.quantize``.

    Holds ``quantizer`` (a :class:`~vqswitch.SwitchableTokenQuantizer`, so its parameters and
    buffers are the model's, under ``quantize.quantizer.*``) and ``last_output``, the
    :class:`~vqswitch.quantizer.QuantizerOutput` of the latest call (router probabilities, groups,
    loss parts), for training code that needs more than the upstream return structure.
    Subclasses implement the upstream signature on top of :meth:`quantize_tokens`.

    Settings: the upstream quantizer's settings a shim keeps (its loss weights, index layout flags ...) are
    declared once, in the class's :attr:`SETTINGS` (name -> upstream default), under upstream's own attribute
    names. The constructor takes them as keywords (``Shim(quantizer, beta=0.25)``) and sets each as an
    attribute, :meth:`settings` returns them (what a saved config records), :meth:`settings_of` reads them from
    an upstream quantizer (or a shim) and :meth:`from_upstream` builds a shim with them.
    """

    adapter_name: ClassVar[str] = ""
    #: name -> upstream default of every setting the shim keeps (values: float, bool or str, JSON-serialisable)
    SETTINGS: ClassVar[Mapping[str, Any]] = {}
    #: the setting that weighs the commitment term in upstream's loss (its beta), or None
    COMMITMENT: ClassVar[str | None] = None

    def __init__(self, quantizer: SwitchableTokenQuantizer, **settings):
        """Raises TypeError for a non-quantizer or a keyword that is not one of :attr:`SETTINGS`."""
        super().__init__()
        if not isinstance(quantizer, SwitchableTokenQuantizer):
            raise TypeError(f"quantizer must be a vqswitch.SwitchableTokenQuantizer, got {type(quantizer).__name__}")
        unknown = sorted(set(settings) - set(self.SETTINGS))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting(s) {unknown}; its settings are "
                            f"{sorted(self.SETTINGS)}")
        self.quantizer = quantizer
        self.last_output: QuantizerOutput | None = None
        for key, default in self.SETTINGS.items():
            setattr(self, key, self._setting(key, settings.get(key, default)))

    # ---------------------------------------------------------------- settings
    @classmethod
    def _setting(cls, key: str, value):
        """``value`` for the setting ``key``, as the type of its default (``float(beta)``, ``bool(legacy)``)."""
        return type(cls.SETTINGS[key])(value)

    def settings(self) -> dict[str, Any]:
        """The shim's settings, ``{name: value}`` for every key of :attr:`SETTINGS` (JSON-serialisable)."""
        return {key: getattr(self, key) for key in self.SETTINGS}

    @classmethod
    def settings_of(cls, module: nn.Module) -> dict[str, Any]:
        """The settings ``module`` (an upstream quantizer, or a shim of this class) holds: each key of
        :attr:`SETTINGS` read from its attribute of that name, the upstream default where it has none."""
        return {key: cls._setting(key, getattr(module, key, default)) for key, default in cls.SETTINGS.items()}

    @classmethod
    def from_upstream(cls, quantizer: SwitchableTokenQuantizer, upstream: nn.Module, **kwargs) -> "QuantizerShim":
        """A shim running ``quantizer`` with the settings of ``upstream`` (:meth:`settings_of`); ``kwargs`` go
        to the constructor too."""
        return cls(quantizer, **cls.settings_of(upstream), **kwargs)

    # ---------------------------------------------------------------- flat ids
    @property
    def vocab_size(self) -> int:
        """M * K: the number of distinct flat ids this shim can emit."""
        return self.quantizer.num_groups * self.quantizer.codebook_size

    def flat_ids(self, groups: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """groups (B,) int64, indices (B, T) int64 -> flat ids (B, T) int64, ``g * K + k``."""
        return groups[:, None] * self.quantizer.codebook_size + indices

    def check_ids(self, ids, *, what: str = "indices") -> torch.Tensor:
        """Validate flat ids (any shape): an integer tensor with values in [0, M*K). Returns them as int64.

        Raises TypeError for a non-integer tensor, ValueError for an id out of range (naming ``what``).
        """
        _checks.check_int_tensor(what, ids)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"{what} must lie in [0, M*K={self.vocab_size}) (flat ids g*K+k), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        return ids.long()

    def split_ids(self, ids: torch.Tensor, *, what: str = "indices") -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ids of any shape holding B*T entries (row-major per image) -> (groups (B, T), indices (B, T)).

        Raises TypeError for a non-integer tensor; ValueError when the count is not a multiple of T
        or an id lies outside [0, M*K) (the message names ``what``).
        """
        ids = self.check_ids(ids, what=what)
        T = self.quantizer.num_tokens
        if ids.numel() % T:
            raise ValueError(f"{what} must hold a multiple of T={T} ids (T per image, row-major), got {ids.numel()}")
        ids = ids.reshape(-1, T)
        K = self.quantizer.codebook_size
        return ids // K, ids % K

    def lookup_ids(self, ids: torch.Tensor, *, what: str = "indices") -> torch.Tensor:
        """Flat ids (any shape) -> codes of shape ``ids.shape + (D,)`` in the codebooks' dtype
        (l2-normalised for "cosine"), differentiable to the codebooks.

        With token-specific codebooks a token's position picks its codebook, so ``ids`` must hold a
        multiple of T entries, row-major per image; token-shared codebooks take ids of any count.
        Raises TypeError/ValueError as :meth:`split_ids`.
        """
        q = self.quantizer
        if q.token_specific:
            groups, indices = self.split_ids(ids, what=what)
            return q.lookup(groups, indices).reshape(*ids.shape, q.dim)
        flat = self.check_ids(ids, what=what).to(q.codebooks.device)
        codes = q.codebooks[flat // q.codebook_size, 0, flat % q.codebook_size]
        return torch.nn.functional.normalize(codes, dim=-1) if q.metric == "cosine" else codes

    def lookup_grid(self, indices: torch.Tensor, shape=None) -> torch.Tensor:
        """The ``get_codebook_entry(indices, shape)`` of the convolutional tokenizers (diffusers, IBQ).

        indices: flat ids (B*h*w entries, row-major per image); shape: (B, h, w, D) or None.
        Returns (B, D, h, w) contiguous with ``shape``, else (N, D) rows, in the codebooks' dtype.
        Raises TypeError/ValueError for bad ids (:meth:`lookup_ids`) or a shape that does not match their count.
        """
        codes = self.lookup_ids(indices.reshape(-1), what="indices")
        if shape is None:
            return codes
        shape = tuple(int(s) for s in shape)
        D = self.quantizer.dim
        if len(shape) != 4 or shape[0] * shape[1] * shape[2] != codes.shape[0] or shape[3] != D:
            raise ValueError(f"shape must be (B, h, w, D={D}) with B*h*w = {codes.shape[0]} indices, got {shape}")
        return codes.view(shape).permute(0, 3, 1, 2).contiguous()

    # ---------------------------------------------------------------- the quantizer call
    def check_grid(self, z, *, name: str = "z", layout: str = "(B, D, h, w)", channel: str = "D") -> None:
        """Check an upstream quantizer input: a 4-D float tensor with the quantizer's D channels in dim 1 and
        h*w == T. Raises TypeError (not a 4-D float tensor) or ValueError (channels, token count), naming
        ``name``, its ``layout`` and the ``channel`` letter upstream uses."""
        if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.dim() != 4:
            raise TypeError(f"{name} must be a float tensor {layout}, got {getattr(z, 'shape', type(z).__name__)}")
        if z.shape[1] != self.quantizer.dim:
            raise ValueError(f"{name} must have {channel}={self.quantizer.dim} channels, got shape {tuple(z.shape)}")
        self.check_token_count(z.shape[2] * z.shape[3], tuple(z.shape[2:]))

    def check_token_count(self, count: int, grid: tuple[int, ...]) -> None:
        """Raise ValueError when a latent grid gives another token count than the quantizer's T and the
        quantizer is token-specific (tied to its grid: one codebook per position). A token-shared
        quantizer takes grids of any size, as the upstream convolutional tokenizers do."""
        if count != self.quantizer.num_tokens and (self.quantizer.token_specific or count < 1):
            raise ValueError(f"the latent grid {'x'.join(map(str, grid))} gives {count} tokens per image, but the "
                             f"quantizer was built for T={self.quantizer.num_tokens} (images of another size? build "
                             "the quantizer with quantizer_from_model(..., image_size=(H, W)))")

    def quantize_tokens(self, z: torch.Tensor) -> tuple[QuantizerOutput, torch.Tensor]:
        """Run the quantizer on z (B, T, D) float.

        Returns (output, codes): ``output`` as :meth:`SwitchableTokenQuantizer.forward` (also kept in
        ``last_output``), and ``codes`` (B, T, D) in z's dtype: the selected codebook rows
        (normalised for "cosine"), differentiable to the codebooks, so each shim can build its
        upstream loss and straight-through expression with upstream's exact arithmetic.
        """
        out = self.quantizer(z)
        self.last_output = out
        codes = self.quantizer.lookup(out.groups, out.indices, check=False)
        return out, codes.to(z.dtype)

    def add_router_loss(self, loss: torch.Tensor, out: QuantizerOutput) -> torch.Tensor:
        """``loss`` (upstream's quantizer loss) plus the quantizer's weighted router losses of ``out``
        (:meth:`~vqswitch.SwitchableTokenQuantizer.router_loss`), or ``loss`` itself when the quantizer has no
        router (M = 1). Every shim's loss goes through here."""
        q = self.quantizer
        if q.router is None:
            return loss
        return loss + q.router_loss(out)

    def extra_repr(self) -> str:
        return f"adapter={self.adapter_name!r}, flat ids in [0, {self.vocab_size})"


class Adapter(abc.ABC):
    """One tokenizer family. Subclasses set the class attributes and implement every abstract method.

    Attributes:
        name: the adapter's registry name (also written into saved swapped checkpoints).
        pixel_range: (lo, hi), the pixel range the model's images use.
        shim_class: the :class:`QuantizerShim` subclass that replaces ``model.quantize``.
        fixed_tokens: whether T is fixed by the architecture (TiTok) rather than by the image size
            (convolutional tokenizers: then a token-shared quantizer takes grids of any size, as upstream
            does, and a token-specific one, tied to one grid, refuses another size per call).
        upstream_quantizer, upstream_attrs: the upstream quantizer's name (for messages) and the attributes it
            has besides its ``nn.Embedding`` codebook ``embedding`` (what :meth:`check_upstream_quantizer`
            requires of the built-in families).
    """

    name: ClassVar[str] = ""
    pixel_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    shim_class: ClassVar[type[QuantizerShim]] = QuantizerShim
    fixed_tokens: ClassVar[bool] = False
    upstream_quantizer: ClassVar[str] = "the upstream vector quantizer"
    upstream_attrs: ClassVar[tuple[str, ...]] = ()

    # ---- recognition and facts about the model
    @abc.abstractmethod
    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` (vqswitch's own class or upstream's) belongs to this family (duck-typed)."""

    def is_swapped(self, model: nn.Module) -> bool:
        return isinstance(getattr(model, "quantize", None), self.shim_class)

    # ---- where the quantizer sits (hooks: ``model.quantize`` for the built-in families; the generic
    # adapter of :mod:`vqswitch.adapters.generic` puts it at a user-given attribute path)
    def quantize_module(self, model: nn.Module) -> nn.Module:
        """The module that quantizes: the upstream quantizer, or the shim after a swap."""
        return model.quantize

    def set_quantize_module(self, model: nn.Module, module: nn.Module) -> None:
        """Put ``module`` (a shim) where the model's quantizer sits."""
        model.quantize = module

    def shim_from_settings(self, quantizer: SwitchableTokenQuantizer, settings: dict) -> QuantizerShim:
        """A shim running ``quantizer`` with the settings a saved config recorded (:meth:`QuantizerShim.settings`)."""
        return self.shim_class(quantizer, **settings)

    def check_base(self, model: nn.Module, base_config: dict) -> None:
        """Raise ValueError when a model given to ``load_swapped(model=...)`` does not fit ``base_config``
        (the built-in families leave this to the strict state-dict load)."""
        return None

    def check_upstream_quantizer(self, model: nn.Module) -> None:
        """Raise ValueError when the model's quantizer is neither upstream's kind of quantizer nor a shim.

        The built-in families' quantizers hold one ``nn.Embedding`` codebook ``embedding`` and the attributes
        :attr:`upstream_attrs`; an adapter whose family differs overrides this and :meth:`codebook`."""
        quantize = self.quantize_module(model)
        if isinstance(quantize, self.shim_class):
            return
        if not isinstance(getattr(quantize, "embedding", None), nn.Embedding) or not all(
                hasattr(quantize, a) for a in self.upstream_attrs):
            need = ", ".join(["an nn.Embedding codebook `embedding`"] + [f"`{a}`" for a in self.upstream_attrs])
            raise ValueError(f"model.quantize is a {type(quantize).__name__}, not {self.upstream_quantizer} ({need})")

    def codebook(self, model: nn.Module) -> torch.Tensor:
        """The upstream codebook (K0, D) of an unswapped model.
        Raises ValueError as :meth:`check_upstream_quantizer`."""
        self.check_upstream_quantizer(model)
        return self.quantize_module(model).embedding.weight

    @abc.abstractmethod
    def metric(self, model: nn.Module) -> str:
        """How the model picks codes: "l2", "cosine" or "dot"."""

    @abc.abstractmethod
    def num_tokens(self, model: nn.Module, image_size: tuple[int, int] | None = None) -> int:
        """T, the tokens per image (of ``image_size`` (H, W), default the configured size).
        Raises ValueError for a size the model cannot take."""

    @abc.abstractmethod
    def image_size(self, model: nn.Module) -> tuple[int, int]:
        """(H, W) of the images the model (and hence T) is configured for."""

    @abc.abstractmethod
    def image_channels(self, model: nn.Module) -> int:
        """C of the images the model takes."""

    def commitment_weight(self, model: nn.Module) -> float:
        """The weight of the commitment term in the model's own loss (its beta): the shim's
        :attr:`~QuantizerShim.COMMITMENT` setting, read from the model's quantizer (upstream or shim)."""
        return float(self.shim_class.settings_of(self.quantize_module(model))[self.shim_class.COMMITMENT])

    # ---- the swap
    def make_shim(self, model: nn.Module, quantizer: SwitchableTokenQuantizer) -> QuantizerShim:
        """A shim for ``model`` running ``quantizer``, with the settings of the model's quantizer
        (:meth:`QuantizerShim.from_upstream`; a swapped model's shim keeps its own).

        Raises ValueError when the quantizer's D, T or metric does not fit the model.
        """
        check_fits(quantizer, dim=self.codebook_dim(model), metric=self.metric(model), family=self.name,
                   num_tokens=self.num_tokens(model) if self.fixed_tokens else None)
        return self.shim_class.from_upstream(quantizer, self.quantize_module(model))

    def codebook_dim(self, model: nn.Module) -> int:
        """D, the width of the model's codes (from the upstream quantizer or the shim)."""
        quantize = self.quantize_module(model)
        if isinstance(quantize, QuantizerShim):
            return quantize.quantizer.dim
        return int(self.codebook(model).shape[1])

    # ---- images <-> tokens, around the quantizer
    @abc.abstractmethod
    def encode_latents(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) in ``pixel_range`` -> encoder tokens z (B, T, D), before quantization."""

    @abc.abstractmethod
    def decode_tokens(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """quantized tokens (B, T, D) -> images (B, C, H, W), in ``pixel_range`` up to decoder overshoot.
        Adapters whose T follows the image size (:class:`GridAdapter`) also take ``image_size=(H, W)``,
        which names the grid of T tokens when it is not the configured one (see :meth:`GridAdapter.grid`)."""

    @abc.abstractmethod
    def decoder_modules(self, model: nn.Module) -> list[nn.Module]:
        """The modules that turn quantized tokens into pixels (what fine-tuning stage 3 trains)."""

    # ---- persistence of swapped models
    @abc.abstractmethod
    def base_config(self, model: nn.Module) -> dict:
        """A JSON-serialisable config that :meth:`build_base` turns back into the same architecture.
        Raises ValueError for a model without the config that needs."""

    @abc.abstractmethod
    def build_base(self, config: dict) -> nn.Module:
        """The unswapped model of :meth:`base_config`'s ``config`` (random weights)."""

    @abc.abstractmethod
    def load_pretrained(self, repo_id_or_path, **kwargs) -> nn.Module:
        """The family's upstream checkpoint (a file, folder or Hub repo id) in vqswitch's or upstream's model,
        in eval mode."""


class GridAdapter(Adapter):
    """Base of the convolutional tokenizers (diffusers ``VQModel``, MaskGIT-VQGAN, IBQ): the encoder emits a
    (B, D, h, w) grid read row-major as T = h*w tokens, and ``model.quantize`` holds one global
    ``nn.Embedding`` codebook ``embedding``. Subclasses give the upstream quantizer's name and required
    attributes, :meth:`down_factor` and :meth:`image_size`."""

    @abc.abstractmethod
    def down_factor(self, model: nn.Module) -> int:
        """f: the encoder's spatial downsampling (an image of H x W gives an (H/f) x (W/f) grid)."""

    def num_tokens(self, model: nn.Module, image_size: tuple[int, int] | None = None) -> int:
        H, W = image_size or self.image_size(model)
        f = self.down_factor(model)
        if H % f or W % f:
            raise ValueError(f"image size {H}x{W} must be divisible by the model's downsampling factor {f}")
        return (H // f) * (W // f)

    def grid(self, model: nn.Module, T: int, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        """(h, w) of a grid of T tokens: that of ``image_size`` (H, W) when given, else the configured image
        size's grid when it has T tokens, else square. Raises ValueError when ``image_size`` gives another
        token count, or, without it, when neither fits (a non-square grid of another size: pass image_size)."""
        f = self.down_factor(model)
        if image_size is not None:
            H, W = image_size
            if H % f or W % f or (H // f) * (W // f) != T:
                raise ValueError(f"image_size {H}x{W} gives a {H // f}x{W // f} latent grid (downsampling {f}), not "
                                 f"the codes' {T} tokens per image")
            return H // f, W // f
        H, W = self.image_size(model)
        if (H // f) * (W // f) == T:
            return H // f, W // f
        side = math.isqrt(T)
        if side * side == T:
            return side, side
        raise ValueError(f"cannot tell the latent grid of {T} tokens (the model is configured for {H}x{W} images): "
                         "pass image_size=(H, W), the size of the images the codes came from")

    @staticmethod
    def grid_to_tokens(h: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, h*w, D), row-major over (h, w)."""
        B, D = h.shape[:2]
        return h.permute(0, 2, 3, 1).reshape(B, -1, D)

    def tokens_to_grid(self, model: nn.Module, tokens: torch.Tensor,
                       image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, D, h, w) contiguous, the inverse of :meth:`grid_to_tokens`; (h, w) from
        :meth:`grid` (``image_size`` names it for grids of another size than the configured one)."""
        B, T, D = tokens.shape
        h, w = self.grid(model, T, image_size)
        return tokens.reshape(B, h, w, D).permute(0, 3, 1, 2).contiguous()


_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter, *, first: bool = False) -> Adapter:
    """Add an adapter instance to the registry (by its ``name``); returns it. ``first`` puts it ahead of
    the others in :func:`adapter_for`'s search (a user's explicit description of a class wins over duck typing)."""
    if not adapter.name:
        raise ValueError("an adapter needs a non-empty name")
    if first:
        rest = {k: v for k, v in _REGISTRY.items() if k != adapter.name}
        _REGISTRY.clear()
        _REGISTRY[adapter.name] = adapter
        _REGISTRY.update(rest)
    else:
        _REGISTRY[adapter.name] = adapter
    return adapter


def adapters() -> dict[str, Adapter]:
    """The registered adapters, by name."""
    return dict(_REGISTRY)


def adapter_named(name: str) -> Adapter:
    """The registered adapter called ``name``. Raises ValueError listing the known names."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown adapter {name!r}; known adapters: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def adapter_for(model) -> Adapter:
    """The adapter whose family ``model`` belongs to (swapped or not).

    Raises TypeError for a non-module, ValueError naming the known families when none matches.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module tokenizer, got {type(model).__name__}")
    for adapter in _REGISTRY.values():
        if adapter.matches(model):
            return adapter
    raise ValueError(f"no vqswitch adapter recognises {type(model).__name__}: expected one of "
                     f"{sorted(_REGISTRY)} (a model with a `quantize` module and that family's encoder/decoder)")


def check_images(images, *, channels: int, size: tuple[int, int] | None, pixel_range: tuple[float, float],
                 check_range: bool = True, name: str = "images") -> torch.Tensor:
    """Validate a batch of images (B, C, H, W) float for a tokenizer (:func:`vqswitch._checks.check_images`).

    ``size`` (H, W) is checked when given. With ``check_range``, values must be finite and lie in ``pixel_range``
    up to 1% of its width (so [0, 255] bytes or [0, 1] images given to a [-1, 1] model with
    negative values missing are caught as far as the values can tell).
    Returns ``images``. Raises TypeError for a non-tensor or non-float tensor; ValueError for a wrong shape, size,
    channel count or an empty dimension, and (with ``check_range``) non-finite values or values outside the range.
    """
    images = _checks.check_images(name, images, channels=channels, size=size)
    if check_range:
        try:
            _checks.check_images(name, images, pixel_range=pixel_range)
        except ValueError as err:
            raise ValueError(f"{err} (pass check_range=False to skip this check)") from None
    return images


def check_fits(quantizer: SwitchableTokenQuantizer, *, dim: int, num_tokens: int | None, metric: str,
               family: str) -> None:
    """Raise ValueError naming the mismatch when ``quantizer`` cannot stand in for a model's quantizer
    (``num_tokens=None`` skips the token count, for tokenizers whose T follows the image size)."""
    if quantizer.dim != dim:
        raise ValueError(f"quantizer has D={quantizer.dim} but this {family} model's codes have D={dim}")
    if num_tokens is not None and quantizer.num_tokens != num_tokens:
        raise ValueError(f"quantizer has T={quantizer.num_tokens} tokens but this {family} model makes {num_tokens} "
                         "tokens per image (build it with quantizer_from_model, or pass image_size= there)")
    if quantizer.metric != metric:
        raise ValueError(f"quantizer uses metric {quantizer.metric!r} but this {family} model's quantizer uses "
                         f"{metric!r}; its decoder expects codes chosen that way")

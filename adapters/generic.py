"""Bring your own VQ model: the generic adapter, for tokenizers that are none of the built-in families.

Any model that snaps its latents to an ``nn.Embedding`` or a (K, D) weight-tensor codebook can take a
:class:`~vqswitch.SwitchableTokenQuantizer`. The user describes the model class once::

    describe_model(MyVQVAE, quantizer="vq_vae",                        # where the quantizer module sits
                   encode=lambda m, x: m.pre_vq_conv(m.encoder(x)),    # images -> latents, in the layout below
                   decode=lambda m, z: m.decoder(z),                   # quantized latents -> images
                   pixel_range=(-0.5, 0.5), layout="(B, D, H, W)", image_size=(64, 64))

and every public function of :mod:`vqswitch.adapters` then works on its instances unchanged
(``swap_quantizer``, ``quantizer_from_model``, ``encode_latents``, ``encode_codes``, ``decode_codes``,
``save_swapped`` / ``load_swapped``), as do :class:`vqswitch.train.Finetuner` and :mod:`vqswitch.codec`.

Why the description is registered for a *class* (and not attached to an instance)
    vqswitch builds models itself: ``load_swapped`` rebuilds the base model from a saved folder,
    ``Finetuner(resume=True)`` reloads its latest checkpoint, ``load_codec_model`` and the CLI load folders by
    path. None of them is handed the user's instance, so a description living on an instance would be lost
    exactly there, while a class registration is found again by ``adapter_for`` for every instance (those
    vqswitch builds, deep copies, instances built by the user before or after describing). It also makes the
    user's explicit word win over duck typing: a described class is matched before the built-in families.
    The price is one description per class; a class used with two incompatible descriptions needs two
    (sub)classes. ``load_swapped(folder, model=MyVQVAE)`` or ``model=instance`` passes the class or an instance
    back explicitly (the class must build without arguments, or through ``build=``).

The shim (:class:`GenericQuantizerShim`) replaces the module at the quantizer path, so the user's own
``forward()`` calls it. It takes the latents in the user's layout, ``(B, D, H, W)`` (a grid, tokens read
row-major over (H, W)) or ``(B, N, D)`` (a sequence), and by default returns the quantized latents in the same
layout with straight-through gradients (the identity to the latents; the codebooks learn from the loss). Its
loss (codebook + commitment, plus the router losses when M > 1) and the full
:class:`~vqswitch.quantizer.QuantizerOutput` are kept in ``last_output``. When the user's ``forward()`` expects
its quantizer to return something else, ``output=`` maps the shim's result to that structure::

    output=lambda z_q, loss, indices: (loss, z_q, indices)   # indices: flat ids g*K+k, (B, H, W) or (B, N)

Straight-through arithmetic: ``straight_through="residual"`` (default) is the common VQ-VAE expression
``z + sg(q - z)``, so that a model whose quantizer computes it reproduces its outputs bit for bit after a
swap with its own codebook; ``"exact"`` returns the code ``q`` exactly (vqswitch's own form).

Token counts: with a token-shared quantizer the shim takes latents of any size (the image size sets T); at
another T than the quantizer's, each image's group is picked by least error (the router, whose position weights
are sized for T, is not used there). A token-specific quantizer (one codebook per position) refuses another
size with a ValueError. ``decode_codes(model, codes, image_size=(H, W))`` names the latent grid of codes made
from images of another size than the described one.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from vqswitch._checks import check_choice, check_int, check_range_pair, check_real, check_size
from vqswitch.quantizer import QuantizerOutput, SwitchableTokenQuantizer

from .contract import Adapter, QuantizerShim, adapters, check_fits, register

__all__ = ["describe_model", "GenericAdapter", "GenericQuantizerShim", "adapter_for_class", "latents_to_tokens",
           "tokens_to_latents", "GENERIC_PREFIX", "LAYOUTS"]

GENERIC_PREFIX = "generic:"
GRID, SEQUENCE = "(B, D, H, W)", "(B, N, D)"
LAYOUTS = (GRID, SEQUENCE)
STRAIGHT_THROUGH = ("residual", "exact")
METRICS = ("l2", "cosine", "dot")


def _layout(layout) -> str:
    """The canonical layout string for ``layout`` (spaces and case do not matter). Raises TypeError/ValueError."""
    if not isinstance(layout, str):
        raise TypeError(f"layout must be a string, one of {list(LAYOUTS)}, got {type(layout).__name__}")
    key = layout.replace(" ", "").upper()
    for canonical in LAYOUTS:
        if key == canonical.replace(" ", ""):
            return canonical
    raise ValueError(f"layout must be {GRID!r} (a latent grid, D channels) or {SEQUENCE!r} (a sequence of N "
                     f"tokens of width D), got {layout!r}")


def _path(name: str, value) -> str:
    if not isinstance(value, str) or not value or not all(part.isidentifier() or part.isdigit()
                                                          for part in value.split(".")):
        raise ValueError(f"{name} must be an attribute path such as 'vq_vae' or 'model.quantizer', got {value!r}")
    return value


def latents_to_tokens(z, layout: str, dim: int, *, name: str = "z") -> tuple[torch.Tensor, tuple[int, ...]]:
    """Latents in ``layout`` -> (tokens (B, T, D), spatial shape: (H, W) for a grid, (N,) for a sequence).

    Raises TypeError (not a float tensor of the layout's rank) or ValueError (not D=``dim``), naming ``name``.
    """
    rank = 4 if layout == GRID else 3
    if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.dim() != rank:
        raise TypeError(f"{name} must be a float tensor {layout}, got "
                        f"{getattr(z, 'dtype', '')} {tuple(getattr(z, 'shape', ())) or type(z).__name__}")
    if layout == GRID:
        if z.shape[1] != dim:
            raise ValueError(f"{name} must be {GRID} with D={dim} channels, got shape {tuple(z.shape)}")
        return z.permute(0, 2, 3, 1).reshape(z.shape[0], z.shape[2] * z.shape[3], dim), tuple(z.shape[2:])
    if z.shape[2] != dim:
        raise ValueError(f"{name} must be {SEQUENCE} with D={dim}, got shape {tuple(z.shape)}")
    return z, (z.shape[1],)


def tokens_to_latents(tokens: torch.Tensor, layout: str, spatial: tuple[int, ...]) -> torch.Tensor:
    """tokens (B, T, D) -> ``layout`` (a contiguous grid of ``spatial`` (H, W), or the sequence itself)."""
    if layout == GRID:
        B, _, D = tokens.shape
        return tokens.reshape(B, *spatial, D).permute(0, 3, 1, 2).contiguous()
    return tokens


class GenericQuantizerShim(QuantizerShim):
    """Stands in for a user's quantizer module: latents in the user's layout -> quantized latents in that layout.

    ``forward(z)``: z (B, D, H, W) or (B, N, D) float, as ``layout`` -> z_q of the same shape and dtype,
    straight-through (see the module docstring), or ``output(z_q, loss, indices)`` when an output function was
    given (``indices``: flat ids ``g*K + k``, int64, (B, H, W) or (B, N)). ``last_output`` holds the
    :class:`~vqswitch.quantizer.QuantizerOutput` (tokens row-major) and ``last_loss`` the loss.
    Raises TypeError for a non-float tensor of the wrong rank, ValueError for a wrong D, or for another token
    count than T with a token-specific quantizer.
    """

    adapter_name = "generic"
    SETTINGS = {"layout": GRID, "straight_through": "residual"}  # what a description sets (describe_model)

    def __init__(self, quantizer: SwitchableTokenQuantizer, *, output: Callable | None = None, **settings):
        """Settings ``layout`` and ``straight_through``; ``output`` as the class docstring.
        Raises TypeError/ValueError for a bad setting or a non-callable ``output``."""
        if output is not None and not callable(output):
            raise TypeError(f"output must be a callable (z_q, loss, indices) -> anything, got {type(output).__name__}")
        super().__init__(quantizer, **settings)
        self.output = output
        self.last_loss: torch.Tensor | None = None

    @classmethod
    def _setting(cls, key: str, value):
        return _layout(value) if key == "layout" else check_choice(key, value, STRAIGHT_THROUGH)

    # ---------------------------------------------------------------- layouts
    def to_tokens(self, z, *, name: str = "z") -> tuple[torch.Tensor, tuple[int, ...]]:
        """:func:`latents_to_tokens` in this shim's layout and D."""
        return latents_to_tokens(z, self.layout, self.quantizer.dim, name=name)

    # ---------------------------------------------------------------- quantization
    def quantize_any(self, tokens: torch.Tensor) -> tuple[QuantizerOutput, torch.Tensor]:
        """tokens (B, T', D) -> (output, codes (B, T', D) in tokens' dtype, differentiable to the codebooks).

        A token-shared quantizer takes any T' (at T' != T it picks each image's group by least error; see
        :class:`~vqswitch.SwitchableTokenQuantizer`); a token-specific one needs T' == T.
        Raises ValueError for another T' with token-specific codebooks.
        """
        q = self.quantizer
        if tokens.shape[1] != q.num_tokens and q.token_specific:
            raise ValueError(f"the latents give {tokens.shape[1]} tokens per image, but this token-specific quantizer "
                             f"has one codebook per position for T={q.num_tokens} (images of another size?); a "
                             "token-shared quantizer takes any size")
        return self.quantize_tokens(tokens)

    def forward(self, z: torch.Tensor):
        tokens, spatial = self.to_tokens(z)
        out, codes = self.quantize_any(tokens)
        if self.layout == GRID:  # a channels-last view, as VQ code usually builds it; the arithmetic below runs on
            codes = codes.reshape(z.shape[0], *spatial, z.shape[1]).permute(0, 3, 1, 2)  # z itself, so z_q gets
        if self.straight_through == "residual":  # the memory layout the user's own quantizer would have given
            zq = z + (codes - z).detach()
        else:
            zq = codes.detach() + (z - z.detach())  # exactly the codes; the identity gradient to z
        self.last_loss = out.loss
        if self.output is None:
            return zq
        ids = self.flat_ids(out.groups, out.indices).reshape(z.shape[0], *spatial)
        return self.output(zq, out.loss, ids)

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}, straight_through={self.straight_through!r}, " + super().extra_repr()


class GenericAdapter(Adapter):
    """The adapter of one user-described model class (built by :func:`describe_model`; see the module docstring).

    Implements the whole :class:`~vqswitch.adapters.contract.Adapter` contract from the description; the
    registry name is ``"generic:" + name``.
    """

    shim_class = GenericQuantizerShim
    fixed_tokens = False

    def __init__(self, classes: tuple[type, ...], *, name: str, quantizer: str, encode: Callable, decode: Callable,
                 pixel_range, layout: str, image_size, codebook: str | None = None, metric: str = "l2",
                 image_channels: int = 3, decoder: str | Sequence[str] = "decoder", commitment_weight: float = 0.25,
                 straight_through: str = "residual", output: Callable | None = None, build: Callable | None = None,
                 config: Callable | None = None):
        self.classes = classes
        self.name = GENERIC_PREFIX + name
        self.quantizer_path = _path("quantizer", quantizer)
        self.codebook_path = None if codebook is None else _path("codebook", codebook)
        for arg, fn in (("encode", encode), ("decode", decode)):
            if not callable(fn):
                raise TypeError(f"{arg} must be a callable (model, tensor) -> tensor, got {type(fn).__name__}")
        for arg, fn in (("output", output), ("build", build), ("config", config)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{arg} must be a callable or None, got {type(fn).__name__}")
        self.encode, self.decode, self.output, self.build, self.user_config = encode, decode, output, build, config
        self.pixel_range = check_range_pair("pixel_range", pixel_range)
        self.layout = _layout(layout)
        self.metric_name = check_choice("metric", metric, METRICS)
        self.configured_size = check_size("image_size", image_size)
        self.channels = check_int("image_channels", image_channels, 1)
        decoder = [decoder] if isinstance(decoder, str) else list(decoder)
        if not decoder:
            raise ValueError("decoder must name at least one module (the attribute paths that turn latents into "
                             "pixels)")
        self.decoder_paths = [_path("decoder", d) for d in decoder]
        self.beta = check_real("commitment_weight", commitment_weight, 0.0)
        self.straight_through = check_choice("straight_through", straight_through, STRAIGHT_THROUGH)
        self._shapes = weakref.WeakKeyDictionary()  # model -> {image size: latent spatial shape}

    # ---------------------------------------------------------------- recognition, where things are
    def matches(self, model) -> bool:
        return isinstance(model, self.classes)

    def quantize_module(self, model: nn.Module) -> nn.Module:
        try:
            module = model.get_submodule(self.quantizer_path)
        except AttributeError:
            top = [n for n, _ in model.named_children()]
            raise ValueError(f"{type(model).__name__} has no module at quantizer path {self.quantizer_path!r} "
                             f"(its modules: {top})") from None
        return module

    def set_quantize_module(self, model: nn.Module, module: nn.Module) -> None:
        self.quantize_module(model)  # raises for a bad path
        parent, _, last = self.quantizer_path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, last, module)

    def is_swapped(self, model) -> bool:
        return isinstance(self.quantize_module(model), GenericQuantizerShim)

    def check_upstream_quantizer(self, model) -> None:
        if not self.is_swapped(model):
            self._codebook_of(self.quantize_module(model))

    def _codebook_of(self, module: nn.Module) -> torch.Tensor:
        """The (K, D) codebook of the user's quantizer module: at ``codebook`` or found (see describe_model)."""
        where = f"the quantizer at {self.quantizer_path!r} ({type(module).__name__})"
        if self.codebook_path is not None:
            obj = module
            for part in self.codebook_path.split("."):
                if not hasattr(obj, part):
                    raise ValueError(f"{where} has no {self.codebook_path!r} (the codebook path is relative to it)")
                obj = getattr(obj, part)
            found = obj.weight if isinstance(obj, nn.Embedding) else obj
            if not isinstance(found, torch.Tensor) or found.dim() != 2 or not found.is_floating_point():
                raise ValueError(f"{self.codebook_path!r} in {where} must be an nn.Embedding or a float (K, D) tensor, "
                                 f"got {type(obj).__name__} {tuple(getattr(found, 'shape', ()))}")
            return found
        embeddings = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Embedding)]
        if len(embeddings) == 1:
            return embeddings[0][1].weight
        if len(embeddings) > 1:
            raise ValueError(f"{where} has several nn.Embedding modules {[n for n, _ in embeddings]}: pass codebook= "
                             "the one that holds the codes")
        tensors = {n: t for n, t in list(module.named_parameters()) + list(module.named_buffers())}
        tensors.update({n: t for n, t in vars(module).items() if isinstance(t, torch.Tensor)})
        tensors = {n: t for n, t in tensors.items() if t.dim() == 2 and t.is_floating_point()}
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        if not tensors:
            raise ValueError(f"no codebook found in {where}: it has no nn.Embedding and no float (K, D) tensor; pass "
                             "codebook= its attribute path")
        raise ValueError(f"{where} has several (K, D) tensors {sorted(tensors)}: pass codebook= the one that holds "
                         "the codes")

    def codebook(self, model) -> torch.Tensor:
        self.check_upstream_quantizer(model)
        if self.is_swapped(model):
            raise ValueError("this model is already swapped: its own codebook is gone")
        return self._codebook_of(self.quantize_module(model))

    def codebook_dim(self, model) -> int:
        module = self.quantize_module(model)
        if isinstance(module, GenericQuantizerShim):
            return module.quantizer.dim
        return int(self._codebook_of(module).shape[1])

    def metric(self, model) -> str:
        return self.metric_name

    def commitment_weight(self, model) -> float:
        return self.beta

    def image_size(self, model) -> tuple[int, int]:
        return self.configured_size

    def image_channels(self, model) -> int:
        return self.channels

    # ---------------------------------------------------------------- tokens
    def latent_shape(self, model: nn.Module, image_size: tuple[int, int] | None = None) -> tuple[int, ...]:
        """The spatial shape of the latents of one image: (h, w) for a grid, (N,) for a sequence. Found once per
        (model, size) by running ``encode`` on a zero image in eval mode (training flags restored after)."""
        size = tuple(image_size or self.configured_size)
        cache = self._shapes.setdefault(model, {})
        if size not in cache:
            p = next(model.parameters(), None)
            x = torch.zeros(1, self.channels, *size, device=p.device if p is not None else "cpu",
                            dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)
            modes = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                with torch.no_grad():
                    z = self.encode(model, x)
            finally:
                for m, mode in modes:
                    m.training = mode
            if not isinstance(z, torch.Tensor) or z.dim() != (4 if self.layout == GRID else 3):
                got = tuple(getattr(z, 'shape', ())) or type(z).__name__
                raise ValueError(f"encode must return latents {self.layout}, got {got} for a {size[0]}x{size[1]} image")
            cache[size] = tuple(z.shape[2:]) if self.layout == GRID else (z.shape[1],)
        return cache[size]

    def num_tokens(self, model, image_size=None) -> int:
        return math.prod(self.latent_shape(model, image_size))

    def encode_latents(self, model, images):
        z = self.encode(model, images)
        return latents_to_tokens(z, self.layout, self.codebook_dim(model), name="the latents encode returned")[0]

    def decode_tokens(self, model, tokens, image_size: tuple[int, int] | None = None):
        """quantized tokens (B, T, D) -> images. ``image_size`` (H, W) names the latent grid of T tokens when it is
        not the described size's; without it that grid is used when it has T tokens, else a square one.
        Raises ValueError when the grid cannot be told or ``image_size`` gives another token count."""
        if self.layout == GRID:
            T = tokens.shape[1]
            grid = self.latent_shape(model, image_size)
            if math.prod(grid) != T:
                side = math.isqrt(T)
                if image_size is not None or side * side != T:
                    H, W = image_size or self.configured_size
                    raise ValueError(f"cannot tell the latent grid of {T} tokens: {H}x{W} images give a "
                                     f"{grid[0]}x{grid[1]} grid (pass image_size=(H, W) of the images the codes "
                                     "came from)")
                grid = (side, side)
        else:
            grid = (tokens.shape[1],)
        z = tokens_to_latents(tokens, self.layout, grid)
        return self.decode(model, z)

    def decoder_modules(self, model) -> list[nn.Module]:
        out = []
        for path in self.decoder_paths:
            try:
                out.append(model.get_submodule(path))
            except AttributeError:
                raise ValueError(f"{type(model).__name__} has no decoder module at {path!r} (describe_model(decoder=))"
                                 ) from None
        return out

    # ---------------------------------------------------------------- the swap
    def make_shim(self, model, quantizer) -> GenericQuantizerShim:
        """A shim with the description's settings (the user's quantizer holds none of them); raises as the base."""
        check_fits(quantizer, dim=self.codebook_dim(model), metric=self.metric_name, family=self.name, num_tokens=None)
        return self.shim_from_settings(quantizer, {"layout": self.layout, "straight_through": self.straight_through})

    def shim_from_settings(self, quantizer, settings) -> GenericQuantizerShim:
        return GenericQuantizerShim(quantizer, output=self.output, **settings)

    # ---------------------------------------------------------------- persistence
    def _base_tensors(self, model) -> dict[str, list[int]]:
        prefix = self.quantizer_path + "."
        return {k: list(v.shape) for k, v in model.state_dict().items() if not k.startswith(prefix)}

    def _description(self) -> dict:
        return {"quantizer": self.quantizer_path, "layout": self.layout, "metric": self.metric_name,
                "pixel_range": list(self.pixel_range)}

    def base_config(self, model) -> dict:
        config = self.user_config(model) if self.user_config is not None else None
        return {"class": type(model).__qualname__, **self._description(), "image_size": list(self.configured_size),
                "image_channels": self.channels, "tensors": self._base_tensors(model), "config": config}

    def build_base(self, config: dict) -> nn.Module:
        cls = self.classes[-1]
        try:
            model = self.build(config.get("config")) if self.build is not None else cls()
        except TypeError as err:
            raise ValueError(f"cannot build a {cls.__qualname__} to load into ({err}): pass load_swapped(model=an "
                             "instance), or describe_model(build=config -> model)") from err
        if not isinstance(model, self.classes):
            raise ValueError(f"build returned a {type(model).__name__}, not a {cls.__qualname__}")
        self.check_base(model, config)
        return model

    def check_base(self, model, base_config: dict) -> None:
        saved = {k: base_config.get(k) for k in self._description()}
        now = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._description().items()}
        if saved != now:
            diff = {k: (saved[k], now[k]) for k in now if saved[k] != now[k]}
            raise ValueError(f"the saved {self.name} model was described otherwise (saved, now): {diff}")
        want, have = base_config.get("tensors") or {}, self._base_tensors(model)
        problems = [f"{k} missing" for k in want if k not in have]
        problems += [f"{k} unexpected" for k in have if k not in want]
        problems += [f"{k} is {have[k]}, saved {want[k]}" for k in want if k in have and have[k] != want[k]]
        if problems:
            more = f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""
            raise ValueError(f"this {type(model).__name__} does not fit the saved {base_config.get('class')} "
                             f"({self.name}): {'; '.join(problems[:6])}{more}")

    def load_pretrained(self, repo_id_or_path=None, **kwargs):
        raise ValueError(f"{self.name} is a user-described model: load its weights with its own code, then "
                         "swap_quantizer it")


def describe_model(model_class: type, *, quantizer: str, encode: Callable, decode: Callable, pixel_range,
                   layout: str, image_size, codebook: str | None = None, metric: str = "l2", image_channels: int = 3,
                   decoder: str | Sequence[str] = "decoder", commitment_weight: float = 0.25,
                   straight_through: str = "residual", output: Callable | None = None, build: Callable | None = None,
                   config: Callable | None = None, name: str | None = None) -> GenericAdapter:
    """Describe a VQ model class to vqswitch; every instance then works with all of :mod:`vqswitch.adapters`.

    Args:
        model_class: the user's ``nn.Module`` subclass (its subclasses are covered too).
        quantizer: attribute path of the quantizer module (``"vq_vae"``, ``"model.quantizer"``); the swap puts
            the shim there.
        encode: ``encode(model, images (B, C, H, W)) -> latents`` in ``layout``, before quantization.
        decode: ``decode(model, z_q) -> images (B, C, H, W)``, z_q in ``layout``.
        pixel_range: (lo, hi) of the images the model takes and gives, e.g. (-0.5, 0.5).
        layout: ``"(B, D, H, W)"`` (a grid; tokens row-major over (H, W)) or ``"(B, N, D)"`` (a sequence).
        image_size: H or (H, W) the model is used at (T follows from it; token-shared swaps take any size).
        codebook: the codebook's attribute path inside the quantizer module (an ``nn.Embedding`` or a (K, D)
            tensor, parameter or buffer); None finds it: the quantizer's one ``nn.Embedding``, else its one float
            2-D tensor.
        metric: how the model picks codes: "l2" (default), "cosine" or "dot".
        image_channels: C. decoder: attribute path(s) of the modules fine-tuning stage 3 trains.
        commitment_weight: beta of the model's loss. straight_through: "residual" or "exact" (module docstring).
        output: ``output(z_q, loss, indices) -> what the model's forward expects from its quantizer``; None
            returns z_q alone.
        build: ``build(config) -> model`` for ``load_swapped`` (default ``model_class()``), ``config`` being what
            the ``config`` callable (``config(model) -> JSON-serialisable``) recorded at save time.
        name: the registry name after ``"generic:"`` (default the class's ``__qualname__``); saved folders
            record it, so keep it stable.
    Returns the registered :class:`GenericAdapter` (matched before the built-in families). Describing a class
    again replaces its description; instances of an earlier class object of the same name (a module imported
    twice) stay recognised.
    Raises: TypeError for a non-class ``model_class``, non-callable functions, a pixel range that is not a pair
        of numbers, or an image size, channel count or commitment weight of the wrong type; ValueError for a bad
        path, layout, metric or straight-through form, a value out of range (an image side or channel count
        below 1, a negative weight, a pixel range without lo < hi), or a name already describing a class of
        another name.
    """
    if not isinstance(model_class, type) or not issubclass(model_class, nn.Module) or model_class is nn.Module:
        raise TypeError(f"model_class must be a subclass of torch.nn.Module, got {model_class!r}")
    name = model_class.__qualname__ if name is None else name
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    classes = (model_class,)
    old = adapters().get(GENERIC_PREFIX + name)
    if isinstance(old, GenericAdapter):
        if any(c.__qualname__ != model_class.__qualname__ for c in old.classes):
            raise ValueError(f"{name!r} already describes {old.classes[0].__qualname__}; pass another name=")
        classes = tuple(c for c in old.classes if c is not model_class) + classes
    adapter = GenericAdapter(classes, name=name, quantizer=quantizer, encode=encode, decode=decode,
                             pixel_range=pixel_range, layout=layout, image_size=image_size, codebook=codebook,
                             metric=metric, image_channels=image_channels, decoder=decoder,
                             commitment_weight=commitment_weight, straight_through=straight_through, output=output,
                             build=build, config=config)
    return register(adapter, first=True)


def adapter_for_class(model_class: type) -> GenericAdapter:
    """The :class:`GenericAdapter` describing ``model_class`` (or a base class of it). Raises ValueError when none."""
    for adapter in adapters().values():
        if isinstance(adapter, GenericAdapter) and issubclass(model_class, adapter.classes):
            return adapter
    raise ValueError(f"{getattr(model_class, '__qualname__', model_class)!r} is not described to vqswitch: call "
                     "vqswitch.adapters.describe_model(model_class, ...) first, or pass an instance")

"""The adapter contract's functions: swap the quantizer in, build one from the model, and the codes API.

These work on every registered tokenizer family (see :mod:`vqswitch.adapters.contract`), on
vqswitch's own implementations and on instances of the upstream classes alike.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from vqswitch._checks import check_choice, check_float_tensor, check_size
from vqswitch.codes import Codes
from vqswitch.quantizer import SwitchableTokenQuantizer

from .contract import adapter_for, check_images
from .native_saving import guard_native_saving

__all__ = ["swap_quantizer", "quantizer_from_model", "encode_latents", "encode_codes", "decode_codes",
           "swapped_quantizer"]

INITS = ("codebook", "latents")


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def quantizer_from_model(model: nn.Module, num_groups: int = 1, codebook_size: int | None = None,
                         token_specific: bool = False, init: str = "codebook", *, latents: torch.Tensor | None = None,
                         image_size: tuple[int, int] | int | None = None, seed: int = 0,
                         **quantizer_kwargs) -> SwitchableTokenQuantizer:
    """A :class:`~vqswitch.SwitchableTokenQuantizer` matched to ``model``: its codebook dimension D,
    metric, commitment weight and token count T.

    Args:
        model: an unswapped tokenizer of a registered family.
        num_groups: M. codebook_size: K (default: the model's K0).
        token_specific: one codebook per token position (each starts as a copy of its group's).
        init: "codebook" (from the model's own codebook: an exact copy when K == K0, with 1% noise on
            groups > 0; a k-means reduction per group when K < K0) or "latents" (per-group,
            per-token k-means of ``latents``, which :func:`encode_latents` gives for training images).
        latents: (N, T, D) float encoder tokens, required by init="latents".
        image_size: (H, W) or an int, when the model will see images of another size than its
            configured one (T follows from it).
        seed: seeds the initialisation. quantizer_kwargs: any other constructor argument.
    Returns: the quantizer on the model's device, float32.
    Raises: TypeError/ValueError for a model no adapter recognises, an already swapped model, an
        unknown init, missing or mis-shaped latents, a bad image_size, K > K0, or bad quantizer arguments.
    """
    adapter = adapter_for(model)
    if adapter.is_swapped(model):
        raise ValueError("quantizer_from_model needs the model's own quantizer, but this model is already swapped; "
                         "build the quantizer before swap_quantizer (or load the base model again)")
    adapter.check_upstream_quantizer(model)
    check_choice("init", init, INITS)
    if image_size is not None:
        image_size = check_size("image_size", image_size)
    weight = adapter.codebook(model).detach()
    T = adapter.num_tokens(model, image_size)
    kwargs = dict(metric=adapter.metric(model), commitment_weight=adapter.commitment_weight(model))
    kwargs.update(quantizer_kwargs)
    if init == "codebook":
        if latents is not None:
            raise ValueError("latents= is only used by init='latents'")
        q = SwitchableTokenQuantizer.from_codebook(weight, T, codebook_size, num_groups, seed=seed,
                                                   token_specific=token_specific, **kwargs)
    else:
        if latents is None:
            raise ValueError("init='latents' needs latents=: (N, T, D) encoder tokens, e.g. "
                             "vqswitch.adapters.encode_latents(model, images)")
        check_float_tensor("latents", latents)
        K = weight.shape[0] if codebook_size is None else codebook_size
        q = SwitchableTokenQuantizer(num_tokens=T, codebook_size=K, dim=weight.shape[1], num_groups=num_groups,
                                     token_specific=token_specific, **kwargs)
        q.init_from_latents(latents.detach().float().cpu(), seed=seed)
    return q.to(_model_device(model))


def swap_quantizer(model: nn.Module, quantizer: SwitchableTokenQuantizer | None = None,
                   **quantizer_kwargs) -> nn.Module:
    """Replace ``model.quantize`` (or, for a model described with :func:`vqswitch.adapters.describe_model`, the module
    at its quantizer path) in place with a shim running a SwitchableTokenQuantizer; returns model.

    The shim keeps the upstream quantizer's call signature, return structure, index layout and
    dtype, loss formula (plus the router losses when M > 1) and ``get_codebook_entry``; indices
    become flat ids ``g * K + k`` (see :mod:`vqswitch.adapters.contract`). With ``quantizer=None``
    one is built by :func:`quantizer_from_model` from ``quantizer_kwargs`` (defaults: M = 1,
    token-shared, the model's own codebook: the swapped model then reproduces the original).
    A swapped model can be swapped again with a new quantizer.

    Raises: TypeError for a non-module or non-quantizer argument, or both a quantizer and kwargs;
        ValueError for a model no adapter recognises or whose weights are on the 'meta' device, an
        upstream quantizer of an unsupported kind, or a quantizer whose D, T or metric does not fit the model.
    """
    adapter = adapter_for(model)
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("model's weights are on the 'meta' device (no values): load its weights before swapping "
                         "(e.g. load_pretrained, or load_state_dict(..., assign=True))")
    if quantizer is None:
        if adapter.is_swapped(model):
            raise ValueError("this model is already swapped: pass quantizer= to replace its SwitchableTokenQuantizer")
        quantizer = quantizer_from_model(model, **quantizer_kwargs)
    elif quantizer_kwargs:
        raise TypeError(f"pass either quantizer= or quantizer arguments, not both (got {sorted(quantizer_kwargs)})")
    if not isinstance(quantizer, SwitchableTokenQuantizer):
        raise TypeError(f"quantizer must be a vqswitch.SwitchableTokenQuantizer, got {type(quantizer).__name__}")
    if not adapter.is_swapped(model):
        adapter.check_upstream_quantizer(model)
    shim = adapter.make_shim(model, quantizer)  # validates D, T and metric against the model
    adapter.set_quantize_module(model, shim.to(_model_device(model)).train(model.training))  # a fresh module trains
    guard_native_saving(model)  # inherited save_pretrained / push_to_hub would lose the quantizer: they refuse
    return model


def swapped_quantizer(model: nn.Module) -> SwitchableTokenQuantizer:
    """The SwitchableTokenQuantizer inside a swapped model. Raises ValueError for an unswapped model."""
    adapter = adapter_for(model)
    if not adapter.is_swapped(model):
        raise ValueError(f"this {adapter.name} model has its upstream quantizer: call vqswitch.adapters.swap_quantizer "
                         "first")
    return adapter.quantize_module(model).quantizer


def encode_latents(model: nn.Module, images: torch.Tensor, *, check_range: bool = True) -> torch.Tensor:
    """images (B, C, H, W) float in the model's pixel range -> encoder tokens z (B, T, D), unquantized.

    Works on swapped and unswapped models; runs with the caller's grad mode. Pixel ranges:
    [0, 1] for MaskGIT-VQGAN and TiTok, [-1, 1] for diffusers VQModel and IBQ.
    Raises TypeError/ValueError for images of the wrong type, shape, size or range.
    """
    adapter = adapter_for(model)
    check_images(images, channels=adapter.image_channels(model), size=None, pixel_range=adapter.pixel_range,
                 check_range=check_range)
    return adapter.encode_latents(model, images)


@torch.no_grad()
def encode_codes(model: nn.Module, images: torch.Tensor, *, check_range: bool = True) -> Codes:
    """images (B, C, H, W) float in the model's pixel range -> :class:`~vqswitch.Codes` (group + T indices
    per image), with the quantizer's inference selection. No gradient.

    Images of any size work with a token-shared quantizer (the codes then hold the T' tokens of that
    size's grid: decode them with ``decode_codes(..., image_size=(H, W))`` unless the grid is the
    configured or a square one); a token-specific quantizer is tied to its grid.
    Raises: ValueError for an unswapped model, images whose size gives another token count than a
        token-specific quantizer's T, or images of the wrong type, shape or range.
    """
    quantizer = swapped_quantizer(model)
    z = encode_latents(model, images, check_range=check_range)
    if z.shape[1] != quantizer.num_tokens and quantizer.token_specific:
        raise ValueError(f"images of {images.shape[-2]}x{images.shape[-1]} pixels give {z.shape[1]} tokens, but the "
                         f"quantizer was built for T={quantizer.num_tokens} tokens")
    return quantizer.encode(z)


@torch.no_grad()
def decode_codes(model: nn.Module, codes: Codes, *, image_size: tuple[int, int] | int | None = None) -> torch.Tensor:
    """:class:`~vqswitch.Codes` -> images (B, C, H, W) in the model's pixel range (not clamped: decoders
    overshoot a little), in the model's dtype, on its device. No gradient.

    image_size: (H, W) (or an int) of the images the codes came from. Codes record their token count T
        but not the latent grid's shape, so a convolutional tokenizer's decoder needs it for codes of
        another grid than the configured one (with a token-shared quantizer, :func:`encode_codes` takes
        any size); without it the grid is the configured one when it has T tokens, else square.
    Raises: TypeError for a non-Codes argument or an image_size that is neither an int nor a pair of ints;
        ValueError for an unswapped model, codes made for another quantizer configuration (K, M, or T when
        token-specific), a grid that cannot be told (pass image_size), an image_size below 1 or that does not
        give the codes' T, or image_size for a tokenizer whose T does not follow the image size.
    """
    quantizer = swapped_quantizer(model)
    adapter = adapter_for(model)
    tokens = quantizer.decode(codes)
    p = next(model.parameters())
    if image_size is None:
        return adapter.decode_tokens(model, tokens.to(p.dtype))
    image_size = check_size("image_size", image_size)
    if adapter.fixed_tokens:  # the other adapters' decode_tokens take image_size (the Adapter contract)
        raise ValueError(f"image_size is not used by the {adapter.name} adapter (its token count does not follow the "
                         "image size); call decode_codes without it")
    return adapter.decode_tokens(model, tokens.to(p.dtype), image_size=image_size)

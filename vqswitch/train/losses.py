"""Pluggable perceptual and identity losses for stage 3 (decoder fine-tuning).

The paper's stage-3 loss is ``L = L2 + lambda_p * L_perceptual + lambda_f * L_identity``
(:class:`ReconstructionLoss`). The two feature losses are one mechanism, :class:`FeatureSimilarityLoss`:
compare features of the original ``x`` and of the reconstruction ``y`` under a frozen feature extractor.

Feature-extractor protocol
--------------------------
A feature extractor is any callable (usually an ``nn.Module``) mapping images ``(B, 3, H, W)`` float,
with values in a known pixel range, to features ``(B, F)`` or ``(B, N, F)`` (any ``(B, ...)`` floating
tensor is accepted; it is flattened per image). It may expose a ``pixel_range`` attribute ``(lo, hi)``
naming the range it expects; :class:`FeatureSimilarityLoss` then maps its inputs onto that range.
:class:`TransformersFeatures` wraps a ``transformers`` vision backbone (a model instance, a Hub id or a
local folder) as such an extractor, with its own resizing and normalisation.

Gradients and memory: the target features ``f(x)`` are computed under ``torch.no_grad()`` (no graph is
kept for the originals); gradient flows through ``f(y)`` to ``y`` only; the extractor's parameters are
frozen. Features are computed in the backbone's dtype; the losses are computed in float32.

``transformers`` is imported lazily, only when :class:`TransformersFeatures` loads a model by name, so
``import vqswitch.train.losses`` stays light. Inputs are checked for type, dtype, shape and device (a
``TypeError`` or ``ValueError`` naming the argument); values are not checked for NaN/Inf, which would
cost a host-device synchronisation per training step.
"""
from __future__ import annotations

import inspect
import math
import numbers
import os
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vqswitch._checks import (check_choice, check_image_pair, check_images, check_range_pair, check_real, check_size,
                              is_int)

__all__ = [
    "FeatureSimilarityLoss", "TransformersFeatures", "ReconstructionLoss", "perceptual_loss", "identity_loss",
    "IMAGENET_MEAN", "IMAGENET_STD",
]

#: ImageNet normalisation, the default when neither the caller, an image processor nor the config gives one.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_KINDS = ("cosine", "l2")
_LAYERS = ("pooler", "last_hidden_mean", "last_hidden")


# ---------------------------------------------------------------------------------- validation
def _check_channel_stats(name: str, value) -> tuple[float, float, float]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = (value,) * 3
    if isinstance(value, torch.Tensor):
        value = value.detach().flatten().tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a real number or a sequence of 3 real numbers, got {value!r}")
    if len(value) == 1:
        value = tuple(value) * 3
    if len(value) != 3 or any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in value):
        raise ValueError(f"{name} must have 3 values (one per RGB channel), got {value!r}")
    out = tuple(float(v) for v in value)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if name == "std" and not all(v > 0 for v in out):
        raise ValueError(f"std must be > 0 per channel, got {value!r}")
    return out  # type: ignore[return-value]


def _features(name: str, f, batch: int) -> torch.Tensor:
    """Check an extractor's output and flatten it per image to (B, F) float32."""
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"the feature extractor must return a torch.Tensor (B, F) or (B, N, F) for {name}, "
                        f"got {type(f).__name__}")
    if not f.is_floating_point():
        raise TypeError(f"the feature extractor returned dtype {f.dtype} for {name}; features must be floating-point")
    if f.dim() < 2 or f.shape[0] != batch or f[0].numel() == 0:
        raise ValueError(f"the feature extractor must return (B, F) or (B, N, F) with B={batch} for {name}, "
                         f"got shape {tuple(f.shape)}")
    return f.reshape(batch, -1).float()


def _remap(x: torch.Tensor, src: tuple[float, float], dst: tuple[float, float]) -> torch.Tensor:
    if src == dst:
        return x
    return (x - src[0]) * ((dst[1] - dst[0]) / (src[1] - src[0])) + dst[0]


def _zero(device) -> torch.Tensor:
    return torch.zeros((), dtype=torch.float32, device=device)


# ---------------------------------------------------------------------------------- feature similarity
class FeatureSimilarityLoss(nn.Module):
    """Distance between the features of an original and its reconstruction under a frozen extractor.

    ``loss(x, y)`` with ``f`` the extractor and features flattened per image to ``(B, F')``:

    - ``kind="cosine"``: ``mean_b (1 - cos(f(x)_b, f(y)_b))``, in [0, 2] (0 when the features point the
      same way); the form of the paper's identity loss.
    - ``kind="l2"``: ``mean_b mean_j (f(x)_bj - f(y)_bj)^2`` (``F.mse_loss`` of the features), >= 0.

    ``f(x)`` is computed under ``torch.no_grad()`` on ``x.detach()``: ``x`` is the target and gets no
    gradient; gradient flows through ``f(y)`` to ``y``. When the extractor is an ``nn.Module`` its
    parameters are frozen (``requires_grad=False``) at construction and it is kept in ``eval()`` mode:
    ``.train()`` on this loss (or on a module holding it) leaves the extractor in eval mode, so dropout and
    batch-norm statistics never change. A plain callable is used as is (its own parameters, if any, are
    the caller's business).

    Args:
        extractor: a feature extractor (see the module docstring): callable, images ``(B, 3, H, W)`` ->
            floating features ``(B, F)``, ``(B, N, F)`` or any ``(B, ...)``.
        pixel_range: ``(lo, hi)`` value range of the ``x`` and ``y`` passed to this loss. Default
            ``None``: the extractor's ``pixel_range`` attribute when it has one, else ``(0, 1)``. When
            the extractor has a ``pixel_range`` attribute that differs, inputs are mapped linearly onto
            it; otherwise they are passed unchanged.
        kind: ``"cosine"`` or ``"l2"``.
    Raises:
        TypeError: ``extractor`` not callable; ``pixel_range`` not a pair of numbers.
        ValueError: unknown ``kind``; ``pixel_range`` with ``lo >= hi`` or non-finite values.
    """

    def __init__(self, extractor: Callable[[torch.Tensor], torch.Tensor], pixel_range=None, kind: str = "cosine"):
        super().__init__()
        if not callable(extractor):
            raise TypeError("extractor must be callable (images (B, 3, H, W) -> features (B, F) or (B, N, F)), "
                            f"got {type(extractor).__name__}")
        check_choice("kind", kind, _KINDS)
        own = getattr(extractor, "pixel_range", None)
        own = check_range_pair("extractor.pixel_range", own) if own is not None else None
        if pixel_range is None:
            pixel_range = own if own is not None else (0.0, 1.0)
        self.pixel_range = check_range_pair("pixel_range", pixel_range)
        self.extractor_range = own if own is not None else self.pixel_range
        self.kind = kind
        if isinstance(extractor, nn.Module):
            extractor.requires_grad_(False)
            extractor.eval()
            self.extractor = extractor
        else:
            self._extractor_fn = extractor

    @property
    def _extract(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.extractor if "extractor" in self._modules else self._extractor_fn

    def train(self, mode: bool = True) -> "FeatureSimilarityLoss":
        """Set this module's training flag; the extractor always stays in ``eval()`` mode."""
        super().train(mode)
        if "extractor" in self._modules:
            self.extractor.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Feature distance of ``y`` to ``x``.

        Args:
            x: ``(B, 3, H, W)`` float in ``pixel_range``: the originals (targets; no gradient).
            y: ``(B, 3, H, W)`` float in ``pixel_range``, same shape and device as ``x``: the reconstructions.
        Returns:
            0-dim float32 tensor: the loss averaged over the batch.
        Raises:
            TypeError / ValueError: bad ``x`` / ``y`` (non-tensor, non-float, not ``(B, 3, H, W)``, shapes or
            devices differ), or an extractor output that is not a floating ``(B, ...)`` tensor, or
            features of ``x`` and ``y`` of different shapes.
        """
        check_image_pair("x", x, "y", y, channels=3, finite=False)
        extract = self._extract
        with torch.no_grad():
            fx = _features("x", extract(_remap(x.detach(), self.pixel_range, self.extractor_range)), x.shape[0])
        fy = _features("y", extract(_remap(y, self.pixel_range, self.extractor_range)), y.shape[0])
        if fx.shape != fy.shape:
            raise ValueError(f"the feature extractor gave shapes {tuple(fx.shape)} for x and {tuple(fy.shape)} for y")
        fx = fx.to(fy.device)
        if self.kind == "cosine":
            return (1.0 - F.cosine_similarity(fy, fx, dim=1, eps=1e-8)).mean()
        return F.mse_loss(fy, fx)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, pixel_range={self.pixel_range}"


# ---------------------------------------------------------------------------------- transformers backbones
def _takes_pixel_values(module: nn.Module) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "pixel_values" in params


def _needs_text(module: nn.Module) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "input_ids" in params


def _get(obj, key):
    """Read ``key`` from a dict or an attribute holder (transformers' SizeDict), None when absent."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _size_from_processor(processor) -> tuple[int, int] | None:
    size = None
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None) is not None:
        size = processor.crop_size
    elif getattr(processor, "do_resize", True) is not False:
        size = getattr(processor, "size", None)
    if size is None:
        return None
    if isinstance(size, numbers.Integral):
        return int(size), int(size)
    h, w = _get(size, "height"), _get(size, "width")
    if h is not None and w is not None:
        return int(h), int(w)
    s = _get(size, "shortest_edge")
    return (int(s), int(s)) if s is not None else None


def _size_from_config(config) -> tuple[int, int] | None:
    size = getattr(config, "image_size", None) if config is not None else None
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return int(size), int(size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, numbers.Integral) for v in size):
        return int(size[0]), int(size[1])
    return None


class TransformersFeatures(nn.Module):
    """A ``transformers`` vision backbone as a feature extractor (differentiable w.r.t. its input).

    Forward: map pixels from ``pixel_range`` to [0, 1], resize (bilinear, antialiased) to ``image_size``
    when the input size differs, normalise ``(p - mean) / std`` per channel, cast to the backbone's
    dtype, run the backbone and return the selected features.

    Args:
        model_or_name: a ``transformers`` vision model instance (e.g. ``ViTModel(ViTConfig(...))``; any
            ``nn.Module`` whose ``forward`` takes ``pixel_values``), or a Hub id / local folder loaded
            with ``transformers.AutoModel.from_pretrained`` (its image processor, if any, is loaded with
            ``AutoImageProcessor.from_pretrained`` for the defaults of ``image_size``, ``mean`` and
            ``std``). A composite image-text model (CLIP, SigLIP, ...) is reduced to its ``vision_model``.
        image_size: int or ``(height, width)`` the backbone expects. Default: the image processor's
            crop or resize size (when loaded by name), else ``config.image_size``; when neither exists,
            images are not resized. A processor's ``shortest_edge`` size is used as a square.
        mean, std: per-channel normalisation, a number or 3 numbers (``std > 0``), for pixels in [0, 1].
            Default: the image processor's ``image_mean`` / ``image_std`` when loaded by name (0 / 1 if
            its ``do_normalize`` is False), else ``config.image_mean`` / ``config.image_std`` when the
            config has them, else ImageNet's. Stored as float32 buffers ``mean`` / ``std`` of shape
            ``(1, 3, 1, 1)`` (not saved in ``state_dict``).
        layer: which features to return:

            - ``"pooler"``: ``pooler_output`` (e.g. ViT's tanh-pooled CLS, CLIP/DINOv2's normed CLS) ->
              ``(B, F)``. A model without one (``pooler_output`` None, e.g. ``ViTModel(...,
              add_pooling_layer=False)``) falls back to ``"last_hidden_mean"`` with a one-time
              ``UserWarning``, and ``pooling_fallback`` becomes True.
            - ``"last_hidden_mean"``: ``last_hidden_state`` averaged over tokens (``(B, N, F)``) or
              spatial positions (``(B, C, h, w)`` conv backbones) -> ``(B, F)``.
            - ``"last_hidden"``: ``last_hidden_state`` unpooled, ``(B, N, F)`` (or ``(B, C, h, w)``):
              spatially resolved features, the usual choice for a perceptual loss.
            - an int ``i``: ``hidden_states[i]`` (0 = embeddings, -1 = last layer before any final
              norm), ``(B, N, F)``.
        pixel_range: ``(lo, hi)`` value range of the input images.
        revision, cache_dir: passed to ``from_pretrained`` when loading by name.
    Raises:
        TypeError: ``model_or_name`` neither an ``nn.Module``, a ``str`` nor a path; a model whose
            forward takes no ``pixel_values`` (not a vision backbone); bad argument types.
        ValueError: unknown ``layer`` or an int out of range of ``config.num_hidden_layers``; a config
            with ``num_channels != 3``; bad ``image_size`` / ``mean`` / ``std`` / ``pixel_range`` values.
        OSError / ValueError: the model cannot be loaded by name (message names it; offline, nothing is
            downloaded).

    Input ``(B, 3, H, W)`` float in ``pixel_range`` on the backbone's device; output floating features
    in the backbone's dtype as above.
    """

    def __init__(self, model_or_name, *, image_size=None, mean=None, std=None, layer="pooler",
                 pixel_range=(0, 1), revision: str | None = None, cache_dir=None):
        super().__init__()
        processor = None
        if isinstance(model_or_name, (str, os.PathLike)):
            model, processor = self._load(os.fspath(model_or_name), revision, cache_dir)
        elif isinstance(model_or_name, nn.Module):
            model = model_or_name
        else:
            raise TypeError("model_or_name must be a transformers vision model (nn.Module), a Hub id or a local "
                            f"folder, got {type(model_or_name).__name__}")
        composite = isinstance(getattr(model, "vision_model", None), nn.Module)
        if composite and (not _takes_pixel_values(model) or _needs_text(model)):
            model = model.vision_model  # CLIP / SigLIP / BLIP-style composite: use the image tower
        if not _takes_pixel_values(model):
            raise TypeError(f"model_or_name: {type(model).__name__}.forward takes no `pixel_values`; "
                            "a vision backbone (ViT, DINOv2, CLIP vision tower, ResNet, ...) is required")
        config = getattr(model, "config", None)
        channels = getattr(config, "num_channels", 3)
        if isinstance(channels, int) and channels != 3:
            raise ValueError(f"model_or_name: the backbone expects num_channels={channels}; only RGB (3) is supported")

        if not (isinstance(layer, str) or is_int(layer)):
            raise TypeError(f"layer must be one of {_LAYERS} or an int, got {layer!r}")
        if isinstance(layer, str) and layer not in _LAYERS:
            raise ValueError(f"layer must be one of {_LAYERS} or an int, got {layer!r}")
        if is_int(layer):
            layer = int(layer)
            n = getattr(config, "num_hidden_layers", None)
            if isinstance(n, int) and not -(n + 1) <= layer <= n:
                raise ValueError(f"layer={layer} is out of range for a backbone with {n} layers "
                                 f"(hidden_states has {n + 1} entries: -{n + 1} <= layer <= {n})")

        self.model = model
        self.layer = layer
        self.pixel_range = check_range_pair("pixel_range", pixel_range)
        size = None if image_size is None else check_size("image_size", image_size)
        if size is None and processor is not None:
            size = _size_from_processor(processor)
        if size is None:
            size = _size_from_config(config)
        self.image_size = size

        if mean is None:
            if processor is not None and getattr(processor, "do_normalize", True) is False:
                mean = (0.0, 0.0, 0.0)
            elif processor is not None and getattr(processor, "image_mean", None) is not None:
                mean = processor.image_mean
            else:
                mean = getattr(config, "image_mean", None) or IMAGENET_MEAN
        if std is None:
            if processor is not None and getattr(processor, "do_normalize", True) is False:
                std = (1.0, 1.0, 1.0)
            elif processor is not None and getattr(processor, "image_std", None) is not None:
                std = processor.image_std
            else:
                std = getattr(config, "image_std", None) or IMAGENET_STD
        for name, value in (("mean", mean), ("std", std)):
            stats = torch.tensor(_check_channel_stats(name, value), dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer(name, stats, persistent=False)
        self.pooling_fallback = False

    @staticmethod
    def _load(name: str, revision, cache_dir):
        from transformers import AutoImageProcessor, AutoModel

        try:
            model = AutoModel.from_pretrained(name, revision=revision, cache_dir=cache_dir)
        except OSError as err:
            raise OSError(f"model_or_name={name!r}: could not load a transformers model ({err}); "
                          "offline (HF_HUB_OFFLINE=1) it must be a local folder or already in the cache") from err
        except ValueError as err:
            raise ValueError(f"model_or_name={name!r}: could not load a transformers model: {err}") from err
        try:
            processor = AutoImageProcessor.from_pretrained(name, revision=revision, cache_dir=cache_dir)
        except (OSError, ValueError, KeyError, ImportError) as err:
            warnings.warn(f"TransformersFeatures: no image processor for {name!r} ({type(err).__name__}); "
                          "image_size / mean / std default to the config's or ImageNet's", UserWarning, stacklevel=3)
            processor = None
        model.eval()
        return model, processor

    def _dtype_device(self) -> tuple[torch.dtype, torch.device | None]:
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype, p.device
        return torch.float32, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of images ``x``.

        Args:
            x: ``(B, 3, H, W)`` float in ``pixel_range``, on the backbone's device.
        Returns:
            features in the backbone's dtype: ``(B, F)`` for ``"pooler"`` / ``"last_hidden_mean"``,
            ``(B, N, F)`` for ``"last_hidden"`` and int layers (conv backbones: their own shapes).
        Raises:
            TypeError / ValueError: ``x`` not a float ``(B, 3, H, W)`` tensor, or on another device than
            the backbone; ValueError for an int ``layer`` the backbone's ``hidden_states`` does not have.
        """
        check_images("x", x, channels=3)
        dtype, device = self._dtype_device()
        if device is not None and x.device != device:
            raise ValueError(f"x is on {x.device} but the backbone is on {device}; move one of them")
        p = x.to(torch.promote_types(x.dtype, torch.float32))
        lo, hi = self.pixel_range
        if (lo, hi) != (0.0, 1.0):
            p = (p - lo) / (hi - lo)
        if self.image_size is not None and tuple(p.shape[-2:]) != self.image_size:
            p = F.interpolate(p, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        p = (p - self.mean.to(p.dtype)) / self.std.to(p.dtype)
        p = p.to(dtype)
        want_hidden = isinstance(self.layer, int)
        out = self.model(pixel_values=p, output_hidden_states=want_hidden, return_dict=True)
        if want_hidden:
            hidden = getattr(out, "hidden_states", None)
            if hidden is None:
                raise ValueError(f"layer={self.layer}: {type(self.model).__name__} returned no hidden_states")
            if not -len(hidden) <= self.layer < len(hidden):
                raise ValueError(f"layer={self.layer} is out of range: the backbone returned {len(hidden)} "
                                 "hidden states")
            return hidden[self.layer]
        if self.layer == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is not None:
                return pooled.flatten(1) if pooled.dim() > 2 else pooled
            if not self.pooling_fallback:
                warnings.warn(f"TransformersFeatures: {type(self.model).__name__} has no pooler_output; "
                              "layer='pooler' falls back to the mean of last_hidden_state", UserWarning, stacklevel=2)
                self.pooling_fallback = True
        last = out.last_hidden_state
        if self.layer == "last_hidden":
            return last
        return last.mean(dim=1) if last.dim() == 3 else last.flatten(2).mean(dim=2)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, image_size={self.image_size}, pixel_range={self.pixel_range}"


# ---------------------------------------------------------------------------------- convenience constructors
def _extractor(model_or_name, default_layer, kw) -> Callable:
    """A TransformersFeatures for a name or a transformers model; a ready extractor as is."""
    if isinstance(model_or_name, TransformersFeatures):
        if kw:
            raise TypeError(f"model_or_name is already a TransformersFeatures; unexpected arguments {sorted(kw)}")
        return model_or_name
    if _wraps(model_or_name):
        kw.setdefault("layer", default_layer)
        return TransformersFeatures(model_or_name, **kw)
    if callable(model_or_name):
        if kw:
            raise TypeError(f"model_or_name is a ready feature extractor ({type(model_or_name).__name__}); "
                            f"unexpected TransformersFeatures arguments {sorted(kw)}")
        return model_or_name
    raise TypeError("model_or_name must be a Hub id, a local folder, a transformers vision model or a feature "
                    f"extractor (callable), got {type(model_or_name).__name__}")


def identity_loss(model_or_name, *, pixel_range=(0, 1), **kw) -> FeatureSimilarityLoss:
    """The paper's identity loss: ``1 - cos`` of face embeddings of the original and the reconstruction.

    Use a face-recognition backbone from the Hub (e.g. a ViT/ArcFace-style model) for the paper's
    identity loss; a general backbone gives a generic semantic-similarity loss instead.

    Args:
        model_or_name: a Hub id or local folder, or a ``transformers`` vision model: wrapped in
            :class:`TransformersFeatures` (``layer`` defaults to ``"pooler"``, the embedding); or a ready
            feature extractor (a :class:`TransformersFeatures` or any ``nn.Module`` / callable mapping
            images to ``(B, E)`` embeddings, e.g. an ArcFace network with its own preprocessing), used
            as is.
        pixel_range: ``(lo, hi)`` value range of the images the loss receives.
        **kw: ``TransformersFeatures`` arguments (``image_size``, ``mean``, ``std``, ``layer``,
            ``revision``, ``cache_dir``); not allowed with a ready extractor.
    Returns:
        ``FeatureSimilarityLoss(extractor, pixel_range, kind="cosine")``: ``loss(x, y)`` -> 0-dim float32.
    Raises:
        TypeError / ValueError / OSError as :class:`TransformersFeatures` and :class:`FeatureSimilarityLoss`.
    """
    return _feature_loss(model_or_name, "pooler", "cosine", pixel_range, kw)


def perceptual_loss(model_or_name, *, pixel_range=(0, 1), **kw) -> FeatureSimilarityLoss:
    """A perceptual loss: mean squared distance of deep features of the original and the reconstruction.

    Use a general vision backbone from the Hub (e.g. a DINO/DINOv2 or ViT model). ``layer`` defaults to
    ``"last_hidden"`` (per-token features, spatially resolved, as perceptual losses usually are).

    Args:
        model_or_name: a Hub id or local folder, or a ``transformers`` vision model: wrapped in
            :class:`TransformersFeatures`; or a ready feature extractor (a :class:`TransformersFeatures`
            or any ``nn.Module`` / callable mapping images to features), used as is.
        pixel_range: ``(lo, hi)`` value range of the images the loss receives.
        **kw: ``TransformersFeatures`` arguments (``image_size``, ``mean``, ``std``, ``layer``,
            ``revision``, ``cache_dir``); not allowed with a ready extractor.
    Returns:
        ``FeatureSimilarityLoss(extractor, pixel_range, kind="l2")``: ``loss(x, y)`` -> 0-dim float32.
    Raises:
        TypeError / ValueError / OSError as :class:`TransformersFeatures` and :class:`FeatureSimilarityLoss`.
    """
    return _feature_loss(model_or_name, "last_hidden", "l2", pixel_range, kw)


def _feature_loss(model_or_name, layer: str, kind: str, pixel_range, kw: dict) -> FeatureSimilarityLoss:
    """identity_loss / perceptual_loss: the extractor (``layer`` by default when wrapping a model) and the loss."""
    kw = dict(kw)
    if _wraps(model_or_name):
        kw["pixel_range"] = pixel_range
    return FeatureSimilarityLoss(_extractor(model_or_name, layer, kw), pixel_range=pixel_range, kind=kind)


def _wraps(model_or_name) -> bool:
    """Whether _extractor will build a TransformersFeatures around model_or_name."""
    if isinstance(model_or_name, TransformersFeatures):
        return False
    return isinstance(model_or_name, (str, os.PathLike)) or (
        isinstance(model_or_name, nn.Module)
        and (_takes_pixel_values(model_or_name) or isinstance(getattr(model_or_name, "vision_model", None), nn.Module)))


# ---------------------------------------------------------------------------------- the stage-3 loss
class ReconstructionLoss(nn.Module):
    """The paper's stage-3 (decoder fine-tuning) loss: ``L2 + lambda_p * perceptual + lambda_f * identity``.

    ``loss(x, y)`` returns ``{"loss": total, "l2": ..., "perceptual": ..., "identity": ...}``, all 0-dim
    float32 tensors on ``x``'s device, with ``total = l2_weight * l2 + perceptual_weight * perceptual +
    identity_weight * identity``. ``l2`` is ``mean((y - x)^2)`` over all elements and is always computed
    (cheap, useful to log). A feature term whose module is absent or whose weight is 0 is not computed
    and reported as a zero tensor (no backbone pass is spent on it). ``x`` is the target: no gradient
    flows to it.

    Args:
        l2_weight: real >= 0.
        perceptual: ``None`` or a loss ``(x, y) -> 0-dim tensor`` (e.g. :func:`perceptual_loss`).
        perceptual_weight: real >= 0 (lambda_p); > 0 requires ``perceptual``.
        identity: ``None`` or a loss ``(x, y) -> 0-dim tensor`` (e.g. :func:`identity_loss`).
        identity_weight: real >= 0 (lambda_f); > 0 requires ``identity``.
    Raises:
        TypeError: a weight that is not a real number; a term that is neither None nor callable.
        ValueError: a negative or non-finite weight; a weight > 0 without its module.
    """

    def __init__(self, l2_weight: float = 1.0, perceptual=None, perceptual_weight: float = 0.0,
                 identity=None, identity_weight: float = 0.0):
        super().__init__()
        self.l2_weight = check_real("l2_weight", l2_weight, minimum=0)
        self.perceptual_weight = check_real("perceptual_weight", perceptual_weight, minimum=0)
        self.identity_weight = check_real("identity_weight", identity_weight, minimum=0)
        for name, term, weight in (("perceptual", perceptual, self.perceptual_weight),
                                   ("identity", identity, self.identity_weight)):
            if term is not None and not callable(term):
                raise TypeError(f"{name} must be None or a loss module (x, y) -> 0-dim tensor, "
                                f"got {type(term).__name__}")
            if term is None and weight > 0:
                raise ValueError(f"{name}_weight={weight} > 0 needs a {name} loss module, got {name}=None")
        # nn.Module terms register as submodules (device moves, train/eval); plain callables are kept aside.
        self.perceptual = perceptual if isinstance(perceptual, nn.Module) else None
        self.identity = identity if isinstance(identity, nn.Module) else None
        self._fns = {name: term for name, term in (("perceptual", perceptual), ("identity", identity))
                     if term is not None and not isinstance(term, nn.Module)}

    def _term(self, name: str, weight: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fn = self._modules.get(name)
        fn = self._fns.get(name) if fn is None else fn
        if fn is None or weight == 0:
            return _zero(x.device)
        value = fn(x, y)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.numel() != 1:
            got = (value.dtype, tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"the {name} loss must return a floating 1-element tensor, got {got}")
        return value.reshape(()).float()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage-3 loss of reconstructions ``y`` against originals ``x``.

        Args:
            x: ``(B, 3, H, W)`` float: the originals (targets).
            y: ``(B, 3, H, W)`` float, same shape and device: the reconstructions, in the same pixel range
                (the feature terms' ``pixel_range``).
        Returns:
            dict of 0-dim float32 tensors ``loss``, ``l2``, ``perceptual``, ``identity``.
        Raises:
            TypeError / ValueError: bad ``x`` / ``y``; a term returning something other than a floating
            1-element tensor.
        """
        check_image_pair("x", x, "y", y, channels=3, finite=False)
        x = x.detach()
        l2 = F.mse_loss(y.float(), x.float())
        perceptual = self._term("perceptual", self.perceptual_weight, x, y)
        identity = self._term("identity", self.identity_weight, x, y)
        total = self.l2_weight * l2 + self.perceptual_weight * perceptual + self.identity_weight * identity
        return {"loss": total, "l2": l2, "perceptual": perceptual, "identity": identity}

    def extra_repr(self) -> str:
        return (f"l2_weight={self.l2_weight}, perceptual_weight={self.perceptual_weight}, "
                f"identity_weight={self.identity_weight}")

"""A swapped model's inherited ``save_pretrained`` / ``push_to_hub`` refuse (:func:`guard_native_saving`).

Their loaders would rebuild the upstream quantizer and drop the swapped one; :func:`vqswitch.adapters.swap_quantizer`
and :func:`vqswitch.adapters.load_swapped` guard every swapped model they return.
"""
from __future__ import annotations

import torch.nn as nn

__all__ = ["guard_native_saving", "unguard_native_saving", "SwappedSaveError", "NATIVE_SAVE_METHODS"]

NATIVE_SAVE_METHODS = ("save_pretrained", "push_to_hub")


class SwappedSaveError(NotImplementedError):
    """A swapped model's inherited ``save_pretrained`` / ``push_to_hub`` was called
    (see :func:`guard_native_saving`)."""


class _RefuseNativeSave:
    """The instance-level stand-in for one inherited save/push method of a swapped model: raises
    :class:`SwappedSaveError`. Holds no reference to the model, so deepcopy and pickle carry it as it is."""

    def __init__(self, method: str, owner: str):
        self.method, self.owner = method, owner

    def __call__(self, *args, **kwargs):
        raise SwappedSaveError(
            f"{self.owner}.{self.method}() would write a model without its swapped quantizer: "
            f"{self.owner}'s loader builds its own quantizer and drops the STSCQ codebooks and router with only a "
            "warning. Save with vqswitch.adapters.save_swapped(model, folder) and load with "
            "vqswitch.adapters.load_swapped(folder); publish with `vqswitch push folder --repo-id ORG/NAME` "
            "(vqswitch.publish.push), which vqswitch.adapters.load_swapped('ORG/NAME') loads back")

    def __repr__(self) -> str:
        return f"<{self.owner}.{self.method} refused on a swapped model: use vqswitch.adapters.save_swapped>"


def guard_native_saving(model: nn.Module) -> list[str]:
    """Make a swapped model's inherited save and push methods refuse; returns the names guarded.

    Why refuse rather than make them work: diffusers' ``ModelMixin.save_pretrained`` / ``push_to_hub``,
    ``huggingface_hub.PyTorchModelHubMixin``'s and TiTok's ``save_pretrained`` write the state dict beside the
    *base* model's config. Their loaders (``VQModel.from_pretrained``, the mixin's ``from_pretrained``,
    :func:`vqswitch.adapters.load_pretrained`) rebuild the upstream quantizer from that config, so the swapped
    quantizer's codebooks (M, T', K, D), router and usage counts are dropped (diffusers only warns) and the upstream
    codebook is re-initialised: a model that loads without error and gives other codes. Only a change to the
    upstream loader could load them, and vqswitch does not patch upstream classes. So these methods raise
    :class:`SwappedSaveError` (a ``NotImplementedError``) naming ``vqswitch.adapters.save_swapped`` /
    ``load_swapped`` and ``vqswitch push``, before anything is written or any Hub call is made.

    Mechanism: for each name in :data:`NATIVE_SAVE_METHODS` that ``type(model)`` has, an instance attribute
    shadows the class's method on this model only (the class and unswapped models are untouched; deepcopy and
    pickle keep it). :func:`vqswitch.adapters.swap_quantizer` and :func:`vqswitch.adapters.load_swapped` call this,
    so every swapped model is guarded. :func:`unguard_native_saving` removes the guard (for a caller who wants the
    native file anyway, knowing its loader drops the quantizer).
    Raises nothing; a model without such methods (MaskGIT-VQGAN, IBQ, most user models) gets none.
    """
    guarded = []
    for name in NATIVE_SAVE_METHODS:
        if callable(getattr(type(model), name, None)):
            object.__setattr__(model, name, _RefuseNativeSave(name, type(model).__name__))
            guarded.append(name)
    return guarded


def unguard_native_saving(model: nn.Module) -> None:
    """Remove :func:`guard_native_saving`'s stand-ins from ``model``: its class's methods apply again."""
    for name in NATIVE_SAVE_METHODS:
        if isinstance(model.__dict__.get(name), _RefuseNativeSave):
            del model.__dict__[name]

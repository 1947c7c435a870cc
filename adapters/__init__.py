"""vqswitch.adapters: swap SwitchableTokenQuantizer into existing tokenizers.

The contract, the same for every family (diffusers ``VQModel``, MaskGIT-VQGAN, TiTok, IBQ):

* :func:`swap_quantizer` replaces ``model.quantize`` in place with a shim that keeps the upstream
  call signature, return structure, index layout, loss and ``get_codebook_entry``;
* :func:`quantizer_from_model` builds a :class:`~vqswitch.SwitchableTokenQuantizer` from the
  model's own codebook, metric and token count;
* :func:`encode_codes` / :func:`decode_codes`: images <-> :class:`~vqswitch.Codes`, in the model's
  pixel range; :func:`encode_latents` gives the encoder tokens (for initialisation and training);
* :func:`load_pretrained` reads upstream checkpoints; :func:`save_swapped` / :func:`load_swapped`
  store a swapped model and restore it exactly.

Indices after a swap are flat ids ``g*K + k`` (see :mod:`vqswitch.adapters.contract`).
Any other VQ model (an ``nn.Embedding`` or (K, D) tensor codebook) joins with :func:`describe_model`
(:mod:`vqswitch.adapters.generic`): attribute path of its quantizer, images -> latents, latents -> images,
pixel range and latent layout; then every function above works on it.
Optional dependencies (diffusers) are imported only when a model of theirs is built or loaded.
vqswitch's own tokenizer implementations live in :mod:`vqswitch.adapters.models`.
"""
from . import diffusers_vq, ibq, maskgit, titok  # noqa: F401  (importing an adapter module registers it)
from .contract import Adapter, QuantizerShim, adapter_for, adapter_named, adapters
from .generic import describe_model
from .saving import (SwappedSaveError, detect_family, load_builder, load_model, load_pretrained, load_swapped,
                     save_swapped)
from .swap import decode_codes, encode_codes, encode_latents, quantizer_from_model, swap_quantizer, swapped_quantizer

__all__ = [
    "swap_quantizer", "quantizer_from_model", "encode_latents", "encode_codes", "decode_codes", "swapped_quantizer",
    "load_pretrained", "save_swapped", "load_swapped", "adapter_for", "adapter_named", "adapters", "Adapter",
    "QuantizerShim", "detect_family", "describe_model", "SwappedSaveError", "load_model",
    "load_builder",
]

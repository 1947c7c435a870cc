"""vqswitch's own, checkpoint-compatible implementations of tokenizers that no registry ships.

Each module holds one tokenizer, written from public facts about the upstream model (never its
code), with the upstream ``state_dict`` layout key for key and the upstream methods and return
structures. Every path that quantizes or looks codes up goes through ``model.quantize``, so that
:func:`vqswitch.adapters.swap_quantizer` can replace it.
"""

"""vqswitch.adapters: swap SwitchableTokenQuantizer into existing tokenizers.

The adapter contract and the TiTok / MaskGIT-VQGAN / IBQ / diffusers adapters arrive with the
adapter issues; this package exists now so that `import vqswitch.adapters` is stable.
"""
__all__: list[str] = []

"""vqswitch.compat: drop-in replacements for other libraries' quantizers, running on vqswitch's core.

A tool, not core: each module encodes another library's conventions (argument names, layouts, update rules,
quirks), which the core promises not to know; nothing in vqswitch imports this package, only user code does.

- :mod:`vqswitch.compat.vector_quantize` - ``VectorQuantize``, for ``vector_quantize_pytorch.VectorQuantize``.
"""
from .vector_quantize import UNSUPPORTED, UNSUPPORTED_FORWARD, LossBreakdown, VectorQuantize

__all__ = ["VectorQuantize", "LossBreakdown", "UNSUPPORTED", "UNSUPPORTED_FORWARD"]

"""vqswitch: Switchable Token-Specific Codebook Quantization (STSCQ) for VQ image tokenizers.

``import vqswitch`` needs only torch, numpy, safetensors and huggingface-hub.
"""
from .bits import bits_per_image, bpp, index_bits
from .codebooks import Utilization
from .codes import Codes
from .quantizer import QuantizerOutput, SwitchableTokenQuantizer

__version__ = "0.1.0"
__all__ = ["SwitchableTokenQuantizer", "QuantizerOutput", "Codes", "Utilization",
           "bits_per_image", "bpp", "index_bits", "__version__"]

"""How numbers are stored: formats, float rounding, affine quantizers, codebooks, packing.

Re-exports the public functions of the ``tinyquant.quant`` modules (no logic here).
"""

from .affine import (
    CONVENTIONS,
    block_minmax,
    check_finite,
    choose_qparams,
    code_dtype,
    dequantize,
    expand,
    fake_quantize,
    qparams_from_range,
    quantize,
)
from .formats import FORMATS, Format, get_format
from .granularity import check_block_size, num_blocks, per_channel, per_group, per_tensor, per_token
from .pack import pack, packed_length, to_signed, to_unsigned, unpack
from .qtensor import QTensor, quantize_tensor

__all__ = [
    "CONVENTIONS",
    "FORMATS",
    "Format",
    "QTensor",
    "block_minmax",
    "check_block_size",
    "check_finite",
    "choose_qparams",
    "code_dtype",
    "dequantize",
    "expand",
    "fake_quantize",
    "get_format",
    "num_blocks",
    "pack",
    "packed_length",
    "per_channel",
    "per_group",
    "per_tensor",
    "per_token",
    "qparams_from_range",
    "quantize",
    "quantize_tensor",
    "to_signed",
    "to_unsigned",
    "unpack",
]

"""How numbers are stored: formats, float rounding, affine quantizers, codebooks, packing.

Re-exports the public functions of the ``tinyquant.quant`` modules (no logic here).
"""

from .activations import fake_quantize_activations, quantize_activations
from .affine import (
    CONVENTIONS,
    as_float32,
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
from .codebook import encode_codebook, from_bnb_bytes, quantize_codebook, to_bnb_bytes
from .floats import FLOAT_FORMATS, decode, encode, round_to_format, split_fields
from .formats import FORMATS, Format, get_format
from .gguf_blocks import GGUF_BLOCK_BYTES, dequantize_gguf, quantize_gguf
from .granularity import check_block_size, num_blocks, per_channel, per_group, per_tensor, per_token
from .kquants import KQUANT_BLOCK_BYTES, dequantize_kquant, quantize_kquant
from .microscaling import MX_FORMATS, MXTensor, from_gguf_bytes, quantize_mx, to_gguf_bytes
from .observers import (
    OBSERVERS,
    KLObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)
from .pack import pack, packed_length, to_signed, to_unsigned, unpack
from .qtensor import QTensor
from .tensor_quantize import quantize_tensor

__all__ = [
    "CONVENTIONS",
    "FLOAT_FORMATS",
    "FORMATS",
    "Format",
    "GGUF_BLOCK_BYTES",
    "KQUANT_BLOCK_BYTES",
    "KLObserver",
    "MSEObserver",
    "MXTensor",
    "MX_FORMATS",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "OBSERVERS",
    "Observer",
    "PercentileObserver",
    "QTensor",
    "block_minmax",
    "check_block_size",
    "check_finite",
    "choose_qparams",
    "code_dtype",
    "dequantize",
    "decode",
    "dequantize_gguf",
    "dequantize_kquant",
    "quantize_kquant",
    "as_float32",
    "fake_quantize_activations",
    "quantize_activations",
    "encode",
    "encode_codebook",
    "expand",
    "fake_quantize",
    "from_bnb_bytes",
    "from_gguf_bytes",
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
    "quantize_codebook",
    "quantize_gguf",
    "quantize_mx",
    "quantize_tensor",
    "round_to_format",
    "split_fields",
    "to_bnb_bytes",
    "to_gguf_bytes",
    "to_signed",
    "to_unsigned",
    "unpack",
]

"""How quantized matmuls run fast: NumPy references (the oracle) and Numba kernels.

``reference``    naive NumPy: int8 GEMM, W8A8, weight-only W8/W4/W3/W2 A16 on packed codes
``numba_int``    Numba int8 GEMM (portable loops, or AVX512-VNNI via ``vnni``) and W8A8
``weight_only``  Numba weight-only kernels on a prepacked "rows in lanes" layout
``vnni``         the vpdpbusd instruction as a Numba intrinsic; CPU feature detection
``unpack_dot``   the explicit-vector unpack-and-FMA micro-kernel of the weight-only path
``checks``       input validation (ValueError before anything enters Numba)
"""

from .numba_int import (
    PackedW8A8,
    int8_matmul,
    int8_matmul_packed,
    matmul_u8s8,
    pack_w8a8_u8,
    prepack_w8a8,
    w8a8_linear,
    w8a8_packed_linear,
)
from .vnni import default_kernels, has_vnni
from .weight_only import (
    PackedWeightOnly,
    dequantize_packed,
    dequantize_packed_t,
    packed_linear,
    prepack,
    w2a16_linear,
    w3a16_linear,
    w4a16_linear,
    w8a16_linear,
    weight_only_linear,
)

__all__ = [
    "PackedW8A8",
    "PackedWeightOnly",
    "default_kernels",
    "dequantize_packed",
    "dequantize_packed_t",
    "has_vnni",
    "int8_matmul",
    "int8_matmul_packed",
    "matmul_u8s8",
    "pack_w8a8_u8",
    "packed_linear",
    "prepack",
    "prepack_w8a8",
    "w2a16_linear",
    "w3a16_linear",
    "w4a16_linear",
    "w8a16_linear",
    "w8a8_linear",
    "w8a8_packed_linear",
    "weight_only_linear",
]

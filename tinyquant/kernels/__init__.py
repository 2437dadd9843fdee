"""How quantized matmuls run fast: NumPy references (the oracle) and Numba kernels.

``reference``    naive NumPy: int8 GEMM, W8A8, W4A8, weight-only W8/W4/W3/W2 A16 on packed codes
``numba_int``    Numba int8 GEMM (portable loops, or AVX512-VNNI via ``vnni``) and W8A8
``weight_only``  Numba weight-only kernels on a prepacked "rows in lanes" layout
``w4a8``         Numba W4A8: 4-bit group-wise weights × int8 per-token activations (vpdpbusd)
``vnni``         the vpdpbusd instruction as a Numba intrinsic; CPU feature detection
``unpack_dot``   the explicit-vector unpack-and-FMA micro-kernel of the weight-only path
``lut2``         2-bit weight-only decode by table lookup (T-MAC): no multiply per weight
``act_int8``     per-token int8 activation codes and their sums in one pass (W8A8, W4A8)
``attention``    decode-step attention over a KV cache (keeps a decode step in one thread pool)
``llvm_loops``   the counted-loop IR scaffolding both intrinsics share
``checks``       input validation (ValueError before anything enters Numba)

``__all__`` lists what a user calls. The building blocks other modules use — ``matmul_u8s8``
(GEMM on offset weights), ``pack_w8a8_u8`` (pack a signed int8 QTensor's stored codes),
``dequantize_packed_t`` (one slab of the BLAS path) — are importable from here too, and live in
``numba_int`` and ``weight_only``.
"""

from .numba_int import (
    PackedW8A8,
    int8_matmul,
    int8_matmul_packed,
    matmul_u8s8,  # noqa: F401 - building block, not in __all__
    pack_w8a8_u8,  # noqa: F401 - building block, not in __all__
    prepack_w8a8,
    w8a8_linear,
    w8a8_packed_linear,
    w8a8_packed_linear_checked,  # noqa: F401 - building block, not in __all__
)
from .vnni import default_kernels, has_vnni
from .w4a8 import (
    PackedW4A8,
    prepack_w4a8,
    w4a8_packed_linear,
    w4a8_packed_linear_checked,  # noqa: F401 - building block, not in __all__
)
from .weight_only import (
    DEQUANT_MIN_TOKENS,  # noqa: F401 - building block, not in __all__
    PackedWeightOnly,
    dequantize_packed,
    dequantize_packed_t,  # noqa: F401 - building block, not in __all__
    needs_overflow_shift,  # noqa: F401 - building block, not in __all__
    packed_linear,
    packed_linear_checked,  # noqa: F401 - building block, not in __all__
    prepack,
    stack_packed,  # noqa: F401 - building block, not in __all__
    weight_only_linear,
)

__all__ = [
    "PackedW4A8",
    "PackedW8A8",
    "PackedWeightOnly",
    "default_kernels",
    "dequantize_packed",
    "has_vnni",
    "int8_matmul",
    "int8_matmul_packed",
    "packed_linear",
    "prepack",
    "prepack_w4a8",
    "prepack_w8a8",
    "w4a8_packed_linear",
    "w8a8_linear",
    "w8a8_packed_linear",
    "weight_only_linear",
]

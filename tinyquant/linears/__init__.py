"""Everything that replaces a weight in a quantized model, behind one protocol (protocol.py).

``QuantLinear``        a QTensor weight, fake-quant or integer path, weight-only or W8A8
``ActQuantLinear``     int8 activations (per token / per tensor, dynamic / static) in front
``RotatedLinear``      a weight quantized in Hadamard-rotated space
``Int8OutlierLinear``  LLM.int8(): int8 with float outlier features
``MXLinear``           a microscaling weight (MXFP4, MXFP8, NVFP4)
"""

from .protocol import LINEAR_TYPES, PATHS, QLinear, linear_from_state
from .quant_linear import QuantLinear
from .wrappers import ActQuantLinear, Int8OutlierLinear, MXLinear, RotatedLinear

__all__ = [
    "PATHS",
    "QLinear",
    "QuantLinear",
    "ActQuantLinear",
    "RotatedLinear",
    "Int8OutlierLinear",
    "MXLinear",
    "LINEAR_TYPES",
    "linear_from_state",
]

"""tinyquant: LLM quantization from scratch in NumPy.

    import tinyquant as tq
    model = tq.load()                          # the shipped FP32 Shakespeare model
    q = tq.quantize(model, "w4-gptq")          # any preset, Recipe or recipe JSON
    tq.evaluate(q)                             # Δppl, KL, top-1 with paired 95% intervals
    q.save("w4.safetensors")

Four wings, one concept per module, dependencies pointing down:

- ``tinyquant.llm``      the tiny LLaMA-style transformer that gets quantized;
- ``tinyquant.quant``    how numbers are stored (formats, affine quantizers, packing);
- ``tinyquant.algos``    how the codes are chosen (RTN, GPTQ, AWQ, SmoothQuant, rotation);
- ``tinyquant.kernels``  how quantized matmuls run fast (Numba integer kernels);
- above them: ``linears`` (the quantized Linears), ``recipe``/``presets`` (layer rules),
  ``methods`` (the registry), ``qmodel`` (``quantize_model``), ``evaluate`` (the one evaluator),
  ``compare``, ``qcheckpoint``, ``cli``.

Glossary (one word, one meaning):

- **fmt** a format of the table (``quant.formats``): "int8", "uint4", "nf4", "fp8_e4m3", …
- **group_size** elements along the input axis sharing one (scale, zero); **block_size** the
  shape of the block sharing one (scale, zero) (per-tensor, per-channel, per-group, per-token)
- **codes** the stored integers; **scale, zero** x ≈ scale · (code − zero)
- **layer** a transformer block (``blk.i``); **chunk** columns GPTQ updates lazily at once
- **rule** targets → scheme + method; **recipe** a list of rules (the last match wins)
- **path** "fake" (dequantize, float matmul) or "int" (integer kernels)
- **n_candidates / max_shrink** the candidates and the largest shrink of a clip search
- **bits per weight** all stored bits (codes + scales + zeros) / number of weights
"""

from tinyquant.api import compare, default_calibration, evaluate, load, load_recipe, quantize
from tinyquant.evaluate import EvalSample, Evaluator, paired_difference
from tinyquant.presets import PRESETS
from tinyquant.qmodel import Model
from tinyquant.recipe import (
    AWQ,
    GPTQ,
    RTN,
    Activations,
    LLMInt8,
    Recipe,
    Rotation,
    Rule,
    Smooth,
    Weights,
)

__version__ = "0.1.0"

__all__ = [
    "AWQ",
    "GPTQ",
    "LLMInt8",
    "PRESETS",
    "RTN",
    "Activations",
    "EvalSample",
    "Evaluator",
    "Model",
    "Recipe",
    "Rotation",
    "Rule",
    "Smooth",
    "Weights",
    "compare",
    "default_calibration",
    "evaluate",
    "load",
    "load_recipe",
    "paired_difference",
    "quantize",
]

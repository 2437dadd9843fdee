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

Threads: OpenBLAS's idle workers spin for 2^28 cycles (≈ 90 ms) after each call, and on a
2-core machine a Numba kernel run in that window shares a core with them (one 11008 × 4096
W4A16 GEMV: 8.1 ms instead of 0.69 ms on 2 threads). Imported before NumPy, tinyquant sets
``OPENBLAS_THREAD_TIMEOUT=22`` (≈ 1 ms) unless it is already set — it only shortens the
spinning; no result changes.
"""

import os
import sys

if "numpy" not in sys.modules:  # OpenBLAS reads it once, when NumPy loads it
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")

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

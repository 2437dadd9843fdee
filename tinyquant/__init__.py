"""tinyquant: LLM quantization from scratch in NumPy.

Four wings, one concept per module:

- ``tinyquant.llm``     the tiny LLaMA-style transformer that gets quantized;
- ``tinyquant.quant``   how numbers are stored (formats, affine quantizers, packing);
- ``tinyquant.algos``   how the codes are chosen (RTN, GPTQ, AWQ, SmoothQuant, ...);
- ``tinyquant.kernels`` how quantized matmuls run fast (Numba integer kernels).
"""

__version__ = "0.1.0"

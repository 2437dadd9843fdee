"""llama.cpp's file types as ``compare`` rows: what a llama.cpp user gets, scored by our evaluator.

A row ``gguf-Q4_K_M`` (or ``gguf-Q4_K_M-imatrix``) is made the way a llama.cpp user makes the
file — the FP32 model written as GGUF with llama-quantize's type mix (``mix.py``), quantized by
our byte-identical K-quant and block quantizers, with the importance matrix of the same
calibration text the other recipes see — then read back (dequantized) and scored by the one
evaluator. So the row measures the file's weights, not a re-implementation beside it.

Unlike the presets, which quantize the 28 block Linears and keep ``token_embd`` and ``output``
in FP32, a llama.cpp file quantizes every 2-D tensor (``output`` in Q6_K for the K mixes,
``token_embd`` in the default type). Bits per weight are counted the same way as
``Model.bits_per_weight`` — stored bits of every quantized tensor over its number of weights —
from the file's own tensor sizes, so the embeddings' bits and their error are both in the row.

Refs: llama.cpp tools/quantize (file types), src/llama-quant.cpp (the mixes), tools/imatrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyquant.export.gguf import export_gguf, gguf_py, import_gguf
from tinyquant.export.mix import FILE_TYPES
from tinyquant.llm.model import Config

__all__ = ["GGUFScheme", "GGUF_SCHEMES", "GGUFFile", "gguf_file", "file_bits"]

COMPARE_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")


@dataclass(frozen=True)
class GGUFScheme:
    """A llama.cpp file type as a compare row (``needs_calibration`` when it uses an imatrix).

    >>> s = GGUFScheme.parse("gguf-Q4_K_M-imatrix")
    >>> s.ftype, s.imatrix, s.name
    ('Q4_K_M', True, 'gguf-Q4_K_M-imatrix')
    """

    ftype: str  # a llama-quantize file type (mix.FILE_TYPES)
    imatrix: bool = False  # quantize with the importance matrix of the calibration text

    def __post_init__(self):
        if self.ftype not in FILE_TYPES:
            raise ValueError(f"unknown GGUF type {self.ftype!r}; choose from "
                             f"{', '.join(FILE_TYPES)}")  # fmt: skip

    @property
    def name(self) -> str:
        return f"gguf-{self.ftype}" + ("-imatrix" if self.imatrix else "")

    @property
    def needs_calibration(self) -> bool:
        return self.imatrix

    @property
    def description(self) -> str:
        how = " with an importance matrix from the calibration text" if self.imatrix else ""
        return (f"llama.cpp {self.ftype} file (llama-quantize's type mix{how}), "
                "every 2-D tensor quantized, read back from the .gguf")  # fmt: skip

    @classmethod
    def parse(cls, name: str) -> GGUFScheme | None:
        """The scheme a name like ``gguf-Q4_K_M[-imatrix]`` means; None if not such a name."""
        m = re.fullmatch(r"gguf-(\w+?)(-imatrix)?", name)
        if m is None:
            return None
        return cls(m.group(1), imatrix=m.group(2) is not None)


# every type with and without an imatrix, but Q8_0: llama.cpp's quantize_q8_0 ignores the weights
GGUF_SCHEMES = tuple(GGUFScheme(t, im).name for t in COMPARE_TYPES for im in (False, True)
                     if not (im and t == "Q8_0"))  # fmt: skip


@dataclass(frozen=True)
class GGUFFile:
    """A written GGUF file read back: dequantized params, per-tensor types, exact sizes."""

    path: Path
    params: dict  # float32 arrays, our layout (dequantized as gguf-py would)
    types: dict[str, str]  # tensor → GGML type
    bits_per_weight: float  # stored bits of the quantized (2-D) tensors / their weights
    nbytes: int  # every tensor's data bytes as stored in the file


def file_bits(path: str | Path) -> tuple[int, int, int]:
    """(bytes of the 2-D tensors, their number of weights, bytes of all tensors) of a GGUF file."""
    reader = gguf_py().GGUFReader(Path(path))
    q_bytes = q_n = total = 0
    for t in reader.tensors:
        total += int(t.n_bytes)
        if len(t.shape) >= 2:  # the norms (1-D) stay F32 and are not counted
            q_bytes += int(t.n_bytes)
            q_n += int(t.n_elements)
    return q_bytes, q_n, total


def gguf_file(
    params: dict,
    cfg: Config,
    scheme: GGUFScheme,
    imatrix: dict[str, np.ndarray] | None,
    path: str | Path,
) -> GGUFFile:
    """Export ``params`` as ``scheme``'s file at ``path`` and read it back.

    >>> import tempfile
    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config(vocab_size=256, d_model=256, n_layers=1, n_heads=2, d_ff=256, context=16)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     f = gguf_file(init_params(cfg), cfg, GGUFScheme("Q8_0"), None, f"{tmp}/m.gguf")
    >>> f.bits_per_weight, f.types["blk.0.ffn_down.weight"]       # 34 bytes per 32 weights
    (8.5, 'Q8_0')
    """
    if scheme.imatrix and not imatrix:
        raise ValueError(f"{scheme.name} needs an importance matrix; compute it with "
                         "tinyquant.export.imatrix.compute_imatrix")  # fmt: skip
    path = Path(path)
    export_gguf(params, cfg, path, scheme.ftype, imatrix=imatrix if scheme.imatrix else None)
    back, _cfg, types = import_gguf(path)
    q_bytes, q_n, total = file_bits(path)
    return GGUFFile(path, back, types, 8 * q_bytes / q_n, total)

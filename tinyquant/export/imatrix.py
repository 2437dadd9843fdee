"""The importance matrix (imatrix): per input channel of every Linear, the mean of x² over tokens.

    imatrix_j = (1/N) Σ_n X_nj²  =  diag(H)_j / 2      since H = 2XᵀX/N (calibrate.py)

llama.cpp's ``llama-imatrix`` collects exactly this (the sum of x² of each matmul's input and a
token count) and ``llama-quantize --imatrix`` divides the two and hands the vector to the
``quantize_row_*_impl`` quantizers, which weight each weight's error by imatrix_j·sqrt(σ² + w²).

File format (llama.cpp's GGUF imatrix, written by tools/imatrix since the switch from the
legacy ``.dat`` format — the version bundled with llama-cpp-python 0.3.36):
    general.type = "imatrix"; imatrix.datasets = [names]; imatrix.chunk_count, imatrix.chunk_size
    tensor "<weight name>.in_sum2"  F32 (I, 1): Σ x²          (ggml ne [I, 1])
    tensor "<weight name>.counts"   F32 (1, 1): N tokens
and the loader (common/imatrix-loader.cpp, tools/quantize) uses in_sum2 / counts in float32.

Refs: llama.cpp PR #4861 (imatrix), tools/imatrix/imatrix.cpp ``save_imatrix``,
tools/quantize/quantize.cpp ``load_imatrix``.
Shapes: I in features of a Linear; N calibration tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyquant.algos.calibrate import collect_stats
from tinyquant.export.gguf import gguf_py, write_and_close, written_beside
from tinyquant.llm.model import Config

__all__ = ["compute_imatrix", "write_imatrix", "read_imatrix"]


def compute_imatrix(params: dict, cfg: Config, tokens: np.ndarray) -> tuple[dict, int]:
    """({weight name: mean x² (I,) float32} for every Linear, N tokens) over ``tokens`` (B, T).

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> im, n = compute_imatrix(init_params(cfg), cfg, np.zeros((2, 8), np.int64))
    >>> n, im["blk.0.ffn_down.weight"].shape, bool((im["output.weight"] > 0).all())
    (16, (64,), True)
    """
    stats = collect_stats(params, cfg, tokens)
    out = {name: (np.diag(s.H) / 2).astype(np.float32) for name, s in stats.items()}
    return out, int(next(iter(stats.values())).n)


def write_imatrix(path, imatrix: dict, n_tokens: int, chunk_size: int, dataset: str = "") -> None:
    """Write llama.cpp's GGUF imatrix file (sums of x² and counts) — complete or not at all."""
    gguf = gguf_py()
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: directory {path.parent} does not exist")
    with written_beside(path, ".imatrix.tmp") as tmp:
        w = gguf.GGUFWriter(tmp, arch=None)
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", [dataset or "tinyquant calibration"])
        w.add_uint32("imatrix.chunk_count", max(1, n_tokens // max(1, chunk_size)))
        w.add_uint32("imatrix.chunk_size", chunk_size)
        for name, v in imatrix.items():
            sums = (np.asarray(v, np.float64) * n_tokens).astype(np.float32)
            w.add_tensor(f"{name}.in_sum2", sums[None, :])  # ggml ne [I, 1]
            w.add_tensor(f"{name}.counts", np.array([[n_tokens]], np.float32))
        write_and_close(w)


def read_imatrix(path) -> dict[str, np.ndarray]:
    """{weight name: in_sum2 / count (float32)} from a GGUF imatrix file, as llama-quantize does."""
    gguf = gguf_py()
    try:
        reader = gguf.GGUFReader(path)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path} is not a GGUF imatrix file ({type(err).__name__})") from None
    t = reader.fields.get("general.type")
    if t is None or t.contents() != "imatrix":
        raise ValueError(f"{path} is a GGUF file but not an imatrix (general.type is not imatrix)")
    tensors = {t.name: np.asarray(t.data, np.float32).ravel() for t in reader.tensors}
    out = {}
    for name, sums in tensors.items():
        if name.endswith(".in_sum2"):
            base = name[: -len(".in_sum2")]
            count = tensors.get(base + ".counts")
            if count is None:
                raise ValueError(f"{path}: {base} has sums of x² but no counts")
            c = np.float32(count[0])
            out[base] = sums / c if c > 0 else np.ones_like(sums)
    return out

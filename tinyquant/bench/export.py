"""GGUF export benchmark: seconds to write the shipped model in each llama.cpp file type.

The baseline of each row is the F32 export of the same model in the same run (header, metadata
and 14 MB of float32 written through gguf-py), so ``speedup = baseline_seconds / seconds`` < 1
is the cost of quantizing: 1/speedup is how many F32 exports one quantized export takes.
Median and minimum of ``repeats`` runs, one process (NumPy's BLAS threads as set).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tinyquant.bench import time_it
from tinyquant.export.gguf import export_gguf
from tinyquant.llm.checkpoint import load_checkpoint

TYPES = ("Q8_0", "Q4_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")


def run(quick: bool = False) -> list[dict]:
    """One row per file type; ``quick`` times Q8_0 and Q4_K_M once each."""
    params, cfg, _ = load_checkpoint()
    repeats = 1 if quick else 5
    types = ("Q8_0", "Q4_K_M") if quick else TYPES
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.gguf"
        base, base_min = time_it(lambda: export_gguf(params, cfg, out, "F32"), repeats)
        for t in types:
            med, best = time_it(lambda t=t: export_gguf(params, cfg, out, t), repeats)
            row = {"name": f"export gguf {t}", "shape": f"{cfg.n_layers} blocks, d {cfg.d_model}",
                   "seconds": med, "min_seconds": best, "baseline": "F32 export",
                   "baseline_seconds": base, "speedup": base / med,
                   "file_bytes": out.stat().st_size}  # fmt: skip
            print(f"export gguf {t:7s} median {med:6.2f} s  min {best:6.2f} s  "
                  f"= {med / base:5.1f}× the F32 export ({base:.2f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
            rows.append(row)
    return rows

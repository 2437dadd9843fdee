"""``tinyquant compare``: quantize the shipped model every way and put the results side by side.

For each recipe: quantize (calibrating on training plays where the recipe needs it), then on
the same held-out validation bytes measure

    perplexity and Δppl % against FP32 · KL(p_fp32 ‖ p_q) · top-1 agreement with FP32 ·
    exact bytes and bits per weight of the quantized Linears · batch-1 decode tokens/s

Perplexity, KL and top-1 run on the fake-quant path (dequantized weights, BLAS matmuls: the
same function as the integer path up to float rounding, which the tests bound); tokens/s runs on
the integer kernels wherever a recipe has them (``path`` column), else on the fake path.
A plot of perplexity against bits per weight marks the Pareto frontier: the recipes no other
recipe beats on both size and perplexity.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tinyquant.llm.checkpoint import load_checkpoint
from tinyquant.llm.data import calibration_samples, val_bytes
from tinyquant.metrics import (
    decode_tokens_per_s,
    eval_loss,
    eval_vs_reference,
    reference_logprobs,
)
from tinyquant.recipes import PRESETS, bits_per_weight, get_recipe, model_bytes, quantize_model

__all__ = ["CompareConfig", "run_compare", "format_table", "pareto_front", "plot_results"]


@dataclass(frozen=True)
class CompareConfig:
    """What ``tinyquant compare`` measures; the defaults finish in minutes on 2 cores."""

    eval_bytes: int = 65_536  # validation bytes scored per recipe (a fixed prefix)
    calib_sequences: int = 128  # calibration windows (GPTQ's reference used 128)
    calib_length: int = 256  # bytes per calibration window
    calib_seed: int = 0  # which training windows are drawn
    decode_tokens: int = 64  # timed single-token steps for tokens/s
    decode_repeats: int = 3  # tokens/s is the median of this many runs

    @classmethod
    def quick(cls) -> CompareConfig:
        """Small enough for CI and smoke tests."""
        return cls(eval_bytes=8_192, calib_sequences=16, decode_tokens=16, decode_repeats=1)


def _set_int_path(qparams: dict) -> bool:
    """Switch every quantized Linear that has integer kernels to them; True if any did."""
    switched = False
    for obj in qparams.values():
        inner = obj
        while hasattr(inner, "inner") and not isinstance(inner, np.ndarray):
            inner = inner.inner  # RotatedLinear, ActQuantLinear wrap a QuantLinear
        if hasattr(inner, "path") and hasattr(inner, "qtensor"):
            try:
                inner.path = "int"
                switched = True
            except ValueError:
                pass  # a format without an integer kernel stays on the fake path
    return switched


def run_compare(
    schemes: Sequence[str] | None = None,
    config: CompareConfig | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """One row per recipe: scheme, bits_per_weight, bytes, perplexity, delta_ppl_pct, kl, top1,
    tokens_per_s, path, seconds (time to quantize). ``schemes`` defaults to every preset."""
    cfg_c = config or CompareConfig()
    names = list(schemes) if schemes else list(PRESETS)
    recipes = [get_recipe(n) for n in names]  # unknown names fail before any work
    params, cfg, _meta = load_checkpoint(checkpoint)
    data = val_bytes()
    calib = calibration_samples(cfg_c.calib_sequences, cfg_c.calib_length, seed=cfg_c.calib_seed)
    ref_logp = reference_logprobs(params, cfg, data, cfg_c.eval_bytes)
    ref_ppl = eval_loss(params, cfg, data, cfg_c.eval_bytes)["perplexity"]
    rows = []
    bar = tqdm(recipes, desc="compare", unit="recipe", disable=not progress)
    for r in bar:
        bar.set_postfix_str(r.name)
        t0 = time.perf_counter()
        q = quantize_model(params, cfg, r, calib if r.needs_calibration else None)
        seconds = time.perf_counter() - t0
        ev = eval_vs_reference(q, cfg, data, ref_logp, cfg_c.eval_bytes)
        path = "int" if _set_int_path(q) else "fake"
        tps = decode_tokens_per_s(q, cfg, cfg_c.decode_tokens, repeats=cfg_c.decode_repeats)
        rows.append(
            {
                "scheme": r.name,
                "description": r.description,
                "bits_per_weight": bits_per_weight(q, cfg, r),
                "bytes": model_bytes(q, r),
                "perplexity": ev["perplexity"],
                "delta_ppl_pct": 100.0 * (ev["perplexity"] / ref_ppl - 1.0),
                "kl": ev["kl"],
                "top1": ev["top1"],
                "tokens_per_s": tps,
                "path": path,
                "quantize_seconds": seconds,
                "eval_tokens": ev["tokens"],
            }
        )
    return rows


def pareto_front(rows: Sequence[dict]) -> list[str]:
    """Schemes not beaten on both bits per weight and perplexity by any other row.

    >>> pareto_front([{"scheme": "a", "bits_per_weight": 4, "perplexity": 5.0},
    ...               {"scheme": "b", "bits_per_weight": 8, "perplexity": 6.0},
    ...               {"scheme": "c", "bits_per_weight": 2, "perplexity": 9.0}])
    ['c', 'a']
    """
    front, best = [], math.inf
    for row in sorted(rows, key=lambda r: (r["bits_per_weight"], r["perplexity"])):
        if row["perplexity"] < best:
            front.append(row["scheme"])
            best = row["perplexity"]
    return front


def format_table(rows: Sequence[dict]) -> str:
    """The comparison as a Markdown table (what the CLI prints and the README shows)."""
    head = "| scheme | bits/weight | MB | perplexity | Δppl % | KL | top-1 % | tokens/s | path |"
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        lines.append(
            f"| {r['scheme']} | {r['bits_per_weight']:.3f} | {r['bytes'] / 1e6:.2f} | "
            f"{r['perplexity']:.4f} | {r['delta_ppl_pct']:+.2f} | {r['kl']:.5f} | "
            f"{100 * r['top1']:.2f} | {r['tokens_per_s']:.0f} | {r['path']} |"
        )
    return "\n".join(lines)


def plot_results(rows: Sequence[dict], path: str | Path) -> Path:
    """Perplexity against bits per weight (log x), the Pareto frontier joined; saved as PNG.

    Two panels: every recipe, and a zoom on the ones within 3% of the best perplexity.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(rows)
    pts = sorted((r["bits_per_weight"], r["perplexity"]) for r in rows if r["scheme"] in front)
    best = min(r["perplexity"] for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), dpi=110)
    for ax, zoom in zip(axes, (False, True), strict=True):
        shown = [r for r in rows if not zoom or r["perplexity"] <= 1.03 * best]
        for k, r in enumerate(shown):
            on = r["scheme"] in front
            ax.scatter(r["bits_per_weight"], r["perplexity"], s=36 if on else 22,
                       color="C3" if on else "C0", zorder=3)  # fmt: skip
            if zoom or r["perplexity"] > 1.03 * best or r["scheme"] == "fp32":
                dy = 3 + 7 * (k % 3) if zoom else 3  # stagger labels of neighbouring points
                ax.annotate(r["scheme"], (r["bits_per_weight"], r["perplexity"]), fontsize=7,
                            xytext=(4, dy), textcoords="offset points")  # fmt: skip
        line = [(b, p) for b, p in pts if not zoom or p <= 1.03 * best]
        ax.plot(*zip(*line, strict=True), color="C3", lw=1, label="Pareto frontier", zorder=2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bits per weight of the quantized Linears (codes + scales + zeros)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title("within 3% of the best perplexity" if zoom else "every recipe")
    axes[0].set_ylabel("validation perplexity (per byte)")
    axes[0].legend()
    fig.suptitle("tinyquant compare: size vs quality on the shipped Shakespeare model")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def to_json(rows: Sequence[dict]) -> str:
    """One JSON document: the list of rows."""
    return json.dumps(list(rows), indent=1)

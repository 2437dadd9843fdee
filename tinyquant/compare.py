"""``tinyquant compare``: quantize the shipped model every way and put the results side by side.

For each recipe: quantize (calibrating on training plays where the recipe needs it), then score
it with the one evaluator (``tinyquant.evaluate``) on the same validation windows:

    perplexity and Δppl % against FP32 with its paired 95% interval · mean KL(p_fp32 ‖ p_q) with
    its interval and 99th percentile · top-1 agreement · exact bytes and bits per weight ·
    batch-1 decode tokens/s

Quality runs on the fake-quant path (dequantized weights, BLAS matmuls: the same function as
the integer path up to float rounding, which the tests bound); tokens/s runs on the integer
kernels wherever a recipe has them (``path`` column), else on the fake path. The FP32 reference
log-probabilities are computed once and shared by every recipe, as is the calibration text.
A plot of Δppl against bits per weight marks the Pareto frontier: the recipes no other recipe
beats on both size and perplexity.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tinyquant.bootstrap import interval_str
from tinyquant.evaluate import EvalSample, Evaluator, row_summary
from tinyquant.export.schemes import GGUF_SCHEMES, GGUFScheme, gguf_file
from tinyquant.llm.checkpoint import SHIPPED, load_checkpoint, tensors_sha256
from tinyquant.llm.data import calibration_samples
from tinyquant.metrics import decode_tokens_per_s
from tinyquant.presets import MIXED, PRESETS, get_recipe
from tinyquant.qmodel import Model, quantize_model
from tinyquant.recipe import Recipe

__all__ = ["CompareConfig", "DEFAULT_SCHEMES", "ALL_SCHEMES", "run_compare", "format_table",
           "pareto_front", "plot_results", "to_json", "row_summary", "load_rows",
           "resolve_scheme", "SavedScheme", "saved_schemes"]  # fmt: skip

# the default run, within 10 minutes: every preset, one mixed recipe, llama.cpp's Q4_K_M
DEFAULT_SCHEMES = (*PRESETS, "mixed-3.0", "gguf-Q4_K_M")


@dataclass(frozen=True)
class SavedScheme:
    """A shipped quantized checkpoint scored as a row (QAT's codes come from training, so the
    row reads the file instead of quantizing): ``qat-w2-g64`` → its .safetensors file."""

    name: str
    path: Path


def saved_schemes() -> dict[str, SavedScheme]:
    """The shipped quantized checkpoints beside the FP32 model, by name (``qat-*``)."""
    return {
        p.stem: SavedScheme(p.stem, p) for p in sorted(SHIPPED.parent.glob("qat-*.safetensors"))
    }


# --all: and every committed mixed recipe, shipped QAT checkpoint and llama.cpp type (with and
# without an imatrix)
ALL_SCHEMES = (*PRESETS, *MIXED, *saved_schemes(), *GGUF_SCHEMES)


def resolve_scheme(s: str | Recipe) -> Recipe | GGUFScheme | SavedScheme:
    """A compare row's scheme: a Recipe, a preset name, a llama.cpp type ``gguf-TYPE[-imatrix]``
    or a shipped quantized checkpoint (``qat-…``).

    >>> resolve_scheme("gguf-Q2_K-imatrix").ftype, resolve_scheme("w4-rtn").name
    ('Q2_K', 'w4-rtn')
    """
    if isinstance(s, Recipe):
        return s
    if s in saved_schemes():
        return saved_schemes()[s]
    return GGUFScheme.parse(s) or get_recipe(s)


@dataclass(frozen=True)
class CompareConfig:
    """What ``tinyquant compare`` measures; the defaults finish in minutes on 2 cores."""

    sample: EvalSample = field(default_factory=EvalSample)  # the evaluation windows
    calib_windows: int = 128  # calibration windows (GPTQ's reference used 128)
    calib_length: int = 256  # bytes per calibration window
    calib_seed: int = 0  # which training windows are drawn
    decode_tokens: int = 64  # timed single-token steps for tokens/s
    decode_repeats: int = 3  # tokens/s is the median of this many runs

    @classmethod
    def quick(cls) -> CompareConfig:
        """Small enough for CI and smoke tests."""
        return cls(EvalSample.quick(), calib_windows=16, decode_tokens=16, decode_repeats=1)


def run_compare(
    schemes: Sequence[str | Recipe] | None = None,
    config: CompareConfig | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """One row per recipe (the keys of ``format_table`` and ``EvalResult.as_dict``).

    Recipes are quantized in memory; llama.cpp types are written as .gguf files, read back and
    timed in llama.cpp (``path`` "llama.cpp"; tokens/s None when llama-cpp-python is absent).
    """
    cc = config or CompareConfig()
    recipes = [resolve_scheme(n) for n in (schemes or DEFAULT_SCHEMES)]  # unknown names fail first
    params, cfg, _meta = load_checkpoint(checkpoint)
    sha = tensors_sha256(params)
    calib = calibration_samples(cc.calib_windows, cc.calib_length, seed=cc.calib_seed)
    ev = Evaluator(params, cfg, cc.sample)
    rows = []
    imatrix: list = []  # computed on first use, shared by every imatrix row
    bar = tqdm(recipes, desc="compare", unit="recipe", disable=not progress)
    for r in bar:
        bar.set_postfix_str(r.name)
        if isinstance(r, GGUFScheme):
            rows.append(_gguf_row(r, params, cfg, calib, imatrix, ev, cc))
            continue
        t0 = time.perf_counter()
        if isinstance(r, SavedScheme):
            q = Model.load(r.path)
            if q.base_sha256 != sha or q.cfg != cfg:
                raise ValueError(f"{r.path.name} was made from another FP32 checkpoint; compare "
                                 "it with --checkpoint set to its base")  # fmt: skip
            description = q.recipe.description
        else:
            q = quantize_model(params, cfg, r, calib if r.needs_calibration else None,
                               base_sha256=sha)  # fmt: skip
            description = r.description
        seconds = time.perf_counter() - t0
        res = ev.evaluate(q.params)
        fast = q.with_path("int")
        tps = decode_tokens_per_s(fast.params, cfg, cc.decode_tokens, repeats=cc.decode_repeats)
        rows.append(
            {"scheme": r.name, "description": description,
             "bits_per_weight": q.bits_per_weight, "bytes": q.nbytes}
            | res.as_dict()
            | {"tokens_per_s": tps, "path": fast.path, "quantize_seconds": seconds}
        )  # fmt: skip
    return rows


def _gguf_row(g: GGUFScheme, params, cfg, calib, imatrix: list, ev, cc: CompareConfig) -> dict:
    """One llama.cpp file type: write the .gguf, read it back, score it, time it in llama.cpp."""
    import tempfile

    from tinyquant.export.imatrix import compute_imatrix

    t0 = time.perf_counter()
    if g.imatrix and not imatrix:
        imatrix.append(compute_imatrix(params, cfg, calib)[0])
    with tempfile.TemporaryDirectory() as tmp:
        f = gguf_file(params, cfg, g, imatrix[0] if g.imatrix else None, f"{tmp}/m.gguf")
        seconds = time.perf_counter() - t0
        res = ev.evaluate(f.params)
        try:
            from tinyquant.export.llamacpp import llama_cpp_decode_tokens_per_s

            tps = llama_cpp_decode_tokens_per_s(f.path, cfg.vocab_size, cc.decode_tokens,
                                                repeats=cc.decode_repeats)  # fmt: skip
            path = "llama.cpp"
        except ValueError:  # llama-cpp-python is not installed
            tps, path = None, "none"
    counts: dict[str, int] = {}
    for t in f.types.values():
        counts[t] = counts.get(t, 0) + 1
    return (
        {"scheme": g.name, "description": g.description,
         "bits_per_weight": f.bits_per_weight, "bytes": f.nbytes}
        | res.as_dict()
        | {"tokens_per_s": tps, "path": path, "quantize_seconds": seconds, "gguf_types": counts}
    )  # fmt: skip


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
    """The comparison as a Markdown table (what the CLI prints and the README shows).

    Δppl and KL carry their paired 95% intervals; ``≈0`` marks a Δ whose interval contains 0.
    """
    head = ("| scheme | bits/weight | MB | perplexity | Δppl % [95% CI] | KL [95% CI] | KL p99 "
            "| top-1 % | tokens/s | path |")  # fmt: skip
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        kl = f"{r['kl']:.5f} [{r['kl_ci95'][0]:.5f}, {r['kl_ci95'][1]:.5f}]"
        lines.append(
            f"| {r['scheme']} | {r['bits_per_weight']:.3f} | {r['bytes'] / 1e6:.2f} | "
            f"{r['perplexity']:.4f} | {interval_str(r['delta_ppl_pct'], r['delta_ppl_ci95'])} | "
            f"{kl} | {r['kl_p99']:.4f} | {100 * r['top1']:.2f} | {_tps(r['tokens_per_s'])} | "
            f"{r['path']} |"
        )
    return "\n".join(lines)


def _tps(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def load_rows(path: str | Path) -> dict[str, dict]:
    """A committed compare run (``compare --json``) as {scheme: row}."""
    return {r["scheme"]: r for r in json.loads(Path(path).read_text())}


def to_json(rows: Sequence[dict]) -> str:
    """One JSON document: the list of rows."""
    return json.dumps(list(rows), indent=1)


def _spread_labels(ys: list[float], gap: float) -> list[float]:
    """Label heights (axes fraction) at least ``gap`` apart, each as near its point as it can be,
    all inside [0.02, 0.98].

    >>> [round(v, 2) for v in _spread_labels([0.5, 0.5, 0.51], 0.05)]
    [0.45, 0.5, 0.55]
    """
    order = np.argsort(ys, kind="stable")
    pos = np.array(ys, np.float64)[order]
    for _ in range(200):  # push neighbours apart until no two overlap
        moved = False
        for k in range(1, len(pos)):
            if pos[k] - pos[k - 1] < gap - 1e-12:
                mid, half = (pos[k] + pos[k - 1]) / 2, gap / 2
                pos[k - 1], pos[k] = mid - half, mid + half
                moved = True
        if not moved:
            break
    span = pos[-1] - pos[0]
    if span > 0.96:  # more labels than fit: squeeze them evenly into the axes
        pos = 0.02 + (pos - pos[0]) * (0.96 / span)
    else:  # slide the whole stack inside [0.02, 0.98] so no label leaves the axes
        pos += max(0.0, 0.02 - pos[0]) - max(0.0, pos[-1] - 0.98)
    out = np.empty_like(pos)
    out[order] = pos
    return out.tolist()


def plot_results(rows: Sequence[dict], path: str | Path) -> Path:
    """Δppl % (with 95% intervals) against bits per weight; saved as PNG.

    Three panels: every recipe (symlog y), then the 8-bit and the 3–4.3-bit clusters zoomed, with
    labels spread so none overlaps (a thin line joins each label to its point).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = set(pareto_front(rows))
    fig, axes = plt.subplots(1, 3, figsize=(18, 8), dpi=110,
                             gridspec_kw={"width_ratios": [1.2, 1, 1]})  # fmt: skip
    panels = [
        ("every recipe", lambda r: True),
        ("8 bits per weight", lambda r: 7.5 <= r["bits_per_weight"] <= 8.5),
        ("3 to 4.3 bits per weight", lambda r: 2.9 <= r["bits_per_weight"] <= 4.3),
    ]
    for ax, (title, keep) in zip(axes, panels, strict=True):
        shown = [r for r in rows if keep(r) and r["scheme"] != "fp32"]
        for r in shown:
            lo, hi = r["delta_ppl_ci95"]
            d = r["delta_ppl_pct"]
            color = "C3" if r["scheme"] in front else "C0"
            # squares: llama.cpp .gguf files; diamonds: mixed precision
            mark = "s" if r["scheme"].startswith("gguf-") else "D" if r["scheme"] in MIXED else "o"
            ax.errorbar(r["bits_per_weight"], d, yerr=[[d - lo], [hi - d]], fmt=mark, ms=5,
                        color=color, capsize=3, zorder=3)  # fmt: skip
        ax.axhline(0.0, color="k", lw=0.8)
        if title == "every recipe":
            ax.set_xscale("log", base=2)
            ax.set_yscale("symlog", linthresh=0.5)  # linear within ±0.5%, logarithmic beyond
            ticks = [-1, -0.5, 0, 0.5, 1, 2, 5, 10, 20, 50, 100]
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
            ax.set_xticks([2, 3, 4, 6, 8, 16, 32], ["2", "3", "4", "6", "8", "16", "32"])
        ax.set_xlabel("bits per weight of the quantized Linears (codes + scales + zeros)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if not shown:
            continue
        fig.canvas.draw()
        to_axes = ax.transAxes.inverted()
        pts = [to_axes.transform(ax.transData.transform((r["bits_per_weight"], r["delta_ppl_pct"])))
               for r in shown]  # fmt: skip
        gap = 0.9 / max(len(shown), 1) if len(shown) > 18 else 0.045
        ys = _spread_labels([float(p[1]) for p in pts], min(gap, 0.045))
        for r, p, y in zip(shown, pts, ys, strict=True):
            right = p[0] < 0.62
            ax.annotate(r["scheme"], xy=p, xycoords="axes fraction",
                        xytext=(p[0] + (0.08 if right else -0.08), y), textcoords="axes fraction",
                        fontsize=7.5, ha="left" if right else "right", va="center",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6})  # fmt: skip
    axes[0].set_ylabel("Δ perplexity vs FP32, % (95% paired bootstrap interval)")
    fig.suptitle("tinyquant compare: size vs quality on the shipped Shakespeare model "
                 "(red: Pareto frontier; squares: llama.cpp .gguf files; diamonds: mixed "
                 "precision)")  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

"""Calibration data, measured: Δppl of the calibrated recipes against how many calibration
windows they see and against what text those windows hold.

    Δppl(recipe, text, n) = 100 · (ppl(recipe calibrated on n windows of text) / ppl_fp32 − 1)

on the one evaluator (same validation windows, paired 95% intervals). The three texts:

    plays    windows of the training plays (``llm.data.calibration_samples``): in-distribution
    python   the running interpreter's standard library, ``.py`` files of the ``os`` module's
             directory read as bytes in sorted order (found at run time: every machine has one)
    random   uniformly random bytes (seeded): no language at all

The recipes: GPTQ (its Hessian H = 2XXᵀ/N is estimated from the calibration inputs), AWQ (its
per-channel scales come from the calibration activations' magnitudes) and static W8A8 (its
per-tensor activation scales are frozen from the calibration maxima). Recipes are run with
exactly the windows given (a preset's own ``calib_windows`` cap is lifted).

Refs: Frantar et al. 2022 "GPTQ" §5 (128 random C4 segments of 2048 tokens); Lin et al. 2023
"AWQ" §3.3 and §5.3 (robust to the calibration set's distribution); Williams & Aletras 2024
"On the impact of calibration data in post-training quantization and pruning".
Shape legend: n calibration windows, T bytes per window.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tinyquant.evaluate import EvalSample, Evaluator, paired_difference
from tinyquant.llm.data import calibration_samples
from tinyquant.presets import get_recipe
from tinyquant.qmodel import quantize_model

__all__ = ["TEXTS", "RECIPES", "WINDOWS", "REDRAWS", "REDRAWN", "calibration_text", "stdlib_bytes",
           "run_calibration_study", "plot_calibration", "add_calibration_command"]  # fmt: skip

TEXTS = ("plays", "python", "random")
RECIPES = ("w3-gptq", "w4-awq", "w8a8-o3")  # GPTQ, AWQ, static W8A8 (per-tensor activations)
WINDOWS = (4, 16, 64)  # calibration windows of 256 bytes (see run_calibration_study)
REDRAWS = (1, 2)  # seeds of the extra draws of play windows (seed 0 is the main run)
REDRAWN = ("w3-gptq", "w8a8-o3")  # the recipes redrawn: fast to calibrate (AWQ is not)


def stdlib_bytes() -> bytes:
    """The ``.py`` sources beside the ``os`` module, in sorted name order, concatenated.

    >>> b = stdlib_bytes()
    >>> len(b) > 1_000_000, b"def " in b
    (True, True)
    """
    root = Path(os.__file__).parent  # the standard library of the running interpreter
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise ValueError(f"no .py files beside the os module ({root}); use text='random'")
    return b"".join(p.read_bytes() for p in files)


def calibration_text(text: str, n: int, T: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` windows of ``T`` bytes of one text: (n, T) int64.

    >>> calibration_text("random", 2, 8).shape, calibration_text("python", 1, 4).dtype
    ((2, 8), dtype('int64'))
    """
    if text == "plays":
        return calibration_samples(n, T, seed)
    rng = np.random.default_rng(seed)
    if text == "random":
        return rng.integers(0, 256, (n, T), dtype=np.int64)
    if text == "python":
        data = np.frombuffer(stdlib_bytes(), dtype=np.uint8)
        starts = rng.integers(0, len(data) - T + 1, n)  # (n,) uniform over the sources
        return data[starts[:, None] + np.arange(T)[None, :]].astype(np.int64)
    raise ValueError(f"unknown calibration text {text!r}; choose one of {list(TEXTS)}")


def run_calibration_study(
    recipes=RECIPES, windows=WINDOWS, texts=TEXTS, text_windows: int = 64,
    sample: EvalSample | None = None, progress: bool = False,
    redraws: tuple[int, ...] = REDRAWS, redrawn: tuple[str, ...] = REDRAWN,
    partial: Path | None = None,
) -> dict:  # fmt: skip
    """Every recipe against the number of play windows, and against the text at
    ``text_windows`` windows; paired differences to the plays at the same n. The recipes in
    ``redrawn`` are also calibrated on other draws of play windows (``redraws``: their seeds),
    so the spread between draws of one size can be told from the effect of the size.
    ``partial``: a JSON file rewritten with the rows so far after every run (long sweeps).

    The range stops at 64 windows: calibration cost grows linearly with n (the sequential
    calibration runs every block on every window) and AWQ's search took about 1.7 s per window
    on this shared 2-core machine (the JSON records every run's ``quantize_seconds``), so 128 …
    512 windows would add 4 to 20 minutes for AWQ alone. The 128-window point of GPTQ and static
    W8A8 is the committed compare run's row (compare calibrates on these same 128 windows).
    """
    import tinyquant as tq

    model = tq.load()
    params, cfg = model.params, model.cfg
    sample = sample or EvalSample()
    ev = Evaluator(params, cfg, sample)
    runs = [("plays", n, 0) for n in windows]
    runs += [(t, text_windows, 0) for t in texts if t != "plays"]
    if "plays" in texts and text_windows not in windows:
        runs.append(("plays", text_windows, 0))
    rows, results = [], {}
    for name in recipes:
        recipe = dataclasses.replace(get_recipe(name), calib_windows=None)
        extra = [("plays", n, seed) for seed in redraws for n in windows] if name in redrawn else []
        for text, n, seed in runs + extra:
            t0 = time.perf_counter()
            calib = calibration_text(text, n, cfg.context, seed=seed)
            q = quantize_model(params, cfg, recipe, calib, base_sha256=model.base_sha256)
            seconds = time.perf_counter() - t0
            r = ev.evaluate(q.params)
            if seed == 0:
                results[name, text, n] = r
            rows.append({"recipe": name, "text": text, "windows": n, "seed": seed,
                         "quantize_seconds": round(seconds, 2)} | r.as_dict())  # fmt: skip
            if partial is not None:
                Path(partial).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
            if progress:
                lo, hi = r.delta_ppl_ci95
                print(f"{name:>9s} {text:>7s} {n:4d} (draw {seed}): Δppl {r.delta_ppl_pct:+.3f}% "
                      f"[{lo:+.3f}, {hi:+.3f}]  ({seconds:.0f} s)", flush=True)  # fmt: skip
    pairs = []
    for (name, text, n), r in results.items():
        base = results.get((name, "plays", n))
        if text != "plays" and base is not None:
            d = paired_difference(r, base)
            pairs.append({"recipe": name, "text": text, "against": "plays", "windows": n,
                          "ppl_ratio_pct": d.ppl_ratio_pct,
                          "ppl_ratio_ci95": list(d.ppl_ratio_ci95)})  # fmt: skip
        if text == "plays" and n == min(windows) and (name, "plays", max(windows)) in results:
            d = paired_difference(r, results[name, "plays", max(windows)])
            pairs.append({"recipe": name, "text": "plays", "against": f"plays {max(windows)}",
                          "windows": n, "ppl_ratio_pct": d.ppl_ratio_pct,
                          "ppl_ratio_ci95": list(d.ppl_ratio_ci95)})  # fmt: skip
    return {
        "command": "tinyquant calibration --json notebooks/figures/calibration.json",
        "python": platform.python_version(),
        "stdlib_bytes": len(stdlib_bytes()),
        "sample": dataclasses.asdict(sample),
        "text_windows": text_windows,
        "redraws": list(redraws),
        "rows": rows,
        "paired": pairs,
    }


def plot_calibration(study: dict, path: str | Path | None = None):
    """Left: Δppl against calibration windows (plays); right: against the text (95% CIs)."""
    import matplotlib.pyplot as plt

    rows = study["rows"]
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    for k, name in enumerate(recipes):
        pr = sorted((r for r in rows if r["recipe"] == name and r["text"] == "plays"
                     and r.get("seed", 0) == 0), key=lambda r: r["windows"])  # fmt: skip
        again = [r for r in rows if r["recipe"] == name and r.get("seed", 0) != 0]
        if again:
            a.plot([r["windows"] * 1.06 for r in again], [r["delta_ppl_pct"] for r in again],
                   "x", color=f"C{k}", alpha=0.7, label=f"{name}, other draws")  # fmt: skip
        d = np.array([r["delta_ppl_pct"] for r in pr])
        ci = np.array([r["delta_ppl_ci95"] for r in pr])
        a.errorbar([r["windows"] for r in pr], d, yerr=[d - ci[:, 0], ci[:, 1] - d], fmt="o-",
                   capsize=3, label=name, color=f"C{k}")  # fmt: skip
        tr = [r for r in rows if r["recipe"] == name and r["windows"] == study["text_windows"]
              and r.get("seed", 0) == 0]  # fmt: skip
        tr = sorted(tr, key=lambda r: TEXTS.index(r["text"]))
        d = np.array([r["delta_ppl_pct"] for r in tr])
        ci = np.array([r["delta_ppl_ci95"] for r in tr])
        x = np.arange(len(tr)) + (k - 1) * 0.25
        b.bar(x, d, width=0.25, yerr=[d - ci[:, 0], ci[:, 1] - d], capsize=3, label=name,
              color=f"C{k}")  # fmt: skip
    a.set_xscale("log", base=2)
    a.set_xlabel("calibration windows of 256 bytes (training plays)")
    a.set_ylabel("Δ perplexity vs FP32 (%)")
    a.set_title("how much calibration data")
    b.set_xticks(range(len(TEXTS)), [f"{t}\n({study['text_windows']} windows)" for t in TEXTS])
    b.set_yscale("symlog", linthresh=1.0)
    b.set_title("which calibration text")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.axhline(0.0, color="k", lw=0.8)
    fig.tight_layout()
    if path:
        fig.savefig(path)
    return fig


def _cmd_calibration(args) -> int:
    recipes = tuple(s.strip() for s in args.recipes.split(",")) if args.recipes else RECIPES
    for r in recipes:
        get_recipe(r)  # a bad name fails before anything runs
    windows = tuple(int(w) for w in args.windows.split(",")) if args.windows else WINDOWS
    sample = EvalSample(n_windows=args.eval_windows) if args.eval_windows else EvalSample()
    partial = Path(args.json + ".partial") if args.json else None
    study = run_calibration_study(recipes, windows, sample=sample, progress=True, partial=partial)
    if partial is not None:
        partial.unlink(missing_ok=True)
    if args.json:
        Path(args.json).write_text(json.dumps(study, indent=1) + "\n")
        print(f"written to {args.json}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        plot_calibration(study, args.plot)
    return 0


def add_calibration_command(sub) -> None:
    p = sub.add_parser(
        "calibration",
        help="Δppl of GPTQ, AWQ and static W8A8 against calibration size and text",
        description="Quantize with 4…64 windows of training plays, and with Python source or "
        "random bytes instead; score each on the one evaluator with paired intervals.",
    )
    p.add_argument("--recipes", help="comma-separated presets (default w3-gptq,w4-awq,w8a8-o3)")
    p.add_argument("--windows", help="comma-separated calibration sizes (default 4,16,64)")
    p.add_argument("--eval-windows", type=int, default=None, help="evaluation windows (256)")
    p.add_argument("--json", default=None, help="write the study as JSON to this path")
    p.add_argument("--plot", default=None, help="PNG path for the two-panel plot")
    p.set_defaults(func=_cmd_calibration)

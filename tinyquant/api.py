"""The Python API a notebook reads: load, quantize, evaluate, compare.

    model = tq.load()                               # the shipped FP32 model (or any checkpoint)
    q = tq.quantize(model, "w4-gptq")               # a preset name, a Recipe, or a JSON file
    r = tq.evaluate(q)                              # Δppl, KL, top-1 with paired 95% intervals
    q.save("w4.safetensors"); tq.load("w4.safetensors")
    rows = tq.compare(["w4-rtn", "w4-gptq"])        # what `tinyquant compare` prints

Every figure comes from the one evaluator on the one sample (``tinyquant.evaluate``); the
calibration text defaults to 128 windows of 256 bytes from the training plays (seed 0), the
same as ``compare``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyquant.compare import CompareConfig, run_compare
from tinyquant.evaluate import EvalResult, EvalSample, Evaluator
from tinyquant.llm.checkpoint import SHIPPED, load_checkpoint, tensors_sha256
from tinyquant.llm.data import calibration_samples
from tinyquant.presets import get_recipe
from tinyquant.qcheckpoint import is_quantized
from tinyquant.qmodel import Model, quantize_model
from tinyquant.recipe import Recipe

__all__ = ["load", "quantize", "evaluate", "compare", "load_recipe", "default_calibration"]


def load(path: str | Path | None = None) -> Model:
    """A model checkpoint (FP32) or a quantized checkpoint; ``None``: the shipped model.

    >>> model = load()
    >>> model.recipe.name, model.cfg.n_layers, round(model.bits_per_weight)
    ('fp32', 4, 32)
    """
    if path is not None and is_quantized(path):
        return Model.load(path)
    params, cfg, _ = load_checkpoint(path)
    return Model(params, cfg, base_sha256=tensors_sha256(params))


def load_recipe(recipe: str | Recipe | Path) -> Recipe:
    """A preset name, a Recipe, or the path of a recipe JSON file.

    >>> load_recipe("w4-gptq").rules[0].method.name
    'gptq'
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Path) or str(recipe).endswith(".json"):
        p = Path(recipe)
        if not p.is_file():
            raise ValueError(f"recipe file {p} does not exist")
        return Recipe.from_json(p.read_text())
    return get_recipe(str(recipe))


def default_calibration(n: int = 128, length: int = 256, seed: int = 0) -> np.ndarray:
    """The calibration text every command uses: ``n`` windows of training plays (n, length)."""
    return calibration_samples(n, length, seed)


def quantize(model: Model, recipe: str | Recipe | Path, calib: np.ndarray | None = None) -> Model:
    """``model`` (FP32) quantized by ``recipe``; calibrated recipes use ``calib`` or the default.

    >>> q = quantize(load(), "w4-rtn-g128")
    >>> q.recipe.name, round(q.bits_per_weight, 4)
    ('w4-rtn-g128', 4.1875)
    """
    if model.recipe.rules:
        raise ValueError(f"model is already quantized ({model.recipe.name}); quantize the FP32 one")
    r = load_recipe(recipe)
    if r.needs_calibration and calib is None:
        calib = default_calibration()
    return quantize_model(model.params, model.cfg, r, calib, base_sha256=model.base_sha256)


def evaluate(
    model: Model, reference: Model | None = None, sample: EvalSample | None = None
) -> EvalResult:
    """The one evaluator: ``model`` against ``reference`` (default: the shipped FP32 model)."""
    ref = reference or load()
    if model.base_sha256 and ref.base_sha256 and model.base_sha256 != ref.base_sha256:
        raise ValueError("model was quantized from another checkpoint than the reference; "
                         "pass reference=tq.load(<its FP32 checkpoint>)")  # fmt: skip
    return Evaluator(ref.params, ref.cfg, sample).evaluate(model.params)


def compare(
    schemes: list[str | Recipe] | None = None,
    config: CompareConfig | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = False,
) -> list[dict]:
    """Rows of ``tinyquant compare`` (see ``tinyquant.compare``)."""
    return run_compare(schemes, config, checkpoint or SHIPPED, progress)

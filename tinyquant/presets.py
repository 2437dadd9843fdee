"""The preset recipes, each written as layer rules (recipe.py).

``"blk.*"`` targets the seven Linears of every block (q, k, v, o, gate, up, down) — 97% of the
parameters; the token embedding, the norms and the output head stay FP32 (GPTQ and AWQ keep the
head in high precision too), except in the casts, which round every tensor. Integer scales are
stored as float16, zeros as one byte per group.
"""

from __future__ import annotations

from importlib.resources import files

from tinyquant.recipe import (
    AWQ,
    GPTQ,
    Activations,
    LLMInt8,
    Recipe,
    Rotation,
    Rule,
    Smooth,
    Weights,
)

__all__ = ["PRESETS", "MIXED", "get_recipe"]

ALL = ("blk.*",)  # every block Linear


def _one(name: str, desc: str, weights: Weights, **rule) -> Recipe:
    """A recipe of one rule over every block Linear."""
    return Recipe(name, (Rule(ALL, weights, **rule),), desc)


_U4, _U3, _U2 = Weights("uint4"), Weights("uint3"), Weights("uint2")
_I8 = Weights("int8", symmetric=True)
_I8T = Weights("int8", symmetric=True, per_tensor=True)


def use_more_bits(i: int, n_layers: int) -> bool:
    """llama.cpp's rule (``llama-quant.cpp``) for the layers whose attn_v / ffn_down get more bits.

    >>> [i for i in range(4) if use_more_bits(i, 4)]
    [2, 3]
    >>> [i for i in range(32) if use_more_bits(i, 32)][:6]
    [0, 1, 2, 3, 6, 9]
    """
    return i < n_layers // 8 or i >= 7 * n_layers // 8 or (i - n_layers // 8) % 3 == 2


def q4_k_m_like(n_layers: int) -> Recipe:
    """llama.cpp Q4_K_M's type mix on our grids: 4-bit g32 everywhere; 6-bit g32 for attn_v and
    ffn_down in the layers ``use_more_bits`` picks (the output head stays FP32 here)."""
    late = "".join(str(i) for i in range(n_layers) if use_more_bits(i, n_layers))
    more = (f"blk.[{late}].attn_v", f"blk.[{late}].ffn_down") if n_layers <= 10 else tuple(
        f"blk.{i}.{n}" for i in range(n_layers) if use_more_bits(i, n_layers)
        for n in ("attn_v", "ffn_down"))  # fmt: skip
    return Recipe(
        "q4_k_m-like",
        (Rule(ALL, Weights("uint4", 32)), Rule(more, Weights("uint6", 32))),
        f"llama.cpp Q4_K_M's mix: 4-bit g32, 6-bit attn_v and ffn_down in blocks {late}",
    )


PRESETS: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("fp32", (), "the trained model, unchanged (the reference)"),
        Recipe("fp16", (Rule(("*",), Weights("fp16")),), "every tensor rounded to IEEE half"),
        Recipe("bf16", (Rule(("*",), Weights("bf16")),), "every tensor rounded to bfloat16"),
        _one("fp8-e4m3", "FP8 E4M3 weights, one fp16 scale per output row", Weights("fp8_e4m3")),
        _one("w8a16", "int8 weights per row (absmax), FP activations", _I8),
        _one("w8a8", "int8 per-row weights × int8 per-token dynamic activations", _I8,
             activations=Activations("per_token")),
        _one("w8a8-o1", "SmoothQuant O1 without smoothing: per-tensor W, per-token A", _I8T,
             activations=Activations("per_token")),
        _one("w8a8-o2", "per-tensor W, per-tensor dynamic A", _I8T,
             activations=Activations("per_tensor")),
        _one("w8a8-o3", "per-tensor W, per-tensor static A (calibrated)", _I8T,
             activations=Activations("per_tensor", static=True)),
        _one("w8a8-smoothquant-paper",
             "SmoothQuant-O3 as published: α = 0.5 before q/k/v and gate/up only", _I8T,
             activations=Activations("per_tensor", static=True),
             smooth=Smooth(0.5, ("qkv", "gate_up"))),
        _one("w8a8-smoothquant",
             "SmoothQuant-O3: α = 0.5 migration into q/k/v, o, gate/up and down, then static W8A8",
             _I8T,
             activations=Activations("per_tensor", static=True), smooth=Smooth(0.5)),
        _one("llm.int8", "LLM.int8(): vector-wise int8, |x| ≥ 6 features in float",
             Weights("int8", symmetric=True), method=LLMInt8(6.0)),
        _one("mxfp4", "OCP MXFP4: E2M1 weights, one E8M0 power-of-two scale per 32",
             Weights("mxfp4")),
        _one("mxfp4-hadamard", "MXFP4 on Hadamard-rotated weights (FP4 wants Gaussian blocks)",
             Weights("mxfp4"), rotation=Rotation(seed=0)),
        _one("nvfp4", "NVFP4: E2M1 weights, an E4M3 scale per 16 and an FP32 tensor scale",
             Weights("nvfp4")),
        _one("nf4", "QLoRA NormalFloat4, absmax blocks of 64, double-quantized absmax",
             Weights("nf4", group_size=64, double_quant=True)),
        _one("w4-rtn", "4-bit round-to-nearest, one (scale, zero) per row", _U4),
        _one("w4-rtn-g128", "4-bit round-to-nearest, groups of 128", Weights("uint4", 128)),
        _one("w4a8-g128", "4-bit RTN weights, groups of 128 × int8 per-token dynamic activations",
             Weights("uint4", 128), activations=Activations("per_token")),
        _one("w4-gptq", "4-bit GPTQ per row", _U4, method=GPTQ()),
        _one("w4-gptq-g128", "4-bit GPTQ, groups of 128", Weights("uint4", 128), method=GPTQ()),
        _one("w4-gptq-actorder", "4-bit GPTQ per row, act-order", _U4,
             method=GPTQ(act_order=True, static_groups=True)),
        Recipe("w4-awq", (Rule(ALL, Weights("uint4", 128), AWQ()),),
               "4-bit AWQ (activation-aware scales + clip), groups of 128", calib_windows=32),
        _one("w3-rtn", "3-bit round-to-nearest per row", _U3),
        _one("w3-gptq", "3-bit GPTQ per row", _U3, method=GPTQ()),
        _one("w3-gptq-actorder", "3-bit GPTQ per row, act-order", _U3,
             method=GPTQ(act_order=True, static_groups=True)),
        _one("w2-rtn", "2-bit round-to-nearest per row", _U2),
        _one("w2-rtn-g64", "2-bit round-to-nearest, groups of 64", Weights("uint2", 64)),
        _one("w2-gptq", "2-bit GPTQ per row", _U2, method=GPTQ()),
        _one("w2-gptq-g64", "2-bit GPTQ, groups of 64", Weights("uint2", 64), method=GPTQ()),
        _one("w2-gptq-hadamard",
             "2-bit GPTQ on Hadamard-rotated weights, MSE-fitted grids, groups of 64",
             Weights("uint2", 64), method=GPTQ(mse=True), rotation=Rotation(seed=0)),
        q4_k_m_like(n_layers=4),
    ]
}  # fmt: skip


def _mixed() -> dict[str, Recipe]:
    """The committed mixed-precision allocations of the shipped model (``tinyquant mixed
    --budget B --out tinyquant/recipes_mixed/mixed-B.json``, README), cheapest first. They
    name the shipped model's 28 block Linears one by one, so they apply to that model only."""
    found = [
        Recipe.from_json(p.read_text(encoding="utf-8"))
        for p in (files("tinyquant") / "recipes_mixed").iterdir()
        if p.name.endswith(".json")
    ]
    return {r.name: r for r in sorted(found, key=lambda r: float(r.name.removeprefix("mixed-")))}


MIXED: dict[str, Recipe] = _mixed()


def get_recipe(name: str | Recipe) -> Recipe:
    """A preset or a committed mixed recipe by name (or the recipe itself).

    >>> get_recipe("w4-gptq-g128").rules[0].weights.group_size
    128
    """
    if isinstance(name, Recipe):
        return name
    if name not in PRESETS and name not in MIXED:
        raise ValueError(
            f"unknown recipe {name!r}; choose from: {', '.join(PRESETS)}, {', '.join(MIXED)}"
        )
    return PRESETS.get(name) or MIXED[name]

"""Recipes: how to quantize a whole model, as frozen dataclasses, and ``quantize_model``.

A quantized model is the FP32 params dict in which the Linear weights of every block are
replaced by objects with ``forward(x)`` (QuantLinear, RotatedLinear, ...); the model's single
call site ``linear(x, w)`` runs them, so the same ``forward`` evaluates every recipe.

    weight-only  W{b}A16    y = x · Q(W)ᵀ                       Q = RTN | GPTQ | AWQ (+ rotation)
    W8A8                    y = Q_a(x) · Q(W)ᵀ                  Q_a per token or per tensor
    float casts             every tensor rounded to FP16 / BF16 (no scales)

What is quantized: the seven Linears of every block (q, k, v, o, gate, up, down) — 97% of the
parameters. The token embedding, the norms and the output head stay FP32 (GPTQ and AWQ keep
the head in high precision too); the float-cast recipes cast every tensor. Scales are stored
as float16 in integer recipes (as GPTQ/AWQ checkpoints and llama.cpp store them), zeros as one
byte per group; ``bits_per_weight`` counts all of it.

Refs: Frantar et al. 2022 (GPTQ, sequential calibration); Lin et al. 2023 (AWQ); Xiao et al.
2022 (SmoothQuant levels O1–O3); Dettmers et al. 2022 (LLM.int8()); Tseng et al. 2024 (QuIP#).
Shapes: O out features, I in features, N calibration rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from tinyquant.algos.awq import awq_model, awq_quantize_tensor
from tinyquant.algos.calibrate import LINEARS, BlockCalib, calibrate_sequential, collect_stats
from tinyquant.algos.gptq import gptq_quantize, to_qtensor
from tinyquant.algos.llm_int8 import Int8OutlierLinear
from tinyquant.algos.rotate import RandomHadamard, RotatedLinear, rotate_hessian, rotate_weight
from tinyquant.algos.rtn import rtn_quantize
from tinyquant.algos.smoothquant import smooth_model
from tinyquant.llm.model import Config
from tinyquant.qmodel import QuantLinear
from tinyquant.quant import (
    QTensor,
    get_format,
    pack,
    quantize,
    quantize_codebook,
    quantize_tensor,
    round_to_format,
    to_unsigned,
)

__all__ = [
    "PRESETS",
    "Recipe",
    "get_recipe",
    "linear_names",
    "quantize_model",
    "bits_per_weight",
    "model_bytes",
]


@dataclass(frozen=True)
class Recipe:
    """One way to quantize the model. Every field has the default of "leave it alone"."""

    name: str
    weights: str | None = None  # format of the block Linears ("uint4", "int8", "nf4", ...)
    group_size: int | None = None  # weights sharing one (scale, zero) along I; None: per row
    per_tensor: bool = False  # one scale for the whole weight (SmoothQuant's O1–O3)
    symmetric: bool = False  # symmetric grid, or asymmetric min-max (GPTQ/AWQ's default)
    method: str = "rtn"  # how codes are chosen: "rtn", "gptq", "awq" or "llm_int8"
    act_order: bool = False  # GPTQ: columns by decreasing diag(H) (static groups)
    mse: bool = False  # GPTQ: each group's grid by a clip search instead of min-max
    rotate: bool = False  # randomized Hadamard on each Linear's input before quantizing
    activations: str | None = None  # None | "per_token" | "per_tensor" | "per_tensor_static"
    smooth_alpha: float | None = None  # SmoothQuant migration strength before quantizing
    outlier_threshold: float = 6.0  # LLM.int8(): input features with |x| ≥ this stay float
    calib_sequences: int | None = None  # use only the first N calibration windows; None: all
    cast: str | None = None  # "fp16" / "bf16": round every tensor, no scales
    scale_dtype: str = "float16"  # how integer-recipe scales are stored
    description: str = ""  # one line for tables and --help

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"recipe {self.name}: method must be one of {METHODS}")
        if self.activations not in (None, "per_token", "per_tensor", "per_tensor_static"):
            raise ValueError(f"recipe {self.name}: unknown activations {self.activations!r}")
        if self.cast not in (None, "fp16", "bf16"):
            raise ValueError(f"recipe {self.name}: cast must be None, 'fp16' or 'bf16'")
        if self.weights is not None:
            get_format(self.weights)  # raises for an unknown format

    @property
    def needs_calibration(self) -> bool:
        return (
            self.method in ("gptq", "awq")
            or self.activations == "per_tensor_static"
            or self.smooth_alpha is not None
        )


METHODS = ("rtn", "gptq", "awq", "llm_int8")


def _w(name: str, fmt: str, desc: str, **kw) -> Recipe:
    return Recipe(name=name, weights=fmt, description=desc, **kw)


PRESETS: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("fp32", description="the trained model, unchanged (the reference)"),
        Recipe("fp16", cast="fp16", description="every tensor rounded to IEEE half"),
        Recipe("bf16", cast="bf16", description="every tensor rounded to bfloat16"),
        _w("fp8-e4m3", "fp8_e4m3", "FP8 E4M3 weights, one fp16 scale per output row"),
        _w("w8a16", "int8", "int8 weights per row (absmax), FP activations", symmetric=True),
        _w(
            "w8a8",
            "int8",
            "int8 per-row weights × int8 per-token dynamic activations",
            symmetric=True,
            activations="per_token",
        ),
        _w(
            "w8a8-o1",
            "int8",
            "SmoothQuant O1 without smoothing: per-tensor W, per-token A",
            symmetric=True,
            per_tensor=True,
            activations="per_token",
        ),
        _w(
            "w8a8-o2",
            "int8",
            "per-tensor W, per-tensor dynamic A",
            symmetric=True,
            per_tensor=True,
            activations="per_tensor",
        ),
        _w(
            "w8a8-o3",
            "int8",
            "per-tensor W, per-tensor static A (calibrated)",
            symmetric=True,
            per_tensor=True,
            activations="per_tensor_static",
        ),
        _w(
            "w8a8-smoothquant",
            "int8",
            "SmoothQuant-O3: α = 0.5 migration, then static W8A8",
            symmetric=True,
            per_tensor=True,
            activations="per_tensor_static",
            smooth_alpha=0.5,
        ),
        _w(
            "llm.int8",
            "int8",
            "LLM.int8(): vector-wise int8, |x| ≥ 6 features in float",
            symmetric=True,
            method="llm_int8",
        ),
        _w("nf4", "nf4", "QLoRA NormalFloat4, absmax blocks of 64, double-quantized absmax"),
        _w("w4-rtn", "uint4", "4-bit round-to-nearest, one (scale, zero) per row"),
        _w("w4-rtn-g128", "uint4", "4-bit round-to-nearest, groups of 128", group_size=128),
        _w("w4-gptq", "uint4", "4-bit GPTQ per row", method="gptq"),
        _w("w4-gptq-g128", "uint4", "4-bit GPTQ, groups of 128", method="gptq", group_size=128),
        _w(
            "w4-gptq-actorder",
            "uint4",
            "4-bit GPTQ per row, act-order",
            method="gptq",
            act_order=True,
        ),
        _w(
            "w4-awq",
            "uint4",
            "4-bit AWQ (activation-aware scales + clip), groups of 128",
            method="awq",
            group_size=128,
            calib_sequences=32,
        ),
        _w("w3-rtn", "uint3", "3-bit round-to-nearest per row"),
        _w("w3-gptq", "uint3", "3-bit GPTQ per row", method="gptq"),
        _w(
            "w3-gptq-actorder",
            "uint3",
            "3-bit GPTQ per row, act-order",
            method="gptq",
            act_order=True,
        ),
        _w("w2-rtn", "uint2", "2-bit round-to-nearest per row"),
        _w("w2-rtn-g64", "uint2", "2-bit round-to-nearest, groups of 64", group_size=64),
        _w("w2-gptq", "uint2", "2-bit GPTQ per row", method="gptq"),
        _w("w2-gptq-g64", "uint2", "2-bit GPTQ, groups of 64", method="gptq", group_size=64),
        _w(
            "w2-gptq-hadamard",
            "uint2",
            "2-bit GPTQ on Hadamard-rotated weights, MSE-fitted grids, groups of 64",
            method="gptq",
            group_size=64,
            rotate=True,
            mse=True,
        ),
    ]
}


def get_recipe(name: str | Recipe) -> Recipe:
    """A preset by name (or the recipe itself).

    >>> get_recipe("w4-gptq-g128").group_size
    128
    """
    if isinstance(name, Recipe):
        return name
    if name not in PRESETS:
        raise ValueError(f"unknown recipe {name!r}; choose from: {', '.join(PRESETS)}")
    return PRESETS[name]


def linear_names(cfg: Config) -> list[str]:
    """The weights a recipe quantizes: every block's seven Linears, in model order.

    >>> linear_names(Config.tiny())[:2]
    ['blk.0.attn_q.weight', 'blk.0.attn_k.weight']
    """
    return [f"blk.{i}.{n}.weight" for i in range(cfg.n_layers) for n in LINEARS]


# ----------------------------------------------------------------------------- one weight


def _store_scales(W: np.ndarray, qt: QTensor, scale_dtype: str) -> QTensor:
    """Store an integer QTensor's scales as ``scale_dtype`` and re-choose its codes with them.

    GPTQ/AWQ checkpoints and llama.cpp keep float16 scales; rounding a scale after the codes
    were chosen would leave codes that are not the nearest for the scale actually stored.
    """
    if scale_dtype == "float32" or isinstance(qt.scale, QTensor):
        return qt
    scale = np.asarray(qt.scale, np.float32).astype(scale_dtype)  # (O, G)
    zero = np.zeros(scale.shape, np.int32) if qt.zero is None else qt.zero.astype(np.int32)
    codes = quantize(W, scale.astype(np.float32), zero, qt.fmt, qt.block_size)  # (O, I)
    if qt.fmt.signed:
        codes = to_unsigned(codes, qt.fmt.storage_bits)
    return replace(qt, codes=pack(codes, qt.fmt.storage_bits), scale=scale)


def _quantize_weight(W: np.ndarray, r: Recipe, H: np.ndarray | None) -> QTensor:
    """One Linear weight (O, I) → QTensor by the recipe's method, format and granularity."""
    fmt = get_format(r.weights)
    g = W.shape[1] if r.group_size is None else r.group_size
    if r.method == "gptq":  # codes chosen with the stored (float16) scales
        res = gptq_quantize(W, H, fmt.storage_bits, r.group_size, r.symmetric, r.act_order,
                            static_groups=r.act_order, mse=r.mse,
                            scale_dtype=r.scale_dtype)  # fmt: skip
        return to_qtensor(res)
    if r.per_tensor:
        qt = quantize_tensor(W, fmt, W.shape, symmetric=r.symmetric)
    elif r.method == "awq":  # W already carries AWQ's folded scales and clipping
        qt = awq_quantize_tensor(W, fmt.storage_bits, r.group_size)
    elif fmt.kind == "int" and r.symmetric and fmt.signed:
        qt = quantize_tensor(W, fmt, (1, g), symmetric=True)
    elif fmt.kind == "int":
        qt = rtn_quantize(W, fmt.name, r.group_size, r.symmetric)
    if fmt.kind == "int":
        return _store_scales(W, qt, r.scale_dtype)
    if fmt.kind == "float":
        return quantize_tensor(W, fmt, (1, g), scale_dtype="float16")
    block = (1, min(64, g)) if r.group_size is None else (1, g)  # QLoRA's absmax blocks of 64
    return quantize_codebook(W, fmt, block, double_quant=True)


class ActQuantLinear:
    """Int8 activations in front of a weight-quantized Linear (SmoothQuant's O1/O2/O3).

    x̂ = s · clamp(round(x / s), −127, 127), s = amax / 127 with amax taken per token of this
    batch (``"per_token"``, O1), over the whole batch (``"per_tensor"``, O2), or frozen from
    calibration (``"per_tensor_static"``, O3); then y = x̂ · Q(W)ᵀ.
    """

    def __init__(self, inner, mode: str, static_amax: float | None = None) -> None:
        if mode == "per_tensor_static" and not (static_amax and static_amax > 0):
            raise ValueError("static activation quantization needs a calibrated amax > 0")
        self.inner, self.mode, self.static_amax = inner, mode, static_amax
        self.in_features, self.out_features = inner.in_features, inner.out_features

    @property
    def nbytes(self) -> int:
        return int(self.inner.nbytes + (4 if self.mode == "per_tensor_static" else 0))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.mode == "per_token":
            amax = np.abs(x).max(axis=-1, keepdims=True)  # (…, 1)
        elif self.mode == "per_tensor":
            amax = np.abs(x).max()
        else:
            amax = np.float32(self.static_amax)
        s = (np.maximum(amax, 1e-12) / 127.0).astype(np.float32)
        x_hat = np.clip(np.round(x / s), -127, 127) * s  # (…, I)
        return self.inner.forward(x_hat.astype(np.float32))


def _install(W: np.ndarray, r: Recipe, H: np.ndarray | None, amax: float | None, path: str):
    """The object that replaces weight W in the params dict."""
    if r.method == "llm_int8":
        return Int8OutlierLinear(W, threshold=r.outlier_threshold)
    rot = RandomHadamard(W.shape[1], seed=0) if r.rotate else None
    if rot is not None:
        W = rotate_weight(W, rot)
        H = None if H is None else rotate_hessian(H, rot)
    qt = _quantize_weight(W, r, H)
    runs_int = qt.fmt.kind == "int" and qt.block_size[0] == 1
    if r.activations == "per_token" and not r.per_tensor:  # the integer W8A8 kernel's case
        ql = QuantLinear(qt, path=path, act_bits=8)
    else:
        ql = QuantLinear(qt, path=path if runs_int else "fake")
        if r.activations is not None:
            ql = ActQuantLinear(ql, r.activations, amax)
    return RotatedLinear(rot, ql) if rot is not None else ql


# ----------------------------------------------------------------------------- the model


def quantize_model(
    params: dict,
    cfg: Config,
    recipe: str | Recipe,
    calib_tokens: np.ndarray | None = None,
    path: str = "fake",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """A new params dict in which the recipe's weights are replaced by quantized Linears.

    ``calib_tokens`` (B, T) are needed by calibrated recipes (GPTQ's Hessians, static
    activation scales); GPTQ runs sequentially (block i sees the quantized blocks before it).
    ``path`` picks the execution path of QuantLinears that have integer kernels.

    >>> from tinyquant.llm.model import forward, init_params
    >>> cfg = Config.tiny()
    >>> p = init_params(cfg, seed=0)
    >>> q = quantize_model(p, cfg, "w8a16")
    >>> type(q["blk.0.attn_q.weight"]).__name__, q["token_embd.weight"] is p["token_embd.weight"]
    ('QuantLinear', True)
    >>> x = np.arange(8)
    >>> bool(np.abs(forward(q, x, cfg) - forward(p, x, cfg)).max() < 0.05)
    True
    """
    r = get_recipe(recipe)
    note = progress or (lambda name: None)
    if r.cast is not None:
        return {k: round_to_format(v, r.cast).astype(np.float32) for k, v in params.items()}
    if r.weights is None:
        return dict(params)
    if r.needs_calibration and calib_tokens is None:
        raise ValueError(f"recipe {r.name} needs calibration tokens (B, T); pass calib_tokens")
    if r.calib_sequences is not None and calib_tokens is not None:
        calib_tokens = calib_tokens[: r.calib_sequences]  # AWQ's grid search runs the block 21×
    if r.smooth_alpha is not None:  # 1) migrate activation outliers into the weights (exact)
        stats = collect_stats(params, cfg, calib_tokens, hessian=False)
        act_max = {name: st.max_abs for name, st in stats.items()}
        params = smooth_model(params, cfg, act_max, r.smooth_alpha)
    if r.method == "awq":  # 1) search and fold AWQ's scales and clipping (FP block inputs)
        params, _reports = awq_model(params, cfg, calib_tokens, get_format(r.weights).storage_bits,
                                     r.group_size)  # fmt: skip

    def quantize_group(ctx: BlockCalib) -> dict:
        out = {}
        for name in ctx.names:
            st = ctx.stats.get(name)
            H = st.H if (st is not None and r.method == "gptq") else None
            amax = float(st.max_abs.max()) if st is not None else None
            out[name] = _install(params[name], r, H, amax, path)
            note(name)
        return out

    if r.needs_calibration and r.method != "awq":  # 2) sequential: block i sees blocks < i
        return calibrate_sequential(
            params, cfg, calib_tokens, quantize_group, hessian=r.method == "gptq"
        )
    out = dict(params)
    for name in linear_names(cfg):
        out[name] = _install(params[name], r, None, None, path)  # 2) round each weight
        note(name)
    return out


def _stored_nbytes(t, recipe: Recipe) -> int:
    """Bytes of one tensor as the recipe stores it (float casts keep 2 bytes per value)."""
    if isinstance(t, np.ndarray):
        return int(t.size * (2 if recipe.cast is not None else t.itemsize))
    return int(t.nbytes)


def model_bytes(qparams: dict, recipe: str | Recipe) -> int:
    """Exact bytes of the whole quantized model: codes, scales, zeros and the float tensors.

    >>> from tinyquant.llm.model import init_params
    >>> p = init_params(Config.tiny())
    >>> model_bytes(p, "fp16") * 2 == model_bytes(p, "fp32")
    True
    """
    r = get_recipe(recipe)
    return sum(_stored_nbytes(t, r) for t in qparams.values())


def bits_per_weight(qparams: dict, cfg: Config, recipe: str | Recipe) -> float:
    """All stored bits of the quantized Linears (codes, scales, zeros, signs) per weight.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> p = init_params(cfg)
    >>> q = quantize_model(p, cfg, "fp16")
    >>> bits_per_weight(p, cfg, "fp32"), bits_per_weight(q, cfg, "fp16")
    (32.0, 16.0)
    """
    r = get_recipe(recipe)
    names = linear_names(cfg)
    n_bits = 8 * sum(_stored_nbytes(qparams[n], r) for n in names)
    n_weights = sum(
        qparams[n].size if isinstance(qparams[n], np.ndarray)
        else qparams[n].in_features * qparams[n].out_features
        for n in names
    )  # fmt: skip
    return n_bits / n_weights

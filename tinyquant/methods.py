"""The method registry: how one rule turns one weight into a quantized Linear.

Every method has one signature, ``(W, rule, stats) → QTensor`` (``stats`` is the weight's
input statistics from calibration, or None), and ``build_linear`` wraps the codes in the
Linear the rule asks for:

    rtn       every weight to its nearest grid point (the core's formats and conventions)
    gptq      GPTQ on the layer Hessian H = 2XᵀX/N                        (algos/gptq.py)
    awq       AWQ's grid; the scales and clipping were folded in before    (algos/awq.py)
    llm_int8  LLM.int8(): vector-wise int8 with float outlier columns      (a Linear of its own)

    + activations → ActQuantLinear (or the W8A8 kernel's QuantLinear for per-token int8)
    + rotation    → RotatedLinear around the codes of W·R

The algorithm modules stay pure functions of arrays (W, H, bits, …); this module alone reads
rules, so ``algos`` knows nothing of recipes. Integer codes are always chosen with the scale as
stored (float16 unless the rule says float32).
Shapes: O out features, I in features, g group size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinyquant.algos.awq import awq_quantize_tensor
from tinyquant.algos.calibrate import LinearStats
from tinyquant.algos.gptq import gptq_quantize, to_qtensor
from tinyquant.algos.rotate import RandomHadamard, rotate_hessian, rotate_weight
from tinyquant.algos.rtn import rtn_quantize
from tinyquant.linears import (
    ActQuantLinear,
    Int8OutlierLinear,
    MXLinear,
    QLinear,
    QuantLinear,
    RotatedLinear,
)
from tinyquant.quant import (
    MXTensor,
    QTensor,
    get_format,
    quantize_codebook,
    quantize_mx,
    quantize_tensor,
)
from tinyquant.recipe import Rule

__all__ = ["METHODS", "build_linear"]

Method = Callable[[np.ndarray, Rule, "LinearStats | None"], QTensor]


def quantize_rtn(W: np.ndarray, rule: Rule, stats: LinearStats | None = None) -> QTensor | MXTensor:
    """Round to nearest on the rule's format and granularity (no calibration).

    >>> from tinyquant.recipe import Weights
    >>> W = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    >>> quantize_rtn(W, Rule(("*",), Weights("uint4", 32))).bits_per_weight   # 4 + 24/32
    4.75
    """
    w = rule.weights
    if w.is_mx:
        return quantize_mx(W, w.fmt)
    f = get_format(w.fmt)
    block = W.shape if w.per_tensor else (1, w.group_size or W.shape[1])
    if f.kind == "codebook":
        return quantize_codebook(W, f, block, double_quant=w.double_quant)
    if f.kind == "float" or (w.symmetric and f.signed) or w.per_tensor:  # absmax grids
        return quantize_tensor(W, f, block, symmetric=w.symmetric, scale_dtype=w.scale_dtype)
    return rtn_quantize(W, f.name, block[1], w.symmetric, "gptq", scale_dtype=w.scale_dtype)


def quantize_gptq(W: np.ndarray, rule: Rule, stats: LinearStats | None) -> QTensor:
    """GPTQ with the rule's options on the Hessian of the weight's calibration inputs."""
    if stats is None or stats.H is None:
        raise ValueError("GPTQ needs the layer Hessian: quantize with calibration tokens")
    m, w = rule.method, rule.weights
    res = gptq_quantize(W, stats.H, bits=get_format(w.fmt).storage_bits, group_size=w.group_size,
                        symmetric=w.symmetric, act_order=m.act_order,
                        static_groups=m.static_groups, damp=m.damp, chunk=m.chunk, mse=m.mse,
                        scale_dtype=w.scale_dtype)  # fmt: skip
    return to_qtensor(res)


def quantize_awq(W: np.ndarray, rule: Rule, stats: LinearStats | None = None) -> QTensor:
    """AWQ's asymmetric grid on a weight whose scales and clip were folded in (``awq_model``)."""
    w = rule.weights
    return awq_quantize_tensor(W, get_format(w.fmt).storage_bits, w.group_size, w.scale_dtype)


METHODS: dict[str, Method] = {"rtn": quantize_rtn, "gptq": quantize_gptq, "awq": quantize_awq}


def build_linear(W: np.ndarray, rule: Rule, stats: LinearStats | None = None) -> QLinear:
    """The quantized Linear that replaces weight W (O, I) under ``rule``.

    >>> from tinyquant.recipe import Activations, Weights
    >>> W = np.eye(8, dtype=np.float32)
    >>> build_linear(W, Rule(("*",), Weights("int8", symmetric=True), activations=Activations()))
    QuantLinear(8 → 8, int8 per-channel, W8A8, path='fake')
    """
    if rule.method.name == "qat":
        raise ValueError("a QAT rule's codes come from training; run `tinyquant qat --recipe …`")
    if rule.method.name == "llm_int8":
        return Int8OutlierLinear.from_weight(W, rule.method.threshold)
    rot = None
    if rule.rotation is not None:  # quantize W R; the Linear rotates its input online
        rot = RandomHadamard(W.shape[1], seed=rule.rotation.seed)
        W = rotate_weight(W, rot)
        if stats is not None and stats.H is not None:
            stats = LinearStats(stats.in_features, True, n=stats.n, H=rotate_hessian(stats.H, rot),
                                mean_abs=stats.mean_abs, max_abs=stats.max_abs)  # fmt: skip
    qt = METHODS[rule.method.name](W, rule, stats)
    if isinstance(qt, MXTensor):
        return RotatedLinear(rot, MXLinear(qt)) if rot is not None else MXLinear(qt)
    act = rule.activations
    if act is not None and act.granularity == "per_token" and not rule.weights.per_tensor:
        return QuantLinear(qt, act_bits=8)  # W8A8 or W4A8 (QuantLinear checks): x per token
    lin: QLinear = QuantLinear(qt)
    if act is not None:
        amax = None
        if act.static:
            if stats is None:
                raise ValueError("static activation scales need calibration statistics")
            amax = float(stats.max_abs.max())
        lin = ActQuantLinear(lin, act.granularity, amax)
    return RotatedLinear(rot, lin) if rot is not None else lin

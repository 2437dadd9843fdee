"""Recipes and quantize_model: every preset builds a runnable model whose size is counted exactly."""

import numpy as np
import pytest

from tinyquant.llm.data import calibration_samples
from tinyquant.llm.model import Config, forward, init_params
from tinyquant.metrics import model_nbytes
from tinyquant.recipes import (
    PRESETS,
    Recipe,
    bits_per_weight,
    get_recipe,
    linear_names,
    model_bytes,
    quantize_model,
)

CFG = Config(d_model=128, n_layers=2, n_heads=2, d_ff=256, context=32)  # groups of 128 divide I


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, seed=3)


@pytest.fixture(scope="module")
def calib():
    return calibration_samples(4, CFG.context, seed=0).astype(np.int64)


TOKENS = np.arange(20) * 11 % 256


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_model_with_finite_outputs_near_fp32(name, params, calib):
    q = quantize_model(params, CFG, name, calib)
    ref = forward(params, TOKENS, CFG)
    out = forward(q, TOKENS, CFG)
    assert np.isfinite(out).all()
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    bits = bits_per_weight(q, CFG, name)
    bound = 0.05 if bits >= 8 else 0.35 if bits >= 4 else 1.0  # random weights: no structure
    assert rel < bound, f"{name}: relative logit error {rel:.3f} at {bits:.2f} bits/weight"


def test_quantize_model_does_not_modify_its_input(params, calib):
    before = {k: v.copy() for k, v in params.items()}
    quantize_model(params, CFG, "w4-gptq-g128", calib)
    assert all(np.array_equal(before[k], params[k]) for k in before)


def test_more_bits_give_a_closer_model():
    p = init_params(CFG, seed=5)
    ref = forward(p, TOKENS, CFG)
    errs = [
        np.abs(forward(quantize_model(p, CFG, name), TOKENS, CFG) - ref).mean()
        for name in ("w8a16", "w4-rtn", "w2-rtn")
    ]
    assert errs[0] < errs[1] < errs[2]


def test_fp16_recipe_rounds_every_tensor_exactly_like_numpy_float16(params):
    q = quantize_model(params, CFG, "fp16")
    for k, v in params.items():
        assert np.array_equal(q[k], v.astype(np.float16).astype(np.float32)), k


def test_group_128_int4_costs_four_bits_plus_a_fp16_scale_and_a_byte_zero_per_group(params):
    q = quantize_model(params, CFG, "w4-rtn-g128")
    assert bits_per_weight(q, CFG, "w4-rtn-g128") == 4 + (16 + 8) / 128


def test_model_bytes_add_quantized_linears_to_the_untouched_float_tensors(params):
    q = quantize_model(params, CFG, "w8a16")
    quantized = sum(q[n].nbytes for n in linear_names(CFG))
    floats = sum(v.nbytes for k, v in params.items() if k not in linear_names(CFG))
    assert model_bytes(q, "w8a16") == quantized + floats == model_nbytes(q)


def test_calibrated_recipe_without_calibration_data_is_a_clear_error(params):
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(params, CFG, "w4-gptq")


def test_unknown_recipe_names_the_presets():
    with pytest.raises(ValueError, match="w4-gptq"):
        get_recipe("w5-magic")


def test_recipe_rejects_unknown_method_and_format():
    with pytest.raises(ValueError, match="method"):
        Recipe("x", weights="uint4", method="magic")
    with pytest.raises(ValueError):
        Recipe("x", weights="int5")


@pytest.mark.parametrize("name", ["w8a16", "w4-rtn-g128", "w2-rtn-g64", "w3-rtn"])
def test_rtn_codes_are_nearest_for_the_fp16_scales_actually_stored(name, params):
    q = quantize_model(params, CFG, name)
    for w_name in ("blk.0.attn_q.weight", "blk.1.ffn_down.weight"):
        qt, W = q[w_name].qtensor, params[w_name]
        assert qt.scale.dtype == np.float16
        step = np.repeat(qt.scale_values(), qt.block_size[1], axis=1)  # (O, I) stored scale
        zero = 0 if qt.zero is None else np.repeat(qt.zero.astype(np.float32), qt.block_size[1], 1)
        lo, hi = step * (qt.fmt.qmin - zero), step * (qt.fmt.qmax - zero)  # representable range
        if qt.fmt.signed:
            lo, hi = -step * qt.fmt.qmax, step * qt.fmt.qmax
        inside = (W >= lo) & (W <= hi)
        err = np.abs(qt.dequantize() - W)
        assert inside.mean() > 0.9  # a rounded zero-point shifts the grid by up to half a step
        assert np.all(err[inside] <= step[inside] * (0.5 + 1e-6)), w_name

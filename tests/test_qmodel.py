"""quantize_model and Model: every preset builds a runnable model whose size is counted exactly."""

import numpy as np
import pytest

from tinyquant.llm.data import calibration_samples
from tinyquant.llm.model import Config, forward, init_params
from tinyquant.presets import PRESETS, get_recipe
from tinyquant.qmodel import linear_names, quantize_model

CFG = Config(d_model=128, n_layers=4, n_heads=2, d_ff=256, context=32)  # groups of 128 divide I


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
    out = q.logits(TOKENS)
    assert np.isfinite(out).all()
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    bits = q.bits_per_weight
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
        np.abs(quantize_model(p, CFG, name).logits(TOKENS) - ref).mean()
        for name in ("w8a16", "w4-rtn", "w2-rtn")
    ]
    assert errs[0] < errs[1] < errs[2]


def test_fp16_recipe_rounds_every_tensor_exactly_like_numpy_float16(params):
    q = quantize_model(params, CFG, "fp16")
    for k, v in params.items():
        assert np.array_equal(q.params[k], v.astype(np.float16).astype(np.float32)), k


def test_cast_tensors_are_counted_at_their_stored_width(params):
    fp32 = sum(v.nbytes for v in params.values())
    assert quantize_model(params, CFG, "bf16").nbytes * 2 == fp32
    assert quantize_model(params, CFG, "fp16").bits_per_weight == 16.0


def test_group_128_int4_costs_four_bits_plus_a_fp16_scale_and_a_byte_zero_per_group(params):
    q = quantize_model(params, CFG, "w4-rtn-g128")
    assert q.bits_per_weight == 4 + (16 + 8) / 128


def test_model_bytes_add_quantized_linears_to_the_untouched_float_tensors(params):
    q = quantize_model(params, CFG, "w8a16")
    quantized = sum(q.params[n].nbytes for n in linear_names(CFG))
    floats = sum(v.nbytes for k, v in params.items() if k not in linear_names(CFG))
    assert q.nbytes == quantized + floats
    # codes (1 byte each) + one float16 scale per row, no zero (symmetric)
    assert quantized == sum(params[n].size + 2 * params[n].shape[0] for n in linear_names(CFG))


def test_calibrated_recipe_without_calibration_data_is_a_clear_error(params):
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(params, CFG, "w4-gptq")


def test_unknown_recipe_names_the_presets():
    with pytest.raises(ValueError, match="w4-gptq"):
        get_recipe("w5-magic")


def test_the_integer_path_model_is_a_new_model_and_the_original_stays_fake(params):
    q = quantize_model(params, CFG, "w4-rtn")
    fast = q.with_path("int")
    assert (q.path, fast.path) == ("fake", "int")
    assert all(t.path == "fake" for n, t in q.params.items() if n in linear_names(CFG))


def test_formats_without_integer_kernels_stay_on_the_fake_path(params):
    q = quantize_model(params, CFG, "nf4").with_path("int")
    assert q.path == "fake"


def test_the_q4_k_m_like_mix_gives_six_bits_to_attn_v_and_ffn_down_of_the_late_blocks():
    cfg = Config(d_model=64, n_layers=4, n_heads=2, d_ff=128, context=32)
    q = quantize_model(init_params(cfg, seed=0), cfg, "q4_k_m-like")
    fmt = {n: q.params[n].qtensor.fmt.name for n in linear_names(cfg)}
    six = sorted(n for n, f in fmt.items() if f == "uint6")
    assert six == ["blk.2.attn_v.weight", "blk.2.ffn_down.weight", "blk.3.attn_v.weight",
                   "blk.3.ffn_down.weight"]  # fmt: skip
    assert {f for n, f in fmt.items() if n not in six} == {"uint4"}


@pytest.mark.parametrize("name", ["w8a16", "w4-rtn-g128", "w2-rtn-g64", "w3-rtn"])
def test_rtn_codes_are_nearest_for_the_fp16_scales_actually_stored(name, params):
    q = quantize_model(params, CFG, name)
    for w_name in ("blk.0.attn_q.weight", "blk.1.ffn_down.weight"):
        qt, W = q.params[w_name].qtensor, params[w_name]
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

"""TFLite int8 spec and the .tflite export, run by LiteRT's interpreter.

Oracle for the file: LiteRT itself (its reference kernels and its default resolver) must
produce exactly the int8 outputs of our integer reference on the real block's activations.
Oracle for the arithmetic: exact rational values (the real product acc · M₀ · 2^(n − 31)).
"""

import os
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("flatbuffers")

from tinyquant.export.tflite import (  # noqa: E402
    _record_block,
    calibrate_block,
    export_tflite,
    litert,
)
from tinyquant.llm.checkpoint import load_checkpoint  # noqa: E402
from tinyquant.llm.data import calibration_samples  # noqa: E402
from tinyquant.qmodel import quantize_model  # noqa: E402
from tinyquant.quant.tflite_int8 import (  # noqa: E402
    fully_connected_int8,
    multiply_by_quantized_multiplier,
    quantize_input,
    quantize_multiplier,
    quantize_weight,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

T = 64


@pytest.fixture(scope="module")
def block0(tmp_path_factory):
    params, cfg, _ = load_checkpoint(None)
    spec = calibrate_block(params, cfg, 0, calibration_samples(4, 128))
    path = tmp_path_factory.mktemp("tfl") / "b0.tflite"
    export_tflite(spec, path, T)
    held_out = _record_block(params, cfg, 0, calibration_samples(6, 128)[5:6, :T])
    xq = {src: quantize_input(x[:T], *spec.inputs[src]) for src, x in held_out.items()}
    return params, cfg, spec, path, xq


def run_litert(path, xq, resolver):
    _, _, Interpreter, R = litert()
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=getattr(R, resolver))
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], xq[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}


def reference(spec, xq, rounding="single"):
    out = {}
    for fc in spec.fcs:
        s_x, z_x = spec.inputs[fc.source]
        y = fully_connected_int8(xq[fc.source], z_x, fc.q_w, None, s_x, fc.s_w, fc.s_y, fc.z_y,
                                 rounding)  # fmt: skip
        out[fc.name[: -len(".weight")] + ".out"] = y
    return out


@pytest.mark.parametrize("resolver", ["BUILTIN_REF", "AUTO"])
def test_litert_runs_the_seven_int8_fully_connected_ops_equal_to_our_integer_reference(
    block0, resolver
):
    _, _, spec, path, xq = block0
    got, want = run_litert(path, xq, resolver), reference(spec, xq)
    assert len(got) == 7
    for name, y in want.items():
        assert got[name].dtype == np.int8 and np.array_equal(got[name], y), name


def test_the_file_stores_per_channel_symmetric_int8_weights_and_int32_bias(block0):
    _, _, spec, path, _ = block0
    _, _, Interpreter, _ = litert()
    it = Interpreter(model_path=str(path))
    dets = {d["name"]: d for d in it.get_tensor_details()}
    w = dets["blk.0.ffn_down.weight"]
    qp = w["quantization_parameters"]
    assert w["dtype"] == np.int8 and len(qp["scales"]) == 256 and not qp["zero_points"].any()
    assert np.array_equal(qp["scales"], spec.fcs[6].s_w)
    assert dets["blk.0.ffn_down.weight.bias"]["dtype"] == np.int32
    assert np.abs(spec.fcs[6].q_w.astype(int)).max() == 127  # [−127, 127], −128 unused


def test_double_rounding_differs_from_litert_only_by_one_code_at_near_ties(block0):
    _, _, spec, _, xq = block0
    single, double = reference(spec, xq), reference(spec, xq, "double")
    diff = np.concatenate([(single[k].astype(int) - double[k]).ravel() for k in single])
    assert np.abs(diff).max() <= 1 and 0 < np.mean(diff != 0) < 0.01


def exact(x, m0, shift):
    return Fraction(int(x)) * int(m0) * Fraction(2) ** (int(shift) - 31)


def test_single_rounding_is_the_nearest_integer_and_double_rounding_is_within_one():
    """LiteRT's one rounding is within ½ of the exact product (ties upward); gemmlowp's two
    roundings can err by more than ½ (x = −1, M₀ = 1607265635, n = −1: exact −0.374 → −1)."""
    rng = np.random.default_rng(0)
    m = 10.0 ** rng.uniform(-6, 0.5, 400)
    m0, shift = quantize_multiplier(m)
    x = rng.integers(-(2**20), 2**20, 400)
    x[:20] = [0, 1, -1, 2**20, -(2**20)] * 4
    y1 = multiply_by_quantized_multiplier(x, m0, shift, "single")
    y2 = multiply_by_quantized_multiplier(x, m0, shift, "double")
    for xi, a, n, s1, s2 in zip(x, m0, shift, y1, y2, strict=True):
        e = exact(xi, a, n)
        assert -Fraction(1, 2) < s1 - e <= Fraction(1, 2)  # nearest, a tie goes up
        assert abs(s2 - e) < 1
    assert multiply_by_quantized_multiplier(np.array([-1]), np.array([1607265635]),
                                            np.array([-1]), "double")[0] == -1  # fmt: skip


def test_quantize_multiplier_is_a_31_bit_significand_within_half_an_ulp():
    m = np.array([1e-9, 0.0123, 0.5, 0.999999999, 1.0, 7.25])
    m0, shift = quantize_multiplier(m)
    assert np.all((m0 >= 2**30) & (m0.astype(np.int64) < 2**31))
    for mi, a, n in zip(m, m0, shift, strict=True):
        assert abs(Fraction(int(a)) * Fraction(2) ** (int(n) - 31) - Fraction(mi)) <= Fraction(
            2) ** (int(n) - 32)  # fmt: skip
    assert quantize_multiplier(np.array([0.0])) == (np.array([0]), np.array([0]))


def test_gemmlowp_primitives_on_their_edge_cases():
    i32min = -(2**31)
    assert (
        saturating_rounding_doubling_high_mul(np.array([i32min]), np.array([i32min]))[0]
        == 2**31 - 1
    )
    assert saturating_rounding_doubling_high_mul(np.array([2**30]), np.array([2**30]))[0] == 2**29
    assert rounding_divide_by_pot(np.array([-3, 3, -2, 2]), 1).tolist() == [-2, 2, -1, 1]


def test_tflite_weights_are_symmetric_per_channel_on_127():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(8, 32)).astype(np.float32)
    W[3] = 0.0
    W[5, 7] = 40.0  # one outlier: only its row's scale grows
    q, s = quantize_weight(W)
    assert np.array_equal(np.abs(q).max(axis=1) == 127, np.abs(W).max(axis=1) > 0)
    assert s[3] == 1 and not q[3].any()
    assert np.all(np.abs(q.astype(np.float32) * s[:, None] - W) <= s[:, None] / 2 * (1 + 1e-6))


def test_export_refuses_quantized_weights_a_missing_block_and_an_unwritable_path(block0, tmp_path):
    params, cfg, spec, _, _ = block0
    q = quantize_model(params, cfg, "w4-rtn").params
    with pytest.raises(ValueError, match="already quantized"):
        calibrate_block(q, cfg, 0, calibration_samples(1, 32))
    with pytest.raises(ValueError, match="does not exist"):
        calibrate_block(params, cfg, 9, calibration_samples(1, 32))
    with pytest.raises(ValueError, match="cannot write"):
        export_tflite(spec, tmp_path / "no" / "b.tflite", T)
    assert os.listdir(tmp_path) == []

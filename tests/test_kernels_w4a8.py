"""W4A8 (4-bit group-wise weights × int8 per-token activations): the reference against the
formula in float64, both kernel families and QuantLinear's fake path against the reference — to
the bit — and the input checks."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyquant.kernels import PackedW4A8, prepack_w4a8, reference, w4a8_packed_linear
from tinyquant.kernels.checks import MAX_W4A8_GROUP
from tinyquant.kernels.vnni import has_vnni
from tinyquant.linears import QuantLinear
from tinyquant.llm.model import Config, init_params
from tinyquant.presets import ALL
from tinyquant.qmodel import quantize_model
from tinyquant.quant import quantize_activations, quantize_tensor
from tinyquant.quant.pack import unpack
from tinyquant.recipe import Activations, Recipe, Rule, Weights

KINDS = [
    "portable",
    pytest.param("vnni", marks=pytest.mark.skipif(not has_vnni(), reason="needs AVX512-VNNI")),
]


def _problem(rng, T, O, I, g, bits, log10_x=0.0, zero_rows=0.0):
    """Random codes, signed scales, non-integer zeros, and x with some all-zero rows."""
    packed = rng.integers(0, 256, (O, I * bits // 8), dtype=np.uint8)
    scale = (rng.standard_normal((O, I // g)) * 0.05).astype(np.float32)
    zero = rng.uniform(-2.0, (1 << bits) + 2.0, (O, I // g)).astype(np.float32)
    x = (rng.standard_normal((T, I)) * 10.0**log10_x).astype(np.float32)
    x[rng.random(T) < zero_rows] = 0.0
    return x, packed, scale, zero


problems = st.fixed_dictionaries(
    {
        "T": st.integers(1, 9),
        "O": st.integers(1, 130),
        "G": st.integers(1, 4),
        "g": st.sampled_from([8, 32, 64, 128]),
        "bits": st.sampled_from([4, 3]),
        "log10_x": st.floats(-3.0, 30.0),
        "zero_rows": st.sampled_from([0.0, 0.5]),
        "seed": st.integers(0, 2**16),
    }
)


def _make(pr):
    rng = np.random.default_rng(pr["seed"])
    g = pr["g"]
    x, p, s, z = _problem(rng, pr["T"], pr["O"], pr["G"] * g, g, pr["bits"], pr["log10_x"],
                          pr["zero_rows"])  # fmt: skip
    return x, p, s, z, g, pr["bits"]


@given(pr=problems)
def test_reference_equals_the_product_of_the_dequantized_operands_in_float64(pr):
    # x̂ Ŵᵀ with x̂ = s_x · q_x and Ŵ = (q − z) · s, in float64: the formula re-derived
    x, p, s, z, g, bits = _make(pr)
    y = reference.w4a8_linear(x, p, s, z, g, bits)
    q_x, s_x = quantize_activations(x, "per_token")
    x_hat = q_x.astype(np.float64) * s_x[:, None].astype(np.float64)  # (T, I)
    codes = unpack(p, bits, x.shape[1]).astype(np.float64)  # (O, I)
    s_i, z_i = np.repeat(s, g, axis=1).astype(np.float64), np.repeat(z, g, axis=1)
    y64 = x_hat @ ((codes - z_i) * s_i).T  # (T, O)
    mag = np.abs(x_hat) @ (codes * np.abs(s_i) + np.abs(z_i * s_i)).T  # what the sums hold
    assert y.dtype == np.float32 and y.shape == (x.shape[0], p.shape[0])
    assert np.all(np.abs(y - y64) <= 1e-6 * mag + 1e-30)


@pytest.mark.parametrize("kind", KINDS)
@given(pr=problems)
def test_each_kernel_family_is_bit_identical_to_the_reference(kind, pr):
    x, p, s, z, g, bits = _make(pr)
    y = w4a8_packed_linear(x, prepack_w4a8(p, s, z, g, bits), kind)
    assert np.array_equal(y, reference.w4a8_linear(x, p, s, z, g, bits))


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_large_enough_for_all_threads_is_bit_identical_to_the_reference(kind):
    rng = np.random.default_rng(7)
    x, p, s, z = _problem(rng, 6, 300, 1024, 128, 4)  # 1.8 M multiply-adds: parallel
    y = w4a8_packed_linear(x, prepack_w4a8(p, s, z, 128, 4), kind)
    assert np.array_equal(y, reference.w4a8_linear(x, p, s, z, 128, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_the_largest_codes_and_activations_sum_exactly(kind):
    # every code 15, every activation code 127: y = s_x · Σ_g 15 · 127 · g, an exact integer
    O, I, g = 64, 1024, 128
    p = np.full((O, I // 2), 0xFF, np.uint8)
    s, z = np.ones((O, I // g), np.float32), np.zeros((O, I // g), np.float32)
    x = np.full((2, I), 1.27, np.float32)  # s_x = 0.01, q_x = 127
    y = w4a8_packed_linear(x, prepack_w4a8(p, s, z, g, 4), kind)
    expect = np.float32(15 * 127 * I) * np.float32(0.01)
    assert np.all(y == expect)


@pytest.mark.parametrize("bits", [4, 3])
def test_each_code_sits_in_the_documented_nibble_of_the_layout(bits):
    # byte b of row r in step k = q[r, 8k + b] | q[r, 8k + 4 + b] << 4, rows in blocks of 64
    rng = np.random.default_rng(bits)
    _, p, s, z = _problem(rng, 1, 70, 64, 32, bits)
    w = prepack_w4a8(p, s, z, 32, bits).w  # (NB, K8, 64, 4)
    rows = w.transpose(0, 2, 1, 3).reshape(-1, 8, 4)[:70]  # (O, K8, 4)
    codes = np.concatenate([rows & 15, rows >> 4], axis=2).reshape(70, 64)  # (O, I)
    assert np.array_equal(codes, unpack(p, bits, 64))


def test_nbytes_counts_codes_scales_and_zeros_per_64_row_block():
    p = prepack_w4a8(np.zeros((70, 64), np.uint8), np.ones((70, 4), np.float32),
                     np.zeros((70, 4), np.float32), 32, 4)  # fmt: skip
    assert p.nbytes == 2 * (64 * 128 // 2 + 2 * 4 * 64 * 4)  # 2 blocks: codes, scale, zero


# --- QuantLinear: fake path == int path, bit for bit ---------------------------------------------
@pytest.mark.parametrize("fmt, g", [("uint4", 128), ("int4", 32), ("uint3", 64), ("int3", 8)])
@pytest.mark.parametrize("kind", KINDS)
def test_quantlinear_fake_path_equals_the_reference_and_the_int_path_to_the_bit(fmt, g, kind):
    rng = np.random.default_rng(g)
    w = rng.standard_normal((100, 256)).astype(np.float32)
    x = rng.standard_normal((7, 256)).astype(np.float32)
    qt = quantize_tensor(w, fmt, (1, g), symmetric=fmt.startswith("int"))
    fake = QuantLinear(qt, "fake", act_bits=8)
    y_fake = fake.forward(x)
    s, z = fake._scale_zero()
    assert np.array_equal(y_fake, reference.w4a8_linear(x, qt.codes, s, z, g, qt.fmt.storage_bits))
    assert np.array_equal(y_fake, QuantLinear(qt, "int", act_bits=8, kernels=kind).forward(x))
    assert "W4A8" in repr(fake)


@pytest.mark.parametrize(
    "weights", [Weights("uint4", 64), Weights("int4", 32, symmetric=True)], ids=["uint4", "int4"]
)
@pytest.mark.parametrize("kind", KINDS)
def test_a_two_layer_w4a8_model_gives_the_same_logits_on_the_fake_and_int_paths(
    weights, kind, monkeypatch
):
    # a last-bit difference in one Linear would flip activation codes in the next: the whole
    # forward must agree to the bit
    monkeypatch.setenv("TINYQUANT_KERNELS", kind)
    cfg = Config(d_model=128, n_layers=2, n_heads=2, d_ff=256, context=64)
    params = init_params(cfg, seed=1)
    recipe = Recipe("t", (Rule(ALL, weights, activations=Activations("per_token")),))
    model = quantize_model(params, cfg, recipe)
    assert "W4A8" in repr(model.params["blk.1.ffn_down.weight"])
    tokens = np.frombuffer(b"ROMEO: But soft, what light through yonder window?", np.uint8)
    fake = model.logits(tokens.astype(np.int64))
    logits = model.with_path("int").logits(tokens.astype(np.int64))
    assert np.array_equal(logits, fake) and np.abs(fake).max() > 0


def test_a_w4a8_linear_read_back_from_its_state_gives_the_same_bits():
    rng = np.random.default_rng(5)
    ql = QuantLinear.from_weight(rng.standard_normal((40, 64)).astype(np.float32), "uint4", 32,
                                 symmetric=False, act_bits=8)  # fmt: skip
    arrays, meta = ql.to_state("w.")
    back = QuantLinear.from_state(arrays, meta, "w.")
    x = rng.standard_normal((3, 64)).astype(np.float32)
    assert repr(back) == repr(ql) and np.array_equal(back.forward(x), ql.forward(x))


def test_act_bits_8_refuses_weights_neither_w8a8_nor_w4a8_naming_both():
    qt = quantize_tensor(np.ones((8, 64), np.float32), "uint2", (1, 32), symmetric=False)
    with pytest.raises(ValueError, match="W8A8.*W4A8"):
        QuantLinear(qt, act_bits=8)


# --- input checks: ValueError naming the argument, before anything enters Numba -------------------
def _good():
    rng = np.random.default_rng(0)
    return _problem(rng, 2, 10, 64, 32, 4)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: {**a, "x": a["x"].astype(np.float64)}, "x has dtype float64"),
        (lambda a: {**a, "x": np.where(a["x"] > 1, np.nan, a["x"]).astype(np.float32)}, "x has"),
        (lambda a: {**a, "group_size": 24}, "group_size 24 does not divide"),
        (lambda a: {**a, "group_size": 12}, "group_size 12 is not a multiple of 8"),
        (lambda a: {**a, "group_size": MAX_W4A8_GROUP + 8}, "int32 group sums"),
        (lambda a: {**a, "bits": 2}, "bits must be 4 or 3"),
        (lambda a: {**a, "bits": 5}, "bits must be"),
        (lambda a: {**a, "scale": a["scale"] * np.float32(np.inf)}, "scale contains NaN or Inf"),
        (lambda a: {**a, "zero": a["zero"][:, :1].copy()}, "zero has shape"),
        (lambda a: {**a, "packed": a["packed"].view(np.int8)}, "packed has dtype int8"),
    ],
)
@pytest.mark.parametrize("fn", ["reference", "prepack"])
def test_bad_inputs_raise_a_value_error_naming_the_argument(change, match, fn):
    x, p, s, z = _good()
    args = change({"x": x, "packed": p, "scale": s, "zero": z, "group_size": 32, "bits": 4})
    with pytest.raises(ValueError, match=match):
        if fn == "reference":
            reference.w4a8_linear(**args)
        elif "x" in match:  # prepack has no x: the packed linear checks it
            w4a8_packed_linear(args["x"], prepack_w4a8(p, s, z, 32, 4))
        else:
            prepack_w4a8(args["packed"], args["scale"], args["zero"], args["group_size"],
                         args["bits"])  # fmt: skip


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"in_features": 128}, "PackedW4A8.w has shape"),
        ({"out_features": 70}, "PackedW4A8.w has shape"),
        ({"group_size": 16}, "PackedW4A8.scale has shape"),
        ({"group_size": 12}, "multiple of 8"),
        ({"bits": 2}, "PackedW4A8.bits must be 4 or 3"),
        ({"zero": np.full((1, 2, 64), np.nan, np.float32)}, "PackedW4A8.zero contains NaN"),
    ],
)
def test_an_inconsistent_packed_weight_is_refused(fields, match):
    x, p, s, z = _good()
    packed = prepack_w4a8(p, s, z, 32, 4)
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(packed, **fields)


def test_the_packed_linear_refuses_a_foreign_weight_a_wrong_width_and_an_unknown_kernel():
    x, p, s, z = _good()
    packed = prepack_w4a8(p, s, z, 32, 4)
    with pytest.raises(ValueError, match="p must be a PackedW4A8"):
        w4a8_packed_linear(x, p)
    with pytest.raises(ValueError, match="x has 32 features but the weight expects 64"):
        w4a8_packed_linear(np.ascontiguousarray(x[:, :32]), packed)
    with pytest.raises(ValueError, match="kernels must be"):
        w4a8_packed_linear(x, packed, "fast")
    assert isinstance(packed, PackedW4A8)

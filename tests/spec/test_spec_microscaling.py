"""MXFP4 / MXFP8 / NVFP4 against the OCP MX v1.0 spec, ml_dtypes and gguf-py's MXFP4 quantizer."""

import math

import gguf
import ml_dtypes
import numpy as np
import pytest
from gguf import quants
from hypothesis import assume, given
from hypothesis import strategies as st
from spec_strategies import tensors

from tinyquant.quant.floats import decode
from tinyquant.quant.microscaling import (
    MX_FORMATS,
    e8m0_exponent,
    e8m0_to_float,
    from_gguf_bytes,
    quantize_mx,
    to_gguf_bytes,
)

GGUF_MXFP4 = gguf.GGMLQuantizationType.MXFP4
# OCP MX v1.0 Table 5 (E2M1): code 0…7 magnitudes; bit 3 is the sign
E2M1_TABLE = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
F32_MIN_NORMAL = float(np.finfo(np.float32).tiny)


def gguf_bytes(x):
    return quants.quantize(x.astype(np.float32), GGUF_MXFP4).reshape(*x.shape[:-1], -1, 17)


def ours_gguf(x):
    return to_gguf_bytes(quantize_mx(x, "mxfp4", rounding="gguf"))


def gguf_exponent_defined(x):
    """ggml casts floor(log2 amax) − 2 + 127 to uint8: undefined below 0 (amax < 2^−125)."""
    amax = np.abs(x.reshape(-1, 32)).max(1)
    return bool(np.all((amax == 0) | (amax >= 2.0**-125)))


def block_with_scale_one(values, fmt):
    """A block whose amax fixes X = 1 (E2M1: 6 = 1.5·2², E4M3: 448 = 1.75·2⁸), then values."""
    k = MX_FORMATS[fmt].block
    top = 6.0 if fmt == "mxfp4" else 448.0
    x = np.zeros((1, k * math.ceil((len(values) + 1) / k)), np.float32)
    x[0, 0] = top
    x[0, 1 : 1 + len(values)] = values
    return x


# -- decoding every code --------------------------------------------------------------------------
def test_every_e2m1_code_decodes_to_the_ocp_table():
    codes = np.arange(16, dtype=np.uint8)
    want = [v for v in E2M1_TABLE] + [-v for v in E2M1_TABLE]
    got = decode(codes, "fp4_e2m1")
    assert got.tolist() == want and np.signbit(got[8])  # code 8 is −0


def test_every_e2m1_code_dequantizes_through_an_mxfp4_tensor_with_scale_one():
    codes = np.concatenate([np.arange(16), np.arange(16)]).astype(np.uint8)  # (32,)
    blocks = np.concatenate([[127], codes[:16] | (codes[16:] << 4)]).astype(np.uint8)
    mx = from_gguf_bytes(blocks.reshape(1, 1, 17), (1, 32))
    assert mx.dequantize()[0, :16].tolist() == E2M1_TABLE + [-v for v in E2M1_TABLE]


def test_every_e4m3_code_decodes_as_ml_dtypes_float8_e4m3fn():
    codes = np.arange(256, dtype=np.uint8)
    want = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(decode(codes, "fp8_e4m3"), want)


def test_every_e8m0_byte_decodes_to_a_power_of_two_and_0xff_to_nan():
    e = np.arange(256, dtype=np.uint8)
    got = e8m0_to_float(e)
    assert [float(v) for v in got[:255]] == [math.ldexp(1.0, int(i) - 127) for i in range(255)]
    assert np.isnan(got[255])


# -- midpoints: ties to even ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["mxfp4", "mxfp8"])
def test_every_midpoint_rounds_to_the_neighbour_with_an_even_code(fmt):
    elem = MX_FORMATS[fmt].element
    codes = np.arange(0x7F if fmt == "mxfp8" else 8, dtype=np.uint8)  # finite positive codes
    vals = decode(codes, elem).astype(np.float64)
    mids = (vals[:-1] + vals[1:]) / 2  # exact in float32
    for sign in (1, -1):
        x = block_with_scale_one(sign * mids, fmt)
        got = quantize_mx(x, fmt).dequantize()[0, 1 : 1 + len(mids)]
        even = np.where(codes[:-1] % 2 == 0, vals[:-1], vals[1:])  # the even code's value
        np.testing.assert_array_equal(got, sign * even)


def test_gguf_rounding_sends_a_midpoint_to_the_smaller_magnitude_and_zero_to_plus_zero():
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.75, -0.1], np.float32)
    x = block_with_scale_one(mids, "mxfp4")
    ocp = quantize_mx(x, "mxfp4").dequantize()[0, 1:10]
    gg = quantize_mx(x, "mxfp4", rounding="gguf").dequantize()[0, 1:10]
    assert ocp.tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -1.0, -0.0]
    assert gg.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, -0.5, 0.0]
    assert np.signbit(ocp[-1]) and not np.signbit(gg[-1])
    np.testing.assert_array_equal(ours_gguf(x), gguf_bytes(x))


# -- E8M0 scale selection (OCP §6.3) ----------------------------------------------------------------
@given(st.floats(min_value=0, max_value=float(np.finfo(np.float32).max), width=32))
def test_e8m0_scale_is_floor_log2_amax_minus_emax_clamped_to_the_e8m0_range(amax):
    for spec in MX_FORMATS.values():
        if spec.scale != "e8m0":
            continue
        e = int(e8m0_exponent(np.array([amax], np.float32), spec.emax)[0])
        if amax == 0:
            assert e == 0
            continue
        floor_log2 = math.frexp(amax)[1] - 1  # exact in Python: amax = m·2^p, m ∈ [0.5, 1)
        assert e == min(max(floor_log2 - spec.emax, -127), 127) + 127


def test_the_largest_element_after_scaling_lies_in_the_top_binade_of_the_element_format():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 32)) * np.exp2(rng.integers(-60, 60, (64, 1)))).astype(np.float32)
    for fmt in ("mxfp4", "mxfp8"):
        mx = quantize_mx(x, fmt)
        ratio = np.abs(x).max(1) / mx.block_scale()[:, 0]
        emax = MX_FORMATS[fmt].emax
        assert np.all((ratio >= 2.0**emax) & (ratio < 2.0 ** (emax + 1)))


def test_gguf_picks_one_exponent_higher_a_few_ulps_below_a_power_of_two():
    amax = np.nextafter(np.float32(16.0), np.float32(0))  # ⌊log2⌋ = 3, log2f rounds to 4
    assert int(e8m0_exponent(np.array([amax]), 2)[0]) == 127 + 3 - 2
    assert int(e8m0_exponent(np.array([amax]), 2, "gguf")[0]) == 127 + 4 - 2
    x = np.full((1, 32), amax, np.float32)
    np.testing.assert_array_equal(ours_gguf(x), gguf_bytes(x))


# -- bit for bit against gguf-py ----------------------------------------------------------------------
def adversarial_blocks():
    """(name, (rows, 32k) float32) blocks where a quantizer is most likely to differ."""
    rng = np.random.default_rng(7)
    grid = np.array(E2M1_TABLE, np.float32)
    mids = (grid[:-1] + grid[1:]) / 2
    out = {
        "all zero": np.zeros((2, 32), np.float32),
        "signed zeros": np.tile(np.array([0.0, -0.0], np.float32), (1, 16)),
        "one outlier": np.where(np.arange(32) == 5, 1e4, rng.standard_normal(32)).astype(
            np.float32
        ),
        "ties at midpoints": np.concatenate([[6.0], mids, -mids, mids * 4, -mids * 4, [0.0] * 3]),
        "subnormal elements": np.concatenate([[2.0**-120], rng.standard_normal(31) * 1e-40]),
        "smallest defined amax": np.full(32, 2.0**-125) * np.sign(rng.standard_normal(32)),
        "huge": np.concatenate([[3.4e38, -3.4e38], rng.standard_normal(30) * 1e38]),
        "near powers of two": np.nextafter(np.exp2(np.arange(-16, 16)), 0),
        "amax in the saturating range 6..8": np.concatenate(
            [[7.9, -7.0, 6.5], np.linspace(-6, 6, 29)]
        ),
    }
    return {k: np.asarray(v, np.float32).reshape(-1, 32) for k, v in out.items()}


@pytest.mark.parametrize("name", list(adversarial_blocks()))
def test_mxfp4_bytes_equal_gguf_on_adversarial_blocks(name):
    x = adversarial_blocks()[name]
    np.testing.assert_array_equal(ours_gguf(x), gguf_bytes(x))


def test_mxfp4_bytes_equal_gguf_on_100000_random_blocks():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 100 * 32)).astype(np.float32)  # 100 000 blocks
    x *= np.exp2(rng.integers(-40, 40, (1000, 1))).astype(np.float32)
    x[rng.random(x.shape) < 0.01] *= 50  # outliers
    np.testing.assert_array_equal(ours_gguf(x), gguf_bytes(x))


@given(tensors(group_sizes=(32,), max_groups=3))
def test_mxfp4_bytes_equal_gguf_on_hypothesis_tensors(xg):
    x, _ = xg
    assume(gguf_exponent_defined(x))
    np.testing.assert_array_equal(ours_gguf(x), gguf_bytes(x))


def test_gguf_dequantizes_our_bytes_to_our_values():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 128)).astype(np.float32)
    mx = quantize_mx(x, "mxfp4", rounding="gguf")
    theirs = quants.dequantize(to_gguf_bytes(mx).reshape(8, -1), GGUF_MXFP4)
    np.testing.assert_array_equal(mx.dequantize(), theirs.reshape(8, 128))
    back = from_gguf_bytes(to_gguf_bytes(mx), x.shape)
    np.testing.assert_array_equal(back.dequantize(), mx.dequantize())


# -- error bounds and sizes ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(MX_FORMATS))
@given(xg=tensors(group_sizes=(32,), max_groups=2, allow_subnormal=False))
def test_roundtrip_error_is_half_a_step_of_the_element_grid_or_the_saturation_gap(fmt, xg):
    x, _ = xg
    mx = quantize_mx(x, fmt)
    k, elem = MX_FORMATS[fmt].block, MX_FORMATS[fmt].element
    M = 1 if elem == "fp4_e2m1" else 3  # mantissa bits
    top = 6.0 if elem == "fp4_e2m1" else 448.0
    sub_half = 0.25 if elem == "fp4_e2m1" else 2.0**-10  # half the subnormal spacing
    X = np.repeat(mx.block_scale().astype(np.float64), k, axis=-1)  # (rows, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(X > 0, np.abs(x) / X, 0.0)
    bound = X * np.maximum.reduce([np.full_like(y, sub_half), y * 2.0 ** -(M + 1), y - top])
    bound = np.where(X > 0, bound, np.abs(x))  # NVFP4 flushed block: checked below
    err = np.abs(mx.dequantize().astype(np.float64) - x)
    tiny = 2.0**-149 * 4  # x/X and X·P each round once when subnormal
    assert np.all(err <= bound * (1 + 1e-6) + tiny)
    if fmt == "nvfp4":  # an E4M3 block scale can underflow to 0: only blocks below 6·t·2^−10
        flushed = X == 0
        assert np.all(np.abs(x[flushed]) <= 6 * mx.tensor_scale * 2.0**-10 * (1 + 1e-6))


@pytest.mark.parametrize("n, want", [(32, 5.5), (256, 4.625), (4096, 4.5078125)])
def test_nvfp4_bits_per_weight_are_4_5_plus_32_over_n(n, want):
    x = np.random.default_rng(0).standard_normal((1, n)).astype(np.float32)
    mx = quantize_mx(x, "nvfp4")
    assert mx.bits_per_weight == want == 4.5 + 32 / n
    assert mx.nbytes == n // 2 + n // 16 + 4


@pytest.mark.parametrize("fmt, bpw", [("mxfp4", 4.25), ("mxfp8", 8.25)])
def test_mx_bits_per_weight_count_one_e8m0_byte_per_32(fmt, bpw):
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    assert quantize_mx(x, fmt).bits_per_weight == bpw


def test_nvfp4_maps_the_tensor_amax_to_six_times_the_block_scale():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    mx = quantize_mx(x, "nvfp4")
    assert mx.tensor_scale == float(np.float32(np.abs(x).max()) / np.float32(6 * 448))
    i = np.unravel_index(np.abs(x).argmax(), x.shape)
    assert abs(mx.dequantize()[i] - x[i]) <= 1e-6 * abs(x[i])


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, fmt, match",
    [
        (np.full((1, 32), np.nan, np.float32), "mxfp4", "non-finite"),
        (np.ones((2, 48), np.float32), "mxfp4", "multiple of 32; pad it to 64"),
        (np.ones((2, 24), np.float32), "nvfp4", "multiple of 16; pad it to 32"),
        (np.ones((1, 32), np.float32), "mxfp6", "unknown microscaling format"),
        (np.ones((1, 32), np.int32), "mxfp8", "dtype int32"),
    ],
)
def test_bad_input_is_a_one_line_value_error(x, fmt, match):
    with pytest.raises(ValueError, match=match) as err:
        quantize_mx(x, fmt)
    assert "\n" not in str(err.value)


def test_gguf_rounding_is_refused_for_formats_gguf_does_not_define_that_way():
    with pytest.raises(ValueError, match="not available for mxfp8"):
        quantize_mx(np.ones((1, 32), np.float32), "mxfp8", rounding="gguf")

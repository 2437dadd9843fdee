"""Fake-quant ops with gradients (quant/qat_ops.py), each against an oracle: the core quantizer,
finite differences where the op is differentiable, the STE's defining property where it is not."""

import numpy as np
import pytest

from tinyquant.quant import choose_qparams, quantize_activations, quantize_tensor
from tinyquant.quant.qat_ops import (
    absmean_scale,
    act_quant_bwd,
    act_quant_fwd,
    clipped_ste_bwd,
    fake_quant_fwd,
    lsq_bwd,
    ste_bwd,
    ternary_bwd,
    ternary_fwd,
)

RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 64)).astype(np.float32)


@pytest.mark.parametrize("fmt, g, sym", [("uint4", 16, False), ("uint2", 64, False),
                                         ("int8", 64, True), ("uint3", 32, False)])  # fmt: skip
def test_fake_quant_forward_equals_the_core_quantizer_dequantized(fmt, g, sym):
    conv = "restricted" if sym else "gptq"
    qt = quantize_tensor(W, fmt, (1, g), symmetric=sym, convention=conv, scale_dtype="float16")
    z = None if qt.zero is None else qt.zero.astype(np.float32)
    wq, _ = fake_quant_fwd(W, qt.scale_values(), z, fmt, (1, g), scale_dtype="float16")
    assert np.array_equal(wq, qt.dequantize())


def test_a_float_format_has_no_trainable_grid():
    with pytest.raises(ValueError, match="no trainable uniform grid"):
        fake_quant_fwd(W, np.ones((8, 1)), None, "nf4", (1, 64))


def _half_range_scale():
    s, _ = choose_qparams(W, "int4", (1, 16))  # (8, 4)
    return (s * 0.5).astype(np.float32)  # half the min-max scale: the outer weights clip


def test_ste_gradient_is_the_identity_inside_and_outside_the_range():
    _, cache = fake_quant_fwd(W, _half_range_scale(), None, "int4", (1, 16))
    d = RNG.standard_normal(W.shape).astype(np.float32)
    assert np.array_equal(ste_bwd(d, cache), d)


def test_clipped_ste_gradient_is_the_identity_inside_the_range_and_zero_outside():
    s = _half_range_scale()
    _, cache = fake_quant_fwd(W, s, None, "int4", (1, 16))
    d = RNG.standard_normal(W.shape).astype(np.float32)
    code = np.rint(W.reshape(8, 4, 16) / s[:, :, None]).reshape(W.shape)  # oracle: by hand
    inside = (code >= -8) & (code <= 7)
    assert 0 < inside.mean() < 1  # both cases occur
    dw = clipped_ste_bwd(d, cache)
    assert np.array_equal(dw[inside], d[inside]) and np.all(dw[~inside] == 0)


S0 = np.float64(0.05)


def _surrogate(w, s, c):
    """LSQ's forward on int4 with round(v) replaced by v + c (c = round(v₀) − v₀ frozen at
    s = S0), clamped where the true op clamps: its derivative in s is LSQ's eq. 3."""
    r0 = np.rint(w / S0)  # the codes at S0 decide which weights clip
    r = np.where(r0 < -8, -8, np.where(r0 > 7, 7, w / s + c))
    return s * r


def test_lsq_step_gradient_is_the_finite_difference_of_its_straight_through_surrogate():
    w = W[0, :16].astype(np.float64) * 0.2  # one block of 16, some codes clipped at s = 0.05
    _, cache = fake_quant_fwd(w[None].astype(np.float32), np.array([[S0]], np.float32), None,
                              "int4", (1, 16))  # fmt: skip
    d = RNG.standard_normal(16)
    _, ds, _ = lsq_bwd(d[None].astype(np.float32), cache, grad_scale=False)
    c = np.rint(w / S0) - w / S0
    h = 1e-7
    fd = (d @ _surrogate(w, S0 + h, c) - d @ _surrogate(w, S0 - h, c)) / (2 * h)
    assert np.isclose(ds[0, 0], fd, rtol=1e-4)


def test_lsq_step_gradient_of_a_clipped_weight_is_the_true_derivative():
    w = np.array([[3.0, -3.0]], np.float32)  # both clipped at s = 0.1: ŵ = s · qmax, s · qmin
    _, cache = fake_quant_fwd(w, np.array([[0.1]], np.float32), None, "int4", (1, 2))
    _, ds, _ = lsq_bwd(np.array([[1.0, 1.0]], np.float32), cache, grad_scale=False)
    h = 1e-3
    fd = sum(((s + h) * q - (s - h) * q) / (2 * h) for s, q in [(0.1, 7), (0.1, -8)])
    assert np.isclose(ds[0, 0], fd)


def test_zero_point_gradient_is_zero_inside_and_minus_the_scale_outside():
    # uint2 [0, 3], s = 0.1, z = 1: codes round(0.5) + 1 = 1, round(2) + 1 = 3, 51 → clamped
    w = np.array([[0.05, 0.2, 5.0]], np.float32)
    _, cache = fake_quant_fwd(w, np.array([[0.1]], np.float32), np.array([[1.0]]), "uint2",
                              (1, 3))  # fmt: skip
    got = []
    for k in range(3):
        d = np.zeros((1, 3), np.float32)
        d[0, k] = 1.0
        got.append(float(lsq_bwd(d, cache, grad_scale=False)[2][0, 0]))
    assert got == [0.0, 0.0, -float(np.float32(0.1))]
    # the clamped weight's true derivative: ŵ = s · (qmax − z) → −s per unit of z
    h = 1e-3
    fd = (0.1 * (3 - (1 + h)) - 0.1 * (3 - (1 - h))) / (2 * h)
    assert np.isclose(got[2], fd)


def test_lsq_gradient_scale_is_one_over_root_n_qp():
    _, cache = fake_quant_fwd(W, _half_range_scale(), None, "int4", (1, 16))
    d = RNG.standard_normal(W.shape).astype(np.float32)
    _, ds1, _ = lsq_bwd(d, cache, grad_scale=False)
    _, dsg, _ = lsq_bwd(d, cache, grad_scale=True)
    assert np.allclose(dsg, ds1 / np.sqrt(16 * 7))


def test_ternary_is_bitnets_absmean_round_clip():
    wq, _ = ternary_fwd(W, (1, 64))
    gamma = np.abs(W).mean(axis=1, keepdims=True) + 1e-8  # BitNet b1.58, eq. 1-3 by hand
    want = gamma * np.clip(np.rint(W / gamma), -1, 1)
    assert np.allclose(wq, want, rtol=0, atol=1e-7)
    assert set(np.unique(np.rint(wq / gamma))) <= {-1.0, 0.0, 1.0}
    assert np.allclose(absmean_scale(W, (1, 64))[:, 0], gamma[:, 0])


def test_ternary_gradient_is_the_identity():
    _, cache = ternary_fwd(W, (1, 64))
    d = RNG.standard_normal(W.shape).astype(np.float32)
    assert np.array_equal(ternary_bwd(d, cache), d)


def test_activation_fake_quant_is_the_core_per_token_int8_and_passes_gradients_through():
    x = RNG.standard_normal((5, 64)).astype(np.float32) * 3
    xq, cache = act_quant_fwd(x)
    q, s = quantize_activations(x, "per_token")
    assert np.array_equal(xq, q.astype(np.float32) * s[:, None])
    assert np.abs(xq - x).max() <= s.max() / 2 + 1e-6
    d = RNG.standard_normal(x.shape).astype(np.float32)
    assert np.array_equal(act_quant_bwd(d, cache), d)

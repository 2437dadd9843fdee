"""convention="torch": torch.ao.quantization's observers and fake_quantize_*, bit for bit.

The oracle is a scalar transcription of torch's arithmetic, one float32 operation at a time in
torch's order (``_calculate_qparams`` in observer.py; the CPU fake-quant kernels:
``inv_scale = 1.0f / scale``, ``qval = int64(zero_point + nearbyint(x * inv_scale))``,
``(clamp(qval) − zero_point) * scale`` in double, then float32), plus the fixed values torch
itself printed for the examples in the issue. torch is not needed to run these tests.
"""

import numpy as np
import pytest

from tinyquant.quant import get_format
from tinyquant.quant.affine import choose_qparams, dequantize, fake_quantize, quantize
from tinyquant.quant.observers import MinMaxObserver, MovingAverageMinMaxObserver

F = np.float32
EPS = F(np.finfo(np.float32).eps)


def torch_qparams(block, qmin, qmax, symmetric):
    """observer.py _calculate_qparams for one block, scalar float32 arithmetic."""
    mn, mx = F(min(block)), F(max(block))
    min_neg, max_pos = min(mn, F(0)), max(mx, F(0))
    if symmetric:
        scale = max(max(-min_neg, max_pos) / F((qmax - qmin) / 2), EPS)
        zp = 0 if qmin < 0 else (128 if qmax == 255 else (qmin + qmax) // 2)
    else:
        scale = max(F(max_pos - min_neg) / F(qmax - qmin), EPS)
        zp = int(min(max(qmin - int(np.rint(F(min_neg / scale))), qmin), qmax))
    return F(scale), zp


def torch_fake_quant(x, scale, zp, qmin, qmax):
    """fake_quantize_per_tensor_affine's CPU kernel for one value."""
    inv_scale = F(1.0) / F(scale)
    qval = zp + np.rint(F(F(x) * inv_scale))
    qval = min(max(qval, qmin), qmax)
    return F((qval - zp) * np.float64(scale))


def adversarial_blocks():
    """Blocks of 8: ties at half steps, all-zero, constant, one outlier, one-signed, 1e±30,
    subnormals, and random ones."""
    rng = np.random.default_rng(0)
    step = 2.0**-7  # [-1, 1 − 2⁻⁷] over 255 steps: scale 2⁻⁷ exactly, so k + ½ are exact ties
    ties = np.array([-1.0, 1 - step] + [(k + 0.5) * step for k in (-3, -2, -1, 0, 1, 2)])
    blocks = [
        ties,
        np.zeros(8),
        np.full(8, 0.3),
        np.full(8, -2.5),
        np.r_[rng.normal(size=7) * 0.01, 40.0],
        -np.abs(rng.normal(size=8)) - 1.0,
        np.abs(rng.normal(size=8)) + 1.0,
        rng.normal(size=8) * 1e30,
        rng.normal(size=8) * 1e-30,
        np.r_[rng.normal(size=7) * 1e-40, 1e-45],  # float32 subnormals
        np.array([-3.253264, 3.2532641, 0.1, -0.2, 1.0, 2.0, -1.5, 0.0]),  # the near-tie
    ]
    blocks += [rng.normal(size=8) * 10.0 ** rng.uniform(-3, 3) for _ in range(200)]
    return [b.astype(np.float32) for b in blocks]


CASES = [("int8", True), ("int8", False), ("uint8", False), ("uint8", True), ("int4", False)]


@pytest.mark.parametrize("fmt,symmetric", CASES)
def test_torch_qparams_equal_the_observer_formula_on_every_adversarial_block(fmt, symmetric):
    f = get_format(fmt)
    blocks = np.stack(adversarial_blocks())  # (B, 8)
    scale, zero = choose_qparams(blocks, fmt, (1, 8), symmetric, convention="torch")
    want = [torch_qparams(b, f.qmin, f.qmax, symmetric) for b in blocks]
    assert scale[:, 0].tolist() == [s for s, _ in want]
    assert zero[:, 0].tolist() == [z for _, z in want]


@pytest.mark.parametrize("fmt,symmetric", CASES)
def test_torch_fake_quantize_equals_the_kernel_on_every_adversarial_value(fmt, symmetric):
    f = get_format(fmt)
    blocks = np.stack(adversarial_blocks())  # (B, 8)
    got = fake_quantize(blocks, fmt, (1, 8), symmetric, convention="torch")
    for b, row in zip(blocks, got, strict=True):
        s, z = torch_qparams(b, f.qmin, f.qmax, symmetric)
        want = [torch_fake_quant(v, s, z, f.qmin, f.qmax) for v in b]
        assert row.view(np.uint32).tolist() == np.array(want, F).view(np.uint32).tolist()


def test_torch_asymmetric_scale_is_the_float32_quotient_torch_prints():
    s, z = choose_qparams(F([[-1.0, 0.3]]), "uint8", (1, 2), symmetric=False, convention="torch")
    assert float(s[0, 0]) == 0.0050980388186872005 and int(z[0, 0]) == 196  # torch's values
    s64, _ = choose_qparams(F([[-1.0, 0.3]]), "uint8", (1, 2), symmetric=False)
    assert float(s64[0, 0]) == 0.005098039284348488  # rounded once from float64: 1 ulp apart


def test_torch_rounds_x_times_the_reciprocal_so_a_near_tie_moves_by_one_code():
    x, s = F([[-3.253264]]), F([[0.025515797]])
    assert int(quantize(x, s, 0, "int8", (1, 1), convention="torch")[0, 0]) == -128
    assert int(quantize(x, s, 0, "int8", (1, 1))[0, 0]) == -127  # x / s = −127.49999


def test_torch_all_zero_block_gets_the_eps_scale_and_decodes_to_zero():
    s, z = choose_qparams(np.zeros((1, 4)), "uint8", (1, 4), symmetric=False, convention="torch")
    assert s[0, 0] == EPS and z[0, 0] == 0
    assert np.all(dequantize(quantize(np.zeros((1, 4)), s, z, "uint8", (1, 4)), s, z, (1, 4)) == 0)


def test_the_float64_convention_differs_from_torch_by_one_ulp_in_many_random_blocks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    s_t, _ = choose_qparams(x, "uint8", (1, 32), symmetric=False, convention="torch")
    s_r, _ = choose_qparams(x, "uint8", (1, 32), symmetric=False)
    ulps = np.abs(s_t.view(np.int32).astype(np.int64) - s_r.view(np.int32))
    assert ulps.max() == 1 and 0.2 < np.mean(ulps == 1) < 0.6


@pytest.mark.parametrize("axis", [None, -1])
def test_torch_minmax_observer_equals_the_formula_on_the_running_range(axis):
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=(16, 4)).astype(np.float32) * k for k in (1, 3, 0.5)]
    obs = MinMaxObserver("uint8", symmetric=False, convention="torch", axis=axis)
    for b in batches:
        obs.observe(b)
    allx = np.concatenate(batches)
    cols = [allx.reshape(-1)] if axis is None else list(allx.T)
    want = [torch_qparams(c, 0, 255, False) for c in cols]
    s, z = obs.qparams()
    assert np.atleast_1d(s).tolist() == [w[0] for w in want]
    assert np.atleast_1d(z).tolist() == [w[1] for w in want]


def test_torch_moving_average_observer_updates_in_float32_as_torch_does():
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=64).astype(np.float32) * k for k in (1, 4, 2, 8)]
    obs = MovingAverageMinMaxObserver("int8", symmetric=True, convention="torch")
    lo, hi = F(batches[0].min()), F(batches[0].max())
    for b in batches:
        obs.observe(b)
    for b in batches[1:]:  # min_val + averaging_constant * (min_cur − min_val), float32
        lo = F(lo + F(F(0.01) * F(F(b.min()) - lo)))
        hi = F(hi + F(F(0.01) * F(F(b.max()) - hi)))
    s, z = obs.qparams()
    assert float(s) == torch_qparams([lo, hi], -128, 127, True)[0] and int(z) == 0
    x = batches[-1]
    want = [torch_fake_quant(v, F(s), 0, -128, 127) for v in x]
    assert obs.fake_quantize(x).tolist() == want

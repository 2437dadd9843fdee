"""Observers: PyTorch's formulas, clipping searches, static vs dynamic quantization."""

import numpy as np
import pytest

from tinyquant.quant.activations import fake_quantize_activations, quantize_activations
from tinyquant.quant.affine import fake_quantize
from tinyquant.quant.granularity import per_tensor
from tinyquant.quant.observers import (
    OBSERVERS,
    KLObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
)

RNG = np.random.default_rng(0)


def test_moving_average_follows_pytorch_update_rule():
    batches = [RNG.standard_normal(100).astype(np.float32) * (i + 1) for i in range(5)]
    obs = MovingAverageMinMaxObserver()
    lo, hi = batches[0].min(), batches[0].max()
    for b in batches:
        obs.observe(b)
    for b in batches[1:]:
        lo = lo + np.float32(0.01) * (b.min() - lo)
        hi = hi + np.float32(0.01) * (b.max() - hi)
    assert obs.range() == (lo, hi)


def test_per_channel_minmax_keeps_one_range_per_feature():
    x = RNG.standard_normal((3, 10, 4)).astype(np.float32)
    obs = MinMaxObserver(axis=-1).observe(x)
    np.testing.assert_array_equal(obs.range()[1], x.reshape(-1, 4).max(axis=0))
    assert obs.qparams()[0].shape == (4,)


def test_static_minmax_fake_quantize_equals_per_tensor_fake_quantize_on_its_calibration_data():
    x = RNG.standard_normal((8, 16)).astype(np.float32)
    obs = MinMaxObserver("int8").observe(x)
    np.testing.assert_array_equal(
        obs.fake_quantize(x), fake_quantize(x, "int8", per_tensor(x.shape))
    )


def test_percentile_clips_a_single_outlier():
    x = np.concatenate([RNG.standard_normal(100_000), [1000.0]]).astype(np.float32)
    lo, hi = PercentileObserver(percentile=99.99).observe(x).range()
    assert 3 < hi < 10


def test_mse_observer_beats_minmax_on_heavy_tailed_data():
    x = RNG.standard_t(2, size=50_000).astype(np.float32)
    obs = MSEObserver("int4").observe(x)
    obs.range()
    assert obs.error(obs.ratio) < 0.8 * obs.error(1.0)


def test_kl_threshold_of_a_gaussian_lies_between_2_and_6_sigma():
    # Migacz 2017 reports entropy thresholds of a few sigma for Gaussian-like activations
    x = RNG.standard_normal(200_000).astype(np.float32)
    t = KLObserver("int8").observe(x).range()[1]
    assert 2.0 < t < 6.0


def test_kl_observer_of_uniform_data_keeps_the_whole_range():
    x = RNG.uniform(-1, 1, 200_000).astype(np.float32)
    t = KLObserver("int8").observe(x).range()[1]
    assert t > 0.95


def test_dynamic_per_token_scales_come_from_each_row():
    x = RNG.standard_normal((5, 32)).astype(np.float32) * np.arange(1, 6, dtype=np.float32)[:, None]
    codes, scale = quantize_activations(x, "per_token")
    np.testing.assert_array_equal(scale, (np.abs(x).max(1) / np.float32(127)).astype(np.float32))
    assert np.abs(codes).max(axis=1).tolist() == [127] * 5


def test_dynamic_per_token_error_is_below_static_per_tensor_error_when_rows_differ_in_scale():
    x = RNG.standard_normal((64, 32)).astype(np.float32) * np.exp(
        RNG.uniform(-3, 3, (64, 1))
    ).astype(np.float32)
    static = MinMaxObserver("int8").observe(x).fake_quantize(x)
    dynamic = fake_quantize_activations(x, "per_token")
    assert np.sum((x - dynamic) ** 2) < np.sum((x - static) ** 2)


def test_observer_without_data_raises():
    with pytest.raises(ValueError, match="observed nothing"):
        MinMaxObserver().qparams()


@pytest.mark.parametrize("name", list(OBSERVERS))
def test_every_observer_accepts_the_same_protocol(name):
    obs = OBSERVERS[name]("int8")
    obs.observe(RNG.standard_normal((4, 8)).astype(np.float32))
    scale, zero = obs.qparams()
    assert np.all(scale > 0)
    assert obs.fake_quantize(np.zeros((2, 8), np.float32)).shape == (2, 8)

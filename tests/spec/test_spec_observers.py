"""Observers' specification: ranges nest, the clip search never loses to min-max."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from spec_strategies import tensors

from tinyquant.quant import MinMaxObserver, MSEObserver, PercentileObserver


@given(tensors(), st.floats(50, 100), st.booleans())
def test_the_percentile_range_lies_inside_the_minmax_range(xg, p, sym):
    x, _ = xg
    lo_p, hi_p = PercentileObserver(percentile=p, symmetric=sym).observe(x).range()
    lo_m, hi_m = MinMaxObserver(symmetric=sym).observe(x).range()
    if sym:
        assert hi_p <= max(abs(lo_m), abs(hi_m))
    else:
        assert lo_m <= lo_p <= hi_p <= hi_m


@given(
    tensors(), st.sampled_from([("int8", True), ("int4", True), ("uint4", False), ("int3", True)])
)
def test_the_mse_observers_error_on_its_calibration_data_is_at_most_minmaxs(xg, fs):
    x, _ = xg
    fmt, sym = fs
    x = np.clip(x, -1e15, 1e15)  # squared errors stay finite in float64
    mse = MSEObserver(fmt, symmetric=sym, steps=20).observe(x)
    mm = MinMaxObserver(fmt, symmetric=sym).observe(x)
    err = lambda obs: float(np.sum((x.astype(np.float64) - obs.fake_quantize(x)) ** 2))  # noqa: E731
    assert err(mse) <= err(mm)


@given(st.lists(tensors(), min_size=1, max_size=4))
def test_running_minmax_equals_minmax_of_everything_seen(xs):
    obs = MinMaxObserver(symmetric=False)
    for x, _ in xs:
        obs.observe(x)
    allx = np.concatenate([x.reshape(-1) for x, _ in xs])
    assert obs.range() == (allx.min(), allx.max())

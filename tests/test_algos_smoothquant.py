"""SmoothQuant: the scale formula on hand numbers and its errors. Properties: tests/spec."""

import numpy as np
import pytest

from tinyquant.algos.smoothquant import smooth_scales


def test_scales_follow_the_formula_with_the_max_over_all_fed_weights():
    act = np.array([4.0, 9.0])
    w1, w2 = np.array([[1.0, -2.0]]), np.array([[-3.0, 1.0]])
    s = smooth_scales(act, [w1, w2], alpha=0.5)
    np.testing.assert_allclose(s, [2.0 / np.sqrt(3.0), 3.0 / np.sqrt(2.0)])


def test_alpha_outside_zero_one_is_a_clear_error():
    with pytest.raises(ValueError, match="alpha"):
        smooth_scales(np.ones(2), [np.ones((1, 2))], 1.5)

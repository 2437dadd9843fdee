"""AWQ: the search's grid. The algorithm's properties are in tests/spec/test_spec_awq.py."""

import numpy as np

from tinyquant.algos.awq import ALPHAS, awq_fake_quantize, search_scale


def test_the_search_tries_alpha_zero_to_one_in_steps_of_a_twentieth():
    rng = np.random.default_rng(1)
    x, W = rng.normal(size=(64, 16)), rng.normal(size=(8, 16))
    r = search_scale(np.abs(x).mean(0), [W], lambda ws: x @ ws[0].T,
                     lambda w: awq_fake_quantize(w, 3, None))  # fmt: skip
    np.testing.assert_allclose(ALPHAS, np.arange(21) / 20)
    assert len(r.losses) == len(ALPHAS) and r.alpha in ALPHAS

"""LLM.int8(): the model runs with it, bad thresholds are errors. Properties: tests/spec."""

import numpy as np
import pytest

from tinyquant.linears import Int8OutlierLinear
from tinyquant.llm.model import Config, forward, init_params


def test_the_model_runs_with_int8_outlier_linears_in_its_params():
    cfg = Config(d_model=64, n_layers=2, n_heads=2, d_ff=128, context=32)
    params = init_params(cfg, seed=0)
    q = {
        k: Int8OutlierLinear.from_weight(v) if k.startswith("blk.") and v.ndim == 2 else v
        for k, v in params.items()
    }
    toks = np.random.default_rng(0).integers(0, 256, size=(1, 16))
    np.testing.assert_allclose(forward(q, toks, cfg), forward(params, toks, cfg), atol=2e-2)


def test_nonpositive_threshold_is_a_clear_error():
    with pytest.raises(ValueError, match="threshold"):
        Int8OutlierLinear.from_weight(np.ones((2, 2), np.float32), threshold=0.0)

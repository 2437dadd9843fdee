"""The sensitivity sweep (tinyquant.sensitivity): deterministic, its bits are the bits the model
counts, its identities hold, and the committed sweep is what the code measures."""

from pathlib import Path

import numpy as np
import pytest

from tinyquant.llm.checkpoint import load_checkpoint
from tinyquant.llm.model import Config, init_params
from tinyquant.qmodel import quantize_model
from tinyquant.sensitivity import (
    SCHEMES,
    Sensitivity,
    Sweep,
    SweepConfig,
    spearman,
    sweep,
    sweep_cached,
)

ROOT = Path(__file__).parent.parent
COMMITTED = ROOT / "notebooks" / "figures" / "sensitivity.json"
TINY = SweepConfig(schemes=("w2-rtn", "w3-gptq", "w4-rtn"),
                   layers=("blk.0.attn_v.weight", "blk.1.ffn_down.weight"),
                   calib_windows=4, calib_length=32, kl_windows=2, fisher_windows=2)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    cfg = Config.tiny()
    return init_params(cfg, seed=0), cfg


def test_sensitivity_is_deterministic(tiny):
    a, b = sweep(*tiny, TINY), sweep(*tiny, TINY)
    for k in ("bits", "kl", "hessian", "fisher", "sqnr"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.key == b.key


def test_a_sweep_round_trips_through_its_json_cache(tiny, tmp_path):
    path = tmp_path / "sweep.json"
    first, cached = sweep_cached(*tiny, TINY, path)
    again, hit = sweep_cached(*tiny, TINY, path)
    assert (cached, hit) == (False, True)
    assert np.array_equal(first.kl, again.kl) and first.layers == again.layers
    other, hit = sweep_cached(*tiny, SweepConfig(**{**TINY.__dict__, "kl_windows": 1}), path)
    assert not hit  # another setting is another key: re-measured


def test_a_layer_quantized_together_with_nothing_else_costs_its_single_layer_kl(tiny):
    sw = Sweep(*tiny, TINY)
    s = sweep(*tiny, TINY)
    assert sw.measure_together({"blk.1.ffn_down.weight": "w2-rtn"}) == s.kl[1, 0]
    assert sw.kl_of({"blk.0.attn_v.weight": tiny[0]["blk.0.attn_v.weight"]}) == 0.0


def test_a_candidates_bits_are_what_bits_per_weight_counts_for_the_uniform_recipe():
    params, cfg, _ = load_checkpoint(None)
    s = Sensitivity.from_json(COMMITTED.read_text())
    for name in ("w2-rtn", "w4-rtn-g64", "w8-rtn"):
        k = s.schemes.index(name)
        q = quantize_model(params, cfg, _uniform(name))
        assert q.bits_per_weight == s.bits_per_weight([k] * len(s.layers))


def _uniform(scheme):
    from tinyquant.recipe import Recipe

    return Recipe(scheme, (SCHEMES[scheme],))


def test_the_committed_sweep_is_what_the_code_measures_on_a_subset():
    params, cfg, _ = load_checkpoint(None)
    s = Sensitivity.from_json(COMMITTED.read_text())
    layers = ("blk.0.ffn_down.weight", "blk.3.attn_v.weight")
    schemes = ("w2-rtn", "w4-gptq", "w2-gptq-hadamard")
    sub = SweepConfig(**{**s.config, "layers": layers, "schemes": schemes})
    fresh = sweep(params, cfg, sub)
    for li, layer in enumerate(layers):
        for si, scheme in enumerate(schemes):
            i, j = s.layers.index(layer), s.schemes.index(scheme)
            assert fresh.bits[li, si] == s.bits[i, j]
            for k in ("kl", "hessian", "fisher", "sqnr"):
                assert getattr(fresh, k)[li, si] == pytest.approx(getattr(s, k)[i, j], rel=1e-4)


def test_spearman_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 6, 30), rng.normal(size=30)  # ties in a
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_an_unknown_scheme_or_layer_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="unknown scheme"):
        SweepConfig(schemes=("w5-magic",))
    with pytest.raises(ValueError, match="unknown layer"):
        Sweep(*tiny, SweepConfig(layers=("blk.9.attn_q.weight",), calib_windows=2,
                                 calib_length=16, kl_windows=1, fisher_windows=1))  # fmt: skip

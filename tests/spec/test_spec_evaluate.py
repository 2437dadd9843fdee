"""The evaluator's specification: paired bootstrap intervals that are exact for identical
models, cover a known shift, and a sample that spans every validation play and nothing else."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyquant.bootstrap import percent_change_interval, ratio_interval, resample_indices
from tinyquant.evaluate import EvalSample, Evaluator, paired_difference
from tinyquant.llm.data import eval_windows, train_bytes, val_bytes, val_play_spans
from tinyquant.llm.model import Config, init_params


@given(st.integers(2, 300), st.integers(0, 2**16))
def test_an_identical_model_has_the_interval_exactly_zero(W, seed):
    idx = resample_indices(W, 200, seed)
    n = np.full(W, 256.0)
    assert percent_change_interval(np.zeros(W), n, idx) == (0.0, 0.0)
    assert ratio_interval(np.zeros(W), n, idx) == (0.0, 0.0)


@given(st.integers(2, 100), st.integers(0, 2**16))
def test_the_bootstrap_is_deterministic_for_a_seed(W, seed):
    assert np.array_equal(resample_indices(W, 50, seed), resample_indices(W, 50, seed))


def test_the_95_percent_interval_covers_a_known_shift_in_at_least_90_of_100_trials():
    # synthetic per-window NLL differences d_w ~ N(μ, σ), 256 positions per window: the true
    # Δppl is 100·(exp(μ/256) − 1)
    mu, sigma, W = 0.8, 4.0, 256
    truth = 100 * np.expm1(mu / 256)
    covered = 0
    for trial in range(100):
        d = np.random.default_rng(1000 + trial).normal(mu, sigma, W)
        lo, hi = percent_change_interval(d, np.full(W, 256.0), resample_indices(W, 1000, trial))
        covered += lo <= truth <= hi
    assert covered >= 90, covered


@settings(max_examples=25)
@given(st.integers(1, 1877))
def test_the_sample_holds_windows_from_every_validation_play_and_none_elsewhere(n):
    wins = eval_windows(n)
    val = val_bytes()
    assert len(wins) == n and all(s + length < len(val) for s, length in wins)
    starts = [s for s, _ in wins]
    assert starts == sorted(set(starts))  # distinct, ordered, non-overlapping (step ≥ 256)
    assert all(b - a >= 256 for a, b in zip(starts, starts[1:], strict=False))
    if n >= 8:  # spread evenly: every play holds a window
        for lo, hi in val_play_spans().values():
            assert any(lo <= s < hi for s in starts)


def test_no_evaluation_window_is_text_of_a_training_play():
    train = train_bytes().tobytes()
    val = val_bytes()
    for s, n in eval_windows(64):
        assert val[s : s + n + 1].tobytes() not in train


def test_the_full_sample_predicts_every_validation_byte_after_the_first_once():
    wins = eval_windows(None)
    assert sum(n for _, n in wins) == len(val_bytes()) - 1
    assert all(a + n == b for (a, n), (b, _) in zip(wins, wins[1:], strict=False))


def test_a_recipe_compared_with_itself_differs_by_exactly_zero():
    cfg = Config.tiny()
    p, q = init_params(cfg, seed=0), init_params(cfg, seed=1)
    ev = Evaluator(p, cfg, EvalSample(n_windows=16, length=32, n_boot=100))
    r = ev.evaluate(q)
    d = paired_difference(r, r)
    assert (d.ppl_ratio_pct, d.ppl_ratio_ci95, d.kl_diff, d.kl_diff_ci95) == (0.0, (0.0, 0.0),
                                                                              0.0, (0.0, 0.0))  # fmt: skip
    assert not d.resolved
    assert r.delta_ppl_ci95[0] <= r.delta_ppl_pct <= r.delta_ppl_ci95[1]
    assert r.kl_ci95[0] <= r.kl <= r.kl_ci95[1] and r.kl > 0

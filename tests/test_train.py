"""Training and evaluation: schedule, determinism, learning, and the evaluation metric."""

import math

import numpy as np
import pytest

from tinyquant.llm import data as D
from tinyquant.llm.backward import cross_entropy_fwd
from tinyquant.llm.model import Config, forward, init_params
from tinyquant.llm.nll import eval_loss
from tinyquant.llm.train import TrainConfig, lr_at, train

CFG = Config.tiny()


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_min_lr():
    tc = TrainConfig(steps=200, lr=1e-2, min_lr=1e-3, warmup=20)
    lrs = np.array([lr_at(s, tc) for s in range(tc.steps + 1)])
    assert np.allclose(lrs[:20], 1e-2 * np.arange(1, 21) / 20)
    assert np.all(np.diff(lrs[19:]) <= 1e-15)
    assert math.isclose(lrs[-1], 1e-3)


def test_training_with_a_fixed_seed_is_deterministic():
    data = D.train_bytes()[:50_000]
    tc = TrainConfig(steps=4, batch_size=4, warmup=2, eval_every=0, seed=3)
    p1, m1 = train(CFG, tc, data, data[:2000], progress=False)
    p2, m2 = train(CFG, tc, data, data[:2000], progress=False)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert m1["curve"] == m2["curve"]


def test_a_different_seed_gives_different_weights():
    data = D.train_bytes()[:50_000]
    tc = TrainConfig(steps=2, batch_size=2, warmup=1, eval_every=0)
    p1, _ = train(CFG, tc, data, data[:500], progress=False)
    p2, _ = train(
        CFG,
        TrainConfig(steps=2, batch_size=2, warmup=1, eval_every=0, seed=1),
        data,
        data[:500],
        progress=False,
    )
    assert not np.array_equal(p1["output.weight"], p2["output.weight"])


def test_a_short_run_on_a_tiny_config_lowers_the_loss_far_below_ln_256():
    tc = TrainConfig(steps=200, batch_size=16, lr=1e-2, min_lr=1e-3, warmup=20, eval_every=0)
    _, meta = train(CFG, tc, D.train_bytes(), D.val_bytes(), progress=False, final_eval_bytes=8192)
    assert meta["val_loss"] < 3.0 < math.log(256)  # ln 256 = 5.55: a uniform guess


def test_eval_windows_predict_every_byte_after_the_first_exactly_once():
    data = np.arange(1000, dtype=np.int64) % 256
    assert eval_loss(init_params(CFG), CFG, data)["tokens"] == 999
    assert eval_loss(init_params(CFG), CFG, data, max_bytes=100)["tokens"] == 99


def test_eval_loss_matches_a_window_by_window_oracle():
    p = init_params(CFG, seed=1, dtype=np.float64)
    data = D.val_bytes()[:200].astype(np.int64)
    got = eval_loss(p, CFG, data, batch_size=3)
    total, n, T = 0.0, 0, CFG.context
    for s in range(0, len(data) - 1, T):
        x, y = data[s : s + T + 1][:-1], data[s + 1 : s + T + 1]
        logits = forward(p, x, CFG)[0]
        total += cross_entropy_fwd(logits, y)[0] * len(y)
        n += len(y)
    assert n == got["tokens"]
    assert abs(got["val_loss"] - total / n) < 1e-12
    assert math.isclose(got["perplexity"], math.exp(got["val_loss"]))
    assert math.isclose(got["bits_per_byte"], got["val_loss"] / math.log(2))


def test_eval_loss_of_a_model_with_zero_output_weights_is_ln_256():
    p = init_params(CFG)
    p["output.weight"] = np.zeros_like(p["output.weight"])
    r = eval_loss(p, CFG, D.val_bytes()[:300])
    assert abs(r["val_loss"] - math.log(256)) < 1e-6


def test_eval_rejects_data_too_short_to_predict_anything():
    with pytest.raises(ValueError, match="at least 2 bytes"):
        eval_loss(init_params(CFG), CFG, np.zeros(1, dtype=np.uint8))


def matmul_flops(shapes) -> int:
    return sum(2 * int(np.prod(a)) * b[-1] for a, b in shapes)  # a @ b: 2·(rows·inner)·cols


@pytest.mark.parametrize("cfg", [Config.tiny(), Config()], ids=["tiny", "default"])
def test_the_benchmarks_forward_matmuls_are_the_models_linear_and_attention_flops(cfg):
    from tinyquant.bench.train import matmul_shapes
    from tinyquant.llm.model import param_shapes

    B = 3
    N, T, L = B * cfg.context, cfg.context, cfg.n_layers
    linear = sum(o * i for k, (o, i) in ((k, v) for k, v in param_shapes(cfg).items()
                 if len(v) == 2 and k != "token_embd.weight"))  # fmt: skip
    expected = 2 * N * linear + L * 4 * B * T * T * cfg.d_model  # + q·kᵀ and P·v per layer
    assert matmul_flops(matmul_shapes(cfg, B, backward=False)) == expected


@pytest.mark.parametrize("cfg", [Config.tiny(), Config()], ids=["tiny", "default"])
def test_the_benchmarks_training_step_matmuls_cost_three_forwards(cfg):
    # backward of every matmul a @ b is two matmuls of the same size (∂a and ∂b)
    from tinyquant.bench.train import matmul_shapes

    fwd = matmul_flops(matmul_shapes(cfg, 2, backward=False))
    assert matmul_flops(matmul_shapes(cfg, 2, backward=True)) == 3 * fwd


def test_the_training_benchmark_runs_the_fp32_rows_and_the_qat_step():
    from tinyquant.bench.train import run

    rows = run(quick=True)
    names = [r["name"] for r in rows]
    assert names[:2] == ["forward", "forward+backward+AdamW"]
    assert len(names) == 3 and names[2].startswith("QAT step")
    assert all(r["seconds"] > 0 and r["baseline_seconds"] > 0 for r in rows)

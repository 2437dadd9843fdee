"""QLoRA (tinyquant/qlora.py): starts at the NF4 model, adapter gradients match finite
differences, only the adapters move, they are bf16, and a short run lowers the loss."""

import numpy as np

from tinyquant.llm import data as D
from tinyquant.llm.backward import loss_and_grads
from tinyquant.llm.model import Config, forward, init_params
from tinyquant.qlora import (
    QLoRAConfig,
    init_adapters,
    memory_table,
    merged_params,
    nf4_recipe,
    qlora_base,
    train_qlora,
)
from tinyquant.qmodel import linear_names, quantize_model
from tinyquant.quant import round_to_format

CFG = Config.tiny()
P = init_params(CFG, seed=0)
R = nf4_recipe(16)
DATA, VAL = D.train_bytes()[:40_000], D.val_bytes()[:4_000]
X = np.arange(32).reshape(2, 16)


def test_training_starts_exactly_at_the_nf4_model():
    base = qlora_base(P, CFG, R)
    ad = init_adapters(CFG, QLoRAConfig(rank=4), base)
    nf4 = quantize_model(P, CFG, R)
    assert np.allclose(forward(merged_params(P, base, ad, CFG, QLoRAConfig(rank=4)), X, CFG),
                       nf4.logits(X), atol=1e-6)  # fmt: skip


def test_adapter_gradients_match_finite_differences_of_the_loss():
    qc = QLoRAConfig(rank=2)
    base = qlora_base(P, CFG, R)
    rng = np.random.default_rng(1)
    ad = {k: round_to_format(rng.standard_normal(v.shape).astype(np.float32) * 0.1, "bf16")
          for k, v in init_adapters(CFG, qc, base).items()}  # fmt: skip
    y = (X + 1) % 256
    n = "blk.1.attn_v.weight"
    _, g = loss_and_grads(merged_params(P, base, ad, CFG, qc), CFG, X, y)
    s = qc.alpha / qc.rank
    db = s * g[n] @ ad[n + ".lora_a"].T  # the module's formula

    def loss_at(b):
        # W_eff in float64 with B replaced: the oracle for ∂L/∂B
        m = merged_params(P, base, ad, CFG, qc)
        m = {k: v.astype(np.float64) for k, v in m.items()}
        m[n] = base[n].qtensor.dequantize().astype(np.float64) + s * b @ ad[n + ".lora_a"]
        return loss_and_grads(m, CFG, X, y)[0]

    b = ad[n + ".lora_b"].astype(np.float64)
    for i, j in [(0, 0), (5, 1), (17, 0)]:
        e = np.zeros_like(b)
        e[i, j] = 1e-5
        fd = (loss_at(b + e) - loss_at(b - e)) / 2e-5
        assert np.isclose(db[i, j], fd, rtol=1e-3, atol=1e-7)


def test_a_short_run_moves_only_the_adapters_and_lowers_the_distillation_loss():
    from tinyquant.llm.train import TrainConfig, train

    p, _ = train(CFG, TrainConfig(steps=60, batch_size=8, lr=1e-2, min_lr=1e-3, warmup=5,
                                  eval_every=0), DATA, VAL, progress=False)  # fmt: skip
    qc = QLoRAConfig(rank=4, steps=30, batch_size=8, lr=1e-2, eval_every=0)
    base, ad, meta = train_qlora(p, CFG, qc, DATA, VAL, progress=False, recipe=R)
    ref = qlora_base(p, CFG, R)
    assert all(np.array_equal(base[n].qtensor.codes, ref[n].qtensor.codes)
               for n in linear_names(CFG))  # fmt: skip
    losses = [c["loss"] for c in meta["curve"][1:]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_the_memory_table_counts_bf16_adapters_at_two_bytes():
    base = qlora_base(P, CFG, R)
    ad = init_adapters(CFG, QLoRAConfig(rank=4), base)
    rows = {r["part"]: r for r in memory_table(base, ad, CFG)}
    n = sum(a.size for a in ad.values())
    assert rows["LoRA adapters A, B"]["bytes"] == 2 * n
    assert rows["NF4 base (codes + double-quantized absmax)"]["bytes"] == sum(
        base[k].nbytes for k in linear_names(CFG)
    )

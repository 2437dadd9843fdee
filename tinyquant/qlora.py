"""QLoRA: low-rank adapters trained on a frozen NF4 (double-quantized) base model.

    y = x Ŵᵀ + (α/r) · (x Aᵀ) Bᵀ,   Ŵ = NF4 dequantized (frozen),  A (r, I), B (O, r) in bf16

Because y is linear in the effective weight W_eff = Ŵ + (α/r)·B A, the model's hand-written
backward already gives ∂L/∂W_eff (the Linear's dW = dyᵀ x), and the adapters' gradients are two
matrix products (Hu et al. 2021, LoRA eq. 3):

    ∂L/∂B = (α/r) · ∂L/∂W_eff Aᵀ          ∂L/∂A = (α/r) · Bᵀ ∂L/∂W_eff

What is trained, in what dtype (Dettmers et al. 2023, §3): the NF4 codes and their
double-quantized absmax stay frozen; A and B are stored in bf16 (rounded by the core's
``round_to_format``) and the forward uses those bf16 values; AdamW keeps an FP32 master copy
and two FP32 moments per adapter value (QLoRA pages these optimizer states to CPU memory).
A starts Gaussian (std 1/√I), B at zero, so training starts exactly at the NF4 model.
Refs: Dettmers et al. 2023 "QLoRA" (NF4, double quantization, adapters on every Linear);
Hu et al. 2021 "LoRA". Shape legend: O out, I in features, r rank.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from tinyquant.llm import data as D
from tinyquant.llm.backward import AdamW, clip_grads, loss_and_grads
from tinyquant.llm.model import Config, forward
from tinyquant.llm.nll import eval_loss, log_softmax
from tinyquant.llm.train import TrainConfig, lr_at
from tinyquant.presets import get_recipe
from tinyquant.qmodel import linear_names, quantize_model
from tinyquant.quant import round_to_format
from tinyquant.recipe import Recipe, Rule, Weights

__all__ = ["QLoRAConfig", "qlora_base", "nf4_recipe", "init_adapters", "merged_params",
           "train_qlora", "memory_table"]  # fmt: skip


@dataclass(frozen=True)
class QLoRAConfig:
    """Hyper-parameters of a QLoRA run."""

    rank: int = 8  # r
    alpha: float = 16.0  # α; the adapter's output is scaled by α / r
    steps: int = 150  # optimizer steps
    batch_size: int = 8  # sequences of `context` bytes per step
    lr: float = 1e-3  # peak learning rate (LoRA's usual order)
    warmup: int = 10  # linear warmup steps
    distill: bool = True  # KL to the FP32 model (the loss to recover) instead of the task loss
    seed: int = 0  # seeds A's initialisation and the batch sampler
    eval_every: int = 50  # steps between validation checks (0 = never)
    eval_bytes: int = 16384  # validation prefix of those checks

    def __post_init__(self) -> None:
        if self.rank < 1 or self.steps < 1 or not self.lr > 0:
            raise ValueError("rank, steps and lr must be > 0")


def qlora_base(params: dict, cfg: Config, recipe: str | Recipe = "nf4") -> dict:
    """The frozen base: the ``nf4`` preset (absmax blocks of 64, double-quantized absmax)."""
    return quantize_model(params, cfg, get_recipe(recipe)).params


def nf4_recipe(group_size: int) -> Recipe:
    """NF4 with double quantization on blocks of ``group_size`` (small models: 16).

    >>> nf4_recipe(16).rules[0].weights.double_quant
    True
    """
    return Recipe(
        f"nf4-g{group_size}", (Rule(("blk.*",), Weights("nf4", group_size, double_quant=True)),)
    )


def init_adapters(cfg: Config, qc: QLoRAConfig, base: dict) -> dict[str, np.ndarray]:
    """FP32 master adapters: ``name.lora_a`` (r, I) ~ N(0, 1/I), ``name.lora_b`` (O, r) = 0.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny(); p = init_params(cfg)
    >>> ad = init_adapters(cfg, QLoRAConfig(rank=4), {n: p[n] for n in linear_names(cfg)})
    >>> ad["blk.0.ffn_down.weight.lora_a"].shape, float(abs(ad["blk.0.ffn_down.weight.lora_b"]).sum())
    ((4, 64), 0.0)
    """  # noqa: E501
    rng = np.random.default_rng(qc.seed)
    out = {}
    for n in linear_names(cfg):
        O, I = _shape(base[n])
        out[n + ".lora_a"] = (rng.standard_normal((qc.rank, I)) / math.sqrt(I)).astype(np.float32)
        out[n + ".lora_b"] = np.zeros((O, qc.rank), np.float32)
    return out


def _shape(w) -> tuple[int, int]:
    return w.shape if isinstance(w, np.ndarray) else (w.out_features, w.in_features)


def _dense(w) -> np.ndarray:
    return w if isinstance(w, np.ndarray) else w.qtensor.dequantize()


def merged_params(params: dict, base: dict, adapters: dict, cfg: Config, qc: QLoRAConfig) -> dict:
    """Params whose block Linears are W_eff = Ŵ_nf4 + (α/r) · bf16(B) bf16(A) (float32)."""
    s = np.float32(qc.alpha / qc.rank)
    out = dict(params)
    for n in linear_names(cfg):
        a = round_to_format(adapters[n + ".lora_a"], "bf16")  # (r, I)
        b = round_to_format(adapters[n + ".lora_b"], "bf16")  # (O, r)
        out[n] = (_dense(base[n]) + s * (b @ a)).astype(np.float32)  # (O, I)
    return out


def train_qlora(
    params: dict,
    cfg: Config,
    qc: QLoRAConfig,
    train_data=None,
    val_data=None,
    progress: bool = True,
    recipe: str | Recipe = "nf4",
) -> tuple[dict, dict, dict]:
    """Train adapters on the frozen NF4 base; return (base, adapters (FP32 master), metadata).

    1) W_eff per Linear, 2) the model's backward to ∂L/∂W_eff, 3) LoRA's two products,
    4) AdamW on the FP32 masters (the next forward rounds them to bf16).
    """
    from tqdm import tqdm

    train_data = D.train_bytes() if train_data is None else train_data
    val_data = D.val_bytes() if val_data is None else val_data
    base = qlora_base(params, cfg, recipe)
    dense = {n: _dense(base[n]) for n in linear_names(cfg)}  # Ŵ, dequantized once (frozen)
    ad = init_adapters(cfg, qc, base)
    opt = AdamW(weight_decay=0.0)
    tc = TrainConfig(steps=qc.steps, batch_size=qc.batch_size, lr=qc.lr, min_lr=qc.lr / 10,
                     warmup=min(qc.warmup, qc.steps))  # fmt: skip
    stream = D.batches(train_data, qc.batch_size, cfg.context, seed=qc.seed + 1)
    s = np.float32(qc.alpha / qc.rank)
    ref = eval_loss(params, cfg, val_data, max_bytes=qc.eval_bytes)["val_loss"]
    v0 = eval_loss(merged_params(params, dense, ad, cfg, qc), cfg, val_data,
                   max_bytes=qc.eval_bytes)["val_loss"]  # fmt: skip
    curve = [{"step": 0, "val_dppl_pct": round(100 * math.expm1(v0 - ref), 3)}]
    t0 = time.perf_counter()
    for step in tqdm(range(qc.steps), disable=not progress, unit="step", mininterval=2.0):
        x, y = next(stream)
        teacher = log_softmax(forward(params, x, cfg)) if qc.distill else None
        fq = merged_params(params, dense, ad, cfg, qc)  # 1)
        loss, g = loss_and_grads(fq, cfg, x, y, teacher)  # 2)
        grads = {}
        for n in linear_names(cfg):  # 3)
            a = round_to_format(ad[n + ".lora_a"], "bf16")
            b = round_to_format(ad[n + ".lora_b"], "bf16")
            grads[n + ".lora_b"] = s * (g[n] @ a.T)  # (O, r)
            grads[n + ".lora_a"] = s * (b.T @ g[n])  # (r, I)
        clip_grads(grads, 1.0)
        opt.step(ad, grads, lr_at(step, tc))  # 4)
        point = {"step": step + 1, "loss": round(float(loss), 5)}
        if qc.eval_every and ((step + 1) % qc.eval_every == 0 or step + 1 == qc.steps):
            v = eval_loss(merged_params(params, dense, ad, cfg, qc), cfg, val_data,
                          max_bytes=qc.eval_bytes)["val_loss"]  # fmt: skip
            point["val_dppl_pct"] = round(100 * math.expm1(v - ref), 3)
        curve.append(point)
    meta = {"qlora_config": asdict(qc), "curve": curve,
            "train_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return base, ad, meta


def memory_table(base: dict, adapters: dict, cfg: Config) -> list[dict]:
    """What each part is, whether it trains, its dtype and its bytes.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny(); p = init_params(cfg); b = qlora_base(p, cfg, nf4_recipe(16))
    >>> rows = memory_table(b, init_adapters(cfg, QLoRAConfig(rank=4), b), cfg)
    >>> [(r["part"], r["trained"]) for r in rows][:2]
    [('NF4 base (codes + double-quantized absmax)', False), ('LoRA adapters A, B', True)]
    """
    names = linear_names(cfg)
    n_ad = sum(a.size for a in adapters.values())
    n_w = sum(int(np.prod(_shape(base[n]))) for n in names)
    return [
        {"part": "NF4 base (codes + double-quantized absmax)", "trained": False,
         "dtype": "nf4 + int8 absmax", "values": n_w, "bytes": sum(base[n].nbytes for n in names)},
        {"part": "LoRA adapters A, B", "trained": True, "dtype": "bf16", "values": n_ad,
         "bytes": 2 * n_ad},
        {"part": "FP32 master copy of the adapters", "trained": True, "dtype": "float32",
         "values": n_ad, "bytes": 4 * n_ad},
        {"part": "AdamW moments m, v", "trained": False, "dtype": "float32", "values": 2 * n_ad,
         "bytes": 8 * n_ad},
        {"part": "the same Linears in FP32 (for scale)", "trained": False, "dtype": "float32",
         "values": n_w, "bytes": 4 * n_w},
    ]  # fmt: skip

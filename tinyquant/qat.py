"""Quantization-aware training: prepare → train → convert (torchao's QAT flow), in NumPy.

    forward   every block Linear uses ŵ = s · (clamp(round(w/s) + z, qmin, qmax) − z)
              (the recipe's grid, groups along the input dim; ``quant.qat_ops``) — or, for
              ternary, ŵ = γ · clamp(round(w/γ), −1, 1), γ = mean |w| per row (BitNet b1.58)
    backward  the hand-written model backward gives ∂L/∂ŵ; the clipped STE turns it into ∂L/∂w,
              LSQ into ∂L/∂s and ∂L/∂z (Esser et al. 2020)
    loss      the task loss (next-byte cross-entropy), or with ``distill`` the KL to the frozen
              FP32 model's next-byte distribution (LLM-QAT, Liu et al. 2023)
    convert   codes = quantize(w, s, z) with the trained w and the stored (float16) s: the same
              QuantLinear PTQ produces, whose fake path reproduces the trained forward bit for bit

What is trained: the block Linears' latent FP32 weights and, with ``learn_scale``, one step size
(and zero point) per group; the embedding, norms and head stay the FP32 model's, as in PTQ. The
optimiser is the trainer's AdamW (no decay on the grid) with warmup + cosine; step sizes are
updated in log space (θ = log s, ∂L/∂θ = s · ∂L/∂s) so one learning rate moves every group's
scale by the same relative amount — Adam's normalisation makes LSQ's gradient scale a no-op.
The FP32 *control* is the same loop with no quantization (``scheme="fp32"``): fine-tuning alone
lowers the loss, so a QAT figure is honest only against it (or, with distillation, the teacher).
Refs: Jacob et al. 2018; Bengio et al. 2013; Esser et al. 2020; Liu et al. 2023; Ma et al. 2024.
Shape legend: O out features, I in features, g group size, G = I / g, B batch, T context, V vocab.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from tinyquant.linears import QuantLinear
from tinyquant.llm import data as D
from tinyquant.llm.backward import AdamW, clip_grads, loss_and_grads
from tinyquant.llm.model import Config, forward
from tinyquant.llm.nll import eval_loss, log_softmax
from tinyquant.llm.train import TrainConfig, lr_at
from tinyquant.methods import quantize_rtn
from tinyquant.presets import PRESETS
from tinyquant.qmodel import Model, linear_names
from tinyquant.quant import QTensor, get_format, pack, quantize, to_unsigned
from tinyquant.quant.qat_ops import (
    absmean_scale,
    fake_quant_fwd,
    lsq_bwd,
    stored_scale,
    ternary_bwd,
    ternary_fwd,
)
from tinyquant.recipe import QAT, Recipe, Rule, Weights

__all__ = ["QAT_SCHEMES", "QATConfig", "QATState", "qat_scheme", "prepare", "fake_params",
           "qat_loss_and_grads", "train_qat", "convert"]  # fmt: skip

ALL_BLOCKS = ("blk.*",)  # every block Linear, as the presets target

# the grids QAT trains, named by their PTQ twins (the same Weights as w4-rtn-g128, w3-rtn, …)
QAT_SCHEMES: dict[str, Weights] = {
    "w4-g128": Weights("uint4", 128),
    "w3": Weights("uint3"),
    "w3-g128": Weights("uint3", 128),
    "w2-g64": Weights("uint2", 64),
    "ternary": Weights("ternary", symmetric=True),  # per row, absmean (BitNet b1.58)
}


def qat_scheme(name: str) -> Weights | None:
    """The Weights a QAT run trains: a QAT_SCHEMES name, a preset with an integer grid, or
    ``"fp32"`` (None: the FP32 control).

    >>> qat_scheme("w2-g64"), qat_scheme("w3-gptq").fmt, qat_scheme("fp32")
    (Weights(fmt='uint2', group_size=64, per_tensor=False, symmetric=False, scale_dtype='float16', double_quant=False), 'uint3', None)
    """  # noqa: E501
    if name == "fp32":
        return None
    if name in QAT_SCHEMES:
        return QAT_SCHEMES[name]
    if name in PRESETS and len(PRESETS[name].rules) == 1:
        w = PRESETS[name].rules[0].weights
        if not w.is_cast and not w.is_mx and get_format(w.fmt).kind == "int" and not w.per_tensor:
            return w
        raise ValueError(f"recipe {name!r} stores {w.fmt} without a trainable uniform grid; "
                         f"QAT trains integer grids: {', '.join(QAT_SCHEMES)}")  # fmt: skip
    known = ", ".join(QAT_SCHEMES)
    raise ValueError(f"unknown QAT recipe {name!r}; choose from: fp32 (the control), {known}, "
                     "or an integer preset such as w4-rtn-g128")  # fmt: skip


@dataclass(frozen=True)
class QATConfig:
    """Hyper-parameters of a QAT (or control) run."""

    steps: int = 200  # optimizer steps
    batch_size: int = 8  # sequences of `context` bytes per step
    lr: float = 2e-4  # peak learning rate of the latent weights (fine-tuning, not pretraining)
    scale_lr: float = 2e-3  # peak learning rate of log s (a relative change per step)
    warmup: int = 10  # linear warmup steps
    clip: float = 1.0  # global gradient-norm clip (weights and grid together)
    distill: bool = False  # KL to the FP32 model's logits instead of the task loss
    learn_scale: bool = True  # LSQ: train step sizes and zero points (False: grid frozen)
    seed: int = 0  # seeds the batch sampler
    eval_every: int = 50  # steps between validation Δppl checks (0 = never)
    eval_bytes: int = 16384  # the validation prefix of those checks

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for k in ("lr", "scale_lr"):
            v = getattr(self, k)
            if not (isinstance(v, int | float) and 0 < v < math.inf):
                raise ValueError(f"{k} must be a finite number > 0, got {v!r}")

    def schedule(self, lr: float) -> TrainConfig:
        """The trainer's warmup + cosine schedule (to lr / 10) at peak ``lr``."""
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=lr, min_lr=lr / 10,
                           warmup=min(self.warmup, self.steps), clip=self.clip)  # fmt: skip


@dataclass
class QATState:
    """The trainable grid of each fake-quantized Linear: name → (log s, z) arrays (G-shaped)."""

    weights: Weights | None  # None: the FP32 control
    log_scale: dict[str, np.ndarray]  # (O, G) float32, θ = log s
    zero: dict[str, np.ndarray]  # (O, G) float32 (rounded in the forward); empty if symmetric

    def block_of(self, w: np.ndarray) -> tuple[int, int]:
        return (1, self.weights.group_size or w.shape[1])

    @property
    def ternary(self) -> bool:
        return self.weights is not None and self.weights.fmt == "ternary"


def prepare(params: dict, cfg: Config, scheme: str | Weights | None) -> tuple[dict, QATState]:
    """(latent params, grid state): a copy of the FP32 params and each block Linear's grid,
    initialised by round-to-nearest (PTQ's min-max grid with float16 scales).

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny(); p = init_params(cfg)
    >>> lat, st = prepare(p, cfg, Weights("uint2", 16))
    >>> st.log_scale["blk.0.attn_q.weight"].shape, len(st.log_scale)   # (O, I/16), 2 blocks × 7
    ((32, 2), 14)
    """
    w = qat_scheme(scheme) if isinstance(scheme, str) else scheme
    latent = {k: v.astype(np.float32, copy=True) for k, v in params.items()}
    st = QATState(w, {}, {})
    if w is None or st.ternary:  # the control; BitNet recomputes γ from w each step
        return latent, st
    rule = Rule(ALL_BLOCKS, w)
    for name in linear_names(cfg):
        qt = quantize_rtn(latent[name], rule)  # PTQ's grid: the starting point
        st.log_scale[name] = np.log(qt.scale_values()).astype(np.float32)
        if qt.zero is not None:
            st.zero[name] = qt.zero.astype(np.float32)
    return latent, st


def _fwd(w: np.ndarray, name: str, st: QATState) -> tuple[np.ndarray, tuple]:
    block = st.block_of(w)
    if st.ternary:
        return ternary_fwd(w, block, st.weights.scale_dtype)
    s = np.exp(st.log_scale[name])
    return fake_quant_fwd(w, s, st.zero.get(name), st.weights.fmt, block, st.weights.scale_dtype)


def fake_params(latent: dict, cfg: Config, st: QATState) -> dict:
    """The params the trained forward uses: each block Linear fake-quantized on its grid."""
    if st.weights is None:
        return latent
    return latent | {n: _fwd(latent[n], n, st)[0] for n in linear_names(cfg)}


def qat_loss_and_grads(
    latent: dict,
    cfg: Config,
    st: QATState,
    x: np.ndarray,
    y: np.ndarray,
    teacher_logp: np.ndarray | None = None,
) -> tuple[float, dict, dict]:
    """(loss, ∂L/∂w of the block Linears, ∂L/∂(log s, z)) of one batch.

    1) fake-quantize each Linear, 2) the model's hand-written backward to ∂L/∂ŵ,
    3) clipped STE / LSQ (or BitNet's STE) back to the latent weight and the grid.
    """
    names = linear_names(cfg)
    fq, caches = dict(latent), {}
    if st.weights is not None:  # 1)
        for n in names:
            fq[n], caches[n] = _fwd(latent[n], n, st)
    loss, g = loss_and_grads(fq, cfg, x, y, teacher_logp)  # 2)
    grads, qgrads = {n: g[n] for n in names}, {}
    for n in caches:  # 3)
        if st.ternary:
            grads[n] = ternary_bwd(g[n], caches[n])
            continue
        grads[n], ds, dz = lsq_bwd(g[n], caches[n])
        qgrads["s:" + n] = ds * np.exp(st.log_scale[n])  # ∂L/∂θ = s ∂L/∂s
        if n in st.zero:
            qgrads["z:" + n] = dz
    return loss, grads, qgrads


def _val_loss(latent: dict, cfg: Config, st: QATState, val: np.ndarray, n: int) -> float:
    return eval_loss(fake_params(latent, cfg, st), cfg, val, max_bytes=n)["val_loss"]


def train_qat(
    params: dict,
    cfg: Config,
    scheme: str | Weights | None,
    qc: QATConfig,
    train_data: np.ndarray | None = None,
    val_data: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[dict, QATState, dict]:
    """Run QAT (or the FP32 control, ``scheme="fp32"``) from ``params``; return
    (latent params, grid state, metadata with the loss curve and timings).

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny(); p = init_params(cfg)
    >>> data = np.frombuffer(b"to be or not to be " * 40, dtype=np.uint8)
    >>> qc = QATConfig(steps=2, batch_size=2, warmup=1, eval_every=0, eval_bytes=64)
    >>> lat, st, meta = train_qat(p, cfg, Weights("uint4", 16), qc, data, data, progress=False)
    >>> len(meta["curve"]), sorted(meta)[:3]
    (3, ['curve', 'fp32_val_loss_prefix', 'qat_config'])
    """
    from tqdm import tqdm

    train_data = D.train_bytes() if train_data is None else train_data
    val_data = D.val_bytes() if val_data is None else val_data
    latent, st = prepare(params, cfg, scheme)
    names = linear_names(cfg)
    opt_w, opt_q = AdamW(weight_decay=0.0), AdamW(weight_decay=0.0)
    tw, tq = qc.schedule(qc.lr), qc.schedule(qc.scale_lr)
    stream = D.batches(train_data, qc.batch_size, cfg.context, seed=qc.seed + 1)
    base = eval_loss(params, cfg, val_data, max_bytes=qc.eval_bytes)["val_loss"]
    start = _val_loss(latent, cfg, st, val_data, qc.eval_bytes)
    curve = [{"step": 0, "val_loss_prefix": round(start, 5)}]
    t0, smooth = time.perf_counter(), None
    bar = tqdm(range(qc.steps), disable=not progress, unit="step", mininterval=2.0)
    for step in bar:
        x, y = next(stream)
        teacher = log_softmax(forward(params, x, cfg)) if qc.distill else None  # (B, T, V)
        loss, grads, qgrads = qat_loss_and_grads(latent, cfg, st, x, y, teacher)
        clip_grads(grads | qgrads, qc.clip)
        opt_w.step(latent, grads, lr_at(step, tw))
        if qc.learn_scale and qgrads:
            qp = {k: (st.log_scale if k[0] == "s" else st.zero)[k[2:]] for k in qgrads}
            opt_q.step(qp, qgrads, lr_at(step, tq))  # in place: the arrays of st
        smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
        tok_s = (step + 1) * qc.batch_size * cfg.context / (time.perf_counter() - t0)
        point = {"step": step + 1, "loss": round(float(loss), 5)}
        if qc.eval_every and ((step + 1) % qc.eval_every == 0 or step + 1 == qc.steps):
            v = _val_loss(latent, cfg, st, val_data, qc.eval_bytes)
            point["val_loss_prefix"] = round(v, 5)
            point["val_dppl_pct"] = round(100 * math.expm1(v - base), 3)
        if st.log_scale:
            point["mean_log_scale"] = round(float(np.mean([st.log_scale[n].mean()
                                                           for n in names])), 5)  # fmt: skip
        curve.append(point)
        last_d = next((c["val_dppl_pct"] for c in reversed(curve) if "val_dppl_pct" in c), None)
        bar.set_postfix(loss=f"{smooth:.4f}", val_dppl=f"{last_d:+.2f}%" if last_d is not None
                        else "-", tok_s=f"{tok_s:.0f}")  # fmt: skip
    seconds = time.perf_counter() - t0
    meta = {"qat_config": asdict(qc), "scheme": "fp32" if st.weights is None else str(scheme),
            "curve": curve, "fp32_val_loss_prefix": round(base, 5),
            "train_seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / qc.steps, 3)}  # fmt: skip
    return latent, st, meta


def convert(
    latent: dict,
    cfg: Config,
    st: QATState,
    params: dict,
    recipe_name: str,
    qc: QATConfig,
    base_sha256: str | None = None,
) -> Model:
    """The quantized ``Model``: each block Linear a QuantLinear of codes = quantize(w, s, z)
    with the trained weight and grid (float16 scales as PTQ stores them); every other tensor
    the FP32 model's. The control (no grid) returns the fine-tuned FP32 params as a Model.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny(); p = init_params(cfg)
    >>> lat, st = prepare(p, cfg, Weights("uint2", 16))
    >>> m = convert(lat, cfg, st, p, "qat-w2-g16", QATConfig(steps=1))
    >>> m.params["blk.0.ffn_down.weight"], round(m.bits_per_weight, 3)   # 2 + (16 + 8) / 16
    (QuantLinear(64 → 32, uint2 g16, weight-only, path='fake'), 3.5)
    """
    if st.weights is None:
        return Model(latent, cfg, Recipe("fp32-control"), base_sha256=base_sha256)
    w = st.weights
    f = get_format(w.fmt)
    out = dict(params)
    for n in linear_names(cfg):
        W, block = latent[n], st.block_of(latent[n])
        if st.ternary:
            s = stored_scale(absmean_scale(W, block), w.scale_dtype)
        else:
            s = stored_scale(np.exp(st.log_scale[n]), w.scale_dtype)  # (O, G)
        z = np.rint(st.zero[n]).astype(np.int32) if n in st.zero else np.zeros(s.shape, np.int32)
        codes = quantize(W, s, z, f, block)  # (O, I): the forward's codes
        if f.signed:
            codes = to_unsigned(codes, f.storage_bits)
        zero = z.astype(np.uint8 if f.qmin == 0 else np.int8) if n in st.zero else None
        qt = QTensor(pack(codes, f.storage_bits), s.astype(w.scale_dtype), zero, f, block, W.shape)
        out[n] = QuantLinear(qt)
    method = QAT(steps=qc.steps, distill=qc.distill, learn_scale=qc.learn_scale, seed=qc.seed)
    recipe = Recipe(recipe_name, (Rule(ALL_BLOCKS, w, method),),
                    f"QAT of {w.fmt} {w.granularity} grids, {qc.steps} steps"
                    + (", distilled from FP32" if qc.distill else ""))  # fmt: skip
    return Model(out, cfg, recipe, base_sha256=base_sha256)

"""A quantized model, and ``quantize_model``: apply a recipe's rules to a trained model.

A model is the FP32 params dict in which weights are replaced by quantized Linears (the Linear
protocol, ``tinyquant.linears``); the model's single call site ``linear(x, w)`` runs them, so
one ``forward`` serves every recipe. ``quantize_model`` only orchestrates:

    0) casts        fp16/bf16 tensors rounded (kept as float32 arrays, stored 2 bytes each)
    1) SmoothQuant  fold s before q/k/v, o, gate/up and down (FP statistics; algos/fold.py)
    2) AWQ          search and fold per-channel scales and clips, block by block (FP inputs)
    3) the rest     sequentially when a rule needs statistics (GPTQ's H, static activation
                    scales: block i calibrated on the quantized blocks before it), else directly;
                    each weight by its rule's method (``methods.build_linear``)

Bytes are counted once, here: every tensor at its stored width (a cast array 2 bytes per value,
a quantized Linear its codes + scales + zeros + signs). ``bits_per_weight`` divides the stored
bits of the block Linears (and any other quantized tensor) by their number of weights.
Refs: Frantar et al. 2022 (sequential calibration); Lin et al. 2023; Xiao et al. 2022.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from tinyquant.algos.awq import awq_model
from tinyquant.algos.calibrate import BlockCalib, calibrate_sequential, collect_stats
from tinyquant.algos.smoothquant import smooth_model
from tinyquant.linears import QLinear
from tinyquant.llm.generate import generate
from tinyquant.llm.model import Config, forward
from tinyquant.methods import build_linear
from tinyquant.presets import get_recipe
from tinyquant.qcheckpoint import read_quantized, write_quantized
from tinyquant.quant import get_format, round_to_format
from tinyquant.recipe import AWQ, BLOCK_LINEARS, GPTQ, Recipe, Rule

__all__ = ["Model", "quantize_model", "linear_names", "STORED_BYTES"]

STORED_BYTES = {"fp16": 2, "bf16": 2}  # cast arrays: bytes per value as stored


def linear_names(cfg: Config) -> list[str]:
    """The block Linears, in model order (what the presets quantize).

    >>> linear_names(Config.tiny())[:2]
    ['blk.0.attn_q.weight', 'blk.0.attn_k.weight']
    """
    return [f"blk.{i}.{n}.weight" for i in range(cfg.n_layers) for n in BLOCK_LINEARS]


def _all_linears(cfg: Config) -> set[str]:
    return set(linear_names(cfg)) | {"output.weight"}


@dataclass(frozen=True)
class Model:
    """Params (arrays or quantized Linears), config, and the recipe that made them.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> m = Model(init_params(cfg), cfg)
    >>> m.recipe.name, m.bits_per_weight, m.logits(np.arange(4)).shape
    ('fp32', 32.0, (1, 4, 256))
    """

    params: dict
    cfg: Config
    recipe: Recipe = field(default_factory=lambda: get_recipe("fp32"))
    storage: dict[str, str] = field(default_factory=dict)  # cast arrays: name → "fp16"/"bf16"
    base_sha256: str | None = None  # the FP32 checkpoint this was made from

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits (B, T, V) for int tokens (B, T) or (T,)."""
        return forward(self.params, tokens, self.cfg)

    def generate(self, prompt: str, n: int = 200, **kw) -> str:
        """Sample ``n`` bytes after ``prompt`` (see ``tinyquant.llm.generate``)."""
        return generate(self.params, self.cfg, prompt, n, **kw)

    # -- execution paths --------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """``"int"`` if any quantized Linear runs on integer kernels, else ``"fake"``."""
        return "int" if any(_is_linear(t) and t.path == "int" for t in self.params.values()) \
            else "fake"  # fmt: skip

    def with_path(self, path: str) -> Model:
        """The same model with every Linear that has integer kernels on ``path`` (a new object)."""
        params = {k: t.with_path(path) if _is_linear(t) and t.has_int_kernel else t
                  for k, t in self.params.items()}  # fmt: skip
        return replace(self, params=params)

    # -- bytes ------------------------------------------------------------------------------------
    def tensor_nbytes(self, name: str) -> int:
        """Bytes of one tensor as stored."""
        t = self.params[name]
        if isinstance(t, np.ndarray):
            return int(t.size * STORED_BYTES.get(self.storage.get(name, ""), t.itemsize))
        return int(t.nbytes)

    @property
    def nbytes(self) -> int:
        """Exact bytes of the whole model as stored: codes, scales, zeros and float tensors."""
        return sum(self.tensor_nbytes(n) for n in self.params)

    @property
    def quantized_names(self) -> list[str]:
        """The block Linears and every other tensor a rule replaced by a quantized Linear."""
        extra = [n for n, t in self.params.items() if _is_linear(t) and n not in self._blocks]
        return self._blocks + extra

    @property
    def _blocks(self) -> list[str]:
        return linear_names(self.cfg)

    @property
    def bits_per_weight(self) -> float:
        """All stored bits of the quantized Linears (codes, scales, zeros, signs) per weight."""
        names = self.quantized_names
        n_w = sum(_n_weights(self.params[n]) for n in names)
        return 8 * sum(self.tensor_nbytes(n) for n in names) / n_w

    def save(self, path) -> None:
        """Write a quantized checkpoint (``tinyquant.qcheckpoint``)."""
        write_quantized(path, self.params, self.cfg, self.recipe, self.storage, self.base_sha256)

    @classmethod
    def load(cls, path) -> Model:
        """Read a quantized checkpoint written by ``save``."""
        return cls(*read_quantized(path))


def _is_linear(t) -> bool:
    return not isinstance(t, np.ndarray) and isinstance(t, QLinear)


def _n_weights(t) -> int:
    return int(t.size) if isinstance(t, np.ndarray) else int(t.in_features * t.out_features)


# ----------------------------------------------------------------------------- orchestration


def _one_of(rules: dict[str, Rule], what: str, key: Callable[[Rule], object]):
    values = {key(r) for r in rules.values()}
    if len(values) != 1:
        raise ValueError(f"{what} must be the same for every block Linear; got {values}")
    return values.pop()


def quantize_model(
    params: dict,
    cfg: Config,
    recipe: str | Recipe,
    calib_tokens: np.ndarray | None = None,
    progress: Callable[[str], None] | None = None,
    base_sha256: str | None = None,
) -> Model:
    """A ``Model`` in which the recipe's targets are replaced (casts, quantized Linears).

    ``calib_tokens`` (B, T) are needed by calibrated recipes (GPTQ's Hessians, AWQ, static
    activation scales, SmoothQuant).

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> p = init_params(cfg, seed=0)
    >>> q = quantize_model(p, cfg, "w8a16")
    >>> type(q.params["blk.0.attn_q.weight"]).__name__
    'QuantLinear'
    >>> q.params["token_embd.weight"] is p["token_embd.weight"]  # untouched tensors are shared
    True
    >>> x = np.arange(8)
    >>> bool(np.abs(q.logits(x) - forward(p, x, cfg)).max() < 0.05)
    True
    """
    r = get_recipe(recipe)
    note = progress or (lambda name: None)
    rules = r.assign(list(params), _all_linears(cfg))
    out, storage = dict(params), {}
    for name, rule in rules.items():  # 0) casts: every tensor they target, rounded
        if rule.weights.is_cast:
            out[name] = round_to_format(params[name], rule.weights.fmt).astype(np.float32)
            storage[name] = rule.weights.fmt
    quant = {n: rule for n, rule in rules.items() if not rule.weights.is_cast}
    model = Model(out, cfg, r, storage, base_sha256)
    if not quant:
        return model
    if r.needs_calibration:
        if calib_tokens is None:
            raise ValueError(f"recipe {r.name} needs calibration tokens (B, T); pass calib_tokens")
        calib_tokens = np.asarray(calib_tokens)[: r.calib_windows]
    blocks = {n: quant[n] for n in linear_names(cfg) if n in quant}
    if any(rule.smooth is not None for rule in quant.values()):  # 1) SmoothQuant (exact in FP)
        sm = _one_of(blocks, "SmoothQuant's options", lambda q: q.smooth)
        if sm is None:
            raise ValueError("SmoothQuant folds into whole blocks; give every block Linear Smooth")
        stats = collect_stats(out, cfg, calib_tokens, hessian=False)
        out = smooth_model(out, cfg, {n: st.max_abs for n, st in stats.items()}, sm.alpha, sm.pairs)
    if any(isinstance(rule.method, AWQ) for rule in quant.values()):  # 2) AWQ's scales folded
        if len(blocks) != len(linear_names(cfg)):
            raise ValueError("AWQ folds scales across a whole block; target every block Linear")
        wts, awq = _one_of(blocks, "AWQ's rule", lambda q: (q.weights, q.method))
        bits = get_format(wts.fmt).storage_bits
        out, _ = awq_model(out, cfg, calib_tokens, bits, wts.group_size, clip=awq.clip)

    def install(ctx: BlockCalib) -> dict:
        done = {}
        for name in ctx.names:
            if name in quant:
                done[name] = build_linear(ctx.params[name], quant[name], ctx.stats.get(name))
                note(name)
        return done

    sequential = any(isinstance(q.method, GPTQ) or (q.activations and q.activations.static)
                     for q in quant.values())  # fmt: skip
    if sequential:  # 3) block i sees the quantized blocks before it
        hessian = any(isinstance(q.method, GPTQ) for q in quant.values())
        out = calibrate_sequential(out, cfg, calib_tokens, install, hessian=hessian)
    rest = [n for n in quant if not (sequential and n in blocks)]
    for name in rest:  # 3) every other weight, directly
        out[name] = build_linear(out[name], quant[name], None)
        note(name)
    return replace(model, params=out)

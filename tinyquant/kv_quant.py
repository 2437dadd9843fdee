"""A quantized KV cache: keys and values stored as codes + scales, KIVI's streaming rule.

Each cached tensor is quantized with the library's one quantizer (``quantize_tensor``):
asymmetric min-max integers (``int8/int4/int2`` → uint codes, FP16 scale, uint8 zero) or scaled
FP8 E4M3 (FP16 scale), one (scale, zero) per block:

    tensor                   block (B, H, S, hd)    one scale per
    values (always)          (1, 1, 1, G)           token · head · G channels      per token
    keys, key_axis="token"   (1, 1, 1, G)           token · head · G channels      per token
    keys, key_axis="channel" (1, 1, G, 1)           channel · head · G tokens      per channel

Keys have outlier *channels* (a few of the hd dimensions are large for every token), so a scale
per channel isolates them; values have no such structure and are quantized per token (KIVI §3).

The streaming rule (KIVI, Alg. 1). A per-channel block spans G tokens, so a key can only be
quantized once its group is complete: new keys wait in a full-precision *residual* that is
flushed (quantized, G tokens per block) whenever it holds L = max(R, G) tokens (an R above G
must be a whole number of groups). Per-token
tensors are quantized as they leave the window of the R most recent tokens (R = 0: on arrival).
Once n tokens are stored, the first ``n_quantized(n)`` are held quantized:

    per channel   n_quantized(n) = ⌊n / L⌋ · L            (0 ≤ residual < L)
    per token     n_quantized(n) = max(0, n − R)          (residual = min(n, R))

A query at position p sees the cache as it is once p + 1 tokens are stored (new tokens are
stored, then flushed, then attended to). Decoding one token at a time and scoring a whole window
in one call therefore see the same keys: in a call of T > 1 tokens, key s is seen quantized by
query p exactly when s < n_quantized(p + 1) — a (T, S) mask chooses per (query, key) between the
quantized and the full-precision product. That makes the one-call forward an exact fast path
for the evaluator (proved in tests/test_kv_quant.py against token-by-token decoding).

``pre_rope=True`` (KVQuant §3.2) stores the keys quantized *before* the rotary embedding and
rotates them after dequantization: RoPE turns each channel pair (i, i + hd/2) by a
position-dependent angle, which smears a pre-RoPE outlier channel over its pair and varies it
from token to token — the structure a per-channel scale exploits is clearest before RoPE.

Refs: Liu et al. 2024 "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", §3–4
and Alg. 1 (keys per channel, values per token, group size G, residual R); Hooper et al. 2024
"KVQuant", §3.1–3.2 (per-channel keys, pre-RoPE keys).
Shape legend: B batch, H heads, T new tokens, S = pos + T cached positions, hd head dim,
G group size, L flush length, R residual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tinyquant.llm.model import Config, apply_rope, attention_probs, rope_tables
from tinyquant.quant import quantize_tensor
from tinyquant.quant.qtensor import QTensor

__all__ = ["KV_FORMATS", "KVQuant", "QuantKVCache", "kv_cache", "parse_kv"]

# cache format name -> (format in the table, symmetric)
KV_FORMATS = {"int8": ("uint8", False), "int4": ("uint4", False), "int2": ("uint2", False),
              "fp8": ("fp8_e4m3", True)}  # fmt: skip


@dataclass(frozen=True)
class KVQuant:
    """How the KV cache is stored. The defaults are KIVI's layout at this model's scale.

    >>> KVQuant("int2").name, KVQuant("int4", key_axis="token", residual=0).name
    ('int2', 'int4-ktoken-r0')
    >>> [KVQuant("int2", residual=r).flush_length("k") for r in (0, 32, 128)]   # L = max(R, G)
    [32, 32, 128]
    """

    fmt: str = "int4"  # int8 | int4 | int2 (asymmetric min-max) | fp8 (E4M3, scaled)
    key_axis: str = "channel"  # "channel": one scale per channel per G tokens (KIVI); "token"
    group_size: int = 32  # G: tokens per key block (per channel) / channels per block (per token)
    residual: int = 32  # R: most recent tokens kept in full precision (KIVI uses 32-128)
    pre_rope: bool = False  # True: keys quantized before RoPE, rotated after (KVQuant)

    def __post_init__(self) -> None:
        if self.fmt not in KV_FORMATS:
            raise ValueError(f"unknown KV format {self.fmt!r}; choose one of {list(KV_FORMATS)}")
        if self.key_axis not in ("channel", "token"):
            raise ValueError(f"key_axis must be 'channel' or 'token', got {self.key_axis!r}")
        for name, low in (("group_size", 1), ("residual", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        G, R = self.group_size, self.residual
        if self.key_axis == "channel" and R > G and R % G:
            raise ValueError(
                f"residual {self.residual} is not a multiple of group_size {self.group_size}: "
                "per-channel keys are flushed in whole groups; use e.g. residual "
                f"{self.group_size * max(1, round(self.residual / self.group_size))}"
            )

    @property
    def name(self) -> str:
        """Short label: the format, then only the fields that differ from the defaults."""
        parts = [self.fmt]
        if self.key_axis != "channel":
            parts.append("k" + self.key_axis)
        if self.group_size != 32:
            parts.append(f"g{self.group_size}")
        if self.residual != 32:
            parts.append(f"r{self.residual}")
        if self.pre_rope:
            parts.append("prerope")
        return "-".join(parts)

    def per_channel(self, role: str) -> bool:
        """True for the keys when they are quantized per channel (role "k" or "v")."""
        return role == "k" and self.key_axis == "channel"

    def flush_length(self, role: str) -> int:
        """L: per-channel keys are quantized L = max(R, G) tokens at a time."""
        return max(self.residual, self.group_size) if self.per_channel(role) else 1

    def n_quantized(self, n: int, role: str) -> int:
        """How many of the first n stored tokens are held quantized (KIVI's streaming rule).

        >>> s = KVQuant("int4", residual=32, group_size=32)
        >>> [s.n_quantized(n, "k") for n in (31, 32, 63, 64)], s.n_quantized(40, "v")
        ([0, 32, 32, 64], 8)
        """
        if self.per_channel(role):
            L = self.flush_length(role)
            return n // L * L
        return max(0, n - self.residual)

    def block(self, role: str) -> tuple[int, int, int, int]:
        """The block sharing one (scale, zero) in a (B, H, S, hd) tensor."""
        G = self.group_size
        return (1, 1, G, 1) if self.per_channel(role) else (1, 1, 1, G)

    def quantize(self, x: np.ndarray, role: str) -> QTensor:
        """x (B, H, n, hd) as stored: codes + FP16 scales (+ zeros) in blocks of ``block``."""
        fmt, symmetric = KV_FORMATS[self.fmt]
        blk = self.block(role)
        if x.shape[2] % blk[2] or x.shape[3] % blk[3]:
            axis = "tokens" if blk[2] > 1 else "head dim"
            raise ValueError(
                f"group_size {self.group_size} does not divide the {axis} of a {x.shape} "
                f"{role} block; use a divisor of the head dim such as 16, 32 or 64"
            )
        return quantize_tensor(x, fmt, blk, symmetric=symmetric, scale_dtype="float16")


def parse_kv(name: str) -> KVQuant:
    """The spec a ``KVQuant.name`` label stands for (the CLI's ``--kv`` values).

    >>> parse_kv("int2-ktoken-g16-r0-prerope")
    KVQuant(fmt='int2', key_axis='token', group_size=16, residual=0, pre_rope=True)
    """
    fmt, *rest = name.split("-")
    kw: dict = {"fmt": fmt}
    for part in rest:
        if part == "ktoken":
            kw["key_axis"] = "token"
        elif part == "prerope":
            kw["pre_rope"] = True
        elif part[:1] in ("g", "r") and part[1:].isdigit():
            kw["group_size" if part[0] == "g" else "residual"] = int(part[1:])
        else:
            raise ValueError(
                f"cannot read {part!r} in KV spec {name!r}; write e.g. int4, int2-r0, "
                "int4-ktoken, int2-g16, int4-prerope"
            )
    return KVQuant(**kw)


@dataclass
class _Stored:
    """One layer's K or V: the full-precision buffer of tokens not yet quantized, the quantized
    blocks (what a real cache keeps) and their dequantized values (what attention reads)."""

    fp: np.ndarray  # (B, H, context, hd); positions < n_q are overwritten with NaN
    dq: np.ndarray  # (B, H, context, hd); positions < n_q hold dequantize(blocks)
    blocks: list[QTensor] = field(default_factory=list)
    n_q: int = 0  # positions [0, n_q) are held quantized


class QuantKVCache:
    """A KV cache for ``forward(..., cache=)`` storing K/V quantized by ``spec``.

    >>> from tinyquant.llm.model import forward, init_params
    >>> cfg = Config.tiny(); p = init_params(cfg, seed=0); t = np.arange(20) % 7
    >>> spec = KVQuant("int2", residual=16, group_size=8)
    >>> one = forward(p, t, cfg, cache=QuantKVCache(spec, cfg))          # one call: the mask
    >>> c = QuantKVCache(spec, cfg)                                      # one token at a time
    >>> steps = np.concatenate([forward(p, t[j:j + 1], cfg, cache=c) for j in range(20)], axis=1)
    >>> bool(np.abs(one - steps).max() < 1e-5), c.n_quantized()     # 16 keys, 4 values quantized
    (True, (16, 4))
    """

    def __init__(self, spec: KVQuant, cfg: Config, batch: int = 1, dtype=np.float32) -> None:
        if cfg.head_dim % spec.group_size:  # values (and per-token keys) group channels
            raise ValueError(
                f"group_size {spec.group_size} does not divide the head dim {cfg.head_dim}; "
                "use a divisor such as 16 or 32"
            )
        self.spec, self.cfg, self.pos, self.capacity = spec, cfg, 0, cfg.context
        shape = (batch, cfg.n_heads, cfg.context, cfg.head_dim)
        self.layers = [
            {r: _Stored(np.zeros(shape, dtype), np.zeros(shape, dtype)) for r in ("k", "v")}
            for _ in range(cfg.n_layers)
        ]

    def n_quantized(self) -> tuple[int, int]:
        """(keys, values) positions held quantized now (the same in every layer)."""
        return self.layers[0]["k"].n_q, self.layers[0]["v"].n_q

    def nbytes(self, fp_bytes: int = 2) -> int:
        """Bytes a real cache holds: every quantized block (codes, scales, zeros) plus the
        full-precision residual at ``fp_bytes`` per element (2: FP16, as KIVI keeps it)."""
        total = 0
        for layer in self.layers:
            for st in layer.values():
                B, H, _, hd = st.fp.shape
                residual = (self.pos - st.n_q) * B * H * hd * fp_bytes
                total += sum(b.nbytes for b in st.blocks) + residual
        return total

    def _store(self, st: _Stored, x: np.ndarray, role: str, S: int) -> tuple[np.ndarray, int]:
        """Write the new tokens, flush what the streaming rule quantizes; return the
        full-precision view (B, H, S, hd) of the positions ≥ the old n_q, and the old n_q."""
        start = S - x.shape[2]
        st.fp[:, :, start:S] = x
        before = st.n_q
        fp_view = st.fp[:, :, :S].copy() if x.shape[2] > 1 else None  # chunk queries need it
        after = self.spec.n_quantized(S, role)
        if after > before:  # 1) flush [before, after): L tokens (or single tokens) per block
            qt = self.spec.quantize(st.fp[:, :, before:after], role)  # (B, H, after-before, hd)
            st.blocks.append(qt)
            st.dq[:, :, before:after] = qt.dequantize()
            st.fp[:, :, before:after] = np.nan  # a real cache frees them: never read again
            st.n_q = after
        return fp_view, before

    def _views(self, st: _Stored, fp_view, before: int, S: int):
        """What the queries can see of one tensor: (seen after the flush, seen before it)."""
        s = np.arange(S)[:, None]  # (S, 1): broadcasts over (B, H, S, hd)
        after = np.where(s < st.n_q, st.dq[:, :, :S], st.fp[:, :, :S])  # (B, H, S, hd)
        if fp_view is None:
            return after, None
        return after, np.where(s < before, st.dq[:, :, :S], fp_view)

    def attend(self, i: int, q, k, v, cos, sin) -> np.ndarray:
        """The cache protocol of ``llm.model.attention``: store layer i's new k (pre-RoPE), v;
        queries q (B, H, T, hd) attend over the S = pos + T positions as they are stored."""
        spec, layer = self.spec, self.layers[i]
        T, S, hd = q.shape[2], self.pos + q.shape[2], q.shape[3]
        if S > self.capacity:
            raise ValueError(f"{S} positions exceed the cache of {self.capacity}; start a new one")
        # 1) store keys (before or after RoPE) and values, flushing by the streaming rule
        k_in = k if spec.pre_rope else apply_rope(k, cos, sin)
        fk, bk = self._store(layer["k"], k_in, "k", S)
        fv, bv = self._store(layer["v"], v, "v", S)
        K, K0 = self._views(layer["k"], fk, bk, S)  # (B, H, S, hd) each (K0: chunk only)
        V, V0 = self._views(layer["v"], fv, bv, S)
        if spec.pre_rope:  # 2) KVQuant: rotate the dequantized keys at their positions
            c, s_ = rope_tables(np.arange(S), hd, self.cfg.rope_theta, q.dtype)
            K = apply_rope(K, c, s_)
            K0 = None if K0 is None else apply_rope(K0, c, s_)
        # 3) attention; a chunk's query p sees key s quantized iff s < n_quantized(p + 1)
        scores = q @ K.transpose(0, 1, 3, 2)  # (B, H, T, S)
        if T == 1:
            return attention_probs(scores, hd) @ V  # (B, H, 1, hd)
        p = np.arange(self.pos, S)  # (T,) absolute query positions
        mk = np.arange(S)[None, :] < np.array([spec.n_quantized(j + 1, "k") for j in p])[:, None]
        mv = np.arange(S)[None, :] < np.array([spec.n_quantized(j + 1, "v") for j in p])[:, None]
        scores = np.where(mk, scores, q @ K0.transpose(0, 1, 3, 2))  # (B, H, T, S)
        P = attention_probs(scores, hd)
        return np.where(mv, P, 0) @ V + np.where(mv, 0, P) @ V0  # (B, H, T, hd)


def kv_cache(spec: KVQuant | str, cfg: Config, dtype=np.float32) -> Callable[[int], QuantKVCache]:
    """A factory ``batch -> QuantKVCache`` (what ``Evaluator.evaluate(kv_cache=)`` takes).

    >>> kv_cache("int4-g8", Config.tiny())(2).layers[0]["k"].fp.shape
    (2, 2, 32, 16)
    """
    spec = parse_kv(spec) if isinstance(spec, str) else spec
    return lambda batch: QuantKVCache(spec, cfg, batch, dtype)

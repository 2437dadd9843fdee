"""A LLaMA-style decoder in NumPy: the tiny transformer that every quantizer in tinyquant targets.

    x⁰ = E[tokens]
    for each block ℓ:
        a  = Attention(RMSNorm(xˡ))            causal, multi-head, rotary positions
        xˡ' = xˡ + a
        xˡ⁺¹ = xˡ' + W_down (silu(W_gate h) ⊙ (W_up h)),  h = RMSNorm(xˡ')
    logits = W_out RMSNorm(xᴸ)

RMSNorm(x) = x / sqrt(mean(x²) + ε) ⊙ w                     (Zhang & Sennrich 2019, eq. 4)
RoPE rotates each (x_i, x_{i+hd/2}) pair by angle p·θ^(−2i/hd)  (Su et al. 2021, eq. 34; the
"rotate-half" layout of Hugging Face LLaMA / GPT-NeoX)
SwiGLU(h) = W_down (silu(W_gate h) ⊙ W_up h)                  (Shazeer 2020, eq. 6)
Attention(q, k, v) = softmax(q kᵀ / √hd + causal mask) v       (Vaswani et al. 2017, eq. 1)

Seams for quantization:
- every matmul with a weight goes through ``linear(x, w)``: a quantized model is the same params
  dict in which some arrays are replaced by objects with a ``forward(x)`` method;
- ``forward`` is a plain loop of ``embed`` → ``block`` × n_layers → ``head``, so calibration can
  run the model block by block;
- ``record(name, x)`` sees each Linear's input as a 2-D (N, in_features) array.

Shape legend: B batch, T new tokens, S = past + T attended positions, V vocab, d d_model,
H heads, hd = d / H head dim, F d_ff.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from tinyquant.kernels.attention import DECODE_MAX_T, decode_attention

Record = Callable[[str, np.ndarray], None]


@dataclass(frozen=True)
class Config:
    """Model hyper-parameters. The defaults are the shipped Shakespeare model.

    >>> Config().d_model // Config().n_heads
    64
    >>> Config.tiny().n_layers
    2
    """

    vocab_size: int = 256  # bytes: no tokenizer file, no unknown tokens
    d_model: int = 256  # residual width; in_features of q, k, v, o, gate, up
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads, head dim = d_model / n_heads = 64
    d_ff: int = 768  # SwiGLU hidden width; 768 = 6 * 128 so group size 128 divides ffn_down's in
    context: int = 256  # maximum sequence length (bytes) seen in training and attended to
    rope_theta: float = 10000.0  # RoPE base θ (Su et al. 2021)
    norm_eps: float = 1e-5  # ε inside RMSNorm's square root
    n_kv_heads: int | None = None  # key/value heads (GQA, Ainslie et al. 2023); None = n_heads

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:  # multi-head attention: one key/value head per query head
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "context",
                     "n_kv_heads"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("rope_theta", "norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}; "
                "choose n_heads dividing d_model"
            )
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("head dim d_model / n_heads must be even for RoPE; change n_heads")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads {self.n_kv_heads} does not divide n_heads "
                             f"{self.n_heads}; each key/value head serves n_heads / n_kv_heads "
                             "query heads")  # fmt: skip

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Output width of attn_k and attn_v: n_kv_heads · head_dim (d_model without GQA).

        >>> Config(d_model=64, n_heads=4, n_kv_heads=2).kv_dim
        32
        """
        return self.n_kv_heads * self.head_dim

    @classmethod
    def tiny(cls) -> Config:
        """A small preset for tests: trains in seconds, same code paths."""
        return cls(d_model=32, n_layers=2, n_heads=2, d_ff=64, context=32)

    def to_dict(self) -> dict:
        return asdict(self)


def param_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Every parameter's name (llama.cpp GGUF naming) and shape; Linear weights are (out, in).

    >>> param_shapes(Config())["blk.0.ffn_down.weight"]
    (256, 768)
    """
    d, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (V, d)}
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        shapes[p + "attn_norm.weight"] = (d,)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            shapes[p + name + ".weight"] = (cfg.kv_dim if name in ("attn_k", "attn_v") else d, d)
        shapes[p + "ffn_norm.weight"] = (d,)
        shapes[p + "ffn_gate.weight"] = (F, d)
        shapes[p + "ffn_up.weight"] = (F, d)
        shapes[p + "ffn_down.weight"] = (d, F)
    shapes["output_norm.weight"] = (d,)
    shapes["output.weight"] = (V, d)
    return shapes


def init_params(cfg: Config, seed: int = 0, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Random initial weights: N(0, 0.02²), residual projections scaled by 1/√(2·n_layers)
    (GPT-2's scheme), norm gains 1.

    >>> p = init_params(Config.tiny(), seed=0)
    >>> p["blk.1.attn_q.weight"].shape, p["blk.1.attn_q.weight"].dtype
    ((32, 32), dtype('float32'))
    """
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("norm.weight"):
            params[name] = np.ones(shape, dtype=dtype)
            continue
        std = 0.02
        if name.endswith(("attn_output.weight", "ffn_down.weight")):
            std /= np.sqrt(2 * cfg.n_layers)
        params[name] = (rng.standard_normal(shape) * std).astype(dtype)
    return params


# ----------------------------------------------------------------------------- primitives


def linear(x: np.ndarray, w) -> np.ndarray:
    """The one call site of every weight matmul: y = x Wᵀ, W stored (out, in).

    A non-array ``w`` (a quantized Linear) computes the product its own way via ``w.forward(x)``.

    >>> linear(np.ones((2, 3)), np.arange(6.0).reshape(2, 3))
    array([[ 3., 12.],
           [ 3., 12.]])
    """
    if isinstance(w, np.ndarray):
        return x @ w.T  # (..., in) @ (in, out) -> (..., out)
    return w.forward(x)


def linears(x: np.ndarray, ws: list) -> list[np.ndarray]:
    """y_j = x W_jᵀ for weights that read the same input (q, k, v; gate, up): ``linear`` each.

    When the weights are objects of one class that offers ``forward_shared(x, ws)`` (optional in
    the Linear protocol), that one call computes them all — the fused-QKV / gate-up projection
    of inference engines, one kernel call instead of three — or returns None to decline. The
    values are the same either way (``linears/quant_linear.py`` tests it bit for bit).

    >>> [y.shape for y in linears(np.ones((2, 3)), [np.ones((4, 3)), np.ones((1, 3))])]
    [(2, 4), (2, 1)]
    """
    kind = type(ws[0])
    shared = getattr(kind, "forward_shared", None)
    if shared is not None and all(type(w) is kind for w in ws):
        ys = shared(x, ws)
        if ys is not None:
            return ys
    return [linear(x, w) for w in ws]


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: x / sqrt(mean(x²) + ε) ⊙ w.

    >>> rmsnorm(np.array([[3.0, 4.0]]), np.ones(2), 0.0).round(4)
    array([[0.8485, 1.1314]])
    """
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # (..., 1)
    return x * r * w


def rope_tables(positions: np.ndarray, head_dim: int, theta: float, dtype) -> tuple:
    """cos and sin of the rotation angles p·θ^(−2i/hd), each (T, hd/2).

    >>> c, s = rope_tables(np.arange(3), 4, 10000.0, np.float64)
    >>> c.shape, float(c[0, 0]), float(s[1, 0]).__round__(4)
    ((3, 2), 1.0, 0.8415)
    """
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (hd/2,)
    angles = positions.astype(np.float64)[:, None] * inv_freq[None, :]  # (T, hd/2)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate pairs (x_i, x_{i+hd/2}) of x (..., T, hd) by the angles in cos, sin (T, hd/2).

    >>> c, s = rope_tables(np.arange(2), 2, 10000.0, np.float64)
    >>> apply_rope(np.array([[1.0, 0.0], [1.0, 0.0]]), c, s).round(4)
    array([[1.    , 0.    ],
           [0.5403, 0.8415]])
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax.

    >>> softmax(np.array([0.0, np.log(3.0)])).round(4)
    array([0.25, 0.75])
    """
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def silu(z: np.ndarray) -> np.ndarray:
    """silu(z) = z · σ(z).

    >>> float(silu(np.array(0.0)))
    0.0
    """
    return z / (1.0 + np.exp(-z))


def causal_mask(T: int, S: int) -> np.ndarray:
    """Boolean (T, S) mask, True where query t (absolute position S − T + t) may see key s ≤ it.

    >>> causal_mask(2, 3)
    array([[ True,  True, False],
           [ True,  True,  True]])
    """
    return np.arange(S)[None, :] <= np.arange(S - T, S)[:, None]


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q kᵀ/√hd + causal mask) v: queries (B, H, T, hd) are the last T of the S
    positions of k, v (B, Hkv, S, hd) -> (B, H, T, hd); Hkv < H is grouped-query attention.

    >>> q = np.zeros((1, 1, 2, 2)); v = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> causal_attention(q, q, v)[0, 0]                   # position 1 averages positions 0, 1
    array([[0., 1.],
           [1., 2.]])
    """
    B, H, T, hd = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    if Hkv == H:
        scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, S)
        return attention_probs(scores, hd) @ v  # (B, H, T, hd)
    # grouped-query attention: query head h reads key/value head h // G (llama.cpp's order);
    # a group's queries are stacked as rows, so K and V are never copied
    G = H // Hkv
    scores = q.reshape(B, Hkv, G * T, hd) @ k.transpose(0, 1, 3, 2)  # (B, Hkv, G·T, S)
    probs = attention_probs(scores.reshape(B, Hkv, G, T, S), hd)  # mask over the last (T, S)
    return (probs.reshape(B, Hkv, G * T, S) @ v).reshape(B, H, T, hd)  # (B, H, T, hd)


def attention_probs(scores: np.ndarray, hd: int) -> np.ndarray:
    """softmax(scores/√hd + causal mask) over the last axis, in place: (B, H, T, S) q·k products
    of the last T of S positions -> attention probabilities (the same array).

    >>> attention_probs(np.zeros((1, 1, 2, 2)), 4)[0, 0]
    array([[1. , 0. ],
           [0.5, 0.5]])
    """
    T, S = scores.shape[-2:]
    scores *= 1.0 / float(np.sqrt(hd))  # a Python float keeps float32 arrays float32
    scores += np.where(causal_mask(T, S), 0.0, -np.inf).astype(scores.dtype)  # (T, S) mask
    scores -= scores.max(axis=-1, keepdims=True)  # softmax, in place (same values as softmax())
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


# ----------------------------------------------------------------------------- KV cache


@dataclass
class KVCache:
    """Per-layer keys and values of the positions already processed, in full precision.

    k[i], v[i]: (B, Hkv, context, hd) preallocated (Hkv key/value heads); ``pos`` positions are
    filled. Keys are stored after RoPE. A cache is anything with ``pos`` and
    ``attend(i, q, k, v, cos, sin)`` (below):
    ``attention`` hands it the new rotary queries and the new keys *before* RoPE with their
    rotation tables, so a cache injected from above (e.g. one that stores quantized keys, before
    or after RoPE) decides what it stores and what the queries see.
    """

    k: list[np.ndarray]
    v: list[np.ndarray]
    pos: int = 0
    capacity: int = field(default=0)

    def attend(self, i: int, q, k, v, cos, sin) -> np.ndarray:
        """Write layer ``i``'s new keys (rotated here) and values at [pos, pos + T), then let
        the queries q (B, H, T, hd) attend over all pos + T positions -> (B, H, T, hd)."""
        start, T = self.pos, k.shape[2]
        self.k[i][:, :, start : start + T] = apply_rope(k, cos, sin)
        self.v[i][:, :, start : start + T] = v
        if T <= DECODE_MAX_T and q.dtype == np.float32 == self.k[i].dtype:
            # a decode step: the Numba twin, so a quantized model stays in one thread pool
            return decode_attention(q, self.k[i], self.v[i], start + T)
        return causal_attention(q, self.k[i][:, :, : start + T], self.v[i][:, :, : start + T])


def new_cache(cfg: Config, batch: int = 1, dtype=np.float32) -> KVCache:
    """An empty KV cache for ``batch`` sequences of up to ``cfg.context`` positions.

    >>> c = new_cache(Config.tiny(), batch=2)
    >>> c.k[0].shape, c.pos
    ((2, 2, 32, 16), 0)
    """
    shape = (batch, cfg.n_kv_heads, cfg.context, cfg.head_dim)
    return KVCache(
        k=[np.zeros(shape, dtype) for _ in range(cfg.n_layers)],
        v=[np.zeros(shape, dtype) for _ in range(cfg.n_layers)],
        pos=0,
        capacity=cfg.context,
    )


# ----------------------------------------------------------------------------- the model


def embed(params: dict, tokens: np.ndarray) -> np.ndarray:
    """Token embedding lookup: (B, T) ints -> (B, T, d)."""
    return params["token_embd.weight"][tokens]


def _lin(params: dict, name: str, x: np.ndarray, record: Record | None) -> np.ndarray:
    if record is not None:
        record(name, x.reshape(-1, x.shape[-1]))  # (N, in)
    return linear(x, params[name])


def _lins(params: dict, names: list[str], x: np.ndarray, record: Record | None) -> list:
    """``_lin`` for several weights reading the same x (through ``linears``)."""
    if record is not None:
        return [_lin(params, n, x, record) for n in names]
    return linears(x, [params[n] for n in names])


def attention(
    params: dict,
    cfg: Config,
    i: int,
    h: np.ndarray,
    record: Record | None = None,
    cache: KVCache | None = None,
) -> np.ndarray:
    """Block ``i``'s causal self-attention on the normed stream h (B, T, d), before the output
    projection: softmax(q kᵀ/√hd + mask) v with rotary q, k — (B, T, d) with heads concatenated.

    With a ``cache``, keys/values are written at positions [cache.pos, cache.pos + T) and the
    queries attend over all cached positions (``cache.attend``: what it stores is its choice).
    """
    B, T, d = h.shape
    H, Hkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    p = f"blk.{i}."
    start = 0 if cache is None else cache.pos
    qkv = [p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"]
    q, k, v = _lins(params, qkv, h, record)  # (B, T, d), (B, T, Hkv·hd), (B, T, Hkv·hd)
    q = q.reshape(B, T, H, hd).transpose(0, 2, 1, 3)  # (B, H, T, hd)
    k = k.reshape(B, T, Hkv, hd).transpose(0, 2, 1, 3)  # (B, Hkv, T, hd)
    v = v.reshape(B, T, Hkv, hd).transpose(0, 2, 1, 3)
    cos, sin = rope_tables(np.arange(start, start + T), hd, cfg.rope_theta, h.dtype)
    q = apply_rope(q, cos, sin)
    if cache is None:
        att = causal_attention(q, apply_rope(k, cos, sin), v)  # (B, H, T, hd)
    else:  # the cache stores k (pre-RoPE here) and v its own way and runs the attention
        att = cache.attend(i, q, k, v, cos, sin)  # (B, H, T, hd)
    return att.transpose(0, 2, 1, 3).reshape(B, T, d)  # (B, T, d)


def attention_sublayer(
    params: dict,
    cfg: Config,
    i: int,
    x: np.ndarray,
    record: Record | None = None,
    cache: KVCache | None = None,
) -> np.ndarray:
    """x + W_o · Attention(RMSNorm(x)) for block ``i``: (B, T, d) -> (B, T, d)."""
    p = f"blk.{i}."
    h = rmsnorm(x, params[p + "attn_norm.weight"], cfg.norm_eps)  # (B, T, d)
    att = attention(params, cfg, i, h, record, cache)  # (B, T, d)
    return x + _lin(params, p + "attn_output.weight", att, record)


def mlp_sublayer(params: dict, cfg: Config, i: int, x: np.ndarray, record: Record | None = None):
    """x + W_down (silu(W_gate h) ⊙ W_up h), h = RMSNorm(x), for block ``i``: (B, T, d)."""
    p = f"blk.{i}."
    h = rmsnorm(x, params[p + "ffn_norm.weight"], cfg.norm_eps)  # (B, T, d)
    g, u = _lins(params, [p + "ffn_gate.weight", p + "ffn_up.weight"], h, record)  # (B, T, F) ×2
    return x + _lin(params, p + "ffn_down.weight", silu(g) * u, record)  # (B, T, d)


def block(
    params: dict,
    cfg: Config,
    i: int,
    x: np.ndarray,
    record: Record | None = None,
    cache: KVCache | None = None,
) -> np.ndarray:
    """Transformer block ``i`` on the residual stream x (B, T, d) -> (B, T, d).

    With a ``cache``, the block's keys/values are written at positions [cache.pos, cache.pos + T)
    and the queries attend over all cached positions; ``forward`` advances ``cache.pos``.
    """
    x = attention_sublayer(params, cfg, i, x, record, cache)  # 1) attention sub-layer
    return mlp_sublayer(params, cfg, i, x, record)  # 2) SwiGLU MLP sub-layer


def head(params: dict, cfg: Config, x: np.ndarray, record: Record | None = None) -> np.ndarray:
    """Final RMSNorm and output projection: (B, T, d) -> logits (B, T, V)."""
    h = rmsnorm(x, params["output_norm.weight"], cfg.norm_eps)
    return _lin(params, "output.weight", h, record)


def _as_batch(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None, :]
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"tokens must be an integer array of shape (B, T) or (T,), got {tokens.dtype} "
            f"{tokens.shape}; encode text with tinyquant.llm.data.encode"
        )
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size}); got out-of-range ids")
    return tokens


def forward(
    params: dict,
    tokens: np.ndarray,
    cfg: Config,
    record: Record | None = None,
    cache: KVCache | None = None,
) -> np.ndarray:
    """Logits (B, T, V) for int tokens (B, T) or (T,).

    >>> cfg = Config.tiny()
    >>> forward(init_params(cfg), np.array([1, 2, 3]), cfg).shape
    (1, 3, 256)
    """
    tokens = _as_batch(tokens, cfg.vocab_size)
    T = tokens.shape[1]
    start = 0 if cache is None else cache.pos
    if start + T > cfg.context:
        raise ValueError(
            f"{start + T} positions exceed the context of {cfg.context}; "
            "pass at most `context` tokens (or start a new cache)"
        )
    x = embed(params, tokens)  # (B, T, d)
    for i in range(cfg.n_layers):
        x = block(params, cfg, i, x, record=record, cache=cache)
    if cache is not None:
        cache.pos += T
    return head(params, cfg, x, record=record)

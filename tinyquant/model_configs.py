"""Real LLM configurations as data, and their parameter count computed from the config.

A decoder layer of hidden size h, H query heads and K key/value heads of size d, FFN width f
(SwiGLU: gate, up, down), E experts of which k are active, has

    attention  h·H·d (q) + 2·h·K·d (k, v) + H·d·h (o)   (+ biases H·d + 2·K·d + h, + H sinks)
    MLP        E · 3·h·f                                 (+ biases E·(2f + h); router h·E (+ E))
    norms      2·h
and the model adds the token embedding V·h, an output head V·h (0 if tied) and a final norm h.
GQA is K < H (Llama-2-70B: 64 query heads share 8 K/V heads); MHA is K = H.

Each entry cites the config.json it transcribes and the published parameter count it is tested
against (tests/test_memory.py). Shape legend: h hidden, H heads, K kv heads, d head_dim, f FFN,
V vocab, L layers, E experts, k experts per token.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelConfig", "MODELS", "get_model", "tensor_shapes", "gguf_shapes"]


@dataclass(frozen=True)
class ModelConfig:
    """One model's architecture, as its config.json states it.

    >>> m = get_model("llama-2-7b")
    >>> m.params, m.kv_heads * m.head_dim
    (6738415616, 4096)
    """

    name: str  # key in MODELS (lower case, as on the command line)
    hidden: int  # h: hidden_size
    layers: int  # L: num_hidden_layers
    heads: int  # H: num_attention_heads
    kv_heads: int  # K: num_key_value_heads (= heads without GQA)
    head_dim: int  # d: head_dim (hidden / heads unless the config says otherwise)
    ffn: int  # f: intermediate_size (per expert for MoE)
    vocab: int  # V: vocab_size
    tied: bool = False  # tie_word_embeddings: the head reuses the embedding
    experts: int = 1  # E: num_local_experts (1 = a dense MLP)
    experts_per_token: int = 1  # k: num_experts_per_tok
    qkv_bias: bool = False  # q/k/v projections carry biases (Qwen2, gpt-oss)
    o_bias: bool = False  # the output projection carries a bias (gpt-oss)
    mlp_bias: bool = False  # expert gate/up/down carry biases (gpt-oss)
    router_bias: bool = False  # the router carries a bias (gpt-oss)
    attn_sinks: bool = False  # one learned sink logit per head (gpt-oss)
    windows: tuple[int | None, ...] = (None,)  # per-layer attention window, repeating (None: full)
    published: str = ""  # total parameters in billions as the source states them (its digits
    #                      set the test tolerance: "6.738" → ±0.0005 B)
    published_active: str = ""  # active parameters per token in billions, where stated
    source: str = ""  # where the numbers come from

    @property
    def is_moe(self) -> bool:
        """More than one expert per layer."""
        return self.experts > 1

    def window(self, layer: int) -> int | None:
        """The attention window of ``layer`` (None: it attends to the whole context)."""
        return self.windows[layer % len(self.windows)]

    @property
    def params(self) -> int:
        """Total parameters from the config (the sum of ``tensor_shapes``)."""
        return sum(n * _numel(s) for _, s, n, _ in tensor_shapes(self))


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def tensor_shapes(m: ModelConfig) -> list[tuple[str, tuple[int, ...], int, str]]:
    """Every weight as (role, shape (O, I) or (n,), how many, read): the one parameter table.

    ``read`` says what a decoded token streams from memory: "all", "active" (k of E experts)
    or "row" (the embedding table: one row is gathered, the table is not streamed).

    >>> tensor_shapes(get_model("llama-2-70b"))[1:3]
    [('attn_q', (8192, 8192), 80, 'all'), ('attn_k', (1024, 8192), 80, 'all')]
    """
    h, L, E, f = m.hidden, m.layers, m.experts, m.ffn
    q, kv = m.heads * m.head_dim, m.kv_heads * m.head_dim
    mlp_read = "active" if m.is_moe else "all"
    t = [("embed", (m.vocab, h), 1, "row")]
    t += [
        ("attn_q", (q, h), L, "all"),
        ("attn_k", (kv, h), L, "all"),
        ("attn_v", (kv, h), L, "all"),
    ]
    t += [("attn_o", (h, q), L, "all")]
    if m.qkv_bias:
        t += [("bias", (q + 2 * kv,), L, "all")]
    if m.o_bias:
        t += [("bias", (h,), L, "all")]
    if m.attn_sinks:
        t += [("bias", (m.heads,), L, "all")]
    t += [("ffn_gate", (f, h), L * E, mlp_read), ("ffn_up", (f, h), L * E, mlp_read)]
    t += [("ffn_down", (h, f), L * E, mlp_read)]
    if m.mlp_bias:
        t += [("bias", (2 * f + h,), L * E, mlp_read)]
    if m.is_moe:
        t += [("router", (E, h), L, "all")] + ([("bias", (E,), L, "all")] if m.router_bias else [])
    t += [("norm", (h,), 2 * L + 1, "all")]
    if not m.tied:
        t += [("head", (m.vocab, h), 1, "all")]
    return t


def gguf_shapes(m: ModelConfig) -> dict[str, tuple[int, ...]]:
    """A dense model's 2-D weights under their GGUF names, (O, I) — what llama-quantize's mixes see.

    >>> sh = gguf_shapes(get_model("llama-2-7b"))
    >>> len(sh), sh["blk.31.ffn_down.weight"], sh["output.weight"]
    (226, (4096, 11008), (32000, 4096))
    """
    if m.is_moe:
        raise ValueError(f"{m.name} is a mixture of experts; GGUF names for experts are not listed")
    names = {"embed": "token_embd", "head": "output", "attn_o": "attn_output"}
    out = {}
    for role, shape, _count, _read in tensor_shapes(m):
        if len(shape) < 2:
            continue
        name = names.get(role, role)
        if role in ("embed", "head"):
            out[f"{name}.weight"] = shape
        else:
            out.update({f"blk.{i}.{name}.weight": shape for i in range(m.layers)})
    return out


_LLAMA2 = "meta-llama/Llama-2-{}-hf config.json; count: the HF model page"
_LLAMA31 = "meta-llama/Llama-3.1-{} config.json; count: the HF model page"

MODELS: dict[str, ModelConfig] = {
    m.name: m
    for m in [
        ModelConfig("llama-2-7b", 4096, 32, 32, 32, 128, 11008, 32000,
                    published="6.738", source=_LLAMA2.format("7b")),
        ModelConfig("llama-2-13b", 5120, 40, 40, 40, 128, 13824, 32000,
                    published="13.0", source=_LLAMA2.format("13b")),
        ModelConfig("llama-2-70b", 8192, 80, 64, 8, 128, 28672, 32000,
                    published="68.98", source=_LLAMA2.format("70b")),
        ModelConfig("llama-3.1-8b", 4096, 32, 32, 8, 128, 14336, 128256,
                    published="8.03", source=_LLAMA31.format("8B")),
        ModelConfig("llama-3.1-70b", 8192, 80, 64, 8, 128, 28672, 128256,
                    published="70.6", source=_LLAMA31.format("70B")),
        # 126 layers, 128 heads, 8 kv heads, FFN 53248 (config.json of Llama-3.1-405B)
        ModelConfig("llama-3.1-405b", 16384, 126, 128, 8, 128, 53248, 128256,
                    published="406", source=_LLAMA31.format("405B")),
        # sliding_window 4096: the paper's rolling-buffer cache bounds the KV at 4096 tokens
        ModelConfig("mistral-7b", 4096, 32, 32, 8, 128, 14336, 32000, windows=(4096,),
                    published="7.24",
                    source="mistralai/Mistral-7B-v0.1 config.json; Jiang et al. 2023 §2"),
        # 8 experts, 2 per token; sliding_window null in the current config.json
        ModelConfig("mixtral-8x7b", 4096, 32, 32, 8, 128, 14336, 32000, experts=8,
                    experts_per_token=2, published="46.7", published_active="12.9",
                    source="mistralai/Mixtral-8x7B-v0.1 config.json; 46.7 B total, 12.9 B "
                    "active (Jiang et al. 2024)"),
        # q/k/v biases; tie_word_embeddings false for the 7B
        ModelConfig("qwen2.5-7b", 3584, 28, 28, 4, 128, 18944, 152064, qkv_bias=True,
                    published="7.61",  # the card truncates 7.6156
                    source="Qwen/Qwen2.5-7B config.json; model card: 7.61 B (6.53 B "
                    "non-embedding)"),
        # head_dim 64 (not 2880/64); layers alternate a 128-token window and full attention
        ModelConfig("gpt-oss-20b", 2880, 24, 64, 8, 64, 2880, 201088, experts=32,
                    experts_per_token=4, qkv_bias=True, o_bias=True, mlp_bias=True,
                    router_bias=True, attn_sinks=True, windows=(128, None),
                    published="20.91", published_active="3.61",
                    source="openai/gpt-oss-20b config.json; model card (arXiv 2508.10925) "
                    "Table 1: 20.91 B total, 3.61 B active"),
        ModelConfig("gpt-oss-120b", 2880, 36, 64, 8, 64, 2880, 201088, experts=128,
                    experts_per_token=4, qkv_bias=True, o_bias=True, mlp_bias=True,
                    router_bias=True, attn_sinks=True, windows=(128, None),
                    published="116.83", published_active="5.13",
                    source="openai/gpt-oss-120b config.json; model card (arXiv 2508.10925) "
                    "Table 1: 116.83 B total, 5.13 B active"),
    ]
}  # fmt: skip


def get_model(name: str) -> ModelConfig:
    """Look a model up by name (case-insensitive).

    >>> get_model("llama-4")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'llama-4'; choose one of: llama-2-7b, llama-2-13b, ..., gpt-oss-120b
    """
    key = str(name).lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[key]

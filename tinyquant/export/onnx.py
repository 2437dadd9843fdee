"""ONNX export: the model (FP32 or quantized) as an ONNX graph that ONNX Runtime runs.

The graph is the full-sequence forward (no KV cache): tokens (B, T) int64 → logits (B, T, V),
built op by op with ``onnx.helper`` in the same order of float operations as llm/model.py:

    RMSNorm    x · Reciprocal(Sqrt(ReduceMean(x·x) + ε)) · w
    RoPE       rotate-half: [x₁·cos − x₂·sin, x₁·sin + x₂·cos], tables sliced to T
    attention  softmax(q kᵀ · 1/√hd + causal mask) v, heads by Reshape/Transpose
    SwiGLU     W_down ((g / (1 + exp(−g))) ⊙ u)

Each Linear y = x Wᵀ becomes, by what tinyquant made of it:

  FP32 array               MatMul(x, Wᵀ)
  W8A8, per-token dynamic  s = max|x|/127 per row (1 if 0); q = Cast⟨int8⟩(Clip(Round(x/s), ±127));
  (QuantLinear act_bits 8)  MatMulInteger(q, q_Wᵀ) → Cast⟨float⟩ · s · s_w — ORT's dynamic
                           integer matmul; the same float ops as tinyquant's, so bit for bit
  int8 activations (QDQ)   static (O3): Clip(x, ±127·s) → QuantizeLinear(s, 0) → DequantizeLinear;
  + int8 weights           per-tensor dynamic (O2): the same with s = max|x|/127 computed in the
  (ActQuantLinear)         graph; per-token (O1): the per-token codes into MatMulInteger as above
                           (ORT's optimizer re-quantizes a float x̂ feeding MatMul(DQ(W))). The
                           weight is DequantizeLinear(q_Wᵀ int8, s_w, axis=1) → MatMul: the QDQ
                           form that ORT's quantize_static emits and fuses into integer kernels.
                           The Clip keeps codes on tinyquant's [−127, 127] (ORT saturates to −128)
  4-bit weight-only        com.microsoft MatMulNBits (bits 4, block g): codes u ∈ [0, 15] packed
  (QuantLinear int4/uint4)  two per byte, low nibble first, B (N, K/g, g/2); scales (N·K/g);
                           zero points packed likewise (8 for symmetric int4: u = q + 8)

Anything else (NF4/FP4 codebooks, MX blocks, Hadamard-rotated or LLM.int8() Linears, 3-, 5- or
6-bit integers, act-order groups) has no ONNX Runtime operator that computes it as tinyquant
does; export refuses it with a message naming the Linear and why.

Tolerances (tests/test_export_onnx.py): FP32 ≤ 1e-4 relative — only summation order differs
(BLAS vs MLAS). W8A8 per-token: each Linear's output equals tinyquant's to the bit given the same
input, so logits differ only through the float ops around it. QDQ and MatMulNBits: ORT's fused
kernels multiply s_x·s_w before (not after) the integer sum and dequantize blocks in a different
order, so a Linear differs by float32 rounding, and a rounding difference can move a downstream
activation code at a tie by one step.

Refs: ONNX operator spec (QuantizeLinear, DequantizeLinear, MatMulInteger, opset 21); ONNX
Runtime contrib ops (MatMulNBits) and ``onnxruntime.quantization`` (quantize_static QDQ format,
quantize_dynamic, matmul_nbits_quantizer).
Shape legend: B batch, T tokens, d model width, H heads, hd head dim, F d_ff, V vocab, O out,
I in features, g group size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyquant.export.gguf import written_beside
from tinyquant.linears.quant_linear import QuantLinear
from tinyquant.linears.wrappers import ActQuantLinear
from tinyquant.llm.model import Config, rope_tables

__all__ = ["onnx_modules", "build_onnx", "check_runtime", "export_onnx", "OPSET"]

OPSET = 21  # QuantizeLinear/DequantizeLinear with int4/blocked support; ReduceMean axes input
LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def onnx_modules():
    """(onnx, onnx.helper, onnx.numpy_helper): optional dependencies (the dev extras)."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as err:
        raise ValueError("ONNX export needs the onnx package: pip install onnx") from err
    return onnx, helper, numpy_helper


class _Graph:
    """Nodes and initializers under construction; ``op`` returns the new output's name."""

    def __init__(self):
        self.onnx, self.helper, self.nph = onnx_modules()
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(self.nph.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, domain: str = "", n_out: int = 1, **attrs):
        self.n += 1
        outs = [f"{op_type.lower()}_{self.n}_{j}" for j in range(n_out)]
        node = self.helper.make_node(op_type, list(inputs), outs, domain=domain, **attrs)
        self.nodes.append(node)
        return outs[0] if n_out == 1 else outs


def _int4_blocks(ql: QuantLinear, name: str):
    """(u (O, I) uint8 codes in [0, 15], zero (O, G) uint8, scale (O, G) float32, g)."""
    qt = ql.qtensor
    O, I = qt.shape
    g = qt.block_size[1]
    if qt.block_size[0] != 1 or g < 16 or g & (g - 1):
        raise ValueError(
            f"{name}: MatMulNBits needs blocks of one row and a power-of-two group ≥ 16 along "
            f"the input; got block_size {qt.block_size} (use group_size 32, 64 or 128)"
        )
    codes = qt.unpacked_codes().astype(np.int16)  # (O, I)
    if qt.fmt.signed:  # symmetric int4: u = q + 8, zero 8
        u, zero = codes + 8, np.full((O, I // g), 8, np.int16)
    else:
        u = codes
        zero = np.zeros((O, I // g), np.int16) if qt.zero is None else qt.zero.astype(np.int16)
    return u.astype(np.uint8), zero.astype(np.uint8), qt.scale_values().astype(np.float32), g


def _nibbles(u: np.ndarray) -> np.ndarray:
    """(…, 2n) 4-bit values → (…, n) bytes; byte k = [ u[2k+1] : high nibble | u[2k] : low ]."""
    if u.shape[-1] % 2:
        u = np.concatenate([u, np.zeros(u.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).astype(np.uint8)


def _per_token_codes(gr: _Graph, x: str) -> tuple[str, str]:
    """int8 codes q (…, I) and scale s (…, 1) of x, per token: activations.py in ONNX ops."""
    amax = gr.op("ReduceMax", gr.op("Abs", x), gr.const(np.array([-1], np.int64)), keepdims=1)
    s = gr.op("Div", amax, gr.const(np.float32(127.0)))
    s = gr.op("Where", gr.op("Greater", s, gr.const(np.float32(0))), s, gr.const(np.float32(1)))
    r = gr.op("Round", gr.op("Div", x, s))  # ONNX Round: half to even, as np.rint
    q = gr.op("Clip", r, gr.const(np.float32(-127)), gr.const(np.float32(127)))
    return gr.op("Cast", q, to=3), s  # 3 = INT8


def _int8_weight(ql, name: str) -> tuple[np.ndarray, np.ndarray]:
    """q_Wᵀ (I, O) int8 and s_w (O,) or () of a symmetric int8 per-channel/per-tensor weight."""
    qt = ql.qtensor if isinstance(ql, QuantLinear) else None
    if (
        qt is None
        or qt.fmt.name != "int8"
        or qt.zero is not None
        or qt.block_size[1] != qt.shape[1]
    ):
        raise ValueError(
            f"{name}: int8 activations are exported with symmetric int8 per-channel or "
            "per-tensor weights (QDQ); this Linear's weight is not (use the w8a8 presets)"
        )
    s = qt.scale_values()[:, 0] if qt.block_size[0] == 1 else qt.scale_values().reshape(())
    return np.ascontiguousarray(qt.unpacked_codes().T), s.astype(np.float32)


def _linear(gr: _Graph, x: str, w, name: str) -> tuple[str, str]:
    """Emit y = x Wᵀ for one Linear; returns (output name, how it was exported)."""
    if isinstance(w, np.ndarray):
        return gr.op("MatMul", x, gr.const(np.ascontiguousarray(w.T), name)), "MatMul"
    if isinstance(w, QuantLinear) and w.act_bits == 8:  # per-token dynamic W8A8
        q, s = _per_token_codes(gr, x)
        qw, sw = _int8_weight(w, name)
        acc = gr.op("MatMulInteger", q, gr.const(qw, name))  # (…, O) int32, exact
        y = gr.op("Mul", gr.op("Cast", acc, to=1), s)  # 1 = FLOAT; acc · s_x, then · s_w
        return gr.op("Mul", y, gr.const(sw)), "MatMulInteger (per-token dynamic int8)"
    if isinstance(w, ActQuantLinear):
        qw, sw = _int8_weight(w.inner, name)
        if w.granularity == "per_token":  # O1: the per-token codes into MatMulInteger
            # (a float x̂ into MatMul(DequantizeLinear(W)) is re-quantized by ORT's fusions)
            q, s = _per_token_codes(gr, x)
            acc = gr.op("MatMulInteger", q, gr.const(qw, name))  # (…, O) int32, exact
            y = gr.op("Mul", gr.op("Mul", gr.op("Cast", acc, to=1), s), gr.const(sw))
            return y, "MatMulInteger (per-token int8 A × int8 W)"
        else:
            if w.static_amax is not None:  # O3: frozen scale; Clip keeps codes on ±127
                s_val = np.float32(np.float32(w.static_amax) / np.float32(127))
                s = gr.const(s_val)
                lim = np.float32(127) * s_val
                x = gr.op("Clip", x, gr.const(np.float32(-lim)), gr.const(np.float32(lim)))
                how = "QDQ static per-tensor int8 A"
            else:  # O2: the tensor's own amax, computed in the graph
                amax = gr.op("ReduceMax", gr.op("Abs", x), keepdims=0)
                s = gr.op("Div", amax, gr.const(np.float32(127.0)))
                s = gr.op("Where", gr.op("Greater", s, gr.const(np.float32(0))), s,
                          gr.const(np.float32(1)))  # fmt: skip
                how = "QDQ dynamic per-tensor int8 A"
            zp = gr.const(np.int8(0))
            xq = gr.op("DequantizeLinear", gr.op("QuantizeLinear", x, s, zp), s, zp)
        wd = gr.op("DequantizeLinear", gr.const(qw, name), gr.const(sw), gr.const(
            np.zeros(sw.shape, np.int8)), axis=1)  # fmt: skip
        return gr.op("MatMul", xq, wd), how + " × int8 W (QDQ)"
    if isinstance(w, QuantLinear) and w.act_bits is None and w.qtensor.fmt.kind == "int":
        qt = w.qtensor
        if qt.fmt.storage_bits != 4:
            raise ValueError(
                f"{name}: {qt.fmt.name} weights have no ONNX Runtime operator (MatMulNBits "
                "runs 4-bit codes; QDQ int8 needs int8 activations); use a 4-bit recipe"
            )
        u, zero, scale, g = _int4_blocks(w, name)
        O, I = qt.shape
        B = _nibbles(u).reshape(O, I // g, g // 2)  # (N, K/g, g/2)
        zp = _nibbles(zero).reshape(-1)  # (N · ceil(G/2),)
        attrs = dict(K=I, N=O, bits=4, block_size=g, accuracy_level=0)  # 0: float32 compute
        y = gr.op("MatMulNBits", x, gr.const(B, name), gr.const(scale.reshape(-1)),
                  gr.const(zp), domain="com.microsoft", **attrs)  # fmt: skip
        return y, f"MatMulNBits (4-bit, block {g})"
    kind = type(w).__name__
    detail = f" with {w.qtensor.fmt.name} weights" if isinstance(w, QuantLinear) else ""
    raise ValueError(
        f"{name}: a {kind}{detail} has no ONNX Runtime operator that computes it as tinyquant "
        "does (codebooks, MX blocks, rotations and outlier splits are not expressible); export "
        "fp32, a w8a8 preset or a 4-bit integer preset"
    )


def _rmsnorm(gr: _Graph, x: str, w: np.ndarray, eps: float, name: str) -> str:
    ms = gr.op("ReduceMean", gr.op("Mul", x, x), gr.const(np.array([-1], np.int64)), keepdims=1)
    r = gr.op("Reciprocal", gr.op("Sqrt", gr.op("Add", ms, gr.const(np.float32(eps)))))
    return gr.op("Mul", gr.op("Mul", x, r), gr.const(w.astype(np.float32), name))


def _rope(gr: _Graph, x: str, cos: str, sin: str, half: int) -> str:
    x1, x2 = gr.op("Split", x, gr.const(np.array([half, half], np.int64)), axis=-1, n_out=2)
    a = gr.op("Sub", gr.op("Mul", x1, cos), gr.op("Mul", x2, sin))
    b = gr.op("Add", gr.op("Mul", x1, sin), gr.op("Mul", x2, cos))
    return gr.op("Concat", a, b, axis=-1)


def build_onnx(params: dict, cfg: Config) -> tuple[object, dict[str, str]]:
    """(onnx.ModelProto, {linear name: how it was exported}) for a params dict.

    >>> from tinyquant.llm.model import init_params
    >>> m, how = build_onnx(init_params(Config.tiny()), Config.tiny())
    >>> m.graph.output[0].name, how["blk.0.attn_q.weight"]
    ('logits', 'MatMul')
    """
    gr = _Graph()
    helper, onnx = gr.helper, gr.onnx
    if onnx.defs.onnx_opset_version() < OPSET:
        raise ValueError(
            f"the installed onnx {onnx.__version__} knows opset {onnx.defs.onnx_opset_version()};"
            f" the export needs opset {OPSET}: pip install -U onnx onnxruntime"
        )
    H, hd, d = cfg.n_heads, cfg.head_dim, cfg.d_model
    how: dict[str, str] = {}
    # 1) embedding, and the position tables sliced to T
    x = gr.op("Gather", gr.const(params["token_embd.weight"], "token_embd.weight"), "tokens")
    T = gr.op("Slice", gr.op("Shape", "tokens"), gr.const(np.array([1], np.int64)),
              gr.const(np.array([2], np.int64)))  # fmt: skip
    zero = gr.const(np.array([0], np.int64))
    cos_t, sin_t = rope_tables(np.arange(cfg.context), hd, cfg.rope_theta, np.float32)
    cos = gr.op("Slice", gr.const(cos_t, "rope_cos"), zero, T, zero)  # (T, hd/2)
    sin = gr.op("Slice", gr.const(sin_t, "rope_sin"), zero, T, zero)
    mask_t = np.where(np.tril(np.ones((cfg.context, cfg.context), bool)), 0, -np.inf)
    TT = gr.op("Concat", T, T, axis=0)
    starts = gr.const(np.array([0, 0], np.int64))
    mask = gr.op("Slice", gr.const(mask_t.astype(np.float32), "causal_mask"), starts, TT)  # (T, T)
    heads = gr.const(np.array([0, 0, H, hd], np.int64))
    merged = gr.const(np.array([0, 0, d], np.int64))

    def lin(inp: str, name: str) -> str:
        y, how[name] = _linear(gr, inp, params[name], name)
        return y

    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        # 2) attention sub-layer
        h = _rmsnorm(gr, x, params[p + "attn_norm.weight"], cfg.norm_eps, p + "attn_norm.weight")
        q, k, v = (gr.op("Reshape", lin(h, p + f"attn_{n}.weight"), heads) for n in "qkv")
        q = _rope(gr, gr.op("Transpose", q, perm=[0, 2, 1, 3]), cos, sin, hd // 2)  # (B,H,T,hd)
        k = _rope(gr, gr.op("Transpose", k, perm=[0, 2, 1, 3]), cos, sin, hd // 2)
        v = gr.op("Transpose", v, perm=[0, 2, 1, 3])
        kt = gr.op("Transpose", k, perm=[0, 1, 3, 2])  # (B, H, hd, T)
        scores = gr.op("Mul", gr.op("MatMul", q, kt), gr.const(np.float32(1.0 / np.sqrt(hd))))
        att = gr.op("MatMul", gr.op("Softmax", gr.op("Add", scores, mask), axis=-1), v)
        att = gr.op("Reshape", gr.op("Transpose", att, perm=[0, 2, 1, 3]), merged)  # (B, T, d)
        x = gr.op("Add", x, lin(att, p + "attn_output.weight"))
        # 3) SwiGLU sub-layer
        h = _rmsnorm(gr, x, params[p + "ffn_norm.weight"], cfg.norm_eps, p + "ffn_norm.weight")
        g, u = lin(h, p + "ffn_gate.weight"), lin(h, p + "ffn_up.weight")
        one = gr.const(np.float32(1.0))
        silu = gr.op("Div", g, gr.op("Add", one, gr.op("Exp", gr.op("Neg", g))))
        x = gr.op("Add", x, lin(gr.op("Mul", silu, u), p + "ffn_down.weight"))
    # 4) head
    h = _rmsnorm(gr, x, params["output_norm.weight"], cfg.norm_eps, "output_norm.weight")
    logits = lin(h, "output.weight")
    gr.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    tp = onnx.TensorProto
    inp = helper.make_tensor_value_info("tokens", tp.INT64, ["B", "T"])
    out = helper.make_tensor_value_info("logits", tp.FLOAT, ["B", "T", cfg.vocab_size])
    graph = helper.make_graph(gr.nodes, "tinyquant", [inp], [out], gr.inits)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tinyquant")
    model.ir_version = 10  # onnx 1.16+ / ORT ≥ 1.18 read IR 10
    onnx.checker.check_model(model)
    return model, how


def check_runtime(model) -> None:
    """Load the graph in the installed ONNX Runtime (if any): an op or opset it lacks is a
    ValueError naming the runtime's version, before any file is written."""
    try:
        import onnxruntime as ort
    except ImportError:
        return  # nothing to check against; the file is still valid ONNX
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/NotImplemented/InvalidGraph types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"the installed onnxruntime {ort.__version__} cannot run this graph ({first}); "
            "pip install -U onnxruntime"
        ) from None


def export_onnx(params: dict, cfg: Config, path: str | Path, check: bool = True) -> dict[str, str]:
    """Write the model as an ONNX file (atomically); returns {linear: how it was exported}.

    Raises ValueError (and writes nothing) for a Linear no ONNX Runtime op expresses, an op
    the installed ONNX Runtime lacks (``check``), or a path that cannot be written.
    """
    path = Path(path)
    model, how = build_onnx(params, cfg)  # 1) refuse inexpressible recipes before any file
    if check:
        check_runtime(model)  # 2) and graphs the installed runtime cannot load
    onnx, _, _ = onnx_modules()
    with written_beside(path, ".onnx") as tmp:  # 3) complete file or none
        onnx.save_model(model, tmp)
    return how

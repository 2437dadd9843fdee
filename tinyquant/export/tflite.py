"""TFLite export: one block's seven Linears as int8 FULLY_CONNECTED ops in a .tflite flatbuffer.

The integer-only part of TFLite's full-integer quantization ("int8 with a representative
dataset"), on our model: block i's q, k, v, o, gate, up and down Linears, each an int8
FULLY_CONNECTED with the spec's parameters (quant/tflite_int8.py):

    inputs   attn_in (T, d) → q, k, v       attn_out (T, d) → o
             ffn_in (T, d)  → gate, up      ffn_act (T, F)  → down         int8, asymmetric
    weights  int8 (O, I), per-output-channel scales, zero point 0, quantized_dimension 0
    bias     int32 zeros (O,) at scale s_in · s_w (our model has no biases)
    outputs  int8, asymmetric, the range of x Wᵀ on the representative data

Ranges are min/max over the representative data (calibration text run through the FP32
model), as TFLite's converter takes them; between the Linears (RMSNorm, RoPE, softmax, SwiGLU)
the model stays float, so each input is quantized from the recorded float activations. The
file is the TFLite schema (``ai_edge_litert.schema_py_generated``: ModelT, SubGraphT,
OperatorT…) packed with ``flatbuffers`` under the identifier "TFL3"; LiteRT's interpreter runs
it, and its int8 outputs equal ``fully_connected_int8`` (our integer reference, single rounding
as LiteRT is built) exactly with LiteRT's reference kernels (OpResolverType.BUILTIN_REF) and
with the default resolver. The optimized kernels without delegates (ruy) requantize less
precisely: they move a few outputs per thousand by one code, within ~0.003 of a tie.

Refs: TensorFlow Lite schema.fbs (Model, SubGraph, Tensor, QuantizationParameters, Operator,
FullyConnectedOptions); TFLite 8-bit quantization spec; LiteRT (ai-edge-litert) interpreter.
Shape legend: T tokens, d model width, F d_ff, O out, I in features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyquant.export.gguf import written_beside
from tinyquant.llm.model import Config, forward
from tinyquant.quant.tflite_int8 import activation_qparams, quantize_weight

__all__ = ["FCSpec", "BlockSpec", "calibrate_block", "build_tflite", "export_tflite", "litert"]

# (linear, its input tensor) in graph order
FC_INPUTS = (
    ("attn_q", "attn_in"),
    ("attn_k", "attn_in"),
    ("attn_v", "attn_in"),
    ("attn_output", "attn_out"),
    ("ffn_gate", "ffn_in"),
    ("ffn_up", "ffn_in"),
    ("ffn_down", "ffn_act"),
)
FC_VERSION = 5  # FULLY_CONNECTED with int8 inputs and per-channel weights (schema op version)


def litert():
    """(schema_py_generated, flatbuffers, Interpreter, OpResolverType): the dev extras."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as err:
        raise ValueError(
            "TFLite export needs LiteRT and flatbuffers: pip install ai-edge-litert flatbuffers"
        ) from err
    return schema, flatbuffers, Interpreter, OpResolverType


@dataclass(frozen=True)
class FCSpec:
    """One int8 FULLY_CONNECTED: what the file stores and the reference recomputes."""

    name: str  # our weight name, e.g. blk.0.attn_q.weight
    source: str  # its input tensor: attn_in, attn_out, ffn_in or ffn_act
    q_w: np.ndarray  # (O, I) int8 on [−127, 127]
    s_w: np.ndarray  # (O,) float32 per-channel scales
    s_y: np.float32  # output scale
    z_y: int  # output zero point


@dataclass(frozen=True)
class BlockSpec:
    """The quantized block: per input (scale, zero), per Linear an FCSpec."""

    block: int
    inputs: dict  # source → (s_x float32, z_x int)
    fcs: tuple  # FCSpec in graph order


def _record_block(params: dict, cfg: Config, i: int, tokens: np.ndarray) -> dict:
    """The float inputs of block i's Linears on ``tokens`` (B, T), as source → (N, I)."""
    got: dict[str, list] = {}
    first = {}  # each source once: the first Linear that reads it (q, o, gate, down)
    for n, src in FC_INPUTS:
        first.setdefault(src, f"blk.{i}.{n}.weight")
    want = {name: src for src, name in first.items()}

    def record(name, x):
        if name in want:
            got.setdefault(want[name], []).append(np.asarray(x, np.float32))

    for row in np.atleast_2d(tokens):
        forward(params, row[None], cfg, record=record)
    return {k: np.concatenate(v) for k, v in got.items()}


def calibrate_block(params: dict, cfg: Config, block: int, tokens: np.ndarray) -> BlockSpec:
    """Quantize block ``block``'s Linears by the TFLite int8 spec from representative tokens.

    >>> from tinyquant.llm.model import init_params
    >>> cfg = Config.tiny()
    >>> spec = calibrate_block(init_params(cfg), cfg, 0, np.arange(16)[None])
    >>> [fc.source for fc in spec.fcs][:4], spec.fcs[0].q_w.dtype
    (['attn_in', 'attn_in', 'attn_in', 'attn_out'], dtype('int8'))
    """
    if not 0 <= block < cfg.n_layers:
        raise ValueError(
            f"block {block} does not exist; the model has blocks 0..{cfg.n_layers - 1}"
        )
    X = _record_block(params, cfg, block, tokens)
    inputs = {src: activation_qparams(float(x.min()), float(x.max())) for src, x in X.items()}
    fcs = []
    for n, src in FC_INPUTS:
        name = f"blk.{block}.{n}.weight"
        W = params[name]
        if not isinstance(W, np.ndarray):
            raise ValueError(f"{name} is already quantized ({type(W).__name__}); TFLite export "
                             "quantizes the FP32 weights itself (TFLite's int8 spec)")  # fmt: skip
        q_w, s_w = quantize_weight(W)
        y = X[src] @ W.T  # (N, O) float: the output range on the representative data
        s_y, z_y = activation_qparams(float(y.min()), float(y.max()))
        fcs.append(FCSpec(name, src, q_w, s_w, s_y, z_y))
    return BlockSpec(block, inputs, tuple(fcs))


def build_tflite(spec: BlockSpec, tokens_per_call: int) -> bytes:
    """The .tflite flatbuffer of ``spec``: fixed batch of ``tokens_per_call`` rows."""
    schema, flatbuffers, _, _ = litert()
    T = int(tokens_per_call)
    if T < 1:
        raise ValueError(f"tokens_per_call must be >= 1, got {T}")
    buffers = [schema.BufferT()]  # buffer 0: the empty sentinel every tensor without data uses
    tensors: list = []

    def quant(scales, zeros, dim=0):
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = [float(s) for s in scales], list(zeros), dim
        return q

    def tensor(name, shape, ttype, q, data: np.ndarray | None = None) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.quantization, t.buffer = name, list(shape), ttype, q, 0
        if data is not None:
            b = schema.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8).tolist()
            buffers.append(b)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    INT8, INT32 = schema.TensorType.INT8, schema.TensorType.INT32
    src_index = {}
    for src, (s_x, z_x) in spec.inputs.items():  # 1) the int8 inputs
        width = next(fc.q_w.shape[1] for fc in spec.fcs if fc.source == src)
        src_index[src] = tensor(src, (T, width), INT8, quant([s_x], [z_x]))
    ops, outputs = [], []
    for fc in spec.fcs:  # 2) weights, bias, output and the op of each Linear
        O, _ = fc.q_w.shape
        s_x = spec.inputs[fc.source][0]
        w = tensor(fc.name, fc.q_w.shape, INT8, quant(fc.s_w, [0] * O, 0), fc.q_w)
        s_b = (np.float32(s_x) * fc.s_w).astype(np.float32)
        b = tensor(fc.name + ".bias", (O,), INT32, quant(s_b, [0] * O, 0), np.zeros(O, np.int32))
        y = tensor(fc.name[: -len(".weight")] + ".out", (T, O), INT8, quant([fc.s_y], [fc.z_y]))
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, [src_index[fc.source], w, b], [y]
        op.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
        op.builtinOptions = schema.FullyConnectedOptionsT()  # no fused activation, keep dims
        ops.append(op)
        outputs.append(y)
    code = schema.OperatorCodeT()  # 3) one operator code, the subgraph, the model
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    code.version = FC_VERSION
    sub = schema.SubGraphT()
    sub.tensors, sub.operators, sub.outputs = tensors, ops, outputs
    sub.inputs, sub.name = list(src_index.values()), f"blk{spec.block}_int8"
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], buffers
    model.description = "tinyquant: one block's Linears, TFLite int8 spec"
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def export_tflite(spec: BlockSpec, path: str | Path, tokens_per_call: int) -> int:
    """Write the flatbuffer atomically (complete or not at all); returns its size in bytes."""
    data = build_tflite(spec, tokens_per_call)
    path = Path(path)
    with written_beside(path, ".tflite") as tmp:
        Path(tmp).write_bytes(data)
    return len(data)

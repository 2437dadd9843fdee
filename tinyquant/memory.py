"""Memory and decode-speed arithmetic for real LLMs: weights per scheme, KV cache, roofline.

    weights   Σ over tensors of the bytes its codec stores (codes + scales + zeros), counted by
              tinyquant's own containers: QTensor (int, NF4), MXTensor (MXFP4), llama.cpp blocks
    KV cache  2 · Σ_layers K · d · min(T, window_l) · B · bytes per element       (K kv heads)
    decode    tokens/s ≤ bandwidth / (weight bytes read per token + KV bytes read per token)
    ridge     peak FLOP/s / bandwidth: below it (decode: ≈ 2·B FLOP per weight byte) a kernel
              is memory-bound and fewer bytes per weight is speed; above it, compute-bound.

Using H (query heads) instead of K in the KV formula is the classic GQA mistake: Llama-2-70B
stores 320 KiB per token, not 2.5 MiB. Weights read per token exclude the embedding table (one
row is gathered) and the k − E inactive experts of an MoE layer. Activations and framework
overhead are not counted. Sizes are decimal: GB = 1e9 bytes (KiB/MiB/GiB where said).

Refs: Williams et al. 2009 "Roofline"; Ainslie et al. 2023 "GQA"; Kwon et al. 2023 (vLLM,
KV-cache sizing); llama.cpp ggml-common.h (block_q4_K, block_q6_K); devices.py (datasheets).
Shape legend: O out features, I in features, g group, T tokens, B batch, L layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from tinyquant.devices import DEVICES, get_device
from tinyquant.model_configs import MODELS, ModelConfig, get_model, tensor_shapes
from tinyquant.presets import use_more_bits
from tinyquant.quant import get_format, quantize_tensor
from tinyquant.quant.microscaling import quantize_mx

__all__ = ["SCHEMES", "KV_FORMATS", "Scheme", "codec_nbytes", "get_scheme", "weight_bytes",
           "kv_bytes", "estimate", "format_report", "plot_memory",
           "add_memory_command"]  # fmt: skip

# llama.cpp super-blocks of 256 (ggml-common.h), bytes per block:
#   Q4_K  [ d, dmin : fp16 ][ 12 B: 8 × (6-bit scale, 6-bit min) ][ 128 B: 256 × 4-bit ]  = 144
#   Q6_K  [ 128 B: low 4 bits ][ 64 B: high 2 bits ][ 16 × int8 scale ][ d : fp16 ]       = 210
GGUF_K_BLOCKS = {"q4_k": (256, 2 + 2 + 12 + 128), "q6_k": (256, 128 + 64 + 16 + 2)}

# codec → how one (O, I) matrix is stored. "fp16"/"bf16"/"fp32": a cast; int codecs: (format,
# group along I (None = one scale per row), zero stored); "nf4-dq": bitsandbytes NF4 with double
# quantization; q4_k/q6_k: llama.cpp blocks; "mxfp4": E2M1 + E8M0 per 32.
AFFINE = {"int8-row": ("int8", None, False), "int4-g128": ("int4", 128, False),
          "uint2-g64": ("uint2", 64, True)}  # fmt: skip
CODECS = ("fp16", "bf16", "fp32", *AFFINE, "nf4-dq", *GGUF_K_BLOCKS, "mxfp4")


@cache
def _affine_row_bytes(codec: str, n: int) -> int:
    """Bytes of one row of n weights, read off a real QTensor (fp16 scales, as checkpoints)."""
    fmt, g, zero = AFFINE[codec]
    g = n if g is None else g
    row = np.linspace(-1, 1, math.ceil(n / g) * g, dtype=np.float32)[None]  # (1, I padded)
    qt = quantize_tensor(row, fmt, (1, g), symmetric=not zero, scale_dtype="float16")
    return qt.nbytes


@cache
def _mx_block_bytes() -> int:
    return quantize_mx(np.zeros((1, 32), np.float32), "mxfp4").nbytes  # 16 B codes + 1 B E8M0


def codec_nbytes(codec: str, O: int, I: int) -> int:
    """Exact bytes of an (O, I) matrix (or a vector: O = 1) stored by ``codec``.

    A row whose length is not a multiple of the group is padded to one (codes and scales of the
    padding counted), as QTensor and llama.cpp would need.

    >>> codec_nbytes("int4-g128", 4096, 4096) * 8 / 4096**2        # 4 + 16/128
    4.125
    >>> codec_nbytes("q4_k", 1, 256), codec_nbytes("q6_k", 1, 256), codec_nbytes("mxfp4", 1, 32)
    (144, 210, 17)
    """
    if codec in ("fp16", "bf16", "fp32"):
        return O * I * get_format(codec).storage_bits // 8
    if codec in AFFINE:
        return O * _affine_row_bytes(codec, I)
    if codec == "nf4-dq":  # QLoRA: 4-bit codes; absmax per 64 as 8-bit codes (padded to a
        nb = math.ceil(O * I / 64)  # multiple of 256, as QTensor stores them), fp32 per 256, mean
        nb_pad = math.ceil(nb / 256) * 256
        return nb * 32 + nb_pad + 4 * (nb_pad // 256) + 4
    if codec in GGUF_K_BLOCKS:
        k, nbytes = GGUF_K_BLOCKS[codec]
        return O * math.ceil(I / k) * nbytes
    if codec == "mxfp4":
        return O * math.ceil(I / 32) * _mx_block_bytes()
    raise ValueError(f"unknown codec {codec!r}; choose one of {CODECS}")


@dataclass(frozen=True)
class Scheme:
    """Which codec stores which tensors (a weight-only scheme as checkpoints ship it)."""

    name: str  # key in SCHEMES
    linear: str  # attention and MLP/expert matrices
    embed: str  # token embedding (gathered, never a matmul)
    head: str  # output head (when untied)
    vector: str = "fp16"  # norms, biases, sinks and MoE routers (kept in high precision)
    more_bits: str | None = None  # attn_v / ffn_down of use_more_bits layers (llama.cpp *_M)
    experts_only: bool = False  # only MoE expert matrices use ``linear`` (gpt-oss's MXFP4)
    description: str = ""  # one line, including what stays FP16


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme("fp16", "fp16", "fp16", "fp16", description="every tensor FP16"),
        Scheme("int8", "int8-row", "fp16", "fp16",
               description="int8 per output row + FP16 scale (W8A16); embed/head/norms FP16"),
        Scheme("int4-g128", "int4-g128", "fp16", "fp16",
               description="int4 symmetric, FP16 scale per 128 (GPTQ/AWQ-like, 4.125 bpw); "
               "embed/head/norms FP16"),
        Scheme("nf4-dq", "nf4-dq", "fp16", "fp16",
               description="bitsandbytes NF4 + double quant (~4.127 bpw); embed/head/norms FP16"),
        Scheme("q4_k_m-like", "q4_k", "q4_k", "q6_k", vector="fp32", more_bits="q6_k",
               description="llama.cpp Q4_K (4.5 bpw), Q6_K (6.5625) on attn_v/ffn_down of the "
               "use_more_bits layers and on the head; norms/routers F32"),
        Scheme("mxfp4", "mxfp4", "fp16", "fp16",
               description="MXFP4 (4.25 bpw) on every block matrix; embed/head/norms FP16"),
        Scheme("mxfp4-moe", "mxfp4", "bf16", "bf16", vector="bf16", experts_only=True,
               description="gpt-oss's own checkpoint: MXFP4 experts, everything else BF16"),
        Scheme("2bit", "uint2-g64", "fp16", "fp16",
               description="2-bit asymmetric, FP16 scale + uint8 zero per 64 (2.375 bpw); "
               "embed/head/norms FP16"),
    ]
}  # fmt: skip

# KV cache element formats: (format in FORMATS, scale group along head_dim or None)
KV_FORMATS = {"fp16": ("fp16", None), "fp8": ("fp8_e4m3", None), "int8": ("int8", "head"),
              "int4": ("int4", "head")}  # fmt: skip


def get_scheme(name: str) -> Scheme:
    """Look a scheme up by name (one-line error listing the valid names)."""
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; choose one of: {', '.join(SCHEMES)}")
    return SCHEMES[name]


def _codec_for(s: Scheme, role: str, layer_more_bits: bool, moe: bool, all_tensors: bool) -> str:
    if role in ("norm", "bias", "router"):
        return s.vector
    if role in ("embed", "head"):
        return s.linear if all_tensors else (s.embed if role == "embed" else s.head)
    if s.more_bits and layer_more_bits and role in ("attn_v", "ffn_down"):
        return s.more_bits
    if s.experts_only and not (moe and role.startswith("ffn_")):
        return s.embed
    return s.linear


def weight_bytes(model: str | ModelConfig, scheme: str, all_tensors: bool = False) -> dict:
    """Weight bytes by group, total, and bytes read per decoded token.

    ``all_tensors`` stores the embedding and head with the scheme's linear codec too (the
    back-of-the-envelope "params × bits / 8").

    >>> w = weight_bytes("llama-2-7b", "fp16")
    >>> w["total"], w["bits_per_weight"]
    (13476831232, 16.0)
    """
    m = get_model(model) if isinstance(model, str) else model
    s = get_scheme(scheme)
    groups = {"embed": 0, "head": 0, "attention": 0, "mlp": 0, "vectors": 0}
    read = 0
    for role, shape, count, how in tensor_shapes(m):
        O, I = shape if len(shape) == 2 else (1, shape[0])
        if s.more_bits and role in ("attn_v", "ffn_down"):  # layer by layer: count = L or L·E
            n = sum(codec_nbytes(_codec_for(s, role, use_more_bits(i, m.layers), m.is_moe,
                                            all_tensors), O, I) * (count // m.layers)
                    for i in range(m.layers))  # fmt: skip
        else:
            n = codec_nbytes(_codec_for(s, role, False, m.is_moe, all_tensors), O, I) * count
        group = {"embed": "embed", "head": "head"}.get(role)
        group = group or ("attention" if role.startswith("attn") else
                          "vectors" if role in ("norm", "bias", "router") else "mlp")  # fmt: skip
        groups[group] += n
        read += {"all": n, "row": 0, "active": n * m.experts_per_token // m.experts}[how]
    if m.tied:
        read += groups["embed"]  # the tied head streams the embedding table
    total = sum(groups.values())
    return {"total": total, "read_per_token": read, "groups": groups,
            "bits_per_weight": 8 * total / m.params}  # fmt: skip


def kv_bytes(model: str | ModelConfig, tokens: int, batch: int = 1, kv: str = "fp16") -> int:
    """KV-cache bytes: 2 · Σ_l K · d · min(T, window_l) · B · bytes (+ int scales per vector).

    >>> kv_bytes("llama-2-70b", 1) // 1024, kv_bytes("llama-2-70b", 8192, 32) / 1e9  # KiB; GB
    (320, 85.89934592)
    """
    m = get_model(model) if isinstance(model, str) else model
    if kv not in KV_FORMATS:
        raise ValueError(f"unknown KV format {kv!r}; choose one of: {', '.join(KV_FORMATS)}")
    for name, v in (("context", tokens), ("batch", batch)):
        if not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    fmt, group = KV_FORMATS[kv]
    if group == "head":  # symmetric int, one FP16 scale per head vector: a real QTensor row
        row = np.linspace(-1, 1, m.head_dim, dtype=np.float32)[None]
        vec = quantize_tensor(row, fmt, (1, m.head_dim), scale_dtype="float16").nbytes
    else:
        vec = m.head_dim * get_format(fmt).storage_bits // 8  # bytes of one head vector (d,)
    cached = sum(min(tokens, m.window(i) or tokens) for i in range(m.layers))  # Σ_l min(T, W_l)
    return 2 * m.kv_heads * vec * cached * batch


def estimate(
    model: str,
    scheme: str,
    context: int,
    batch: int = 1,
    device: str = "h100",
    kv: str = "fp16",
    bandwidth: float | None = None,
    all_tensors: bool = False,
) -> dict:
    """The whole answer for one configuration, as one JSON-able dict.

    >>> e = estimate("llama-2-7b", "fp16", 4096, all_tensors=True)
    >>> round(e["decode"]["batch1_tokens_per_s"]), round(e["roofline"]["ridge_flop_per_byte"])
    (218, 295)
    """
    m, dev = get_model(model), get_device(device, bandwidth)
    w = weight_bytes(m, scheme, all_tensors)
    kv_all, kv_one = kv_bytes(m, context, batch, kv), kv_bytes(m, context, 1, kv)
    total = w["total"] + kv_all
    # 1) decode ceilings: each step streams the weights once and every sequence's KV
    step_b1 = w["read_per_token"] + kv_one
    step_bB = w["read_per_token"] + kv_all
    # 2) roofline: ≈ 2 FLOP per weight per sequence (+ attention 4·H·d per cached token)
    active = m.params - (m.vocab * m.hidden) - (m.layers * (m.experts - m.experts_per_token)
                                                * 3 * m.hidden * m.ffn)  # fmt: skip
    cached = sum(min(context, m.window(i) or context) for i in range(m.layers))
    flops_tok = 2 * active + 4 * m.heads * m.head_dim * cached
    intensity = flops_tok * batch / step_bB
    ridge = dev.flops / dev.bandwidth
    return {
        "model": m.name, "scheme": scheme, "description": get_scheme(scheme).description,
        "source": m.source, "params": m.params, "published_params_b": m.published,
        "context": context, "batch": batch, "kv_format": kv, "all_tensors": all_tensors,
        "weights": w, "kv_bytes": kv_all, "kv_bytes_per_token": kv_bytes(m, 1, 1, kv),
        "kv_by_format": {f: kv_bytes(m, context, batch, f) for f in KV_FORMATS},
        "total_bytes": total,
        "device": {"name": dev.name, "memory": dev.memory, "bandwidth": dev.bandwidth,
                   "flops": dev.flops, "source": dev.source},
        "fits": total <= dev.memory, "devices_needed": math.ceil(total / dev.memory),
        "decode": {"batch1_tokens_per_s": dev.bandwidth / step_b1,
                   "batch_tokens_per_s": batch * dev.bandwidth / step_bB,
                   "weights_only_tokens_per_s": dev.bandwidth / w["read_per_token"],
                   "bytes_per_step": step_bB},
        "roofline": {"ridge_flop_per_byte": ridge, "decode_flop_per_byte": intensity,
                     "bound": "memory" if intensity < ridge else "compute"},
    }  # fmt: skip


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def format_report(e: dict) -> str:
    """The readable breakdown the CLI prints."""
    w, d, dev, g = e["weights"], e["decode"], e["device"], e["weights"]["groups"]
    kvt = e["kv_bytes_per_token"]
    kv_line = " · ".join(f"{f} {_gb(b)}" for f, b in e["kv_by_format"].items())
    fit = "fits" if e["fits"] else f"does NOT fit — needs {e['devices_needed']} devices"
    lines = [
        f"{e['model']}: {e['params'] / 1e9:.3f} B parameters from the config "
        f"(published {e['published_params_b']} B; {e['source']})",
        f"scheme {e['scheme']}: {e['description']}",
        f"  weights     {_gb(w['total'])} = {w['bits_per_weight']:.3f} bits/weight overall "
        f"(attention {_gb(g['attention'])}, MLP {_gb(g['mlp'])}, embed {_gb(g['embed'])}, "
        f"head {_gb(g['head'])}, norms/biases {_gb(g['vectors'])})",
        f"  KV cache    {e['kv_format']}: {kvt / 1024:,.1f} KiB/token × {e['context']} tokens × "
        f"batch {e['batch']} = {_gb(e['kv_bytes'])}   [{kv_line}]",
        f"  total       {_gb(e['total_bytes'])} on {dev['name']} ({_gb(dev['memory'])}): {fit}",
        f"  decode      batch 1 ≤ {d['batch1_tokens_per_s']:,.1f} tok/s "
        f"({dev['bandwidth'] / 1e12:.3f} TB/s ÷ {_gb(w['read_per_token'])} weights read + "
        f"{_gb(e['kv_bytes'] / e['batch'])} KV); weights alone ≤ "
        f"{d['weights_only_tokens_per_s']:,.1f}; batch {e['batch']} ≤ "
        f"{d['batch_tokens_per_s']:,.1f} tok/s in all",
        f"  roofline    ridge {e['roofline']['ridge_flop_per_byte']:.0f} FLOP/byte; decode at "
        f"batch {e['batch']} does {e['roofline']['decode_flop_per_byte']:.1f} FLOP/byte → "
        f"{e['roofline']['bound']}-bound",
    ]
    if e["all_tensors"]:
        lines.insert(2, "  (--all-tensors: embedding and head stored with the scheme too)")
    return "\n".join(lines)


def plot_memory(model: str, path: str, batch: int = 1, device: str | None = None) -> str:
    """PNG: weight bytes per scheme (flat lines) and KV bytes per format against context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = get_model(model)
    ctx = np.unique(np.geomspace(256, 131072, 40).astype(int))
    fig, ax = plt.subplots(figsize=(8, 5))
    schemes = [s for s in SCHEMES if m.is_moe or not SCHEMES[s].experts_only]
    for i, s in enumerate(schemes):  # weights: flat dashed lines in greys/browns, named
        gb = weight_bytes(m, s)["total"] / 1e9
        ax.axhline(gb, ls="--", lw=1, color=plt.cm.copper(i / len(schemes)))
        x = ctx[i * (len(ctx) - 8) // len(schemes)]  # staggered: 4-bit schemes nearly coincide
        ax.annotate(f"{s} {gb:.1f}", (x, gb), fontsize=7, va="bottom" if i % 2 else "top")
    for f in KV_FORMATS:  # KV: grows linearly with context (capped by sliding windows)
        ax.plot(ctx, [kv_bytes(m, int(t), batch, f) / 1e9 for t in ctx], lw=2, label=f"KV {f}")
    if device:
        ax.axhline(get_device(device).memory / 1e9, color="k", lw=2, label=f"{device} memory")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="context length (tokens)",
        ylabel="bytes (GB = 1e9)",
        title=f"{m.name}: weights per scheme (dashed) vs KV cache (batch {batch})",
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _listing() -> str:
    out = ["models:"] + [
        f"  {k:<15} {m.params / 1e9:8.3f} B  {m.source}" for k, m in MODELS.items()
    ]
    out += ["schemes:"] + [f"  {k:<12} {s.description}" for k, s in SCHEMES.items()]
    out += ["KV formats: " + ", ".join(KV_FORMATS), "devices:"]
    out += [f"  {k:<8} {d.source}" for k, d in DEVICES.items()]
    return "\n".join(out + ["  cpu      this machine, measured (or --bandwidth)"])


def _cmd_memory(args) -> int:
    import json

    if args.list:
        print(_listing())
        return 0
    if args.model is None:
        raise ValueError("--model is required (see tinyquant memory --list)")
    bw = None if args.bandwidth is None else args.bandwidth * 1e9
    e = estimate(args.model, args.scheme, args.context, args.batch, args.device, args.kv, bw,
                 args.all_tensors)  # fmt: skip
    print(json.dumps(e, indent=1) if args.json else format_report(e))
    if args.plot:
        plot_memory(args.model, args.plot, args.batch, args.device)
    return 0


def add_memory_command(sub) -> None:
    """Register ``tinyquant memory`` on an argparse sub-parser collection."""
    p = sub.add_parser(
        "memory",
        help="weights, KV cache, fit and decode ceiling of a real model under a scheme",
        description="Memory arithmetic for real model configs: weight bytes per scheme (scales "
        "counted), GQA-aware KV cache, whether it fits, the batch-1 decode ceiling, the ridge.",
    )
    p.add_argument("--model", help="a model name (see --list)")
    p.add_argument("--scheme", default="fp16", help="weight scheme (default fp16)")
    p.add_argument("--context", type=int, default=4096, help="tokens in the KV cache")
    p.add_argument("--batch", type=int, default=1, help="sequences (default 1)")
    p.add_argument("--device", default="h100", help="h100, a100, rtx4090, m3-max or cpu")
    p.add_argument("--kv", default="fp16", help="KV format: fp16, fp8, int8, int4")
    p.add_argument("--bandwidth", type=float, help="memory bandwidth in GB/s (overrides)")
    p.add_argument("--all-tensors", action="store_true", help="quantize embedding/head too")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--list", action="store_true", help="list models, schemes and devices")
    p.add_argument("--plot", default="", help="write memory-vs-context PNG here")
    p.set_defaults(func=_cmd_memory)

"""Whole-model decoding at real model shapes: tokens/s, bytes per token, % of the memory roofline.

The model's own ``forward`` with a KV cache and quantized Linears — the code the Shakespeare
model runs — on seeded random weights shaped like a real model. Batch-1 decoding reads every
weight once per token, so its ceiling is

    tokens/s ≤ bandwidth / bytes read per token,   bytes/token = weights + the KV cache read

and ``% roofline`` = (bytes/token × tokens/s) / bandwidth, with the bandwidth measured in the
same run (the best of a one-thread NumPy and an all-threads Numba sum of a 1 GiB array). Every
recipe quantizes ``output`` too (as llama.cpp's types do); the embedding is a gathered row.
The baseline of every row is FP32 decoding in the same run: ``speedup`` = its seconds per token
over the row's (medians; ``speedup_rounds`` per round). All formats' models are built first and
timed in rounds, each round decoding every format once, so that a slow minute of a shared machine
falls on every format alike (three full runs timed format after format had spread W4A16's ratio
over ×4.39–5.09). The decode context is prefilled with seeded random keys/values (the attention
cost at that length, without a slow prefill); prefill speed is its own row.

llama.cpp side by side (optional, ``llama-cpp-python``): the same weights written as an F32
GGUF, quantized by llama.cpp's own quantizer to Q8_0 / Q4_0 / Q4_K_M (ours writes the same
bytes; see tests/test_export_gguf.py), and decoded with the same thread count, in a child
process (a crash there cannot take the benchmark down).

Shapes: tinyllama-1.1b (d 2048, 22 layers, 32 heads, 4 kv heads, d_ff 5632, vocab 32000),
small (d 1024, 12 layers, 16 heads, 4 kv heads, d_ff 2816), quick (CI smoke).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyquant.llm.model import Config, forward, init_params, new_cache
from tinyquant.presets import get_recipe
from tinyquant.qmodel import Model, quantize_model
from tinyquant.recipe import Recipe

SHAPES = {
    "tinyllama-1.1b": Config(vocab_size=32000, d_model=2048, n_layers=22, n_heads=32,
                             n_kv_heads=4, d_ff=5632, context=2048),
    "small": Config(vocab_size=32000, d_model=1024, n_layers=12, n_heads=16, n_kv_heads=4,
                    d_ff=2816, context=2048),
    "quick": Config(vocab_size=2048, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=768,
                    context=256),
}  # fmt: skip
# row name → preset whose rules also quantize ``output`` here
FORMATS = {"fp32": "fp32", "w8a8": "w8a8", "w8a16": "w8a16", "w4a16-g128": "w4-rtn-g128",
           "w4a8-g128": "w4a8-g128", "w3a16": "w3-rtn", "w2a16-g64": "w2-rtn-g64"}  # fmt: skip
# llama.cpp type → our formats beside it: the first quantizes activations to int8 as llama.cpp's
# CPU dot products do (Q8_0 / Q8_K activations); the second is the weight-only twin
LLAMA_CPP_PEERS = {"F32": ("fp32",), "Q8_0": ("w8a8", "w8a16"),
                   "Q4_0": ("w4a8-g128", "w4a16-g128"),
                   "Q4_K_M": ("w4a8-g128", "w4a16-g128")}  # fmt: skip
GGUF_TYPES = ("F32", "Q8_0", "Q4_0", "Q4_K_M")


def _with_output(name: str) -> Recipe:
    """The preset with ``output.weight`` added to every rule's targets."""
    r = get_recipe(name)
    rules = [dataclasses.replace(x, targets=(*x.targets, "output.weight")) for x in r.rules]
    return dataclasses.replace(r, rules=tuple(rules))


def _rss() -> int:
    """Resident set size of this process now, in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _bandwidth(quick: bool) -> float:
    from tinyquant.bench.kernels import bandwidth

    return max(r["gbps"] for r in bandwidth(quick) if r["name"] != "bandwidth_copy") * 1e9


def weight_bytes_per_token(m: Model) -> int:
    """Bytes a batch-1 step streams from the weights: every tensor but the embedding table."""
    return sum(m.tensor_nbytes(n) for n in m.params if n != "token_embd.weight")


def kv_bytes_per_token(cfg: Config, context: int) -> int:
    """Bytes of K and V read by one step's attention over ``context`` cached positions (fp32)."""
    return 2 * cfg.n_layers * context * cfg.kv_dim * 4


def _decode_seconds(params, cfg, context: int, n_tokens: int, repeats: int) -> list[float]:
    """Seconds per token of ``n_tokens`` single-token steps after ``context`` cached positions."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(repeats):
        cache = new_cache(cfg)
        for k, v in zip(cache.k, cache.v, strict=True):
            k[:, :, :context] = rng.standard_normal(k[:, :, :context].shape, np.float32)
            v[:, :, :context] = rng.standard_normal(v[:, :, :context].shape, np.float32)
        cache.pos = context
        forward(params, np.array([1]), cfg, cache=cache)  # warm step, untimed
        t0 = time.perf_counter()
        for t in range(n_tokens):
            forward(params, np.array([(7 * t + 3) % cfg.vocab_size]), cfg, cache=cache)
        out.append((time.perf_counter() - t0) / n_tokens)
    return out


def _prefill_seconds(params, cfg, n: int, repeats: int) -> list[float]:
    toks = (np.arange(n) * 7 + 3) % cfg.vocab_size
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(params, toks, cfg, cache=new_cache(cfg))
        out.append(time.perf_counter() - t0)
    return out


_CHILD = """
import json, sys
from tinyquant.export.llamacpp import llama_cpp_decode_tokens_per_s
a = json.loads(sys.argv[1])
print(json.dumps(llama_cpp_decode_tokens_per_s(a["path"], a["vocab"], a["n"], a["prompt"],
                                               a["repeats"], a["threads"])))
"""


def _file_weight_bytes(path) -> int:
    """Bytes of a GGUF file's tensors that a decode step streams (all but the embedding)."""
    from tinyquant.export.gguf import gguf_py

    reader = gguf_py().GGUFReader(path)
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def _llama_cpp_rows(params, cfg, threads, n_tokens, prompt, repeats) -> dict:
    """{GGUF type: (llama.cpp tokens/s, weight bytes per token)} — {} without llama-cpp-python;
    a type whose child process crashed is absent (its exit code is printed)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {}
    from tinyquant.export.gguf import export_gguf
    from tinyquant.export.llamacpp import llama_cpp_quantize

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "F32.gguf"
        export_gguf(params, cfg, f32, "F32", name="random-weights")
        for t in GGUF_TYPES:
            path = f32 if t == "F32" else llama_cpp_quantize(f32, Path(tmp) / f"{t}.gguf", t,
                                                             threads=threads)  # fmt: skip
            arg = {"path": str(path), "vocab": cfg.vocab_size, "n": n_tokens, "prompt": prompt,
                   "repeats": repeats, "threads": threads}  # fmt: skip
            cmd = [sys.executable, "-c", _CHILD, json.dumps(arg)]
            child = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if child.returncode == 0:
                out[t] = (float(child.stdout.strip().splitlines()[-1]), _file_weight_bytes(path))
            else:
                print(f"llama.cpp {t}: exit {child.returncode}", file=sys.stderr)
            if path != f32:
                path.unlink()
    return out


def check_formats(formats: str | None) -> tuple[str, ...]:
    """The formats a run decodes: fp32 (the baseline, always first) plus the named ones.

    >>> check_formats("w4a16-g128"), check_formats(None) == tuple(FORMATS)
    (('fp32', 'w4a16-g128'), True)
    """
    if formats is None:
        return tuple(FORMATS)
    names = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown decode format(s) {unknown or formats!r}; choose from "
                         f"{', '.join(FORMATS)} (comma-separated)")  # fmt: skip
    return ("fp32", *[f for f in FORMATS if f in names and f != "fp32"])


def run(quick: bool = False, shape: str | None = None, threads: int | None = None,
        formats: str | None = None, llama_cpp: bool = True) -> list[dict]:  # fmt: skip
    """One row per (format, context) and a prefill row per format, then llama.cpp's rows."""
    import numba

    name = "quick" if quick and shape is None else (shape or "tinyllama-1.1b")
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")
    chosen = check_formats(formats)
    cfg = SHAPES[name]
    threads = threads or numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(threads)
    contexts = (16, 200) if name == "quick" else (16, 512, 1536)  # + the timed steps < context
    n_tok, reps, n_pre = (4, 2, 32) if quick else (8, 3, 128)
    bw = _bandwidth(quick)
    print(f"# decode {name}: {cfg}; {threads} threads; bandwidth {bw / 1e9:.1f} GB/s",
          file=sys.stderr, flush=True)  # fmt: skip
    t0 = time.perf_counter()
    params = init_params(cfg, seed=0)
    print(f"# random weights in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    # 1) every format's model, and its prefill (one format at a time)
    rows, base, models = [], {}, {}
    for fmt in chosen:
        preset = FORMATS[fmt]
        t0 = time.perf_counter()
        if preset == "fp32":
            m = Model(params, cfg)
        else:
            m = quantize_model(params, cfg, _with_output(preset)).with_path("int")
        models[fmt] = (m, time.perf_counter() - t0)
        pre = _prefill_seconds(m.params, cfg, n_pre, reps)
        base.setdefault("prefill", statistics.median(pre))
        rows.append({"name": f"prefill {fmt}", "shape": name, "seconds": statistics.median(pre),
                     "min_seconds": min(pre), "tokens_per_s": n_pre / statistics.median(pre),
                     "threads": threads, "baseline": "fp32 prefill",
                     "baseline_seconds": base["prefill"],
                     "speedup": base["prefill"] / statistics.median(pre)})  # fmt: skip
    # 2) decoding in rounds — every format and context once per round — so that a slow minute
    #    of a shared machine lands on all formats alike, not on one
    sec: dict[tuple[str, int], list[float]] = {(f, c): [] for f in chosen for c in contexts}
    for _ in range(reps):
        for fmt in chosen:
            for c in contexts:
                sec[fmt, c] += _decode_seconds(models[fmt][0].params, cfg, c, n_tok, 1)
    for fmt in chosen:
        m, qs = models[fmt]
        w_bytes = weight_bytes_per_token(m)
        for c in contexts:
            t, t0 = sec[fmt, c], sec["fp32", c]
            med = statistics.median(t)
            per_tok = w_bytes + kv_bytes_per_token(cfg, c)
            row = {"name": f"decode {fmt}", "shape": name, "context": c, "seconds": med,
                   "min_seconds": min(t), "tokens_per_s": 1 / med, "threads": threads,
                   "baseline": "fp32 decode", "baseline_seconds": statistics.median(t0),
                   "speedup": statistics.median(t0) / med, "speedup_min": min(t0) / min(t),
                   "speedup_rounds": [a / b for a, b in zip(t0, t, strict=True)],
                   "bytes_per_token": per_tok, "weight_bytes": w_bytes,
                   "gbps": per_tok / med / 1e9, "roofline_pct": 100 * per_tok / med / bw,
                   "bandwidth_gbps": bw / 1e9, "rss_bytes": _rss(),
                   "path": m.path if fmt != "fp32" else "fp32", "quantize_seconds": qs}  # fmt: skip
            print(f"decode {fmt:11s} ctx {c:5d}  {1 / med:7.2f} tok/s (best {1 / min(t):7.2f})"
                  f"  ×{row['speedup']:.2f} vs fp32 (rounds "
                  f"{', '.join(f'{x:.2f}' for x in row['speedup_rounds'])})  "
                  f"{per_tok / 1e6:8.1f} MB/token  {row['gbps']:5.1f} GB/s = "
                  f"{row['roofline_pct']:4.0f}% of the roofline  "
                  f"RSS {row['rss_bytes'] / 2**30:.1f} GiB",
                  file=sys.stderr, flush=True)  # fmt: skip
            rows.append(row)
    del models, m  # free our models before llama.cpp loads its own copies
    ours = {r["name"]: r for r in rows if r.get("context") == contexts[0]}
    llama = _llama_cpp_rows(params, cfg, threads, n_tok * 4, contexts[0], reps) if llama_cpp else {}
    for t, (tps, w_bytes) in llama.items():
        peers = [f for f in LLAMA_CPP_PEERS[t] if f"decode {f}" in ours]
        if not peers:
            continue
        r = ours[f"decode {peers[0]}"]
        per_tok = w_bytes + kv_bytes_per_token(cfg, contexts[0]) // 2  # its F16 KV cache
        ratios = {f: ours[f"decode {f}"]["tokens_per_s"] / tps for f in peers}
        row = {"name": f"llama.cpp decode {t}", "shape": name, "context": contexts[0],
               "seconds": 1 / tps, "min_seconds": 1 / tps, "tokens_per_s": tps,
               "threads": threads, "baseline": f"tinyquant decode {peers[0]}",
               "baseline_seconds": r["seconds"], "speedup": r["seconds"] * tps,
               "tinyquant_over_llama_cpp": ratios[peers[0]],
               "tinyquant_over_llama_cpp_by_format": ratios,
               "bytes_per_token": per_tok, "weight_bytes": w_bytes,
               "gbps": per_tok * tps / 1e9, "roofline_pct": 100 * per_tok * tps / bw,
               "bandwidth_gbps": bw / 1e9}  # fmt: skip
        vs = ", ".join(f"{f} / llama.cpp = {x:.2f}" for f, x in ratios.items())
        print(f"llama.cpp {t:7s} ctx {contexts[0]:5d}  {tps:7.2f} tok/s;  tinyquant {vs}",
              file=sys.stderr, flush=True)  # fmt: skip
        rows.append(row)
    return rows


def format_decode_table(rows: list[dict]) -> str:
    """The committed decode run as a Markdown table: a row per format, the shortest and longest
    context, and llama.cpp beside the formats it is compared with.

    >>> r = [{"name": "decode fp32", "context": 16, "tokens_per_s": 7.0, "speedup": 1.0,
    ...       "roofline_pct": 80.0, "weight_bytes": 4e9}]
    >>> print(format_decode_table(r).splitlines()[2])
    | fp32 | 4000 | 7.00 | ×1.00 | 80% | 7.00 | ×1.00 |  |
    """
    dec = [r for r in rows if r["name"].startswith("decode ")]
    c0, c1 = min(r["context"] for r in dec), max(r["context"] for r in dec)
    by = {(r["name"][7:], r["context"]): r for r in dec}
    peers: dict[str, list[str]] = {}
    for r in rows:
        if r["name"].startswith("llama.cpp decode "):
            t = r["name"].split()[-1]
            for f, ratio in r.get("tinyquant_over_llama_cpp_by_format", {}).items():
                peers.setdefault(f, []).append(f"{t} {r['tokens_per_s']:.2f} tok/s (×{ratio:.2f})")
    out = [f"| format | MB/token (weights) | tok/s, ctx {c0} | × FP32 | % of roofline | "
           f"tok/s, ctx {c1} | × FP32 | llama.cpp, ctx {c0} (tinyquant ÷ llama.cpp) |",
           "|---|--:|--:|--:|--:|--:|--:|---|"]  # fmt: skip
    for f in dict.fromkeys(name for name, _ in by):
        a, b = by[f, c0], by[f, c1]
        out.append(f"| {f} | {a['weight_bytes'] / 1e6:.0f} | {a['tokens_per_s']:.2f} | "
                   f"×{a['speedup']:.2f} | {a['roofline_pct']:.0f}% | {b['tokens_per_s']:.2f} | "
                   f"×{b['speedup']:.2f} | {'; '.join(peers.get(f, []))} |")  # fmt: skip
    return "\n".join(out)
